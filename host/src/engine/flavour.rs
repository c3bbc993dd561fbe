//! The two engine configurations a component may run on (ADR 0018).
//!
//! - **Slim** (WASI 0.2): no support for concurrent guests in the store, so a
//!   call takes wasmtime's plain fiber path. Every component that does not
//!   need more runs here, at the per-call cost it always had.
//! - **Concurrent** (WASI 0.3): the component-model-async features, and
//!   WASI 0.3 linked beside 0.2. A store built for it sets up the task state
//!   of concurrent guests, and each call goes through wasmtime's event loop,
//!   which costs a P2 call about twice as much; only components that import
//!   `wasi:*@0.3` or use the async ABI pay it. It is built on the first such
//!   component, so a node that runs none never makes it.
//!
//! Both link the same capabilities and are checked by the same grants.

use std::sync::Arc;

use wasmtime::InstanceAllocationStrategy;
use wasmtime::component::Linker;

use super::{EngineConfig, pool};
use crate::cache::CompileCache;
use crate::capability;
use crate::state::HostState;

/// Which configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// WASI 0.2, with no support for concurrent guests.
    Slim,
    /// WASI 0.3 and the component-model-async ABI.
    Concurrent,
}

impl Flavour {
    /// How it is named in logs and views.
    pub fn wasi(self) -> &'static str {
        match self {
            Self::Slim => "p2",
            Self::Concurrent => "p3",
        }
    }
}

/// One configuration's engine, linker and compile cache.
#[derive(Clone)]
pub(super) struct Runtime {
    pub(super) flavour: Flavour,
    pub(super) engine: wasmtime::Engine,
    pub(super) linker: Arc<Linker<HostState>>,
    pub(super) cache: CompileCache,
}

impl Runtime {
    /// The engine of `flavour` for `config`, with every capability linked.
    pub(super) fn new(config: &EngineConfig, flavour: Flavour) -> anyhow::Result<Self> {
        let mut code = wasmtime::Config::new();
        code.wasm_component_model(true)
            .epoch_interruption(config.deadlines);
        concurrency(&mut code, flavour)?;
        let mut wasm = code.clone();
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool::allocation(
            config,
        )?));
        let engine = wasmtime::Engine::new(&wasm)?;
        let mut linker = Linker::new(&engine);
        capability::add_to_linker(&mut linker)?;
        if flavour == Flavour::Concurrent {
            capability::wasi::add_p3_to_linker(&mut linker)?;
        }
        Ok(Self {
            flavour,
            engine,
            linker: Arc::new(linker),
            cache: CompileCache::new(config.cache_dir.clone(), code),
        })
    }
}

#[cfg(feature = "p3")]
fn concurrency(code: &mut wasmtime::Config, flavour: Flavour) -> anyhow::Result<()> {
    let concurrent = flavour == Flavour::Concurrent;
    code.concurrency_support(concurrent)
        .wasm_component_model_async(concurrent);
    Ok(())
}

#[cfg(not(feature = "p3"))]
fn concurrency(_: &mut wasmtime::Config, flavour: Flavour) -> anyhow::Result<()> {
    anyhow::ensure!(
        flavour == Flavour::Slim,
        "this host was built without WASI 0.3 support (the `p3` feature); \
         rebuild it with the feature, or build the component for WASI 0.2"
    );
    Ok(())
}

/// Whether this build can run WASI 0.3 components.
pub(super) const CONCURRENT_BUILT: bool = cfg!(feature = "p3");

/// The flavour a component's top-level imports ask for: concurrent when it
/// imports any WASI 0.3 interface. A component that uses the async ABI with
/// WASI 0.2 imports only is found when the slim engine refuses it.
pub(super) fn by_imports(bytes: &[u8]) -> Flavour {
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else {
            // The compiler says what is wrong with it.
            return Flavour::Slim;
        };
        match payload {
            wasmparser::Payload::Version { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            wasmparser::Payload::ComponentImportSection(imports) if depth == 1 => {
                let p3 = imports
                    .into_iter()
                    .filter_map(Result::ok)
                    .any(|import| is_wasi_03(import.name.name));
                if p3 {
                    return Flavour::Concurrent;
                }
            }
            _ => {}
        }
    }
    Flavour::Slim
}

/// Whether `name` is a WASI 0.3 interface (`wasi:cli/stdout@0.3.0`).
pub(super) fn is_wasi_03(name: &str) -> bool {
    name.starts_with("wasi:")
        && name
            .split_once('@')
            .is_some_and(|(_, version)| version.starts_with("0.3."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasi_03_is_told_by_the_version() {
        assert!(is_wasi_03("wasi:cli/stdout@0.3.0"));
        assert!(is_wasi_03("wasi:clocks/monotonic-clock@0.3.1"));
        assert!(!is_wasi_03("wasi:cli/stdout@0.2.6"));
        assert!(!is_wasi_03("wasi:cli/stdout@0.30.0"));
        assert!(!is_wasi_03("brink:edge/log@0.3.0"));
        assert!(!is_wasi_03("wasi:cli/stdout"));
    }

    #[test]
    fn what_is_not_a_component_asks_for_the_slim_engine() {
        assert_eq!(by_imports(b"not wasm"), Flavour::Slim);
        assert_eq!(by_imports(&[]), Flavour::Slim);
    }
}
