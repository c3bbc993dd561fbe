//! The exporter task: takes spans off the queue in batches and posts each
//! batch to the collector as OTLP/HTTP protobuf. A failed post drops its
//! batch (counted) and waits an interval before the next, so a collector
//! that is down costs one refused connection per interval, and the queue's
//! bound, not this task, decides what is kept meanwhile.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{Kind, SpanData, Stats, TelemetryConfig, Value};

/// Spans per post: OTLP collectors take 4 MiB by default; 512 spans of a
/// few hundred bytes each stay far below it.
const MAX_BATCH: usize = 512;
/// How long a post may take before its batch counts as failed.
const POST_TIMEOUT: Duration = Duration::from_secs(5);

type Inputs = (
    mpsc::Receiver<SpanData>,
    mpsc::Receiver<oneshot::Sender<()>>,
);

pub(super) async fn run(
    config: TelemetryConfig,
    client: reqwest::Client,
    (mut spans, mut flushes): Inputs,
    stats: Arc<Stats>,
) {
    let exporter = Exporter {
        resource: resource(&config),
        url: config.traces_url,
        client,
        stats,
    };
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut next_post = Instant::now();
    loop {
        let deadline = Instant::now() + config.export_interval;
        let mut closed = false;
        let mut flush = None;
        while batch.len() < MAX_BATCH {
            let room = MAX_BATCH - batch.len();
            tokio::select! {
                biased;
                Some(done) = flushes.recv() => {
                    flush = Some(done);
                    break;
                }
                n = spans.recv_many(&mut batch, room) => {
                    if n == 0 {
                        closed = true;
                        break;
                    }
                }
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        if let Some(done) = flush {
            // Everything queued before the flush, then the answer.
            while let Ok(span) = spans.try_recv() {
                batch.push(span);
                if batch.len() == MAX_BATCH {
                    exporter.post(&mut batch).await;
                }
            }
            exporter.post(&mut batch).await;
            let _ = done.send(());
            continue;
        }
        if batch.is_empty() {
            if closed {
                return;
            }
            continue;
        }
        // After a failure, wait an interval before trying again.
        tokio::time::sleep_until(next_post).await;
        if !exporter.post(&mut batch).await {
            next_post = Instant::now() + config.export_interval;
        }
        if closed {
            exporter.post(&mut batch).await;
            return;
        }
    }
}

struct Exporter {
    resource: Resource,
    url: String,
    client: reqwest::Client,
    stats: Arc<Stats>,
}

impl Exporter {
    /// Posts and empties `batch`; true when the collector took it.
    async fn post(&self, batch: &mut Vec<SpanData>) -> bool {
        if batch.is_empty() {
            return true;
        }
        let count = batch.len() as u64;
        let body = encode(&self.resource, batch.drain(..));
        let sent = self
            .client
            .post(&self.url)
            .header("content-type", "application/x-protobuf")
            .timeout(POST_TIMEOUT)
            .body(body)
            .send()
            .await;
        let failure = match sent {
            Ok(response) if response.status().is_success() => None,
            Ok(response) => Some(format!("the collector answered {}", response.status())),
            Err(e) => Some(e.to_string()),
        };
        match failure {
            None => {
                self.stats.exported.fetch_add(count, Ordering::Relaxed);
                true
            }
            Some(why) => {
                let failures = self.stats.export_failures.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .dropped_export_failed
                    .fetch_add(count, Ordering::Relaxed);
                // The first failure and every hundredth: a collector that is
                // down must not flood the log either.
                if failures.is_multiple_of(100) {
                    tracing::warn!(url = %self.url, spans = count, "OTLP export failed; spans dropped: {why}");
                }
                false
            }
        }
    }
}

fn resource(config: &TelemetryConfig) -> Resource {
    Resource {
        attributes: config
            .resource
            .iter()
            .map(|(k, v)| key_value(k, &Value::from(v.clone())))
            .collect(),
        ..Resource::default()
    }
}

fn key_value(key: &str, value: &Value) -> KeyValue {
    let value = match value {
        Value::Str(s) => any_value::Value::StringValue(s.to_string()),
        Value::Int(n) => any_value::Value::IntValue(*n),
        Value::Bool(b) => any_value::Value::BoolValue(*b),
    };
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

/// One `ExportTraceServiceRequest` with `spans`, as protobuf.
pub fn encode(resource: &Resource, spans: impl Iterator<Item = SpanData>) -> Vec<u8> {
    let spans = spans.map(to_proto).collect();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "brink".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..InstrumentationScope::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    request.encode_to_vec()
}

fn to_proto(s: SpanData) -> Span {
    let kind = match s.kind {
        Kind::Internal => span::SpanKind::Internal,
        Kind::Server => span::SpanKind::Server,
        Kind::Client => span::SpanKind::Client,
        Kind::Producer => span::SpanKind::Producer,
        Kind::Consumer => span::SpanKind::Consumer,
    };
    let status = match s.error {
        Some(message) => Status {
            message,
            code: status::StatusCode::Error as i32,
        },
        None => Status {
            message: String::new(),
            code: status::StatusCode::Ok as i32,
        },
    };
    Span {
        trace_id: s.context.trace_id.to_vec(),
        span_id: s.context.span_id.to_vec(),
        trace_state: s.state.unwrap_or_default(),
        parent_span_id: s.parent.map(|p| p.to_vec()).unwrap_or_default(),
        flags: u32::from(s.context.sampled),
        name: s.name.into_owned(),
        kind: kind as i32,
        start_time_unix_nano: s.start_ns,
        end_time_unix_nano: s.end_ns,
        attributes: s.attributes.iter().map(|(k, v)| key_value(k, v)).collect(),
        status: Some(status),
        ..Span::default()
    }
}
