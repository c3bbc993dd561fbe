//! MQTT's own limits on the node's outputs: a field too long for the
//! protocol fails that one event, with a reason, never the connection that
//! other events share.

use std::time::Duration;

use brink_tests::artifacts;
use brink_tests::mqtt::{Client5, free_port};

const STRUCTURED: &str = "application/cloudevents+json";

fn reading(id: &str, subject: &str) -> String {
    serde_json::json!({
        "specversion": "1.0", "id": id, "source": "/devices", "type": "com.example.reading",
        "subject": subject, "datacontenttype": "application/json", "data": {"value": 1}
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_topic_over_mqtts_limit_is_dead_lettered_once_and_other_events_flow()
-> anyhow::Result<()> {
    // Binary mode puts the 70 kB subject in a user property too, so the
    // whole dead letter cannot be sent either and goes out cut down.
    for mode in ["binary", "structured"] {
        let (v4, v5) = (free_port()?, free_port()?);
        let text = format!(
            "brink_manifest_version = 1\n[http]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nlisten = \"127.0.0.1:{v4}\"\nlisten_v5 = \"127.0.0.1:{v5}\"\nprotocol = \"v5\"\noutput_mode = \"{mode}\"\nmax_retries = 2\n\n[function.echo]\nsource = {:?}\ntriggers = [{{ mqtt = \"in/#\" }}]\noutputs = [{{ mqtt = \"alerts/{{subject}}\" }}]\n",
            artifacts::ECHO
        );
        let node = brink_tests::start_node(&text).await?;
        let mut alerts = Client5::connect(v5, &["alerts/#"]).await?;
        let mut dead = Client5::connect(v5, &["brink/dead-letter/#"]).await?;
        let device = Client5::connect(v5, &[]).await?;
        let long = "s".repeat(70_000);
        device
            .publish("in/x", reading("poison", &long), Some(STRUCTURED), &[])
            .await?;
        for i in 0..5 {
            let id = format!("ok-{i}");
            device
                .publish(
                    "in/x",
                    reading(&id, &format!("dev-{i}")),
                    Some(STRUCTURED),
                    &[],
                )
                .await?;
        }
        let got = alerts.collect(5, 20).await;
        let mut topics: Vec<String> = got.iter().map(|m| m.topic.clone()).collect();
        topics.sort();
        let want: Vec<String> = (0..5).map(|i| format!("alerts/dev-{i}")).collect();
        assert_eq!(topics, want, "{mode}");

        let letter = dead.next(20).await?;
        assert_eq!(letter.topic, "brink/dead-letter/echo");
        let (id, error, truncated) = match letter.property("specversion") {
            Some(_) => (
                letter.property("id").map(str::to_owned),
                letter.property("brinkerror").map(str::to_owned),
                letter.property("brinkdeadletter").map(str::to_owned),
            ),
            None => {
                let json = letter.json()?;
                let text = |f: &str| json[f].as_str().map(str::to_owned);
                (text("id"), text("brinkerror"), text("brinkdeadletter"))
            }
        };
        assert_eq!(id.as_deref(), Some("poison"), "{mode}");
        assert!(
            error.as_deref().is_some_and(|e| e.contains("65535")),
            "{mode}: {error:?}"
        );
        assert_eq!(
            truncated.as_deref(),
            (mode == "binary").then_some("truncated"),
            "{mode}"
        );
        // Dead-lettered once: the broker does not redeliver it, and nothing
        // else was dead-lettered along with it.
        assert!(dead.quiet_for(1500).await.is_none(), "{mode}");
        assert!(alerts.quiet_for(100).await.is_none(), "{mode}");
        node.shutdown().await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A TCP proxy from a port of its own to `to`, whose live connections can
/// be cut at once (both sockets closed), as a flaky network would.
struct Cutter {
    port: u16,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Cutter {
    async fn start(to: u16) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let connections = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let live = connections.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", to)).await
                    {
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                if let Ok(mut live) = live.lock() {
                    live.push(task);
                }
            }
        });
        Ok(Self {
            port,
            connections,
            accept,
        })
    }

    /// Closes every connection open now; new ones are still let through.
    fn cut(&self) {
        if let Ok(mut live) = self.connections.lock() {
            for task in live.drain(..) {
                task.abort();
            }
        }
    }
}

impl Drop for Cutter {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_messages_survive_a_dropped_connection_to_an_external_broker_on_both_protocols()
-> anyhow::Result<()> {
    for protocol in ["v311", "v5"] {
        let broker = brink_tests::mqtt::Mosquitto::start()?;
        let cutter = Cutter::start(broker.port).await?;
        let dir = tempfile::tempdir()?;
        // No client_id: the node's own stable id must keep its session.
        let text = format!(
            "brink_manifest_version = 1\ndata_dir = {:?}\n[http]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\nprotocol = \"{protocol}\"\noutput_mode = \"structured\"\nmax_retries = 20\n\n[function.echo]\nsource = {:?}\ntriggers = [{{ mqtt = \"in/#\" }}]\noutputs = [{{ mqtt = \"out/{{subject}}\" }}]\nlimits = {{ concurrency = 4 }}\n",
            dir.path().display().to_string(),
            cutter.port,
            artifacts::ECHO
        );
        let node = brink_tests::start_node(&text).await?;
        let mut out = Client5::connect(broker.port, &["out/#"]).await?;
        let mut producer = Client5::connect(broker.port, &[]).await?;
        let n = 600;
        for i in 0..n {
            if i == n / 3 {
                // Mid-stream: messages in flight to the node, and those
                // published while it reconnects, must not be lost.
                cutter.cut();
            }
            let event = serde_json::json!({
                "specversion": "1.0", "id": format!("m-{i}"), "source": "/test", "type": "t",
                "subject": "x", "data": { "n": i }
            });
            producer
                .publish("in/x", event.to_string(), None, &[])
                .await?;
        }
        producer.wait_acked(n).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < n && tokio::time::Instant::now() < deadline {
            for m in out.collect(n - seen.len(), 5).await {
                if let Some(i) = m.json()?["data"]["n"].as_u64() {
                    seen.insert(i);
                }
            }
        }
        assert_eq!(
            seen.len(),
            n,
            "{protocol}: lost {} acknowledged messages",
            n - seen.len()
        );
        node.shutdown().await?;
    }
    Ok(())
}

/// `brink_events_in_total` of `function` on `trigger`, from the node's /metrics.
async fn handled(
    node: &brink_host::node::Node,
    function: &str,
    trigger: &str,
) -> anyhow::Result<u64> {
    let text = brink_tests::http()
        .get(format!("http://{}/metrics", node.http_addr()))
        .send()
        .await?
        .text()
        .await?;
    let prefix = format!("brink_events_in_total{{function=\"{function}\",trigger=\"{trigger}\"}} ");
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_that_publish_while_the_node_starts_lose_nothing_they_were_acknowledged_for()
-> anyhow::Result<()> {
    // Five starts; each time a device has 200 QoS 1 messages queued and
    // sends them the moment the embedded broker lets it in.
    for round in 0..5 {
        let (v4, v5) = (free_port()?, free_port()?);
        let mut device = Client5::connect(v5, &[]).await?;
        for i in 0..200 {
            let event = serde_json::json!({
                "specversion": "1.0", "id": format!("r{round}-{i}"), "source": "/d", "type": "t",
                "subject": "x", "data": { "n": i }
            });
            device
                .publish("in/x", event.to_string(), Some(STRUCTURED), &[])
                .await?;
        }
        let text = format!(
            "brink_manifest_version = 1\n[http]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nlisten = \"127.0.0.1:{v4}\"\nlisten_v5 = \"127.0.0.1:{v5}\"\n\n[function.echo]\nsource = {:?}\ntriggers = [{{ mqtt = \"in/#\" }}]\n",
            artifacts::ECHO
        );
        let node = brink_tests::start_node(&text).await?;
        device.wait_acked(200).await?;
        // Every message the broker acknowledged reaches the function.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let n = handled(&node, "echo", "mqtt").await?;
            if n == 200 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: {n} of 200 acknowledged messages handled"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        node.shutdown().await?;
    }
    Ok(())
}

/// A webhook receiver that answers nothing until `release` is notified, and
/// says on `arrived` when a request came in.
async fn held_webhook() -> anyhow::Result<(
    String,
    std::sync::Arc<tokio::sync::Notify>,
    tokio::sync::mpsc::UnboundedReceiver<()>,
)> {
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let (tx, arrived) = tokio::sync::mpsc::unbounded_channel();
    let gate = release.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let (gate, tx) = (gate.clone(), tx.clone());
            async move {
                let _ = tx.send(());
                gate.notified().await;
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, release, arrived))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_acknowledges_a_device_only_once_the_node_has_handled_the_message()
-> anyhow::Result<()> {
    // The function's webhook holds its answer: until it answers, the
    // message is not handled, and a crash now would lose it if the device
    // had its PUBACK.
    let (url, release, mut arrived) = held_webhook().await?;
    let (v4, v5) = (free_port()?, free_port()?);
    let text = format!(
        "brink_manifest_version = 1\n[http]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nlisten = \"127.0.0.1:{v4}\"\nlisten_v5 = \"127.0.0.1:{v5}\"\nclient_id = \"gw-7\"\n\n[function.echo]\nsource = {:?}\ntriggers = [{{ mqtt = \"in/#\" }}]\noutputs = [{{ webhook = {url:?} }}]\n",
        artifacts::ECHO
    );
    let node = brink_tests::start_node(&text).await?;
    let mut device = Client5::connect(v5, &[]).await?;
    device
        .publish("in/x", reading("held-1", "x"), Some(STRUCTURED), &[])
        .await?;
    tokio::time::timeout(Duration::from_secs(10), arrived.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the webhook receiver stopped"))?;
    assert!(
        !device.acked_within(1000).await,
        "the device had its PUBACK while the function's output was still unanswered"
    );
    release.notify_one();
    assert!(
        device.acked_within(10_000).await,
        "no PUBACK once the output was delivered"
    );

    // A message that matches no function is acknowledged at once, and a
    // device may not take the node's own client id (and with it the node's
    // session).
    device
        .publish("elsewhere", reading("free-1", "x"), Some(STRUCTURED), &[])
        .await?;
    assert!(
        device.acked_within(10_000).await,
        "no PUBACK for an unrouted message"
    );
    let options = rumqttc::v5::MqttOptions::new("gw-7", "127.0.0.1", v5);
    let (_impostor, mut events) = rumqttc::v5::AsyncClient::new(options, 10);
    let answer = tokio::time::timeout(Duration::from_secs(10), events.poll()).await?;
    assert!(
        matches!(
            answer,
            Err(rumqttc::v5::ConnectionError::ConnectionRefused(
                rumqttc::v5::mqttbytes::v5::ConnectReturnCode::ClientIdentifierNotValid
            ))
        ),
        "a device took the node's client id: {answer:?}"
    );
    device
        .publish("in/x", reading("held-2", "x"), Some(STRUCTURED), &[])
        .await?;
    tokio::time::timeout(Duration::from_secs(10), arrived.recv()).await?;
    release.notify_one();
    assert!(
        device.acked_within(10_000).await,
        "the node stopped handling after the impostor"
    );
    node.shutdown().await?;
    Ok(())
}
