//! The forwarder: one task per uplink drains its queue to the uplink,
//! in batches, and removes events only once the uplink acknowledged them.
//! While the uplink is down it backs off (exponentially, with jitter) and
//! keeps everything.
//!
//! An uplink that answers but fails one event again and again (a 5xx for a
//! payload that crashes it) would hold the queue for ever, like a refusal
//! did: after `BISECT_AFTER` 5xx answers a batch is halved until the event
//! is alone, and after `PROBE_AFTER` for one event the next event is sent
//! alone. If the uplink takes that one and fails the first once more, the
//! first is parked (if it takes the first after all, the two arrived
//! swapped); if it fails both, the uplink is failing, not the event, and
//! everything waits as for an outage.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::bindings::CloudEvent;
use crate::event::ExtTypes;
use crate::manifest::topic::render as render_topic;
use crate::manifest::{MqttSection, UplinkSection};
use crate::node::mqtt::{self, Publisher};
use crate::node::tls;
use crate::outbox::{Entry, Outbox, QueueStats};

/// 5xx answers to a batch before it is bisected (while bisecting, one).
const BISECT_AFTER: u32 = 3;
/// 5xx answers to one event before the event after it is tried alone.
const PROBE_AFTER: u32 = 3;

/// A 5xx: the endpoint is up, and failed this request.
#[derive(Debug, thiserror::Error)]
#[error("the endpoint answered {0}")]
struct ServerError(http::StatusCode);

/// An event the uplink keeps failing while it answers.
#[derive(Debug, Default)]
struct Suspect {
    /// 5xx answers in a row to the batch at the head.
    failures: u32,
    /// While a batch is bisected: its last event's seq. Batches are whole
    /// again past it.
    until: Option<u64>,
}

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
    /// The largest event (CloudEvents JSON, in bytes) the uplink takes;
    /// larger ones are parked before sending (`max_event_kb`).
    pub max_event_bytes: Option<usize>,
    /// The node's id (`[node] id`), put on every event sent upstream as the
    /// `brinknode` extension, so the cloud knows which node forwarded it.
    pub node: Option<std::sync::Arc<str>>,
}

/// The extension that names the node an event came through.
pub const NODE_EXTENSION: &str = "brinknode";

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            max_batch: 100,
            max_delay: Duration::from_millis(50),
            min_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            max_event_bytes: None,
            node: None,
        }
    }
}

impl ForwardConfig {
    /// `[uplink.<name>]`'s batching, defaults filling what is unset.
    pub fn from_section(section: &crate::manifest::UplinkSection) -> Self {
        let defaults = Self::default();
        Self {
            max_batch: section.max_batch.unwrap_or(defaults.max_batch),
            max_delay: section
                .max_delay_ms
                .map_or(defaults.max_delay, Duration::from_millis),
            max_event_bytes: section
                .max_event_kb
                .map(|kb| usize::try_from(kb.saturating_mul(1024)).unwrap_or(usize::MAX)),
            ..defaults
        }
    }
}

/// Why a delivery stopped.
#[derive(Debug)]
pub struct Failure {
    /// The batch's first `delivered` events were acknowledged.
    pub delivered: usize,
    pub error: anyhow::Error,
    /// Whether the failure belongs to event `delivered` alone (not to a
    /// whole batch sent as one request).
    pub pinpointed: bool,
}

impl Failure {
    fn new(delivered: usize, error: anyhow::Error, pinpointed: bool) -> Self {
        Self {
            delivered,
            error,
            pinpointed,
        }
    }
}

/// An uplink's MQTT connection: how to stop it, and its task.
pub type Connection = (watch::Sender<bool>, JoinHandle<()>);

impl Target {
    /// Where `[uplink.<name>]` forwards to, with its own MQTT connection
    /// when it is an MQTT uplink (paths relative to `base`).
    pub fn for_uplink(
        name: &str,
        u: &UplinkSection,
        base: &Path,
        data_dir: &Path,
    ) -> anyhow::Result<(Self, Option<Connection>)> {
        match (&u.mqtt, &u.http) {
            (Some(url), _) => {
                let (target, connection) = Self::mqtt(name, url, u, base, data_dir)?;
                Ok((target, Some(connection)))
            }
            (None, Some(url)) => Ok((Self::http(url, u, base)?, None)),
            (None, None) => bail!("uplink `{name}` has neither mqtt nor http"),
        }
    }

