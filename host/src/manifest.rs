//! The app manifest, `brink.toml`: which functions a host runs, what triggers
//! them, where their outputs go, and their config, grants and limits.
//!
//! ```toml
//! brink_manifest_version = 1
//!
//! [function.filter]
//! source = "functions/filter"
//! triggers = [{ mqtt = "sensors/+/temperature" }, { http = "/temperature" }]
//! outputs = [{ function = "transform" }]
//! config = { threshold = "30" }
//! limits = { timeout_ms = 200, memory_mb = 32, concurrency = 8 }
//! ```
//!
//! Unknown keys are errors, and every error names the file, the line and
//! column, and the field.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::{FunctionSpec, Limits};

/// The manifest version this host reads.
pub const MANIFEST_VERSION: u32 = 1;

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// A well-formed file whose content is wrong; `at` is the (line,
    /// column) of the setting at fault, when the error names one.
    #[error("{path}{}: {message}", at.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
    Invalid {
        path: String,
        at: Option<(usize, usize)>,
        message: String,
    },
}

/// `brink.toml`, version 1.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// `brink_manifest_version = 1`: the format's version (required).
    pub brink_manifest_version: u32,
    /// `app = "line-3"`: the app's name, which namespaces its key-value
    /// buckets, so two apps' `default` buckets never meet. Default `default`.
    #[serde(default = "default_app")]
    pub app: String,
    /// `data_dir = "/var/lib/brink"`: where the host keeps key-value state
    /// and the outbox, relative to the manifest; default `brink up
    /// --data-dir`, else the user's data directory (`~/.local/share/brink/data`
    /// on Linux).
    pub data_dir: Option<PathBuf>,
    /// `[mqtt]`: the broker the host uses.
    #[serde(default)]
    pub mqtt: MqttSection,
    /// `[http]`: the host's HTTP server.
    #[serde(default)]
    pub http: HttpSection,
    /// `[kv]`: where key-value state lives, and its limits.
    #[serde(default)]
    pub kv: KvSection,
    /// `[admin]`: the admin API (`brink kv`, ...).
    #[serde(default)]
    pub admin: AdminSection,
    /// `[uplink.<name>]`: where the outbox forwards to, one table per uplink.
    #[serde(default)]
    pub uplink: BTreeMap<String, UplinkSection>,
    /// `[nn]`: inference settings every model shares.
    #[serde(default)]
    pub nn: NnSection,
    /// `[model.<name>]`: the models the host loads once at start and shares
    /// with every function granted them, one table per model.
    #[serde(default)]
    pub model: BTreeMap<String, ModelSection>,
    /// `[function.<name>]`: one table per function.
    #[serde(default)]
    pub function: BTreeMap<String, FunctionSection>,
    /// `[registry]`: tenants may deploy functions to this node at run time
    /// through the admin API (`brink deploy`); absent, the node runs only
    /// the functions above.
    pub registry: Option<RegistrySection>,
}

/// `[registry]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySection {
    /// `trusted_keys = ["ed25519:…"]`: public keys (`brink keygen`) whose
    /// signatures count towards deploying a component.
    #[serde(default)]
    pub trusted_keys: Vec<String>,
    /// `required_signatures = 2`: how many distinct trusted keys must have
    /// signed a component's digest, name and version (N of M). Default 1
    /// when `trusted_keys` is set, else 0 (signatures not checked).
    pub required_signatures: Option<usize>,
    /// `mqtt = true`: tenants' functions may take MQTT triggers and publish
    /// MQTT outputs under their topics; the node connects to `[mqtt]` (the
    /// embedded broker when it names no `url`) even when none of the
    /// manifest's functions uses MQTT. Default false.
    #[serde(default)]
    pub mqtt: bool,
}

impl RegistrySection {
    /// The trust policy these settings describe.
    pub fn policy(&self) -> Result<brink_registry::TrustPolicy, String> {
        let keys = self
            .trusted_keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                brink_registry::PublicKey::parse(k)
                    .map_err(|e| format!("registry.trusted_keys[{i}]: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let required = self
            .required_signatures
            .unwrap_or(usize::from(!keys.is_empty()));
        brink_registry::TrustPolicy::new(keys, required)
            .map_err(|e| format!("registry.required_signatures: {e}"))
    }
}

/// `[nn]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NnSection {
    /// `max_load_mb = 16`: the largest model a function granted
    /// `load_models` may load from bytes, in MiB.
    pub max_load_mb: Option<usize>,
    /// `onnxruntime = "/opt/onnxruntime/lib/libonnxruntime.so"`: the ONNX
    /// Runtime library for `backend = "onnxruntime"`, relative to the
    /// manifest; default `ORT_DYLIB_PATH`.
    pub onnxruntime: Option<PathBuf>,
}

impl NnSection {
    /// The node's inference settings, with paths relative to `base`.
    pub fn config(&self, base: &Path) -> crate::nn::NnConfig {
        let defaults = crate::nn::NnConfig::default();
        crate::nn::NnConfig {
            max_load_bytes: self
                .max_load_mb
                .map_or(defaults.max_load_bytes, |mb| mb.saturating_mul(1 << 20)),
            onnxruntime_library: self.onnxruntime.as_ref().map(|p| base.join(p)),
        }
    }
}

/// What a `gpu` model does where no GPU can be used: `fallback = "cpu"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    Cpu,
}

