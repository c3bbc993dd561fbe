//! In-order acknowledgement of QoS 1 messages, however their handlers finish.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::client::Client;
use super::{client, lock};

/// Acknowledges messages in the order they arrived, as MQTT requires (and
/// rumqttd enforces) however the handlers finish. One per connection: acks
/// for a connection that has gone are dropped, since the broker delivers
/// those messages again.
pub(super) struct AckOrder {
    pub(super) client: Client,
    pub(super) state: Mutex<AckState>,
    /// Told when a message will never be acknowledged: only a reconnect gets
    /// it (and everything after it) delivered again.
    pub(super) broken: tokio::sync::Notify,
}

#[derive(Default)]
pub(super) struct AckState {
    pub(super) next: u64,
    pub(super) head: u64,
    /// Finished messages waiting for earlier ones: `None` when not to be acknowledged.
    pub(super) done: BTreeMap<u64, Option<client::Raw>>,
    pub(super) stuck: bool,
}

impl AckOrder {
    pub(super) fn new(client: Client) -> Arc<Self> {
        Arc::new(Self {
            client,
            state: Mutex::new(AckState::default()),
            broken: tokio::sync::Notify::new(),
        })
    }

    /// The next arrival's place in line.
    pub(super) fn enqueue(&self) -> u64 {
        let mut state = lock(&self.state);
        state.next += 1;
        state.next - 1
    }

    /// Records how message `seq` ended; sends every ack now in order.
    pub(super) fn complete(&self, seq: u64, ack: Option<client::Raw>) {
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
