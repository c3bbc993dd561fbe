//! Traces of every event, exported over OTLP (`[telemetry] otlp`).
//!
//! One span per step: the trigger's receive (MQTT topic and QoS, or HTTP
//! route), the dispatch, each invocation (function, version, tenant,
//! outcome, fresh or warm instance), each output (MQTT publish, webhook,
//! outbox store), and the forwarder's delivery upstream. A device's trace
//! is continued from the event's `traceparent`, and every event the node
//! sends on carries the current context, so a trace runs device → edge →
//! cloud, across an outage too: the outbox keeps the context with the event.
//!
//! Spans go into a bounded queue with `try_send`: a slow or absent
//! collector drops spans (counted), never events, and never holds one up.
//! Switched off, the node makes no spans at all: each step checks one
//! `Option`. ADR 0013 says why the node keeps its own small tracer rather
//! than the OpenTelemetry SDK.

pub mod context;
mod export;
mod wire;

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};

pub use context::SpanContext;

use crate::bindings::CloudEvent;

/// OpenTelemetry's span kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

/// A span's name: a fixed word, or a word and what it acts on
/// (`dispatch` + `filter`), joined only when the span is exported, so making
/// a span formats nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum Name {
    Static(&'static str),
    Of(&'static str, Arc<str>),
}

impl Name {
    pub fn render(&self) -> String {
        match self {
            Self::Static(s) => (*s).to_owned(),
            Self::Of(verb, what) => format!("{verb} {what}"),
        }
    }
}

impl From<&'static str> for Name {
    fn from(s: &'static str) -> Self {
        Self::Static(s)
    }
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(Cow<'static, str>),
    /// Shared with the function's other spans: no copy per span.
    Shared(Arc<str>),
    Int(i64),
    Bool(bool),
}

impl From<Arc<str>> for Value {
    fn from(s: Arc<str>) -> Self {
        Self::Shared(s)
    }
}

impl From<&Arc<str>> for Value {
    fn from(s: &Arc<str>) -> Self {
        Self::Shared(s.clone())
    }
}

impl From<&'static str> for Value {
    fn from(s: &'static str) -> Self {
        Self::Str(Cow::Borrowed(s))
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Self::Str(Cow::Owned(s))
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Self::Int(n)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Self::Bool(b)
    }
}

/// The most attributes a span keeps; the node's spans have up to eight.
const MAX_ATTRIBUTES: usize = 8;

/// A span's attributes, kept inline: one allocation fewer per span than a
/// `Vec`, and spans are made for every step of every event.
#[derive(Debug, Clone)]
pub struct Attributes {
    items: [(&'static str, Value); MAX_ATTRIBUTES],
    len: usize,
}

impl Default for Attributes {
    fn default() -> Self {
        Self {
            items: [const { ("", Value::Int(0)) }; MAX_ATTRIBUTES],
            len: 0,
        }
    }
}

impl Attributes {
    /// Adds one; past [`MAX_ATTRIBUTES`] it is left out.
    pub fn push(&mut self, key: &'static str, value: Value) {
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = (key, value);
            self.len += 1;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &(&'static str, Value)> {
        self.items.iter().take(self.len)
    }
}

/// A finished span, as the exporter sends it.
#[derive(Debug, Clone)]
pub struct SpanData {
    pub context: SpanContext,
    pub parent: Option<[u8; 8]>,
    pub state: Option<String>,
    pub name: Name,
    pub kind: Kind,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attributes: Attributes,
    /// Set when the step failed: the status message.
    pub error: Option<String>,
}

/// How the tracer runs (`[telemetry]`).
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// The collector's `/v1/traces` URL.
    pub traces_url: String,
    /// The share of new traces recorded, 0 to 1.
    pub sample_ratio: f64,
    pub max_queue_spans: usize,
    pub export_interval: Duration,
    /// The resource's attributes: `service.name`, `host.name`, …
    pub resource: Vec<(String, String)>,
    /// Sent with every post (`[telemetry] headers`).
    pub headers: Vec<(String, String)>,
}

/// What the exporter did, for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    pub exported: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_export_failed: AtomicU64,
    pub export_failures: AtomicU64,
}

/// Makes spans and queues them for export. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Tracer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    queue: mpsc::Sender<Box<SpanData>>,
    flush: mpsc::Sender<oneshot::Sender<()>>,
    /// Spans queued and not yet taken; the sender that makes it a full
    /// batch rings `batch_full`.
    waiting: Arc<AtomicUsize>,
    batch_full: Arc<tokio::sync::Notify>,
    /// A new trace is recorded when its id's low 64 bits fall below this.
    sample_below: u64,
    stats: Arc<Stats>,
}

/// The HTTP client spans are posted with: TLS to the system's roots, for
/// an https:// collector.
pub fn client() -> anyhow::Result<reqwest::Client> {
    crate::node::tls::install_default_provider();
    let tls = crate::node::tls::client_config(&crate::node::tls::TlsFiles::default())?;
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(Arc::unwrap_or_clone(tls))
        .build()?)
}