/// `[model.<name>]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// `path = "models/digits.onnx"`: the ONNX file, relative to the manifest.
    pub path: PathBuf,
    /// `backend = "tract"` (pure Rust, CPU; the default) or `"onnxruntime"`
    /// (CPU or CUDA; needs the ONNX Runtime library, see `[nn] onnxruntime`).
    #[serde(default)]
    pub backend: crate::nn::BackendKind,
    /// `target = "cpu"` (the default) or `"gpu"` (onnxruntime with CUDA).
    #[serde(default)]
    pub target: crate::nn::Target,
    /// `fallback = "cpu"`: run a `gpu` model on the CPU where CUDA cannot
    /// start, instead of refusing to start.
    pub fallback: Option<Fallback>,
    /// `max_batch = 32`: most rows one run joins from concurrent callers;
    /// 1 turns batching off.
    pub max_batch: Option<usize>,
    /// `max_wait_us = 0`: how long the oldest waiting call waits for others
    /// to join its batch. 0 joins only the calls already waiting when a run
    /// slot frees up, which adds no latency.
    pub max_wait_us: Option<u64>,
    /// `max_queue = 1024`: most calls waiting; past it `compute` fails at once.
    pub max_queue: Option<usize>,
    /// `parallelism = 2`: runs of this model at once; default the CPU count
    /// on the CPU, 1 on a GPU.
    pub parallelism: Option<usize>,
    /// `inline_max_us = 200`: while the model's mean run takes at most this
    /// long, runs skip the hand-off to the blocking pool (a call that finds
    /// the queue empty and a slot free runs on the calling thread; queued
    /// batches run on the queue's task); 0 always hands runs off.
    pub inline_max_us: Option<u64>,
}

impl ModelSection {
    /// The model's loading and batching settings, with its path relative to `base`.
    pub fn config(&self, base: &Path) -> crate::nn::ModelConfig {
        let defaults = crate::nn::BatchConfig::default();
        let parallelism = match self.target {
            crate::nn::Target::Cpu => defaults.parallelism,
            crate::nn::Target::Gpu => 1,
        };
        crate::nn::ModelConfig {
            path: base.join(&self.path),
            backend: self.backend,
            target: self.target,
            fallback_to_cpu: self.fallback == Some(Fallback::Cpu),
            batch: crate::nn::BatchConfig {
                max_batch: self.max_batch.unwrap_or(defaults.max_batch),
                max_wait: self
                    .max_wait_us
                    .map_or(defaults.max_wait, Duration::from_micros),
                max_queue: self.max_queue.unwrap_or(defaults.max_queue),
                parallelism: self.parallelism.unwrap_or(parallelism),
                inline_max: self
                    .inline_max_us
                    .map_or(defaults.inline_max, Duration::from_micros),
            },
        }
    }
}

fn default_app() -> String {
    "default".to_owned()
}

/// `[kv]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvSection {
    /// `max_key_bytes = 1024`: the longest key.
    pub max_key_bytes: Option<usize>,
    /// `max_value_kb = 1024`: the largest value, in KiB.
    pub max_value_kb: Option<usize>,
    /// `bucket_quota_mb = 256`: what one bucket may hold (keys and values), in MiB.
    pub bucket_quota_mb: Option<u64>,
    /// `durable_writes = true`: a function's writes are on disk before its
    /// event is acknowledged. `false` trades that for speed: writes reach
    /// disk within 0.5 s, and a power cut can lose them.
    pub durable_writes: Option<bool>,
    /// `sweep_interval_ms = 1000`: how often expired keys are removed.
    pub sweep_interval_ms: Option<u64>,
}

