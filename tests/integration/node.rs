//! `brink up`'s HTTP side: a real node on loopback, driven by a real HTTP
//! client, with a real webhook receiver at the end of a pipeline.

use std::time::Duration;

use axum::http::HeaderMap;
use brink_host::node::Node;
use brink_tests::artifacts;
use brink_tests::assert_problem;
use brink_tests::mqtt::TestPki;
use reqwest::StatusCode;
use tokio::sync::mpsc;

const STRUCTURED: &str = "application/cloudevents+json";

pub(crate) fn reading_json(id: &str, device: &str, value: f64) -> serde_json::Value {
    serde_json::json!({
        "specversion": "1.0", "id": id, "source": "/factory/line-1/sensors",
        "type": "com.example.reading", "subject": device,
        "time": "2026-11-22T10:00:00Z", "datacontenttype": "application/json",
        "data": { "device": device, "value": value }
    })
}

pub(crate) type Received = mpsc::UnboundedReceiver<(HeaderMap, Vec<u8>)>;

/// The receiver's routes: every request's headers and body arrive on the channel.
fn hook_app() -> (axum::Router, Received) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((headers, body.to_vec()));
                StatusCode::OK
            }
        }),
    );
    (app, rx)
}

/// A webhook receiver on loopback.
pub(crate) async fn webhook() -> anyhow::Result<(String, Received)> {
    let (app, rx) = hook_app();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, rx))
}

/// TLS in front of a TCP listener, for axum: connections whose handshake
/// fails are dropped, and the next one is awaited.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// An `https://` webhook receiver whose certificate `pki`'s CA issued.
async fn https_webhook(pki: &TestPki) -> anyhow::Result<(String, Received)> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(pki.dir.path().join("server.pem"))?
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(pki.dir.path().join("server.key"))?;
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("https://{}/hook", tcp.local_addr()?);
    let listener = TlsListener {
        tcp,
        acceptor: tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)),
    };
    let (app, rx) = hook_app();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, rx))
}

/// Starts a node on a free loopback port from manifest `text`.
async fn node(text: &str) -> anyhow::Result<(Node, String)> {
    let node = brink_tests::start_node(text).await?;
    let base = format!("http://{}", node.http_addr());
    Ok((node, base))
}

fn pipeline_manifest(webhook: &str) -> String {
    format!(
        r#"brink_manifest_version = 1
[http]
listen = "127.0.0.1:0"
max_body_kb = 4

[function.filter]
source = {filter:?}
triggers = [{{ http = "/temperature" }}, {{ event_type = "com.example.reading" }}]
outputs = [{{ function = "transform" }}]
config = {{ threshold = "30" }}

[function.transform]
source = {transform:?}
outputs = [{{ webhook = {webhook:?} }}]

[function.echo]
source = {echo:?}

[function.trap]
source = {trap:?}
"#,
        filter = artifacts::FILTER,
        transform = artifacts::TRANSFORM,
        echo = artifacts::ECHO,
        trap = artifacts::FIXTURE_TRAP,
    )
}

#[tokio::test]
async fn a_structured_event_flows_through_a_pipeline_to_a_webhook() -> anyhow::Result<()> {
    let (hook, mut received) = webhook().await?;
    let (node, base) = node(&pipeline_manifest(&hook)).await?;
    let client = brink_tests::http();

    let hot = client
        .post(format!("{base}/events/temperature"))
        .header("content-type", STRUCTURED)
        .body(reading_json("r-1", "t-17", 31.5).to_string())
        .send()
        .await?;
    assert_eq!(hot.status(), StatusCode::ACCEPTED);
    let (headers, body) = tokio::time::timeout(Duration::from_secs(5), received.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("webhook channel closed"))?;
    assert_eq!(headers["ce-type"], "com.brink.temperature.fahrenheit");
    assert_eq!(headers["ce-subject"], "t-17");
    assert_eq!(headers["content-type"], "application/json");
    let data: serde_json::Value = serde_json::from_slice(&body)?;
    assert_eq!(data["temperature"]["value"], 88.7);

    // A normal reading is filtered out: accepted, but nothing reaches the webhook.
    let normal = client
        .post(format!("{base}/events/temperature"))
        .header("content-type", STRUCTURED)
        .body(reading_json("r-2", "t-18", 20.0).to_string())
        .send()
        .await?;
    assert_eq!(normal.status(), StatusCode::ACCEPTED);
    assert!(received.try_recv().is_err());

    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains(r#"brink_events_in_total{function="filter",trigger="http"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"brink_events_in_total{function="transform",trigger="function"} 1"#),
        "{metrics}"
    );
    node.shutdown().await
}

