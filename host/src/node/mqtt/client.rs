//! One face over rumqttc's MQTT 3.1.1 and MQTT 5 clients, so the trigger and
//! the publisher are written once.

use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5 as c5;
use rumqttc::v5::mqttbytes::v5 as p5;

use super::local::{self, LocalClient, LocalLoop, LocalOptions};
use crate::event::mqtt::Outgoing;

/// Packets one connection may have unacknowledged in each direction.
pub const INFLIGHT: u16 = 256;
/// Requests (publishes, acks) queued towards the event loop.
const REQUEST_CAPACITY: usize = 4096;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub host: String,
    pub port: u16,
    pub v5: bool,
    pub client_id: String,
    pub credentials: Option<(String, String)>,
    /// Keep the broker-side session (subscriptions and queued QoS 1
    /// messages) across reconnects.
    pub persistent: bool,
    /// Acknowledge incoming QoS 1 messages by hand, after handling.
    pub manual_acks: bool,
    pub max_packet: usize,
    /// TLS to the broker; `None` is plain TCP.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// The embedded broker's router, reached in-process instead of over
    /// `host`:`port` ([`super::local`]).
    pub local: Option<rumqttd::local::LocalLinks>,
}

fn transport(options: &ConnectOptions) -> rumqttc::Transport {
    match &options.tls {
        Some(config) => {
            rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(config.clone()))
        }
        None => rumqttc::Transport::tcp(),
    }
}

#[derive(Clone, Debug)]
pub enum Client {
    V4(rumqttc::AsyncClient),
    V5(c5::AsyncClient),
    Local(LocalClient),
}

pub enum EventLoop {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<c5::EventLoop>),
    Local(Box<LocalLoop>),
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EventLoop::V4(_) => "EventLoop::V4",
            EventLoop::V5(_) => "EventLoop::V5",
            EventLoop::Local(_) => "EventLoop::Local",
        })
    }
}

/// A received PUBLISH, kept whole so it can be acknowledged.
#[derive(Debug, Clone)]
pub enum Raw {
    V4(rumqttc::Publish),
    V5(p5::Publish),
    /// From the in-process link: the packet id to acknowledge (none for QoS 0).
    Local(Option<u16>),
}

impl Raw {
    /// The QoS the message arrived with.
    pub fn qos(&self) -> u8 {
        match self {
            Self::V4(p) => p.qos as u8,
            Self::V5(p) => p.qos as u8,
            Self::Local(Some(_)) => 1,
            Self::Local(None) => 0,
        }
    }
}

/// A received message.
#[derive(Debug)]
pub struct Received {
    pub topic: String,
    pub payload: Bytes,
    pub content_type: Option<String>,
    pub user_properties: Vec<(String, String)>,
    pub raw: Raw,
}

/// Why the broker refused one message (an MQTT 5 PUBACK reason code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
    /// The broker will refuse this message whenever it is sent: its topic
    /// or payload format is invalid, or the client may not publish there.
    pub permanent: bool,
}

/// What one turn of the event loop produced.
#[derive(Debug)]
pub enum Polled {
    Connected {
        session_present: bool,
        /// The largest packet the broker accepts (MQTT 5 CONNACK); none: no limit said.
        max_packet: Option<usize>,
    },
    /// Indexes of the subscription's filters that the broker refused.
    SubAck {
        refused: Vec<usize>,
    },
    Message(Box<Received>),
    /// A QoS 1 publish went out with packet id `pkid`.
    Sent(u16),
    /// The broker acknowledged `pkid` (or refused it, with a reason).
    PubAck {
        pkid: u16,
        refused: Option<Refusal>,
    },
    Disconnected,
    Other,
}

/// TCP settings of every connection: acks and small publishes go out at
/// once instead of waiting for Nagle's algorithm (tens of ms behind a
/// delayed ACK).
fn network_options() -> rumqttc::NetworkOptions {
    let mut options = rumqttc::NetworkOptions::new();
    options.set_tcp_nodelay(true);
    options.set_connection_timeout(5);
    options
}