impl KvSection {
    /// The store's limits and policy, host defaults filling what is unset.
    pub fn config(&self) -> crate::kv::KvConfig {
        let defaults = crate::kv::KvConfig::default();
        crate::kv::KvConfig {
            max_key_bytes: self.max_key_bytes.unwrap_or(defaults.max_key_bytes),
            max_value_bytes: self
                .max_value_kb
                .map_or(defaults.max_value_bytes, |kb| kb.saturating_mul(1024)),
            bucket_quota_bytes: self
                .bucket_quota_mb
                .map_or(defaults.bucket_quota_bytes, |mb| mb.saturating_mul(1 << 20)),
            durable: self.durable_writes.unwrap_or(defaults.durable),
        }
    }
}

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
    /// The queue's limits and policy.
    pub fn queue_config(&self) -> crate::outbox::QueueConfig {
        let defaults = crate::outbox::QueueConfig::default();
        crate::outbox::QueueConfig {
            max_bytes: self
                .max_mb
                .map_or(defaults.max_bytes, |mb| mb.saturating_mul(1 << 20)),
            max_events: self.max_events.unwrap_or(defaults.max_events),
            when_full: match self.when_full {
                WhenFullSetting::Reject => crate::outbox::WhenFull::Reject,
                WhenFullSetting::DropOldest => crate::outbox::WhenFull::DropOldest,
            },
            max_event_bytes: defaults.max_event_bytes,
        }
    }

    /// The forwarder's batching and retry policy.
    pub fn forward_config(&self) -> crate::outbox::forward::ForwardConfig {
        let defaults = crate::outbox::forward::ForwardConfig::default();
        crate::outbox::forward::ForwardConfig {
            max_batch: self.max_batch.unwrap_or(defaults.max_batch),
            max_delay: self
                .max_delay_ms
                .map_or(defaults.max_delay, Duration::from_millis),
            max_event_bytes: self
                .max_event_kb
                .map(|kb| usize::try_from(kb.saturating_mul(1024)).unwrap_or(usize::MAX)),
            ..defaults
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// `listen = "127.0.0.1:7070"`: where the admin API listens.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// `token = "…"`: a bearer token every admin call must carry; required
    /// when `listen` is not a loopback address. A node with `[registry]`
    /// and neither this nor `[admin.jwt]` makes one at first start, in the
    /// data directory's `operator-token` (readable only by its user): where
    /// tenants exist, a call without a token is never the operator's.
    pub token: Option<String>,
    /// `[admin.jwt]`: also accept JWTs from an identity server.
    pub jwt: Option<JwtSection>,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            token: None,
            jwt: None,
        }
    }
}

/// `[admin.jwt]`: JWT bearer tokens from an identity server such as
/// Keycloak, verified against its public keys (no network call).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSection {
    /// `jwks_file = "keycloak-jwks.json"`: the identity server's JWKS
    /// (its `.../protocol/openid-connect/certs` document), relative to the
    /// manifest. Read again when a token names a key it lacks (rotation).
    pub jwks_file: PathBuf,
    /// `issuer = "https://id.example.com/realms/edge"`: the `iss` every
    /// token must carry.
    pub issuer: String,
    /// `audience = "brink"`: an `aud` every token must carry [default: `aud`
    /// not checked].
    pub audience: Option<String>,
    /// `tenant_claim = "brink_tenant"`: the claim that names the caller's
    /// tenant.
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    /// `operator_role = "brink-operator"`: a role (in `roles` or Keycloak's
    /// `realm_access.roles`) that makes the caller the operator.
    #[serde(default = "default_operator_role")]
    pub operator_role: String,
    /// `leeway_s = 30`: clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_s: Option<u64>,
}

fn default_tenant_claim() -> String {
    "brink_tenant".to_owned()
}

fn default_operator_role() -> String {
    "brink-operator".to_owned()
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7070))
}

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

/// `output_mode = "binary" | "structured"`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MqttOutputMode {
    #[default]
    Binary,
    Structured,
}

/// `[http]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// `listen = "127.0.0.1:8080"`
    #[serde(default = "default_http_listen")]
    pub listen: SocketAddr,
    /// `max_body_kb = 1024`: larger request bodies are refused with 413.
    #[serde(default = "default_max_body_kb")]
    pub max_body_kb: usize,
    /// `max_connections = 1024`: connections open at once; one more is
    /// answered 503 and closed. The admin API's listener has the same limit.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// `header_timeout_s = 10`: a request's head must arrive within this
    /// many seconds, or the connection is closed (a slow client, or a
    /// keep-alive connection idle that long). Both listeners.
    #[serde(default = "default_header_timeout_s")]
    pub header_timeout_s: u64,
    /// `body_timeout_s = 60`: a request's body must arrive within this many
    /// seconds, or it is answered 408. Both listeners: raise it to deploy
    /// large components over slow links.
    #[serde(default = "default_body_timeout_s")]
    pub body_timeout_s: u64,
    /// `webhook_ca_file = "certs/ca.pem"`: the CA certificates (PEM) that
    /// `https://` webhook endpoints must chain to [default: the system's
    /// trusted roots]. Relative to the manifest.
    pub webhook_ca_file: Option<PathBuf>,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: default_http_listen(),
            max_body_kb: default_max_body_kb(),
            max_connections: default_max_connections(),
            header_timeout_s: default_header_timeout_s(),
            body_timeout_s: default_body_timeout_s(),
            webhook_ca_file: None,
        }
    }
}

fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_max_body_kb() -> usize {
    1024
}

fn default_max_connections() -> usize {
    1024
}

fn default_header_timeout_s() -> u64 {
    10
}

fn default_body_timeout_s() -> u64 {
    60
}

impl HttpSection {
    fn check(&self) -> Result<(), String> {
        for (field, zero) in [
            ("max_body_kb", self.max_body_kb == 0),
            ("max_connections", self.max_connections == 0),
            ("header_timeout_s", self.header_timeout_s == 0),
            ("body_timeout_s", self.body_timeout_s == 0),
        ] {
            if zero {
                return Err(format!("http.{field}: must be above 0"));
            }
        }
        Ok(())
    }
}

/// `[function.<name>]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionSection {
    /// `source = "functions/filter"` (a crate directory, built on start) or
    /// `source = "build/filter.wasm"` (a component); relative to the manifest.
    pub source: PathBuf,
    /// `triggers = [{ mqtt = "sensors/+/temperature" }, { http = "/temperature" }, { event_type = "com.example.*" }]`
    #[serde(default)]
    pub triggers: Vec<Trigger>,
    /// `outputs = [{ mqtt = "alerts/{subject}" }, { function = "transform" }, { webhook = "http://…" }]`
    #[serde(default)]
    pub outputs: Vec<Output>,
    /// `config = { threshold = "30" }`: values the function reads with `config.get`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// `grants = [...]`: capabilities beyond the ones every function gets
    /// and the ones granted by their own settings (`kv`).
    #[serde(default)]
    pub grants: BTreeSet<String>,
    /// `kv = ["default", "devices"]`: the key-value buckets of this app the
    /// function may open; any other gets `access-denied`.
    #[serde(default)]
    pub kv: BTreeSet<String>,
    /// `outbox = ["cloud"]`: the uplinks the function may `send` to.
    #[serde(default)]
    pub outbox: BTreeSet<String>,
    /// `models = ["digits"]`: the `[model.*]` the function may open with
    /// `wasi:nn` `load-by-name`; any other gets `security`.
    #[serde(default)]
    pub models: BTreeSet<String>,
    /// `load_models = true`: the function may also `load` models from bytes
    /// (at most `[nn] max_load_mb`), run on this host's CPU or GPU.
    #[serde(default)]
    pub load_models: bool,
    /// `limits = { timeout_ms = 200, memory_mb = 32, concurrency = 8, max_output_kb = 4096 }`
    #[serde(default)]
    pub limits: LimitsSection,
    /// `instance_reuse = 1000`: events one instance may handle before it is
    /// dropped. Unset or 1: a fresh instance for every event, so no event
    /// sees another's guest memory. Above 1: warm instances are kept between
    /// events of this function (as AWS Lambda keeps warm containers), several
    /// times cheaper per event, but guest globals and heap carry over from
    /// one event to the next. An instance that trapped, timed out or hit a
    /// limit is never reused.
    pub instance_reuse: Option<u32>,
}

/// One trigger: `{ mqtt = "<topic filter>" }`, `{ http = "<path>" }` or `{ event_type = "<pattern>" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// An MQTT topic filter, with `+` and `#` wildcards.
    Mqtt(String),
    /// An HTTP path under `POST /events`, e.g. `/temperature`.
    Http(String),
    /// A CloudEvent type, exact or with a trailing `*` (`com.example.*`).
    EventType(String),
}

/// One output: `{ mqtt = "<topic template>" }`, `{ function = "<name>" }` or `{ webhook = "<url>" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Output {
    /// A topic template; `{subject}`, `{type}`, `{source}` and `{id}` are filled from the event.
    Mqtt(String),
    /// Another function of this manifest (a pipeline stage).
    Function(String),
    /// An HTTP endpoint that receives events in binary mode.
    Webhook(String),
    /// An uplink of the outbox: stored durably, forwarded when it is up.
    Uplink(String),
}

/// `limits = { … }`; anything unset takes the host default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// `timeout_ms = 1000`
    pub timeout_ms: Option<u64>,
    /// `memory_mb = 64`
    pub memory_mb: Option<u64>,
    /// `concurrency = 8`: invocations of this function at once.
    pub concurrency: Option<u32>,
    /// `max_output_kb = 4096`: bytes of output events per invocation, as they travel.
    pub max_output_kb: Option<usize>,
    /// `max_outputs = 1000`: output events per invocation.
    pub max_outputs: Option<usize>,
}

