//! Fair shares of the CPU for guests: a long-running guest cannot slow its
//! neighbours, whoever owns it.
//!
//! Every guest yields to the executor at each epoch tick (1 ms). Without
//! more, N busy guests on a 2-core node put N tasks in the executor's run
//! queues, and every await of a neighbour's short request waits behind a
//! slice of each: 16 spinning guests took a neighbour's p99 from 2.8 ms to
//! 134 ms. So a guest that is still running at a tick must hold a *run
//! slot* to go on; there is one fewer slot than cores (at least one), and a
//! guest without one parks, off the run queues, until the gate hands it
//! one. One core stays free for short requests and the node itself, which
//! is what keeps a neighbour's latency: with a slot per core, the fairness
//! benchmark's neighbour p50 went from 0.07 ms to 4.2 ms under 4 spinning
//! guests; with one core kept free it stayed at 0.09 ms. Short guests
//! (under one tick, which is nearly all of them) never meet the gate: only
//! the *second* tick gates, since the first may come right after the start.
//!
//! The gate hands slots out round-robin across *groups* (a tenant, or one of
//! the manifest's functions), first in first out within a group, so a
//! tenant with 300 spinning guests gets one turn per round like a tenant
//! with one. A holder gives its slot up at every tick while others wait,
//! and at the end of its call.
//!
//! A group already at the gate (holding a slot, or waiting for one) is
//! using more than a tick at a time; its *new* calls then start in its line
//! too ([`RunState::admit`]), instead of running their first tick beside
//! everyone's short requests. Otherwise a tenant that starts spinning
//! guests, memory bombs and traps all the time would keep the free core
//! busy with their first ticks and instantiations, which is what set a
//! neighbour's p99 before this.
//!
//! A busy group's calls also run on threads of their own: the gate's *lane*,
//! a runtime with one worker per slot ([`CpuGate::lane_for`]). Run slots
//! alone bound how many guests run, not where: a hog's guests, their
//! instantiations and teardowns shared the node's workers with everyone's
//! short requests, and a neighbour's request that landed behind one waited
//! out its tick (a neighbour's p99 stayed at 2-3 ms against 0.14 ms alone).
//! On the lane they take at most `slots` cores and leave the node's
//! workers to the rest. A group counts as busy while it holds or waits for
//! a slot and for `HOT` after it last got one at a tick, so a hog's calls
//! do not flicker back onto the node's workers between its guests; and when
//! its calls that fail hard (traps, caps) take over `FAILING` in a window
//! ([`CpuGate::failed`]), since those end before any tick.
//!
//! A guest blocked inside a host call (a sleep, an inference queue) does
//! not tick, so it would keep its slot without using it: holders renew a
//! lease at each tick, and the epoch thread takes back slots whose lease
//! has run out ([`CpuGate::reap`]). Such a guest asks again at its next tick.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use wasmtime::UpdateDeadline;

/// How long a holder may go without ticking before its slot is taken back.
const LEASE: Duration = Duration::from_millis(5);
/// How long a group stays busy after it last got a slot.
const HOT: Duration = Duration::from_secs(1);
/// Time a group's calls may spend failing (traps, memory caps, time
/// limits) per `HOT` window before the group counts as busy.
const FAILING: Duration = Duration::from_millis(100);

/// The node's run slots for guests past their first tick.
#[derive(Debug)]
pub struct CpuGate {
    slots: usize,
    state: Mutex<GateState>,
    next_id: AtomicU64,
    /// Started at the first busy group's call.
    lane: std::sync::OnceLock<Option<Lane>>,
}

#[derive(Debug, Default)]
struct GateState {
    free: usize,
    /// Who waits, per group, in arrival order.
    waiting: BTreeMap<Arc<str>, VecDeque<oneshot::Sender<()>>>,
    /// Groups with waiters, in the order their turns come.
    turn: VecDeque<Arc<str>>,
    /// Holders by id, with when they last ticked.
    holders: HashMap<u64, (Weak<RunState>, Instant)>,
    /// How many slots each group holds.
    held_by: HashMap<Arc<str>, usize>,
    /// When each group last got a slot.
    last_slot: HashMap<Arc<str>, Instant>,
    /// Per group: when its window began, and time its calls spent failing in it.
    failing: HashMap<Arc<str>, (Instant, Duration)>,
}