impl Tracer {
    /// Starts the exporter task on the current runtime.
    pub fn start(config: TelemetryConfig, client: reqwest::Client) -> Self {
        let (queue, spans) = mpsc::channel(config.max_queue_spans);
        let (flush, flushes) = mpsc::channel(1);
        let waiting = Arc::new(AtomicUsize::new(0));
        let batch_full = Arc::new(tokio::sync::Notify::new());
        let stats = Arc::new(Stats::default());
        let ratio = config.sample_ratio.clamp(0.0, 1.0);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let sample_below = if ratio >= 1.0 {
            u64::MAX
        } else {
            (ratio * u64::MAX as f64) as u64
        };
        let inputs = export::Inputs {
            spans,
            flushes,
            waiting: waiting.clone(),
            batch_full: batch_full.clone(),
        };
        tokio::spawn(export::run(config, client, inputs, stats.clone()));
        Self {
            inner: Arc::new(Inner {
                queue,
                flush,
                waiting,
                batch_full,
                sample_below,
                stats,
            }),
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// A span under `parent` (a device's or an upstream step's context),
    /// or the root of a new trace.
    pub fn start_span(
        &self,
        name: impl Into<Name>,
        kind: Kind,
        parent: Option<(SpanContext, Option<String>)>,
    ) -> Span {
        let (trace_id, parent_id, sampled, state) = match parent {
            Some((p, state)) => (p.trace_id, Some(p.span_id), p.sampled, state),
            None => {
                let id = context::trace_id();
                let low = u64::from_be_bytes([
                    id[8], id[9], id[10], id[11], id[12], id[13], id[14], id[15],
                ]);
                let sampled = self.inner.sample_below == u64::MAX || low < self.inner.sample_below;
                (id, None, sampled, None)
            }
        };
        let context = SpanContext {
            trace_id,
            span_id: context::span_id(),
            sampled,
        };
        let record = sampled.then(|| {
            Box::new(SpanData {
                context,
                parent: parent_id,
                state: state.clone(),
                name: name.into(),
                kind,
                start_ns: now_ns(),
                end_ns: 0,
                attributes: Attributes::default(),
                error: None,
            })
        });
        Span {
            context,
            state,
            record,
            tracer: self.clone(),
        }
    }

    /// A span whose parent is the context `event` carries.
    pub fn span_for(&self, name: impl Into<Name>, kind: Kind, event: &CloudEvent) -> Span {
        self.start_span(name, kind, context::of_event(event))
    }

    /// Sends every span queued so far, waiting at most `limit`.
    pub async fn flush(&self, limit: Duration) {
        let (done, wait) = oneshot::channel();
        if self.inner.flush.send(done).await.is_ok() {
            let _ = tokio::time::timeout(limit, wait).await;
        }
    }

    fn finish(&self, span: Box<SpanData>) {
        let inner = &self.inner;
        if inner.queue.try_send(span).is_err() {
            inner
                .stats
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        if inner.waiting.fetch_add(1, Ordering::Relaxed) + 1 == export::MAX_BATCH {
            inner.batch_full.notify_one();
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// One step of an event's trace; ends (and is queued) when dropped, so a
/// step cut short by an error or a cancelled future still reports.
#[derive(Debug)]
pub struct Span {
    context: SpanContext,
    state: Option<String>,
    /// `None` when the trace is not sampled: the context still travels on.
    /// Boxed: a span is held across awaits, and every byte of it would be
    /// copied with the futures that hold it.
    record: Option<Box<SpanData>>,
    tracer: Tracer,
}

impl Span {
    pub fn context(&self) -> SpanContext {
        self.context
    }

    /// The context and `tracestate`, to start spans under this one later.
    pub fn parent(&self) -> (SpanContext, Option<String>) {
        (self.context, self.state.clone())
    }

    /// Puts this span's context on `event`, for the next step downstream.
    pub fn stamp(&self, event: &mut CloudEvent) {
        context::stamp(event, &self.context, self.state.as_deref());
    }

    /// A span under this one.
    pub fn child(&self, name: impl Into<Name>, kind: Kind) -> Span {
        self.tracer
            .start_span(name, kind, Some((self.context, self.state.clone())))
    }

    pub fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        if let Some(record) = &mut self.record {
            record.attributes.push(key, value.into());
        }
    }

    /// Marks the step failed, with why.
    pub fn fail(&mut self, message: impl std::fmt::Display) {
        if let Some(record) = &mut self.record {
            record.error = Some(message.to_string());
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some(mut record) = self.record.take() {
            record.end_ns = now_ns();
            self.tracer.finish(record);
        }
    }
}

/// The metrics hook: what the exporter sent and dropped.
pub fn meters(
    registry: &mut prometheus_client::registry::Registry,
    tracer: Tracer,
) -> Box<dyn crate::capability::Meters> {
    use prometheus_client::metrics::counter::Counter;
    let counter = |registry: &mut prometheus_client::registry::Registry, name: &str, help: &str| {
        let c = Counter::<u64>::default();
        registry.register(name, help, c.clone());
        c
    };
    Box::new(TracerMeters {
        exported: counter(
            registry,
            "otlp_spans_exported",
            "Spans the OTLP collector accepted",
        ),
        dropped_full: counter(
            registry,
            "otlp_spans_dropped_queue_full",
            "Spans dropped because the export queue was full (the collector is slow or down)",
        ),
        dropped_failed: counter(
            registry,
            "otlp_spans_dropped_export_failed",
            "Spans in batches the collector refused or never answered",
        ),
        failures: counter(
            registry,
            "otlp_export_failures",
            "Posts to the OTLP collector that failed",
        ),
        tracer,
    })
}

#[derive(Debug)]
struct TracerMeters {
    tracer: Tracer,
    exported: prometheus_client::metrics::counter::Counter,
    dropped_full: prometheus_client::metrics::counter::Counter,
    dropped_failed: prometheus_client::metrics::counter::Counter,
    failures: prometheus_client::metrics::counter::Counter,
}

impl crate::capability::Meters for TracerMeters {
    fn collect(&self) {
        let stats = self.tracer.stats();
        for (counter, total) in [
            (&self.exported, &stats.exported),
            (&self.dropped_full, &stats.dropped_queue_full),
            (&self.dropped_failed, &stats.dropped_export_failed),
            (&self.failures, &stats.export_failures),
        ] {
            let total = total.load(Ordering::Relaxed);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }
}

#[cfg(test)]
mod tests;
