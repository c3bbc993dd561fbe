//! In-order acknowledgement of QoS 1 messages, however their handlers finish.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::client::{Client, EventLoop, Polled};
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

    /// Shutdown's last step on a live connection, once every handler has
    /// queued its ack: the acks reach the client before the DISCONNECT, or
    /// the broker would deliver those messages again to the next session.
    /// The event loop turns throughout, since a full request channel only
    /// drains while it does. Each wait is capped at 5 s, so a broker that
    /// stopped reading cannot hold shutdown.
    pub(super) async fn flush_then_disconnect(&self, client: &Client, eventloop: &mut EventLoop) {
        const CAP: Duration = Duration::from_secs(5);
        let flushed = tokio::time::timeout(CAP, turning(eventloop, self.flushed())).await;
        match flushed {
            Ok(Some(())) => {}
            Ok(None) => return,
            Err(_) => tracing::warn!(
                "MQTT: acknowledgements not sent within 5 s; the broker will deliver those messages again"
            ),
        }
        let sent = tokio::time::timeout(CAP, turning(eventloop, client.disconnect())).await;
        if !matches!(sent, Ok(Some(Ok(())))) {
            tracing::warn!("MQTT: DISCONNECT not sent (connection gone, or 5 s passed)");
            return;
        }
        // Over TCP, rumqttc reports the DISCONNECT as sent before it writes
        // it. The broker's close says it read the DISCONNECT, and so every
        // ack before it: mosquitto reads one packet per connection per turn,
        // and when a restarted node's CONNECT takes the session over first,
        // it drops what it had not read of this connection. In process,
        // `Disconnected` is the router letting go of the link.
        let in_process = matches!(eventloop, EventLoop::Local(_));
        let gone = tokio::time::timeout(CAP, async {
            loop {
                match eventloop.poll().await {
                    Err(_) => break,
                    Ok(Polled::Disconnected) if in_process => break,
                    Ok(_) => {}
                }
            }
        });
        if gone.await.is_err() {
            tracing::warn!("MQTT: the connection did not close within 5 s of DISCONNECT");
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

/// Runs `step` while turning the event loop; none when the connection
/// failed first.
async fn turning<T>(eventloop: &mut EventLoop, step: impl Future<Output = T>) -> Option<T> {
    tokio::pin!(step);
    loop {
        tokio::select! {
            done = &mut step => return Some(done),
            polled = eventloop.poll() => if polled.is_err() {
                return None;
            },
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
    use crate::node::mqtt::client::{Client, EventLoop, Polled, Received};
    use crate::node::mqtt::local::{self, LocalOptions};
    use crate::node::mqtt::test_mosquitto::Mosquitto;

    fn free() -> std::net::SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
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
        let first = messages(&mut eventloop, 100).await;
        assert_eq!(first.len(), 100, "the first burst did not arrive");
        let acks = AckOrder::new(client.clone());
        let seqs: Vec<u64> = first.iter().map(|_| acks.enqueue()).collect();
        for (seq, message) in seqs.into_iter().zip(first) {
            acks.complete(seq, Some(message.raw));
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

    /// `step` within 10 s, or the test fails naming it.
    async fn within<T>(step: &str, future: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), future)
            .await
            .unwrap_or_else(|_| panic!("{step}: nothing within 10 s"))
    }

    /// How the node's subscriber reaches the broker in a test.
    #[derive(Clone)]
    enum Link {
        Tcp(std::net::SocketAddr),
        InProcess(rumqttd::local::LocalLinks),
    }

    /// A v5 session at the broker that outlives the connection (as the
    /// node's subscriber keeps one); over TCP with a request channel of 4.
    /// Returns whether the broker still had the session.
    async fn persistent_subscriber(link: &Link) -> (Client, EventLoop, bool) {
        let (client, mut eventloop) = match link {
            Link::Tcp(at) => {
                let mut options =
                    c5::MqttOptions::new("brink-flushtest-tcp", at.ip().to_string(), at.port());
                options.set_manual_acks(true);
                options.set_clean_start(false);
                options.set_session_expiry_interval(Some(3600));
                let (client, eventloop) = c5::AsyncClient::new(options, 4);
                (Client::V5(client), EventLoop::V5(Box::new(eventloop)))
            }
            Link::InProcess(links) => {
                let (client, eventloop) = local::connect(&LocalOptions {
                    links: links.clone(),
                    client_id: "brink-flushtest-local".to_owned(),
                    persistent: true,
                    subscriber: true,
                    v5: true,
                });
                (Client::Local(client), EventLoop::Local(Box::new(eventloop)))
            }
        };
        let resumed = within("CONNACK", async {
            loop {
                if let Polled::Connected {
                    session_present, ..
                } = eventloop.poll().await.unwrap()
                {
                    break session_present;
                }
            }
        })
        .await;
        (client, eventloop, resumed)
    }

    /// The payload of a received message.
    fn payload(raw: Option<&Received>) -> Vec<u8> {
        raw.map(|m| m.payload.to_vec())
            .expect("nothing arrived after resuming the session")
    }

    /// The next `n` messages the subscriber receives, within 10 s, not
    /// acknowledged.
    async fn messages(eventloop: &mut EventLoop, n: usize) -> Vec<Received> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while got.len() < n {
            match tokio::time::timeout_at(deadline, eventloop.poll()).await {
                Ok(Ok(Polled::Message(m))) => got.push(*m),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        got
    }

    /// Shutdown's order, as `subscriber::drain` runs it: the handlers'
    /// acks are queued, the queue is flushed while the event loop turns,
    /// then DISCONNECT. An ack still queued when DISCONNECT went out would
    /// be lost with the connection, and the session would hand that
    /// message (acknowledged to the device, and handled) to the next node
    /// again. `device` is where a device publishes (MQTT 3.1.1); 20 is
    /// mosquitto's in-flight window per client.
    async fn shutdown_sends_the_acks_before_the_disconnect(link: Link, device: u16) {
        let (client, mut eventloop, _) = persistent_subscriber(&link).await;
        client.subscribe(&["t/#".to_owned()]).await.unwrap();
        within("SUBACK", async {
            while !matches!(eventloop.poll().await.unwrap(), Polled::SubAck { .. }) {}
        })
        .await;

        // Ids of their own: tests run side by side.
        let mut options = rumqttc::MqttOptions::new("flush-device", "127.0.0.1", device);
        options.set_inflight(1000);
        let (device, mut device_loop) = rumqttc::AsyncClient::new(options, 2000);
        tokio::spawn(async move { while device_loop.poll().await.is_ok() {} });
        let qos = rumqttc::QoS::AtLeastOnce;
        for i in 0..20u8 {
            device.publish("t/x", qos, false, vec![i]).await.unwrap();
        }
        let handled = messages(&mut eventloop, 20).await;
        assert_eq!(handled.len(), 20, "the burst did not arrive");

        // Every handler finished and queued its ack; over TCP only 4 fit
        // in the client's channel while the event loop is not turning.
        let acks = AckOrder::new(client.clone());
        for message in handled {
            acks.complete(acks.enqueue(), Some(message.raw));
        }
        within(
            "shutdown",
            acks.flush_then_disconnect(&client, &mut eventloop),
        )
        .await;
        drop((client, eventloop, acks));

        // The next node resumes the session. A message published now comes
        // after anything the session still holds, so it must come first.
        let (_client, mut eventloop, resumed) = persistent_subscriber(&link).await;
        assert!(resumed, "the broker did not keep the session");
        device
            .publish("t/x", qos, false, b"after".to_vec())
            .await
            .unwrap();
        let first = messages(&mut eventloop, 1).await;
        assert_eq!(
            payload(first.first()),
            b"after".to_vec(),
            "a message acknowledged before shutdown was delivered again"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acks_queued_at_shutdown_reach_mosquitto_before_the_disconnect() {
        let mosquitto = Mosquitto::start("")
            .expect("mosquitto is needed for this test: install it (scripts/test does)");
        let at = std::net::SocketAddr::from(([127, 0, 0, 1], mosquitto.port));
        shutdown_sends_the_acks_before_the_disconnect(Link::Tcp(at), mosquitto.port).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acks_queued_at_shutdown_reach_the_embedded_router_before_the_disconnect() {
        let (v4, v5) = (free(), free());
        let broker = broker::start(v4, v5, 1 << 20, "brink-flushtest", true).unwrap();
        broker.open_to_devices().await.unwrap();
        let link = Link::InProcess(broker.links.clone());
        shutdown_sends_the_acks_before_the_disconnect(link, v4.port()).await;
    }
}
