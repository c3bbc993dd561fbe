//! Inference through real guests: the digits model end to end, grants,
//! tensor and error mapping, loading, and batching many callers at once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use brink_host::bindings::CloudEvent;
use brink_host::nn::{BackendKind, BatchConfig, ModelConfig, Models, NnConfig, Target};
use brink_host::{Function, FunctionSpec};
use brink_tests::{artifacts, json_data, load, reading};
use serde::Deserialize;
use serde_json::{Value, json};

fn digits_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/digits")
}

/// `examples/digits/digits-test.json`, as `train_digits.py` wrote it.
#[derive(Deserialize)]
pub(crate) struct TestSet {
    samples: usize,
    correct: usize,
    accuracy: f64,
    labels: Vec<usize>,
    pub(crate) predicted: Vec<usize>,
    pub(crate) pixels: Vec<Vec<f32>>,
}

pub(crate) fn test_set() -> anyhow::Result<TestSet> {
    let text = std::fs::read_to_string(digits_dir().join("digits-test.json"))?;
    Ok(serde_json::from_str(&text)?)
}

fn digits_config(backend: BackendKind, batch: BatchConfig) -> ModelConfig {
    ModelConfig {
        path: digits_dir().join("digits.onnx"),
        backend,
        target: Target::Cpu,
        fallback_to_cpu: false,
        batch,
    }
}

/// The node's models: `digits` on `backend`.
fn models_with(
    backend: BackendKind,
    batch: BatchConfig,
    config: NnConfig,
) -> anyhow::Result<Models> {
    Models::load(
        &BTreeMap::from([("digits".to_owned(), digits_config(backend, batch))]),
        config,
    )
}

pub(crate) fn models() -> anyhow::Result<Models> {
    models_with(
        BackendKind::Tract,
        BatchConfig::default(),
        NnConfig::default(),
    )
}

fn classifier(models: &Models, name: &str) -> anyhow::Result<Function> {
    load(
        FunctionSpec::new(name).with_models(models.clone(), ["digits"], false),
        artifacts::CLASSIFY_DIGITS,
    )
}

pub(crate) fn image_event(id: usize, pixels: &Value) -> CloudEvent {
    let mut event = reading(&format!("img-{id}"), &format!("camera-{id}"), 0.0);
    event.type_ = "com.example.digit.image".to_owned();
    event.data = Some(json!({ "pixels": pixels }).to_string().into_bytes());
    event
}

/// The label the function emitted for a one-image event.
async fn classify(function: &Function, id: usize, pixels: &[f32]) -> anyhow::Result<usize> {
    let out = function.invoke(image_event(id, &json!(pixels))).await?;
    anyhow::ensure!(out.len() == 1, "expected one event, got {}", out.len());
    anyhow::ensure!(out[0].subject.as_deref() == Some(format!("camera-{id}").as_str()));
    let data = json_data(&out[0])?;
    data["label"]
        .as_u64()
        .map(|l| l as usize)
        .ok_or_else(|| anyhow::anyhow!("no label in {data}"))
}

async fn accuracy_through_wasm(models: &Models) -> anyhow::Result<(TestSet, usize, Vec<usize>)> {
    let set = test_set()?;
    let function = classifier(models, "classify-digits")?;
    let mut predicted = Vec::with_capacity(set.samples);
    for (i, pixels) in set.pixels.iter().enumerate() {
        predicted.push(classify(&function, i, pixels).await?);
    }
    let correct = predicted
        .iter()
        .zip(&set.labels)
        .filter(|(p, l)| p == l)
        .count();
    Ok((set, correct, predicted))
}

#[tokio::test]
async fn every_held_out_digit_is_classified_through_wasm_with_the_accuracy_the_script_measured()
-> anyhow::Result<()> {
    let (set, correct, predicted) = accuracy_through_wasm(&models()?).await?;
    assert_eq!(set.samples, 450);
    assert!(
        set.accuracy > 0.95,
        "the committed model scores {}",
        set.accuracy
    );
    assert_eq!(
        correct, set.correct,
        "the script measured {}/{} correct; through wasi:nn and tract {correct}",
        set.correct, set.samples
    );
    assert_eq!(
        predicted, set.predicted,
        "per-sample predictions differ from the script's"
    );
    Ok(())
}