#[tokio::test]
async fn binary_and_batched_events_are_accepted() -> anyhow::Result<()> {
    let (hook, mut received) = webhook().await?;
    let (node, base) = node(&pipeline_manifest(&hook)).await?;
    let client = brink_tests::http();

    let binary = client
        .post(format!("{base}/events"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "b-1")
        .header("ce-source", "/factory/line-1/sensors")
        .header("ce-type", "com.example.reading")
        .header("ce-site", "plant%207")
        .header("content-type", "application/json")
        .body(r#"{"device":"t-9","value":45}"#)
        .send()
        .await?;
    assert_eq!(
        binary.status(),
        StatusCode::ACCEPTED,
        "{}",
        binary.text().await?
    );
    let (headers, _) = tokio::time::timeout(Duration::from_secs(5), received.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("webhook channel closed"))?;
    assert_eq!(headers["ce-subject"], "t-9");

    let batch = serde_json::json!([
        reading_json("x-1", "t-1", 40.0),
        reading_json("x-2", "t-2", 41.0)
    ]);
    let response = client
        .post(format!("{base}/events"))
        .header("content-type", "application/cloudevents-batch+json")
        .body(batch.to_string())
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(5), received.recv()).await?;
    }
    node.shutdown().await
}

#[tokio::test]
async fn invoking_a_function_answers_with_its_output_in_binary_mode() -> anyhow::Result<()> {
    let (hook, _received) = webhook().await?;
    let (node, base) = node(&pipeline_manifest(&hook)).await?;
    let client = brink_tests::http();
    let response = client
        .post(format!("{base}/functions/echo"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "i-1")
        .header("ce-source", "/cli")
        .header("ce-type", "com.example.ping")
        .header("ce-note", "caf%C3%A9%20au%20lait")
        .header("content-type", "text/plain")
        .body("hello edge")
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["ce-id"], "i-1");
    assert_eq!(response.headers()["ce-note"], "caf%C3%A9%20au%20lait");
    assert_eq!(response.headers()["content-type"], "text/plain");
    assert_eq!(response.text().await?, "hello edge");

    // filter drops a normal reading: no content.
    let dropped = client
        .post(format!("{base}/functions/filter"))
        .header("content-type", STRUCTURED)
        .body(reading_json("i-2", "t-1", 1.0).to_string())
        .send()
        .await?;
    assert_eq!(dropped.status(), StatusCode::NO_CONTENT);
    node.shutdown().await
}

