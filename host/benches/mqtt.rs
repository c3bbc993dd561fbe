//! MQTT in → `filter` → MQTT out, over three transports: the embedded
//! broker through the in-process link (the default), the embedded broker
//! over loopback TCP (`[mqtt] link = "tcp"`), and an external mosquitto on
//! loopback (skipped when mosquitto is not installed).
//!
//! Sustained throughput at QoS 0 and QoS 1 (a burst of events published as
//! fast as the client can, timed until the last output arrives), then
//! end-to-end latency at a fixed 10k events/s (each reading carries its send
//! time; the filter passes it through unchanged).
//!
//! Each with a fresh instance per event (the default) and with warm
//! instances (`instance_reuse`), and the broker alone for comparison. Last,
//! deadlines on against off (`EngineConfig::deadlines`) on the in-process
//! link with warm instances, where their share of the cost is largest: nine
//! rounds (`BRINK_BENCH_AB_ROUNDS`), each a node with them on and one with
//! them off in alternating order; the medians of either side and the median
//! of the rounds' ratios.
//!
//! `cargo bench -p brink-host --bench mqtt` (set `BRINK_BENCH_EVENTS` to
//! change the burst size, `BRINK_BENCH_ONLY=fresh|warm|deadlines` to run one
//! part, `BRINK_BENCH_DEADLINES=off` to turn them off in the fresh and warm
//! runs (to set two profiles side by side),
//! `BRINK_BENCH_TRANSPORTS=in-process,tcp,mosquitto` to choose transports,
//! `BRINK_BENCH_ONLY=telemetry` to run only the OTLP traces A/B
//! (`BRINK_BENCH_TRACES=off|on|collector down` for one side of it),
//! `BRINK_BENCH_ONLY=fleet` only 1, 2 and 3 nodes sharing one mosquitto,
//! `BRINK_BENCH_SLOW=1` to print every paced output slower than 5 ms;
//! `RUST_LOG=brink_host=debug` shows the node's log on stderr).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use brink_host::manifest::Manifest;
use brink_host::node::Node;
use brink_host::{Engine, EngineConfig};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

#[path = "common/fleet.rs"]
mod fleet;
#[path = "common/mosquitto.rs"]
mod mosquitto;
#[path = "common/telemetry_ab.rs"]
mod telemetry_ab;
use mosquitto::Mosquitto;

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

