//! The engine: compiles and links components once, then runs each event in a
//! fresh, limited instance, or in a warm one where the function allows reuse.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{InstanceAllocationStrategy, PoolingAllocationConfig, Store};

use crate::bindings::{CloudEvent, Function as FunctionBindings, FunctionPre};
use crate::cache::{self, CompileCache, Compiled};
use crate::capability::config::ConfigCtx;
use crate::capability::keyvalue::{KvAccess, KvCtx};
use crate::capability::log::LogCtx;
use crate::capability::nn::{NnAccess, NnCtx};
use crate::capability::outbox::{OutboxAccess, OutboxCtx};
use crate::capability::{self, wasi::GuestOutput};
use crate::error::{InvokeError, LimitExceeded, LoadError};
use crate::event;
use crate::state::{HostState, MemoryBudget};

/// How often the engine's epoch advances: the resolution of time limits,
/// and the slice a long-running guest gets before it yields (so the wait a
/// short request may have behind one: 1 ms, where 2 ms doubled the
/// neighbour's p99 in the fairness benchmark).
const EPOCH_TICK: Duration = Duration::from_millis(1);
const MIB: u64 = 1 << 20;
/// Bytes of each pooled memory and table kept resident between instances.
const KEEP_RESIDENT: usize = 64 * 1024;
/// A warm instance left unused this long is dropped instead of reused.
const IDLE_LIFETIME: Duration = Duration::from_secs(60);

/// Host-wide settings of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Instances that may exist at once, across all functions (pool slots).
    pub max_instances: u32,
    /// The largest memory limit any function may be given, in bytes.
    pub max_memory_bytes: u64,
    /// The largest component accepted, in bytes.
    pub max_component_bytes: usize,
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Run slots for guests that run past one epoch tick ([`crate::sched`]);
    /// none: one fewer than the machine's cores, and at least one. A number
    /// as large as the pool turns the fair gate off (benchmarks compare).
    pub cpu_slots: Option<usize>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_instances: 256,
            max_memory_bytes: 1024 * MIB,
            max_component_bytes: 64 * MIB as usize,
            cache_dir: cache::default_dir(),
            cpu_slots: None,
        }
    }
}

/// Per-function limits, enforced on every invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time one invocation may take.
    pub timeout: Duration,
    /// Linear memory one instance may hold, in bytes.
    pub memory_bytes: u64,
    /// Bytes of output events one invocation may return, counted as they
    /// will travel (attributes, data and each event's JSON envelope).
    pub max_output_bytes: usize,
    /// Output events one invocation may return.
    pub max_outputs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(1),
            memory_bytes: 64 * MIB,
            max_output_bytes: 4 * MIB as usize,
            max_outputs: 1000,
        }
    }
}

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

/// The wasmtime engine, the shared linker and the compile cache.
#[derive(Clone)]
pub struct Engine {
    engine: wasmtime::Engine,
    linker: Arc<Linker<HostState>>,
    cache: CompileCache,
    config: EngineConfig,
    /// Warm instances kept idle across all functions, each holding a pool slot.
    idle: Arc<AtomicUsize>,
    /// Run slots for guests past their first tick, shared fairly ([`crate::sched`]).
    gate: Arc<crate::sched::CpuGate>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Creates the engine and starts its epoch ticker.
    pub fn new(config: EngineConfig) -> anyhow::Result<Self> {
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
        pool.linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT);
        let mut wasm = wasmtime::Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = wasmtime::Engine::new(&wasm)?;

        let mut linker = Linker::new(&engine);
        capability::add_to_linker(&mut linker)?;

        let weak = engine.weak();
        let gate = match config.cpu_slots {
            Some(slots) => crate::sched::CpuGate::new(slots),
            None => crate::sched::CpuGate::for_this_machine(),
        };
        let reaper = gate.clone();
        std::thread::Builder::new()
            .name("brink-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    reaper.reap();
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;

        Ok(Self {
            engine,
            linker: Arc::new(linker),
            cache: CompileCache::new(config.cache_dir.clone()),
            config,
            idle: Arc::new(AtomicUsize::new(0)),
            gate,
        })
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Loads the component at `path` as the function `spec`.
    pub fn load_file(&self, spec: FunctionSpec, path: &Path) -> Result<Function, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        self.load(spec, &bytes, &path.display().to_string())
    }

