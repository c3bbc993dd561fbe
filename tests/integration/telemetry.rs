//! Traces over OTLP: one MQTT event from a device, through a two-function
//! pipeline, into the outbox and up to the cloud, as one trace a real
//! OTLP/HTTP receiver decodes.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use brink_tests::artifacts;
use brink_tests::mqtt::Client5;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

use crate::mqtt::embedded;

type Kept<T> = Arc<Mutex<Vec<T>>>;

fn lock<T>(kept: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    kept.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An OTLP/HTTP receiver on loopback: the spans of every request it decodes.
async fn otlp_receiver() -> anyhow::Result<(String, Kept<Span>)> {
    let spans: Kept<Span> = Arc::default();
    let keep = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let keep = keep.clone();
            async move {
                assert_eq!(
                    headers.get("content-type").map(|v| v.as_bytes()),
                    Some(&b"application/x-protobuf"[..])
                );
                let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                    return axum::http::StatusCode::BAD_REQUEST;
                };
                let resource_spans = request.resource_spans.into_iter();
                lock(&keep).extend(
                    resource_spans
                        .flat_map(|r| r.scope_spans)
                        .flat_map(|s| s.spans),
                );
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, spans))
}

/// The cloud's ingest endpoint: each event it was sent, with its headers.
async fn cloud() -> anyhow::Result<(String, Kept<(HeaderMap, Bytes)>)> {
    let got: Kept<(HeaderMap, Bytes)> = Arc::default();
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/ingest",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let keep = keep.clone();
            async move {
                lock(&keep).push((headers, body));
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/ingest", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, got))
}

const DEVICE_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const DEVICE_SPAN: &str = "00f067aa0ba902b7";

fn find<'a>(spans: &'a [Span], name: &str) -> anyhow::Result<&'a Span> {
    spans
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| anyhow::anyhow!("no span {name:?} among {:?}", names(spans)))
}

fn names(spans: &[Span]) -> Vec<&str> {
    spans.iter().map(|s| s.name.as_str()).collect()
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(n) => n.to_string(),
            Value::BoolValue(b) => b.to_string(),
            other => format!("{other:?}"),
        })
}

#[tokio::test]
async fn one_mqtt_event_is_one_trace_from_the_device_through_two_functions_to_the_cloud()
-> anyhow::Result<()> {
    let (collector, spans) = otlp_receiver().await?;
    let (ingest, delivered) = cloud().await?;
    let data = tempfile::tempdir()?;
    let (mqtt, _, v5) = embedded()?;
    let text = format!(
        r#"brink_manifest_version = 1
data_dir = {data:?}
[node]
id = "gw-plant3-07"
[http]
listen = "127.0.0.1:0"
[mqtt]
{mqtt}
[telemetry]
otlp = "{collector}"
export_interval_ms = 50
[uplink.cloud]
http = "{ingest}"
[function.filter]
source = {filter:?}
triggers = [{{ mqtt = "sensors/+/temperature" }}]
outputs = [{{ function = "transform" }}]
config = {{ threshold = "30" }}
[function.transform]
source = {transform:?}
outputs = [{{ uplink = "cloud" }}]
"#,
        data = data.path().display().to_string(),
        filter = artifacts::FILTER,
        transform = artifacts::TRANSFORM,
    );
    let node = brink_tests::start_node(&text).await?;
    let device = Client5::connect(v5, &[]).await?;
    let reading = serde_json::json!({
        "specversion": "1.0", "id": "r-1", "source": "/plant/t-1",
        "type": "com.example.reading", "subject": "t-1",
        "datacontenttype": "application/json",
        "traceparent": format!("00-{DEVICE_TRACE}-{DEVICE_SPAN}-01"),
        "tracestate": "vendor=device",
        "data": { "device": "t-1", "value": 35.5 },
    });
    device
        .publish("sensors/t-1/temperature", reading.to_string(), None, &[])
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while lock(&delivered).is_empty() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "nothing reached the cloud"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.shutdown().await?;

    // The cloud got the alert with the device's trace id, from the delivery span.
    let (headers, _) = lock(&delivered)[0].clone();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_default()
    };
    let carried = header("ce-traceparent");
    assert!(
        carried.starts_with(&format!("00-{DEVICE_TRACE}-")),
        "{carried}"
    );
    assert_eq!(header("ce-tracestate"), "vendor=device");
    // And says which node forwarded it.
    assert_eq!(header("ce-brinknode"), "gw-plant3-07");

    let spans = lock(&spans).clone();
    let trace = hex(DEVICE_TRACE)?;
    assert!(
        spans.iter().all(|s| s.trace_id == trace),
        "every span is in the device's trace: {:?}",
        names(&spans)
    );
    let receive = find(&spans, "receive")?;
    let dispatch_filter = find(&spans, "dispatch filter")?;
    let invoke_filter = find(&spans, "invoke filter")?;
    let dispatch_transform = find(&spans, "dispatch transform")?;
    let invoke_transform = find(&spans, "invoke transform")?;
    let store = find(&spans, "outbox store cloud")?;
    let deliver = find(&spans, "deliver cloud")?;
    // The tree: device → receive → dispatch → invoke → dispatch → invoke →
    // store, and the delivery under the invocation whose output it carries.
    assert_eq!(receive.parent_span_id, hex(DEVICE_SPAN)?);
    assert_eq!(dispatch_filter.parent_span_id, receive.span_id);
    assert_eq!(invoke_filter.parent_span_id, dispatch_filter.span_id);
    assert_eq!(dispatch_transform.parent_span_id, invoke_filter.span_id);
    assert_eq!(invoke_transform.parent_span_id, dispatch_transform.span_id);
    assert_eq!(store.parent_span_id, invoke_transform.span_id);
    assert_eq!(deliver.parent_span_id, invoke_transform.span_id);
    assert_eq!(
        carried,
        format!("00-{DEVICE_TRACE}-{}-01", to_hex(&deliver.span_id))
    );
    // What each step says of itself.
    assert_eq!(
        attribute(receive, "messaging.destination.name").as_deref(),
        Some("sensors/t-1/temperature")
    );
    assert_eq!(
        attribute(receive, "messaging.mqtt.qos").as_deref(),
        Some("1")
    );
    assert_eq!(
        attribute(invoke_filter, "brink.outcome").as_deref(),
        Some("ok")
    );
    assert_eq!(
        attribute(invoke_filter, "brink.instance").as_deref(),
        Some("fresh")
    );
    assert_eq!(
        attribute(deliver, "brink.outcome").as_deref(),
        Some("delivered")
    );
    assert!(spans.iter().all(|s| s.trace_state == "vendor=device"));
    assert!(
        spans
            .iter()
            .all(|s| s.end_time_unix_nano >= s.start_time_unix_nano)
    );
    Ok(())
}

