//! The MQTT trigger and outputs.
//!
//! Two connections to one broker (the embedded rumqttd, or an external one):
//! a *subscriber* that runs functions on incoming messages and acknowledges
//! each QoS 1 message only once it is handled, and a *publisher* for outputs
//! and dead letters whose every publish waits for the broker's PUBACK. They
//! are separate so the subscriber can stop reading under load (back-pressure
//! towards the broker) while PUBACKs for outputs keep flowing.

mod broker;
pub mod client;
mod identity;

pub use broker::EmbeddedBroker;
use identity::dead_letter_stub;
pub use identity::node_client_id;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::dispatch::{Admission, Dispatcher};
use crate::bindings::CloudEvent;
use crate::event::ExtTypes;
use crate::event::mqtt::{self as binding, Carried, Message, Outgoing, OutputMode, PlainPolicy};
use crate::manifest::{MqttOutputMode, MqttProtocol, MqttSection};
use crate::tenancy::names::dead_letter_topic;
use client::{Client, ConnectOptions, EventLoop, Polled, Received};

/// How long a publish may wait for its PUBACK.
const PUBACK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the first connection may take before `brink up` gives up.
const FIRST_CONNECT: Duration = Duration::from_secs(5);
/// How long a deploy waits for the broker to grant its subscriptions.
const SUBACK_TIMEOUT: Duration = Duration::from_secs(10);

/// A deploy waiting for the broker's answer to its subscriptions.
type SyncRequest = oneshot::Sender<Result<(), String>>;

/// Asks the subscriber to follow the dispatcher's MQTT triggers after a
/// function was deployed or removed at run time.
#[derive(Debug, Clone)]
pub struct Subscriptions {
    requests: mpsc::UnboundedSender<SyncRequest>,
}

impl Subscriptions {
    /// Subscribes to filters that functions gained and unsubscribes from
    /// those no function has any more; done when the broker granted the new
    /// ones. While the broker is unreachable it returns at once: the
    /// subscriber subscribes to every filter when it connects again.
    pub async fn sync(&self) -> anyhow::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(tx)
            .map_err(|_| anyhow::anyhow!("the MQTT subscriber has stopped"))?;
        match tokio::time::timeout(SUBACK_TIMEOUT, rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(why))) => bail!("{why}"),
            Ok(Err(_)) => bail!("the MQTT subscriber stopped before the broker answered"),
            Err(_) => bail!(
                "the broker did not grant the subscription within {}s",
                SUBACK_TIMEOUT.as_secs()
            ),
        }
    }
}

/// Largest message the node accepts or sends.
const MAX_PACKET: usize = 1024 * 1024 + 64 * 1024;

