//! Python and JavaScript functions, built by `brink build`'s own code with
//! componentize-py and componentize-js, doing the same jobs as their Rust
//! twins through the real host, with the same grants and limits.

use brink_host::FunctionSpec;
use brink_host::bindings::ErrorKind;
use brink_host::error::InvokeError;
use brink_host::kv::{Kv, KvConfig};
use brink_tests::{guest, json_data, load, reading};

use crate::functions::spec;

fn handler_error(
    result: Result<Vec<brink_host::bindings::CloudEvent>, InvokeError>,
) -> (ErrorKind, String) {
    match result {
        Err(InvokeError::Handler { kind, message, .. }) => (kind, message),
        other => panic!("expected a handler error, got {other:?}"),
    }
}

#[tokio::test]
async fn the_python_filter_passes_what_the_rust_filter_passes() -> anyhow::Result<()> {
    crate::functions::filters_like_the_filter(&guest("python", "filter")?).await
}

#[tokio::test]
async fn the_python_filter_fails_like_the_rust_filter_on_bad_config_and_bad_events()
-> anyhow::Result<()> {
    let path = guest("python", "filter")?;
    let unset = load(spec("py-unset", &[]), &path)?;
    let (kind, message) = handler_error(unset.invoke(reading("f-1", "t-1", 31.0)).await);
    assert_eq!(kind, ErrorKind::Internal);
    assert!(message.contains("`threshold`"), "{message}");

    let filter = load(spec("py-filter", &[("threshold", "30")]), &path)?;
    let mut event = reading("f-2", "t-1", 0.0);
    event.data = Some(br#"{"temperature": "hot"}"#.to_vec());
    let (kind, _) = handler_error(filter.invoke(event).await);
    assert_eq!(kind, ErrorKind::InvalidEvent);
    let mut event = reading("f-3", "t-1", 0.0);
    event.data = Some(b"not json".to_vec());
    let (kind, message) = handler_error(filter.invoke(event).await);
    assert_eq!(kind, ErrorKind::InvalidEvent, "{message}");
    // The instance is whole after each failure.
    assert_eq!(filter.invoke(reading("f-4", "t-1", 40.0)).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn the_python_tally_keeps_counts_in_its_granted_bucket() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let kv = Kv::open_sled(dir.path(), KvConfig::default())?;
    let path = guest("python", "tally")?;
    let tally = load(
        spec("tally", &[("every", "3")]).with_kv(kv.clone(), "app", ["default"]),
        &path,
    )?;
    let mut summaries = 0;
    for i in 1..=7 {
        let out = tally
            .invoke(reading(&format!("t-{i}"), "t-1", f64::from(i)))
            .await?;
        assert_eq!(
            out[0]
                .extensions
                .iter()
                .find(|(n, _)| n == "tallycount")
                .map(|(_, v)| v.as_str()),
            Some(i.to_string().as_str())
        );
        if let Some(summary) = out.get(1) {
            summaries += 1;
            assert_eq!(summary.type_, "com.brink.tally");
            assert_eq!(json_data(summary)?["count"], i);
        }
    }
    assert_eq!(summaries, 2);
    // Another device counts on its own; a restart of the function keeps the counts.
    let out = tally.invoke(reading("u-1", "t-2", 1.0)).await?;
    assert_eq!(out[0].extensions.last().map(|(_, v)| v.as_str()), Some("1"));
    let again = load(
        spec("tally", &[]).with_kv(kv.clone(), "app", ["default"]),
        &path,
    )?;
    let out = again.invoke(reading("t-8", "t-1", 8.0)).await?;
    assert_eq!(out[0].extensions.last().map(|(_, v)| v.as_str()), Some("8"));

    // A bucket the spec does not grant is a clear handler error, not a trap.
    let elsewhere = load(
        spec("tally", &[("bucket", "secrets")]).with_kv(kv.clone(), "app", ["default"]),
        &path,
    )?;
    let (kind, message) = handler_error(elsewhere.invoke(reading("x-1", "t-1", 1.0)).await);
    assert_eq!(kind, ErrorKind::Internal);
    assert!(
        message.contains("bucket `secrets` is not granted"),
        "{message}"
    );
    // A poisoned device name is refused before it reaches a key.
    let mut event = reading("x-2", "t-1", 1.0);
    event.data = Some(br#"{"device": "../count/t-1", "value": 1}"#.to_vec());
    let (kind, _) = handler_error(tally.invoke(event).await);
    assert_eq!(kind, ErrorKind::InvalidEvent);
    Ok(())
}

#[tokio::test]
async fn a_python_function_that_declares_kv_is_refused_without_a_bucket_grant() -> anyhow::Result<()>
{
    let path = guest("python", "tally")?;
    let err = load(spec("tally", &[]), &path)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("wasi:keyvalue/"), "{err}");
    assert!(err.contains("not granted"), "{err}");
    // The filter declares nothing beyond log and config, so it needs no grant.
    let filter = guest("python", "filter")?;
    assert!(load(spec("py-filter", &[("threshold", "1")]), &filter).is_ok());
    Ok(())
}

#[tokio::test]
async fn the_js_transform_converts_like_the_rust_transform() -> anyhow::Result<()> {
    crate::functions::converts_like_the_transform(&guest("js", "transform")?).await
}

#[tokio::test]
async fn the_js_transform_reports_a_bad_reading_as_an_invalid_event_and_serves_on()
-> anyhow::Result<()> {
    let path = guest("js", "transform")?;
    let transform = load(spec("js-transform", &[]), &path)?;
    for data in [
        &br#"{"device": "t-1", "value": "hot"}"#[..],
        b"not json",
        b"null",
    ] {
        let mut event = reading("bad", "t-1", 0.0);
        event.data = Some(data.to_vec());
        let (kind, message) = handler_error(transform.invoke(event).await);
        assert_eq!(kind, ErrorKind::InvalidEvent, "{message}");
    }
    assert_eq!(
        transform.invoke(reading("ok", "t-1", 100.0)).await?.len(),
        1
    );
    Ok(())
}

/// The demo's flow in the other languages: the Python filter, then the
/// JavaScript transform, then `outputs`.
fn polyglot_pipeline(head: &str, trigger: &str, outputs: &str) -> anyhow::Result<String> {
    Ok(format!(
        r#"brink_manifest_version = 1
[http]
listen = "127.0.0.1:0"
{head}

[function.filter]
source = {filter:?}
triggers = [{trigger}]
outputs = [{{ function = "transform" }}]
config = {{ threshold = "30" }}

[function.transform]
source = {transform:?}
outputs = [{outputs}]
"#,
        filter = guest("python", "filter")?,
        transform = guest("js", "transform")?,
    ))
}

#[tokio::test]
async fn readings_flow_over_mqtt_through_a_python_filter_and_a_js_transform() -> anyhow::Result<()>
{
    use brink_tests::mqtt::{Client5, Client311};
    let (mqtt, v4, v5) = crate::mqtt::embedded()?;
    let manifest = polyglot_pipeline(
        &format!("[mqtt]\n{mqtt}"),
        r#"{ mqtt = "sensors/+/temperature" }"#,
        r#"{ mqtt = "alerts/{subject}" }"#,
    )?;
    let node = brink_tests::start_node(&manifest).await?;
    let mut alerts = Client5::connect(v5, &["alerts/#"]).await?;
    let mut device = Client311::connect(v4).await?;
    let reading = |device: &str, value: serde_json::Value| {
        serde_json::json!({ "device": device, "value": value }).to_string()
    };
    device
        .publish("sensors/t-7/temperature", reading("t-7", 31.5.into()))
        .await?;
    device
        .publish("sensors/t-8/temperature", reading("t-8", 20.into()))
        .await?;
    // Poisoned: the filter refuses it as an invalid event; the pipeline goes on.
    device
        .publish("sensors/t-9/temperature", reading("t-9", "hot".into()))
        .await?;
    device
        .publish("sensors/t-10/temperature", reading("t-10", 45.into()))
        .await?;
    device.wait_acked(4).await?;

    let mut got = Vec::new();
    for _ in 0..2 {
        let alert = alerts.next(30).await?;
        assert_eq!(
            alert.property("type"),
            Some("com.brink.temperature.fahrenheit")
        );
        got.push((
            alert.topic.clone(),
            alert.json()?["temperature"]["value"].as_f64(),
        ));
    }
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [
            ("alerts/t-10".to_owned(), Some(113.0)),
            ("alerts/t-7".to_owned(), Some(88.7)),
        ]
    );
    assert!(
        alerts.quiet_for(300).await.is_none(),
        "a cold or poisoned reading passed"
    );
    let text = crate::mqtt::metrics(&node).await?;
    assert!(
        text.contains(r#"brink_events_in_total{function="filter",trigger="mqtt"} 4"#),
        "{text}"
    );
    node.shutdown().await
}

#[tokio::test]
async fn events_posted_over_http_flow_through_a_python_filter_and_a_js_transform_to_a_webhook()
-> anyhow::Result<()> {
    let (hook, mut received) = crate::node::webhook().await?;
    let manifest = polyglot_pipeline(
        "",
        r#"{ http = "/temperature" }"#,
        &format!("{{ webhook = {hook:?} }}"),
    )?;
    let node = brink_tests::start_node(&manifest).await?;
    let base = format!("http://{}", node.http_addr());
    let client = brink_tests::http();
    for (id, value) in [("r-1", 31.5), ("r-2", 20.0)] {
        let response = client
            .post(format!("{base}/events/temperature"))
            .header("content-type", "application/cloudevents+json")
            .body(crate::node::reading_json(id, "t-17", value).to_string())
            .send()
            .await?;
        assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    }
    let (headers, body) = tokio::time::timeout(std::time::Duration::from_secs(30), received.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("webhook channel closed"))?;
    assert_eq!(headers["ce-type"], "com.brink.temperature.fahrenheit");
    assert_eq!(headers["ce-subject"], "t-17");
    let data: serde_json::Value = serde_json::from_slice(&body)?;
    assert_eq!(data["temperature"]["value"], 88.7);
    assert_eq!(data["observed_at"], "2026-11-22T10:00:00Z");
    // The cold reading was dropped by the Python filter.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(received.try_recv().is_err());
    node.shutdown().await
}

/// A Python function written from `app`, with `tool` under `[tool.brink]`,
/// built by `brink build`'s code; the folder lives as long as the guard.
fn inline_python(app: &str, tool: &str) -> anyhow::Result<(tempfile::TempDir, String)> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("app.py"), app)?;
    std::fs::write(
        dir.path().join("pyproject.toml"),
        format!("[project]\nname = \"inline\"\n[tool.brink]\n{tool}\n"),
    )?;
    let toolchains = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/toolchains");
    let wasm = brink_host::languages::python::build(dir.path(), &toolchains)?;
    Ok((dir, wasm.display().to_string()))
}

