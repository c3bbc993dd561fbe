//! The one store type: it owns the resource table and every capability's context.

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::capability::config::ConfigCtx;
use crate::capability::keyvalue::KvCtx;
use crate::capability::log::LogCtx;
use crate::capability::nn::NnCtx;
use crate::capability::outbox::OutboxCtx;
use crate::engine::FunctionSpec;
use crate::error::LimitExceeded;

/// Elements any one table may grow to; Rust guests use a few hundred.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Per-invocation state of a function's store.
pub struct HostState {
    pub(crate) table: ResourceTable,
    pub(crate) wasi: WasiCtx,
    pub(crate) log: LogCtx,
    pub(crate) config: ConfigCtx,
    pub(crate) kv: KvCtx,
    pub(crate) outbox: OutboxCtx,
    pub(crate) nn: NnCtx,
    pub(crate) memory: MemoryBudget,
    pub(crate) clock: CallClock,
}

impl HostState {
    /// A fresh instance's state: each capability's context, built from the
    /// function's spec and what its `prepare` hooks made at load. A new
    /// capability adds its field above and its line here.
    pub(crate) fn new(
        spec: &FunctionSpec,
        config: &crate::capability::config::Prepared,
        log: LogCtx,
        wasi: WasiCtx,
    ) -> Self {
        Self {
            table: ResourceTable::new(),
            wasi,
            log,
            config: ConfigCtx::new(config.clone()),
            kv: KvCtx::new(spec.kv.clone()),
            outbox: OutboxCtx::new(spec.outbox.clone()),
            nn: NnCtx::new(spec.nn.clone(), spec.limits.memory_bytes),
            memory: MemoryBudget {
                limit: spec.limits.memory_bytes,
                used: 0,
            },
            clock: CallClock::default(),
        }
    }

    /// The capabilities' after-invoke hooks: what must reach disk before
    /// the invocation's event is acknowledged (the key-value writes, when
    /// the store is durable).
    pub(crate) fn after_invoke(&mut self) -> Option<crate::kv::Kv> {
        self.kv.take_dirty()
    }

    /// The same hooks for an instance stopped mid-call (its time ran out),
    /// whose state is gone: what it may have written is made durable all
    /// the same.
    pub(crate) fn after_stop(spec: &FunctionSpec) -> Option<crate::kv::Kv> {
        crate::capability::keyvalue::after_stop(spec.kv.as_ref())
    }
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState")
            .field("log", &self.log)
            .field("memory", &self.memory)
            .finish_non_exhaustive()
    }
}

/// The running call's deadline and its standing at the CPU gate, which the
/// store's epoch callback reads. The callback is set once per store, so a
/// call writes these two fields instead of boxing a new closure each time.
#[derive(Debug, Default)]
pub(crate) struct CallClock {
    pub(crate) deadline: Option<std::time::Instant>,
    pub(crate) run: Option<std::sync::Arc<crate::sched::RunState>>,
}

/// Linear memory the instance may hold, across all its memories.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MemoryBudget {
    pub(crate) limit: u64,
    pub(crate) used: u64,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current) as u64;
        let requested = self.memory.used.saturating_add(growth);
        if requested > self.memory.limit {
            // An error (not `Ok(false)`) traps at once with the limit named,
            // instead of leaving the guest to abort on a failed allocation.
            return Err(LimitExceeded::Memory {
                limit: self.memory.limit,
                requested,
            }
            .into());
        }
        self.memory.used = requested;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