/// A fresh client and its event loop.
pub fn connect(options: &ConnectOptions) -> (Client, EventLoop) {
    let keep_alive = Duration::from_secs(30);
    if let Some(links) = &options.local {
        let (client, eventloop) = local::connect(&LocalOptions {
            links: links.clone(),
            client_id: options.client_id.clone(),
            persistent: options.persistent,
            subscriber: options.manual_acks,
            v5: options.v5,
        });
        (Client::Local(client), EventLoop::Local(Box::new(eventloop)))
    } else if options.v5 {
        let mut o = c5::MqttOptions::new(&options.client_id, &options.host, options.port);
        o.set_keep_alive(keep_alive)
            .set_clean_start(!options.persistent)
            .set_manual_acks(options.manual_acks)
            .set_max_packet_size(Some(u32::try_from(options.max_packet).unwrap_or(u32::MAX)))
            .set_receive_maximum(Some(INFLIGHT))
            .set_outgoing_inflight_upper_limit(INFLIGHT)
            .set_connection_timeout(5)
            .set_network_options(network_options())
            .set_transport(transport(options));
        if options.persistent {
            // Long enough to ride out a restart or an outage; short enough
            // that brokers forget random ids.
            o.set_session_expiry_interval(Some(24 * 3600));
        }
        if let Some((user, pass)) = &options.credentials {
            o.set_credentials(user, pass);
        }
        let (client, eventloop) = c5::AsyncClient::new(o, REQUEST_CAPACITY);
        (Client::V5(client), EventLoop::V5(Box::new(eventloop)))
    } else {
        let mut o = rumqttc::MqttOptions::new(&options.client_id, &options.host, options.port);
        o.set_keep_alive(keep_alive)
            .set_clean_session(!options.persistent)
            .set_manual_acks(options.manual_acks)
            .set_max_packet_size(options.max_packet, options.max_packet)
            .set_inflight(INFLIGHT)
            .set_transport(transport(options));
        if let Some((user, pass)) = &options.credentials {
            o.set_credentials(user, pass);
        }
        let (client, mut eventloop) = rumqttc::AsyncClient::new(o, REQUEST_CAPACITY);
        eventloop.set_network_options(network_options());
        (Client::V4(client), EventLoop::V4(Box::new(eventloop)))
    }
}

impl Client {
    /// Subscribes to `filters` at QoS 1, in one SUBSCRIBE.
    pub async fn subscribe(&self, filters: &[String]) -> anyhow::Result<()> {
        match self {
            Client::V4(c) => {
                c.subscribe_many(
                    filters.iter().map(|f| {
                        rumqttc::SubscribeFilter::new(f.clone(), rumqttc::QoS::AtLeastOnce)
                    }),
                )
                .await?
            }
            Client::V5(c) => {
                c.subscribe_many(
                    filters
                        .iter()
                        .map(|f| p5::Filter::new(f.clone(), c5::mqttbytes::QoS::AtLeastOnce)),
                )
                .await?
            }
            Client::Local(c) => c.subscribe(filters).await?,
        }
        Ok(())
    }

    /// Unsubscribes from `filters`.
    pub async fn unsubscribe(&self, filters: &[String]) -> anyhow::Result<()> {
        if let Client::Local(c) = self {
            return c.unsubscribe(filters).await;
        }
        for filter in filters {
            match self {
                Client::V4(c) => c.unsubscribe(filter.clone()).await?,
                Client::V5(c) => c.unsubscribe(filter.clone()).await?,
                Client::Local(_) => {}
            }
        }
        Ok(())
    }

    /// Queues a QoS 1 publish; [`Polled::Sent`] and [`Polled::PubAck`] follow.
    pub async fn publish(&self, topic: &str, message: Outgoing) -> anyhow::Result<()> {
        match self {
            Client::V4(c) => {
                c.publish(topic, rumqttc::QoS::AtLeastOnce, false, message.payload)
                    .await?
            }
            Client::V5(c) => {
                let properties = p5::PublishProperties {
                    content_type: message.content_type,
                    user_properties: message.user_properties,
                    ..Default::default()
                };
                c.publish_with_properties(
                    topic,
                    c5::mqttbytes::QoS::AtLeastOnce,
                    false,
                    message.payload,
                    properties,
                )
                .await?
            }
            Client::Local(c) => c.publish(topic, message).await?,
        }
        Ok(())
    }

    /// Acknowledges a received message (nothing to do for QoS 0).
    pub async fn ack(&self, raw: &Raw) -> anyhow::Result<()> {
        match (self, raw) {
            (Client::V4(c), Raw::V4(p)) => c.ack(p).await?,
            (Client::V5(c), Raw::V5(p)) => c.ack(p).await?,
            (Client::Local(c), Raw::Local(Some(pkid))) => c.ack(*pkid).await?,
            (Client::Local(_), Raw::Local(None)) => {}
            _ => anyhow::bail!("acknowledging a message on a client of another MQTT version"),
        }
        Ok(())
    }