    /// Checks, compiles (or loads from the cache) and links `bytes` as the
    /// function `spec`; `what` names the component in errors.
    pub fn load(
        &self,
        spec: FunctionSpec,
        bytes: &[u8],
        what: &str,
    ) -> Result<Function, LoadError> {
        let what = what.to_owned();
        let function = spec.name.clone();
        if bytes.len() > self.config.max_component_bytes {
            return Err(LoadError::TooLarge {
                what,
                size: bytes.len(),
                limit: self.config.max_component_bytes,
            });
        }
        check_header(bytes, &what)?;
        self.check_limits(&spec)?;
        capability::check_grants(&function, &spec.grants)?;

        let digest = cache::digest(bytes);
        let (component, compiled) =
            self.cache
                .load(&self.engine, &digest, bytes)
                .map_err(|e| LoadError::Invalid {
                    what: what.clone(),
                    reason: format!("{e:#}"),
                })?;
        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        capability::check_imports(&function, imports.iter().map(String::as_str), &spec.grants)?;

        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link {
                function: function.clone(),
                reason: format!("{e:#}"),
            })?;
        let pre = FunctionPre::new(pre).map_err(|e| LoadError::MissingExport {
            function: function.clone(),
            reason: format!("{e:#}"),
        })?;
        match compiled {
            Compiled::Fresh(t) => {
                tracing::info!(
                    function,
                    digest = &digest[..12],
                    "compiled in {:.1} ms",
                    ms(t)
                );
            }
            Compiled::Cached(t) => {
                tracing::info!(
                    function,
                    digest = &digest[..12],
                    "loaded precompiled code from the cache in {:.2} ms",
                    ms(t)
                );
            }
        }
        let group = Arc::from(function.split('/').next().unwrap_or_default());
        Ok(Function {
            inner: Arc::new(FunctionInner {
                name: Arc::from(function),
                config: Arc::new(spec.config.clone()),
                spec,
                digest,
                compiled,
                pre,
                engine: self.engine.clone(),
                warm: Mutex::new(Vec::new()),
                idle: self.idle.clone(),
                // Half the pool at most, so idle instances never starve a
                // function that needs a fresh one.
                max_idle: (self.config.max_instances as usize / 2).max(1),
                log_budget: Arc::default(),
                gate: self.gate.clone(),
                group,
            }),
        })
    }

    fn check_limits(&self, spec: &FunctionSpec) -> Result<(), LoadError> {
        let bad = |reason: String| LoadError::BadLimits {
            function: spec.name.clone(),
            reason,
        };
        let limits = &spec.limits;
        if limits.timeout.is_zero() {
            return Err(bad("the time limit must be above zero".into()));
        }
        if limits.max_outputs == 0 {
            return Err(bad("max_outputs must be above zero".into()));
        }
        if limits.memory_bytes < MIB {
            return Err(bad("the memory limit must be at least 1 MiB".into()));
        }
        if limits.memory_bytes > self.config.max_memory_bytes {
            return Err(bad(format!(
                "the memory limit of {} MiB is over this host's maximum of {} MiB",
                limits.memory_bytes / MIB,
                self.config.max_memory_bytes / MIB
            )));
        }
        Ok(())
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Whether `bytes` are a WebAssembly component (not a core module, not something else).
pub fn check_header(bytes: &[u8], what: &str) -> Result<(), LoadError> {
    let what = what.to_owned();
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Err(LoadError::CoreModule { what }),
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => Ok(()),
        Some([0, b'a', b's', b'm', ..]) => Err(LoadError::Invalid {
            what,
            reason: "unsupported WebAssembly binary version".into(),
        }),
        _ => Err(LoadError::NotWasm { what }),
    }
}

/// A loaded function: compiled, checked against its grants, linked.
/// Cheap to clone; every invocation gets its own instance.
#[derive(Clone)]
pub struct Function {
    inner: Arc<FunctionInner>,
}

struct FunctionInner {
    name: Arc<str>,
    spec: FunctionSpec,
    config: Arc<BTreeMap<String, String>>,
    digest: String,
    compiled: Compiled,
    pre: FunctionPre<HostState>,
    engine: wasmtime::Engine,
    /// Warm instances waiting for the next event, most recently used last.
    warm: Mutex<Vec<Idle>>,
    idle: Arc<AtomicUsize>,
    max_idle: usize,
    /// Its log records per second, across its instances.
    log_budget: Arc<crate::capability::log::LogBudget>,
    gate: Arc<crate::sched::CpuGate>,
    /// Whose turn its guests take at the gate: its tenant (a tenant's
    /// functions are `<tenant>/<name>`), or itself.
    group: Arc<str>,
}

/// A warm instance in a function's pool; leaving it (reused or dropped)
/// frees its place in the engine-wide count.
struct Idle {
    parts: Parts,
    since: Instant,
    _slot: IdleSlot,
}