/// Placeholders an MQTT output template may use.
const TEMPLATE_FIELDS: &[&str] = &["subject", "type", "source", "id"];

impl Manifest {
    /// Reads and validates the manifest at `path`.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|e| ManifestError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates `text`; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Self, ManifestError> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|span| line_column(text, span.start))
                .unwrap_or((1, 1));
            ManifestError::Parse {
                path: path.to_owned(),
                line,
                column,
                message: e.message().trim().to_owned(),
            }
        })?;
        manifest
            .validate()
            .map_err(|message| ManifestError::Invalid {
                path: path.to_owned(),
                at: setting_named_by(&message).and_then(|setting| locate(text, setting)),
                message,
            })?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<(), String> {
        self.http.check()?;
        if self.brink_manifest_version != MANIFEST_VERSION {
            return Err(format!(
                "brink_manifest_version {} is not supported; this host reads version {MANIFEST_VERSION}",
                self.brink_manifest_version
            ));
        }
        if let Some(url) = &self.mqtt.url
            && !(url.starts_with("mqtt://") || url.starts_with("mqtts://"))
        {
            return Err(format!(
                "mqtt.url {url:?} must start with mqtt:// or mqtts://"
            ));
        }
        let tls = self
            .mqtt
            .url
            .as_deref()
            .is_some_and(|url| url.starts_with("mqtts://"));
        for (field, set) in [
            ("ca_file", self.mqtt.ca_file.is_some()),
            ("client_cert", self.mqtt.client_cert.is_some()),
            ("client_key", self.mqtt.client_key.is_some()),
        ] {
            if set && !tls {
                return Err(format!(
                    "mqtt.{field} is set, but mqtt.url is not an mqtts:// URL: TLS settings need a TLS broker"
                ));
            }
        }
        if self.mqtt.client_cert.is_some() != self.mqtt.client_key.is_some() {
            return Err(
                "mqtt.client_cert and mqtt.client_key go together: set both for mutual TLS, or neither"
                    .to_owned(),
            );
        }
        if self.mqtt.protocol == MqttProtocol::V311
            && self.mqtt.output_mode == MqttOutputMode::Binary
        {
            return Err(
                "mqtt.output_mode \"binary\" needs MQTT 5; MQTT 3.1.1 carries CloudEvents in structured mode only: set output_mode = \"structured\""
                    .to_owned(),
            );
        }
        if !crate::kv::valid_bucket_name(&self.app) {
            return Err(format!(
                "app {:?} must be 1 to 64 characters: a-z, 0-9, '-', '_' or '.'",
                self.app
            ));
        }
        let k = &self.kv;
        for (field, zero) in [
            ("max_key_bytes", k.max_key_bytes == Some(0)),
            ("max_value_kb", k.max_value_kb == Some(0)),
            ("bucket_quota_mb", k.bucket_quota_mb == Some(0)),
            ("sweep_interval_ms", k.sweep_interval_ms == Some(0)),
        ] {
            if zero {
                return Err(format!("kv.{field}: must be above 0"));
            }
        }
        if let Some(registry) = &self.registry {
            registry.policy()?;
        }
        if let Some(jwt) = &self.admin.jwt {
            for (field, value) in [
                ("issuer", &jwt.issuer),
                ("tenant_claim", &jwt.tenant_claim),
                ("operator_role", &jwt.operator_role),
            ] {
                if value.trim().is_empty() {
                    return Err(format!("admin.jwt.{field}: must not be empty"));
                }
            }
        }
        if !self.admin.listen.ip().is_loopback() && self.admin.token.is_none() {
            return Err(format!(
                "admin.listen {} is not a loopback address: set admin.token, so that not anyone who can reach it can change this node's state",
                self.admin.listen
            ));
        }
        for (name, u) in &self.uplink {
            let at = |field: &str| format!("uplink.{name}.{field}");
            if !crate::kv::valid_bucket_name(name) {
                return Err(format!(
                    "uplink name {name:?} must be 1 to 64 characters: a-z, 0-9, '-', '_' or '.'"
                ));
            }
            match (&u.mqtt, &u.http) {
                (Some(url), None)
                    if !(url.starts_with("mqtt://") || url.starts_with("mqtts://")) =>
                {
                    return Err(format!(
                        "{}: {url:?} must start with mqtt:// or mqtts://",
                        at("mqtt")
                    ));
                }
                (None, Some(url))
                    if !(url.starts_with("http://") || url.starts_with("https://")) =>
                {
                    return Err(format!(
                        "{}: {url:?} must start with http:// or https://",
                        at("http")
                    ));
                }
                (Some(_), Some(_)) | (None, None) => {
                    return Err(format!(
                        "uplink.{name}: set exactly one of `mqtt = \"mqtt://host:port\"` and `http = \"https://…\"`"
                    ));
                }
                _ => {}
            }
            if u.protocol == MqttProtocol::V311 && u.output_mode == MqttOutputMode::Binary {
                return Err(format!(
                    "{}: \"binary\" needs MQTT 5; MQTT 3.1.1 carries CloudEvents in structured mode only",
                    at("output_mode")
                ));
            }
            if let Some(template) = &u.topic {
                check_template(template)
                    .map_err(|e| format!("{}: topic template {template:?} {e}", at("topic")))?;
            }
            if u.priority.is_some_and(|p| p > crate::outbox::MAX_PRIORITY) {
                return Err(format!("{}: must be 0 to 9", at("priority")));
            }
            for (field, zero) in [
                ("max_batch", u.max_batch == Some(0)),
                ("max_mb", u.max_mb == Some(0)),
                ("max_event_kb", u.max_event_kb == Some(0)),
                ("max_events", u.max_events == Some(0)),
                ("ttl_ms", u.ttl_ms == Some(0)),
            ] {
                if zero {
                    return Err(format!("{}: must be above 0", at(field)));
                }
            }
        }
        for (name, m) in &self.model {
            let at = |field: &str| format!("model.{name}.{field}");
            if !crate::kv::valid_bucket_name(name) {
                return Err(format!(
                    "model name {name:?} must be 1 to 64 characters: a-z, 0-9, '-', '_' or '.'"
                ));
            }
            if m.backend == crate::nn::BackendKind::Tract
                && m.target == crate::nn::Target::Gpu
                && m.fallback.is_none()
            {
                return Err(format!(
                    "{}: the tract backend runs on the CPU only; use backend = \"onnxruntime\" for a GPU, \
                     or fallback = \"cpu\"",
                    at("target")
                ));
            }
            for (field, zero) in [
                ("max_batch", m.max_batch == Some(0)),
                ("max_queue", m.max_queue == Some(0)),
                ("parallelism", m.parallelism == Some(0)),
            ] {
                if zero {
                    return Err(format!("{}: must be above 0", at(field)));
                }
            }
        }
        if self.nn.max_load_mb == Some(0) {
            return Err("nn.max_load_mb: must be above 0".to_owned());
        }
        for (name, f) in &self.function {
            let at = |field: &str| format!("function.{name}.{field}");
            if let Some(model) = f.models.iter().find(|m| !self.model.contains_key(*m)) {
                return Err(format!(
                    "{}: no model named {model:?} (declare it in [model.{model}])",
                    at("models")
                ));
            }
            if f.grants.contains(crate::capability::nn::GRANT) {
                return Err(format!(
                    "{}: grant inference by naming the models: models = [\"digits\"]",
                    at("grants")
                ));
            }
            if let Some(uplink) = f.outbox.iter().find(|u| !self.uplink.contains_key(*u)) {
                return Err(format!(
                    "{}: no uplink named {uplink:?} (declare it in [uplink.{uplink}])",
                    at("outbox")
                ));
            }
            if f.grants.contains(crate::capability::outbox::GRANT) {
                return Err(format!(
                    "{}: grant the outbox by naming the uplinks: outbox = [\"cloud\"]",
                    at("grants")
                ));
            }
            if let Some(bucket) = f.kv.iter().find(|b| !crate::kv::valid_bucket_name(b)) {
                return Err(format!(
                    "{}: bucket name {bucket:?} must be 1 to 64 characters: a-z, 0-9, '-', '_' or '.'",
                    at("kv")
                ));
            }
            if f.grants.contains(crate::capability::keyvalue::GRANT) {
                return Err(format!(
                    "{}: grant key-value state by naming the buckets: kv = [\"default\"]",
                    at("grants")
                ));
            }
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            {
                return Err(format!(
                    "function name {name:?} must be lowercase letters, digits, '-' or '_'"
                ));
            }
            for (i, trigger) in f.triggers.iter().enumerate() {
                match trigger {
                    Trigger::Mqtt(filter) => check_topic_filter(filter).map_err(|e| {
                        format!("{}[{i}]: MQTT topic filter {filter:?} {e}", at("triggers"))
                    })?,
                    Trigger::Http(p) if !p.starts_with('/') => {
                        return Err(format!(
                            "{}[{i}]: HTTP path {p:?} must start with '/'",
                            at("triggers")
                        ));
                    }
                    Trigger::EventType(t)
                        if t.is_empty() || t.strip_suffix('*').unwrap_or(t).contains('*') =>
                    {
                        return Err(format!(
                            "{}[{i}]: event type pattern {t:?} must be non-empty, with '*' only at the end",
                            at("triggers")
                        ));
                    }
                    _ => {}
                }
            }
            for (i, output) in f.outputs.iter().enumerate() {
                match output {
                    Output::Mqtt(template) => check_template(template).map_err(|e| {
                        format!("{}[{i}]: topic template {template:?} {e}", at("outputs"))
                    })?,
                    Output::Function(target) if !self.function.contains_key(target) => {
                        return Err(format!(
                            "{}[{i}]: no function named {target:?} in this manifest",
                            at("outputs")
                        ));
                    }
                    Output::Uplink(uplink) if !self.uplink.contains_key(uplink) => {
                        return Err(format!(
                            "{}[{i}]: no uplink named {uplink:?} (declare it in [uplink.{uplink}])",
                            at("outputs")
                        ));
                    }
                    Output::Webhook(url)
                        if !(url.starts_with("http://") || url.starts_with("https://")) =>
                    {
                        return Err(format!(
                            "{}[{i}]: webhook {url:?} must be an http:// or https:// URL",
                            at("outputs")
                        ));
                    }
                    _ => {}
                }
            }
            let l = &f.limits;
            if l.timeout_ms == Some(0) {
                return Err(format!("{}: must be above 0", at("limits.timeout_ms")));
            }
            if l.memory_mb == Some(0) {
                return Err(format!("{}: must be above 0", at("limits.memory_mb")));
            }
            if l.concurrency == Some(0) {
                return Err(format!("{}: must be above 0", at("limits.concurrency")));
            }
            if f.instance_reuse == Some(0) {
                return Err(format!(
                    "{}: must be at least 1 (1 gives every event a fresh instance)",
                    at("instance_reuse")
                ));
            }
        }
        if let Some(cycle) = self.find_cycle() {
            return Err(format!(
                "function outputs form a cycle: {}",
                cycle.join(" -> ")
            ));
        }
        Ok(())
    }

    /// A cycle in the function-to-function outputs, as the names along it.
    fn find_cycle(&self) -> Option<Vec<String>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            Visiting,
            Done,
        }
        fn visit<'a>(
            m: &'a Manifest,
            name: &'a str,
            marks: &mut BTreeMap<&'a str, Mark>,
            path: &mut Vec<&'a str>,
        ) -> Option<Vec<String>> {
            match marks.get(name) {
                Some(Mark::Done) => return None,
                Some(Mark::Visiting) => {
                    let start = path.iter().position(|n| *n == name).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        path[start..].iter().map(|s| (*s).to_owned()).collect();
                    cycle.push(name.to_owned());
                    return Some(cycle);
                }
                None => {}
            }
            marks.insert(name, Mark::Visiting);
            path.push(name);
            for output in m
                .function
                .get(name)
                .map(|f| f.outputs.as_slice())
                .unwrap_or_default()
            {
                if let Output::Function(next) = output
                    && let Some(cycle) = visit(m, next, marks, path)
                {
                    return Some(cycle);
                }
            }
            path.pop();
            marks.insert(name, Mark::Done);
            None
        }
        let mut marks = BTreeMap::new();
        for name in self.function.keys() {
            if let Some(cycle) = visit(self, name, &mut marks, &mut Vec::new()) {
                return Some(cycle);
            }
        }
        None
    }
}