/// A bench client: its event loop stops when this is dropped, so a client
/// of an earlier run never reconnects under the same id (a shared broker
/// such as mosquitto would hand the id back and forth between the two).
struct Bench {
    client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An MQTT 3.1.1 client whose received payloads arrive on a channel; its
/// id is `id` and a number no other bench client had.
async fn client(
    port: u16,
    id: &str,
    subscribe: Option<&str>,
) -> (Bench, mpsc::UnboundedReceiver<Vec<u8>>) {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut options = MqttOptions::new(format!("{id}-{n}"), "127.0.0.1", port);
    options
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_inflight(1000);
    let (client, mut eventloop) = AsyncClient::new(options, 100_000);
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
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
    (Bench { client, task }, rx)
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
                .client
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
                .client
                .publish(
                    format!("sensors/d-{}/temperature", i % 16),
                    QoS::AtLeastOnce,
                    false,
                    payload(i),
                )
                .await
                .unwrap();
        }
        // Kept until the outputs are in: dropping it stops its event loop,
        // which may still hold the last publishes.
        publisher
    });
    let mut latencies = Vec::with_capacity(n);
    let slow = std::env::var_os("BRINK_BENCH_SLOW").is_some();
    while latencies.len() < n {
        match tokio::time::timeout(Duration::from_secs(20), out.recv()).await {
            Ok(Some(bytes)) => {
                let arrived = now_nanos();
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                let sent = v["data"]["t"].as_u64().unwrap() as u128;
                latencies.push((arrived - sent) as f64 / 1e6);
                // Stalls show as clusters of slow outputs at their send
                // times (how the broker's log roll-over was found).
                if slow && arrived - sent > 5_000_000 {
                    eprintln!(
                        "slow: seq {} sent at {} ms took {:.2} ms",
                        v["data"]["seq"],
                        (sent / 1_000_000) % 100_000_000,
                        (arrived - sent) as f64 / 1e6
                    );
                }
            }
            _ => break,
        }
    }
    drop(sender.await.unwrap());
    latencies
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// How the node reaches its broker.
#[derive(Clone, Copy, PartialEq)]
enum Transport {
    InProcess,
    Tcp,
    /// An external mosquitto listening on this port.
    Mosquitto(u16),
    /// The same, the node one of a fleet sharing `$share/bench/…`.
    Shared(u16),
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::InProcess => "embedded, in-process link",
            Transport::Tcp => "embedded, loopback TCP",
            Transport::Mosquitto(_) => "external mosquitto, loopback TCP",
            Transport::Shared(_) => "external mosquitto, shared subscription",
        }
    }

    fn mqtt_section(self, v4: u16, v5: u16) -> String {
        match self {
            Transport::InProcess => {
                format!("listen = \"127.0.0.1:{v4}\"\nlisten_v5 = \"127.0.0.1:{v5}\"")
            }
            Transport::Tcp => format!(
                "listen = \"127.0.0.1:{v4}\"\nlisten_v5 = \"127.0.0.1:{v5}\"\nlink = \"tcp\""
            ),
            // A client id per run: the node's session on a shared broker
            // must not carry the last run's backlog into the next.
            Transport::Mosquitto(port) => format!(
                "url = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"bench-node-{}\"",
                uuid_like()
            ),
            Transport::Shared(port) => format!(
                "url = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"bench-node-{}\"\nshared_group = \"bench\"",
                uuid_like()
            ),
        }
    }
}

/// A string no other run of this process used.
fn uuid_like() -> String {
    format!("{}-{}", std::process::id(), now_nanos())
}

/// One configuration's figures.
struct Row {
    label: String,
    qos0: f64,
    qos1: f64,
    latency: Option<(f64, f64)>,
}

/// Starts a node whose `filter` keeps `instance_reuse` events per instance;
/// with the port the bench's clients use.
async fn start_node(
    instance_reuse: u32,
    transport: Transport,
    deadlines: bool,
    extra: &str,
) -> (Node, u16) {
    let (http, v4, v5) = (free_port(), free_port(), free_port());
    let mqtt = transport.mqtt_section(v4, v5);
    let text = format!(
        r#"brink_manifest_version = 1
[http]
listen = "127.0.0.1:{http}"
[mqtt]
{mqtt}
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
{extra}
"#,
        filter = brink_test_artifacts::FILTER,
    );
    let engine = Engine::new(EngineConfig {
        deadlines,
        // Code compiled without epoch checks is cached apart anyway; no
        // cache keeps the runs alike.
        cache_dir: None,
        ..EngineConfig::default()
    })
    .unwrap();
    let node = Node::start(
        Manifest::parse(&text, "bench.toml").unwrap(),
        std::path::Path::new("."),
        &engine,
    )
    .await
    .unwrap();
    let port = match transport {
        Transport::Mosquitto(port) | Transport::Shared(port) => port,
        _ => v4,
    };
    (node, port)
}

