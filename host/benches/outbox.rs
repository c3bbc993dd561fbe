//! The outbox: durable `send` rate (each send returns only once its event is
//! synced to disk; concurrent sends share syncs), drain rate to an HTTP sink
//! and to a loopback mosquitto (when `mosquitto` is on PATH), and recovery
//! after a restart with a 100k backlog.
//!
//! `cargo bench -p brink-host --bench outbox` (`BRINK_BENCH_EVENTS` sets the
//! events per run, default 100000). Medians of 3 runs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use brink_host::bindings::CloudEvent;
use brink_host::node::uplink::{self as forward, ForwardConfig, Target};
use brink_host::outbox::{Outbox, QueueConfig};
use brink_host::store::{Backend, Sled};

#[path = "common/mosquitto.rs"]
mod mosquitto;
use mosquitto::Mosquitto;

const RUNS: usize = 3;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn event(i: usize) -> CloudEvent {
    CloudEvent {
        id: format!("e{i}"),
        source: "/plant-7/line-3".into(),
        type_: "com.example.reading".into(),
        specversion: "1.0".into(),
        subject: Some("t-17".into()),
        time: None,
        datacontenttype: Some("application/json".into()),
        dataschema: None,
        extensions: vec![],
        data: Some(format!(r#"{{"device":"t-17","value":{}.5}}"#, i % 100).into_bytes()),
    }
}

fn open(dir: &std::path::Path) -> Outbox {
    let store: Arc<dyn Backend> = Arc::new(Sled::open(dir).unwrap());
    Outbox::open(store, [("cloud".to_owned(), QueueConfig::default())]).unwrap()
}

/// Durable sends per second from `senders` concurrent tasks.
async fn send_rate(events: usize, senders: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let outbox = open(dir.path());
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for s in 0..senders {
        let outbox = outbox.clone();
        tasks.spawn(async move {
            for i in (s..events).step_by(senders) {
                outbox.send("cloud", &event(i), 1, None).await.unwrap();
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    events as f64 / start.elapsed().as_secs_f64()
}

async fn fill(outbox: &Outbox, events: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for s in 0..64 {
        let outbox = outbox.clone();
        tasks.spawn(async move {
            for i in (s..events).step_by(64) {
                outbox.send("cloud", &event(i), 1, None).await.unwrap();
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Drains the backlog of `events` to `target` (done when every event is
/// acknowledged and removed); events per second.
async fn drain(outbox: &Outbox, target: Target, events: usize) -> f64 {
    let backlog = outbox.stats("cloud").unwrap();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    let task = forward::spawn(
        outbox.clone(),
        "cloud".into(),
        target,
        ForwardConfig {
            max_batch: 500,
            ..ForwardConfig::default()
        },
        stop_rx,
        None,
    )
    .unwrap();
    while backlog.backlog_events.load(Ordering::Relaxed) > 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = events as f64 / start.elapsed().as_secs_f64();
    let _ = stop.send(true);
    let _ = task.await;
    rate
}

async fn http_sink(delivered: Arc<AtomicU64>) -> String {
    let app = axum::Router::new().route(
        "/ingest",
        axum::routing::post(move |body: axum::body::Bytes| {
            let delivered = delivered.clone();
            async move {
                let n =
                    serde_json::from_slice::<Vec<serde_json::Value>>(&body).map_or(0, |v| v.len());
                delivered.fetch_add(n as u64, Ordering::Relaxed);
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ingest", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn http_target(url: &str) -> Target {
    Target::Http {
        client: reqwest::Client::new(),
        url: url.to_owned(),
        token: None,
        batched: true,
    }
}

fn main() {
    let events: usize = std::env::var("BRINK_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    brink_host::node::tls::install_default_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!("durable sends/s (median of {RUNS} runs of {events}):");
        for senders in [1, 16, 64, 256] {
            let n = if senders == 1 { events / 10 } else { events };
            let mut rates = Vec::new();
            for _ in 0..RUNS {
                rates.push(send_rate(n, senders).await);
            }
            println!("  {senders:>4} concurrent senders: {:>9.0}", median(rates));
        }

        println!("\ndrain to an HTTP sink (batched, 500 per request), events/s:");
        let mut rates = Vec::new();
        for _ in 0..RUNS {
            let dir = tempfile::tempdir().unwrap();
            let outbox = open(dir.path());
            fill(&outbox, events).await;
            let delivered = Arc::new(AtomicU64::new(0));
            let url = http_sink(delivered.clone()).await;
            rates.push(drain(&outbox, http_target(&url), events).await);
            assert_eq!(delivered.load(Ordering::Relaxed), events as u64);
        }
        println!("  {:>9.0}", median(rates));

        match Mosquitto::start("") {
            Some(broker) => {
                let port = broker.port;
                println!(
                    "\ndrain to a loopback mosquitto (QoS 1, 500 in flight per batch), events/s:"
                );
                let section = brink_host::manifest::MqttSection {
                    url: Some(format!("mqtt://127.0.0.1:{port}")),
                    ..Default::default()
                };
                let settings = brink_host::node::mqtt::Settings::from_section(
                    &section,
                    std::path::Path::new("."),
                )
                .unwrap();
                let (publisher, stop, task) =
                    brink_host::node::mqtt::background_publisher(&settings, "-bench");
                while !publisher.is_connected() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let mut rates = Vec::new();
                for _ in 0..RUNS {
                    let dir = tempfile::tempdir().unwrap();
                    let outbox = open(dir.path());
                    fill(&outbox, events).await;
                    let target = Target::Mqtt {
                        publisher: publisher.clone(),
                        topic: "cloud/{subject}".into(),
                    };
                    rates.push(drain(&outbox, target, events).await);
                }
                println!("  {:>9.0}", median(rates));
                let _ = stop.send(true);
                let _ = task.await;
                drop(broker);
            }
            None => println!("\n(mosquitto is not on PATH: the MQTT drain is skipped)"),
        }

        println!("\nrecovery after a restart with a backlog of {events}:");
        let mut opens = Vec::new();
        let mut firsts = Vec::new();
        for _ in 0..RUNS {
            let dir = tempfile::tempdir().unwrap();
            {
                let outbox = open(dir.path());
                fill(&outbox, events).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let start = Instant::now();
            let outbox = open(dir.path());
            opens.push(start.elapsed().as_secs_f64() * 1000.0);
            let delivered = Arc::new(AtomicU64::new(0));
            let url = http_sink(delivered.clone()).await;
            let (stop, stop_rx) = tokio::sync::watch::channel(false);
            let task = forward::spawn(
                outbox.clone(),
                "cloud".into(),
                http_target(&url),
                ForwardConfig {
                    max_batch: 500,
                    ..ForwardConfig::default()
                },
                stop_rx,
                None,
            )
            .unwrap();
            while delivered.load(Ordering::Relaxed) == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            firsts.push(start.elapsed().as_secs_f64() * 1000.0);
            let _ = stop.send(true);
            let _ = task.await;
        }
        println!(
            "  open and count the backlog: {:.0} ms; first event delivered: {:.0} ms",
            median(opens),
            median(firsts)
        );
    });
}