fn typed(id: &str, type_: &str) -> brink_host::bindings::CloudEvent {
    let mut event = reading(id, "t-1", 1.0);
    event.type_ = type_.to_owned();
    event
}

const ASYNC_APP: &str = r#"
import brink

@brink.handler
async def handle(event: brink.Event):
    if event.type == "spin":
        while True:
            pass
    event.extensions["lang"] = "python-async"
    return event
"#;

#[tokio::test]
async fn a_python_async_handler_runs_as_a_wasi_03_task_and_is_ended_at_its_deadline()
-> anyhow::Result<()> {
    use brink_host::engine::Flavour;
    let (_dir, path) = inline_python(ASYNC_APP, "async = true")?;
    let limits = brink_host::Limits {
        timeout: std::time::Duration::from_millis(300),
        ..brink_host::Limits::default()
    };
    let f = load(
        FunctionSpec {
            limits,
            ..FunctionSpec::new("py-async")
        },
        &path,
    )?;
    assert_eq!(f.flavour(), Flavour::Concurrent);
    let out = f.invoke(typed("a-1", "com.example.reading")).await?;
    assert_eq!(
        out[0].extensions.last().map(|(_, v)| v.as_str()),
        Some("python-async")
    );
    // A hostile loop gets the same error as a P2 spinner, and the function serves on.
    let err = f.invoke(typed("a-2", "spin")).await.err();
    assert!(matches!(err, Some(InvokeError::Timeout { .. })), "{err:?}");
    assert_eq!(
        err.map(|e| e.to_string()).unwrap_or_default(),
        "function `py-async` exceeded its time limit of 300 ms"
    );
    assert_eq!(
        f.invoke(typed("a-3", "com.example.reading")).await?.len(),
        1
    );
    Ok(())
}

