//! `[mqtt]`: the broker the node uses, embedded or external.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::error::Invalid;

/// `[mqtt]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    /// `listen = "127.0.0.1:1883"`: where the embedded broker serves MQTT 3.1.1, when no `url` is set.
    #[serde(default = "default_mqtt_listen")]
    pub listen: SocketAddr,
    /// `listen_v5 = "127.0.0.1:1884"`: where the embedded broker serves MQTT 5 (its
    /// listeners speak one protocol version each).
    #[serde(default = "default_mqtt_listen_v5")]
    pub listen_v5: SocketAddr,
    /// `url = "mqtt://broker.local:1883"` or `url = "mqtts://broker.local:8883"`
    /// (TLS): an external broker instead of the embedded one.
    pub url: Option<String>,
    /// `ca_file = "certs/ca.pem"`: with `mqtts://`, the CA certificates (PEM)
    /// the broker's certificate must chain to [default: the system's trusted
    /// roots]. Relative to the manifest.
    pub ca_file: Option<PathBuf>,
    /// `client_cert = "certs/gw-7.pem"`: with `mqtts://`, a client certificate
    /// chain (PEM) for brokers that require mutual TLS; needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// `client_key = "certs/gw-7.key"`: the client certificate's private key (PEM).
    pub client_key: Option<PathBuf>,
    /// `username = "edge"`
    pub username: Option<String>,
    /// `password = "…"`
    pub password: Option<String>,
    /// `client_id = "brink-gw-7"` (default: `brink-<node id>`, the node id made
    /// once and kept in the data directory's `node-id`). The id is stable, so
    /// the broker keeps the node's session (and queues its QoS 1 messages)
    /// across connection drops and restarts, on MQTT 3.1.1 and 5 alike.
    pub client_id: Option<String>,
    /// `protocol = "v5"` or `"v311"`.
    #[serde(default)]
    pub protocol: MqttProtocol,
    /// `output_mode = "binary"` or `"structured"`: how outputs are published (binary needs MQTT 5).
    #[serde(default)]
    pub output_mode: MqttOutputMode,
    /// `shared_group = "line-1"`: subscribe as `$share/line-1/<filter>` so hosts split the load.
    pub shared_group: Option<String>,
    /// `plain_event_type = "com.brink.mqtt.message"`: the type given to plain (non-CloudEvents) payloads.
    #[serde(default = "default_plain_event_type")]
    pub plain_event_type: String,
    /// `max_retries = 3`: attempts after the first before an event is dead-lettered.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// `link = "in-process"` or `"tcp"`: how the node reaches the embedded
    /// broker [default: `"in-process"`, straight into its router, with the
    /// same acknowledgements as a connection]. `"tcp"` uses loopback
    /// listeners of the node's own, the path an external broker takes; it
    /// is there to compare and to diagnose. Only for the embedded broker.
    pub link: Option<MqttLink>,
    /// Not a setting: `brink up --retire` sets it. The node resumes its
    /// broker session, unsubscribes, handles what the session held, then
    /// ends the session ([`crate::node::Node::retire`]).
    #[serde(skip)]
    pub retire: bool,
}

impl Default for MqttSection {
    fn default() -> Self {
        Self {
            listen: default_mqtt_listen(),
            listen_v5: default_mqtt_listen_v5(),
            url: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            username: None,
            password: None,
            client_id: None,
            protocol: MqttProtocol::default(),
            output_mode: MqttOutputMode::default(),
            shared_group: None,
            plain_event_type: default_plain_event_type(),
            max_retries: default_max_retries(),
            link: None,
            retire: false,
        }
    }
}

fn default_mqtt_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1883))
}

fn default_mqtt_listen_v5() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1884))
}

fn default_plain_event_type() -> String {
    "com.brink.mqtt.message".to_owned()
}

fn default_max_retries() -> u32 {
    3
}

/// `protocol = "v5" | "v311"`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MqttProtocol {
    #[default]
    V5,
    V311,
}

/// `link = "in-process" | "tcp"`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MqttLink {
    InProcess,
    Tcp,
}

/// `output_mode = "binary" | "structured"`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MqttOutputMode {
    #[default]
    Binary,
    Structured,
}

impl MqttSection {
    pub(super) fn check(&self) -> Result<(), Invalid> {
        if let Some(url) = &self.url
            && !(url.starts_with("mqtt://") || url.starts_with("mqtts://"))
        {
            return Err(Invalid::at(
                "mqtt.url",
                format!("mqtt.url {url:?} must start with mqtt:// or mqtts://"),
            ));
        }
        let tls = self
            .url
            .as_deref()
            .is_some_and(|url| url.starts_with("mqtts://"));
        for (field, set) in [
            ("ca_file", self.ca_file.is_some()),
            ("client_cert", self.client_cert.is_some()),
            ("client_key", self.client_key.is_some()),
        ] {
            if set && !tls {
                return Err(Invalid::at(
                    format!("mqtt.{field}"),
                    format!(
                        "mqtt.{field} is set, but mqtt.url is not an mqtts:// URL: TLS settings need a TLS broker"
                    ),
                ));
            }
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(Invalid::at(
                "mqtt.client_cert",
                "mqtt.client_cert and mqtt.client_key go together: set both for mutual TLS, or neither",
            ));
        }
        if self.url.is_some() && self.link.is_some() {
            return Err(Invalid::at(
                "mqtt.link",
                "mqtt.link chooses how the node reaches the embedded broker, but mqtt.url names an external one: remove one of the two",
            ));
        }
        if self.protocol == MqttProtocol::V311 && self.output_mode == MqttOutputMode::Binary {
            return Err(Invalid::at(
                "mqtt.output_mode",
                "mqtt.output_mode \"binary\" needs MQTT 5; MQTT 3.1.1 carries CloudEvents in structured mode only: set output_mode = \"structured\"",
            ));
        }
        Ok(())
    }
}
