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
    engine_for(cache_dir, deadlines, false)
}

fn engine_for(cache_dir: Option<&Path>, deadlines: bool, all_concurrent: bool) -> Engine {
    Engine::new(EngineConfig {
        max_instances: 16,
        max_memory_bytes: 64 << 20,
        cache_dir: cache_dir.map(Path::to_owned),
        deadlines,
        all_concurrent,
        ..EngineConfig::default()
    })
    .unwrap()
}

/// `BRINK_BENCH_ONLY_ECHO=1` keeps to `invoke/echo/*` and the P3 groups, for
/// `benches/p3-cost.sh`, which compares builds with and without WASI 0.3.
fn only_echo() -> bool {
    std::env::var("BRINK_BENCH_ONLY_ECHO").is_ok_and(|v| v == "1")
}

fn invoke(c: &mut Criterion) {
    calls(c, "invoke", engine_with(None, true));
    if only_echo() {
        return;
    }
    // What deadlines add to a call: the same calls on an engine without
    // them (no epoch checks compiled in, no deadline armed per call).
    calls(c, "invoke-no-deadlines", engine_with(None, false));
}

/// WASI 0.3: the P3 fixture on its concurrent engine, and what that engine
/// would cost the P2 `echo` if it ran every component (ADR 0018).
#[cfg(feature = "p3")]
fn p3(c: &mut Criterion) {
    calls(c, "invoke-all-concurrent", engine_for(None, true, true));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let engine = engine(None);
    let p3 = engine
        .load_file(FunctionSpec::new("p3"), Path::new(artifacts::FIXTURE_P3))
        .unwrap();
    let event = reading(31.5);
    let mut group = c.benchmark_group("invoke-p3");
    group.bench_function("p3-echo/fresh-instance", |b| {
        b.iter(|| rt.block_on(p3.invoke(event.clone())).unwrap())
    });
    let mut instance = rt.block_on(p3.instantiate("bench")).unwrap();
    group.bench_function("p3-echo/warm-instance", |b| {
        b.iter(|| rt.block_on(instance.call(event.clone())).unwrap())
    });
    group.finish();
    load_one(c, "load-p3", artifacts::FIXTURE_P3);
}

#[cfg(not(feature = "p3"))]
fn p3(_: &mut Criterion) {}

fn calls(c: &mut Criterion, group: &str, engine: Engine) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
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
        if only_echo() && *name != "echo" {
            continue;
        }
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
    if !only_echo() {
        load_one(c, "load-filter", artifacts::FILTER);
    }
}

/// Loading the component at `path` cold (compiled) and warm (from the cache).
fn load_one(c: &mut Criterion, group: &str, path: &str) {
    let bytes = std::fs::read(path).unwrap();
    let uncached = engine(None);
    let dir = tempfile::tempdir().unwrap();
    let cached = engine(Some(dir.path()));
    cached
        .load(FunctionSpec::new("bench"), &bytes, path)
        .unwrap();

    let mut group = c.benchmark_group(group);
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("compile", |b| {
        b.iter(|| {
            uncached
                .load(FunctionSpec::new("bench"), &bytes, path)
                .unwrap()
        })
    });
    group.bench_function("from-cache", |b| {
        b.iter(|| {
            cached
                .load(FunctionSpec::new("bench"), &bytes, path)
                .unwrap()
        })
    });
    group.finish();
}

/// A fresh `echo` per event under each way of resetting pooled slots, the
/// defaults first (`BRINK_BENCH_TUNING=0` skips the group).
fn tuning(c: &mut Criterion) {
    if only_echo() || std::env::var("BRINK_BENCH_TUNING").is_ok_and(|v| v == "0") {
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

/// One function per language, for `benches/languages.sh`, which builds the
/// Python filter and the JS transform with `brink build` and passes their
/// paths in `BRINK_BENCH_PYTHON` and `BRINK_BENCH_JS`: loading cold and
/// from the cache, a fresh and a warm call, and each instance's linear
/// memory (printed, since criterion measures time only).
fn languages(c: &mut Criterion) {
    let (Ok(python), Ok(js)) = (
        std::env::var("BRINK_BENCH_PYTHON"),
        std::env::var("BRINK_BENCH_JS"),
    ) else {
        return;
    };
    let threshold = [("threshold", "30")];
    let mut cases = vec![
        ("rust-filter", artifacts::FILTER.to_owned(), &threshold[..]),
        ("python-filter", python, &threshold[..]),
        ("rust-transform", artifacts::TRANSFORM.to_owned(), &[][..]),
        ("js-transform", js, &[][..]),
    ];
    if cfg!(feature = "p3") {
        cases.push(("rust-p3-echo", artifacts::FIXTURE_P3.to_owned(), &[][..]));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let engine = Engine::new(EngineConfig {
        max_instances: 16,
        max_memory_bytes: 256 << 20,
        ..EngineConfig::default()
    })
    .unwrap();
    let event = reading(31.5);
    for (name, path, config) in cases {
        let mut spec = FunctionSpec::new(name);
        spec.limits.memory_bytes = 256 << 20;
        for (k, v) in config {
            spec.config.insert((*k).into(), (*v).into());
        }
        load_one(c, &format!("languages-load/{name}"), &path);
        let function = engine.load_file(spec, Path::new(&path)).unwrap();
        let mut group = c.benchmark_group("languages-invoke");
        group.bench_function(format!("{name}/fresh-instance"), |b| {
            b.iter(|| rt.block_on(function.invoke(event.clone())).unwrap())
        });
        let mut instance = rt.block_on(function.instantiate("bench")).unwrap();
        rt.block_on(instance.call(event.clone())).unwrap();
        group.bench_function(format!("{name}/warm-instance"), |b| {
            b.iter(|| rt.block_on(instance.call(event.clone())).unwrap())
        });
        group.finish();
        println!(
            "languages-memory/{name}: {:.2} MiB of linear memory per instance, {:.2} MiB component",
            instance.memory_bytes() as f64 / (1 << 20) as f64,
            std::fs::metadata(&path).unwrap().len() as f64 / (1 << 20) as f64
        );
    }
}

criterion_group!(benches, invoke, p3, tuning, load, languages);
criterion_main!(benches);
