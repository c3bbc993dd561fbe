//! The in-process link to the embedded broker: the node's subscriber and
//! publisher hand packets to rumqttd's router through its shared buffers
//! instead of two loopback TCP connections (ADR 0003).
//!
//! The router treats such a link as it treats a connection: the same
//! sessions, QoS 1 packet ids, held device acknowledgements, shared
//! subscriptions and back-pressure (it stops forwarding to a link that
//! stops reading, and resumes once told it is ready). What goes away is
//! encoding, two socket writes and two socket reads per packet, and the
//! two event loops' wake-ups that came with them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rumqttd::local::{LinkRx, LinkTx, LocalLinks};
use rumqttd::protocol::{
    Disconnect, DisconnectReasonCode, Filter, Packet, PubAck, PubAckReason, Publish,
    PublishProperties, QoS, RetainForwardRule, Subscribe, SubscribeReasonCode, Unsubscribe,
};
use rumqttd::{Ack, Notification};

use super::client::{Polled, Raw, Received, refused};
use crate::event::mqtt::Outgoing;

/// How a link to the embedded broker is made.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub links: LocalLinks,
    pub client_id: String,
    /// Keep the session (subscriptions, unacknowledged messages) when the
    /// link is replaced.
    pub persistent: bool,
    /// The subscriber: its acknowledgements release the devices' held ones.
    pub subscriber: bool,
    /// MQTT 5: properties travel; MQTT 3.1.1 drops them, as on the wire.
    pub v5: bool,
}

/// What the client half and the event loop half share.
struct Shared {
    /// The router's side of the link, once the event loop has built it.
    tx: tokio::sync::Mutex<Option<LinkTx>>,
    /// Packet ids of publishes handed over, not yet reported as sent.
    sent: Mutex<VecDeque<u16>>,
    /// Packet ids: subscribes and publishes share one counter, 1..=65535.
    next_pkid: Mutex<u16>,
    v5: bool,
}

impl Shared {
    fn pkid(&self) -> u16 {
        let mut next = super::lock(&self.next_pkid);
        *next = next.checked_add(1).unwrap_or(1);
        *next
    }

    async fn send(&self, packet: Packet) -> anyhow::Result<()> {
        let mut tx = self.tx.lock().await;
        let Some(tx) = tx.as_mut() else {
            anyhow::bail!("the in-process link to the embedded broker is not connected");
        };
        tx.send(packet)
            .await
            .map_err(|e| anyhow::anyhow!("the embedded broker's router stopped: {e}"))?;
        Ok(())
    }
}

/// The half that sends: subscribes, publishes and acknowledgements.
#[derive(Clone)]
pub struct LocalClient {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LocalClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalClient")
    }
}

/// The half that receives, and builds the link on its first poll.
pub struct LocalLoop {
    shared: Arc<Shared>,
    options: LocalOptions,
    rx: Option<LinkRx>,
    /// Notifications taken from the router, not yet handed out.
    pending: VecDeque<Notification>,
    /// The router unscheduled this link: tell it to go on once `pending`
    /// is handed out.
    wake: bool,
}