impl CpuGate {
    /// A gate with `slots` run slots (at least one).
    pub fn new(slots: usize) -> Arc<Self> {
        let slots = slots.max(1);
        Arc::new(Self {
            slots,
            state: Mutex::new(GateState {
                free: slots,
                ..GateState::default()
            }),
            next_id: AtomicU64::new(1),
            lane: std::sync::OnceLock::new(),
        })
    }

    /// One slot fewer than the machine has cores, and at least one.
    pub fn for_this_machine() -> Arc<Self> {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self::new(cores.saturating_sub(1))
    }

    /// How many slots it hands out.
    pub fn slots(&self) -> usize {
        self.slots
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A run state for one call of a guest of `group`.
    pub fn run(self: &Arc<Self>, group: Arc<str>) -> Arc<RunState> {
        Arc::new(RunState {
            gate: self.clone(),
            group,
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            held: AtomicBool::new(false),
            ticked: AtomicBool::new(false),
        })
    }

    /// Hands a freed slot to the next group's first waiter, or keeps it.
    fn release(&self) {
        let mut state = self.lock();
        loop {
            let Some(group) = state.turn.pop_front() else {
                state.free = (state.free + 1).min(self.slots);
                return;
            };
            let (next, more) = match state.waiting.get_mut(&group) {
                Some(queue) => (queue.pop_front(), !queue.is_empty()),
                None => (None, false),
            };
            if more {
                state.turn.push_back(group);
            } else {
                state.waiting.remove(&group);
            }
            // A waiter that went away (its call was cancelled) is skipped.
            if let Some(waiter) = next
                && waiter.send(()).is_ok()
            {
                return;
            }
        }
    }

    /// Takes back the slots of holders that stopped ticking (blocked in a
    /// host call) or went away; the epoch thread calls this every tick.
    pub fn reap(&self) {
        let now = Instant::now();
        let stale: Vec<u64> = self
            .lock()
            .holders
            .iter()
            .filter(|(_, (_, at))| now.duration_since(*at) > LEASE)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            let holder = self.lock().holders.remove(&id);
            // A holder dropped meanwhile already gave its slot back.
            if let Some(run) = holder.and_then(|(weak, _)| weak.upgrade()) {
                run.give_up();
            }
        }
    }

    /// Whether `group` holds or waits for a slot, or got one within `HOT`.
    pub fn is_busy(&self, group: &str) -> bool {
        let state = self.lock();
        state.held_by.contains_key(group)
            || state.waiting.contains_key(group)
            || state
                .last_slot
                .get(group)
                .is_some_and(|at| at.elapsed() < HOT)
    }

    /// A call of `group` failed (trapped, hit a cap or its time limit) after
    /// `took`. Calls that fail fast never reach a tick, so a tenant that
    /// floods the node with them (traps, memory bombs) would keep the
    /// node's workers to itself; past `FAILING` of them in a window, the
    /// group counts as busy like one with long-running guests.
    pub fn failed(&self, group: &Arc<str>, took: Duration) {
        let mut state = self.lock();
        let now = Instant::now();
        let window = state
            .failing
            .entry(group.clone())
            .or_insert((now, Duration::ZERO));
        if now.duration_since(window.0) > HOT {
            *window = (now, Duration::ZERO);
        }
        window.1 += took;
        if window.1 > FAILING {
            state.last_slot.insert(group.clone(), now);
        }
    }

    /// The lane for a call of `group` when the group is busy; `None` runs
    /// the call where it is (also when the lane could not start: a call
    /// then shares the node's workers, as it did before lanes).
    pub fn lane_for(&self, group: &str) -> Option<&Lane> {
        if !self.is_busy(group) {
            return None;
        }
        self.lane
            .get_or_init(|| match Lane::start(self.slots) {
                Ok(lane) => Some(lane),
                Err(e) => {
                    tracing::error!("busy guests share the node's workers: {e:#}");
                    None
                }
            })
            .as_ref()
    }

    /// Whether any guest waits for a slot.
    fn contended(&self) -> bool {
        !self.lock().turn.is_empty()
    }
}

