use std::sync::Mutex;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;

use super::*;

/// A collector on loopback that keeps what it is sent; it answers
/// `status` to every post.
async fn collector(
    status: u16,
) -> anyhow::Result<(String, Arc<Mutex<Vec<ExportTraceServiceRequest>>>)> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let keep = keep.clone();
                async move {
                    // The configured header travels with every post.
                    if headers.get("x-api-key").map(|v| v.as_bytes()) != Some(&b"k-123"[..]) {
                        return axum::http::StatusCode::UNAUTHORIZED;
                    }
                    if let Ok(request) = ExportTraceServiceRequest::decode(body) {
                        keep.lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(request);
                    }
                    axum::http::StatusCode::from_u16(status).unwrap_or_default()
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}/v1/traces"), got))
}

fn config(url: &str, ratio: f64, queue: usize) -> TelemetryConfig {
    TelemetryConfig {
        traces_url: url.to_owned(),
        sample_ratio: ratio,
        max_queue_spans: queue,
        export_interval: Duration::from_millis(50),
        resource: vec![("service.name".to_owned(), "brink".to_owned())],
        headers: vec![("x-api-key".to_owned(), "k-123".to_owned())],
    }
}

fn spans(
    got: &Mutex<Vec<ExportTraceServiceRequest>>,
) -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
    got.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| s.spans.clone())
        .collect()
}

#[tokio::test]
async fn a_device_trace_is_continued_and_its_spans_reach_the_collector() -> anyhow::Result<()> {
    let (url, got) = collector(200).await?;
    let tracer = Tracer::start(config(&url, 1.0, 64), client()?);
    let device = SpanContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    let mut receive = tracer.start_span(
        "receive",
        Kind::Consumer,
        device.map(|d| (d, Some("k=v".into()))),
    );
    receive.set("messaging.destination.name", "sensors/t-1");
    let mut invoke = receive.child("invoke filter", Kind::Internal);
    invoke.fail("trapped");
    let mut event = crate::event::test_event(vec![("traceparent".into(), "00-bogus".into())]);
    invoke.stamp(&mut event);
    let carried = context::of_event(&event);
    assert_eq!(carried, Some((invoke.context(), Some("k=v".to_owned()))));
    drop(invoke);
    drop(receive);
    tracer.flush(Duration::from_secs(5)).await;
    let spans = spans(&got);
    assert_eq!(spans.len(), 2);
    let device = device.ok_or_else(|| anyhow::anyhow!("bad test header"))?;
    assert!(spans.iter().all(|s| s.trace_id == device.trace_id));
    let receive = spans.iter().find(|s| s.name == "receive");
    let invoke = spans.iter().find(|s| s.name == "invoke filter");
    assert_eq!(
        receive.map(|s| s.parent_span_id.clone()),
        Some(device.span_id.to_vec())
    );
    assert_eq!(
        invoke.map(|s| s.parent_span_id.clone()),
        receive.map(|s| s.span_id.clone())
    );
    assert_eq!(
        invoke.and_then(|s| s.status.clone()).map(|s| s.message),
        Some("trapped".to_owned())
    );
    assert_eq!(tracer.stats().exported.load(Ordering::Relaxed), 2);
    Ok(())
}

