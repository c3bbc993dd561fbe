//! Inference: what one digits inference costs through a Wasm function
//! (`wasi:nn`) against calling tract directly from Rust, in one run; then
//! the throughput of 16 concurrent callers with batching on and off. The
//! same again on ONNX Runtime's CPU provider where `ORT_DYLIB_PATH` names
//! its library.
//!
//! Guest inferences run in a loop inside one invocation (the nn-ops
//! fixture's `repeat`: build the input tensor, `compute`, read the output),
//! so the figure is the inference, not the invocation; the whole
//! classify-digits invocation (instance, JSON, one inference) is measured
//! too. Each figure is the median of 7 rounds.
//!
//! `cargo bench -p brink-host --bench nn` (`BRINK_BENCH_OPS` sets the
//! inferences per round, default 20000).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brink_host::bindings::CloudEvent;
use brink_host::nn::{BackendKind, BatchConfig, ModelConfig, Models, NnConfig, Target, Tensor};
use brink_host::{Engine, EngineConfig, Function, FunctionSpec, Limits};
use tract_onnx::prelude::{Framework as _, InferenceModelExt as _, IntoRunnable as _, tvec};

const ROUNDS: usize = 7;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn model_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/digits/digits.onnx")
}

fn event(data: &serde_json::Value) -> CloudEvent {
    CloudEvent {
        id: "bench".into(),
        source: "/bench".into(),
        type_: "com.brink.bench".into(),
        specversion: "1.0".into(),
        subject: Some("camera-1".into()),
        time: None,
        datacontenttype: Some("application/json".into()),
        dataschema: None,
        extensions: vec![],
        data: Some(data.to_string().into_bytes()),
    }
}

/// Where the onnxruntime models run: `BRINK_BENCH_GPU=1` puts them on CUDA
/// (benches/gpu-check.sh sets it).
fn ort_target() -> Target {
    if std::env::var_os("BRINK_BENCH_GPU").is_some() {
        Target::Gpu
    } else {
        Target::Cpu
    }
}

fn models(backend: BackendKind, batch: BatchConfig, library: Option<PathBuf>) -> Models {
    Models::load(
        &BTreeMap::from([(
            "digits".to_owned(),
            ModelConfig {
                path: model_path(),
                backend,
                target: match backend {
                    BackendKind::Tract => Target::Cpu,
                    BackendKind::Onnxruntime => ort_target(),
                },
                fallback_to_cpu: false,
                batch,
            },
        )]),
        NnConfig {
            onnxruntime_library: library,
            ..NnConfig::default()
        },
    )
    .unwrap()
}

fn function(engine: &Engine, models: &Models, name: &str, artifact: &str) -> Function {
    let mut spec = FunctionSpec::new(name).with_models(models.clone(), ["digits"], false);
    spec.limits = Limits {
        timeout: Duration::from_secs(300),
        ..Limits::default()
    };
    engine.load_file(spec, Path::new(artifact)).unwrap()
}

/// One sample: a real held-out digit.
fn pixels() -> Vec<f32> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/digits/digits-test.json"),
    )
    .unwrap();
    let set: serde_json::Value = serde_json::from_str(&text).unwrap();
    set["pixels"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

/// Microseconds per call of `body`, `n` calls a round.
fn per_call_us(n: u32, mut body: impl FnMut()) -> f64 {
    median(
        (0..ROUNDS)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..n {
                    body();
                }
                start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
            })
            .collect(),
    )
}

/// Microseconds per inference inside one guest invocation of `n` inferences.
fn guest_us(rt: &tokio::runtime::Runtime, f: &Function, n: u32, rows: usize) -> f64 {
    let ops = serde_json::json!([
        { "op": "open", "model": "digits" },
        { "op": "repeat", "n": n, "dims": [rows, 64], "fill": 6.0 },
    ]);
    median(
        (0..ROUNDS)
            .map(|_| {
                let start = Instant::now();
                let out = rt.block_on(f.invoke(event(&ops))).unwrap();
                let elapsed = start.elapsed().as_secs_f64();
                let text = String::from_utf8_lossy(out[0].data.as_deref().unwrap()).into_owned();
                assert!(!text.contains("err"), "{text}");
                elapsed * 1e6 / f64::from(n)
            })
            .collect(),
    )
}

