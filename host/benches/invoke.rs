//! Cost of one invocation: a fresh instance per event (what the host does),
//! the handler alone on a live instance, and loading a component cold
//! (compile) against warm (from the compile cache).
//!
//! `cargo bench -p brink-host --bench invoke` (`BRINK_BENCH_MEMORY=<bytes>`
//! sets the memory limit of the `fresh-echo` engines: with 1 GiB, the
//! node's default, `PAGEMAP_SCAN` still halved a fresh call, 45.7 → 21.0 µs
//! on a busy machine).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::time::Duration;

use brink_host::bindings::CloudEvent;
use brink_host::{Engine, EngineConfig, FunctionSpec, PoolTuning};
use brink_test_artifacts as artifacts;
use criterion::{Criterion, criterion_group, criterion_main};

fn reading(value: f64) -> CloudEvent {
    CloudEvent {
        id: "bench-1".into(),
        source: "/factory/line-1/sensors".into(),
        type_: "com.example.reading".into(),
        specversion: "1.0".into(),
        subject: Some("t-17".into()),
        time: Some("2026-11-22T10:00:00Z".into()),
        datacontenttype: Some("application/json".into()),
        dataschema: None,
        extensions: vec![],
        data: Some(format!(r#"{{"device":"t-17","value":{value}}}"#).into_bytes()),
    }
}

fn engine(cache_dir: Option<&Path>) -> Engine {
    engine_with(cache_dir, true)
}

fn engine_with(cache_dir: Option<&Path>, deadlines: bool) -> Engine {
    Engine::new(EngineConfig {
        max_instances: 16,
        max_memory_bytes: 64 << 20,
        cache_dir: cache_dir.map(Path::to_owned),
        deadlines,
        ..EngineConfig::default()
    })
    .unwrap()
}

fn invoke(c: &mut Criterion) {
    calls(c, "invoke", true);
    // What deadlines add to a call: the same calls on an engine without
    // them (no epoch checks compiled in, no deadline armed per call).
    calls(c, "invoke-no-deadlines", false);
}

fn calls(c: &mut Criterion, group: &str, deadlines: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let engine = engine_with(None, deadlines);
    let mut filter_spec = FunctionSpec::new("filter");
    filter_spec.config.insert("threshold".into(), "30".into());
    let functions = [
        (
            "echo",
            engine
                .load_file(FunctionSpec::new("echo"), Path::new(artifacts::ECHO))
                .unwrap(),
        ),
        (
            "filter",
            engine
                .load_file(filter_spec, Path::new(artifacts::FILTER))
                .unwrap(),
        ),
    ];
    let event = reading(31.5);

    let mut group = c.benchmark_group(group);
    for (name, function) in &functions {
        group.bench_function(format!("{name}/fresh-instance"), |b| {
            b.iter(|| rt.block_on(function.invoke(event.clone())).unwrap())
        });
        let mut instance = rt.block_on(function.instantiate("bench")).unwrap();
        group.bench_function(format!("{name}/warm-instance"), |b| {
            b.iter(|| rt.block_on(instance.call(event.clone())).unwrap())
        });
    }
    group.finish();
}

fn load(c: &mut Criterion) {
    let bytes = std::fs::read(artifacts::FILTER).unwrap();
    let uncached = engine(None);
    let dir = tempfile::tempdir().unwrap();
    let cached = engine(Some(dir.path()));
    cached
        .load(FunctionSpec::new("filter"), &bytes, "filter.wasm")
        .unwrap();

    let mut group = c.benchmark_group("load-filter");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("compile", |b| {
        b.iter(|| {
            uncached
                .load(FunctionSpec::new("filter"), &bytes, "filter.wasm")
                .unwrap()
        })
    });
    group.bench_function("from-cache", |b| {
        b.iter(|| {
            cached
                .load(FunctionSpec::new("filter"), &bytes, "filter.wasm")
                .unwrap()
        })
    });
    group.finish();
}

/// A fresh `echo` per event under each way of resetting pooled slots, the
/// defaults first (`BRINK_BENCH_TUNING=0` skips the group).
fn tuning(c: &mut Criterion) {
    if std::env::var("BRINK_BENCH_TUNING").is_ok_and(|v| v == "0") {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let base = PoolTuning::default();
    let variants = [
        ("defaults", base.clone()),
        (
            "old-64k-memset",
            PoolTuning {
                keep_resident: 64 << 10,
                pagemap_scan: false,
                decommit_batch: 1,
                max_unused_warm_slots: 100,
            },
        ),
        (
            "pagemap-scan-1m",
            PoolTuning {
                keep_resident: 1 << 20,
                pagemap_scan: true,
                ..base.clone()
            },
        ),
        (
            "pagemap-scan-4m",
            PoolTuning {
                keep_resident: 4 << 20,
                pagemap_scan: true,
                ..base.clone()
            },
        ),
        (
            "memset-decommit-batch-16",
            PoolTuning {
                pagemap_scan: false,
                decommit_batch: 16,
                ..base.clone()
            },
        ),
        (
            "memset-no-warm-slots",
            PoolTuning {
                pagemap_scan: false,
                max_unused_warm_slots: 0,
                ..base.clone()
            },
        ),
        (
            "no-keep-resident",
            PoolTuning {
                keep_resident: 0,
                pagemap_scan: false,
                ..base.clone()
            },
        ),
    ];
    let event = reading(31.5);
    let mut group = c.benchmark_group("fresh-echo");
    for (name, pool) in variants {
        let engine = Engine::new(EngineConfig {
            max_instances: 16,
            max_memory_bytes: std::env::var("BRINK_BENCH_MEMORY")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(64 << 20),
            cache_dir: None,
            pool,
            ..EngineConfig::default()
        })
        .unwrap();
        let echo = engine
            .load_file(FunctionSpec::new("echo"), Path::new(artifacts::ECHO))
            .unwrap();
        group.bench_function(name, |b| {
            b.iter(|| rt.block_on(echo.invoke(event.clone())).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, invoke, tuning, load);
criterion_main!(benches);