/// One place in the engine-wide count of idle instances.
struct IdleSlot(Arc<AtomicUsize>);

impl Drop for IdleSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Function")
            .field("spec", &self.inner.spec)
            .field("digest", &self.inner.digest)
            .field("compiled", &self.inner.compiled)
            .finish_non_exhaustive()
    }
}

impl Function {
    /// The function's spec.
    pub fn spec(&self) -> &FunctionSpec {
        &self.inner.spec
    }

    /// The component's sha256.
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    /// Whether loading compiled the component or found it in the cache, and how long it took.
    pub fn compiled(&self) -> Compiled {
        self.inner.compiled
    }

    /// Runs `event` through a fresh instance, which is dropped afterwards, so
    /// events never share guest memory; or, where the spec allows reuse,
    /// through a warm instance of this function.
    pub async fn invoke(&self, event: CloudEvent) -> Result<Vec<CloudEvent>, InvokeError> {
        let started = Instant::now();
        // A busy group's calls run on the gate's lane, off the node's
        // workers (sched.rs says why).
        let result = match self.inner.gate.lane_for(&self.inner.group) {
            Some(lane) => {
                let f = self.clone();
                lane.run(async move { f.invoke_here(event).await })
                    .await
                    .unwrap_or_else(|| {
                        Err(InvokeError::Busy {
                            function: self.inner.name.to_string(),
                            reason: "the host is stopping its guest threads".to_owned(),
                        })
                    })
            }
            None => self.invoke_here(event).await,
        };
        // Counted on the lane too, so a group flooding the node with failing
        // calls stays busy rather than coming back every `HOT` window.
        if let Err(e) = &result
            && e.is_guest_fault()
        {
            self.inner.gate.failed(&self.inner.group, started.elapsed());
        }
        result
    }

    /// [`Function::invoke`] on the current thread.
    async fn invoke_here(&self, event: CloudEvent) -> Result<Vec<CloudEvent>, InvokeError> {
        let reuse = self.inner.spec.instance_reuse;
        // One timer for the whole invocation: instantiation counts against the limit too.
        let ran = with_timeout(self, self.inner.spec.limits.timeout, async {
            let mut instance = match self.take_warm() {
                Some(parts) => Instance {
                    function: self.clone(),
                    parts,
                },
                None => match self.instantiate_unbounded(&event.id).await {
                    Ok(instance) => instance,
                    Err(e) => return (Err(e), None),
                },
            };
            instance.parts.begin(&event.id);
            let result = instance.call_unbounded(event).await;
            instance.parts.used += 1;
            let written = instance.parts.store.data_mut().kv.take_dirty();
            if reuse > 1 && instance.parts.used < reuse && returned_normally(&result) {
                self.put_warm(instance.parts);
            }
            (result, written)
        })
        .await;
        match ran {
            Ok((result, written)) => {
                self.make_durable(written).await?;
                result
            }
            Err(timeout) => {
                // What the guest wrote before it was stopped is kept too.
                let written = self.inner.spec.kv.as_ref().map(|a| a.kv.clone());
                self.make_durable(written.filter(|kv| kv.config().durable))
                    .await?;
                Err(timeout)
            }
        }
    }

