//! The WIT glue of `brink:edge/config` and of the standard
//! `wasi:config/store@0.2.0-draft-2024-09-27` that Spin's and wasmCloud's
//! components import: both read the same values of the function's spec.

use wasmtime::component::{HasData, Linker};

use super::ConfigCtx;
use crate::bindings::brink::edge::config;
use crate::bindings::wasi::config::store;
use crate::state::HostState;

impl config::Host for ConfigCtx {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(ConfigCtx::get(self, &key))
    }
}

impl store::Host for ConfigCtx {
    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, store::Error>> {
        Ok(Ok(ConfigCtx::get(self, &key)))
    }

    fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, store::Error>> {
        Ok(Ok(self.all()))
    }
}

struct Config;

impl HasData for Config {
    type Data<'a> = &'a mut ConfigCtx;
}

/// Links `brink:edge/config` and `wasi:config/store`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    store::add_to_linker::<HostState, Config>(linker, |s| &mut s.config)?;
    config::add_to_linker::<HostState, Config>(linker, |s| &mut s.config)
}
