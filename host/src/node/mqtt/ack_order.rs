//! In-order acknowledgement of QoS 1 messages, however their handlers finish.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::client::Client;
use super::{client, lock};

/// Acknowledges messages in the order they arrived, as MQTT requires (and
/// rumqttd enforces) however the handlers finish. One per connection: acks
/// for a connection that has gone are dropped, since the broker delivers
/// those messages again.
///
/// Acks go through an ordered queue to a task that waits for room in the
/// client's request channel. None may be dropped while its connection
/// lives: the broker counts each unacknowledged message against the
/// client's receive maximum, so every lost ack shrinks the window for good
/// and, once it reaches zero, the node stops receiving.
pub(super) struct AckOrder {
    queue: tokio::sync::mpsc::UnboundedSender<Queued>,
    pub(super) state: Mutex<AckState>,
    /// Told when a message will never be acknowledged: only a reconnect gets
    /// it (and everything after it) delivered again.
    pub(super) broken: tokio::sync::Notify,
}

/// What the sending task takes, in order.
// Acks are nearly every item: boxing them would cost an allocation each.
#[allow(clippy::large_enum_variant)]
enum Queued {
    Ack(client::Raw),
    /// Answered once every earlier ack is handed to the client.
    Flush(tokio::sync::oneshot::Sender<()>),
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
    /// Must run inside a Tokio runtime: the sending task starts here, and
    /// ends once this and every ack queued before are gone.
    pub(super) fn new(client: Client) -> Arc<Self> {
        let (queue, mut queued) = tokio::sync::mpsc::unbounded_channel::<Queued>();
        tokio::spawn(async move {
            while let Some(item) = queued.recv().await {
                match item {
                    Queued::Ack(raw) => {
                        if let Err(e) = client.ack(&raw).await {
                            tracing::debug!("ack dropped, its connection is gone: {e:#}");
                        }
                    }
                    Queued::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        Arc::new(Self {
            queue,
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

    /// Resolves once every ack queued before this call is in the client's
    /// request channel (where the client sends them before anything asked
    /// of it later, such as a DISCONNECT).
    pub(super) async fn flushed(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.queue.send(Queued::Flush(done)).is_ok() {
            let _ = wait.await;
        }
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
                    // Queued under the lock, so acks enter the queue in order.
                    // The task only ends when `self` is gone.
                    let _ = self.queue.send(Queued::Ack(raw));
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::time::Duration;

    use rumqttc::v5 as c5;

    use super::AckOrder;
    use crate::node::mqtt::broker;
    use crate::node::mqtt::client::{Client, EventLoop, Polled, Raw};

    fn free() -> std::net::SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    /// The next `n` messages the subscriber receives, within 10 s, not acknowledged.
    async fn receive(eventloop: &mut EventLoop, n: usize) -> Vec<Raw> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while got.len() < n {
            match tokio::time::timeout_at(deadline, eventloop.poll()).await {
                Ok(Ok(Polled::Message(m))) => got.push(m.raw),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        got
    }

    /// A burst of acks larger than the client's request channel, completed
    /// while its event loop is busy elsewhere, must all reach the broker:
    /// each one lost counts against the broker's window for this client
    /// until, with enough lost, it sends nothing more.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acks_wait_for_room_instead_of_shrinking_the_brokers_window() {
        let (v4, v5) = (free(), free());
        let broker = broker::start(v4, v5, 1 << 20, "brink-acktest", true).unwrap();
        broker.open_to_devices().await.unwrap();
        let (_, internal_v5) = broker.internal.unwrap();

        // The node's subscriber, with a request channel of 4.
        let mut options = c5::MqttOptions::new(
            "brink-acktest-sub",
            internal_v5.ip().to_string(),
            internal_v5.port(),
        );
        options.set_manual_acks(true);
        let (client, eventloop) = c5::AsyncClient::new(options, 4);
        let (client, mut eventloop) = (Client::V5(client), EventLoop::V5(Box::new(eventloop)));
        while !matches!(eventloop.poll().await.unwrap(), Polled::Connected { .. }) {}
        client.subscribe(&["t/#".to_owned()]).await.unwrap();
        while !matches!(eventloop.poll().await.unwrap(), Polled::SubAck { .. }) {}

        // A device, publishing at QoS 1.
        let mut options = rumqttc::MqttOptions::new("device", v4.ip().to_string(), v4.port());
        options.set_inflight(1000);
        let (device, mut device_loop) = rumqttc::AsyncClient::new(options, 2000);
        tokio::spawn(async move { while device_loop.poll().await.is_ok() {} });
        let publish = |n: usize| {
            let device = device.clone();
            async move {
                for i in 0..n {
                    device
                        .publish("t/x", rumqttc::QoS::AtLeastOnce, false, vec![i as u8])
                        .await
                        .unwrap();
                }
            }
        };

        // 100 handled at once, while the subscriber is not polling.
        publish(100).await;
        let first = receive(&mut eventloop, 100).await;
        assert_eq!(first.len(), 100, "the first burst did not arrive");
        let acks = AckOrder::new(client.clone());
        let seqs: Vec<u64> = first.iter().map(|_| acks.enqueue()).collect();
        for (seq, raw) in seqs.into_iter().zip(first) {
            acks.complete(seq, Some(raw));
        }

        // With those acks lost, the broker's window (256) would let no more
        // than 160 of these through.
        publish(400).await;
        let mut received = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while received < 400 {
            match tokio::time::timeout_at(deadline, eventloop.poll()).await {
                Ok(Ok(Polled::Message(m))) => {
                    received += 1;
                    acks.complete(acks.enqueue(), Some(m.raw));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        assert_eq!(
            received, 400,
            "acks were lost: the broker stopped sending after {received} of 400"
        );
    }
}