/// The settings a connection needs, from `[mqtt]`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub v5: bool,
    pub client_id: String,
    pub persistent: bool,
    pub credentials: Option<(String, String)>,
    pub mode: OutputMode,
    pub shared_group: Option<String>,
    pub plain: PlainPolicy,
    pub max_retries: u32,
    /// TLS to the broker, for `mqtts://` URLs.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Settings {
    /// Resolves `[mqtt]`; the broker is `section.url`, or the embedded one.
    /// Files the section names are relative to `base` (the manifest's folder).
    pub fn from_section(section: &MqttSection, base: &std::path::Path) -> anyhow::Result<Self> {
        let v5 = section.protocol == MqttProtocol::V5;
        let mut tls = None;
        let (host, port) = match &section.url {
            Some(url) => {
                let parsed = url::Url::parse(url).with_context(|| format!("mqtt.url {url:?}"))?;
                let host = parsed
                    .host_str()
                    .with_context(|| format!("mqtt.url {url:?} names no host"))?
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned();
                let secure = parsed.scheme() == "mqtts";
                if secure {
                    let (ca, cert, key) = (
                        section.ca_file.as_ref().map(|p| base.join(p)),
                        section.client_cert.as_ref().map(|p| base.join(p)),
                        section.client_key.as_ref().map(|p| base.join(p)),
                    );
                    tls = Some(super::tls::client_config(&super::tls::TlsFiles {
                        ca_file: ca.as_deref().map(|p| (p, "mqtt.ca_file")),
                        client_cert: cert.as_deref().map(|p| (p, "mqtt.client_cert")),
                        client_key: key.as_deref().map(|p| (p, "mqtt.client_key")),
                    })?);
                }
                (
                    host,
                    parsed.port().unwrap_or(if secure { 8883 } else { 1883 }),
                )
            }
            None => {
                let addr = if v5 {
                    section.listen_v5
                } else {
                    section.listen
                };
                let host = if addr.ip().is_unspecified() {
                    "127.0.0.1".to_owned()
                } else {
                    addr.ip().to_string()
                };
                (host, addr.port())
            }
        };
        let credentials = match (&section.username, &section.password) {
            (Some(user), pass) => Some((user.clone(), pass.clone().unwrap_or_default())),
            (None, Some(_)) => bail!("mqtt.password is set without mqtt.username"),
            (None, None) => None,
        };
        Ok(Self {
            host,
            port,
            v5,
            // The subscriber keeps its broker-side session across drops and
            // restarts on both protocols, so QoS 1 messages in flight at a
            // drop, or sent while the node was away, are delivered again
            // rather than lost; [`node_client_id`] keeps the id stable.
            persistent: true,
            client_id: section.client_id.clone().unwrap_or_else(|| {
                format!("brink-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
            }),
            credentials,
            mode: match section.output_mode {
                MqttOutputMode::Binary => OutputMode::Binary,
                MqttOutputMode::Structured => OutputMode::Structured,
            },
            shared_group: section.shared_group.clone(),
            plain: PlainPolicy {
                event_type: section.plain_event_type.clone(),
            },
            max_retries: section.max_retries,
            tls,
        })
    }

    fn connect_options(&self, suffix: &str, subscriber: bool) -> ConnectOptions {
        ConnectOptions {
            host: self.host.clone(),
            port: self.port,
            v5: self.v5,
            client_id: format!("{}{suffix}", self.client_id),
            credentials: self.credentials.clone(),
            persistent: subscriber && self.persistent,
            manual_acks: subscriber,
            max_packet: MAX_PACKET,
            tls: self.tls.clone(),
        }
    }

    fn broker(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Starts the embedded broker on `section`'s addresses; its devices'
/// listeners open with [`EmbeddedBroker::open_to_devices`].
pub fn start_embedded_broker(
    section: &MqttSection,
    node_client_id: &str,
) -> anyhow::Result<EmbeddedBroker> {
    broker::start(
        section.listen,
        section.listen_v5,
        MAX_PACKET,
        node_client_id,
    )
}

type Waiter = oneshot::Sender<Result<(), client::Refusal>>;

#[derive(Default)]
struct Pending {
    /// Publishes handed to the event loop, oldest first, not yet given a packet id.
    queued: VecDeque<Waiter>,
    /// Publishes on the wire, by packet id.
    inflight: HashMap<u16, Waiter>,
}

impl Pending {
    fn fail_all(&mut self, why: &str) {
        for waiter in self
            .queued
            .drain(..)
            .chain(self.inflight.drain().map(|(_, w)| w))
        {
            let _ = waiter.send(Err(client::Refusal {
                reason: why.to_owned(),
                permanent: false,
            }));
        }
    }
}

/// Publishes events with QoS 1 and reports each one's PUBACK.
///
/// rumqttc assigns packet ids inside its event loop and reports them, in
/// request order, as `Outgoing::Publish(pkid)`; waiters queue in that same
/// order, so each id is matched to its waiter. A connection that drops is
/// replaced by a fresh client, failing every waiter of the old one (the
/// callers retry), so no id of an old connection is ever matched.
///
/// Every message is checked against MQTT's limits and the broker's maximum
/// packet size before it is handed over: one that breaks them fails alone,
/// as a permanent refusal ([`crate::delivery::refused`]), instead of
/// corrupting the stream and dropping the connection under other messages.
#[derive(Clone)]
pub struct Publisher {
    client: Arc<tokio::sync::Mutex<Client>>,
    pending: Arc<Mutex<Pending>>,
    /// Whether the connection is up (as of the event loop's last word).
    connected: Arc<std::sync::atomic::AtomicBool>,
    /// The largest packet the broker takes: ours, or less when its CONNACK says so.
    max_packet: Arc<std::sync::atomic::AtomicUsize>,
    v5: bool,
    mode: OutputMode,
}

/// Why a batch of publishes stopped: the first `delivered` were acknowledged.
#[derive(Debug)]
pub struct PublishFailure {
    pub delivered: usize,
    pub error: anyhow::Error,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("v5", &self.v5)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// A publisher that connects, and reconnects with backoff, in the
/// background, without waiting for the broker (an uplink may be down when
/// the node starts). Sending true on the returned channel stops it.
pub fn background_publisher(
    settings: &Settings,
    suffix: &str,
) -> (Publisher, watch::Sender<bool>, JoinHandle<()>) {
    let (stop, stop_rx) = watch::channel(false);
    let mut connection = Connection::new(settings, suffix, false);
    let publisher = Publisher::new(&connection, settings);
    let driver = publisher.clone();
    let task = tokio::spawn(async move {
        run_publisher(&mut connection, driver, stop_rx, None).await;
    });
    (publisher, stop, task)
}

impl Publisher {
    fn new(connection: &Connection, settings: &Settings) -> Self {
        Self {
            client: connection.client.clone(),
            pending: Arc::new(Mutex::new(Pending::default())),
            connected: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            max_packet: Arc::new(std::sync::atomic::AtomicUsize::new(MAX_PACKET)),
            v5: settings.v5,
            mode: settings.mode,
        }
    }

    /// `event` encoded for `topic`, or a permanent refusal: the encoder
    /// cannot encode it, or it breaks a limit of MQTT or of the broker.
    /// Extensions `types` names keep those JSON types in structured mode.
    pub fn prepare(
        &self,
        topic: &str,
        event: &CloudEvent,
        types: &ExtTypes,
    ) -> anyhow::Result<Outgoing> {
        let message = binding::encode(event, types, self.mode, self.v5).map_err(|e| {
            crate::delivery::refused(format!("event {:?} cannot be encoded: {e}", event.id))
        })?;
        let max_packet = self.max_packet.load(std::sync::atomic::Ordering::Relaxed);
        binding::check_limits(topic, &message, self.v5, max_packet).map_err(|why| {
            crate::delivery::refused(format!("event {:?} cannot be published: {why}", event.id))
        })?;
        Ok(message)
    }

    /// Publishes `event` to `topic` and waits for the broker's PUBACK.
    pub async fn publish(
        &self,
        topic: &str,
        event: &CloudEvent,
        types: &ExtTypes,
    ) -> anyhow::Result<()> {
        let message = self.prepare(topic, event, types)?;
        self.publish_prepared(vec![(topic.to_owned(), message)])
            .await
            .map_err(|f| f.error)
    }

    /// Publishes every (topic, message) in order on the one connection, so
    /// the broker receives them in that order, then waits for their PUBACKs.
    pub async fn publish_prepared(
        &self,
        messages: Vec<(String, Outgoing)>,
    ) -> Result<(), PublishFailure> {
        let closed = |e: anyhow::Error| PublishFailure {
            delivered: 0,
            error: e.context("the MQTT connection is closed"),
        };
        let mut waiting = Vec::with_capacity(messages.len());
        {
            let client = self.client.lock().await;
            for (topic, message) in messages {
                let (tx, rx) = oneshot::channel();
                lock(&self.pending).queued.push_back(tx);
                if let Err(e) = client.publish(&topic, message).await {
                    lock(&self.pending).queued.pop_back();
                    return Err(closed(e));
                }
                waiting.push((topic, rx));
            }
        }
        // PUBACKs come in order: when one fails, those before it succeeded.
        for (delivered, (topic, rx)) in waiting.into_iter().enumerate() {
            let error = match tokio::time::timeout(PUBACK_TIMEOUT, rx).await {
                Ok(Ok(Ok(()))) => continue,
                Ok(Ok(Err(refusal))) if refusal.permanent => {
                    crate::delivery::refused(format!("publishing to {topic:?}: {}", refusal.reason))
                }
                Ok(Ok(Err(refusal))) => {
                    anyhow::anyhow!("publishing to {topic:?}: {}", refusal.reason)
                }
                Ok(Err(_)) => {
                    anyhow::anyhow!("publishing to {topic:?}: the MQTT connection closed")
                }
                Err(_) => anyhow::anyhow!(
                    "publishing to {topic:?}: no PUBACK within {}s",
                    PUBACK_TIMEOUT.as_secs()
                ),
            };
            return Err(PublishFailure { delivered, error });
        }
        Ok(())
    }

    /// Whether the connection to the broker is up.
    pub fn is_connected(&self) -> bool {
        self.connected.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn on_polled(&self, polled: &Polled) {
        match polled {
            Polled::Connected { max_packet, .. } => {
                self.max_packet.store(
                    max_packet.map_or(MAX_PACKET, |m| m.min(MAX_PACKET)),
                    std::sync::atomic::Ordering::Relaxed,
                );
                self.connected
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            Polled::Sent(pkid) => {
                let mut pending = lock(&self.pending);
                if !pending.inflight.contains_key(pkid)
                    && let Some(waiter) = pending.queued.pop_front()
                {
                    pending.inflight.insert(*pkid, waiter);
                }
            }
            Polled::PubAck { pkid, refused } => {
                if let Some(waiter) = lock(&self.pending).inflight.remove(pkid) {
                    let _ = waiter.send(refused.clone().map_or(Ok(()), Err));
                }
            }
            _ => {}
        }
    }
}

/// A std mutex that shrugs off poisoning: the data stays consistent because
/// no code panics while holding it.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Backoff before reconnect attempt `attempt`: 250 ms doubling to 30 s, with
/// up to 50% jitter so a fleet does not reconnect in lockstep.
fn backoff(attempt: u32) -> Duration {
    use std::hash::{BuildHasher as _, Hasher as _};
    let base = 250u64.saturating_mul(1 << attempt.min(7)).min(30_000);
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Duration::from_millis(base + random % (base / 2 + 1))
}

/// Reports the first connection's outcome to `start`.
type Ready = Option<oneshot::Sender<anyhow::Result<()>>>;

/// Drives one connection: reconnects with backoff, replacing the client
/// after a drop, and hands every polled event to `on_event`.
struct Connection {
    settings: Settings,
    options: ConnectOptions,
    client: Arc<tokio::sync::Mutex<Client>>,
    eventloop: EventLoop,
}

impl Connection {
    fn new(settings: &Settings, suffix: &str, subscriber: bool) -> Self {
        let options = settings.connect_options(suffix, subscriber);
        let (client, eventloop) = client::connect(&options);
        Self {
            settings: settings.clone(),
            options,
            client: Arc::new(tokio::sync::Mutex::new(client)),
            eventloop,
        }
    }

    /// After a drop: a fresh client and event loop, so nothing queued on the
    /// old one (acks with stale packet ids, publishes) ever reaches the wire.
    async fn replace(&mut self) {
        let (client, eventloop) = client::connect(&self.options);
        self.eventloop = eventloop;
        *self.client.lock().await = client;
    }
}

/// The node's MQTT side.
#[derive(Debug)]
pub struct Mqtt {
    publisher: Publisher,
    stop_subscriber: watch::Sender<bool>,
    stop_publisher: watch::Sender<bool>,
    subscriber: Option<JoinHandle<()>>,
    publisher_task: JoinHandle<()>,
    broker: String,
    subscriptions: Subscriptions,
    /// Taken by the subscriber when it starts.
    sync_requests: Option<mpsc::UnboundedReceiver<SyncRequest>>,
}

impl Mqtt {
    /// Connects the publisher, so outputs can be sent; call
    /// [`Mqtt::subscribe`] once the dispatcher exists.
    pub async fn connect(settings: Settings) -> anyhow::Result<Self> {
        let (stop_publisher, stop_rx) = watch::channel(false);
        let mut connection = Connection::new(&settings, "-out", false);
        let publisher = Publisher::new(&connection, &settings);
        let (ready_tx, ready_rx) = oneshot::channel();
        let driver = publisher.clone();
        let publisher_task = tokio::spawn(async move {
            run_publisher(&mut connection, driver, stop_rx, Some(ready_tx)).await;
        });
        wait_ready(ready_rx, &settings, "publisher").await?;
        let (requests, sync_requests) = mpsc::unbounded_channel();
        Ok(Self {
            publisher,
            stop_subscriber: watch::channel(false).0,
            stop_publisher,
            subscriber: None,
            publisher_task,
            broker: settings.broker(),
            subscriptions: Subscriptions { requests },
            sync_requests: Some(sync_requests),
        })
    }

    /// The handle that makes the subscriber follow run-time deploys.
    pub fn subscriptions(&self) -> Subscriptions {
        self.subscriptions.clone()
    }

    /// The publisher for outputs.
    pub fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }

    /// Subscribes to every MQTT trigger of `dispatcher` and starts handling
    /// messages; returns once the broker granted the subscriptions. With
    /// `always`, the subscriber starts even while no function has an MQTT
    /// trigger, because tenants may deploy some later.
    pub async fn subscribe(
        &mut self,
        settings: Settings,
        dispatcher: Dispatcher,
        always: bool,
    ) -> anyhow::Result<()> {
        if dispatcher.mqtt_filters().is_empty() && !always {
            return Ok(());
        }
        let Some(requests) = self.sync_requests.take() else {
            bail!("the MQTT subscriber is already running");
        };
        let trigger = Arc::new(TriggerCtx {
            dispatcher: dispatcher.clone(),
            publisher: self.publisher.clone(),
            plain: settings.plain.clone(),
            max_retries: settings.max_retries,
        });
        let connection = Connection::new(&settings, "", true);
        let (ready_tx, ready_rx) = oneshot::channel();
        let stop = self.stop_subscriber.subscribe();
        self.subscriber = Some(tokio::spawn(run_subscriber(
            connection,
            Subscriber {
                trigger,
                ordered: Mutex::new(BTreeMap::new()),
                shared_group: settings.shared_group.clone(),
                inflight: Arc::new(Semaphore::new(usize::from(client::INFLIGHT))),
            },
            requests,
            stop,
            Some(ready_tx),
        )));
        wait_ready(ready_rx, &settings, "subscriber").await
    }

    /// Stops reading, lets in-flight messages finish and be acknowledged,
    /// then disconnects the subscriber. Outputs can still be published.
    pub async fn stop_subscriber(&mut self) {
        let _ = self.stop_subscriber.send(true);
        if let Some(subscriber) = self.subscriber.take()
            && let Err(e) = subscriber.await
        {
            tracing::warn!("MQTT subscriber: {e}");
        }
    }

    /// [`Mqtt::stop_subscriber`], then disconnects the publisher once what it
    /// was given has gone out.
    pub async fn shutdown(mut self) {
        self.stop_subscriber().await;
        let _ = self.stop_publisher.send(true);
        if let Err(e) = self.publisher_task.await {
            tracing::warn!("MQTT publisher: {e}");
        }
        tracing::info!(broker = %self.broker, "MQTT disconnected");
    }
}

/// Resolves once `stop` says true (holding no borrow of it afterwards).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn wait_ready(
    ready: oneshot::Receiver<anyhow::Result<()>>,
    settings: &Settings,
    which: &str,
) -> anyhow::Result<()> {
    match tokio::time::timeout(FIRST_CONNECT + Duration::from_secs(5), ready).await {
        Ok(Ok(result)) => result.with_context(|| {
            format!(
                "MQTT {which} could not connect to the broker at {}",
                settings.broker()
            )
        }),
        Ok(Err(_)) => bail!("MQTT {which} stopped before connecting"),
        Err(_) => bail!(
            "MQTT {which}: the broker at {} did not answer in time",
            settings.broker()
        ),
    }
}

/// Polls `connection`, retrying the first connect until [`FIRST_CONNECT`]
/// has passed, and after that forever with backoff. Returns `None` when it
/// gave up on the first connect.
async fn poll_connection(
    connection: &mut Connection,
    connected: &mut bool,
    attempt: &mut u32,
    started: std::time::Instant,
    ready: &mut Ready,
    on_drop: impl FnOnce(),
) -> Option<Polled> {
    match connection.eventloop.poll().await {
        Ok(polled) => {
            if let Polled::Connected { .. } = polled {
                *connected = true;
                *attempt = 0;
            }
            Some(polled)
        }
        Err(e) => {
            // A certificate the other side refuses will not change by
            // retrying: `brink up` says so at once.
            if ready.is_some() && (started.elapsed() >= FIRST_CONNECT || client::is_tls_error(&e)) {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(e));
                }
                return None;
            }
            if ready.is_none() {
                tracing::warn!(
                    broker = %connection.settings.broker(),
                    client_id = %connection.options.client_id,
                    "MQTT connection: {e:#}"
                );
            }
            if *connected {
                *connected = false;
                on_drop();
                connection.replace().await;
            }
            // While starting, retry soon: the embedded broker's listeners
            // come up on their own thread a few ms after `brink up` starts it.
            let delay = if ready.is_some() {
                Duration::from_millis(5)
            } else {
                backoff(*attempt)
            };
            *attempt = attempt.saturating_add(1);
            tokio::time::sleep(delay).await;
            Some(Polled::Other)
        }
    }
}

async fn run_publisher(
    connection: &mut Connection,
    publisher: Publisher,
    mut stop: watch::Receiver<bool>,
    mut ready: Ready,
) {
    let started = std::time::Instant::now();
    let (mut connected, mut attempt) = (false, 0);
    let mut stopping = false;
    loop {
        let polled = tokio::select! {
            biased;
            _ = stopped(&mut stop), if !stopping => None,
            polled = poll_connection(connection, &mut connected, &mut attempt, started, &mut ready, || {
                publisher.connected.store(false, std::sync::atomic::Ordering::Relaxed);
                lock(&publisher.pending).fail_all("the MQTT connection dropped before the broker acknowledged the message");
            }) => Some(polled),
        };
        let Some(polled) = polled else {
            stopping = true;
            // Queued after every publish already handed over, so those go out first.
            let client = connection.client.lock().await.clone();
            if !connected || client.disconnect().await.is_err() {
                break;
            }
            continue;
        };
        let Some(polled) = polled else { return };
        if let Polled::Connected { .. } = polled
            && let Some(ready) = ready.take()
        {
            let _ = ready.send(Ok(()));
        }
        if stopping && (!connected || matches!(polled, Polled::Disconnected)) {
            break;
        }
        publisher.on_polled(&polled);
    }
    lock(&publisher.pending).fail_all("the node is shutting down");
}

/// What the subscriber needs to handle messages.
struct TriggerCtx {
    dispatcher: Dispatcher,
    publisher: Publisher,
    plain: PlainPolicy,
    max_retries: u32,
}

struct Subscriber {
    trigger: Arc<TriggerCtx>,
    /// Workers of functions with concurrency 1, which take events in arrival
    /// order; started at a function's first message.
    ordered: Mutex<BTreeMap<String, mpsc::UnboundedSender<Job>>>,
    /// `[mqtt] shared_group`: filters are subscribed as `$share/<group>/<filter>`.
    shared_group: Option<String>,
    /// Messages being handled; reading stops while none is free.
    inflight: Arc<Semaphore>,
}

/// What the subscriber has asked the broker for on its current connection.
#[derive(Default)]
struct Subscribed {
    filters: std::collections::BTreeSet<String>,
    /// SUBSCRIBEs awaiting their SUBACK, in the order sent (the broker
    /// answers one connection's packets in order): the filters, and the
    /// deploys waiting on them.
    awaiting: VecDeque<(Vec<String>, Vec<SyncRequest>)>,
}

impl Subscriber {
    /// The filters the functions want now, as subscribed.
    fn wanted(&self) -> std::collections::BTreeSet<String> {
        self.trigger
            .dispatcher
            .mqtt_filters()
            .into_iter()
            .map(|f| match &self.shared_group {
                Some(group) => format!("$share/{group}/{f}"),
                None => f,
            })
            .collect()
    }

    /// Brings the connection's subscriptions in line with [`Self::wanted`];
    /// `waiting` hear once the broker granted (or refused) the new ones.
    async fn resubscribe(
        &self,
        client: &client::Client,
        subscribed: &mut Subscribed,
        mut waiting: Vec<SyncRequest>,
    ) {
        let wanted = self.wanted();
        let gone: Vec<String> = subscribed.filters.difference(&wanted).cloned().collect();
        let new: Vec<String> = wanted.difference(&subscribed.filters).cloned().collect();
        if !gone.is_empty() {
            tracing::info!(filters = ?gone, "MQTT unsubscribing");
            if let Err(e) = client.unsubscribe(&gone).await {
                tracing::warn!("unsubscribing: {e:#}");
            }
        }
        if new.is_empty() {
            for w in waiting.drain(..) {
                let _ = w.send(Ok(()));
            }
        } else {
            tracing::info!(filters = ?new, "MQTT subscribing");
            if let Err(e) = client.subscribe(&new).await {
                for w in waiting.drain(..) {
                    let _ = w.send(Err(format!("subscribing to {new:?}: {e:#}")));
                }
            } else {
                subscribed.awaiting.push_back((new, waiting));
            }
        }
        subscribed.filters = wanted;
        // Functions gone or no longer ordered: their workers end once idle.
        lock(&self.ordered)
            .retain(|function, _| self.trigger.dispatcher.concurrency(function) == Some(1));
    }

    /// The ordering worker of `function`, if it takes one event at a time.
    fn ordered_worker(&self, function: &str) -> Option<mpsc::UnboundedSender<Job>> {
        if self.trigger.dispatcher.concurrency(function) != Some(1) {
            return None;
        }
        let mut ordered = lock(&self.ordered);
        let worker = ordered.entry(function.to_owned()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(ordered_worker(
                self.trigger.clone(),
                function.to_owned(),
                rx,
            ));
            tx
        });
        Some(worker.clone())
    }
}

