//! Shared helpers for the end-to-end tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use brink_host::bindings::CloudEvent;
use brink_host::{Engine, EngineConfig, Function, FunctionSpec};

pub use brink_test_artifacts as artifacts;

/// One engine for the whole test binary, without a compile cache so every
/// test sees the real load path. Engines reserve address space for their
/// instance pool, so tests share one rather than making dozens.
pub fn engine() -> anyhow::Result<&'static Engine> {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    if let Some(engine) = ENGINE.get() {
        return Ok(engine);
    }
    let engine = Engine::new(EngineConfig {
        max_instances: 64,
        max_memory_bytes: 256 << 20,
        cache_dir: None,
        ..EngineConfig::default()
    })?;
    Ok(ENGINE.get_or_init(|| engine))
}

/// An HTTP client for talking to nodes (with the process's TLS provider set,
/// as `brink` itself sets it).
pub fn http() -> reqwest::Client {
    brink_host::node::tls::install_default_provider();
    reqwest::Client::new()
}

/// Starts a node from manifest `text` in the shared engine (paths in it are
/// relative to the working directory).
pub async fn start_node(text: &str) -> anyhow::Result<brink_host::node::Node> {
    let manifest = brink_host::manifest::Manifest::parse(text, "test.toml")?;
    brink_host::node::Node::start(manifest, Path::new("."), engine()?).await
}

/// Asserts an RFC 9457 problem answer with `status` whose detail contains `needle`.
pub async fn assert_problem(
    response: reqwest::Response,
    status: reqwest::StatusCode,
    needle: &str,
) -> anyhow::Result<()> {
    let got = response.status();
    let ct = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.text().await?;
    anyhow::ensure!(got == status, "{needle}: {got} {body}");
    anyhow::ensure!(ct == "application/problem+json", "{needle}: {ct} {body}");
    let problem: serde_json::Value = serde_json::from_str(&body)?;
    anyhow::ensure!(problem["status"] == status.as_u16(), "{body}");
    let detail = problem["detail"].as_str().unwrap_or_default();
    anyhow::ensure!(detail.contains(needle), "{detail:?} lacks {needle:?}");
    Ok(())
}

/// Loads the component at `path` under `spec` in the shared engine.
pub fn load(spec: FunctionSpec, path: &str) -> anyhow::Result<Function> {
    Ok(engine()?.load_file(spec, Path::new(path))?)
}

/// The component of the Python or JavaScript function `functions/<language>/<name>`,
/// built once per test process by `brink build`'s own code, from a copy (so no
/// two test processes build into the same folder). The toolchains are
/// installed on first use into `target/toolchains`, which every test shares.
pub fn guest(language: &str, name: &str) -> anyhow::Result<String> {
    type Built = HashMap<(String, String), (tempfile::TempDir, PathBuf)>;
    static BUILT: OnceLock<Mutex<Built>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .map_err(|_| anyhow::anyhow!("an earlier build panicked"))?;
    let key = (language.to_owned(), name.to_owned());
    if let Some((_, wasm)) = built.get(&key) {
        return Ok(wasm.display().to_string());
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let src = root.join("functions").join(language).join(name);
    let copy = tempfile::tempdir()?;
    for entry in std::fs::read_dir(&src)? {
        let path = entry?.path();
        if path.is_file()
            && let Some(file) = path.file_name()
        {
            std::fs::copy(&path, copy.path().join(file))?;
        }
    }
    let toolchains = root.join("target/toolchains");
    let wasm = match language {
        "python" => brink_host::languages::python::build(copy.path(), &toolchains)?,
        "js" => brink_host::languages::js::build(copy.path(), &toolchains)?,
        other => anyhow::bail!("no language {other:?}"),
    };
    built.insert(key, (copy, wasm.clone()));
    Ok(wasm.display().to_string())
}

/// A reading event (`{"device": ..., "value": ...}`) as the contract's record.
pub fn reading(id: &str, device: &str, value: f64) -> CloudEvent {
    CloudEvent {
        id: id.to_owned(),
        source: "/factory/line-1/sensors".to_owned(),
        type_: "com.example.reading".to_owned(),
        specversion: "1.0".to_owned(),
        subject: Some(device.to_owned()),
        time: Some("2026-11-22T10:00:00Z".to_owned()),
        datacontenttype: Some("application/json".to_owned()),
        dataschema: None,
        extensions: vec![("site".to_owned(), "plant-7".to_owned())],
        data: Some(
            serde_json::json!({ "device": device, "value": value })
                .to_string()
                .into_bytes(),
        ),
    }
}

/// The data of `event` as JSON.
pub fn json_data(event: &CloudEvent) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::from_slice(
        event.data.as_deref().unwrap_or_default(),
    )?)
}

#[path = "mqtt_support.rs"]
pub mod mqtt;