/// Deadlines on against off, warm, in-process, QoS 0: `rounds` rounds of
/// one node each way, alternating, so drift in the machine's speed falls on
/// both sides alike. The medians, on then off.
async fn deadlines_ab(n: usize, rounds: usize) -> Ab {
    let (mut on, mut off, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // Which goes first alternates too.
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        let mut pair = [0.0; 2];
        for deadlines in order {
            let (node, port) = start_node(1000, Transport::InProcess, deadlines, "").await;
            burst(port, 2_000, QoS::AtLeastOnce, "warmup", "sensors", "out/#").await;
            let cpu = process_cpu();
            let rate = burst(port, n, QoS::AtMostOnce, "ab", "sensors", "out/#").await;
            let per_event = (process_cpu() - cpu).as_secs_f64() * 1e6 / n as f64;
            node.shutdown().await.unwrap();
            println!(
                "  round {round}, deadlines {}: {rate:.0} events/s, {per_event:.1} µs of CPU per event",
                if deadlines { "on" } else { "off" }
            );
            pair[usize::from(!deadlines)] = rate;
        }
        on.push(pair[0]);
        off.push(pair[1]);
        // A round's two halves run seconds apart, so their ratio is less
        // exposed to the machine's drift than the two medians are.
        ratios.push(pair[0] / pair[1]);
    }
    Ab {
        on: median(&mut on),
        off: median(&mut off),
        ratio: median(&mut ratios),
    }
}

