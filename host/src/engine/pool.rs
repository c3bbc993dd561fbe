//! The pooling allocator's shape: how many slots, how large, and how a slot
//! is reset when an instance ends (the largest part of a fresh instance's
//! cost).

use wasmtime::PoolingAllocationConfig;

use super::EngineConfig;

/// How the pooling allocator resets a slot when an instance ends: the
/// largest part of a fresh instance's cost. The defaults are what the
/// invoke benchmark measured best (BENCHMARKS.md); the fields exist so it
/// can compare them in one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolTuning {
    /// Bytes of each memory and table reset by `memset` and kept resident,
    /// instead of `madvise` and a page fault on next use.
    pub keep_resident: usize,
    /// Linux 6.7+: reset only the pages a guest dirtied (`PAGEMAP_SCAN`),
    /// up to `keep_resident`; falls back where the kernel lacks it.
    pub pagemap_scan: bool,
    /// Decommits gathered before one `madvise` round (1: none gathered).
    pub decommit_batch: usize,
    /// Slots kept warm (their pages resident) while unused.
    pub max_unused_warm_slots: u32,
}

impl Default for PoolTuning {
    /// `PAGEMAP_SCAN` halved a fresh `echo` (22.4 → 12.8 µs); more resident
    /// bytes (1 or 4 MiB) gained under 1 µs more and keep more memory per
    /// used slot, batching decommits and fewer warm slots gained nothing.
    fn default() -> Self {
        Self {
            keep_resident: 64 * 1024,
            pagemap_scan: true,
            decommit_batch: 1,
            max_unused_warm_slots: 100,
        }
    }
}

/// The pool for `config`.
pub(super) fn allocation(config: &EngineConfig) -> anyhow::Result<PoolingAllocationConfig> {
    let slots = config.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::new();
    // A Rust wasip2 component instantiates a handful of core instances
    // (the program, the adapter shims) and up to two memories and a few tables.
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(8))
        .total_memories(slots.saturating_mul(2))
        .total_tables(slots.saturating_mul(4))
        .total_stacks(slots)
        .max_core_instances_per_component(32)
        .max_memories_per_component(2)
        .max_tables_per_component(8)
        .max_memory_size(usize::try_from(config.max_memory_bytes)?);
    // Resetting a slot's first pages with memset beats madvise + refault
    // for the small heaps of edge functions (measured: BENCHMARKS.md).
    let tuning = &config.pool;
    pool.linear_memory_keep_resident(tuning.keep_resident)
        .table_keep_resident(tuning.keep_resident)
        .decommit_batch_size(tuning.decommit_batch.max(1))
        .max_unused_warm_slots(tuning.max_unused_warm_slots)
        .pagemap_scan(if tuning.pagemap_scan {
            wasmtime::Enabled::Auto
        } else {
            wasmtime::Enabled::No
        });
    Ok(pool)
}
