//! One message to one function: retries with backoff, then the dead letter;
//! and the workers that keep concurrency-1 functions in arrival order.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::identity::dead_letter_stub;
use super::publisher::Publisher;
use crate::bindings::CloudEvent;
use crate::event::ExtTypes;
use crate::event::mqtt::PlainPolicy;
use crate::node::dispatch::{Admission, Dispatcher, TriggerKind};
use crate::tenancy::names::dead_letter_topic;

/// What the subscriber needs to handle messages.
pub(super) struct TriggerCtx {
    pub(super) dispatcher: Dispatcher,
    pub(super) publisher: Publisher,
    pub(super) plain: PlainPolicy,
    pub(super) max_retries: u32,
}

pub(super) struct Job {
    pub(super) event: (CloudEvent, ExtTypes),
    /// The receive span, where the node traces.
    pub(super) parent: Option<crate::telemetry::context::Parent>,
    pub(super) done: oneshot::Sender<Result<(), String>>,
}

pub(super) async fn ordered_worker(
    trigger: Arc<TriggerCtx>,
    function: String,
    mut jobs: mpsc::UnboundedReceiver<Job>,
) {
    while let Some(job) = jobs.recv().await {
        let deliver = trigger.deliver(&function, job.event);
        let result = match job.parent {
            Some(parent) => {
                crate::telemetry::context::RECEIVED
                    .scope(parent, deliver)
                    .await
            }
            None => deliver.await,
        };
        let _ = job.done.send(result);
    }
}

impl TriggerCtx {
    /// Runs `event` through `function`, retrying retryable failures with
    /// backoff; a failure that remains goes to the dead-letter topic.
    /// `Err` only when even the dead letter could not be published: the
    /// message then stays unacknowledged and the broker delivers it again.
    pub(super) async fn deliver(
        &self,
        function: &str,
        (event, types): (CloudEvent, ExtTypes),
    ) -> Result<(), String> {
        let mut attempt = 0;
        loop {
            match self
                .dispatcher
                .dispatch_with(
                    function,
                    TriggerKind::Mqtt,
                    (event.clone(), &types),
                    Admission::Wait,
                )
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
                    // Boxed: held inline, the dead letter's future (2.8 KB,
                    // the publish and its retries) made every event's task
                    // twice as large, and tokio copies a task's future
                    // when it is spawned and when it ends.
                    let error = e.to_string();
                    let dead_letter = self.dead_letter(function, (event, &types), &error, e.kind());
                    return Box::pin(dead_letter).await;
                }
            }
        }
    }

    pub(super) async fn dead_letter(
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
            .get_or_create(&crate::node::metrics::FunctionLabel::of(function))
            .inc();
        Ok(())
    }
}
