//! From a function's body and its scope to the engine's [`FunctionSpec`].
//!
//! `brink run`, a manifest's functions (`Node::start`) and a tenant's
//! deployed functions (`Deployer::load`) all build their specs here, so a
//! grant attaches in one place: a body names buckets, uplinks and models,
//! and its scope (an app, or a tenant with quotas) says whose they are.
//! The manifest's sections become runtime configs here too, so the
//! manifest stays plain data.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::capability::nn::InferenceMeter;
use crate::engine::{FunctionSpec, Limits};
use crate::kv::{Kv, KvConfig};
use crate::manifest::{
    Fallback, FunctionSection, KvSection, LimitsSection, ModelSection, NnSection, Target,
    UplinkSection, WhenFullSetting,
};
use crate::nn::{BatchConfig, ModelConfig, Models, NnConfig};
use crate::outbox::{Outbox, QueueConfig, WhenFull};

/// What a function asks for: a `[function.<name>]` table, a tenant's
/// deploy spec, or `brink run`'s flags.
#[derive(Debug, Clone, Copy)]
pub struct Body<'a> {
    pub config: &'a BTreeMap<String, String>,
    pub limits: &'a LimitsSection,
    pub instance_reuse: Option<u32>,
    /// Grants named outright (`grants = [...]`).
    pub grants: &'a BTreeSet<String>,
    pub kv: &'a BTreeSet<String>,
    pub outbox: &'a BTreeSet<String>,
    pub models: &'a BTreeSet<String>,
    pub load_models: bool,
}

impl<'a, S> From<&'a FunctionSection<S>> for Body<'a> {
    fn from(f: &'a FunctionSection<S>) -> Self {
        Self {
            config: &f.config,
            limits: &f.limits,
            instance_reuse: f.instance_reuse,
            grants: &f.grants,
            kv: &f.kv,
            outbox: &f.outbox,
            models: &f.models,
            load_models: f.load_models,
        }
    }
}

/// Whose state a function's grants open: an app's, or a tenant's.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// The key-value store, and the namespace its buckets live in (the
    /// app's name, or the tenant's namespace).
    pub kv: Option<(Kv, String)>,
    pub outbox: Option<Outbox>,
    /// The tenant whose queued bytes its outbox sends count against.
    pub owner: Option<Arc<str>>,
    pub models: Option<Models>,
    /// Bills its inference time to a tenant.
    pub meter: Option<InferenceMeter>,
}

