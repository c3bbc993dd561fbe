//! Key-value state: what a guest's `get`, `set` and `increment` cost, set
//! against the same operations on sled called directly from Rust (and on
//! Brink's store layer without Wasm), all in one run on one core; then what
//! durable writes add per event.
//!
//! Guest operations run in a loop inside one invocation (the kv-ops
//! fixture's `repeat`), so the figure is the operation, not the invocation.
//! Each figure is the median of 5 rounds.
//!
//! `cargo bench -p brink-host --bench kv` (`BRINK_BENCH_OPS` sets the
//! operations per round, default 20000).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use brink_host::bindings::CloudEvent;
use brink_host::kv::{Kv, KvConfig};
use brink_host::{Engine, EngineConfig, Function, FunctionSpec, Limits};

const ROUNDS: usize = 5;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn event(data: &serde_json::Value) -> CloudEvent {
    CloudEvent {
        id: "bench".into(),
        source: "/bench".into(),
        type_: "com.brink.bench".into(),
        specversion: "1.0".into(),
        subject: None,
        time: None,
        datacontenttype: Some("application/json".into()),
        dataschema: None,
        extensions: vec![],
        data: Some(data.to_string().into_bytes()),
    }
}

fn function(engine: &Engine, kv: &Kv, name: &str) -> Function {
    let mut spec = FunctionSpec::new(name).with_kv(kv.clone(), "bench", ["default"]);
    spec.limits = Limits {
        timeout: Duration::from_secs(120),
        ..Limits::default()
    };
    engine
        .load_file(
            spec,
            std::path::Path::new(brink_test_artifacts::FIXTURE_KV_OPS),
        )
        .unwrap()
}

/// Guest operations per second: `n` repetitions of `op` in one invocation.
fn guest_rate(rt: &tokio::runtime::Runtime, f: &Function, n: u32, op: serde_json::Value) -> f64 {
    let ops = serde_json::json!([{ "op": "repeat", "n": n, "inner": op }]);
    let rates = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            let out = rt.block_on(f.invoke(event(&ops))).unwrap();
            let elapsed = start.elapsed().as_secs_f64();
            assert!(
                !String::from_utf8_lossy(out[0].data.as_deref().unwrap()).contains("err"),
                "{op}"
            );
            f64::from(n) / elapsed
        })
        .collect();
    median(rates)
}

fn rate(n: u32, mut body: impl FnMut(u32)) -> f64 {
    median(
        (0..ROUNDS)
            .map(|_| {
                let start = Instant::now();
                for i in 0..n {
                    body(i);
                }
                f64::from(n) / start.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// Events per second through a function that sets one key per event, with
/// `in_flight` events at a time.
fn event_rate(rt: &tokio::runtime::Runtime, f: &Function, events: usize, in_flight: usize) -> f64 {
    let rates = (0..ROUNDS)
        .map(|round| {
            let start = Instant::now();
            rt.block_on(async {
                let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(in_flight));
                let mut tasks = tokio::task::JoinSet::new();
                for i in 0..events {
                    let f = f.clone();
                    let permit = gate.clone().acquire_owned().await.unwrap();
                    let ops = serde_json::json!([
                        { "op": "set", "key": format!("e{round}-{i}"), "value": "reading" }
                    ]);
                    tasks.spawn(async move {
                        let out = f.invoke(event(&ops)).await;
                        drop(permit);
                        out.unwrap();
                    });
                }
                while tasks.join_next().await.is_some() {}
            });
            events as f64 / start.elapsed().as_secs_f64()
        })
        .collect();
    median(rates)
}

fn main() {
    let n: u32 = std::env::var("BRINK_BENCH_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let engine = Engine::new(EngineConfig {
        max_instances: 64,
        cache_dir: None,
        ..EngineConfig::default()
    })
    .unwrap();
    // One core: a current-thread runtime, and flushes on its blocking pool.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();

    // sled alone, in its own directory.
    let db = sled::open(dir.path().join("raw")).unwrap();
    let tree = db.open_tree("bench").unwrap();
    let sled_set = rate(n, |i| {
        tree.insert(
            format!("k{}", i % 1000),
            &b"a reading of 32 bytes, roughly.."[..],
        )
        .unwrap();
    });
    let sled_get = rate(n, |i| {
        tree.get(format!("k{}", i % 1000)).unwrap();
    });
    let sled_incr = rate(n, |_| {
        tree.update_and_fetch("counter", |old| {
            let v: i64 = old
                .and_then(|o| std::str::from_utf8(o).ok()?.parse().ok())
                .unwrap_or(0);
            Some((v + 1).to_string().into_bytes())
        })
        .unwrap();
    });

    // Brink's store layer (namespaces, TTL header, limits), without Wasm.
    let kv = Kv::open_sled(&dir.path().join("brink"), KvConfig::default()).unwrap();
    let bucket = kv.bucket("bench", "direct").unwrap();
    let layer_set = rate(n, |i| {
        bucket
            .set(
                &format!("k{}", i % 1000),
                b"a reading of 32 bytes, roughly..",
                None,
            )
            .unwrap();
    });
    let layer_get = rate(n, |i| {
        bucket.get(&format!("k{}", i % 1000)).unwrap();
    });
    let layer_incr = rate(n, |_| {
        bucket.increment("counter", 1).unwrap();
    });

    // The guest, through wasi:keyvalue.
    let f = function(&engine, &kv, "ops");
    let value = "a reading of 32 bytes, roughly..";
    let guest_set = guest_rate(
        &rt,
        &f,
        n,
        serde_json::json!({ "op": "set", "key": "k1", "value": value }),
    );
    let guest_get = guest_rate(&rt, &f, n, serde_json::json!({ "op": "get", "key": "k1" }));
    let guest_incr = guest_rate(
        &rt,
        &f,
        n,
        serde_json::json!({ "op": "increment", "key": "counter", "delta": 1 }),
    );

    println!("operations/s on one core (median of {ROUNDS} rounds of {n}):");
    println!(
        "{:<11} {:>12} {:>12} {:>12} {:>10}",
        "op", "sled", "brink layer", "guest", "sled/guest"
    );
    for (name, s, l, g) in [
        ("get", sled_get, layer_get, guest_get),
        ("set", sled_set, layer_set, guest_set),
        ("increment", sled_incr, layer_incr, guest_incr),
    ] {
        println!("{name:<11} {s:>12.0} {l:>12.0} {g:>12.0} {:>9.2}x", s / g);
    }

    // What durability adds per event: one `set` per event, flushed before the
    // invocation returns, against the same with `durable_writes = false`.
    let events = (n / 4) as usize;
    let lazy_kv = Kv::open_sled(
        &dir.path().join("lazy"),
        KvConfig {
            durable: false,
            ..KvConfig::default()
        },
    )
    .unwrap();
    let durable = function(&engine, &kv, "durable");
    let lazy = function(&engine, &lazy_kv, "lazy");
    println!("\nevents/s, one `set` per event (median of {ROUNDS} rounds of {events}):");
    println!(
        "{:<13} {:>12} {:>12} {:>16}",
        "in flight", "durable", "not durable", "durable cost/ev"
    );
    for in_flight in [1, 16, 64] {
        let d = event_rate(&rt, &durable, events, in_flight);
        let l = event_rate(&rt, &lazy, events, in_flight);
        println!(
            "{in_flight:<13} {d:>12.0} {l:>12.0} {:>13.1} µs",
            (1.0 / d - 1.0 / l) * 1e6
        );
    }
}