/// One guest call's standing at the gate.
#[derive(Debug)]
pub struct RunState {
    gate: Arc<CpuGate>,
    group: Arc<str>,
    id: u64,
    held: AtomicBool,
    /// Whether it met a tick yet.
    ticked: AtomicBool,
}

impl RunState {
    /// At the start of a call: waits in the group's line when the group is
    /// busy, so that its new calls share its slots' turns. A call of a
    /// group that is not runs at once, ungated until its first tick.
    pub async fn admit(self: &Arc<Self>) {
        if self.gate.is_busy(&self.group) && !self.held.load(Ordering::Acquire) {
            self.clone().acquire(false).await;
        }
    }

    /// What the epoch callback does at a tick: go on holding the slot,
    /// give it up for a turn when others wait, or wait for one.
    pub fn tick(self: &Arc<Self>) -> UpdateDeadline {
        // The first tick comes anywhere from at once to a whole tick after
        // the start, so a short guest meets one often (one call in ten of
        // a 0.1 ms guest at a 1 ms tick). Only a second tick a whole tick
        // of running later makes a guest long-running: gating at the first
        // parked short guests behind hogs and set a neighbour's p99.
        // Wasmtime counts the new deadline from the epoch when the guest
        // resumes, and the epoch moves on at fixed instants: one tick
        // more can come right after the resume, so a 5 µs guest that met
        // a first tick met a second one time in 200, about once a second
        // at 40k calls/s, and its group ran on the lane for `HOT` each
        // time (7-16% of a warm MQTT run's CPU ran on the one lane
        // worker). Two ticks more are at least a whole one of running.
        if !self.ticked.swap(true, Ordering::AcqRel) && !self.held.load(Ordering::Acquire) {
            return UpdateDeadline::Yield(2);
        }
        if self.held.load(Ordering::Acquire) {
            self.renew();
            if !self.gate.contended() {
                return UpdateDeadline::Yield(1);
            }
            self.give_up();
        }
        let run = self.clone();
        UpdateDeadline::YieldCustom(1, Box::pin(async move { run.acquire(true).await }))
    }

    fn renew(&self) {
        if let Some(entry) = self.gate.lock().holders.get_mut(&self.id) {
            entry.1 = Instant::now();
        }
    }

    /// Waits for a slot, in this group's line.
    /// `long`: asked at a tick, by a guest that ran past its first, which
    /// makes its group busy for `HOT`. A slot taken at admission does not,
    /// or a group once busy would stay busy for ever.
    async fn acquire(self: Arc<Self>, long: bool) {
        let waiter = {
            let mut state = self.gate.lock();
            if state.free > 0 && state.turn.is_empty() {
                state.free -= 1;
                None
            } else {
                let (tx, rx) = oneshot::channel();
                state
                    .waiting
                    .entry(self.group.clone())
                    .or_default()
                    .push_back(tx);
                if !state.turn.contains(&self.group) {
                    state.turn.push_back(self.group.clone());
                }
                Some(Grant {
                    gate: self.gate.clone(),
                    rx: Some(rx),
                })
            }
        };
        if let Some(grant) = waiter {
            grant.wait().await;
        }
        self.held.store(true, Ordering::Release);
        let mut state = self.gate.lock();
        state
            .holders
            .insert(self.id, (Arc::downgrade(&self), Instant::now()));
        *state.held_by.entry(self.group.clone()).or_default() += 1;
        if long {
            state.last_slot.insert(self.group.clone(), Instant::now());
        }
    }

    /// Gives the slot back, if held.
    pub fn give_up(&self) {
        if self.held.swap(false, Ordering::AcqRel) {
            {
                let mut state = self.gate.lock();
                state.holders.remove(&self.id);
                if let Some(n) = state.held_by.get_mut(&self.group) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        state.held_by.remove(&self.group);
                    }
                }
            }
            self.gate.release();
        }
    }
}

impl Drop for RunState {
    fn drop(&mut self) {
        self.give_up();
    }
}

/// Threads for busy groups' calls: a runtime with a worker per run slot,
/// owned by a thread of its own so that it is dropped outside any async
/// context when the gate goes.
#[derive(Debug)]
pub struct Lane {
    handle: tokio::runtime::Handle,
    _stop: oneshot::Sender<()>,
}