struct Job {
    event: (CloudEvent, ExtTypes),
    done: oneshot::Sender<Result<(), String>>,
}

async fn ordered_worker(
    trigger: Arc<TriggerCtx>,
    function: String,
    mut jobs: mpsc::UnboundedReceiver<Job>,
) {
    while let Some(job) = jobs.recv().await {
        let result = trigger.deliver(&function, job.event).await;
        let _ = job.done.send(result);
    }
}

impl TriggerCtx {
    /// Runs `event` through `function`, retrying retryable failures with
    /// backoff; a failure that remains goes to the dead-letter topic.
    /// `Err` only when even the dead letter could not be published: the
    /// message then stays unacknowledged and the broker delivers it again.
    async fn deliver(
        &self,
        function: &str,
        (event, types): (CloudEvent, ExtTypes),
    ) -> Result<(), String> {
        let mut attempt = 0;
        loop {
            match self
                .dispatcher
                .dispatch_with(function, "mqtt", (event.clone(), &types), Admission::Wait)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if e.is_retryable() && attempt < self.max_retries => {
                    let delay = Duration::from_millis(100 * (1 << attempt.min(6)));
                    tracing::debug!(function, attempt, "retrying in {delay:?}: {e}");
                    attempt += 1;
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    return self
                        .dead_letter(function, (event, &types), &e.to_string(), e.kind())
                        .await;
                }
            }
        }
    }

    async fn dead_letter(
        &self,
        function: &str,
        (mut event, types): (CloudEvent, &ExtTypes),
        error: &str,
        kind: &str,
    ) -> Result<(), String> {
        let mut message = error.to_owned();
        if message.len() > 1024 {
            let mut cut = 1024;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        event
            .extensions
            .retain(|(name, _)| name != "brinkerror" && name != "brinkerrorkind");
        event.extensions.push(("brinkerror".into(), message));
        event
            .extensions
            .push(("brinkerrorkind".into(), kind.into()));
        let topic = dead_letter_topic(function);
        tracing::warn!(function, event_id = %event.id, %topic, "dead-lettered: {error}");
        match self.publisher.publish(&topic, &event, types).await {
            Ok(()) => {}
            // Too large or unencodable as it is (a 70 kB subject, say): the
            // dead letter goes out without its data and with its attributes
            // cut, so the message is still dead-lettered once and the
            // broker's redeliveries end.
            Err(e) if crate::delivery::is_permanent(&e) => {
                let stub = dead_letter_stub(&event, &format!("{e:#}"));
                match self.publisher.publish(&topic, &stub, types).await {
                    Ok(()) => {}
                    Err(e) if crate::delivery::is_permanent(&e) => {
                        tracing::error!(
                            function,
                            %topic,
                            "dropped a message whose dead letter the broker refuses: {e:#}"
                        );
                    }
                    Err(e) => return Err(format!("{e:#}")),
                }
            }
            Err(e) => return Err(format!("{e:#}")),
        }
        self.dispatcher
            .metrics()
            .dead_letters
            .get_or_create(&super::metrics::FunctionLabel {
                function: function.to_owned(),
            })
            .inc();
        Ok(())
    }
}

