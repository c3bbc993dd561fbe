//! The exporter task: takes spans off the queue in batches and posts each
//! batch to the collector as OTLP/HTTP protobuf. A failed post drops its
//! batch (counted) and waits an interval before the next, so a collector
//! that is down costs one refused connection per interval, and the queue's
//! bound, not this task, decides what is kept meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};
use prost::Message as _;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use super::{Kind, SpanData, Stats, TelemetryConfig, Value};

/// Spans per post: OTLP collectors take 4 MiB by default; 2048 spans of a
/// few hundred bytes each stay far below it.
pub(super) const MAX_BATCH: usize = 2048;
/// How long a post may take before its batch counts as failed.
const POST_TIMEOUT: Duration = Duration::from_secs(5);

/// What the tracer and the exporter share: the span queue, flush requests,
/// and how many spans wait, with the bell a sender rings when a batch is full.
pub(super) struct Inputs {
    pub(super) spans: mpsc::Receiver<Box<SpanData>>,
    pub(super) flushes: mpsc::Receiver<oneshot::Sender<()>>,
    pub(super) waiting: Arc<AtomicUsize>,
    pub(super) batch_full: Arc<Notify>,
}

/// The task never waits on the queue itself: a receiver parked on it would
/// be woken by every span (a wake-up per span, across threads, was most of
/// what tracing cost). It sleeps until the interval ends or a batch is full,
/// then takes what is queued.
pub(super) async fn run(
    config: TelemetryConfig,
    client: reqwest::Client,
    mut inputs: Inputs,
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
        let flush = tokio::select! {
            biased;
            done = inputs.flushes.recv() => done,
            () = inputs.batch_full.notified() => None,
            () = tokio::time::sleep(config.export_interval) => None,
        };
        let mut closed = false;
        loop {
            let taken = take(&mut inputs, &mut batch, &mut closed);
            if batch.is_empty() {
                break;
            }
            if flush.is_none() {
                // After a failure, wait an interval before trying again.
                tokio::time::sleep_until(next_post).await;
            }
            if !exporter.post(&mut batch).await {
                next_post = Instant::now() + config.export_interval;
            }
            // A flush sends everything queued; otherwise one batch a turn.
            if flush.is_none() || taken < MAX_BATCH {
                break;
            }
        }
        if let Some(done) = flush {
            let _ = done.send(());
        }
        if closed {
            return;
        }
    }
}

/// Moves up to a batch of queued spans into `batch`; how many.
fn take(inputs: &mut Inputs, batch: &mut Vec<Box<SpanData>>, closed: &mut bool) -> usize {
    let mut taken = 0;
    while batch.len() < MAX_BATCH {
        match inputs.spans.try_recv() {
            Ok(span) => {
                batch.push(span);
                taken += 1;
            }
            Err(mpsc::error::TryRecvError::Empty) => break,
            Err(mpsc::error::TryRecvError::Disconnected) => {
                *closed = true;
                break;
            }
        }
    }
    inputs.waiting.fetch_sub(taken, Ordering::Relaxed);
    taken
}

struct Exporter {
    resource: Resource,
    url: String,
    client: reqwest::Client,
    stats: Arc<Stats>,
}

impl Exporter {
    /// Posts and empties `batch`; true when the collector took it.
    async fn post(&self, batch: &mut Vec<Box<SpanData>>) -> bool {
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
        Value::Shared(s) => any_value::Value::StringValue(s.to_string()),
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
pub fn encode(resource: &Resource, spans: impl Iterator<Item = Box<SpanData>>) -> Vec<u8> {
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

fn to_proto(s: Box<SpanData>) -> Span {
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
        name: s.name.render(),
        kind: kind as i32,
        start_time_unix_nano: s.start_ns,
        end_time_unix_nano: s.end_ns,
        attributes: s.attributes.iter().map(|(k, v)| key_value(k, v)).collect(),
        status: Some(status),
        ..Span::default()
    }
}