impl Lane {
    fn start(workers: usize) -> anyhow::Result<Self> {
        let (stop, stopped) = oneshot::channel::<()>();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("brink-lane".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(workers)
                    .thread_name("brink-lane-worker")
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => {
                        let _ = tx.send(Ok(runtime.handle().clone()));
                        runtime.block_on(async {
                            let _ = stopped.await;
                        });
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })?;
        let handle = rx.recv()??;
        Ok(Self {
            handle,
            _stop: stop,
        })
    }

    /// Runs `call` on the lane and waits for it; dropping the wait stops
    /// the call, as dropping the call itself would. `None` if the lane is
    /// gone or the call panicked.
    pub async fn run<T: Send + 'static>(
        &self,
        call: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        struct AbortOnDrop(tokio::task::AbortHandle);
        impl Drop for AbortOnDrop {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let task = self.handle.spawn(call);
        let _abort = AbortOnDrop(task.abort_handle());
        task.await.ok()
    }
}

/// A slot on its way to a waiter: if the wait is cancelled (the call timed
/// out, the request went away) after the slot was sent, it is handed on.
struct Grant {
    gate: Arc<CpuGate>,
    rx: Option<oneshot::Receiver<()>>,
}

impl Grant {
    async fn wait(mut self) {
        if let Some(rx) = self.rx.as_mut() {
            // The sender is only dropped with a slot sent or the gate gone.
            let _ = rx.await;
        }
        self.rx = None;
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            // Closed first, so no slot can arrive after the check.
            rx.close();
            if rx.try_recv().is_ok() {
                self.gate.release();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `run` is admitted within 20 ms.
    async fn admitted(run: &Arc<RunState>) -> bool {
        tokio::time::timeout(Duration::from_millis(20), run.admit())
            .await
            .is_ok()
    }

    /// Runs `acquire` for a fresh run state of `group`; whether it got a slot within `ms`.
    async fn gets_slot(run: &Arc<RunState>, ms: u64) -> bool {
        tokio::time::timeout(Duration::from_millis(ms), run.clone().acquire(true))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn slots_go_round_robin_across_groups_whatever_their_numbers() {
        let gate = CpuGate::new(1);
        let holder = gate.run(Arc::from("hog"));
        assert!(gets_slot(&holder, 100).await);
        // The hog's 5 more guests queue first, then one neighbour.
        let hogs: Vec<_> = (0..5).map(|_| gate.run(Arc::from("hog"))).collect();
        let mut waits = tokio::task::JoinSet::new();
        for (i, hog) in hogs.iter().enumerate() {
            let hog = hog.clone();
            waits.spawn(async move {
                hog.clone().acquire(true).await;
                (format!("hog-{i}"), hog)
            });
            tokio::task::yield_now().await;
        }
        let neighbour = gate.run(Arc::from("neighbour"));
        let n = neighbour.clone();
        waits.spawn(async move {
            n.clone().acquire(true).await;
            ("neighbour".to_owned(), n)
        });
        tokio::task::yield_now().await;
        // Each release hands the slot to the next group in turn: the
        // neighbour is second, not sixth.
        let mut order = Vec::new();
        holder.give_up();
        while let Some(Ok((who, run))) = waits.join_next().await {
            order.push(who);
            run.give_up();
        }
        assert_eq!(order[..2], ["hog-0".to_owned(), "neighbour".to_owned()]);
        assert_eq!(gate.lock().free, 1);
    }

    #[tokio::test]
    async fn a_new_call_of_a_group_at_the_gate_waits_in_its_line_and_others_start_at_once() {
        let gate = CpuGate::new(1);
        let hog = gate.run(Arc::from("hog"));
        assert!(gets_slot(&hog, 100).await);
        // The hog's next call waits for its turn...
        let next = gate.run(Arc::from("hog"));
        assert!(
            !admitted(&next).await,
            "a busy group's new call started beside its running one"
        );
        // ...while a quiet group's call starts without a slot.
        let neighbour = gate.run(Arc::from("neighbour"));
        assert!(admitted(&neighbour).await);
        assert!(!neighbour.held.load(Ordering::Acquire));
        // Once the hog holds nothing, its calls start at once again.
        hog.give_up();
        assert!(gate.lock().held_by.is_empty());
        let later = gate.run(Arc::from("hog"));
        assert!(admitted(&later).await);
    }

    #[tokio::test]
    async fn a_short_guest_meets_no_gate_at_its_first_tick_and_admission_makes_no_group_busy() {
        let gate = CpuGate::new(1);
        let hog = gate.run(Arc::from("hog"));
        assert!(gets_slot(&hog, 100).await);
        // The first tick may come right after the start: no slot asked,
        // and the next tick that counts is at least a whole tick of
        // running after the guest resumes (the epoch may move on at once).
        let short = gate.run(Arc::from("neighbour"));
        assert!(matches!(short.tick(), UpdateDeadline::Yield(2)));
        assert!(!gate.is_busy("neighbour"));
        // That tick makes it long-running: it waits in line.
        assert!(matches!(short.tick(), UpdateDeadline::YieldCustom(..)));
        // A slot taken at admission keeps nobody busy once given back.
        hog.give_up();
        let quiet = CpuGate::new(1);
        let run = quiet.run(Arc::from("a"));
        assert!(
            tokio::time::timeout(Duration::from_millis(20), run.clone().acquire(false))
                .await
                .is_ok()
        );
        run.give_up();
        assert!(!quiet.is_busy("a"));
    }

    #[test]
    fn a_group_whose_calls_keep_failing_becomes_busy_and_one_failure_does_not() {
        let gate = CpuGate::new(1);
        let (flood, neighbour) = (Arc::<str>::from("flood"), Arc::<str>::from("neighbour"));
        gate.failed(&neighbour, Duration::from_millis(5));
        assert!(!gate.is_busy("neighbour"));
        for _ in 0..30 {
            gate.failed(&flood, Duration::from_millis(5));
        }
        assert!(gate.is_busy("flood"));
        assert!(!gate.is_busy("neighbour"));
    }

    #[tokio::test]
    async fn a_busy_groups_call_runs_on_the_lane_and_a_dropped_wait_stops_it() -> anyhow::Result<()>
    {
        let gate = CpuGate::new(1);
        assert!(
            gate.lane_for("hog").is_none(),
            "a quiet group went to the lane"
        );
        let hog = gate.run(Arc::from("hog"));
        assert!(gets_slot(&hog, 100).await);
        let lane = gate
            .lane_for("hog")
            .ok_or_else(|| anyhow::anyhow!("no lane for a busy group"))?;
        let name = lane
            .run(async { std::thread::current().name().map(str::to_owned) })
            .await
            .flatten();
        assert_eq!(name.as_deref(), Some("brink-lane-worker"));
        // A call whose caller went away does not run on.
        let (tx, rx) = oneshot::channel::<()>();
        let waiting = lane.run(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(tx);
        });
        assert!(
            tokio::time::timeout(Duration::from_millis(20), waiting)
                .await
                .is_err()
        );
        assert!(
            tokio::time::timeout(Duration::from_secs(5), rx)
                .await
                .is_ok(),
            "the call ran on after its caller stopped waiting"
        );
        drop(hog);
        Ok(())
    }

    #[tokio::test]
    async fn a_cancelled_waiter_or_a_silent_holder_loses_its_slot_to_the_next() {
        let gate = CpuGate::new(1);
        let first = gate.run(Arc::from("a"));
        assert!(gets_slot(&first, 100).await);
        // A waiter that gives up before its turn takes nothing with it.
        let quitter = gate.run(Arc::from("b"));
        assert!(!gets_slot(&quitter, 20).await);
        // The holder stops ticking (blocked in a host call): the lease runs
        // out and the slot goes to the next waiter.
        let next = gate.run(Arc::from("c"));
        let waiting = tokio::spawn({
            let next = next.clone();
            async move { next.acquire(true).await }
        });
        tokio::time::sleep(LEASE * 2).await;
        gate.reap();
        let reaped = tokio::time::timeout(Duration::from_secs(1), waiting).await;
        assert!(matches!(reaped, Ok(Ok(()))), "the slot was not reaped");
        assert!(!first.held.load(Ordering::Acquire));
        assert!(next.held.load(Ordering::Acquire));
        // Dropping the holder gives the slot back.
        drop(next);
        assert_eq!(gate.lock().free, 1);
    }
}
