//! How a value is stored (its expiry header) and how the TTL index names it.

use std::time::{SystemTime, UNIX_EPOCH};

use super::KvError;

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn encode(value: &[u8], expiry: Option<u64>) -> Vec<u8> {
    match expiry {
        None => {
            let mut raw = Vec::with_capacity(1 + value.len());
            raw.push(0);
            raw.extend_from_slice(value);
            raw
        }
        Some(expiry) => {
            let mut raw = Vec::with_capacity(9 + value.len());
            raw.push(1);
            raw.extend_from_slice(&expiry.to_be_bytes());
            raw.extend_from_slice(value);
            raw
        }
    }
}

pub(crate) fn expiry_of(raw: &[u8]) -> Option<u64> {
    match raw {
        [1, rest @ ..] => rest
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes),
        _ => None,
    }
}

/// The value in `raw`, or none when it has expired.
pub(crate) fn live(raw: &[u8]) -> Option<&[u8]> {
    match raw {
        [0, value @ ..] => Some(value),
        [1, rest @ ..] if rest.len() >= 8 => {
            let expiry = expiry_of(raw)?;
            (expiry > now_ms()).then(|| &rest[8..])
        }
        _ => None,
    }
}

pub(super) fn parse_counter(key: &str, value: &[u8]) -> Result<i64, KvError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| KvError::NotAnInteger(key.to_owned()))
}

/// Index key: expiry (8 bytes, big-endian, so the index is ordered by it),
/// the tree name's length (2 bytes), the tree name, the key.
pub(super) fn index_key(expiry: u64, tree: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(10 + tree.len() + key.len());
    k.extend_from_slice(&expiry.to_be_bytes());
    k.extend_from_slice(&(tree.len() as u16).to_be_bytes());
    k.extend_from_slice(tree.as_bytes());
    k.extend_from_slice(key.as_bytes());
    k
}

pub(super) fn index_expiry(k: &[u8]) -> Option<u64> {
    k.get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
}

pub(super) fn parse_index_key(k: &[u8]) -> Option<(u64, &str, &[u8])> {
    let expiry = index_expiry(k)?;
    let len = u16::from_be_bytes(k.get(8..10)?.try_into().ok()?) as usize;
    let tree = std::str::from_utf8(k.get(10..10 + len)?).ok()?;
    Some((expiry, tree, k.get(10 + len..)?))
}
