//! The exporter task: takes spans off the queue in batches and posts each
//! batch to the collector as OTLP/HTTP protobuf. A failed post drops its
//! batch (counted) and waits an interval before the next, so a collector
//! that is down costs one refused connection per interval, and the queue's
//! bound, not this task, decides what is kept meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use super::wire::Envelope;
use super::{SpanData, Stats, TelemetryConfig};

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
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in &config.headers {
        // Checked when the manifest was read.
        if let (Ok(name), Ok(value)) = (
            reqwest::header::HeaderName::from_bytes(name.as_bytes()),
            reqwest::header::HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    let mut exporter = Exporter {
        headers,
        envelope: Envelope::new(&resource(&config)),
        scratch: Vec::new(),
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

/// Moves up to a batch of queued spans into `batch`; how many. The spans
/// stay in the boxes they were queued in: unboxing would copy each.
#[allow(clippy::vec_box)]
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
    headers: reqwest::header::HeaderMap,
    envelope: Envelope,
    /// The spans' encoding, kept between posts.
    scratch: Vec<u8>,
    url: String,
    client: reqwest::Client,
    stats: Arc<Stats>,
}

impl Exporter {
    /// Posts and empties `batch`; true when the collector took it.
    #[allow(clippy::vec_box)]
    async fn post(&mut self, batch: &mut Vec<Box<SpanData>>) -> bool {
        if batch.is_empty() {
            return true;
        }
        let count = batch.len() as u64;
        let body = self
            .envelope
            .encode(batch.iter().map(|s| &**s), &mut self.scratch);
        batch.clear();
        let sent = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
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
            .map(|(k, v)| KeyValue {
                key: k.clone(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(v.clone())),
                }),
                ..KeyValue::default()
            })
            .collect(),
        ..Resource::default()
    }
}
