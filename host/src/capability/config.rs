//! `brink:edge/config`: the configuration values of the function's spec.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{HasData, Linker};

use crate::bindings::brink::edge::config;
use crate::state::HostState;

/// The interfaces this capability provides.
pub const INTERFACES: &[&str] = &[
    "brink:edge/config@0.1.0",
    "brink:edge/config@0.1.1",
    "brink:edge/config@0.1.2",
];

/// A function's configuration, shared by all its instances.
#[derive(Debug, Clone, Default)]
pub struct ConfigCtx {
    values: Arc<BTreeMap<String, String>>,
}

impl ConfigCtx {
    /// The configuration `values`.
    pub fn new(values: Arc<BTreeMap<String, String>>) -> Self {
        Self { values }
    }
}

impl config::Host for ConfigCtx {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.values.get(&key).cloned())
    }
}

struct Config;

impl HasData for Config {
    type Data<'a> = &'a mut ConfigCtx;
}

/// Links `brink:edge/config`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    config::add_to_linker::<HostState, Config>(linker, |s| &mut s.config)
}
