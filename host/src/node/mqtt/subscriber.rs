//! The subscriber connection: follows the functions' filters, decodes each
//! message, hands it to [`super::delivery`] and acknowledges it in order.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use super::ack_order::AckOrder;
use super::client::{Polled, Received};
use super::delivery::{Job, TriggerCtx, ordered_worker};
use super::{Connection, Ready, SyncRequest, client, lock, poll_connection, stopped};
use crate::bindings::CloudEvent;
use crate::event::mqtt::{Carried, Message};
use crate::event::{ExtTypes, mqtt as binding};
use crate::tenancy::names::dead_letter_topic;

pub(super) struct Subscriber {
    pub(super) trigger: Arc<TriggerCtx>,
    /// Workers of functions with concurrency 1, which take events in arrival
    /// order; started at a function's first message.
    pub(super) ordered: Mutex<BTreeMap<String, mpsc::UnboundedSender<Job>>>,
    /// `[mqtt] shared_group`: filters are subscribed as `$share/<group>/<filter>`.
    pub(super) shared_group: Option<String>,
    /// Messages being handled; reading stops while none is free.
    pub(super) inflight: Arc<Semaphore>,
    /// Messages received since the start (a retiring node waits for it to
    /// stop moving).
    pub(super) received: Arc<std::sync::atomic::AtomicU64>,
    /// `brink up --retire`: subscribe to nothing, and unsubscribe what the
    /// session holds.
    pub(super) retiring: bool,
}

/// What the subscriber has asked the broker for on its current connection.
#[derive(Default)]
pub(super) struct Subscribed {
    pub(super) filters: std::collections::BTreeSet<String>,
    /// SUBSCRIBEs awaiting their SUBACK, in the order sent (the broker
    /// answers one connection's packets in order): the filters, and the
    /// deploys waiting on them.
    pub(super) awaiting: VecDeque<(Vec<String>, Vec<SyncRequest>)>,
}

impl Subscriber {
    /// The filters the functions want now, as subscribed.
    pub(super) fn wanted(&self) -> std::collections::BTreeSet<String> {
        if self.retiring {
            return std::collections::BTreeSet::new();
        }
        self.filters()
    }