impl FunctionSection {
    /// The engine's spec for this function, host defaults filling what is unset.
    pub fn spec(&self, name: &str) -> FunctionSpec {
        let defaults = Limits::default();
        FunctionSpec {
            name: name.to_owned(),
            limits: Limits {
                timeout: self
                    .limits
                    .timeout_ms
                    .map_or(defaults.timeout, Duration::from_millis),
                memory_bytes: self
                    .limits
                    .memory_mb
                    .map_or(defaults.memory_bytes, |mb| mb.saturating_mul(1 << 20)),
                max_output_bytes: self
                    .limits
                    .max_output_kb
                    .map_or(defaults.max_output_bytes, |kb| kb.saturating_mul(1024)),
                max_outputs: self.limits.max_outputs.unwrap_or(defaults.max_outputs),
            },
            config: self.config.clone(),
            grants: self.grants.clone(),
            instance_reuse: self.instance_reuse.unwrap_or(1),
            // The node opens the store and attaches the buckets (`FunctionSpec::with_kv`).
            kv: None,
            outbox: None,
            nn: None,
            logs: None,
        }
    }
}

/// The setting a validation message starts with (`function.a.limits`,
/// `mqtt.ca_file`, `function.a.outputs[1]`), if it names one.
fn setting_named_by(message: &str) -> Option<&str> {
    let end = message
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '[' | ']')))
        .unwrap_or(message.len());
    let setting = message[..end].trim_end_matches('.');
    (setting.contains('.') || setting == "brink_manifest_version").then_some(setting)
}