impl Subscriber {
    /// Starts handling one message; the caller has already taken `permit`.
    fn handle(
        &self,
        acks: Arc<AckOrder>,
        message: Received,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        let seq = acks.enqueue();
        let trigger = self.trigger.clone();
        let mut targets = trigger.dispatcher.mqtt_targets(&message.topic);
        // A function never gets its own dead letters: failing on one again
        // would dead-letter it again, for ever.
        // Only dead-letter topics are formatted, not every message's.
        if message.topic.contains("dead-letter/") {
            targets.retain(|function| message.topic != dead_letter_topic(function));
        }
        let decoded = binding::decode(
            Message {
                topic: &message.topic,
                payload: &message.payload,
                content_type: message.content_type.as_deref(),
                user_properties: &message.user_properties,
            },
            &trigger.plain,
        );
        let event = match decoded {
            Ok((event, types, carried)) => {
                if carried == Carried::Plain {
                    tracing::trace!(topic = %message.topic, "wrapped a plain payload");
                }
                (event, types)
            }
            Err(e) => {
                tracing::warn!(topic = %message.topic, "malformed CloudEvent: {e}");
                let event = malformed(&message);
                let error = format!("malformed CloudEvent on {:?}: {e}", message.topic);
                tokio::spawn(async move {
                    let mut delivered = true;
                    for function in &targets {
                        trigger.dispatcher.count_error(function, "invalid_event");
                        if let Err(why) = trigger
                            .dead_letter(
                                function,
                                (event.clone(), &ExtTypes::default()),
                                &error,
                                "invalid_event",
                            )
                            .await
                        {
                            tracing::warn!(function, "dead letter not published: {why}");
                            delivered = false;
                        }
                    }
                    drop(permit);
                    acks.complete(seq, delivered.then_some(message.raw));
                });
                return;
            }
        };
        // Ordered functions are queued here, in arrival order, before any task runs.
        let mut waits = Vec::new();
        let mut concurrent = Vec::new();
        for function in targets {
            match self.ordered_worker(&function) {
                Some(worker) => {
                    let (done, wait) = oneshot::channel();
                    if worker
                        .send(Job {
                            event: event.clone(),
                            done,
                        })
                        .is_ok()
                    {
                        waits.push(wait);
                    }
                }
                None => concurrent.push(function),
            }
        }
        tokio::spawn(async move {
            let mut delivered = true;
            for function in &concurrent {
                // Each function's retries run on their own; all must end before the ack.
                if let Err(why) = trigger.deliver(function, event.clone()).await {
                    tracing::warn!(
                        function,
                        "not acknowledged, the broker will redeliver: {why}"
                    );
                    delivered = false;
                }
            }
            for wait in waits {
                if !matches!(wait.await, Ok(Ok(()))) {
                    delivered = false;
                }
            }
            drop(permit);
            acks.complete(seq, delivered.then_some(message.raw));
        });
    }
}

