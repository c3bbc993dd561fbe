//! Store-and-forward: the `forward` function through the outbox, and a node
//! whose uplink is down while events pile up.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use brink_host::FunctionSpec;
use brink_host::kv::{Kv, KvConfig};
use brink_host::node::Node;
use brink_host::outbox::{Outbox, QueueConfig};
use brink_host::store::{Backend, Sled};
use brink_tests::{artifacts, json_data, load, reading};
use serde_json::{Value, json};

#[tokio::test]
async fn forward_batches_readings_and_sends_alerts_at_once_with_high_priority() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Backend> = Arc::new(Sled::open(dir.path())?);
    let kv = Kv::new(store.clone(), KvConfig::default())?;
    let outbox = Outbox::open(store, [("cloud".to_owned(), QueueConfig::default())])?;
    let mut spec = FunctionSpec::new("forward")
        .with_kv(kv, "app", ["default"])
        .with_outbox(outbox.clone(), ["cloud"]);
    spec.config.insert("batch".into(), "3".into());
    let f = load(spec, artifacts::FORWARD)?;
    for i in 0..7 {
        f.invoke(reading(&format!("r{i}"), "t-1", f64::from(i)))
            .await?;
    }
    let mut alert = reading("a1", "t-1", 99.0);
    alert.type_ = "com.brink.alert.raised".into();
    f.invoke(alert).await?;

    let queued = outbox.peek("cloud", 10)?;
    let summary: Vec<(u8, String)> = queued
        .iter()
        .map(|e| Ok((e.priority, e.event()?.id)))
        .collect::<anyhow::Result<_>>()?;
    // The alert first (priority 9), then two batches of three; r6 waits.
    assert_eq!(
        summary,
        [
            (9, "a1".to_owned()),
            (1, "batch-r0-r2-3".to_owned()),
            (1, "batch-r3-r5-3".to_owned()),
        ]
    );
    let batch = queued[1].event()?;
    assert_eq!(batch.type_, "com.brink.batch");
    assert_eq!(
        json_data(&batch)?,
        json!([
            { "device": "t-1", "value": 0.0 },
            { "device": "t-1", "value": 1.0 },
            { "device": "t-1", "value": 2.0 },
        ])
    );
    Ok(())
}

#[tokio::test]
async fn sending_to_an_ungranted_uplink_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Backend> = Arc::new(Sled::open(dir.path())?);
    let kv = Kv::new(store.clone(), KvConfig::default())?;
    let outbox = Outbox::open(
        store,
        [
            ("cloud".to_owned(), QueueConfig::default()),
            ("other".to_owned(), QueueConfig::default()),
        ],
    )?;
    let mut spec = FunctionSpec::new("forward")
        .with_kv(kv, "app", ["default"])
        .with_outbox(outbox.clone(), ["cloud"]);
    spec.config.insert("uplink".into(), "other".into());
    let f = load(spec, artifacts::FORWARD)?;
    let mut alert = reading("a1", "t-1", 99.0);
    alert.type_ = "com.brink.alert.raised".into();
    let err = f
        .invoke(alert)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("uplink `other` is not granted"), "{err}");
    assert!(outbox.peek("other", 10)?.is_empty());
    Ok(())
}

/// A node with only an uplink `cloud` (`uplink` is its settings), its state
/// in `dir`, and its outbox.
pub(crate) async fn uplink_node(
    dir: &std::path::Path,
    uplink: &str,
) -> anyhow::Result<(Node, Outbox)> {
    let text = format!(
        "brink_manifest_version = 1\ndata_dir = {:?}\n[http]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[uplink.cloud]\n{uplink}\n",
        dir.display().to_string()
    );
    let node = brink_tests::start_node(&text).await?;
    let outbox = node
        .outbox()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no outbox"))?;
    Ok((node, outbox))
}