    fn mqtt(
        name: &str,
        url: &str,
        u: &UplinkSection,
        base: &Path,
        data_dir: &Path,
    ) -> anyhow::Result<(Self, Connection)> {
        let section = MqttSection {
            url: Some(url.to_owned()),
            protocol: u.protocol,
            output_mode: u.output_mode,
            client_id: u.client_id.clone(),
            username: u.username.clone(),
            password: u.password.clone(),
            ca_file: u.ca_file.clone(),
            client_cert: u.client_cert.clone(),
            client_key: u.client_key.clone(),
            ..MqttSection::default()
        };
        let mut settings = mqtt::Settings::from_section(&section, base)
            .with_context(|| format!("uplink `{name}`"))?;
        // The node's own id, not the app's name: a fleet of nodes running
        // one app must not take over each other's connection.
        if u.client_id.is_none() {
            settings.client_id = format!("{}-{name}", mqtt::node_client_id(data_dir)?);
        }
        let (publisher, stop, task) = mqtt::background_publisher(&settings, "");
        let topic = u
            .topic
            .clone()
            .unwrap_or_else(|| "brink/outbox/{type}".to_owned());
        Ok((Target::Mqtt { publisher, topic }, (stop, task)))
    }

    fn http(url: &str, u: &UplinkSection, base: &Path) -> anyhow::Result<Self> {
        let tls = if url.starts_with("https://") {
            let ca = u.ca_file.as_ref().map(|p| base.join(p));
            tls::client_config(&tls::TlsFiles {
                ca_file: ca.as_deref().map(|p| (p, "uplink.ca_file")),
                ..tls::TlsFiles::default()
            })?
        } else {
            tls::no_roots()?
        };
        Ok(Target::Http {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .tls_backend_preconfigured(std::sync::Arc::unwrap_or_clone(tls))
                .build()
                .context("creating the uplink's HTTP client")?,
            url: url.to_owned(),
            token: u.token.clone(),
            batched: u.batched,
        })
    }

    async fn deliver(&self, events: &[(CloudEvent, ExtTypes)]) -> Result<(), Failure> {
        match self {
            Target::Mqtt { publisher, topic } => {
                if !publisher.is_connected() {
                    return Err(Failure::new(
                        0,
                        anyhow::anyhow!("not connected to the broker"),
                        false,
                    ));
                }
                // Each event is checked before any is sent: one the broker
                // would refuse ends the run of publishes just before it.
                let mut messages = Vec::with_capacity(events.len());
                let mut refused = None;
                for (i, (event, types)) in events.iter().enumerate() {
                    let prepared = render_topic(topic, event)
                        .map_err(|e| crate::delivery::refused(format!("{e:#}")))
                        .and_then(|t| Ok((publisher.prepare(&t, event, types)?, t)));
                    match prepared {
                        Ok((message, topic)) => messages.push((topic, message)),
                        Err(e) => {
                            refused = Some(Failure::new(i, e, true));
                            break;
                        }
                    }
                }
                publisher
                    .publish_prepared(messages)
                    .await
                    .map_err(|f| Failure::new(f.delivered, f.error, true))?;
                refused.map_or(Ok(()), Err)
            }
            Target::Http {
                client,
                url,
                token,
                batched,
            } => {
                let post = |headers, body| {
                    let mut request = client.post(url).headers(headers).body(body);
                    if let Some(token) = token {
                        request = request.bearer_auth(token);
                    }
                    send(request)
                };
                if *batched {
                    let mut headers = http::HeaderMap::new();
                    headers.insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/cloudevents-batch+json"),
                    );
                    let body = crate::event::json::write_batch(events.iter().map(|(e, t)| (e, t)))
                        .map_err(|e| crate::delivery::refused(format!("{e:#}")))
                        .map_err(|e| Failure::new(0, e, events.len() == 1))?;
                    return post(headers, body)
                        .await
                        .map_err(|e| Failure::new(0, e, events.len() == 1));
                }
                for (i, (event, _)) in events.iter().enumerate() {
                    let (headers, body) = crate::event::http::encode_binary(event)
                        .map_err(|e| crate::delivery::refused(format!("{e:#}")))
                        .map_err(|e| Failure::new(i, e, true))?;
                    post(headers, body)
                        .await
                        .map_err(|e| Failure::new(i, e, true))?;
                }
                Ok(())
            }
        }
    }
}

