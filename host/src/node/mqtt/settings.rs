//! `[mqtt]` as a connection needs it: broker address, TLS, session and modes.

use std::sync::Arc;

use anyhow::{Context as _, bail};

use super::broker;
use super::broker::EmbeddedBroker;
use super::client::ConnectOptions;
use crate::event::mqtt::{OutputMode, PlainPolicy};
use crate::manifest::{MqttLink, MqttOutputMode, MqttProtocol, MqttSection};

/// Largest message the node accepts or sends.
pub(super) const MAX_PACKET: usize = 1024 * 1024 + 64 * 1024;

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
    /// The embedded broker reached in-process (`[mqtt] link`), instead of
    /// over `host`:`port`.
    pub local: Option<rumqttd::local::LocalLinks>,
    /// `brink up --retire`: unsubscribe at connect, so the session only
    /// hands over what it holds.
    pub retire: bool,
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
                    tls = Some(crate::node::tls::client_config(
                        &crate::node::tls::TlsFiles {
                            ca_file: ca.as_deref().map(|p| (p, "mqtt.ca_file")),
                            client_cert: cert.as_deref().map(|p| (p, "mqtt.client_cert")),
                            client_key: key.as_deref().map(|p| (p, "mqtt.client_key")),
                        },
                    )?);
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
            local: None,
            retire: section.retire,
        })
    }

    pub(super) fn connect_options(&self, suffix: &str, subscriber: bool) -> ConnectOptions {
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
            local: self.local.clone(),
        }
    }

    pub(super) fn broker(&self) -> String {
        if self.local.is_some() {
            return "the embedded broker (in-process link)".to_owned();
        }
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
        section.link == Some(MqttLink::Tcp),
    )
}
