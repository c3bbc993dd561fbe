//! The private parsers that face the outside, in one place for the fuzz
//! targets in `fuzz/` (see `fuzz/README.md`). Not an API: hidden from the
//! docs, and nothing in the host or its tools calls it. The public parsers
//! (`event`, `manifest::Manifest::parse`, `nn::Tensor`, the registry's) are
//! fuzzed where they are.

use crate::outbox::Entry;

/// An outbox entry's key: its priority and sequence number.
pub fn outbox_key(priority: u8, seq: u64) -> Vec<u8> {
    crate::outbox::key(priority, seq)
}

/// An outbox entry as it is stored (format 1 without an owner, 2 with one).
pub fn outbox_encode(
    enqueued_ms: u64,
    expires_ms: Option<u64>,
    owner: Option<&str>,
    json: &[u8],
) -> Vec<u8> {
    crate::outbox::encode(enqueued_ms, expires_ms, owner, json)
}

/// A stored outbox entry read back (after a crash, say), and its expiry;
/// none when it is not one the outbox wrote.
pub fn outbox_decode(key: &[u8], value: &[u8]) -> Option<(Entry, Option<u64>)> {
    crate::outbox::decode(key.to_vec(), value)
}

/// A parked (dead-lettered) outbox entry as it is stored.
pub fn parked_encode(parked_ms: u64, reason: &str, stored: &[u8]) -> Vec<u8> {
    crate::outbox::parking::encode_parked(parked_ms, reason, stored)
}

/// A stored parked entry split into its time, reason and stored entry.
pub fn parked_decode(value: &[u8]) -> Option<(u64, &str, &[u8])> {
    crate::outbox::parking::split_parked(value)
}

/// A key-value value as it is stored, with its expiry (ms since the epoch).
pub fn kv_encode(value: &[u8], expiry_ms: Option<u64>) -> Vec<u8> {
    crate::kv::encode(value, expiry_ms)
}

/// The value a stored record holds now: none when it has expired or is not
/// one the store wrote.
pub fn kv_live(raw: &[u8]) -> Option<&[u8]> {
    crate::kv::live(raw)
}

/// When a stored record expires, if it does.
pub fn kv_expiry(raw: &[u8]) -> Option<u64> {
    crate::kv::expiry_of(raw)
}

/// The manifest's rule for an MQTT topic filter (a trigger).
pub fn check_topic_filter(filter: &str) -> Result<(), &'static str> {
    crate::manifest::check_topic_filter(filter)
}

/// The manifest's rule for an MQTT output topic template.
pub fn check_template(template: &str) -> Result<(), String> {
    crate::manifest::check_template(template)
}
