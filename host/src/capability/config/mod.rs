//! `brink:edge/config`, and the standard `wasi:config/store`: the
//! configuration values of the function's spec.
//!
//! The smallest capability, and the shape of every one: its WIT glue in
//! `wit.rs`, its hooks here, one `HostState` field (`config`) built in
//! `state.rs`, and one line in [`super::CAPABILITIES`].
//! - link: [`wit::add_to_linker`];
//! - prepare (per function, at load): [`prepare`] shares the spec's values
//!   with every instance;
//! - per instance: [`ConfigCtx::new`] over the prepared values.
//!
//! It needs no node-wide configuration, after-invoke work, tenant cleanup or
//! metrics of its own.

mod wit;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use wit::add_to_linker;

use crate::contract::EdgeInterface;
use crate::engine::FunctionSpec;

/// The interface this capability provides, from the contract's first version.
pub const INTERFACE: EdgeInterface = EdgeInterface {
    name: "config",
    since: "0.1.0",
};

/// The standard interface it provides beside the contract's.
pub const INTERFACES: &[&str] = &["wasi:config/store@0.2.0-draft-2024-09-27"];

/// What every instance of a function reads: its spec's values, shared.
pub type Prepared = Arc<BTreeMap<String, String>>;

/// The prepare hook: once per function, at load.
pub fn prepare(spec: &FunctionSpec) -> Prepared {
    Arc::new(spec.config.clone())
}

/// A function's configuration, shared by all its instances.
#[derive(Debug, Clone, Default)]
pub struct ConfigCtx {
    values: Prepared,
}

impl ConfigCtx {
    /// The configuration `values`.
    pub fn new(values: Prepared) -> Self {
        Self { values }
    }

    /// The value of `key`, if the spec sets it.
    pub fn get(&self, key: &str) -> Option<String> {
        self.values.get(key).cloned()
    }

    /// Every value the spec sets, in key order.
    pub fn all(&self) -> Vec<(String, String)> {
        self.values
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
