//! MQTT in → `filter` → MQTT out through the embedded broker.
//!
//! Sustained throughput at QoS 0 and QoS 1 (a burst of events published as
//! fast as the client can, timed until the last output arrives), then
//! end-to-end latency at a fixed 10k events/s (each reading carries its send
//! time; the filter passes it through unchanged).
//!
//! Both with a fresh instance per event (the default) and with warm
//! instances (`instance_reuse`), and the broker alone for comparison.
//!
//! `cargo bench -p brink-host --bench mqtt` (set `BRINK_BENCH_EVENTS` to
//! change the burst size, `BRINK_BENCH_ONLY=fresh|warm` to run one half).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use brink_host::manifest::Manifest;
use brink_host::node::Node;
use brink_host::{Engine, EngineConfig};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// An MQTT 3.1.1 client whose received payloads arrive on a channel.
async fn client(
    port: u16,
    id: &str,
    subscribe: Option<&str>,
) -> (AsyncClient, mpsc::UnboundedReceiver<Vec<u8>>) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_inflight(1000);
    let (client, mut eventloop) = AsyncClient::new(options, 100_000);
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send(p.payload.to_vec());
                }
                Ok(Event::Incoming(Packet::SubAck(_) | Packet::ConnAck(_))) => {
                    let _ = ready_tx.send(());
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("bench client: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    ready.recv().await;
    if let Some(filter) = subscribe {
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        ready.recv().await;
    }
    (client, rx)
}

fn payload(i: usize) -> Vec<u8> {
    format!(
        r#"{{"device":"d-{}","value":50.0,"seq":{i},"t":{}}}"#,
        i % 16,
        now_nanos()
    )
    .into_bytes()
}

/// Publishes `n` readings to `<prefix>/<device>/temperature` as fast as the
/// client can and counts what arrives on `listen`.
async fn burst(
    port: u16,
    n: usize,
    qos: QoS,
    run: &str,
    prefix: &'static str,
    listen: &str,
) -> f64 {
    let (_sub, mut out) = client(port, &format!("bench-sub-{run}"), Some(listen)).await;
    let (publisher, _) = client(port, &format!("bench-pub-{run}"), None).await;
    let started = Instant::now();
    let sender = tokio::spawn(async move {
        for i in 0..n {
            publisher
                .publish(
                    format!("{prefix}/d-{}/temperature", i % 16),
                    qos,
                    false,
                    payload(i),
                )
                .await
                .unwrap();
        }
        publisher
    });
    let mut received = 0;
    while received < n {
        match tokio::time::timeout(Duration::from_secs(20), out.recv()).await {
            Ok(Some(_)) => received += 1,
            _ => break,
        }
    }
    let elapsed = started.elapsed();
    let _ = sender.await;
    if received < n {
        println!("  {run}: only {received} of {n} outputs arrived (QoS 0 may drop under overload)");
    }
    received as f64 / elapsed.as_secs_f64()
}

async fn paced(port: u16, rate: u64, secs: u64) -> Vec<f64> {
    let (_sub, mut out) = client(port, "bench-sub-paced", Some("out/#")).await;
    let (publisher, _) = client(port, "bench-pub-paced", None).await;
    let n = (rate * secs) as usize;
    let sender = tokio::spawn(async move {
        let start = Instant::now();
        let per = Duration::from_nanos(1_000_000_000 / rate);
        for i in 0..n {
            let due = start + per * i as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
            publisher
                .publish(
                    format!("sensors/d-{}/temperature", i % 16),
                    QoS::AtLeastOnce,
                    false,
                    payload(i),
                )
                .await
                .unwrap();
        }
    });
    let mut latencies = Vec::with_capacity(n);
    while latencies.len() < n {
        match tokio::time::timeout(Duration::from_secs(20), out.recv()).await {
            Ok(Some(bytes)) => {
                let arrived = now_nanos();
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                let sent = v["data"]["t"].as_u64().unwrap() as u128;
                latencies.push((arrived - sent) as f64 / 1e6);
            }
            _ => break,
        }
    }
    sender.await.unwrap();
    latencies
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Starts a node whose `filter` keeps `instance_reuse` events per instance,
/// then measures it.
async fn run(n: usize, instance_reuse: u32) {
    let (http, v4, v5) = (free_port(), free_port(), free_port());
    let text = format!(
        r#"brink_manifest_version = 1
[http]
listen = "127.0.0.1:{http}"
[mqtt]
listen = "127.0.0.1:{v4}"
listen_v5 = "127.0.0.1:{v5}"
plain_event_type = "com.example.reading"
# Outputs in structured mode so the bench's 3.1.1 client sees the whole event.
output_mode = "structured"

[function.filter]
source = {filter:?}
triggers = [{{ mqtt = "sensors/+/temperature" }}]
outputs = [{{ mqtt = "out/{{subject}}" }}]
config = {{ threshold = "30" }}
limits = {{ concurrency = 16 }}
instance_reuse = {instance_reuse}
"#,
        filter = brink_test_artifacts::FILTER,
    );
    let engine = Engine::new(EngineConfig::default()).unwrap();
    let node = Node::start(
        Manifest::parse(&text, "bench.toml").unwrap(),
        std::path::Path::new("."),
        &engine,
    )
    .await
    .unwrap();
    // Warm up: compiled code, pooled slots, connections.
    burst(v4, 2_000, QoS::AtLeastOnce, "warmup", "sensors", "out/#").await;
    let label = if instance_reuse > 1 {
        format!("warm instances (instance_reuse = {instance_reuse})")
    } else {
        "a fresh instance per event (the default)".to_owned()
    };
    println!("mqtt in -> filter -> mqtt out, embedded broker, {n} events per burst, {label}");
    for (qos, name) in [(QoS::AtMostOnce, "qos0"), (QoS::AtLeastOnce, "qos1")] {
        let rate = burst(v4, n, qos, name, "sensors", "out/#").await;
        println!("  sustained {name}: {rate:.0} events/s");
    }
    let mut latencies = paced(v4, 10_000, 5).await;
    latencies.sort_by(f64::total_cmp);
    if latencies.is_empty() {
        println!("  latency at 10k/s: no outputs arrived");
    } else {
        println!(
            "  latency at 10k events/s (QoS 1, {} events): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            latencies.len(),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies[latencies.len() - 1]
        );
    }
    if instance_reuse <= 1 {
        // The same clients and broker with no function between them, on
        // topics no function subscribes to.
        for (qos, name) in [(QoS::AtMostOnce, "qos0"), (QoS::AtLeastOnce, "qos1")] {
            let rate = burst(v4, n, qos, &format!("broker-only-{name}"), "raw", "raw/#").await;
            println!("  broker only (no function, one hop) {name}: {rate:.0} events/s");
        }
    }
    node.shutdown().await.unwrap();
}

fn main() {
    let n: usize = std::env::var("BRINK_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // `BRINK_BENCH_ONLY=fresh` or `=warm` runs one half (for profiling).
    let only = std::env::var("BRINK_BENCH_ONLY").unwrap_or_default();
    runtime.block_on(async {
        if only != "warm" {
            run(n, 1).await;
        }
        if only != "fresh" {
            run(n, 1000).await;
        }
    });
}
