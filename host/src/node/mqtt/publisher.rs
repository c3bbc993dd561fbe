//! The publisher connection: outputs and dead letters, each publish
//! waiting for its PUBACK.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::client::{Client, Polled};
use super::settings::{MAX_PACKET, Settings};
use super::{Connection, PUBACK_TIMEOUT, Ready, client, lock, poll_connection, stopped};
use crate::bindings::CloudEvent;
use crate::event::mqtt::{Outgoing, OutputMode};
use crate::event::{ExtTypes, mqtt as binding};

pub(super) type Waiter = oneshot::Sender<Result<(), client::Refusal>>;

#[derive(Default)]
pub(super) struct Pending {
    /// Publishes handed to the event loop, oldest first, not yet given a packet id.
    pub(super) queued: VecDeque<Waiter>,
    /// Publishes on the wire, by packet id.
    pub(super) inflight: HashMap<u16, Waiter>,
}

impl Pending {
    pub(super) fn fail_all(&mut self, why: &str) {
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
    pub(super) fn new(connection: &Connection, settings: &Settings) -> Self {
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

    pub(super) fn on_polled(&self, polled: &Polled) {
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

pub(super) async fn run_publisher(
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