#[tokio::test]
async fn an_unsampled_trace_records_nothing_but_its_context_travels_on() -> anyhow::Result<()> {
    let (url, got) = collector(200).await?;
    let tracer = Tracer::start(config(&url, 0.0, 64), client()?);
    let root = tracer.start_span("receive", Kind::Server, None);
    assert!(!root.context().sampled);
    let child = root.child("invoke", Kind::Internal);
    assert_eq!(child.context().trace_id, root.context().trace_id);
    // A device's sampled flag wins over the node's own ratio.
    let device = SpanContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    let followed = tracer.start_span("receive", Kind::Server, device.map(|d| (d, None)));
    assert!(followed.context().sampled);
    drop((root, child, followed));
    tracer.flush(Duration::from_secs(5)).await;
    assert_eq!(spans(&got).len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_collector_that_is_down_or_refuses_costs_spans_never_a_wait() -> anyhow::Result<()> {
    // Nothing listens here.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let tracer = Tracer::start(
        config(&format!("http://127.0.0.1:{port}/v1/traces"), 1.0, 8),
        client()?,
    );
    // 1000 spans into a queue of 8 with no collector: each is queued or
    // dropped at once (try_send), none waits.
    for _ in 0..1000 {
        drop(tracer.start_span("receive", Kind::Server, None));
    }
    tracer.flush(Duration::from_secs(5)).await;
    let stats = tracer.stats();
    let dropped = stats.dropped_queue_full.load(Ordering::Relaxed)
        + stats.dropped_export_failed.load(Ordering::Relaxed);
    assert_eq!(dropped, 1000);
    assert!(stats.dropped_queue_full.load(Ordering::Relaxed) >= 900);
    assert!(stats.export_failures.load(Ordering::Relaxed) >= 1);

    let (url, got) = collector(503).await?;
    let tracer = Tracer::start(config(&url, 1.0, 64), client()?);
    drop(tracer.start_span("receive", Kind::Server, None));
    tracer.flush(Duration::from_secs(5)).await;
    assert_eq!(spans(&got).len(), 1, "the collector got it, and refused it");
    assert_eq!(
        tracer.stats().dropped_export_failed.load(Ordering::Relaxed),
        1
    );
    assert_eq!(tracer.stats().exported.load(Ordering::Relaxed), 0);
    Ok(())
}

/// What opentelemetry-proto's types make of `s`: the reference the direct
/// encoding is checked against.
fn reference(s: &SpanData) -> opentelemetry_proto::tonic::trace::v1::Span {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::trace::v1::{Span, Status, span, status};
    let value = |v: &Value| match v {
        Value::Str(s) => any_value::Value::StringValue(s.to_string()),
        Value::Shared(s) => any_value::Value::StringValue(s.to_string()),
        Value::Int(n) => any_value::Value::IntValue(*n),
        Value::Bool(b) => any_value::Value::BoolValue(*b),
    };
    let kind = match s.kind {
        Kind::Internal => span::SpanKind::Internal,
        Kind::Server => span::SpanKind::Server,
        Kind::Client => span::SpanKind::Client,
        Kind::Producer => span::SpanKind::Producer,
        Kind::Consumer => span::SpanKind::Consumer,
    };
    let code = if s.error.is_some() {
        status::StatusCode::Error
    } else {
        status::StatusCode::Ok
    };
    Span {
        trace_id: s.context.trace_id.to_vec(),
        span_id: s.context.span_id.to_vec(),
        trace_state: s.state.clone().unwrap_or_default(),
        parent_span_id: s.parent.map(|p| p.to_vec()).unwrap_or_default(),
        flags: u32::from(s.context.sampled),
        name: s.name.render(),
        kind: kind as i32,
        start_time_unix_nano: s.start_ns,
        end_time_unix_nano: s.end_ns,
        attributes: s
            .attributes
            .iter()
            .map(|(k, v)| KeyValue {
                key: (*k).to_owned(),
                value: Some(AnyValue {
                    value: Some(value(v)),
                }),
                ..KeyValue::default()
            })
            .collect(),
        status: Some(Status {
            message: s.error.clone().unwrap_or_default(),
            code: code as i32,
        }),
        ..Span::default()
    }
}

#[test]
fn the_direct_encoding_decodes_as_the_otlp_types_would_write_it() -> anyhow::Result<()> {
    use opentelemetry_proto::tonic::resource::v1::Resource;
    let span = |name: Name, kind, parent, state: Option<&str>, error: Option<&str>| {
        let mut attributes = Attributes::default();
        attributes.push("brink.function", Value::Shared(Arc::from("filter")));
        attributes.push("messaging.mqtt.qos", Value::Int(1));
        attributes.push("big", Value::Int(i64::MAX));
        attributes.push("negative", Value::Int(-3));
        attributes.push("warm", Value::Bool(true));
        attributes.push("empty", Value::from(String::new()));
        attributes.push("long", Value::from("é".repeat(300)));
        SpanData {
            context: SpanContext {
                trace_id: context::trace_id(),
                span_id: context::span_id(),
                sampled: true,
            },
            parent,
            state: state.map(str::to_owned),
            name,
            kind,
            start_ns: 1_700_000_000_000_000_000,
            end_ns: u64::MAX,
            attributes,
            error: error.map(str::to_owned),
        }
    };
    let spans = [
        span("receive".into(), Kind::Consumer, None, None, None),
        span(
            Name::Of("invoke", Arc::from("filter")),
            Kind::Internal,
            Some(context::span_id()),
            Some("k=v"),
            Some("trapped: wasm `unreachable`"),
        ),
        span("x".into(), Kind::Server, None, Some(""), Some("")),
        span("p".into(), Kind::Producer, None, None, None),
        span("c".into(), Kind::Client, None, None, None),
    ];
    let resource = Resource {
        attributes: vec![],
        ..Resource::default()
    };
    let mut scratch = vec![9; 40];
    let envelope = wire::Envelope::new(&resource);
    for _ in 0..2 {
        let body = envelope.encode(spans.iter(), &mut scratch);
        let request = ExportTraceServiceRequest::decode(body.as_slice())?;
        let scope = &request.resource_spans[0].scope_spans[0];
        assert_eq!(scope.scope.as_ref().map(|s| s.name.as_str()), Some("brink"));
        let want: Vec<_> = spans.iter().map(reference).collect();
        assert_eq!(scope.spans, want);
    }
    let empty = envelope.encode([].iter(), &mut scratch);
    let request = ExportTraceServiceRequest::decode(empty.as_slice())?;
    assert!(request.resource_spans[0].scope_spans[0].spans.is_empty());
    Ok(())
}
