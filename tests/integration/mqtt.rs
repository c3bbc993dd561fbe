//! `brink up`'s MQTT side: real nodes against the embedded broker and an
//! external mosquitto, driven by real MQTT 5 and 3.1.1 clients.

use std::collections::BTreeSet;
use std::time::Duration;

use brink_host::node::Node;
use brink_tests::artifacts;
use brink_tests::mqtt::{Client5, Client311, Mosquitto, TestPki, free_port};

const STRUCTURED: &str = "application/cloudevents+json";

async fn start(text: &str) -> anyhow::Result<Node> {
    brink_tests::start_node(text).await
}

pub(crate) async fn metrics(node: &Node) -> anyhow::Result<String> {
    Ok(brink_tests::http()
        .get(format!("http://{}/metrics", node.http_addr()))
        .send()
        .await?
        .text()
        .await?)
}

fn reading(device: &str, value: f64) -> String {
    serde_json::json!({ "device": device, "value": value }).to_string()
}

/// A manifest with HTTP on a free port, `[mqtt]` settings `mqtt`, and the
/// function sections `functions`.
fn app(mqtt: &str, functions: &str) -> String {
    format!(
        "brink_manifest_version = 1\n[http]\nlisten = \"127.0.0.1:0\"\n[mqtt]\n{mqtt}\n\n{functions}"
    )
}

/// The demo's flow: filter → transform → `alerts/{subject}`.
fn pipeline(mqtt: &str) -> String {
    app(
        mqtt,
        &format!(
            r#"[function.filter]
source = {filter:?}
triggers = [{{ mqtt = "sensors/+/temperature" }}]
outputs = [{{ function = "transform" }}]
config = {{ threshold = "30" }}

[function.transform]
source = {transform:?}
outputs = [{{ mqtt = "alerts/{{subject}}" }}]
"#,
            filter = artifacts::FILTER,
            transform = artifacts::TRANSFORM,
        ),
    )
}

pub(crate) fn embedded() -> anyhow::Result<(String, u16, u16)> {
    let (v4, v5) = (free_port()?, free_port()?);
    Ok((
        format!("listen = \"127.0.0.1:{v4}\"\nlisten_v5 = \"127.0.0.1:{v5}\""),
        v4,
        v5,
    ))
}

