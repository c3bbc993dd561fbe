//! The engine: compiles and links components once, then runs each event in a
//! fresh, limited instance, or in a warm one where the function allows reuse.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::cache::{self, Compiled};
use crate::capability;
use crate::error::LoadError;

mod code;
mod entry;
mod flavour;
mod function;
mod instance;
mod pool;
mod spec;

pub use flavour::Flavour;
use flavour::Runtime;
use function::FunctionInner;
pub use function::{Function, Instantiated};
pub use instance::Instance;
pub use pool::PoolTuning;
pub use spec::FunctionSpec;

/// How often the engine's epoch advances: the resolution of time limits,
/// and the slice a long-running guest gets before it yields (so the wait a
/// short request may have behind one: 1 ms, where 2 ms doubled the
/// neighbour's p99 in the fairness benchmark).
const EPOCH_TICK: Duration = Duration::from_millis(1);
const MIB: u64 = 1 << 20;
/// A warm instance left unused this long is dropped instead of reused.
const IDLE_LIFETIME: Duration = Duration::from_secs(60);

/// Pool slots when nothing says otherwise (`brink up --max-instances`).
pub const DEFAULT_MAX_INSTANCES: u32 = 256;

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
    /// Time limits on guests (epoch interruption and a wall-clock timer per
    /// call). Always on in the node; off only so benchmarks can measure
    /// what deadlines cost, since a guest that never returns then holds
    /// its slot and thread for good.
    pub deadlines: bool,
    /// Runs every component on the concurrent (WASI 0.3) engine. Always off
    /// in the node; on only so benchmarks can measure what that engine
    /// costs a WASI 0.2 call, the reason it is not the only one.
    pub all_concurrent: bool,
    /// How pooled slots are reset between instances.
    pub pool: PoolTuning,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_instances: DEFAULT_MAX_INSTANCES,
            max_memory_bytes: 1024 * MIB,
            max_component_bytes: 64 * MIB as usize,
            cache_dir: cache::default_dir(),
            cpu_slots: None,
            deadlines: true,
            all_concurrent: false,
            pool: PoolTuning::default(),
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

/// The wasmtime engines (slim for WASI 0.2, concurrent for 0.3), their
/// linkers and the compile cache.
#[derive(Clone)]
pub struct Engine {
    slim: Runtime,
    /// Made on the first component that needs it.
    concurrent: Arc<OnceLock<Runtime>>,
    config: EngineConfig,
    /// Warm instances kept idle across all functions, each holding a pool slot.
    idle: Arc<AtomicUsize>,
    /// Run slots for guests past their first tick, shared fairly ([`crate::sched`]).
    gate: Arc<crate::sched::CpuGate>,
    /// Compiled code by component digest, shared by the functions using it.
    code: code::CodeTable,
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
        let slim = Runtime::new(&config, Flavour::Slim)?;
        let concurrent: Arc<OnceLock<Runtime>> = Arc::default();
        let weak = slim.engine.weak();
        let ticked = concurrent.clone();
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
                    if let Some(concurrent) = ticked.get() {
                        concurrent.engine.increment_epoch();
                    }
                    drop(engine);
                    reaper.reap();
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;

        Ok(Self {
            slim,
            concurrent,
            code: code::CodeTable::default(),
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
        let (code, compiled) = match self.code.get(&digest) {
            Some(code) => (code, Compiled::Shared),
            None => {
                let (code, compiled) = self.compile(&function, &what, &digest, bytes)?;
                (self.code.insert(&digest, code), compiled)
            }
        };
        capability::check_imports(
            &function,
            code.imports.iter().map(String::as_str),
            &spec.grants,
        )?;
        log_compiled(&function, &digest, compiled, code.flavour);
        let group = Arc::from(function.split('/').next().unwrap_or_default());
        Ok(Function {
            inner: Arc::new(FunctionInner {
                name: Arc::from(function),
                config: capability::config::prepare(&spec),
                spec,
                digest,
                compiled,
                pre: code.pre.clone(),
                engine: code.engine.clone(),
                flavour: code.flavour,
                _code: code,
                warm: Mutex::new(Vec::new()),
                idle: self.idle.clone(),
                // Half the pool at most, so idle instances never starve a
                // function that needs a fresh one.
                max_idle: (self.config.max_instances as usize / 2).max(1),
                log_budget: Arc::default(),
                gate: self.gate.clone(),
                group,
                deadlines: self.config.deadlines,
            }),
        })
    }

    /// The runtime of `flavour`, made on first use.
    fn runtime(&self, flavour: Flavour) -> anyhow::Result<&Runtime> {
        match flavour {
            Flavour::Slim => Ok(&self.slim),
            Flavour::Concurrent => {
                if let Some(runtime) = self.concurrent.get() {
                    return Ok(runtime);
                }
                let made = Runtime::new(&self.config, Flavour::Concurrent)?;
                tracing::info!("made the WASI 0.3 engine for the first component that needs it");
                Ok(self.concurrent.get_or_init(|| made))
            }
        }
    }

    /// Compiles `bytes` (or loads them from the cache) and links them, on
    /// the engine its imports ask for; a component the slim engine refuses
    /// (the async ABI with WASI 0.2 imports) is tried on the concurrent one.
    fn compile(
        &self,
        function: &str,
        what: &str,
        digest: &str,
        bytes: &[u8],
    ) -> Result<(code::Code, Compiled), LoadError> {
        let flavour = match self.config.all_concurrent {
            true => Flavour::Concurrent,
            false => flavour::by_imports(bytes),
        };
        let invalid = |e: anyhow::Error| LoadError::Invalid {
            what: what.to_owned(),
            reason: format!("{e:#}"),
        };
        let first = self.runtime(flavour).map_err(invalid)?;
        let (runtime, component, compiled) = match first.cache.load(&first.engine, digest, bytes) {
            Ok((component, compiled)) => (first, component, compiled),
            Err(e) if flavour == Flavour::Slim && flavour::CONCURRENT_BUILT => {
                let second = self.runtime(Flavour::Concurrent).map_err(invalid)?;
                match second.cache.load(&second.engine, digest, bytes) {
                    Ok((component, compiled)) => (second, component, compiled),
                    Err(_) => return Err(invalid(e)),
                }
            }
            Err(e) => return Err(invalid(e)),
        };
        code::Code::link(runtime, function, component).map(|code| (code, compiled))
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

/// Says how `function`'s code was made ready.
fn log_compiled(function: &str, digest: &str, compiled: Compiled, flavour: Flavour) {
    let digest = digest.get(..12).unwrap_or(digest);
    let wasi = flavour.wasi();
    match compiled {
        Compiled::Fresh(t) => {
            tracing::info!(function, digest, wasi, "compiled in {:.1} ms", ms(t));
        }
        Compiled::Cached(t) => {
            tracing::info!(
                function,
                digest,
                wasi,
                "loaded precompiled code from the cache in {:.2} ms",
                ms(t)
            );
        }
        Compiled::Shared => {
            tracing::debug!(
                function,
                digest,
                wasi,
                "shares the code of a loaded function"
            );
        }
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
