//! `[kv]`: where key-value state lives, and its limits.

use serde::Deserialize;

use super::error::{Invalid, above_zero};

/// `[kv]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvSection {
    /// `max_key_bytes = 1024`: the longest key.
    pub max_key_bytes: Option<usize>,
    /// `max_value_kb = 1024`: the largest value, in KiB.
    pub max_value_kb: Option<usize>,
    /// `bucket_quota_mb = 256`: what one bucket may hold (keys and values), in MiB.
    pub bucket_quota_mb: Option<u64>,
    /// `durable_writes = true`: a function's writes are on disk before its
    /// event is acknowledged. `false` trades that for speed: writes reach
    /// disk within 0.5 s, and a power cut can lose them.
    pub durable_writes: Option<bool>,
    /// `sweep_interval_ms = 1000`: how often expired keys are removed.
    pub sweep_interval_ms: Option<u64>,
}

impl KvSection {
    pub(super) fn check(&self) -> Result<(), Invalid> {
        above_zero(
            "kv.",
            &[
                ("max_key_bytes", self.max_key_bytes == Some(0)),
                ("max_value_kb", self.max_value_kb == Some(0)),
                ("bucket_quota_mb", self.bucket_quota_mb == Some(0)),
                ("sweep_interval_ms", self.sweep_interval_ms == Some(0)),
            ],
        )
    }
}