#[tokio::test]
async fn malformed_requests_get_problem_bodies_and_the_node_keeps_serving() -> anyhow::Result<()> {
    let (hook, _received) = webhook().await?;
    let (node, base) = node(&pipeline_manifest(&hook)).await?;
    let client = brink_tests::http();
    let events = format!("{base}/events");

    let missing_id = client
        .post(&events)
        .header("ce-specversion", "1.0")
        .header("ce-source", "/s")
        .header("ce-type", "com.example.reading")
        .body("{}")
        .send()
        .await?;
    assert_problem(
        missing_id,
        StatusCode::BAD_REQUEST,
        "missing header `ce-id`",
    )
    .await?;

    let bad_version = client
        .post(&events)
        .header("ce-specversion", "0.9")
        .header("ce-id", "1")
        .header("ce-source", "/s")
        .header("ce-type", "t")
        .send()
        .await?;
    assert_problem(bad_version, StatusCode::BAD_REQUEST, "ce-specversion").await?;

    let bad_json = client
        .post(&events)
        .header("content-type", STRUCTURED)
        .body("{not json")
        .send()
        .await?;
    assert_problem(bad_json, StatusCode::BAD_REQUEST, "invalid CloudEvent JSON").await?;

    let missing_attr = client
        .post(&events)
        .header("content-type", STRUCTURED)
        .body(r#"{"specversion":"1.0","source":"/s","type":"t"}"#)
        .send()
        .await?;
    assert_problem(
        missing_attr,
        StatusCode::BAD_REQUEST,
        "missing attribute `id`",
    )
    .await?;

    let too_big = client
        .post(&events)
        .header("content-type", STRUCTURED)
        .body(vec![b' '; 8 * 1024])
        .send()
        .await?;
    assert_problem(too_big, StatusCode::PAYLOAD_TOO_LARGE, "").await?;

    let not_a_reading = client
        .post(format!("{base}/functions/filter"))
        .header("content-type", STRUCTURED)
        .body(
            serde_json::json!({"specversion":"1.0","id":"n","source":"/s","type":"t","data":{"x":1}})
                .to_string(),
        )
        .send()
        .await?;
    assert_problem(
        not_a_reading,
        StatusCode::UNPROCESSABLE_ENTITY,
        "not the JSON this function expects",
    )
    .await?;

    let unknown = client
        .post(format!("{base}/functions/nope"))
        .header("content-type", STRUCTURED)
        .body(reading_json("u", "t", 1.0).to_string())
        .send()
        .await?;
    assert_problem(unknown, StatusCode::NOT_FOUND, "no function named `nope`").await?;

    let trapped = client
        .post(format!("{base}/functions/trap"))
        .header("content-type", STRUCTURED)
        .body(reading_json("t", "t", 1.0).to_string())
        .send()
        .await?;
    assert_problem(trapped, StatusCode::BAD_GATEWAY, "trapped").await?;

    let health = client.get(format!("{base}/healthz")).send().await?;
    assert_eq!(health.status(), StatusCode::OK);
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains(r#"brink_errors_total{function="trap",kind="trap"} 1"#),
        "{metrics}"
    );
    node.shutdown().await
}

#[tokio::test]
async fn an_overloaded_function_answers_503_with_retry_after() -> anyhow::Result<()> {
    let text = format!(
        r#"brink_manifest_version = 1
[http]
listen = "127.0.0.1:0"
[function.spin]
source = {spin:?}
limits = {{ timeout_ms = 300, concurrency = 1 }}
"#,
        spin = artifacts::FIXTURE_SPIN_LOOP
    );
    let (node, base) = node(&text).await?;
    let client = brink_tests::http();
    let mut requests = Vec::new();
    // One slot and four queue places: of twelve at once, some must be refused.
    for i in 0..12 {
        let request = client
            .post(format!("{base}/functions/spin"))
            .header("content-type", STRUCTURED)
            .body(reading_json(&format!("o-{i}"), "t", 1.0).to_string())
            .send();
        requests.push(tokio::spawn(request));
    }
    let mut overloaded = 0;
    let mut timed_out = 0;
    for request in requests {
        let response = request.await??;
        match response.status() {
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(response.headers()["retry-after"], "1");
                overloaded += 1;
            }
            StatusCode::BAD_GATEWAY => timed_out += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(overloaded >= 1, "none refused");
    assert!(timed_out >= 1, "none ran");
    assert_eq!(overloaded + timed_out, 12);
    node.shutdown().await
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish() -> anyhow::Result<()> {
    let text = format!(
        r#"brink_manifest_version = 1
[http]
listen = "127.0.0.1:0"
[function.spin]
source = {spin:?}
limits = {{ timeout_ms = 400 }}
"#,
        spin = artifacts::FIXTURE_SPIN_LOOP
    );
    let (node, base) = node(&text).await?;
    let client = brink_tests::http();
    let request = tokio::spawn(
        client
            .post(format!("{base}/functions/spin"))
            .header("content-type", STRUCTURED)
            .body(reading_json("s", "t", 1.0).to_string())
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    node.shutdown().await?;
    // The request in flight got its full answer (the timeout), not a reset.
    let response = request.await??;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await?)?;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("time limit")
    );
    Ok(())
}

/// A pipeline whose last stage posts to `webhook`, trusting `ca_file`.
fn https_manifest(webhook: &str, ca_file: &str) -> String {
    format!(
        r#"brink_manifest_version = 1
[http]
listen = "127.0.0.1:0"
webhook_ca_file = {ca_file}

[function.transform]
source = {transform:?}
triggers = [{{ http = "/temperature" }}]
outputs = [{{ webhook = {webhook:?} }}]
"#,
        transform = artifacts::TRANSFORM,
    )
}

#[tokio::test]
async fn outputs_reach_an_https_webhook_whose_certificate_the_node_trusts() -> anyhow::Result<()> {
    let pki = TestPki::generate()?;
    let (hook, mut received) = https_webhook(&pki).await?;
    let (node, base) = node(&https_manifest(&hook, &pki.path("ca.pem"))).await?;
    let client = brink_tests::http();
    let sent = client
        .post(format!("{base}/functions/transform"))
        .header("content-type", STRUCTURED)
        .body(reading_json("s-1", "t-5", 35.0).to_string())
        .send()
        .await?;
    assert_eq!(sent.status(), StatusCode::OK);
    let (headers, body) = tokio::time::timeout(Duration::from_secs(5), received.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("webhook channel closed"))?;
    assert_eq!(headers["ce-subject"], "t-5");
    let data: serde_json::Value = serde_json::from_slice(&body)?;
    assert_eq!(data["temperature"]["value"], 95.0);
    node.shutdown().await
}

#[tokio::test]
async fn an_https_webhook_with_an_untrusted_certificate_fails_the_delivery_not_the_node()
-> anyhow::Result<()> {
    let pki = TestPki::generate()?;
    let (hook, mut received) = https_webhook(&pki).await?;
    let (node, base) = node(&https_manifest(&hook, &pki.path("other-ca.pem"))).await?;
    let client = brink_tests::http();
    let sent = client
        .post(format!("{base}/functions/transform"))
        .header("content-type", STRUCTURED)
        .body(reading_json("s-2", "t-6", 35.0).to_string())
        .send()
        .await?;
    assert!(sent.status().is_server_error(), "{}", sent.status());
    let problem: serde_json::Value = serde_json::from_slice(&sent.bytes().await?)?;
    let detail = problem["detail"].as_str().unwrap_or_default().to_owned();
    assert!(detail.contains(&hook), "{problem}");
    assert!(received.try_recv().is_err());
    // The node keeps serving.
    let health = client.get(format!("{base}/healthz")).send().await?;
    assert_eq!(health.status(), StatusCode::OK);
    node.shutdown().await
}