/// Sends `events` readings from 32 concurrent senders in three priorities
/// (0, 4, 9 by index); event ids are `<sender>-<index>`, subjects `s<sender>`.
async fn produce(outbox: &Outbox, events: usize) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for sender in 0..32 {
        let outbox = outbox.clone();
        tasks.spawn(async move {
            for i in (sender..events).step_by(32) {
                let event = reading(&format!("{sender}-{i}"), &format!("s{sender}"), i as f64);
                outbox.send("cloud", &event, priority_of(i), None).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

fn priority_of(index: usize) -> u8 {
    [0, 4, 9][index % 3]
}

/// Checks that `ids` (in arrival order) hold every one of `events` produced
/// by [`produce`] exactly once, each sender's in order within a priority;
/// returns the position of the first priority-0 event.
fn check_arrivals<'a>(
    ids: impl Iterator<Item = &'a str>,
    events: usize,
) -> anyhow::Result<Option<usize>> {
    let mut last: BTreeMap<(u8, String), usize> = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut first_low = None;
    for (n, id) in ids.enumerate() {
        let (sender, i) = id.split_once('-').unwrap_or_default();
        let i: usize = i.parse()?;
        let priority = priority_of(i);
        if priority == 0 && first_low.is_none() {
            first_low = Some(n);
        }
        let previous = last.insert((priority, sender.to_owned()), i);
        anyhow::ensure!(previous.is_none_or(|p| p < i), "{id} after {previous:?}");
        anyhow::ensure!(seen.insert(id.to_owned()), "{id} arrived twice");
    }
    anyhow::ensure!(seen.len() == events, "{} of {events} arrived", seen.len());
    Ok(first_low)
}

/// A CloudEvents HTTP sink that can be switched off (503) and counts
/// every delivery attempt.
#[derive(Clone, Default)]
struct Sink {
    up: Arc<std::sync::atomic::AtomicBool>,
    attempts: Arc<std::sync::atomic::AtomicU64>,
    received: Arc<Mutex<Vec<Value>>>,
}

async fn start_sink(sink: Sink) -> anyhow::Result<String> {
    async fn ingest(
        axum::extract::State(sink): axum::extract::State<Sink>,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        sink.attempts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !sink.up.load(std::sync::atomic::Ordering::Relaxed) {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        let batched = headers
            .get("content-type")
            .is_some_and(|v| v.as_bytes() == b"application/cloudevents-batch+json");
        let Ok(Value::Array(events)) = serde_json::from_slice::<Value>(&body) else {
            return StatusCode::BAD_REQUEST;
        };
        assert!(batched);
        if let Ok(mut received) = sink.received.lock() {
            received.extend(events);
        }
        StatusCode::ACCEPTED
    }
    let app = axum::Router::new()
        .route("/ingest", axum::routing::post(ingest))
        .with_state(sink);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/ingest", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_events_made_during_an_outage_all_arrive_in_order_when_it_ends()
-> anyhow::Result<()> {
    const EVENTS: usize = 100_000;
    let sink = Sink::default();
    let url = start_sink(sink.clone()).await?;
    let dir = tempfile::tempdir()?;
    let (node, outbox) = uplink_node(
        dir.path(),
        &format!("http = {url:?}\nbatched = true\nmax_batch = 500"),
    )
    .await?;
    produce(&outbox, EVENTS).await?;
    let status = &outbox.status()[0];
    assert_eq!(status.backlog_events, EVENTS as u64);
    assert!(!status.connected);
    let attempts_while_down = sink.attempts.load(std::sync::atomic::Ordering::Relaxed);
    assert!(sink.received.lock().map(|r| r.is_empty()).unwrap_or(false));

    sink.up.store(true, std::sync::atomic::Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while sink.received.lock().map(|r| r.len()).unwrap_or(0) < EVENTS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {:?} of {EVENTS} arrived",
            sink.received.lock().map(|r| r.len())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let received = sink.received.lock().map(|r| r.clone()).unwrap_or_default();
    assert_eq!(received.len(), EVENTS, "no duplicates in a clean run");
    let first_low = check_arrivals(
        received
            .iter()
            .map(|e| e["id"].as_str().unwrap_or_default()),
        EVENTS,
    )?;
    // The backlog drained highest priority first: priority 0 came last.
    assert_eq!(first_low, Some(EVENTS - EVENTS.div_ceil(3)));
    let status = &outbox.status()[0];
    assert_eq!((status.backlog_events, status.sent), (0, EVENTS as u64));
    assert!(status.connected);
    // Backing off, not spinning: a handful of attempts while it was down.
    assert!(attempts_while_down < 100, "{attempts_while_down} attempts");
    node.shutdown().await?;
    Ok(())
}

/// Forwards TCP connections from a port of its own to `to` while it runs;
/// while it is stopped, connections to its port are refused.
struct Bridge {
    port: u16,
    to: u16,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Bridge {
    fn new(to: u16) -> anyhow::Result<Self> {
        Ok(Self {
            port: brink_tests::mqtt::free_port()?,
            to,
            task: None,
        })
    }

    async fn up(&mut self) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await?;
        let to = self.to;
        self.task = Some(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", to)).await
                    {
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
        Ok(())
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_made_while_the_mqtt_uplink_is_down_all_reach_the_broker_in_order()
-> anyhow::Result<()> {
    const EVENTS: usize = 100_000;
    let broker = brink_tests::mqtt::Mosquitto::start()?;
    let mut cloud = brink_tests::mqtt::Client311::subscribed(broker.port, &["cloud/#"]).await?;
    // The node reaches the broker only through the bridge, which is down.
    let mut bridge = Bridge::new(broker.port)?;
    let dir = tempfile::tempdir()?;
    let (node, outbox) = uplink_node(
        dir.path(),
        &format!(
            "mqtt = \"mqtt://127.0.0.1:{}\"\ntopic = \"cloud/{{subject}}\"\nmax_batch = 500",
            bridge.port
        ),
    )
    .await?;
    produce(&outbox, EVENTS).await?;
    assert_eq!(outbox.status()[0].backlog_events, EVENTS as u64);

    bridge.up().await?;
    let mut received = Vec::with_capacity(EVENTS);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while received.len() < EVENTS {
        match tokio::time::timeout_at(deadline, cloud.messages.recv()).await {
            Ok(Some(message)) => received.push(message),
            _ => anyhow::bail!("only {} of {EVENTS} arrived", received.len()),
        }
    }
    let events = received
        .iter()
        .map(|m| m.json())
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (message, event) in received.iter().zip(&events) {
        let subject = event["subject"].as_str().unwrap_or_default();
        assert_eq!(message.topic, format!("cloud/{subject}"));
    }
    let first_low = check_arrivals(
        events.iter().map(|e| e["id"].as_str().unwrap_or_default()),
        EVENTS,
    )?;
    assert_eq!(first_low, Some(EVENTS - EVENTS.div_ceil(3)));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while outbox.status()[0].backlog_events > 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_down_mqtt_uplink_is_retried_with_backoff_not_in_a_tight_loop() -> anyhow::Result<()> {
    // A port that accepts connections and drops them at once, counting them.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let attempts = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = attempts.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            drop(socket);
        }
    });
    let dir = tempfile::tempdir()?;
    let (node, outbox) =
        uplink_node(dir.path(), &format!("mqtt = \"mqtt://127.0.0.1:{port}\"")).await?;
    outbox
        .send("cloud", &reading("r1", "t-1", 1.0), 5, None)
        .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let n = attempts.load(std::sync::atomic::Ordering::Relaxed);
    // 250 ms doubling (jittered): about 5 attempts in 5 s, never hundreds.
    assert!((2..=10).contains(&n), "{n} connection attempts in 5 s");
    let status = &outbox.status()[0];
    assert_eq!((status.backlog_events, status.connected), (1, false));
    node.shutdown().await?;
    Ok(())
}