/// Inferences per second from `callers` concurrent guests, each running
/// `n / callers` inferences in one invocation.
fn concurrent_rate(
    rt: &tokio::runtime::Runtime,
    functions: &[Function],
    callers: usize,
    n: u32,
) -> f64 {
    let each = n / callers as u32;
    median(
        (0..ROUNDS)
            .map(|_| {
                let start = Instant::now();
                rt.block_on(async {
                    let mut tasks = tokio::task::JoinSet::new();
                    for i in 0..callers {
                        let f = functions[i % functions.len()].clone();
                        let ops = serde_json::json!([
                            { "op": "open", "model": "digits" },
                            { "op": "repeat", "n": each, "dims": [1, 64], "fill": (i % 16) as f32 },
                        ]);
                        tasks.spawn(async move { f.invoke(event(&ops)).await });
                    }
                    while let Some(r) = tasks.join_next().await {
                        let out = r.unwrap().unwrap();
                        let text =
                            String::from_utf8_lossy(out[0].data.as_deref().unwrap()).into_owned();
                        assert!(!text.contains("err"), "{text}");
                    }
                });
                f64::from(each * callers as u32) / start.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

struct Figures {
    native_us: f64,
    native32_us: f64,
    guest32_us: f64,
    host_us: f64,
    guest_us: f64,
    invocation_us: f64,
    concurrent: Vec<Concurrent>,
}

struct Concurrent {
    parallelism: usize,
    max_batch: usize,
    rate: f64,
    requests: u64,
    runs: u64,
}

fn measure(
    rt: &tokio::runtime::Runtime,
    engine: &Engine,
    backend: BackendKind,
    library: Option<PathBuf>,
    native: &mut dyn FnMut(usize),
    n: u32,
) -> Figures {
    let pixels = pixels();
    let single = models(backend, BatchConfig::default(), library.clone());
    let ops = function(
        engine,
        &single,
        "nn-ops",
        brink_test_artifacts::FIXTURE_NN_OPS,
    );
    let classify = function(
        engine,
        &single,
        "classify-digits",
        brink_test_artifacts::CLASSIFY_DIGITS,
    );

    // Warm everything once.
    native(1);
    guest_us(rt, &ops, 100, 1);

    let native_us = per_call_us(n, || native(1));
    let native32_us = per_call_us(n / 4, || native(32));
    let guest32_us = guest_us(rt, &ops, n / 4, 32);
    let model = single.get("digits").unwrap().clone();
    let who: Arc<str> = Arc::from("bench");
    let host_us = per_call_us(n, || {
        let input = Tensor::from_f32(vec![1, 64], &pixels).unwrap();
        rt.block_on(model.compute(&who, vec![("pixels".into(), input)]))
            .unwrap();
    });
    let guest_us = guest_us(rt, &ops, n, 1);
    let image = event(&serde_json::json!({ "pixels": pixels }));
    let invocation_us = per_call_us(n / 10, || {
        rt.block_on(classify.invoke(image.clone())).unwrap();
    });

    // 16 callers from 4 functions, batching off and on, with one run at a
    // time (as on a GPU) and with a run per core (the CPU default).
    let mut concurrent = Vec::new();
    for parallelism in [1, BatchConfig::default().parallelism] {
        for max_batch in [1, 32] {
            let shared = models(
                backend,
                BatchConfig {
                    max_batch,
                    parallelism,
                    ..BatchConfig::default()
                },
                library.clone(),
            );
            let fns: Vec<Function> = (0..4)
                .map(|i| {
                    function(
                        engine,
                        &shared,
                        &format!("f{i}"),
                        brink_test_artifacts::FIXTURE_NN_OPS,
                    )
                })
                .collect();
            let rate = concurrent_rate(rt, &fns, 16, n);
            let stats = shared.get("digits").unwrap().stats();
            concurrent.push(Concurrent {
                parallelism,
                max_batch,
                rate,
                requests: stats.requests(),
                runs: stats.batches(),
            });
        }
    }
    Figures {
        native_us,
        native32_us,
        guest32_us,
        host_us,
        guest_us,
        invocation_us,
        concurrent,
    }
}

fn report(name: &str, f: &Figures) {
    println!("\n{name}: one digits inference, µs (median of {ROUNDS} rounds)");
    println!("  native, called from Rust            {:>9.2}", f.native_us);
    println!(
        "  host queue, no Wasm                 {:>9.2}  ({:+.1}% vs native)",
        f.host_us,
        (f.host_us / f.native_us - 1.0) * 100.0
    );
    println!(
        "  guest wasi:nn compute (in a loop)   {:>9.2}  ({:+.1}% vs native)",
        f.guest_us,
        (f.guest_us / f.native_us - 1.0) * 100.0
    );
    println!(
        "  whole classify-digits invocation    {:>9.2}",
        f.invocation_us
    );
    println!("{name}: one call of 32 rows, µs");
    println!(
        "  native, called from Rust            {:>9.2}",
        f.native32_us
    );
    println!(
        "  guest wasi:nn compute (in a loop)   {:>9.2}  ({:+.1}% vs native)",
        f.guest32_us,
        (f.guest32_us / f.native32_us - 1.0) * 100.0
    );
    println!("{name}: 16 concurrent guest callers (4 functions), inferences/s");
    for pair in f.concurrent.chunks(2) {
        let [off, on] = pair else { continue };
        println!(
            "  {} run(s) at once, batching off         {:>9.0}",
            off.parallelism, off.rate
        );
        println!(
            "  {} run(s) at once, batching on (max {})  {:>9.0}  ({:.2}x; {:.1} requests per run)",
            on.parallelism,
            on.max_batch,
            on.rate,
            on.rate / off.rate,
            on.requests as f64 / on.runs.max(1) as f64
        );
    }
}

fn main() {
    let n: u32 = std::env::var("BRINK_BENCH_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let engine = Engine::new(EngineConfig {
        max_instances: 64,
        max_memory_bytes: 256 << 20,
        cache_dir: None,
        ..EngineConfig::default()
    })
    .unwrap();

    let pixels = pixels();
    let plan = tract_onnx::onnx()
        .model_for_path(model_path())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    // Inputs made before timing, so native pays only for the tensor it builds.
    let pixels32: Vec<f32> = pixels.iter().copied().cycle().take(32 * 64).collect();
    let rows_of = |rows: usize| {
        if rows == 1 {
            &pixels[..]
        } else {
            &pixels32[..]
        }
    };
    let mut native = |rows: usize| {
        let input = tract_onnx::prelude::Tensor::from_shape(&[rows, 64], rows_of(rows)).unwrap();
        let out = plan.run(tvec![input.into()]).unwrap();
        assert_eq!(out[0].shape(), &[rows, 10]);
    };
    let tract = measure(&rt, &engine, BackendKind::Tract, None, &mut native, n);
    report("tract", &tract);

    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(library) => {
            let library = PathBuf::from(library);
            let graph = brink_host::nn::load_graph(
                &std::fs::read(model_path()).unwrap(),
                BackendKind::Onnxruntime,
                ort_target(),
                false,
                &NnConfig {
                    onnxruntime_library: Some(library.clone()),
                    ..NnConfig::default()
                },
            )
            .unwrap();
            let mut native = |rows: usize| {
                let input = Tensor::from_f32(vec![rows as u32, 64], rows_of(rows)).unwrap();
                graph.run(vec![input]).unwrap();
            };
            let ort = measure(
                &rt,
                &engine,
                BackendKind::Onnxruntime,
                Some(library),
                &mut native,
                n,
            );
            let name = match ort_target() {
                Target::Cpu => "onnxruntime (CPU)",
                Target::Gpu => "onnxruntime (CUDA)",
            };
            report(name, &ort);
        }
        None => println!("\nonnxruntime: skipped (set ORT_DYLIB_PATH to its library)"),
    }
}
