//! A loaded function, and one invocation of it: a fresh or warm instance,
//! its deadline, and how its end is classified.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use wasmtime::{Store, UpdateDeadline};

use super::instance::{Instance, Parts};
use super::spec::FunctionSpec;
use super::{EPOCH_TICK, IDLE_LIFETIME};
use crate::bindings::CloudEvent;
use crate::cache::Compiled;
use crate::capability;
use crate::capability::log::LogCtx;
use crate::capability::wasi::GuestOutput;
use crate::error::{InvokeError, LimitExceeded};
use crate::state::HostState;

/// A loaded function: compiled, checked against its grants, linked.
/// Cheap to clone; every invocation gets its own instance.
#[derive(Clone)]
pub struct Function {
    pub(super) inner: Arc<FunctionInner>,
}

pub(super) struct FunctionInner {
    pub(super) name: Arc<str>,
    pub(super) spec: FunctionSpec,
    pub(super) config: Arc<BTreeMap<String, String>>,
    pub(super) digest: String,
    pub(super) compiled: Compiled,
    pub(super) pre: super::entry::EntryPre,
    /// Keeps the shared code alive while this function exists.
    pub(super) _code: Arc<super::code::Code>,
    pub(super) engine: wasmtime::Engine,
    /// Which of the engine's configurations runs it.
    pub(super) flavour: super::Flavour,
    /// Warm instances waiting for the next event, most recently used last.
    pub(super) warm: Mutex<Vec<Idle>>,
    pub(super) idle: Arc<AtomicUsize>,
    pub(super) max_idle: usize,
    /// Its log records per second, across its instances.
    pub(super) log_budget: Arc<crate::capability::log::LogBudget>,
    pub(super) gate: Arc<crate::sched::CpuGate>,
    /// Whose turn its guests take at the gate: its tenant (a tenant's
    /// functions are `<tenant>/<name>`), or itself.
    pub(super) group: Arc<str>,
    /// [`crate::EngineConfig::deadlines`].
    pub(super) deadlines: bool,
}

/// A warm instance in a function's pool; leaving it (reused or dropped)
/// frees its place in the engine-wide count.
pub(super) struct Idle {
    pub(super) parts: Parts,
    pub(super) since: Instant,
    pub(super) _slot: IdleSlot,
}

/// One place in the engine-wide count of idle instances.
pub(super) struct IdleSlot(Arc<AtomicUsize>);

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

/// Which instance ran an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instantiated {
    /// A new one, made for it.
    Fresh,
    /// One kept warm from an earlier event of the same function.
    Warm,
    /// None: the call failed before it had one.
    Not,
}

impl Instantiated {
    pub fn label(self) -> &'static str {
        match self {
            Self::Fresh => "fresh",
            Self::Warm => "warm",
            Self::Not => "none",
        }
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

    /// Which engine configuration runs it: slim (WASI 0.2) or concurrent (0.3).
    pub fn flavour(&self) -> super::Flavour {
        self.inner.flavour
    }

    /// Whether loading compiled the component or found it in the cache, and how long it took.
    pub fn compiled(&self) -> Compiled {
        self.inner.compiled
    }

    /// Runs `event` through a fresh instance, which is dropped afterwards, so
    /// events never share guest memory; or, where the spec allows reuse,
    /// through a warm instance of this function.
    pub async fn invoke(&self, event: CloudEvent) -> Result<Vec<CloudEvent>, InvokeError> {
        self.invoke_reporting(event).await.0
    }

