//! The CloudEvents JSON codec on its own: reading a structured event into
//! the contract's record and writing it back, against a `serde_json::Value`
//! round trip of the same bytes (the tree the cloudevents SDK built for every
//! event before ADR 0009, and a lower bound of what that path cost). One run,
//! one core, medians of 7 rounds.
//!
//! `cargo bench -p brink-host --bench codec` (`BRINK_BENCH_OPS` sets the
//! round trips per round, default 200000).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::Instant;

use brink_host::event::json;

const ROUNDS: usize = 7;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Nanoseconds per call of `f`, the median of [`ROUNDS`] rounds of `n`.
fn per_call(n: usize, mut f: impl FnMut()) -> f64 {
    median(
        (0..ROUNDS)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..n {
                    f();
                }
                start.elapsed().as_nanos() as f64 / n as f64
            })
            .collect(),
    )
}

fn main() {
    let n: usize = std::env::var("BRINK_BENCH_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let events = [
        (
            "reading (330 B)",
            r#"{"specversion":"1.0","id":"r-1","source":"/factory/line-1/sensors","type":"com.example.reading","subject":"t-17","time":"2026-11-22T10:00:00Z","datacontenttype":"application/json","site":"plant-3","seq":42,"data":{"device":"t-17","value":31.2,"unit":"C","tags":["a","b"]}}"#.to_owned(),
        ),
        ("60 extensions, 4 KiB data", {
            let exts: Vec<String> = (0..60).map(|i| format!(r#""ext{i}":"value-{i}""#)).collect();
            let data: Vec<String> = (0..100).map(|i| format!(r#""k{i}":{i}.5"#)).collect();
            format!(
                r#"{{"specversion":"1.0","id":"x","source":"/s","type":"t",{},"data":{{{}}}}}"#,
                exts.join(","),
                data.join(",")
            )
        }),
    ];
    println!("| event | brink codec (ns) | serde_json::Value (ns) | ratio |");
    println!("|---|---:|---:|---:|");
    for (name, text) in &events {
        let bytes = text.as_bytes();
        let codec = per_call(n, || {
            let (event, types) = json::parse_one(black_box(bytes)).unwrap();
            black_box(json::write(&event, &types).unwrap());
        });
        let value = per_call(n, || {
            let v: serde_json::Value = serde_json::from_slice(black_box(bytes)).unwrap();
            black_box(serde_json::to_vec(&v).unwrap());
        });
        println!(
            "| {name} | {codec:.0} | {value:.0} | {:.2}x |",
            value / codec
        );
    }
}