/// 1-based line and column where `setting` (dotted keys, the last one
/// optionally indexed: `function.a.outputs[1]`) is set in `text`.
fn locate(text: &str, setting: &str) -> Option<(usize, usize)> {
    use toml::de::{DeTable, DeValue};
    let document = DeTable::parse(text).ok()?;
    let mut table = document.get_ref();
    let mut span = None;
    let mut keys = setting.split('.').peekable();
    while let Some(segment) = keys.next() {
        let (name, index) = match segment.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        let (key, mut value) = table.iter().find(|(k, _)| k.get_ref().as_ref() == name)?;
        span = Some(key.span());
        if let (Some(i), DeValue::Array(items)) = (index, value.get_ref())
            && let Some(item) = items.get(i)
        {
            span = Some(item.span());
            value = item;
        }
        match value.get_ref() {
            DeValue::Table(inner) => table = inner,
            _ if keys.peek().is_some() => return None,
            _ => {}
        }
    }
    span.map(|span| line_column(text, span.start))
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// MQTT 3.1.1 §4.7 topic filter rules.
pub(crate) fn check_topic_filter(filter: &str) -> Result<(), &'static str> {
    if filter.is_empty() {
        return Err("is empty");
    }
    if filter.contains('\0') {
        return Err("contains a NUL character");
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i != levels.len() - 1) {
            return Err("may use '#' only as the whole last level");
        }
        if level.contains('+') && *level != "+" {
            return Err("may use '+' only as a whole level");
        }
    }
    Ok(())
}

