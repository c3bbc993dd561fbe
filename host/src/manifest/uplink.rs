//! `[uplink.<name>]`: where the outbox forwards to.

use std::path::PathBuf;

use serde::Deserialize;

use super::error::{Invalid, above_zero, check_name};
use super::mqtt::{MqttOutputMode, MqttProtocol};
use super::topic::check_template;

/// `[uplink.<name>]`: a remote MQTT broker or CloudEvents HTTP endpoint the
/// outbox forwards to; exactly one of `mqtt` and `http`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkSection {
    /// `mqtt = "mqtts://cloud.example.com:8883"`: publish with QoS 1 (a PUBACK acknowledges).
    pub mqtt: Option<String>,
    /// `http = "https://ingest.example.com/events"`: POST CloudEvents (a 2xx acknowledges).
    pub http: Option<String>,
    /// `topic = "edge/plant-7/{type}"`: the MQTT topic template (`{subject}`,
    /// `{type}`, `{source}`, `{id}`); default `brink/outbox/{type}`.
    pub topic: Option<String>,
    /// `protocol = "v5"` (the default) or `"v311"`.
    #[serde(default)]
    pub protocol: MqttProtocol,
    /// `output_mode = "structured"` (the default: the whole event in the
    /// payload, readable by any subscriber) or `"binary"` (MQTT 5 only).
    #[serde(default = "structured")]
    pub output_mode: MqttOutputMode,
    /// `client_id = "plant-7-uplink"`, `username`, `password`: the MQTT session.
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `ca_file`, `client_cert`, `client_key`: TLS for `mqtts://` or `https://`.
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// `token = "…"`: an HTTP bearer token.
    pub token: Option<String>,
    /// `batched = true`: one `application/cloudevents-batch+json` request
    /// per batch, instead of one binary-mode request per event (HTTP).
    #[serde(default)]
    pub batched: bool,
    /// `max_batch = 100`: events sent together at most.
    pub max_batch: Option<usize>,
    /// `max_delay_ms = 50`: how long a batch may wait to fill up.
    pub max_delay_ms: Option<u64>,
    /// `max_event_kb = 256`: the largest event the uplink takes (its JSON
    /// form). A larger one is parked before it is sent, instead of being
    /// refused by the uplink; an MQTT uplink also applies the broker's own
    /// maximum packet size from its CONNACK (MQTT 5).
    pub max_event_kb: Option<u64>,
    /// `max_mb = 256`, `max_events = 1000000`: what the outbox may hold for this uplink.
    pub max_mb: Option<u64>,
    pub max_events: Option<u64>,
    /// `when_full = "reject"` (refuse new events) or `"drop_oldest"` (drop
    /// the oldest events of the lowest priority).
    #[serde(default)]
    pub when_full: WhenFullSetting,
    /// `priority = 0` and `ttl_ms`: of events that functions' outputs route
    /// here (`outputs = [{ uplink = "cloud" }]`).
    pub priority: Option<u8>,
    pub ttl_ms: Option<u64>,
}

fn structured() -> MqttOutputMode {
    MqttOutputMode::Structured
}

/// `when_full = "reject" | "drop_oldest"`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFullSetting {
    #[default]
    Reject,
    DropOldest,
}

impl UplinkSection {
    /// Checks `[uplink.<name>]`.
    pub(super) fn check(&self, name: &str) -> Result<(), Invalid> {
        let at = |field: &str| format!("uplink.{name}.{field}");
        check_name("uplink name", name)?;
        match (&self.mqtt, &self.http) {
            (Some(url), None) if !(url.starts_with("mqtt://") || url.starts_with("mqtts://")) => {
                return Err(Invalid::at(
                    at("mqtt"),
                    format!(
                        "{}: {url:?} must start with mqtt:// or mqtts://",
                        at("mqtt")
                    ),
                ));
            }
            (None, Some(url)) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                return Err(Invalid::at(
                    at("http"),
                    format!(
                        "{}: {url:?} must start with http:// or https://",
                        at("http")
                    ),
                ));
            }
            (Some(_), Some(_)) | (None, None) => {
                return Err(Invalid::at(
                    format!("uplink.{name}"),
                    format!(
                        "uplink.{name}: set exactly one of `mqtt = \"mqtt://host:port\"` and `http = \"https://…\"`"
                    ),
                ));
            }
            _ => {}
        }
        if self.protocol == MqttProtocol::V311 && self.output_mode == MqttOutputMode::Binary {
            return Err(Invalid::at(
                at("output_mode"),
                format!(
                    "{}: \"binary\" needs MQTT 5; MQTT 3.1.1 carries CloudEvents in structured mode only",
                    at("output_mode")
                ),
            ));
        }
        if let Some(template) = &self.topic {
            check_template(template).map_err(|e| {
                Invalid::at(
                    at("topic"),
                    format!("{}: topic template {template:?} {e}", at("topic")),
                )
            })?;
        }
        if self
            .priority
            .is_some_and(|p| p > crate::outbox::MAX_PRIORITY)
        {
            return Err(Invalid::at(
                at("priority"),
                format!("{}: must be 0 to 9", at("priority")),
            ));
        }
        above_zero(
            &format!("uplink.{name}."),
            &[
                ("max_batch", self.max_batch == Some(0)),
                ("max_mb", self.max_mb == Some(0)),
                ("max_event_kb", self.max_event_kb == Some(0)),
                ("max_events", self.max_events == Some(0)),
                ("ttl_ms", self.ttl_ms == Some(0)),
            ],
        )
    }
}
