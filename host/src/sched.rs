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
//! (under one tick, which is nearly all of them) never meet the gate.
//!
//! The gate hands slots out round-robin across *groups* (a tenant, or one of
//! the manifest's functions), first in first out within a group, so a
//! tenant with 300 spinning guests gets one turn per round like a tenant
//! with one. A holder gives its slot up at every tick while others wait,
//! and at the end of its call.
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

/// The node's run slots for guests past their first tick.
#[derive(Debug)]
pub struct CpuGate {
    slots: usize,
    state: Mutex<GateState>,
    next_id: AtomicU64,
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
}

impl RunState {
    /// What the epoch callback does at a tick: go on holding the slot,
    /// give it up for a turn when others wait, or wait for one.
    pub fn tick(self: &Arc<Self>) -> UpdateDeadline {
        if self.held.load(Ordering::Acquire) {
            self.renew();
            if !self.gate.contended() {
                return UpdateDeadline::Yield(1);
            }
            self.give_up();
        }
        let run = self.clone();
        UpdateDeadline::YieldCustom(1, Box::pin(async move { run.acquire().await }))
    }

    fn renew(&self) {
        if let Some(entry) = self.gate.lock().holders.get_mut(&self.id) {
            entry.1 = Instant::now();
        }
    }

    /// Waits for a slot, in this group's line.
    async fn acquire(self: Arc<Self>) {
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
        self.gate
            .lock()
            .holders
            .insert(self.id, (Arc::downgrade(&self), Instant::now()));
    }

    /// Gives the slot back, if held.
    pub fn give_up(&self) {
        if self.held.swap(false, Ordering::AcqRel) {
            self.gate.lock().holders.remove(&self.id);
            self.gate.release();
        }
    }
}

impl Drop for RunState {
    fn drop(&mut self) {
        self.give_up();
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

    /// Runs `acquire` for a fresh run state of `group`; whether it got a slot within `ms`.
    async fn gets_slot(run: &Arc<RunState>, ms: u64) -> bool {
        tokio::time::timeout(Duration::from_millis(ms), run.clone().acquire())
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
                hog.clone().acquire().await;
                (format!("hog-{i}"), hog)
            });
            tokio::task::yield_now().await;
        }
        let neighbour = gate.run(Arc::from("neighbour"));
        let n = neighbour.clone();
        waits.spawn(async move {
            n.clone().acquire().await;
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
            async move { next.acquire().await }
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