/// Sends one request; a 4xx other than 408 and 429 is a permanent refusal.
async fn send(request: reqwest::RequestBuilder) -> anyhow::Result<()> {
    let response = request.send().await.context("sending")?;
    let status = response.status();
    if crate::delivery::http_status_is_permanent(status) {
        let body = response.text().await.unwrap_or_default();
        let mut end = body.len().min(256);
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        return Err(crate::delivery::refused(format!(
            "the endpoint refused the event: {status} {}",
            body[..end].trim()
        )));
    }
    if status.is_server_error() {
        return Err(ServerError(status).into());
    }
    if !status.is_success() {
        bail!("the endpoint answered {status}");
    }
    Ok(())
}

/// Puts `node` on `event` as [`NODE_EXTENSION`], replacing what an earlier
/// hop put there: the cloud hears of the node that sent it.
fn name_node(event: &mut CloudEvent, node: &str) {
    match event
        .extensions
        .iter_mut()
        .find(|(name, _)| name == NODE_EXTENSION)
    {
        Some((_, value)) => node.clone_into(value),
        None => event
            .extensions
            .push((NODE_EXTENSION.to_owned(), node.to_owned())),
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
    stop: watch::Receiver<bool>,
    tracer: Option<crate::telemetry::Tracer>,
) -> anyhow::Result<JoinHandle<()>> {
    let stats = outbox.stats(&uplink)?;
    let arrivals = outbox.arrivals(&uplink)?;
    let limit = config.max_batch.max(1);
    let mut forwarder = Forwarder {
        outbox,
        uplink,
        target,
        config,
        stats,
        arrivals,
        stop,
        limit,
        backoff: Duration::ZERO,
        was_down: false,
        suspect: Suspect::default(),
        tracer,
    };
    forwarder.backoff = forwarder.config.min_backoff;
    Ok(tokio::spawn(async move { forwarder.run().await }))
}

/// One uplink's drain loop and what it remembers between batches.
struct Forwarder {
    outbox: Outbox,
    uplink: String,
    target: Target,
    config: ForwardConfig,
    stats: std::sync::Arc<QueueStats>,
    arrivals: std::sync::Arc<tokio::sync::Notify>,
    stop: watch::Receiver<bool>,
    /// Events per batch now: `max_batch`, halved while a refused batch is
    /// bisected to find the event the uplink refuses.
    limit: usize,
    backoff: Duration,
    was_down: bool,
    suspect: Suspect,
    /// A span per event sent upstream (`[telemetry]`).
    tracer: Option<crate::telemetry::Tracer>,
}

impl Forwarder {
    async fn run(&mut self) {
        loop {
            if *self.stop.borrow() {
                return;
            }
            let batch = match peek(&self.outbox, &self.uplink, self.limit).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(uplink = self.uplink, "reading the outbox failed: {e:#}");
                    Vec::new()
                }
            };
            if batch.is_empty() {
                tokio::select! {
                    _ = self.arrivals.notified() => {}
                    _ = self.stop.changed() => {}
                    // Also wakes for events another task wrote, and expiry.
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            // A small batch may wait a little for company.
            if batch.len() < self.limit && self.limit == self.config.max_batch {
                let oldest = batch.iter().map(|e| e.enqueued_ms).min().unwrap_or(0);
                let age = Duration::from_millis(now_ms().saturating_sub(oldest));
                if let Some(wait) = self
                    .config
                    .max_delay
                    .checked_sub(age)
                    .filter(|w| !w.is_zero())
                {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.stop.changed() => {}
                    }
                    continue;
                }
            }
            let Some((batch, mut events)) = self.sendable(batch).await else {
                continue;
            };
            if let Some(node) = &self.config.node {
                for (event, _) in &mut events {
                    name_node(event, node);
                }
            }
            let spans = self
                .tracer
                .as_ref()
                .map(|t| super::traced::uplink_deliver(t, &self.uplink, &mut events));
            let sent = self.target.deliver(&events).await;
            if let Some(spans) = spans {
                match &sent {
                    Ok(()) => super::traced::uplink_delivered(spans, events.len(), None),
                    Err(f) => super::traced::uplink_delivered(
                        spans,
                        f.delivered,
                        Some(&format!("{:#}", f.error)),
                    ),
                }
            }
            match sent {
                Ok(()) => self.delivered(&batch),
                Err(failure) => self.failed(&batch, failure).await,
            }
        }
    }

    /// The batch's events, less those that cannot be sent: unreadable ones
    /// are discarded, and ones over the uplink's `max_event_kb` parked.
    async fn sendable(
        &self,
        batch: Vec<Entry>,
    ) -> Option<(Vec<Entry>, Vec<(CloudEvent, ExtTypes)>)> {
        let mut events = Vec::with_capacity(batch.len());
        let mut unreadable = Vec::new();
        for entry in batch {
            if let Some(max) = self.config.max_event_bytes
                && entry.json.len() > max
            {
                let reason = format!(
                    "the event is {} bytes, over the uplink's max_event_kb ({} bytes)",
                    entry.json.len(),
                    max
                );
                self.park(&entry, &reason).await;
                continue;
            }
            match entry.typed_event() {
                Ok(event) => events.push((entry, event)),
                // Stored by us, so only a damaged store gets here; it
                // cannot be sent, and keeping it would block the queue.
                Err(e) => {
                    tracing::error!(
                        uplink = self.uplink,
                        seq = entry.seq,
                        "outbox: dropping an unreadable event: {e:#}"
                    );
                    unreadable.push(entry);
                }
            }
        }
        if let Err(e) = self.outbox.discard(&self.uplink, &unreadable) {
            tracing::error!(
                uplink = self.uplink,
                "removing unreadable events failed: {e:#}"
            );
        }
        let (batch, events): (Vec<Entry>, Vec<_>) = events.into_iter().unzip();
        (!batch.is_empty()).then_some((batch, events))
    }

    fn delivered(&mut self, batch: &[Entry]) {
        self.ack(batch);
        self.suspect.failures = 0;
        if let Some(until) = self.suspect.until
            && batch.last().is_some_and(|e| e.seq >= until)
        {
            self.suspect.until = None;
            self.limit = self.config.max_batch.max(1);
        }
        self.stats.connected.store(1, Ordering::Relaxed);
        if self.was_down {
            tracing::info!(
                uplink = self.uplink,
                "uplink is back; forwarding the backlog"
            );
            self.was_down = false;
        }
        self.backoff = self.config.min_backoff;
    }

    fn ack(&self, entries: &[Entry]) {
        if let Err(e) = self.outbox.ack(&self.uplink, entries) {
            tracing::error!(uplink = self.uplink, "removing sent events failed: {e:#}");
        }
    }

    async fn failed(&mut self, batch: &[Entry], failure: Failure) {
        let Failure {
            delivered,
            error,
            pinpointed,
        } = failure;
        self.ack(&batch[..delivered.min(batch.len())]);
        if crate::delivery::is_permanent(&error) {
            // The uplink answered: it is up, it refuses this one event.
            self.stats.connected.store(1, Ordering::Relaxed);
            let rest = batch.len().saturating_sub(delivered);
            match batch.get(delivered) {
                Some(culprit) if pinpointed || rest == 1 => {
                    self.park(culprit, &format!("{error:#}")).await;
                    self.limit = self.config.max_batch.max(1);
                }
                // A batch refused as one: halve it until the refused event
                // is alone, sending the good ones on the way.
                _ => self.limit = (rest / 2).max(1),
            }
            return;
        }
        if error.chain().any(|c| c.is::<ServerError>())
            && self.answered(batch, delivered, pinpointed).await
        {
            return;
        }
        self.stats.connected.store(0, Ordering::Relaxed);
        self.stats.retried.fetch_add(
            (batch.len() - delivered.min(batch.len())) as u64,
            Ordering::Relaxed,
        );
        if !self.was_down {
            tracing::warn!(
                uplink = self.uplink,
                backlog = self.stats.backlog_events.load(Ordering::Relaxed),
                "uplink unavailable, keeping events: {error:#}"
            );
            self.was_down = true;
        } else {
            tracing::debug!(uplink = self.uplink, "uplink still unavailable: {error:#}");
        }
        tokio::select! {
            _ = tokio::time::sleep(jittered(self.backoff)) => {}
            _ = self.stop.changed() => {}
        }
        self.backoff = (self.backoff * 2).min(self.config.max_backoff);
    }

    /// A 5xx to `batch` past its first `delivered`: halves a batch after
    /// `BISECT_AFTER` of them, and tries the next event alone after
    /// `PROBE_AFTER` for one event. Whether to go on at once, without
    /// backing off.
    async fn answered(&mut self, batch: &[Entry], delivered: usize, pinpointed: bool) -> bool {
        let rest = &batch[delivered.min(batch.len())..];
        let Some(head) = rest.first() else {
            return false;
        };
        self.suspect.failures += 1;
        // A failure pinned on one event (binary mode, MQTT) needs no bisecting.
        if rest.len() > 1 && !pinpointed {
            let bisecting = self.suspect.until.is_some();
            if self.suspect.failures < BISECT_AFTER && !bisecting {
                return false;
            }
            let last = rest.last().map_or(head.seq, |e| e.seq);
            self.suspect.until = Some(self.suspect.until.map_or(last, |u| u.max(last)));
            self.suspect.failures = 0;
            self.limit = (rest.len() / 2).max(1);
            return true;
        }
        if self.suspect.failures < PROBE_AFTER {
            return false;
        }
        self.suspect.failures = 0;
        let Ok(queued) = peek(&self.outbox, &self.uplink, 2).await else {
            return false;
        };
        let Some((next, event)) = queued
            .into_iter()
            .filter(|e| e.seq != head.seq)
            .find_map(|e| e.typed_event().ok().map(|ev| (e, ev)))
        else {
            return false;
        };
        if self
            .target
            .deliver(std::slice::from_ref(&event))
            .await
            .is_err()
        {
            // The uplink fails the next one too: it is failing, not the event.
            return false;
        }
        self.ack(std::slice::from_ref(&next));
        // Once more, in case the uplink has just recovered.
        let retried = match head.typed_event() {
            Ok(event) => self.target.deliver(std::slice::from_ref(&event)).await,
            Err(e) => Err(Failure::new(0, e, true)),
        };
        match retried {
            Ok(()) => self.ack(std::slice::from_ref(head)),
            Err(failure) => {
                let reason = format!(
                    "the uplink failed it {} times in a row and took the event after it: {:#}",
                    PROBE_AFTER + 1,
                    failure.error
                );
                self.park(head, &reason).await;
            }
        }
        self.suspect = Suspect::default();
        self.limit = self.config.max_batch.max(1);
        self.stats.connected.store(1, Ordering::Relaxed);
        true
    }

    /// Moves `entry` to the parking queue, logged once.
    async fn park(&self, entry: &Entry, reason: &str) {
        tracing::warn!(
            uplink = self.uplink,
            seq = entry.seq,
            "outbox: the uplink refuses an event for good; parked it and going on: {reason}"
        );
        if let Err(e) = self.outbox.park(&self.uplink, entry, reason).await {
            tracing::error!(uplink = self.uplink, "parking an event failed: {e:#}");
        }
    }
}

async fn peek(outbox: &Outbox, uplink: &str, max: usize) -> anyhow::Result<Vec<Entry>> {
    let (outbox, uplink) = (outbox.clone(), uplink.to_owned());
    Ok(tokio::task::spawn_blocking(move || outbox.peek(&uplink, max)).await??)
}

fn now_ms() -> u64 {
    crate::outbox::now_ms()
}