#[tokio::test]
async fn one_event_with_many_images_runs_one_inference_and_emits_one_event_per_image()
-> anyhow::Result<()> {
    let set = test_set()?;
    let models = models()?;
    let function = classifier(&models, "classify-digits")?;
    let out = function
        .invoke(image_event(0, &json!(&set.pixels[..20])))
        .await?;
    assert_eq!(out.len(), 20);
    for (i, event) in out.iter().enumerate() {
        let data = json_data(event)?;
        assert_eq!(event.type_, "com.brink.digits.classified");
        assert_eq!(data["index"], json!(i));
        assert_eq!(data["label"], json!(set.predicted[i]));
        let confidence = data["confidence"].as_f64().unwrap_or_default();
        assert!(confidence > 0.0 && confidence <= 1.0, "{data}");
    }
    let stats = models
        .get("digits")
        .map(|m| (m.stats().requests(), m.stats().rows()));
    assert_eq!(stats, Some((1, 20)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_in_shared_batches_each_get_their_own_classification()
-> anyhow::Result<()> {
    let set = Arc::new(test_set()?);
    // One run at a time and a short wait, so concurrent calls must share batches.
    let models = models_with(
        BackendKind::Tract,
        BatchConfig {
            max_batch: 16,
            max_wait: Duration::from_millis(2),
            max_queue: 1024,
            parallelism: 1,
            ..BatchConfig::default()
        },
        NnConfig::default(),
    )?;
    let functions = [
        classifier(&models, "camera-a")?,
        classifier(&models, "camera-b")?,
        classifier(&models, "camera-c")?,
    ];
    // The test binary's engine pools 64 instances for every test at once.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(24));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..set.samples.min(192) {
        let (function, set) = (functions[i % 3].clone(), set.clone());
        let in_flight = in_flight.clone();
        tasks.spawn(async move {
            let _slot = in_flight.acquire_owned().await?;
            let label = classify(&function, i, &set.pixels[i]).await?;
            anyhow::Ok((i, label))
        });
    }
    let mut answered = 0;
    while let Some(result) = tasks.join_next().await {
        let (i, label) = result??;
        assert_eq!(
            label, set.predicted[i],
            "sample {i} got another caller's answer"
        );
        answered += 1;
    }
    assert_eq!(answered, set.samples.min(192));
    let model = models
        .get("digits")
        .ok_or_else(|| anyhow::anyhow!("no model"))?;
    let (requests, batches) = (model.stats().requests(), model.stats().batches());
    assert_eq!(requests, 192);
    assert!(
        batches < requests,
        "no batch joined two callers ({batches} runs)"
    );
    Ok(())
}

fn ops_function(models: &Models, granted: &[&str], load_bytes: bool) -> anyhow::Result<Function> {
    load(
        FunctionSpec::new("nn-ops").with_models(
            models.clone(),
            granted.iter().copied(),
            load_bytes,
        ),
        artifacts::FIXTURE_NN_OPS,
    )
}

/// Runs `ops` in one invocation; the result of each.
async fn run(function: &Function, ops: Value) -> anyhow::Result<Vec<Value>> {
    let mut event = reading("ops", "none", 0.0);
    event.data = Some(ops.to_string().into_bytes());
    let out = function.invoke(event).await?;
    let results = json_data(out.first().ok_or_else(|| anyhow::anyhow!("no output"))?)?;
    Ok(results.as_array().cloned().unwrap_or_default())
}

/// The `(code, message)` of an error result.
fn error_of(result: &Value) -> (String, String) {
    (
        result["err"]["code"]
            .as_str()
            .unwrap_or("no error")
            .to_owned(),
        result["err"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn a_model_that_is_not_granted_is_refused_with_security() -> anyhow::Result<()> {
    let models = models()?;
    let f = ops_function(&models, &[], false)?;
    let results = run(&f, json!([{ "op": "open", "model": "digits" }])).await?;
    let (code, message) = error_of(&results[0]);
    assert_eq!(code, "ErrorCode::Security");
    assert!(
        message.contains("model `digits` is not granted"),
        "{message}"
    );

    let f = ops_function(&models, &["digits"], false)?;
    let results = run(
        &f,
        json!([{ "op": "open", "model": "digits" }, { "op": "open", "model": "secret" }]),
    )
    .await?;
    assert_eq!(results[0], json!({ "ok": null }));
    assert_eq!(error_of(&results[1]).0, "ErrorCode::Security");
    Ok(())
}

#[tokio::test]
async fn a_component_importing_wasi_nn_without_a_grant_is_refused_at_load_naming_it() {
    let err = load(FunctionSpec::new("nn-ops"), artifacts::FIXTURE_NN_OPS)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("wasi:nn/"), "{err}");
    assert!(err.contains("models = ["), "{err}");
}

#[tokio::test]
async fn bad_tensor_shapes_and_types_get_invalid_argument_with_a_message() -> anyhow::Result<()> {
    let models = models()?;
    let f = ops_function(&models, &["digits"], false)?;
    let results = run(
        &f,
        json!([
            { "op": "open", "model": "digits" },
            { "op": "compute", "dims": [2, 64], "fill": 4.0 },
            { "op": "compute", "dims": [1, 63] },
            { "op": "compute", "dims": [64] },
            { "op": "compute", "dims": [1, 64], "ty": "i32" },
            { "op": "compute", "dims": [1, 64], "bytes": 100 },
            { "op": "compute", "dims": [1, 64], "input": "image" },
            { "op": "compute", "dims": [0, 64] },
            { "op": "compute", "dims": [1, 64], "ty": "bf16" },
        ]),
    )
    .await?;
    assert_eq!(
        results[1],
        json!([{ "ok": { "name": "probabilities", "dims": [2, 10], "ty": "TensorType::Fp32", "bytes": 80 } }])
    );
    let expect = [
        (2, "takes input pixels fp32[?, 64], not fp32[1, 63]"),
        (3, "not fp32[64]"),
        (4, "not i32[1, 64]"),
        (5, "100 bytes"),
        (6, "has no input `image`; its inputs: pixels fp32[?, 64]"),
        (7, "not fp32[0, 64]"),
        (8, "not bf16[1, 64]"),
    ];
    for (i, needle) in expect {
        let (code, message) = error_of(&results[i]);
        assert_eq!(code, "ErrorCode::InvalidArgument", "op {i}: {message}");
        assert!(message.contains(needle), "op {i}: {message}");
    }
    Ok(())
}

#[tokio::test]
async fn a_model_file_that_is_not_onnx_fails_to_load_naming_the_model_and_file()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("model.onnx");
    std::fs::write(&path, b"PK\x03\x04 a zip file, not a model")?;
    let mut config = digits_config(BackendKind::Tract, BatchConfig::default());
    config.path = path;
    let err = Models::load(
        &BTreeMap::from([("camera".to_owned(), config)]),
        NnConfig::default(),
    )
    .err()
    .map(|e| format!("{e:#}"))
    .unwrap_or_default();
    assert!(err.contains("loading model `camera` from"), "{err}");
    assert!(err.contains("model.onnx"), "{err}");
    assert!(err.contains("not an ONNX model"), "{err}");
    Ok(())
}

#[tokio::test]
async fn loading_from_bytes_needs_its_grant_is_size_limited_and_checks_the_encoding()
-> anyhow::Result<()> {
    let models = models_with(
        BackendKind::Tract,
        BatchConfig::default(),
        NnConfig {
            max_load_bytes: 64 << 10,
            onnxruntime_library: None,
        },
    )?;
    let onnx = std::fs::read(digits_dir().join("digits.onnx"))?;
    let hex: String = onnx.iter().map(|b| format!("{b:02x}")).collect();

    let refused = ops_function(&models, &["digits"], false)?;
    let results = run(&refused, json!([{ "op": "load", "hex": hex }])).await?;
    let (code, message) = error_of(&results[0]);
    assert_eq!(code, "ErrorCode::Security");
    assert!(message.contains("load_models = true"), "{message}");

    let allowed = ops_function(&models, &[], true)?;
    let results = run(
        &allowed,
        json!([
            { "op": "load", "bytes_len": 65 << 10, "byte": 8 },
            { "op": "load", "bytes_len": 4096, "byte": 8 },
            { "op": "load", "hex": hex },
            { "op": "compute", "dims": [1, 64], "fill": 3.0 },
        ]),
    )
    .await?;
    assert_eq!(error_of(&results[0]).0, "ErrorCode::TooLarge");
    assert!(error_of(&results[0]).1.contains("at most 65536"));
    assert_eq!(error_of(&results[1]).0, "ErrorCode::InvalidEncoding");
    assert_eq!(results[2], json!({ "ok": null }));
    assert_eq!(results[3][0]["ok"]["dims"], json!([1, 10]));
    Ok(())
}

/// The ONNX Runtime library, where this machine has one. CI installs pip's
/// `onnxruntime` and sets `BRINK_REQUIRE_ONNXRUNTIME=1`, so there a missing
/// library fails these tests instead of skipping them.
fn onnxruntime() -> Option<PathBuf> {
    let path = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from);
    if path.is_none() {
        assert!(
            std::env::var_os("BRINK_REQUIRE_ONNXRUNTIME").is_none(),
            "BRINK_REQUIRE_ONNXRUNTIME is set but ORT_DYLIB_PATH is not"
        );
        eprintln!("skipped: no ONNX Runtime library (set ORT_DYLIB_PATH to run this test)");
    }
    path
}

#[tokio::test]
async fn the_onnxruntime_backend_classifies_the_held_out_digits_like_the_script()
-> anyhow::Result<()> {
    let Some(library) = onnxruntime() else {
        return Ok(());
    };
    let models = models_with(
        BackendKind::Onnxruntime,
        BatchConfig::default(),
        NnConfig {
            onnxruntime_library: Some(library),
            ..NnConfig::default()
        },
    )?;
    let (set, correct, predicted) = accuracy_through_wasm(&models).await?;
    assert_eq!(correct, set.correct);
    assert_eq!(predicted, set.predicted);
    Ok(())
}

#[tokio::test]
async fn a_gpu_model_without_cuda_fails_clearly_or_falls_back_to_the_cpu_when_allowed()
-> anyhow::Result<()> {
    let Some(library) = onnxruntime() else {
        return Ok(());
    };
    let config = NnConfig {
        onnxruntime_library: Some(library),
        ..NnConfig::default()
    };
    let mut gpu = digits_config(BackendKind::Onnxruntime, BatchConfig::default());
    gpu.target = Target::Gpu;
    match Models::load(
        &BTreeMap::from([("digits".to_owned(), gpu.clone())]),
        config.clone(),
    ) {
        // A machine with CUDA and onnxruntime-gpu runs it there.
        Ok(models) => {
            let device = models.get("digits").map(|m| m.graph().device());
            assert_eq!(device, Some("cuda"));
        }
        Err(e) => {
            let message = format!("{e:#}");
            // benches/gpu-check.sh sets it on a GPU machine, where CUDA must work.
            assert!(
                std::env::var_os("BRINK_REQUIRE_CUDA").is_none(),
                "BRINK_REQUIRE_CUDA is set but the CUDA provider did not start: {message}"
            );
            assert!(message.contains("CUDA execution provider"), "{message}");
            assert!(message.contains("fallback = \"cpu\""), "{message}");
        }
    }
    gpu.fallback_to_cpu = true;
    let models = Models::load(
        &BTreeMap::from([("digits".to_owned(), gpu)]),
        config.clone(),
    )?;
    // Wherever it runs, the node says so, and why where it fell back.
    let placement = &models.placements()[0];
    assert_eq!(placement.requested, "gpu");
    match placement.device.as_str() {
        "cpu" => assert!(
            placement
                .fallback
                .as_deref()
                .is_some_and(|why| why.contains("CUDA")),
            "{placement:?}"
        ),
        _ => assert_eq!(placement.fallback, None),
    }
    let ort = brink_host::nn::devices::onnxruntime(&config);
    assert!(ort.loaded, "{ort:?}");
    assert!(
        ort.providers.iter().any(|p| p == "CPUExecutionProvider"),
        "{ort:?}"
    );
    let function = classifier(&models, "classify-digits")?;
    let set = test_set()?;
    assert_eq!(
        classify(&function, 0, &set.pixels[0]).await?,
        set.predicted[0]
    );
    Ok(())
}

#[tokio::test]
async fn tensors_a_guest_hoards_in_the_host_count_against_its_memory_limit() -> anyhow::Result<()> {
    let models = models()?;
    let mut spec = FunctionSpec::new("nn-ops").with_models(models.clone(), ["digits"], false);
    spec.limits.memory_bytes = 16 << 20;
    let f = load(spec, artifacts::FIXTURE_NN_OPS)?;
    let mut event = reading("hoard", "none", 0.0);
    event.data = Some(
        json!([{ "op": "hoard", "n": 64, "bytes_len": 1 << 20 }])
            .to_string()
            .into_bytes(),
    );
    let err = f
        .invoke(event)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("memory limit"), "{err}");
    // Within the limit, and again after the trap: the host goes on serving.
    let results = run(&f, json!([{ "op": "hoard", "n": 4, "bytes_len": 1 << 20 }])).await?;
    assert_eq!(results[0], json!({ "ok": 4 }));
    Ok(())
}