/// An MQTT output topic: no wildcards, and only known `{placeholders}`.
pub(crate) fn check_template(template: &str) -> Result<(), String> {
    if template.is_empty() {
        return Err("is empty".to_owned());
    }
    if template.contains(['+', '#']) {
        return Err("must not contain MQTT wildcards".to_owned());
    }
    if template.contains('\0') {
        return Err("contains a NUL character, which MQTT topics may not".to_owned());
    }
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| "has an unclosed '{'".to_owned())?;
        let field = &after[..close];
        if !TEMPLATE_FIELDS.contains(&field) {
            return Err(format!(
                "uses unknown placeholder {{{field}}}; known: {}",
                TEMPLATE_FIELDS
                    .iter()
                    .map(|f| format!("{{{f}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        Manifest::parse(text, "brink.toml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn a_minimal_manifest_takes_every_default() -> Result<(), ManifestError> {
        let m = Manifest::parse("brink_manifest_version = 1\n", "brink.toml")?;
        assert_eq!(m.mqtt, MqttSection::default());
        assert_eq!(m.http.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert!(m.function.is_empty());
        Ok(())
    }

    #[test]
    fn unset_limits_take_the_engine_defaults() -> Result<(), ManifestError> {
        let m = Manifest::parse(
            "brink_manifest_version = 1\n[function.f]\nsource = \"f.wasm\"\nlimits = { memory_mb = 32 }\n",
            "brink.toml",
        )?;
        let spec = m.function["f"].spec("f");
        assert_eq!(spec.limits.memory_bytes, 32 << 20);
        assert_eq!(spec.limits.timeout, Limits::default().timeout);
        Ok(())
    }

    #[test]
    fn a_topic_template_holding_nul_is_refused_as_mqtt_forbids_it() {
        // Found by the `topic` fuzz target: it rendered to a topic no broker takes.
        let err = check_template("fixed/top\0ic").err().unwrap_or_default();
        assert!(err.contains("NUL"), "{err}");
        assert!(check_template("fixed/topic/{subject}").is_ok());
    }

    #[test]
    fn topic_filter_rules_follow_the_mqtt_spec() {
        for ok in ["a/b", "a/+/c", "#", "a/#", "+", "+/+/#"] {
            assert!(check_topic_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/#/c", "a/b#", "a+/b", "a/+b"] {
            assert!(check_topic_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_three_stage_cycle_is_reported_along_its_path() {
        let err = error(
            r#"brink_manifest_version = 1
[function.a]
source = "a.wasm"
outputs = [{ function = "b" }]
[function.b]
source = "b.wasm"
outputs = [{ function = "c" }]
[function.c]
source = "c.wasm"
outputs = [{ function = "a" }]
"#,
        );
        assert_eq!(
            err,
            "brink.toml: function outputs form a cycle: a -> b -> c -> a"
        );
    }
}