    /// [`Function::invoke`], and whether a warm instance ran it (a fresh
    /// one was made otherwise), for the invocation's trace span.
    pub async fn invoke_reporting(
        &self,
        event: CloudEvent,
    ) -> (Result<Vec<CloudEvent>, InvokeError>, Instantiated) {
        let started = Instant::now();
        // A busy group's calls run on the gate's lane, off the node's
        // workers (sched.rs says why).
        let (result, instantiated) = match self.inner.gate.lane_for(&self.inner.group) {
            Some(lane) => {
                let f = self.clone();
                lane.run(async move { f.invoke_here(event).await })
                    .await
                    .unwrap_or_else(|| {
                        let busy = InvokeError::Busy {
                            function: self.inner.name.to_string(),
                            reason: "the host is stopping its guest threads".to_owned(),
                        };
                        (Err(busy), Instantiated::Not)
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
        (result, instantiated)
    }

    /// [`Function::invoke`] on the current thread.
    async fn invoke_here(
        &self,
        event: CloudEvent,
    ) -> (Result<Vec<CloudEvent>, InvokeError>, Instantiated) {
        let reuse = self.inner.spec.instance_reuse;
        let mut instantiated = Instantiated::Not;
        // One timer for the whole invocation: instantiation counts against the limit too.
        let ran = with_timeout(self, self.inner.spec.limits.timeout, async {
            let mut instance = match self.take_warm() {
                Some(parts) => {
                    instantiated = Instantiated::Warm;
                    Instance {
                        function: self.clone(),
                        parts,
                    }
                }
                None => match self.instantiate_unbounded(&event.id).await {
                    Ok(instance) => {
                        instantiated = Instantiated::Fresh;
                        instance
                    }
                    Err(e) => return (Err(e), None),
                },
            };
            instance.parts.begin(&event.id);
            let result = instance.call_unbounded(event).await;
            instance.parts.used += 1;
            let written = instance.parts.store.data_mut().after_invoke();
            if reuse > 1 && instance.parts.used < reuse && returned_normally(&result) {
                self.put_warm(instance.parts);
            }
            (result, written)
        })
        .await;
        let result = match ran {
            Ok((result, written)) => match self.make_durable(written).await {
                Ok(()) => result,
                Err(e) => Err(e),
            },
            Err(timeout) => {
                // What the guest wrote before it was stopped is kept too.
                match self
                    .make_durable(HostState::after_stop(&self.inner.spec))
                    .await
                {
                    Ok(()) => Err(timeout),
                    Err(e) => Err(e),
                }
            }
        };
        (result, instantiated)
    }

    /// Flushes the key-value writes of an invocation to disk, so they are
    /// durable before its event is acknowledged. Concurrent invocations'
    /// flushes share one sync.
    pub(super) async fn make_durable(
        &self,
        written: Option<crate::kv::Kv>,
    ) -> Result<(), InvokeError> {
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
        let log = LogCtx::new(f.name.clone(), event_id, tap.cloned(), f.log_budget.clone());
        let state = HostState::new(&f.spec, &f.config, log, wasi);
        let mut store = Store::new(&f.engine, state);
        store.limiter(|s| s);
        let run = f.gate.run(f.group.clone());
        if f.deadlines {
            store.epoch_deadline_callback(on_tick);
            arm_deadline(&mut store, f.spec.limits.timeout, run.clone());
        }
        run.admit().await;
        let instantiated = f.pre.instantiate(&mut store).await;
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
/// cannot starve other tasks on its thread. [`on_tick`] must be the store's
/// epoch callback.
pub(super) fn arm_deadline(
    store: &mut Store<HostState>,
    timeout: Duration,
    run: Arc<crate::sched::RunState>,
) {
    let clock = &mut store.data_mut().clock;
    clock.deadline = Some(Instant::now() + timeout);
    clock.run = Some(run);
    store.set_epoch_deadline(1);
}

/// The store's epoch callback, set once when the store is made: a tick
/// ends a call past its deadline, or is the gate's turn (`sched.rs`).
fn on_tick(cx: wasmtime::StoreContextMut<'_, HostState>) -> wasmtime::Result<UpdateDeadline> {
    let clock = &cx.data().clock;
    let Some(run) = &clock.run else {
        // Ticks between calls (none run guest code) have nothing to bound.
        return Ok(UpdateDeadline::Continue(1));
    };
    if clock.deadline.is_some_and(|at| Instant::now() >= at) {
        run.give_up();
        return Err(LimitExceeded::Timeout.into());
    }
    Ok(run.tick())
}

/// Bounds a guest call by wall-clock time even while it waits inside a host
/// call (a sleep, a poll), where epoch interruption cannot reach it. Dropping
/// the future unwinds the guest's fiber safely; the instance is then unusable.
pub(super) async fn with_timeout<T>(
    function: &Function,
    timeout: Duration,
    call: impl Future<Output = T>,
) -> Result<T, InvokeError> {
    if !function.inner.deadlines {
        return Ok(call.await);
    }
    // The epoch deadline normally fires first; the grace keeps its message.
    let deadline = tokio::time::Instant::now() + timeout + 4 * EPOCH_TICK;
    let mut call = std::pin::pin!(call);
    // Armed only once the call waits: most calls finish in their first
    // poll, and a timer per call (a clone of the runtime's handle, a
    // larger future) cost a few percent of MQTT throughput.
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = call.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        timer.as_mut().poll(cx).map(|()| {
            Err(InvokeError::Timeout {
                function: function.inner.name.to_string(),
                limit: timeout,
            })
        })
    })
    .await
}

/// Names what ended a guest: a limit, an exit, or a trap.
pub(super) fn classify(
    function: &Function,
    error: wasmtime::Error,
    stderr: &GuestOutput,
) -> InvokeError {
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
        Some(trap) => match refused_call(&error) {
            Some(call) => format!(
                "it called {call}, which no function is granted (brink build plugs wasi:sockets \
                 with a stub that refuses every call: the host gives functions no network)"
            ),
            None => trap.to_string(),
        },
        None => error.root_cause().to_string(),
    };
    InvokeError::Trap {
        function: name,
        trap,
        panic: stderr.panic_message(),
    }
}

/// The import a trap happened in, when it happened in a plug `brink build`
/// put in place of an import (ADR 0019).
fn refused_call(error: &wasmtime::Error) -> Option<String> {
    let backtrace = error.downcast_ref::<wasmtime::WasmBacktrace>()?;
    let name = backtrace.frames().first()?.func_name()?;
    name.strip_prefix(crate::contract::REFUSED_CALL_PREFIX)
        .map(str::to_owned)
}

/// Whether the guest came back from the call by itself (with outputs or an
/// error of its own), so its instance is still sound; a trap, a limit or a
/// timeout leaves it unusable.
pub(super) fn returned_normally(result: &Result<Vec<CloudEvent>, InvokeError>) -> bool {
    matches!(
        result,
        Ok(_)
            | Err(InvokeError::Handler { .. }
                | InvokeError::InvalidOutput { .. }
                | InvokeError::OutputTooLarge { .. }
                | InvokeError::TooManyOutputs { .. })
    )
}
