//! The WIT glue of `brink:edge/config`.

use wasmtime::component::{HasData, Linker};

use super::ConfigCtx;
use crate::bindings::brink::edge::config;
use crate::state::HostState;

impl config::Host for ConfigCtx {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(ConfigCtx::get(self, &key))
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