    /// Flushes the key-value writes of an invocation to disk, so they are
    /// durable before its event is acknowledged. Concurrent invocations'
    /// flushes share one sync.
    async fn make_durable(&self, written: Option<crate::kv::Kv>) -> Result<(), InvokeError> {
        let Some(kv) = written else { return Ok(()) };
        let flushed = tokio::task::spawn_blocking(move || kv.flush()).await;
        match flushed {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(InvokeError::Durability {
                function: self.inner.name.to_string(),
                reason: format!("{e:#}"),
            }),
            Err(e) => Err(InvokeError::Durability {
                function: self.inner.name.to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// The most recently used warm instance, if one is waiting.
    fn take_warm(&self) -> Option<Parts> {
        if self.inner.spec.instance_reuse <= 1 {
            return None;
        }
        let mut warm = self
            .inner
            .warm
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        warm.pop().map(|idle| idle.parts)
    }

    /// Keeps `parts` for the next event, unless the engine already holds as
    /// many idle instances as it allows; drops instances idle too long.
    fn put_warm(&self, parts: Parts) {
        let f = &self.inner;
        if f.idle.fetch_add(1, Ordering::Relaxed) >= f.max_idle {
            f.idle.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let idle = Idle {
            parts,
            since: Instant::now(),
            _slot: IdleSlot(f.idle.clone()),
        };
        let stale = {
            let mut warm = f.warm.lock().unwrap_or_else(PoisonError::into_inner);
            let fresh_from = warm
                .iter()
                .position(|i| i.since.elapsed() < IDLE_LIFETIME)
                .unwrap_or(warm.len());
            let stale: Vec<Idle> = warm.drain(..fresh_from).collect();
            warm.push(idle);
            stale
        };
        // Dropped outside the lock: freeing a pool slot takes a while.
        drop(stale);
    }

    /// Guest log records dropped over the log limits since it was loaded.
    pub fn log_records_dropped(&self) -> u64 {
        self.inner.log_budget.dropped()
    }

    /// Log records dropped since the last call (for a counter); one atomic
    /// load when none was.
    pub fn take_log_drops(&self) -> u64 {
        self.inner.log_budget.take_unreported()
    }

    /// A fresh instance, for callers that run several events through one
    /// (benchmarks; a trap leaves it unusable).
    pub async fn instantiate(&self, event_id: &str) -> Result<Instance, InvokeError> {
        with_timeout(
            self,
            self.inner.spec.limits.timeout,
            self.instantiate_unbounded(event_id),
        )
        .await?
    }

    /// [`Function::instantiate`] bounded by the epoch deadline alone.
    async fn instantiate_unbounded(&self, event_id: &str) -> Result<Instance, InvokeError> {
        let f = &self.inner;
        let event_id: Arc<str> = Arc::from(event_id);
        let tap = f.spec.logs.as_ref();
        let (wasi, stdout, stderr) = capability::wasi::ctx(&f.name, &event_id, tap);
        let state = HostState {
            table: ResourceTable::new(),
            wasi,
            log: LogCtx::new(f.name.clone(), event_id, tap.cloned(), f.log_budget.clone()),
            config: ConfigCtx::new(f.config.clone()),
            kv: KvCtx::new(f.spec.kv.clone()),
            outbox: OutboxCtx::new(f.spec.outbox.clone()),
            nn: NnCtx::new(f.spec.nn.clone(), f.spec.limits.memory_bytes),
            memory: MemoryBudget {
                limit: f.spec.limits.memory_bytes,
                used: 0,
            },
        };
        let mut store = Store::new(&f.engine, state);
        store.limiter(|s| s);
        let run = f.gate.run(f.group.clone());
        arm_deadline(&mut store, f.spec.limits.timeout, run.clone());
        run.admit().await;
        let instantiated = f.pre.instantiate_async(&mut store).await;
        run.give_up();
        let bindings = match instantiated {
            Ok(bindings) => bindings,
            Err(e) => {
                return Err(match classify(self, e, &stderr) {
                    InvokeError::Trap { trap, .. } => InvokeError::Instantiate {
                        function: f.name.to_string(),
                        reason: trap,
                    },
                    other => other,
                });
            }
        };
        Ok(Instance {
            function: self.clone(),
            parts: Parts {
                store,
                bindings,
                stdout,
                stderr,
                used: 0,
            },
        })
    }
}

/// Ends the guest with [`LimitExceeded::Timeout`] once `timeout` has passed;
/// until then it yields to the executor at every epoch tick, so a busy guest
/// cannot starve other tasks on its thread.
fn arm_deadline(store: &mut Store<HostState>, timeout: Duration, run: Arc<crate::sched::RunState>) {
    let deadline = Instant::now() + timeout;
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if Instant::now() >= deadline {
            run.give_up();
            Err(LimitExceeded::Timeout.into())
        } else {
            Ok(run.tick())
        }
    });
}

/// Bounds a guest call by wall-clock time even while it waits inside a host
/// call (a sleep, a poll), where epoch interruption cannot reach it. Dropping
/// the future unwinds the guest's fiber safely; the instance is then unusable.
async fn with_timeout<T>(
    function: &Function,
    timeout: Duration,
    call: impl Future<Output = T>,
) -> Result<T, InvokeError> {
    // The epoch deadline normally fires first; the grace keeps its message.
    tokio::time::timeout(timeout + 4 * EPOCH_TICK, call)
        .await
        .map_err(|_| InvokeError::Timeout {
            function: function.inner.name.to_string(),
            limit: timeout,
        })
}

/// Names what ended a guest: a limit, an exit, or a trap.
fn classify(function: &Function, error: wasmtime::Error, stderr: &GuestOutput) -> InvokeError {
    let name = function.inner.name.to_string();
    if let Some(limit) = error.downcast_ref::<LimitExceeded>() {
        return match *limit {
            LimitExceeded::Timeout => InvokeError::Timeout {
                function: name,
                limit: function.inner.spec.limits.timeout,
            },
            LimitExceeded::Memory { limit, requested } => InvokeError::MemoryLimit {
                function: name,
                limit,
                requested,
            },
        };
    }
    // The pool is full: the node is busy, not the function broken.
    if let Some(full) = error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
        return InvokeError::Busy {
            function: name,
            reason: full.to_string(),
        };
    }
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return InvokeError::Exit {
            function: name,
            code: exit.0,
        };
    }
    let trap = match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => error.root_cause().to_string(),
    };
    InvokeError::Trap {
        function: name,
        trap,
        panic: stderr.panic_message(),
    }
}