    pub async fn disconnect(&self) -> anyhow::Result<()> {
        match self {
            Client::V4(c) => c.disconnect().await?,
            Client::V5(c) => c.disconnect().await?,
            Client::Local(c) => c.disconnect().await?,
        }
        Ok(())
    }
}

/// Whether `error` is a TLS failure (a refused certificate, a failed handshake).
pub fn is_tls_error(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<rumqttc::ConnectionError>(),
        Some(rumqttc::ConnectionError::Tls(_))
    ) || matches!(
        error.downcast_ref::<c5::ConnectionError>(),
        Some(c5::ConnectionError::Tls(_))
    )
}

impl EventLoop {
    /// One turn: connects when not connected, else the next packet in or out.
    pub async fn poll(&mut self) -> anyhow::Result<Polled> {
        match self {
            EventLoop::Local(lp) => lp.poll().await,
            EventLoop::V4(lp) => {
                use rumqttc::{Event, Outgoing, Packet};
                Ok(match lp.poll().await? {
                    Event::Incoming(Packet::ConnAck(ack)) => Polled::Connected {
                        session_present: ack.session_present,
                        max_packet: None,
                    },
                    Event::Incoming(Packet::SubAck(ack)) => Polled::SubAck {
                        refused: refused(
                            ack.return_codes
                                .iter()
                                .map(|c| !matches!(c, rumqttc::SubscribeReasonCode::Success(_))),
                        ),
                    },
                    Event::Incoming(Packet::Publish(p)) => Polled::Message(Box::new(Received {
                        topic: p.topic.clone(),
                        payload: p.payload.clone(),
                        content_type: None,
                        user_properties: Vec::new(),
                        raw: Raw::V4(p),
                    })),
                    Event::Incoming(Packet::PubAck(ack)) => Polled::PubAck {
                        pkid: ack.pkid,
                        refused: None,
                    },
                    Event::Outgoing(Outgoing::Publish(pkid)) if pkid != 0 => Polled::Sent(pkid),
                    Event::Outgoing(Outgoing::Disconnect) => Polled::Disconnected,
                    _ => Polled::Other,
                })
            }
            EventLoop::V5(lp) => {
                use c5::{Event, Incoming};
                use rumqttc::Outgoing;
                Ok(match lp.poll().await? {
                    Event::Incoming(Incoming::ConnAck(ack)) => Polled::Connected {
                        session_present: ack.session_present,
                        max_packet: ack
                            .properties
                            .as_ref()
                            .and_then(|p| p.max_packet_size)
                            .and_then(|m| usize::try_from(m).ok()),
                    },
                    Event::Incoming(Incoming::SubAck(ack)) => Polled::SubAck {
                        refused: refused(
                            ack.return_codes
                                .iter()
                                .map(|c| !matches!(c, p5::SubscribeReasonCode::Success(_))),
                        ),
                    },
                    Event::Incoming(Incoming::Publish(p)) => {
                        let (content_type, user_properties) = match &p.properties {
                            Some(props) => {
                                (props.content_type.clone(), props.user_properties.clone())
                            }
                            None => (None, Vec::new()),
                        };
                        Polled::Message(Box::new(Received {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: p.payload.clone(),
                            content_type,
                            user_properties,
                            raw: Raw::V5(p),
                        }))
                    }
                    Event::Incoming(Incoming::PubAck(ack)) => Polled::PubAck {
                        pkid: ack.pkid,
                        refused: refusal(ack.reason),
                    },
                    Event::Outgoing(Outgoing::Publish(pkid)) if pkid != 0 => Polled::Sent(pkid),
                    Event::Outgoing(Outgoing::Disconnect) => Polled::Disconnected,
                    _ => Polled::Other,
                })
            }
        }
    }
}

/// What an MQTT 5 PUBACK's reason says of the message; none: accepted.
fn refusal(reason: p5::PubAckReason) -> Option<Refusal> {
    use p5::PubAckReason as R;
    match reason {
        R::Success | R::NoMatchingSubscribers => None,
        other => Some(Refusal {
            reason: format!("the broker refused the message: {other:?}"),
            permanent: matches!(
                other,
                R::TopicNameInvalid | R::PayloadFormatInvalid | R::NotAuthorized
            ),
        }),
    }
}

pub(super) fn refused(failed: impl Iterator<Item = bool>) -> Vec<usize> {
    failed
        .enumerate()
        .filter_map(|(i, failed)| failed.then_some(i))
        .collect()
}