const SOCKET_APP: &str = r#"
import socket

import brink

@brink.handler
def handle(event: brink.Event):
    if event.type == "connect":
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).connect(("127.0.0.1", 9))
    return event
"#;

#[tokio::test]
async fn a_python_function_that_opens_a_socket_fails_that_call_and_serves_on() -> anyhow::Result<()>
{
    let (_dir, path) = inline_python(SOCKET_APP, "")?;
    let f = load(FunctionSpec::new("py-net"), &path)?;
    // The plug traps at the call: a failed invocation, never a connection.
    let err = f.invoke(typed("n-1", "connect")).await.err();
    assert!(matches!(err, Some(InvokeError::Trap { .. })), "{err:?}");
    let message = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("it called wasi:sockets/tcp-create-socket@0.2.9#create-tcp-socket, which no function is granted"),
        "{message}"
    );
    assert_eq!(
        f.invoke(typed("n-2", "com.example.reading")).await?.len(),
        1
    );
    Ok(())
}

#[tokio::test]
async fn the_python_digit_classifier_predicts_what_the_model_script_predicted() -> anyhow::Result<()>
{
    let path = guest("python", "classify-digits")?;
    let models = crate::nn::models()?;
    let f = load(
        FunctionSpec::new("py-digits").with_models(models.clone(), ["digits"], false),
        &path,
    )?;
    let set = crate::nn::test_set()?;
    // One image per event, then the first 32 as one batch of one inference.
    for (i, pixels) in set.pixels.iter().enumerate().take(32) {
        let out = f
            .invoke(crate::nn::image_event(i, &serde_json::json!(pixels)))
            .await?;
        assert_eq!(out.len(), 1);
        assert_eq!(json_data(&out[0])?["label"], set.predicted[i], "sample {i}");
    }
    let batch = serde_json::json!(set.pixels.iter().take(32).collect::<Vec<_>>());
    let out = f.invoke(crate::nn::image_event(99, &batch)).await?;
    let labels: Vec<_> = out
        .iter()
        .map(|e| json_data(e).map(|d| d["label"].clone()))
        .collect::<Result<_, _>>()?;
    assert_eq!(
        labels,
        set.predicted[..32]
            .iter()
            .map(|l| serde_json::json!(l))
            .collect::<Vec<_>>()
    );

    // A pixel out of range is the event's fault; an ungranted model is named.
    let (kind, _) = handler_error(
        f.invoke(crate::nn::image_event(7, &serde_json::json!(vec![17; 64])))
            .await,
    );
    assert_eq!(kind, ErrorKind::InvalidEvent);
    let other = load(
        spec("py-digits", &[("model", "faces")]).with_models(models, ["digits"], false),
        &path,
    )?;
    let (kind, message) = handler_error(
        other
            .invoke(crate::nn::image_event(8, &serde_json::json!(vec![0; 64])))
            .await,
    );
    assert_eq!(kind, ErrorKind::Internal);
    assert!(message.contains("model `faces`"), "{message}");
    Ok(())
}