fn hex(text: &str) -> anyhow::Result<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| Ok(u8::from_str_radix(text.get(i..i + 2).unwrap_or("zz"), 16)?))
        .collect()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn an_http_request_continues_its_traceparent_header_and_its_answer_carries_the_trace()
-> anyhow::Result<()> {
    let (collector, spans) = otlp_receiver().await?;
    let text = format!(
        r#"brink_manifest_version = 1
[http]
listen = "127.0.0.1:0"
[telemetry]
otlp = "{collector}"
export_interval_ms = 50
[function.echo]
source = {echo:?}
triggers = [{{ http = "/readings" }}]
"#,
        echo = artifacts::ECHO,
    );
    let node = brink_tests::start_node(&text).await?;
    let base = format!("http://{}", node.http_addr());
    // Binary mode with no context of its own: the W3C header's counts.
    let post = |path: &str, id: &str| {
        brink_tests::http()
            .post(format!("{base}{path}"))
            .header("ce-specversion", "1.0")
            .header("ce-id", id)
            .header("ce-source", "/plant/t-1")
            .header("ce-type", "com.example.reading")
            .header("content-type", "application/json")
            .header("traceparent", format!("00-{DEVICE_TRACE}-{DEVICE_SPAN}-01"))
            .body(r#"{"value":35.5}"#)
    };
    let answer = post("/functions/echo", "e-1").send().await?;
    assert_eq!(answer.status(), 200);
    let carried = answer
        .headers()
        .get("ce-traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(post("/events/readings", "e-2").send().await?.status(), 202);
    node.shutdown().await?;

    let spans = lock(&spans).clone();
    let child_of = |name: &str, parent: &[u8]| {
        spans
            .iter()
            .find(|s| s.name == name && s.parent_span_id == parent)
            .ok_or_else(|| anyhow::anyhow!("no {name} under its parent in {:?}", names(&spans)))
    };
    for (route, answered) in [("POST /functions/echo", true), ("POST /readings", false)] {
        let receive = child_of(route, &hex(DEVICE_SPAN)?)?;
        assert_eq!(receive.trace_id, hex(DEVICE_TRACE)?);
        let dispatch = child_of("dispatch echo", &receive.span_id)?;
        let invoke = child_of("invoke echo", &dispatch.span_id)?;
        if answered {
            // The answer is the invocation's output, with its context.
            assert_eq!(
                carried,
                format!("00-{DEVICE_TRACE}-{}-01", to_hex(&invoke.span_id))
            );
        }
    }
    Ok(())
}
