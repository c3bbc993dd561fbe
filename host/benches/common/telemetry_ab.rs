//! Traces off, on with a collector (all traces, and one in ten), and on
//! with the collector down: warm
//! instances, in-process link, QoS 0, in alternating rounds (the order
//! rotates), so the machine's drift falls on every side alike. Each round
//! prints events/s and the process's CPU per event; the summary gives the
//! medians and the median of each round's on/off ratio.
//!
//! The collector is an OTLP/HTTP endpoint in this process that accepts each
//! post without decoding it, so what is measured is the node's side.

use super::{QoS, Transport, burst, median, process_cpu, start_node};

/// The `[telemetry]` section of each side; the down side's port has no
/// listener.
fn sections(collector: &str, down: &str) -> [(&'static str, String); 4] {
    [
        ("off", String::new()),
        ("on", format!("[telemetry]\notlp = \"{collector}\"\n")),
        (
            "on, 10% sampled",
            format!("[telemetry]\notlp = \"{collector}\"\nsample_percent = 10\n"),
        ),
        (
            "collector down",
            format!("[telemetry]\notlp = \"{down}\"\n"),
        ),
    ]
}

async fn collector() -> String {
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(|_: axum::body::Bytes| async { axum::http::StatusCode::OK }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

pub async fn run(n: usize) {
    let rounds: usize = std::env::var("BRINK_BENCH_AB_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9);
    let down_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut sides = sections(&collector().await, &format!("http://127.0.0.1:{down_port}")).to_vec();
    // `BRINK_BENCH_TRACES=on` (or `off`, `collector down`) runs one side,
    // for a profile of it alone.
    if let Ok(only) = std::env::var("BRINK_BENCH_TRACES") {
        sides.retain(|(name, _)| *name == only);
    }
    println!(
        "traces off / on / collector down: in-process, warm, QoS 0, {n} events, {rounds} rounds"
    );
    let mut rates = vec![Vec::new(); sides.len()];
    let mut cpu = vec![Vec::new(); sides.len()];
    let mut ratios = vec![Vec::new(); sides.len()];
    for round in 0..rounds {
        let mut this = vec![0.0; sides.len()];
        for k in 0..sides.len() {
            let side = (round + k) % sides.len();
            let (name, section) = &sides[side];
            let (node, port) = start_node(1000, Transport::InProcess, true, section).await;
            burst(port, 2_000, QoS::AtLeastOnce, "warmup", "sensors", "out/#").await;
            let before = process_cpu();
            let rate = burst(port, n, QoS::AtMostOnce, "ab", "sensors", "out/#").await;
            let per_event = (process_cpu() - before).as_secs_f64() * 1e6 / n as f64;
            node.shutdown().await.unwrap();
            println!(
                "  round {round}, traces {name}: {rate:.0} events/s, {per_event:.1} µs of CPU per event"
            );
            this[side] = rate;
            rates[side].push(rate);
            cpu[side].push(per_event);
        }
        for side in 1..sides.len() {
            ratios[side].push(this[side] / this[0].max(1.0));
        }
    }
    for (side, (name, _)) in sides.iter().enumerate() {
        let rate = median(&mut rates[side]);
        let per_event = median(&mut cpu[side]);
        if side == 0 {
            println!(
                "traces {name}: {rate:.0} events/s, {per_event:.1} µs CPU per event (medians)"
            );
        } else {
            let ratio = median(&mut ratios[side]);
            println!(
                "traces {name}: {rate:.0} events/s, {per_event:.1} µs CPU per event (medians); median of the rounds' ratios to off {ratio:.3}: costs {:.1}%",
                (1.0 - ratio) * 100.0
            );
        }
    }
}
