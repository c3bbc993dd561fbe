//! Canary routing: a second stage for a function, which takes the events
//! whose id falls in its share (`brink_registry::Canary::takes`).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use super::{Dispatcher, Route, Stage, Tenant, stage};

/// A function's canary: another version's stage, and its share of events.
pub(super) struct CanaryStage {
    stage: Arc<Stage>,
    canary: brink_registry::Canary,
}

pub(super) type Canaries = Arc<BTreeMap<String, Arc<CanaryStage>>>;

impl Dispatcher {
    /// Sends the share of `name`'s events that `canary` picks by event id
    /// to `route`, beside the version `name` routes now; replaces an
    /// earlier canary. False (and nothing changed) when `name` is not routed.
    pub fn install_canary(
        &self,
        name: &str,
        route: Route,
        tenant: Option<Arc<Tenant>>,
        canary: brink_registry::Canary,
    ) -> bool {
        if !self.snapshot().contains_key(name) {
            return false;
        }
        let stage = stage(route, tenant);
        let mut canaries = self
            .canaries
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut next = BTreeMap::clone(&canaries);
        next.insert(name.to_owned(), Arc::new(CanaryStage { stage, canary }));
        self.canary_count.store(next.len(), Ordering::SeqCst);
        *canaries = Arc::new(next);
        true
    }

    /// Ends `name`'s canary: the version it routes takes every event again;
    /// events already running on the canary finish. Whether it had one.
    pub fn end_canary(&self, name: &str) -> bool {
        let mut canaries = self
            .canaries
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if !canaries.contains_key(name) {
            return false;
        }
        let mut next = BTreeMap::clone(&canaries);
        next.remove(name);
        self.canary_count.store(next.len(), Ordering::SeqCst);
        *canaries = Arc::new(next);
        true
    }

    /// The canary's stage, when `function` has a canary that takes `id`.
    pub(super) fn canary_stage(&self, function: &str, id: &str) -> Option<Arc<Stage>> {
        if self.canary_count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let canaries = self.canaries.read().unwrap_or_else(PoisonError::into_inner);
        let canary = canaries.get(function)?;
        canary.canary.takes(id).then(|| canary.stage.clone())
    }
}