/// Whether the guest came back from the call by itself (with outputs or an
/// error of its own), so its instance is still sound; a trap, a limit or a
/// timeout leaves it unusable.
fn returned_normally(result: &Result<Vec<CloudEvent>, InvokeError>) -> bool {
    matches!(
        result,
        Ok(_)
            | Err(InvokeError::Handler { .. }
                | InvokeError::InvalidOutput { .. }
                | InvokeError::OutputTooLarge { .. }
                | InvokeError::TooManyOutputs { .. })
    )
}

/// A live instance of a function.
pub struct Instance {
    function: Function,
    parts: Parts,
}

/// What an instance is made of, without the function that owns it (warm
/// instances sit in their function's pool).
struct Parts {
    store: Store<HostState>,
    bindings: FunctionBindings,
    stdout: GuestOutput,
    stderr: GuestOutput,
    /// Events this instance has handled.
    used: u32,
}

impl Parts {
    /// Tags the host-side contexts with the event about to be handled.
    fn begin(&mut self, event_id: &str) {
        if self.used == 0 {
            return;
        }
        let event_id: Arc<str> = Arc::from(event_id);
        self.stdout.begin(&event_id);
        self.stderr.begin(&event_id);
        self.store.data_mut().log.begin(event_id);
    }
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("function", &self.function)
            .finish_non_exhaustive()
    }
}

impl Instance {
    /// Calls the handler with `event` and checks what it returns.
    pub async fn call(&mut self, event: CloudEvent) -> Result<Vec<CloudEvent>, InvokeError> {
        let function = self.function.clone();
        let timeout = function.inner.spec.limits.timeout;
        self.parts.begin(&event.id);
        let result = with_timeout(&function, timeout, self.call_unbounded(event)).await;
        self.parts.stderr.finish();
        self.parts.used += 1;
        let written = self.parts.store.data_mut().kv.take_dirty();
        function.make_durable(written).await?;
        result?
    }

    /// [`Instance::call`] bounded by the epoch deadline alone.
    async fn call_unbounded(&mut self, event: CloudEvent) -> Result<Vec<CloudEvent>, InvokeError> {
        let f = &self.function.inner;
        let parts = &mut self.parts;
        let run = f.gate.run(f.group.clone());
        arm_deadline(&mut parts.store, f.spec.limits.timeout, run.clone());
        run.admit().await;
        let result = parts
            .bindings
            .brink_edge_handler()
            .call_handle(&mut parts.store, &event)
            .await;
        run.give_up();
        parts.stdout.finish();
        parts.stderr.finish();
        match result {
            Ok(Ok(outputs)) => self.check_outputs(outputs),
            Ok(Err(e)) => Err(InvokeError::Handler {
                function: f.name.to_string(),
                kind: e.kind,
                message: e.message,
            }),
            Err(e) => Err(classify(&self.function, e, &self.parts.stderr)),
        }
    }

    fn check_outputs(&self, mut outputs: Vec<CloudEvent>) -> Result<Vec<CloudEvent>, InvokeError> {
        let f = &self.function.inner;
        if outputs.len() > f.spec.limits.max_outputs {
            return Err(InvokeError::TooManyOutputs {
                function: f.name.to_string(),
                count: outputs.len(),
                limit: f.spec.limits.max_outputs,
            });
        }
        let size: usize = outputs.iter().map(event::wire_size).sum();
        if size > f.spec.limits.max_output_bytes {
            return Err(InvokeError::OutputTooLarge {
                function: f.name.to_string(),
                size,
                limit: f.spec.limits.max_output_bytes,
            });
        }
        for (index, out) in outputs.iter_mut().enumerate() {
            if out.id.is_empty() {
                out.id = uuid::Uuid::new_v4().to_string();
            }
            if out.specversion.is_empty() {
                out.specversion = "1.0".to_owned();
            }
            event::validate(out, event::json::ATTRIBUTE).map_err(|e| {
                InvokeError::InvalidOutput {
                    function: f.name.to_string(),
                    index,
                    reason: e.to_string(),
                }
            })?;
        }
        Ok(outputs)
    }
}
