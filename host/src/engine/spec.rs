//! What the host runs: a named component with its limits, config and grants.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::Limits;
use crate::capability;
use crate::capability::keyvalue::KvAccess;
use crate::capability::nn::NnAccess;
use crate::capability::outbox::OutboxAccess;

/// What the host runs: a named component with its limits, config and grants.
#[derive(Debug, Clone, Default)]
pub struct FunctionSpec {
    pub name: String,
    pub limits: Limits,
    pub config: BTreeMap<String, String>,
    /// Capabilities granted beyond the ones every function gets.
    pub grants: BTreeSet<String>,
    /// Events one instance may handle before it is dropped. 0 or 1: a fresh
    /// instance for every event, so events never share guest memory.
    pub instance_reuse: u32,
    /// The key-value buckets the function may open; set with [`FunctionSpec::with_kv`].
    pub kv: Option<KvAccess>,
    /// The uplinks the function may send to; set with [`FunctionSpec::with_outbox`].
    pub outbox: Option<OutboxAccess>,
    /// The models the function may use; set with [`FunctionSpec::with_models`].
    pub nn: Option<NnAccess>,
    /// Where its log lines go besides the host's log, for `brink logs`.
    pub logs: Option<crate::capability::log::LogTap>,
}

impl FunctionSpec {
    /// A spec with default limits, no config and no grants.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Grants the buckets `buckets` of `namespace` in `kv`.
    pub fn with_kv(
        mut self,
        kv: crate::kv::Kv,
        namespace: &str,
        buckets: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.grants.insert(capability::keyvalue::GRANT.to_owned());
        self.kv = Some(KvAccess {
            kv,
            namespace: Arc::from(namespace),
            buckets: Arc::new(buckets.into_iter().map(Into::into).collect()),
        });
        self
    }

    /// Grants sending to `uplinks` of `outbox`.
    pub fn with_outbox(
        mut self,
        outbox: crate::outbox::Outbox,
        uplinks: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.grants.insert(capability::outbox::GRANT.to_owned());
        self.outbox = Some(OutboxAccess {
            outbox,
            uplinks: Arc::new(uplinks.into_iter().map(Into::into).collect()),
            owner: None,
        });
        self
    }

    /// Grants the models `names` of `models`, and loading models from bytes
    /// where `load_bytes`.
    pub fn with_models(
        mut self,
        models: crate::nn::Models,
        names: impl IntoIterator<Item = impl Into<String>>,
        load_bytes: bool,
    ) -> Self {
        self.grants.insert(capability::nn::GRANT.to_owned());
        self.nn = Some(NnAccess {
            models,
            granted: Arc::new(names.into_iter().map(Into::into).collect()),
            load_bytes,
            function: Arc::from(self.name.as_str()),
            meter: None,
        });
        self
    }
}