/// Acknowledges messages in the order they arrived, as MQTT requires (and
/// rumqttd enforces) however the handlers finish. One per connection: acks
/// for a connection that has gone are dropped, since the broker delivers
/// those messages again.
struct AckOrder {
    client: Client,
    state: Mutex<AckState>,
    /// Told when a message will never be acknowledged: only a reconnect gets
    /// it (and everything after it) delivered again.
    broken: tokio::sync::Notify,
}

#[derive(Default)]
struct AckState {
    next: u64,
    head: u64,
    /// Finished messages waiting for earlier ones: `None` when not to be acknowledged.
    done: BTreeMap<u64, Option<client::Raw>>,
    stuck: bool,
}

impl AckOrder {
    fn new(client: Client) -> Arc<Self> {
        Arc::new(Self {
            client,
            state: Mutex::new(AckState::default()),
            broken: tokio::sync::Notify::new(),
        })
    }

    /// The next arrival's place in line.
    fn enqueue(&self) -> u64 {
        let mut state = lock(&self.state);
        state.next += 1;
        state.next - 1
    }

    /// Records how message `seq` ended; sends every ack now in order.
    fn complete(&self, seq: u64, ack: Option<client::Raw>) {
        let mut state = lock(&self.state);
        state.done.insert(seq, ack);
        while !state.stuck {
            let head = state.head;
            let Some(entry) = state.done.remove(&head) else {
                break;
            };
            match entry {
                Some(raw) => {
                    // Sent under the lock, so acks enter the queue in order.
                    if self.client.try_ack(&raw).is_err() {
                        tracing::debug!("ack dropped: its connection is gone");
                    }
                    state.head += 1;
                }
                None => {
                    state.stuck = true;
                    self.broken.notify_one();
                }
            }
        }
    }
}

