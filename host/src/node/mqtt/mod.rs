//! The MQTT trigger and outputs.
//!
//! Two connections to one broker (the embedded rumqttd, or an external one):
//! a *subscriber* that runs functions on incoming messages and acknowledges
//! each QoS 1 message only once it is handled, and a *publisher* for outputs
//! and dead letters whose every publish waits for the broker's PUBACK. They
//! are separate so the subscriber can stop reading under load (back-pressure
//! towards the broker) while PUBACKs for outputs keep flowing.

mod ack_order;
mod broker;
pub mod client;
mod delivery;
mod identity;
mod local;
mod publisher;
mod settings;
mod subscriber;
// The benches' mosquitto (persistent sessions that redeliver, which the
// embedded broker does not).
#[cfg(test)]
#[path = "../../../benches/common/mosquitto.rs"]
mod test_mosquitto;

pub use broker::EmbeddedBroker;
use delivery::TriggerCtx;
pub use identity::node_client_id;
use publisher::run_publisher;
pub use publisher::{PublishFailure, Publisher, background_publisher};
pub use settings::{Settings, start_embedded_broker};
use subscriber::{Subscriber, run_subscriber};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::dispatch::Dispatcher;
use client::{Client, ConnectOptions, EventLoop, Polled};

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
    /// The subscriber's messages received and its free slots, to tell
    /// when a retiring node has handled what its session held.
    received: Arc<std::sync::atomic::AtomicU64>,
    inflight: Arc<Semaphore>,
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
            received: Arc::default(),
            inflight: Arc::new(Semaphore::new(usize::from(client::INFLIGHT))),
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
        let (received, inflight) = (self.received.clone(), self.inflight.clone());
        self.subscriber = Some(tokio::spawn(run_subscriber(
            connection,
            Subscriber {
                trigger,
                ordered: Mutex::new(BTreeMap::new()),
                shared_group: settings.shared_group.clone(),
                inflight,
                received,
                retiring: settings.retire,
            },
            requests,
            stop,
            Some(ready_tx),
        )));
        wait_ready(ready_rx, &settings, "subscriber").await
    }

    /// Messages the subscriber received so far, and whether it is handling
    /// none now.
    pub fn activity(&self) -> (u64, bool) {
        (
            self.received.load(std::sync::atomic::Ordering::SeqCst),
            self.inflight.available_permits() == usize::from(client::INFLIGHT),
        )
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

/// Ends the node's broker session: a connection with its client id that
/// starts clean (the broker drops the session and what it queued) and
/// keeps nothing after it disconnects. For a node leaving its group for
/// good, once the session's messages were handled ([`crate::node::Node::retire`]).
pub async fn end_session(settings: &Settings) -> anyhow::Result<()> {
    let mut options = settings.connect_options("", false);
    options.persistent = false;
    let (client, mut eventloop) = client::connect(&options);
    let connected = tokio::time::timeout(FIRST_CONNECT, async {
        loop {
            if let Polled::Connected { .. } = eventloop.poll().await? {
                return anyhow::Ok(());
            }
        }
    })
    .await;
    match connected {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e).context(format!("connecting to {}", settings.broker())),
        Err(_) => bail!("the broker at {} did not answer in time", settings.broker()),
    }
    client.disconnect().await?;
    // Until the DISCONNECT has gone out (or the broker closed the socket).
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(polled) = eventloop.poll().await {
            if let Polled::Disconnected = polled {
                break;
            }
        }
    })
    .await;
    Ok(())
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
