//! `[function.<name>]`: one function's source, triggers, outputs, grants and limits.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Manifest;
use super::error::{Invalid, NAME_RULE, above_zero};
use super::topic::{check_template, check_topic_filter};
use crate::contract::{GRANT_KV, GRANT_NN, GRANT_OUTBOX};

/// `[function.<name>]`, and (with `S` = [`Uploaded`]) a tenant's deploy
/// spec: the same function body, as JSON, whose component is uploaded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(
    deny_unknown_fields,
    bound(
        serialize = "S: Serialize + SourceField",
        deserialize = "S: Deserialize<'de>"
    )
)]
pub struct FunctionSection<S = PathBuf> {
    /// `source = "functions/filter"` (a crate directory, built on start) or
    /// `source = "build/filter.wasm"` (a component); relative to the manifest.
    #[serde(skip_serializing_if = "SourceField::is_uploaded")]
    pub source: S,
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
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
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
    #[serde(default, skip_serializing_if = "is_false")]
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

/// A tenant's deploy spec: a function body without a `source`.
pub type DeploySpec = FunctionSection<Uploaded>;

/// The `source` of a deploy spec: none, since its component is uploaded on
/// its own (`POST /v1/uploads`) and named by digest when it is published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Uploaded;

/// What a function's `source` may be.
pub trait SourceField {
    /// Whether there is no source to write: the component was uploaded.
    fn is_uploaded(&self) -> bool;
}

impl SourceField for PathBuf {
    fn is_uploaded(&self) -> bool {
        false
    }
}

impl SourceField for Uploaded {
    fn is_uploaded(&self) -> bool {
        true
    }
}

impl Serialize for Uploaded {
    fn serialize<Se: serde::Serializer>(&self, serializer: Se) -> Result<Se::Ok, Se::Error> {
        serializer.serialize_none()
    }
}

impl<'de> Deserialize<'de> for Uploaded {
    // A field with no value reaches `deserialize_option` as none, so a spec
    // without `source` is accepted; one with a source is refused.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Absent;
        impl<'de> serde::de::Visitor<'de> for Absent {
            type Value = Uploaded;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "no `source`: a deployed function's component is uploaded (POST /v1/uploads)",
                )
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<Uploaded, E> {
                Ok(Uploaded)
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Uploaded, E> {
                Ok(Uploaded)
            }
        }
        deserializer.deserialize_option(Absent)
    }
}

fn is_false(b: &bool) -> bool {
    !b
}

impl FunctionSection {
    /// Checks `[function.<name>]` against the rest of `manifest`.
    pub(super) fn check(&self, name: &str, manifest: &Manifest) -> Result<(), Invalid> {
        let at = |field: &str| format!("function.{name}.{field}");
        let refused = |field: &str, message: String| Err(Invalid::at(at(field), message));
        if let Some(model) = self
            .models
            .iter()
            .find(|m| !manifest.model.contains_key(*m))
        {
            return refused(
                "models",
                format!(
                    "{}: no model named {model:?} (declare it in [model.{model}])",
                    at("models")
                ),
            );
        }
        if let Some(uplink) = self
            .outbox
            .iter()
            .find(|u| !manifest.uplink.contains_key(*u))
        {
            return refused(
                "outbox",
                format!(
                    "{}: no uplink named {uplink:?} (declare it in [uplink.{uplink}])",
                    at("outbox")
                ),
            );
        }
        self.check_grants(name)?;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(Invalid::whole(format!(
                "function name {name:?} must be lowercase letters, digits, '-' or '_'"
            )));
        }
        for (i, trigger) in self.triggers.iter().enumerate() {
            trigger.check().map_err(|e| {
                let setting = format!("{}[{i}]", at("triggers"));
                Invalid::at(setting.clone(), format!("{setting}: {e}"))
            })?;
        }
        for (i, output) in self.outputs.iter().enumerate() {
            output.check(manifest).map_err(|e| {
                let setting = format!("{}[{i}]", at("outputs"));
                Invalid::at(setting.clone(), format!("{setting}: {e}"))
            })?;
        }
        let l = &self.limits;
        above_zero(
            &format!("function.{name}.limits."),
            &[
                ("timeout_ms", l.timeout_ms == Some(0)),
                ("memory_mb", l.memory_mb == Some(0)),
                ("concurrency", l.concurrency == Some(0)),
            ],
        )?;
        if self.instance_reuse == Some(0) {
            return refused(
                "instance_reuse",
                format!(
                    "{}: must be at least 1 (1 gives every event a fresh instance)",
                    at("instance_reuse")
                ),
            );
        }
        Ok(())
    }

    /// Grants given by their own settings may not be named in `grants`,
    /// and bucket names must be valid.
    fn check_grants(&self, name: &str) -> Result<(), Invalid> {
        let at = |field: &str| format!("function.{name}.{field}");
        if let Some(bucket) = self.kv.iter().find(|b| !crate::kv::valid_bucket_name(b)) {
            return Err(Invalid::at(
                at("kv"),
                format!("{}: bucket name {bucket:?} {NAME_RULE}", at("kv")),
            ));
        }
        for (grant, how) in [
            (
                GRANT_NN,
                "grant inference by naming the models: models = [\"digits\"]",
            ),
            (
                GRANT_OUTBOX,
                "grant the outbox by naming the uplinks: outbox = [\"cloud\"]",
            ),
            (
                GRANT_KV,
                "grant key-value state by naming the buckets: kv = [\"default\"]",
            ),
        ] {
            if self.grants.contains(grant) {
                return Err(Invalid::at(
                    at("grants"),
                    format!("{}: {how}", at("grants")),
                ));
            }
        }
        Ok(())
    }
}

impl Trigger {
    /// Whether the trigger's own text is well formed.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Trigger::Mqtt(filter) => {
                check_topic_filter(filter).map_err(|e| format!("MQTT topic filter {filter:?} {e}"))
            }
            Trigger::Http(p) if !p.starts_with('/') => {
                Err(format!("HTTP path {p:?} must start with '/'"))
            }
            Trigger::EventType(t)
                if t.is_empty() || t.strip_suffix('*').unwrap_or(t).contains('*') =>
            {
                Err(format!(
                    "event type pattern {t:?} must be non-empty, with '*' only at the end"
                ))
            }
            _ => Ok(()),
        }
    }
}

impl Output {
    fn check(&self, manifest: &Manifest) -> Result<(), String> {
        match self {
            Output::Mqtt(template) => {
                check_template(template).map_err(|e| format!("topic template {template:?} {e}"))
            }
            Output::Function(target) if !manifest.function.contains_key(target) => {
                Err(format!("no function named {target:?} in this manifest"))
            }
            Output::Uplink(uplink) if !manifest.uplink.contains_key(uplink) => Err(format!(
                "no uplink named {uplink:?} (declare it in [uplink.{uplink}])"
            )),
            Output::Webhook(url)
                if !(url.starts_with("http://") || url.starts_with("https://")) =>
            {
                Err(format!(
                    "webhook {url:?} must be an http:// or https:// URL"
                ))
            }
            _ => Ok(()),
        }
    }
}