impl std::fmt::Debug for LocalLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLoop")
            .field("client_id", &self.options.client_id)
            .field("linked", &self.rx.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for LocalLoop {
    /// Clones of the client outlive a replaced link: they must not reach
    /// the router under a connection id it may give to the next link.
    fn drop(&mut self) {
        if let Ok(mut tx) = self.shared.tx.try_lock() {
            *tx = None;
        }
    }
}

/// A fresh client and event loop for one link.
pub fn connect(options: &LocalOptions) -> (LocalClient, LocalLoop) {
    let shared = Arc::new(Shared {
        tx: tokio::sync::Mutex::new(None),
        sent: Mutex::new(VecDeque::new()),
        next_pkid: Mutex::new(0),
        v5: options.v5,
    });
    (
        LocalClient {
            shared: shared.clone(),
        },
        LocalLoop {
            shared,
            options: options.clone(),
            rx: None,
            pending: VecDeque::new(),
            wake: false,
        },
    )
}

impl LocalClient {
    pub async fn subscribe(&self, filters: &[String]) -> anyhow::Result<()> {
        let filters = filters
            .iter()
            .map(|path| Filter {
                path: path.clone(),
                qos: QoS::AtLeastOnce,
                nolocal: false,
                preserve_retain: false,
                retain_forward_rule: RetainForwardRule::OnEverySubscribe,
            })
            .collect();
        let pkid = self.shared.pkid();
        self.shared
            .send(Packet::Subscribe(Subscribe { pkid, filters }, None))
            .await
    }

    pub async fn unsubscribe(&self, filters: &[String]) -> anyhow::Result<()> {
        let pkid = self.shared.pkid();
        let filters = filters.to_vec();
        self.shared
            .send(Packet::Unsubscribe(Unsubscribe { pkid, filters }, None))
            .await
    }

    /// Hands over a QoS 1 publish; the event loop reports it as sent before
    /// the router's PUBACK for it, as a network client's does.
    pub async fn publish(&self, topic: &str, message: Outgoing) -> anyhow::Result<()> {
        let properties = self.shared.v5.then(|| PublishProperties {
            content_type: message.content_type,
            user_properties: message.user_properties,
            ..Default::default()
        });
        let mut tx = self.shared.tx.lock().await;
        let Some(link) = tx.as_mut() else {
            anyhow::bail!("the in-process link to the embedded broker is not connected");
        };
        let pkid = self.shared.pkid();
        // Recorded before the router can see the publish, so its PUBACK
        // never overtakes the report that it went out.
        super::lock(&self.shared.sent).push_back(pkid);
        let publish = Publish::at_least_once(
            Bytes::from(topic.to_owned()),
            Bytes::from(message.payload),
            pkid,
        );
        if let Err(e) = link.send(Packet::Publish(publish, properties)).await {
            super::lock(&self.shared.sent).retain(|p| *p != pkid);
            anyhow::bail!("the embedded broker's router stopped: {e}");
        }
        Ok(())
    }

    /// Hands the acknowledgement of `pkid` to the router, waiting for room.
    /// Its one caller, `AckOrder`'s task, sends acks in order; a second
    /// queue here would let a DISCONNECT overtake acks already flushed.
    /// With no link, the router has ended the session's connection and
    /// delivers the message again on the next one.
    pub async fn ack(&self, pkid: u16) -> anyhow::Result<()> {
        self.shared.send(puback(pkid)).await
    }

    pub async fn disconnect(&self) -> anyhow::Result<()> {
        let disconnect = Disconnect {
            reason_code: DisconnectReasonCode::NormalDisconnection,
        };
        self.shared.send(Packet::Disconnect(disconnect, None)).await
    }
}

/// The router grants with the QoS codes (MQTT 3.1.1's) or `Success`.
fn granted(code: &SubscribeReasonCode) -> bool {
    use SubscribeReasonCode as C;
    matches!(code, C::QoS0 | C::QoS1 | C::QoS2 | C::Success(_))
}

fn puback(pkid: u16) -> Packet {
    Packet::PubAck(
        PubAck {
            pkid,
            reason: PubAckReason::Success,
        },
        None,
    )
}

impl LocalLoop {
    /// One turn: builds the link when there is none, else the next thing
    /// that happened on it.
    pub async fn poll(&mut self) -> anyhow::Result<Polled> {
        if self.rx.is_none() {
            return self.connect().await;
        }
        loop {
            if let Some(pkid) = super::lock(&self.shared.sent).pop_front() {
                return Ok(Polled::Sent(pkid));
            }
            if let Some(notification) = self.pending.pop_front() {
                if let Some(polled) = self.convert(notification).await {
                    return Ok(polled);
                }
                continue;
            }
            let Some(rx) = self.rx.as_mut() else {
                return Ok(Polled::Disconnected);
            };
            if std::mem::take(&mut self.wake) && rx.wake().await.is_err() {
                return Ok(self.closed().await);
            }
            match rx.next().await {
                Ok(Some(notification)) => self.pending.push_back(notification),
                Ok(None) => {}
                Err(_) => return Ok(self.closed().await),
            }
        }
    }

    /// The router let go of the link: after a DISCONNECT, or when a newer
    /// link took the client id over.
    async fn closed(&mut self) -> Polled {
        self.rx = None;
        *self.shared.tx.lock().await = None;
        Polled::Disconnected
    }

    async fn connect(&mut self) -> anyhow::Result<Polled> {
        let options = &self.options;
        let hold = if options.subscriber {
            rumqttd::AckHold::Node
        } else {
            rumqttd::AckHold::None
        };
        // Waits for the router's answer without blocking the thread
        // (vendored patch 11), where a blocking build took a thread of the
        // blocking pool for each link.
        let built = options
            .links
            .builder(&options.client_id)
            .clean_session(!options.persistent)
            .dynamic_filters(true)
            .ack_hold(hold)
            .build_async()
            .await
            .map_err(|e| anyhow::anyhow!("the embedded broker refused the node's link: {e}"))?;
        let (tx, rx, ack) = built;
        let session_present = matches!(
            ack,
            Notification::DeviceAck(Ack::ConnAck(_, ref c, _)) if c.session_present
        );
        *self.shared.tx.lock().await = Some(tx);
        self.rx = Some(rx);
        Ok(Polled::Connected {
            session_present,
            max_packet: None,
        })
    }

    async fn convert(&mut self, notification: Notification) -> Option<Polled> {
        Some(match notification {
            Notification::Forward(forward) => {
                let publish = forward.publish;
                let (content_type, user_properties) = match forward.properties {
                    Some(p) if self.shared.v5 => (p.content_type, p.user_properties),
                    _ => (None, Vec::new()),
                };
                let pkid = (publish.qos() != QoS::AtMostOnce).then(|| publish.pkid());
                Polled::Message(Box::new(Received {
                    topic: String::from_utf8_lossy(&publish.topic).into_owned(),
                    payload: publish.payload,
                    content_type,
                    user_properties,
                    raw: Raw::Local(pkid),
                }))
            }
            Notification::DeviceAck(Ack::PubAck(ack) | Ack::PubAckWithProperties(ack, _)) => {
                Polled::PubAck {
                    pkid: ack.pkid,
                    refused: None,
                }
            }
            Notification::DeviceAck(Ack::SubAck(ack) | Ack::SubAckWithProperties(ack, _)) => {
                Polled::SubAck {
                    refused: refused(ack.return_codes.iter().map(|c| !granted(c))),
                }
            }
            Notification::Unschedule => {
                self.wake = true;
                return None;
            }
            Notification::Disconnect(..) => self.closed().await,
            _ => Polled::Other,
        })
    }
}
