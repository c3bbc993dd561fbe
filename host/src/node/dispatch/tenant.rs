//! A tenant's share of the node: its rate, its topics and its slots of
//! the instance pool, as the dispatcher enforces them.

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::Semaphore;

/// A tenant's share of the node, as the dispatcher enforces and meters it.
#[derive(Debug)]
pub struct Tenant {
    pub id: String,
    /// Invocations per second across the tenant's functions (0: unlimited).
    pub max_invocations_per_s: u32,
    /// MQTT topic prefixes its functions may be triggered from: its own
    /// `t/<tenant>/` and those the operator granted.
    pub topics: Vec<String>,
    bucket: Mutex<TokenBucket>,
    /// Invocations of its functions running at once: its share of the pool.
    pub max_concurrency: u32,
    pub(super) slots: Semaphore,
}

impl Tenant {
    /// A tenant confined to its own topics, `t/<id>/`.
    pub fn new(id: impl Into<String>, max_invocations_per_s: u32) -> Self {
        let id = id.into();
        Self {
            topics: vec![crate::tenancy::names::tenant_topic_prefix(&id)],
            id,
            max_invocations_per_s,
            bucket: Mutex::new(TokenBucket {
                tokens: f64::from(max_invocations_per_s),
                at: Instant::now(),
            }),
            max_concurrency: u32::MAX,
            slots: Semaphore::new(Semaphore::MAX_PERMITS),
        }
    }

    /// The tenant with at most `n` invocations running at once.
    pub fn with_concurrency(mut self, n: u32) -> Self {
        self.max_concurrency = n.max(1);
        self.slots = Semaphore::new((n.max(1) as usize).min(Semaphore::MAX_PERMITS));
        self
    }

    /// Takes one invocation from the tenant's budget; false when it is spent.
    pub(super) fn admit(&self) -> bool {
        let rate = f64::from(self.max_invocations_per_s);
        if rate == 0.0 {
            return true;
        }
        let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        // One second's worth of burst.
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(rate);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct TokenBucket {
    tokens: f64,
    at: Instant,
}
