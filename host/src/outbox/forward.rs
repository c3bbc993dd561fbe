//! The forwarder: one task per uplink drains its queue to the uplink,
//! in batches, and removes events only once the uplink acknowledged them.
//! While the uplink is down it backs off (exponentially, with jitter) and
//! keeps everything.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Entry, Outbox};
use crate::bindings::CloudEvent;
use crate::node::mqtt::{Publisher, render_topic};

/// How an uplink's events leave.
#[derive(Debug, Clone)]
pub enum Target {
    /// Publish each event with QoS 1 to the topic template; a PUBACK
    /// acknowledges it.
    Mqtt { publisher: Publisher, topic: String },
    /// POST to a CloudEvents HTTP endpoint; a 2xx acknowledges.
    Http {
        client: reqwest::Client,
        url: String,
        token: Option<String>,
        /// One `application/cloudevents-batch+json` request per batch,
        /// instead of one binary-mode request per event.
        batched: bool,
    },
}

/// Batching and retry policy of a forwarder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardConfig {
    /// Events sent together at most.
    pub max_batch: usize,
    /// How long a batch may wait to fill up.
    pub max_delay: Duration,
    /// The first retry's delay; it doubles up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            max_batch: 100,
            max_delay: Duration::from_millis(50),
            min_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl Target {
    async fn deliver(&self, events: &[CloudEvent]) -> anyhow::Result<()> {
        match self {
            Target::Mqtt { publisher, topic } => {
                if !publisher.is_connected() {
                    bail!("not connected to the broker");
                }
                let messages = events
                    .iter()
                    .map(|e| Ok((render_topic(topic, e)?, e.clone())))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                publisher.publish_all(&messages).await
            }
            Target::Http {
                client,
                url,
                token,
                batched,
            } => {
                let requests = if *batched {
                    let mut headers = http::HeaderMap::new();
                    headers.insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/cloudevents-batch+json"),
                    );
                    vec![(headers, crate::event::http::encode_batch(events)?)]
                } else {
                    events
                        .iter()
                        .map(crate::event::http::encode_binary)
                        .collect::<Result<Vec<_>, _>>()?
                };
                for (headers, body) in requests {
                    let mut request = client.post(url).headers(headers).body(body);
                    if let Some(token) = token {
                        request = request.bearer_auth(token);
                    }
                    let response = request.send().await.context("sending")?;
                    let status = response.status();
                    if !status.is_success() {
                        bail!("the endpoint answered {status}");
                    }
                }
                Ok(())
            }
        }
    }
}

/// A delay in [d/2, d], so a fleet of hosts does not retry in lockstep.
fn jittered(d: Duration) -> Duration {
    let random = uuid::Uuid::new_v4().as_u128() as u64;
    let half = d / 2;
    half + Duration::from_nanos(random % (half.as_nanos() as u64 + 1))
}

/// Starts draining `uplink`'s queue to `target`; stops when `stop` says true.
pub fn spawn(
    outbox: Outbox,
    uplink: String,
    target: Target,
    config: ForwardConfig,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    let stats = outbox.stats(&uplink)?;
    let arrivals = outbox.arrivals(&uplink)?;
    Ok(tokio::spawn(async move {
        let mut backoff = config.min_backoff;
        let mut was_down = false;
        loop {
            if *stop.borrow() {
                return;
            }
            let batch = match peek(&outbox, &uplink, config.max_batch).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(uplink, "reading the outbox failed: {e:#}");
                    Vec::new()
                }
            };
            if batch.is_empty() {
                tokio::select! {
                    _ = arrivals.notified() => {}
                    _ = stop.changed() => {}
                    // Also wakes for events another task wrote, and expiry.
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            // A small batch may wait a little for company.
            if batch.len() < config.max_batch {
                let age = Duration::from_millis(
                    now_ms().saturating_sub(batch.iter().map(|e| e.enqueued_ms).min().unwrap_or(0)),
                );
                if let Some(wait) = config.max_delay.checked_sub(age).filter(|w| !w.is_zero()) {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
            }
            let mut events = Vec::with_capacity(batch.len());
            let mut unreadable = Vec::new();
            for entry in batch {
                match entry.event() {
                    Ok(event) => events.push((entry, event)),
                    // Stored by us, so only a damaged store gets here; it
                    // cannot be sent, and keeping it would block the queue.
                    Err(e) => {
                        tracing::error!(
                            uplink,
                            seq = entry.seq,
                            "outbox: dropping an unreadable event: {e:#}"
                        );
                        unreadable.push(entry);
                    }
                }
            }
            if let Err(e) = outbox.discard(&uplink, &unreadable) {
                tracing::error!(uplink, "removing unreadable events failed: {e:#}");
            }
            let (batch, events): (Vec<Entry>, Vec<CloudEvent>) = events.into_iter().unzip();
            if batch.is_empty() {
                continue;
            }
            match target.deliver(&events).await {
                Ok(()) => {
                    if let Err(e) = outbox.ack(&uplink, &batch) {
                        tracing::error!(uplink, "removing sent events failed: {e:#}");
                    }
                    stats.connected.store(1, Ordering::Relaxed);
                    if was_down {
                        tracing::info!(uplink, "uplink is back; forwarding the backlog");
                        was_down = false;
                    }
                    backoff = config.min_backoff;
                }
                Err(e) => {
                    stats.connected.store(0, Ordering::Relaxed);
                    stats
                        .retried
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    if !was_down {
                        tracing::warn!(
                            uplink,
                            backlog = stats.backlog_events.load(Ordering::Relaxed),
                            "uplink unavailable, keeping events: {e:#}"
                        );
                        was_down = true;
                    } else {
                        tracing::debug!(uplink, "uplink still unavailable: {e:#}");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(jittered(backoff)) => {}
                        _ = stop.changed() => {}
                    }
                    backoff = (backoff * 2).min(config.max_backoff);
                }
            }
        }
    }))
}

async fn peek(outbox: &Outbox, uplink: &str, max: usize) -> anyhow::Result<Vec<Entry>> {
    let (outbox, uplink) = (outbox.clone(), uplink.to_owned());
    Ok(tokio::task::spawn_blocking(move || outbox.peek(&uplink, max)).await??)
}

fn now_ms() -> u64 {
    super::now_ms()
}