/// Copies every file under `from` to the same place under `to`.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let path = entry?.path();
        let target = to.join(path.file_name().unwrap_or_default());
        if path.is_dir() {
            copy_tree(&path, &target)?;
        } else {
            std::fs::copy(&path, &target)?;
        }
    }
    Ok(())
}

const ENV_APP: &str = r#"
import brink
from wit_world.imports import environment

@brink.handler
def handle(event: brink.Event):
    event.extensions["p3env"] = str(len(environment.get_environment()))
    return event
"#;

#[tokio::test]
async fn a_componentize_py_component_importing_wasi_cli_0_3_0_loads_and_runs() -> anyhow::Result<()>
{
    use brink_host::engine::Flavour;
    use brink_host::languages::{plug, toolchain, world};
    // What a component built for another WASI 0.3 host looks like: its world
    // imports wasi:cli/environment@0.3.0 beside the contract.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("app.py"), ENV_APP)?;
    let wit = world::write(dir.path(), &[], false)?;
    copy_tree(&root.join("wit/wasi-0.3/deps"), &wit.join("deps"))?;
    std::fs::write(
        wit.join("app.wit"),
        "package brink:app;\nworld function {\n  import wasi:cli/environment@0.3.0;\n  import brink:edge/log@0.1.3;\n  import brink:edge/config@0.1.3;\n  export brink:edge/handler@0.1.3;\n}\n",
    )?;
    let sdk = dir.path().join("sdk");
    std::fs::create_dir_all(&sdk)?;
    copy_tree(&root.join("guest-sdk/python/brink"), &sdk.join("brink"))?;
    let raw = dir.path().join("raw.wasm");
    toolchain::run(
        toolchain::componentize_py(&root.join("target/toolchains"))?
            .arg("-d")
            .arg(&wit)
            .args(["-w", "brink:app/function", "componentize", "-p", "."])
            .arg("-p")
            .arg(&sdk)
            .arg("app")
            .arg("-o")
            .arg(&raw)
            .current_dir(dir.path()),
    )?;
    let bytes = std::fs::read(&raw)?;
    let component = plug::without_sockets(&bytes)?.unwrap_or(bytes);
    let path = dir.path().join("env.wasm");
    std::fs::write(&path, component)?;

    let f = load(FunctionSpec::new("py-env"), &path.display().to_string())?;
    assert_eq!(
        f.flavour(),
        Flavour::Concurrent,
        "wasi:cli@0.3.0 needs the WASI 0.3 engine"
    );
    let out = f.invoke(reading("e-1", "t-1", 1.0)).await?;
    // Linked, and empty: no environment is granted.
    assert_eq!(out[0].extensions.last().map(|(_, v)| v.as_str()), Some("0"));
    Ok(())
}