#[tokio::test]
async fn plain_device_readings_flow_through_the_embedded_broker_to_an_alerts_topic()
-> anyhow::Result<()> {
    let (mqtt, v4, v5) = embedded()?;
    let node = start(&pipeline(&mqtt)).await?;
    let mut alerts = Client5::connect(v5, &["alerts/#"]).await?;
    // Devices speak MQTT 3.1.1 and plain JSON, not CloudEvents.
    let mut device = Client311::connect(v4).await?;
    device
        .publish("sensors/t-7/temperature", reading("t-7", 31.5))
        .await?;
    device
        .publish("sensors/t-8/temperature", reading("t-8", 20.0))
        .await?;
    device.wait_acked(2).await?;

    let alert = alerts.next(10).await?;
    assert_eq!(alert.topic, "alerts/t-7");
    // MQTT 5 binary mode: attributes as user properties, the data as payload.
    assert_eq!(
        alert.property("type"),
        Some("com.brink.temperature.fahrenheit")
    );
    assert_eq!(alert.property("specversion"), Some("1.0"));
    assert_eq!(alert.property("subject"), Some("t-7"));
    assert_eq!(alert.content_type.as_deref(), Some("application/json"));
    assert_eq!(alert.json()?["temperature"]["value"], 88.7);
    assert!(
        alerts.quiet_for(300).await.is_none(),
        "the cold reading passed the filter"
    );

    let text = metrics(&node).await?;
    assert!(
        text.contains(r#"brink_events_in_total{function="filter",trigger="mqtt"} 2"#),
        "{text}"
    );
    assert!(text.contains("brink_mqtt_connected 1"), "{text}");
    node.shutdown().await
}

#[tokio::test]
async fn mqtt_3_subscribers_receive_messages_published_with_mqtt_5_properties() -> anyhow::Result<()>
{
    // Guards the vendored rumqttd patch: this used to kill the embedded
    // broker's 3.1.1 listener for every device.
    let (mqtt, v4, _) = embedded()?;
    let node = start(&pipeline(&mqtt)).await?;
    let mut old_device = Client311::subscribed(v4, &["alerts/#"]).await?;
    let mut sensor = Client311::connect(v4).await?;
    sensor
        .publish("sensors/t-5/temperature", reading("t-5", 33.0))
        .await?;
    sensor.wait_acked(1).await?;
    let alert = tokio::time::timeout(Duration::from_secs(10), old_device.messages.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("subscriber closed"))?;
    // Binary mode's attributes cannot cross to MQTT 3.1.1; the data does.
    assert_eq!(alert.topic, "alerts/t-5");
    assert_eq!(alert.json()?["device_id"], "t-5");
    // And the listener still serves new devices.
    let mut late = Client311::connect(v4).await?;
    late.publish("sensors/t-6/temperature", reading("t-6", 35.0))
        .await?;
    late.wait_acked(1).await?;
    let next = tokio::time::timeout(Duration::from_secs(10), old_device.messages.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("subscriber closed"))?;
    assert_eq!(next.topic, "alerts/t-6");
    node.shutdown().await
}

#[tokio::test]
async fn mosquitto_carries_mqtt5_binary_and_mqtt311_structured_events() -> anyhow::Result<()> {
    let broker = Mosquitto::start()?;
    let url = format!("url = \"mqtt://127.0.0.1:{}\"", broker.port);
    let v5_node = start(&pipeline(&url)).await?;
    let mut alerts = Client5::connect(broker.port, &["alerts/#"]).await?;

    let mut producer = Client5::connect(broker.port, &[]).await?;
    producer
        .publish(
            "sensors/t-1/temperature",
            reading("t-1", 40.0),
            Some("application/json"),
            &[
                ("specversion", "1.0"),
                ("id", "b-1"),
                ("source", "/line-1"),
                ("type", "com.example.reading"),
                ("site", "plant-7"),
            ],
        )
        .await?;
    producer.wait_acked(1).await?;
    let alert = alerts.next(10).await?;
    assert_eq!(alert.topic, "alerts/t-1");
    assert_eq!(alert.property("source"), Some("/line-1"));
    assert_eq!(alert.json()?["temperature"]["value"], 104.0);
    v5_node.shutdown().await?;

    // The same app on MQTT 3.1.1, publishing structured events.
    let v311 = format!("{url}\nprotocol = \"v311\"\noutput_mode = \"structured\"");
    let v311_node = start(&pipeline(&v311)).await?;
    let mut device = Client311::connect(broker.port).await?;
    let event = serde_json::json!({
        "specversion": "1.0", "id": "s-1", "source": "/line-2", "type": "com.example.reading",
        "datacontenttype": "application/json", "data": { "device": "t-2", "value": 35.0 }
    });
    device
        .publish("sensors/t-2/temperature", event.to_string())
        .await?;
    device.wait_acked(1).await?;
    let alert = alerts.next(10).await?;
    assert_eq!(alert.topic, "alerts/t-2");
    // MQTT 3.1.1 has no properties: the whole event is the JSON payload.
    assert_eq!(alert.content_type, None);
    let json = alert.json()?;
    assert_eq!(json["specversion"], "1.0");
    assert_eq!(json["type"], "com.brink.temperature.fahrenheit");
    assert_eq!(json["source"], "/line-2");
    assert_eq!(json["data"]["temperature"]["value"], 95.0);
    v311_node.shutdown().await
}

#[tokio::test]
async fn failing_and_malformed_events_are_dead_lettered_and_the_host_keeps_serving()
-> anyhow::Result<()> {
    let broker = Mosquitto::start()?;
    let mqtt = format!("url = \"mqtt://127.0.0.1:{}\"", broker.port);
    dead_letters(&mqtt, broker.port).await
}

#[tokio::test]
async fn dead_letters_go_out_over_the_in_process_link_to_the_embedded_broker() -> anyhow::Result<()>
{
    let (mqtt, _, v5) = embedded()?;
    dead_letters(&mqtt, v5).await
}

/// Traps, transient failures and malformed events through the broker on
/// `port` (MQTT 5), with `[mqtt]` settings `mqtt`.
async fn dead_letters(mqtt: &str, port: u16) -> anyhow::Result<()> {
    let mqtt = format!("{mqtt}\nmax_retries = 2");
    let text = app(
        &mqtt,
        &format!(
            r#"[function.trap]
source = {trap:?}
triggers = [{{ mqtt = "trap/#" }}]

[function.unavailable]
source = {unavailable:?}
triggers = [{{ mqtt = "store/#" }}]

[function.echo]
source = {echo:?}
triggers = [{{ mqtt = "echo/#" }}]
outputs = [{{ mqtt = "echoed/{{id}}" }}]
"#,
            trap = artifacts::FIXTURE_TRAP,
            unavailable = artifacts::FIXTURE_UNAVAILABLE,
            echo = artifacts::ECHO,
        ),
    );
    let node = start(&text).await?;
    let mut watch = Client5::connect(port, &["brink/dead-letter/#", "echoed/#"]).await?;
    let producer = Client5::connect(port, &[]).await?;

    producer
        .publish("trap/1", reading("t-1", 1.0), None, &[])
        .await?;
    let dead = watch.next(15).await?;
    assert_eq!(dead.topic, "brink/dead-letter/trap");
    let error = dead.property("brinkerror").unwrap_or_default();
    assert!(error.contains("function `trap` trapped"), "{error}");
    assert_eq!(dead.property("brinkerrorkind"), Some("trap"));
    // The original event is kept whole, so it can be replayed.
    assert_eq!(dead.property("subject"), Some("trap/1"));

    // A transient failure is retried (max_retries = 2) before it is given up on.
    producer
        .publish("store/1", reading("t-1", 1.0), None, &[])
        .await?;
    let dead = watch.next(15).await?;
    assert_eq!(dead.topic, "brink/dead-letter/unavailable");
    assert_eq!(dead.property("brinkerrorkind"), Some("handler_error"));

    // Malformed CloudEvents: a clear reason, the bytes kept as they came.
    producer
        .publish("echo/bad-json", "{not json", Some(STRUCTURED), &[])
        .await?;
    let dead = watch.next(10).await?;
    assert_eq!(dead.topic, "brink/dead-letter/echo");
    let error = dead.property("brinkerror").unwrap_or_default();
    assert!(error.contains("invalid CloudEvent JSON"), "{error}");
    assert_eq!(dead.payload, b"{not json");
    producer
        .publish(
            "echo/no-id",
            "{}",
            Some("application/json"),
            &[("specversion", "1.0"), ("source", "/s"), ("type", "t")],
        )
        .await?;
    let dead = watch.next(10).await?;
    let error = dead.property("brinkerror").unwrap_or_default();
    assert!(error.contains("missing user property `id`"), "{error}");

    // Everyone else is still served.
    producer
        .publish(
            "echo/ok",
            "{}",
            Some("application/json"),
            &[
                ("specversion", "1.0"),
                ("id", "fine-1"),
                ("source", "/s"),
                ("type", "t"),
            ],
        )
        .await?;
    let echoed = watch.next(10).await?;
    assert_eq!(echoed.topic, "echoed/fine-1");

    let text = metrics(&node).await?;
    assert!(
        text.contains(r#"brink_dead_letters_total{function="trap"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"brink_dead_letters_total{function="echo"} 2"#),
        "{text}"
    );
    // A trap is deterministic: no retry. A transient error: first try and two retries.
    assert!(
        text.contains(r#"brink_errors_total{function="trap",kind="trap"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"brink_errors_total{function="unavailable",kind="handler_error"} 3"#),
        "{text}"
    );
    node.shutdown().await
}

pub(crate) fn echo_app(mqtt: &str, concurrency: u32) -> String {
    app(
        mqtt,
        &format!(
            r#"[function.echo]
source = {echo:?}
triggers = [{{ mqtt = "in/#" }}]
outputs = [{{ mqtt = "out/{{subject}}" }}]
limits = {{ concurrency = {concurrency} }}
"#,
            echo = artifacts::ECHO,
        ),
    )
}

/// Publishes events numbered 0..n to `in/x` and waits for the broker's PUBACKs.
pub(crate) async fn publish_numbered(producer: &mut Client5, n: usize) -> anyhow::Result<()> {
    for i in 0..n {
        producer
            .publish("in/x", numbered(i, "x"), None, &[])
            .await?;
    }
    producer.wait_acked(n).await
}

/// The distinct numbers the echoed events carry.
pub(crate) fn numbers(received: &[brink_tests::mqtt::Received]) -> BTreeSet<u64> {
    received
        .iter()
        .filter_map(|m| m.json().ok()?["n"].as_u64())
        .collect()
}

fn numbered(i: usize, subject: &str) -> String {
    serde_json::json!({
        "specversion": "1.0", "id": format!("m-{i}"), "source": "/test", "type": "t",
        "subject": subject, "data": { "n": i }
    })
    .to_string()
}

#[tokio::test]
async fn a_function_with_concurrency_one_keeps_the_order_of_each_topic() -> anyhow::Result<()> {
    let (mqtt, _, v5) = embedded()?;
    let node = start(&echo_app(&mqtt, 1)).await?;
    let mut out = Client5::connect(v5, &["out/#"]).await?;
    let mut producer = Client5::connect(v5, &[]).await?;
    let n = 300;
    for i in 0..n {
        let subject = if i % 2 == 0 { "a" } else { "b" };
        producer
            .publish(&format!("in/{subject}"), numbered(i, subject), None, &[])
            .await?;
    }
    producer.wait_acked(n).await?;
    let received = out.collect(n, 30).await;
    assert_eq!(received.len(), n);
    for subject in ["a", "b"] {
        let order: Vec<u64> = received
            .iter()
            .filter(|m| m.topic == format!("out/{subject}"))
            .filter_map(|m| m.json().ok()?["n"].as_u64())
            .collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(order, sorted, "topic in/{subject} out of order");
        assert_eq!(order.len(), n / 2);
    }
    node.shutdown().await
}

#[tokio::test]
async fn a_burst_beyond_the_inflight_window_is_absorbed_with_nothing_lost() -> anyhow::Result<()> {
    let (mqtt, _, v5) = embedded()?;
    let node = start(&echo_app(&mqtt, 2)).await?;
    let mut out = Client5::connect(v5, &["out/#"]).await?;
    let mut producer = Client5::connect(v5, &[]).await?;
    // Ten times the node's in-flight window, into a function that runs two at a time.
    let n = 2560;
    publish_numbered(&mut producer, n).await?;
    let received = out.collect(n, 60).await;
    let ids = numbers(&received);
    let text = metrics(&node).await?;
    assert_eq!(ids.len(), n, "lost {} events {text}", n - ids.len());
    assert!(!text.contains("brink_dead_letters_total{"), "{text}");
    node.shutdown().await
}

#[tokio::test]
async fn two_hosts_on_one_mosquitto_split_a_shared_subscription_with_none_lost()
-> anyhow::Result<()> {
    let broker = Mosquitto::start()?;
    let mqtt = format!(
        "url = \"mqtt://127.0.0.1:{}\"\nshared_group = \"line-1\"",
        broker.port
    );
    // Two nodes: each its own data directory, so its own node id and session.
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let node = |dir: &tempfile::TempDir| {
        format!(
            "data_dir = {:?}\n{}",
            dir.path().display().to_string(),
            echo_app(&mqtt, 8)
        )
    };
    let first = start(&node(&dirs[0])).await?;
    let second = start(&node(&dirs[1])).await?;
    let mut out = Client5::connect(broker.port, &["out/#"]).await?;
    let mut producer = Client5::connect(broker.port, &[]).await?;
    let n = 400;
    publish_numbered(&mut producer, n).await?;
    let received = out.collect(n, 30).await;
    let ids = numbers(&received);
    assert_eq!(ids.len(), n, "lost {} events", n - ids.len());
    assert_eq!(received.len(), n, "a shared subscription delivered twice");
    for node in [&first, &second] {
        let text = metrics(node).await?;
        let handled = text
            .lines()
            .find(|l| l.starts_with(r#"brink_events_in_total{function="echo",trigger="mqtt"}"#))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0);
        assert!(handled > 0, "one host got nothing: {text}");
    }
    first.shutdown().await?;
    second.shutdown().await
}

#[tokio::test]
async fn graceful_shutdown_and_restart_lose_no_acknowledged_event() -> anyhow::Result<()> {
    let broker = Mosquitto::start()?;
    // A fixed client id: the broker keeps the session and queues for it while the node is down.
    let mqtt = format!(
        "url = \"mqtt://127.0.0.1:{}\"\nclient_id = \"brink-restart-test\"",
        broker.port
    );
    let mut out = Client5::connect(broker.port, &["out/#"]).await?;
    let mut producer = Client5::connect(broker.port, &[]).await?;
    let mut node = Some(start(&echo_app(&mqtt, 4)).await?);
    let mut stopping = None;
    let n = 1000;
    for i in 0..n {
        if i == n / 4 {
            // Stop in the middle of the stream; the rest queues at the broker.
            stopping = node.take().map(|node| tokio::spawn(node.shutdown()));
        }
        producer
            .publish("in/x", numbered(i, "x"), None, &[])
            .await?;
    }
    producer.wait_acked(n).await?;
    if let Some(stopping) = stopping {
        stopping.await??;
    }
    let restarted = start(&echo_app(&mqtt, 4)).await?;
    let received = out.collect(n, 60).await;
    let ids = numbers(&received);
    assert_eq!(ids.len(), n, "lost {} events", n - ids.len());
    restarted.shutdown().await
}

/// Why a node on `text` fails to start, with its causes ("" if it starts).
async fn start_error(text: &str) -> String {
    match start(text).await {
        Ok(node) => {
            let _ = node.shutdown().await;
            String::new()
        }
        Err(e) => format!("{e:#}"),
    }
}

/// A node on one of `broker`'s TLS listeners, with `tls` settings.
fn tls_app(port: u16, tls: &str) -> String {
    pipeline(&format!(
        "url = \"mqtts://127.0.0.1:{port}\"\n{tls}\nplain_event_type = \"com.example.reading\""
    ))
}

/// Publishes a hot reading on the plain listener and expects its alert there.
async fn reading_flows(broker: &Mosquitto, device: &str) -> anyhow::Result<()> {
    let mut alerts = Client5::connect(broker.port, &["alerts/#"]).await?;
    let mut producer = Client5::connect(broker.port, &[]).await?;
    producer
        .publish(
            &format!("sensors/{device}/temperature"),
            reading(device, 41.0),
            None,
            &[],
        )
        .await?;
    producer.wait_acked(1).await?;
    let alert = alerts.next(10).await?;
    assert_eq!(alert.topic, format!("alerts/{device}"));
    assert_eq!(alert.json()?["temperature"]["value"], 105.8);
    Ok(())
}

#[tokio::test]
async fn a_node_joins_a_tls_broker_that_its_ca_file_trusts() -> anyhow::Result<()> {
    let pki = TestPki::generate()?;
    let tls = Mosquitto::start_tls(&pki)?;
    let node = start(&tls_app(
        tls.tls_port,
        &format!("ca_file = {}", pki.path("ca.pem")),
    ))
    .await?;
    reading_flows(&tls.broker, "tls-1").await?;
    node.shutdown().await
}

#[tokio::test]
async fn mutual_tls_presents_the_configured_client_certificate() -> anyhow::Result<()> {
    let pki = TestPki::generate()?;
    let tls = Mosquitto::start_tls(&pki)?;
    // Without a client certificate the broker turns the node away.
    let refused = start_error(&tls_app(
        tls.mtls_port,
        &format!("ca_file = {}", pki.path("ca.pem")),
    ))
    .await;
    assert!(refused.contains("could not connect"), "{refused}");
    assert!(refused.contains("CertificateRequired"), "{refused}");

    let node = start(&tls_app(
        tls.mtls_port,
        &format!(
            "ca_file = {}\nclient_cert = {}\nclient_key = {}",
            pki.path("ca.pem"),
            pki.path("client.pem"),
            pki.path("client.key")
        ),
    ))
    .await?;
    reading_flows(&tls.broker, "mtls-1").await?;
    node.shutdown().await
}

#[tokio::test]
async fn a_broker_certificate_from_an_untrusted_ca_is_refused_with_a_clear_error()
-> anyhow::Result<()> {
    let pki = TestPki::generate()?;
    let tls = Mosquitto::start_tls(&pki)?;
    let err = start_error(&tls_app(
        tls.tls_port,
        &format!("ca_file = {}", pki.path("other-ca.pem")),
    ))
    .await;
    assert!(err.contains("could not connect"), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    // A CA file that is not PEM is named before any connection is tried.
    let bogus = pki.dir.path().join("bogus.pem");
    std::fs::write(&bogus, "not a certificate")?;
    let err = start_error(&tls_app(
        tls.tls_port,
        &format!("ca_file = {:?}", bogus.display().to_string()),
    ))
    .await;
    assert!(
        err.contains("mqtt.ca_file") && err.contains("bogus.pem"),
        "{err}"
    );
    Ok(())
}