    /// Every filter the functions have, as subscribed.
    fn filters(&self) -> std::collections::BTreeSet<String> {
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
    pub(super) async fn resubscribe(
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
    pub(super) fn ordered_worker(&self, function: &str) -> Option<mpsc::UnboundedSender<Job>> {
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

impl Subscriber {
    /// Queues `event` for the ordered functions of `targets` now, in arrival
    /// order, before any task runs: their outcomes to wait for, and the
    /// functions left to run concurrently.
    fn queue_ordered(
        &self,
        targets: Vec<String>,
        event: &(CloudEvent, ExtTypes),
        parent: Option<&crate::telemetry::context::Parent>,
    ) -> (Vec<oneshot::Receiver<Result<(), String>>>, Vec<String>) {
        let mut waits = Vec::new();
        let mut concurrent = Vec::new();
        for function in targets {
            match self.ordered_worker(&function) {
                Some(worker) => {
                    let (done, wait) = oneshot::channel();
                    let job = Job {
                        event: event.clone(),
                        parent: parent.cloned(),
                        done,
                    };
                    if worker.send(job).is_ok() {
                        waits.push(wait);
                    }
                }
                None => concurrent.push(function),
            }
        }
        (waits, concurrent)
    }

    /// Starts handling one message; the caller has already taken `permit`.
    pub(super) fn handle(
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
        let (event, receive) = match decoded {
            Ok((event, types, carried)) => {
                if carried == Carried::Plain {
                    tracing::trace!(topic = %message.topic, "wrapped a plain payload");
                }
                let receive = trigger.dispatcher.tracer().map(|tracer| {
                    let qos = message.raw.qos();
                    crate::node::traced::mqtt_receive(tracer, &message.topic, qos, &event)
                });
                ((event, types), receive)
            }
            Err(e) => {
                tracing::warn!(topic = %message.topic, "malformed CloudEvent: {e}");
                let error = format!("malformed CloudEvent on {:?}: {e}", message.topic);
                tokio::spawn(async move {
                    let delivered =
                        dead_letter_malformed(&trigger, &targets, &message, &error).await;
                    // Queued before the permit goes: shutdown takes every
                    // permit, then flushes the queue.
                    acks.complete(seq, delivered.then_some(message.raw));
                    drop(permit);
                });
                return;
            }
        };
        let parent = receive.as_ref().map(crate::telemetry::Span::parent);
        let (waits, concurrent) = self.queue_ordered(targets, &event, parent.as_ref());
        let work = async move {
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
            acks.complete(seq, delivered.then_some(message.raw));
            drop(permit);
            drop(receive);
        };
        spawn_received(parent, work);
    }
}

/// Spawns a message's work. Traced, its dispatches find the receive span in
/// the task; not traced, the task is spawned as it is, with no wrapper to
/// poll.
fn spawn_received(
    parent: Option<crate::telemetry::context::Parent>,
    work: impl std::future::Future<Output = ()> + Send + 'static,
) {
    match parent {
        Some(parent) => {
            tokio::spawn(crate::telemetry::context::RECEIVED.scope(parent, work));
        }
        None => {
            tokio::spawn(work);
        }
    }
}

/// Dead-letters a message that is not a valid CloudEvent to each of
/// `targets`; true when every dead letter went out.
async fn dead_letter_malformed(
    trigger: &TriggerCtx,
    targets: &[String],
    message: &Received,
    error: &str,
) -> bool {
    let event = malformed(message);
    let mut delivered = true;
    for function in targets {
        trigger.dispatcher.count_error(function, "invalid_event");
        if let Err(why) = trigger
            .dead_letter(
                function,
                (event.clone(), &ExtTypes::default()),
                error,
                "invalid_event",
            )
            .await
        {
            tracing::warn!(function, "dead letter not published: {why}");
            delivered = false;
        }
    }
    delivered
}

/// The dead letter for a message that is not a valid CloudEvent: its bytes, as they came.
pub(super) fn malformed(message: &Received) -> CloudEvent {
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

impl Subscriber {
    /// A new connection: whatever was asked on the old one is asked again,
    /// and those waiting wait for this answer.
    async fn connected(
        &self,
        client: &client::Client,
        subscribed: &mut Subscribed,
        broker: &str,
        session_present: bool,
        ready: &mut Ready,
    ) {
        let waiting: Vec<SyncRequest> =
            subscribed.awaiting.drain(..).flat_map(|(_, w)| w).collect();
        let previous = std::mem::take(&mut subscribed.filters);
        let wanted = self.wanted();
        tracing::info!(broker, session_present, filters = ?wanted, "MQTT connected");
        // A kept session still holds the filters of before; drop those no
        // function wants any more.
        if session_present {
            subscribed.filters = previous;
        }
        // Retiring: the session holds the filters of the node's last run,
        // which this process never subscribed to; they go, so the broker
        // sends the group's new messages to the other members.
        if self.retiring {
            subscribed.filters.extend(self.filters());
        }
        self.resubscribe(client, subscribed, waiting).await;
        // A kept session already holds the subscriptions, and the broker may
        // send its whole backlog before the SUBACK: the node is ready now, not
        // after draining it (a restart after an outage would otherwise time out).
        if (session_present || subscribed.awaiting.is_empty())
            && let Some(ready) = ready.take()
        {
            let _ = ready.send(Ok(()));
        }
    }
}

/// The broker answered the oldest SUBSCRIBE: tells those waiting on it.
/// `Err` when it refused a filter before the node was ready: start fails.
fn suback(subscribed: &mut Subscribed, refused: &[usize], ready: &mut Ready) -> Result<(), ()> {
    let (filters, waiting) = subscribed.awaiting.pop_front().unwrap_or_default();
    let refused: Vec<&String> = refused.iter().filter_map(|i| filters.get(*i)).collect();
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
                return Err(());
            }
        }
        None => {
            if let Err(e) = outcome {
                tracing::error!("{e}");
            }
        }
    }
    Ok(())
}

pub(super) async fn run_subscriber(
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
                let broker = connection.settings.broker();
                subscriber
                    .connected(
                        &client,
                        &mut subscribed,
                        &broker,
                        session_present,
                        &mut ready,
                    )
                    .await;
            }
            Polled::SubAck { refused }
                if suback(&mut subscribed, &refused, &mut ready).is_err() =>
            {
                return;
            }
            Polled::Message(message) => {
                // Back-pressure: with every slot taken, stop reading until one frees.
                let permit = tokio::select! {
                    permit = subscriber.inflight.clone().acquire_owned() => permit,
                    _ = stopped(&mut stop) => break,
                };
                let Ok(permit) = permit else { return };
                subscriber
                    .received
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                subscriber.handle(acks.clone(), *message, permit);
            }
            _ => {}
        }
    }
    drain(&mut connection, &subscriber, &acks, connected).await;
    metrics.mqtt_connected.set(0);
}

/// Shutting down: messages that arrive now stay unacknowledged (the broker
/// delivers them again later); the ones in hand finish and their acks go
/// out; then DISCONNECT.
pub(super) async fn drain(
    connection: &mut Connection,
    subscriber: &Subscriber,
    acks: &AckOrder,
    mut connected: bool,
) {
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
    if connected {
        let client = connection.client.lock().await.clone();
        acks.flush_then_disconnect(&client, &mut connection.eventloop)
            .await;
    }
}