/// A grant the body asks for that its scope cannot give.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("this node has no {0}")]
pub struct Missing(pub &'static str);

/// The engine's spec for `body` in `scope`, host defaults filling unset limits.
pub fn spec(name: &str, body: Body<'_>, scope: &Scope) -> Result<FunctionSpec, Missing> {
    let mut spec = FunctionSpec {
        name: name.to_owned(),
        limits: limits(body.limits),
        config: body.config.clone(),
        grants: body.grants.clone(),
        instance_reuse: body.instance_reuse.unwrap_or(1),
        ..FunctionSpec::default()
    };
    if !body.kv.is_empty() {
        let (kv, namespace) = scope.kv.as_ref().ok_or(Missing("key-value store"))?;
        spec = spec.with_kv(kv.clone(), namespace, body.kv.iter().cloned());
    }
    if !body.outbox.is_empty() {
        let outbox = scope.outbox.as_ref().ok_or(Missing("outbox"))?;
        spec = spec.with_outbox(outbox.clone(), body.outbox.iter().cloned());
        if let Some(access) = &mut spec.outbox {
            access.owner = scope.owner.clone();
        }
    }
    if !body.models.is_empty() || body.load_models {
        let models = scope.models.as_ref().ok_or(Missing("models"))?;
        spec = spec.with_models(
            models.clone(),
            body.models.iter().cloned(),
            body.load_models,
        );
        if let Some(access) = &mut spec.nn {
            access.meter = scope.meter.clone();
        }
    }
    Ok(spec)
}

/// `limits = { … }`, host defaults filling what is unset.
pub fn limits(section: &LimitsSection) -> Limits {
    let defaults = Limits::default();
    Limits {
        timeout: section
            .timeout_ms
            .map_or(defaults.timeout, Duration::from_millis),
        memory_bytes: section
            .memory_mb
            .map_or(defaults.memory_bytes, |mb| mb.saturating_mul(1 << 20)),
        max_output_bytes: section
            .max_output_kb
            .map_or(defaults.max_output_bytes, |kb| kb.saturating_mul(1024)),
        max_outputs: section.max_outputs.unwrap_or(defaults.max_outputs),
    }
}

/// `[kv]`: the store's limits and policy, host defaults filling what is unset.
pub fn kv_config(section: &KvSection) -> KvConfig {
    let defaults = KvConfig::default();
    KvConfig {
        max_key_bytes: section.max_key_bytes.unwrap_or(defaults.max_key_bytes),
        max_value_bytes: section
            .max_value_kb
            .map_or(defaults.max_value_bytes, |kb| kb.saturating_mul(1024)),
        bucket_quota_bytes: section
            .bucket_quota_mb
            .map_or(defaults.bucket_quota_bytes, |mb| mb.saturating_mul(1 << 20)),
        durable: section.durable_writes.unwrap_or(defaults.durable),
    }
}

/// `[nn]`: the node's inference settings, with paths relative to `base`.
pub fn nn_config(section: &NnSection, base: &Path) -> NnConfig {
    let defaults = NnConfig::default();
    NnConfig {
        max_load_bytes: section
            .max_load_mb
            .map_or(defaults.max_load_bytes, |mb| mb.saturating_mul(1 << 20)),
        onnxruntime_library: section.onnxruntime.as_ref().map(|p| base.join(p)),
    }
}

/// `[model.<name>]`: loading and batching, with its path relative to `base`.
pub fn model_config(section: &ModelSection, base: &Path) -> ModelConfig {
    let defaults = BatchConfig::default();
    let parallelism = match section.target {
        Target::Cpu => defaults.parallelism,
        Target::Gpu => 1,
    };
    ModelConfig {
        path: base.join(&section.path),
        backend: section.backend,
        target: section.target,
        fallback_to_cpu: section.fallback == Some(Fallback::Cpu),
        batch: BatchConfig {
            max_batch: section.max_batch.unwrap_or(defaults.max_batch),
            max_wait: section
                .max_wait_us
                .map_or(defaults.max_wait, Duration::from_micros),
            max_queue: section.max_queue.unwrap_or(defaults.max_queue),
            parallelism: section.parallelism.unwrap_or(parallelism),
            inline_max: section
                .inline_max_us
                .map_or(defaults.inline_max, Duration::from_micros),
        },
    }
}

/// `[uplink.<name>]`: the outbox queue's limits and policy.
pub fn queue_config(section: &UplinkSection) -> QueueConfig {
    let defaults = QueueConfig::default();
    QueueConfig {
        max_bytes: section
            .max_mb
            .map_or(defaults.max_bytes, |mb| mb.saturating_mul(1 << 20)),
        max_events: section.max_events.unwrap_or(defaults.max_events),
        when_full: match section.when_full {
            WhenFullSetting::Reject => WhenFull::Reject,
            WhenFullSetting::DropOldest => WhenFull::DropOldest,
        },
        max_event_bytes: defaults.max_event_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;

    #[test]
    fn unset_limits_take_the_engine_defaults() -> anyhow::Result<()> {
        let m = Manifest::parse(
            "brink_manifest_version = 1\n[function.f]\nsource = \"f.wasm\"\nlimits = { memory_mb = 32 }\n",
            "brink.toml",
        )?;
        let spec = spec("f", Body::from(&m.function["f"]), &Scope::default())?;
        assert_eq!(spec.limits.memory_bytes, 32 << 20);
        assert_eq!(spec.limits.timeout, Limits::default().timeout);
        Ok(())
    }

    #[test]
    fn a_grant_its_scope_cannot_give_is_refused_by_name() -> anyhow::Result<()> {
        let m = Manifest::parse(
            "brink_manifest_version = 1\n[uplink.cloud]\nhttp = \"http://127.0.0.1:9/\"\n[function.f]\nsource = \"f.wasm\"\noutbox = [\"cloud\"]\n",
            "brink.toml",
        )?;
        let refused = spec("f", Body::from(&m.function["f"]), &Scope::default()).err();
        assert_eq!(refused, Some(Missing("outbox")));
        Ok(())
    }
}