/// Deadlines on against off: the medians of each side's rounds, and the
/// median of the rounds' on/off ratios.
struct Ab {
    on: f64,
    off: f64,
    ratio: f64,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The CPU time this process has used, all threads, user and system: the
/// node and the load generator alike, so a difference between two rounds
/// of the same load is the node's.
fn process_cpu() -> Duration {
    // utime and stime, fields 14 and 15 of /proc/self/stat, in clock ticks
    // (USER_HZ, 100 on Linux): 1% of a 2-second round on two cores.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// Starts a node whose `filter` keeps `instance_reuse` events per instance,
/// then measures it.
/// Deadlines are on, as by default (`deadlines_ab` measures them off).
async fn run(n: usize, instance_reuse: u32, transport: Transport) -> Row {
    // `BRINK_BENCH_DEADLINES=off` turns them off here too, so a profile of
    // a whole process can be set beside one with them on.
    let deadlines = std::env::var("BRINK_BENCH_DEADLINES").map_or(true, |v| v != "off");
    let (node, port) = start_node(instance_reuse, transport, deadlines, "").await;
    // Warm up: compiled code, pooled slots, connections.
    burst(port, 2_000, QoS::AtLeastOnce, "warmup", "sensors", "out/#").await;
    let instances = if instance_reuse > 1 { "warm" } else { "fresh" };
    let label = format!("{}, {instances}", transport.name());
    println!("mqtt in -> filter -> mqtt out, {label}, {n} events per burst");
    let mut rates = Vec::new();
    for (qos, name) in [(QoS::AtMostOnce, "qos0"), (QoS::AtLeastOnce, "qos1")] {
        let rate = burst(port, n, qos, name, "sensors", "out/#").await;
        println!("  sustained {name}: {rate:.0} events/s");
        rates.push(rate);
    }
    let mut latency = None;
    let mut latencies = paced(port, 10_000, 5).await;
    latencies.sort_by(f64::total_cmp);
    if latencies.is_empty() {
        println!("  latency at 10k/s: no outputs arrived");
    } else {
        let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
        println!(
            "  latency at 10k events/s (QoS 1, {} events): p50 {p50:.2} ms, p99 {p99:.2} ms, max {:.2} ms",
            latencies.len(),
            latencies[latencies.len() - 1]
        );
        latency = Some((p50, p99));
    }
    if instance_reuse <= 1 {
        // The same clients and broker with no function between them, on
        // topics no function subscribes to.
        for (qos, name) in [(QoS::AtMostOnce, "qos0"), (QoS::AtLeastOnce, "qos1")] {
            let rate = burst(port, n, qos, &format!("broker-only-{name}"), "raw", "raw/#").await;
            println!("  broker only (no function, one hop) {name}: {rate:.0} events/s");
        }
    }
    node.shutdown().await.unwrap();
    Row {
        label,
        qos0: rates[0],
        qos1: rates[1],
        latency,
    }
}

/// Runs `future` as a task of the runtime, on its workers.
async fn on_workers<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> T {
    tokio::spawn(future).await.unwrap()
}

fn main() {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        let filter: tracing_subscriber::filter::Targets = filter.parse().unwrap();
        tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .with(filter)
            .init();
    }
    let n: usize = std::env::var("BRINK_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // `BRINK_BENCH_ONLY=fresh` or `=warm` runs one half (for profiling);
    // `=deadlines` runs only the deadlines A/B.
    let only = std::env::var("BRINK_BENCH_ONLY").unwrap_or_default();
    // 1, 2 and 3 nodes sharing one mosquitto.
    if only == "fleet" {
        runtime.block_on(on_workers(fleet::run(n)));
        return;
    }
    let chosen = std::env::var("BRINK_BENCH_TRANSPORTS")
        .unwrap_or_else(|_| "in-process,tcp,mosquitto".to_owned());
    let mosquitto = if chosen.contains("mosquitto") {
        // No queue limits: the bench measures throughput, not drops.
        let started = Mosquitto::start("max_queued_messages 0\nmax_inflight_messages 0\n");
        if started.is_none() {
            println!("mosquitto is not installed: its rows are skipped (apt install mosquitto)");
        }
        started
    } else {
        None
    };
    let mut transports = Vec::new();
    if chosen.contains("in-process") {
        transports.push(Transport::InProcess);
    }
    if chosen.contains("tcp") {
        transports.push(Transport::Tcp);
    }
    if let Some(m) = &mosquitto {
        transports.push(Transport::Mosquitto(m.port));
    }
    // Everything runs on the runtime's workers, as a node's tasks do: the
    // bench's loops that count outputs, left on the main thread in
    // `block_on`, made a third busy thread on two cores and cost a futex
    // wake for every output the client handed to them.
    let only_runs = only.clone();
    let rows = runtime.block_on(on_workers(async move {
        let only = only_runs;
        let mut rows = Vec::new();
        for &transport in transports
            .iter()
            .filter(|_| only != "deadlines" && only != "telemetry")
        {
            if only != "warm" {
                rows.push(run(n, 1, transport).await);
            }
            if only != "fresh" {
                rows.push(run(n, 1000, transport).await);
            }
        }
        rows
    }));
    // Deadlines on against off: alternating rounds, in-process, warm.
    let ab = (chosen.contains("in-process") && only != "fresh" && only != "telemetry").then(|| {
        println!(
            "deadlines on against off: in-process, warm, QoS 0, {n} events, alternating rounds"
        );
        let rounds = std::env::var("BRINK_BENCH_AB_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(9);
        runtime.block_on(on_workers(deadlines_ab(n, rounds)))
    });
    // Traces off, on with a collector, and on with the collector down.
    if chosen.contains("in-process") && (only.is_empty() || only == "telemetry") {
        runtime.block_on(on_workers(telemetry_ab::run(n)));
    }
    println!();
    println!("| configuration | QoS 0 | QoS 1 | QoS 1 / QoS 0 | p50 at 10k/s | p99 at 10k/s |");
    println!("|---|---|---|---|---|---|");
    for row in &rows {
        let (p50, p99) = row
            .latency
            .map_or((String::new(), String::new()), |(a, b)| {
                (format!("{a:.2} ms"), format!("{b:.2} ms"))
            });
        println!(
            "| {} | {:.0} ev/s | {:.0} ev/s | {:.2} | {p50} | {p99} |",
            row.label,
            row.qos0,
            row.qos1,
            row.qos1 / row.qos0
        );
    }
    if let Some(ab) = ab {
        println!();
        println!(
            "deadlines on {:.0} ev/s, off {:.0} ev/s (medians): on costs {:.1}%; median of the rounds' on/off ratios {:.3}: on costs {:.1}%",
            ab.on,
            ab.off,
            (1.0 - ab.on / ab.off) * 100.0,
            ab.ratio,
            (1.0 - ab.ratio) * 100.0
        );
    }
}