/// The dead letter for a message that is not a valid CloudEvent: its bytes, as they came.
fn malformed(message: &Received) -> CloudEvent {
    CloudEvent {
        id: uuid::Uuid::new_v4().to_string(),
        source: "/brink/mqtt".into(),
        type_: "com.brink.mqtt.malformed".into(),
        specversion: "1.0".into(),
        subject: Some(message.topic.clone()),
        time: Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        datacontenttype: Some("application/octet-stream".into()),
        dataschema: None,
        extensions: Vec::new(),
        data: Some(message.payload.to_vec()),
    }
}

async fn run_subscriber(
    mut connection: Connection,
    subscriber: Subscriber,
    mut requests: mpsc::UnboundedReceiver<SyncRequest>,
    mut stop: watch::Receiver<bool>,
    mut ready: Ready,
) {
    let started = std::time::Instant::now();
    let (mut connected, mut attempt) = (false, 0);
    let metrics = subscriber.trigger.dispatcher.metrics();
    let mut acks = AckOrder::new(connection.client.lock().await.clone());
    let mut subscribed = Subscribed::default();
    loop {
        let polled = tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            _ = acks.broken.notified() => {
                tracing::warn!("a message could not be handled or dead-lettered; reconnecting so the broker delivers it again");
                connection.replace().await;
                connected = false;
                continue;
            }
            Some(request) = requests.recv() => {
                if connected {
                    let client = connection.client.lock().await.clone();
                    subscriber.resubscribe(&client, &mut subscribed, vec![request]).await;
                } else {
                    // Connecting subscribes to every wanted filter anyway.
                    let _ = request.send(Ok(()));
                }
                continue;
            }
            polled = poll_connection(&mut connection, &mut connected, &mut attempt, started, &mut ready, || {}) => polled,
        };
        let Some(polled) = polled else { return };
        metrics.mqtt_connected.set(i64::from(connected));
        let client = connection.client.lock().await.clone();
        match polled {
            Polled::Connected {
                session_present, ..
            } => {
                acks = AckOrder::new(client.clone());
                // A new connection: whatever was asked on the old one is
                // asked again, and those waiting wait for this answer.
                let waiting: Vec<SyncRequest> =
                    subscribed.awaiting.drain(..).flat_map(|(_, w)| w).collect();
                let previous = std::mem::take(&mut subscribed.filters);
                let wanted = subscriber.wanted();
                tracing::info!(
                    broker = %connection.settings.broker(),
                    session_present,
                    filters = ?wanted,
                    "MQTT connected"
                );
                // A kept session still holds the filters of before; drop
                // those no function wants any more.
                if session_present {
                    subscribed.filters = previous;
                }
                subscriber
                    .resubscribe(&client, &mut subscribed, waiting)
                    .await;
                // A kept session already holds the subscriptions, and the
                // broker may send its whole backlog before the SUBACK: the
                // node is ready now, not after draining it (a restart after
                // an outage would otherwise time out).
                if (session_present || subscribed.awaiting.is_empty())
                    && let Some(ready) = ready.take()
                {
                    let _ = ready.send(Ok(()));
                }
            }
            Polled::SubAck { refused } => {
                let (filters, waiting) = subscribed.awaiting.pop_front().unwrap_or_default();
                let refused: Vec<&String> =
                    refused.iter().filter_map(|i| filters.get(*i)).collect();
                let outcome = if refused.is_empty() {
                    Ok(())
                } else {
                    // Not subscribed: the next deploy or reconnect tries again.
                    for filter in &refused {
                        subscribed.filters.remove(*filter);
                    }
                    Err(format!(
                        "the broker refused the subscription to {refused:?}"
                    ))
                };
                for w in waiting {
                    let _ = w.send(outcome.clone());
                }
                match ready.take() {
                    Some(ready) => {
                        let failed = outcome.is_err();
                        let _ = ready.send(outcome.map_err(anyhow::Error::msg));
                        if failed {
                            return;
                        }
                    }
                    None => {
                        if let Err(e) = outcome {
                            tracing::error!("{e}");
                        }
                    }
                }
            }
            Polled::Message(message) => {
                // Back-pressure: with every slot taken, stop reading until one frees.
                let permit = tokio::select! {
                    permit = subscriber.inflight.clone().acquire_owned() => permit,
                    _ = stopped(&mut stop) => break,
                };
                let Ok(permit) = permit else { return };
                subscriber.handle(acks.clone(), *message, permit);
            }
            _ => {}
        }
    }
    drain(&mut connection, &subscriber, connected).await;
    metrics.mqtt_connected.set(0);
}

/// Shutting down: messages that arrive now stay unacknowledged (the broker
/// delivers them again later); the ones in hand finish and their acks go
/// out; then DISCONNECT.
async fn drain(connection: &mut Connection, subscriber: &Subscriber, mut connected: bool) {
    let all = u32::from(client::INFLIGHT);
    loop {
        tokio::select! {
            permits = subscriber.inflight.acquire_many(all) => {
                if permits.is_err() {
                    return;
                }
                break;
            }
            polled = connection.eventloop.poll() => match polled {
                Ok(Polled::Connected { .. }) => connected = true,
                Ok(_) => {}
                Err(e) => {
                    connected = false;
                    tracing::warn!("MQTT connection while draining: {e:#}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    let client = connection.client.lock().await.clone();
    if !connected || client.disconnect().await.is_err() {
        return;
    }
    let flushed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match connection.eventloop.poll().await {
                Ok(Polled::Disconnected) | Err(_) => break,
                Ok(_) => {}
            }
        }
    });
    if flushed.await.is_err() {
        tracing::warn!("MQTT: DISCONNECT not sent within 5 s");
    }
}
