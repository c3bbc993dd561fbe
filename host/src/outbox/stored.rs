//! The outbox's stored format, as it is read back after a crash. A key is
//! the inverted priority and the sequence number (big-endian, so sled's
//! order is the delivery order); a value is format 1 (`1`, enqueue time,
//! expiry, event JSON) or 2 (the same with a length-prefixed owner before
//! the event). Anything else reads as "not ours", never as a panic; the
//! `outbox_entry` fuzz target holds the reader to that.

use super::{Entry, MAX_PRIORITY};

/// Version, enqueue time and expiry; version 2 follows it with the owner.
const HEADER: usize = 17;

pub(crate) fn key(priority: u8, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(MAX_PRIORITY - priority);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub(crate) fn encode(
    enqueued_ms: u64,
    expires_ms: Option<u64>,
    owner: Option<&str>,
    json: &[u8],
) -> Vec<u8> {
    // The owner's length is one byte. Cut at a character boundary: a cut
    // inside one would make the stored entry unreadable, and the event lost.
    let owner = owner.map(|o| &o.as_bytes()[..o.floor_char_boundary(255)]);
    let mut v = Vec::with_capacity(HEADER + 1 + owner.map_or(0, <[u8]>::len) + json.len());
    v.push(if owner.is_some() { 2 } else { 1 });
    v.extend_from_slice(&enqueued_ms.to_be_bytes());
    v.extend_from_slice(&expires_ms.unwrap_or(0).to_be_bytes());
    if let Some(owner) = owner {
        v.push(owner.len() as u8);
        v.extend_from_slice(owner);
    }
    v.extend_from_slice(json);
    v
}

/// The owner of a stored value and where its event starts; none when it is
/// not one we wrote.
pub(super) fn owner_and_body(v: &[u8]) -> Option<(Option<&str>, usize)> {
    match v.first()? {
        1 => Some((None, HEADER)),
        2 => {
            let len = usize::from(*v.get(HEADER)?);
            let owner = std::str::from_utf8(v.get(HEADER + 1..HEADER + 1 + len)?).ok()?;
            Some((Some(owner), HEADER + 1 + len))
        }
        _ => None,
    }
}

/// Splits a stored entry; none when it is not one (never written by us).
pub(crate) fn decode(k: Vec<u8>, v: &[u8]) -> Option<(Entry, Option<u64>)> {
    let priority = MAX_PRIORITY.checked_sub(*k.first()?)?;
    let seq = u64::from_be_bytes(k.get(1..9)?.try_into().ok()?);
    let (owner, body) = owner_and_body(v)?;
    let enqueued_ms = u64::from_be_bytes(v.get(1..9)?.try_into().ok()?);
    let expires = u64::from_be_bytes(v.get(9..17)?.try_into().ok()?);
    Some((
        Entry {
            key: k,
            seq,
            priority,
            enqueued_ms,
            owner: owner.map(str::to_owned),
            json: v.get(body..)?.to_vec(),
        },
        (expires != 0).then_some(expires),
    ))
}
