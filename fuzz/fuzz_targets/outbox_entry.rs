//! The outbox's stored entries as they are read back after a crash:
//! formats 1 (no owner) and 2 (an owner), truncated, with flipped bits, or
//! anything at all. Reading never panics; every entry the outbox writes
//! reads back exactly; a damaged entry reads as "not ours" or as an entry
//! whose event either parses or is an error (parked, never a crash).
#![no_main]

use arbitrary::Arbitrary;
use brink_host::surface::{outbox_decode, outbox_encode, outbox_key, parked_decode, parked_encode};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Damage {
    None,
    Truncate(u16),
    FlipBit(u16),
    Append(u8),
}

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    priority: u8,
    seq: u64,
    enqueued_ms: u64,
    expires_ms: Option<u64>,
    owner: Option<&'a str>,
    json: &'a [u8],
    reason: &'a str,
    damage: Damage,
    raw_key: &'a [u8],
    raw_value: &'a [u8],
}

fn damaged(mut bytes: Vec<u8>, damage: &Damage) -> Vec<u8> {
    match *damage {
        Damage::None => {}
        Damage::Truncate(n) => bytes.truncate(usize::from(n) % (bytes.len() + 1)),
        Damage::FlipBit(bit) => {
            let bit = usize::from(bit) % (bytes.len() * 8).max(1);
            if let Some(b) = bytes.get_mut(bit / 8) {
                *b ^= 1 << (bit % 8);
            }
        }
        Damage::Append(b) => bytes.push(b),
    }
    bytes
}

fuzz_target!(|input: Input<'_>| {
    // Anything at all.
    if let Some((entry, _)) = outbox_decode(input.raw_key, input.raw_value) {
        let _ = entry.typed_event();
    }
    let _ = parked_decode(input.raw_value);

    // What the outbox writes reads back exactly.
    let priority = input.priority % 10;
    let key = outbox_key(priority, input.seq);
    let value = outbox_encode(input.enqueued_ms, input.expires_ms, input.owner, input.json);
    let Some((entry, expires)) = outbox_decode(&key, &value) else {
        panic!("an entry the outbox wrote does not read back: {input:?}");
    };
    assert_eq!(entry.seq, input.seq);
    assert_eq!(entry.priority, priority);
    assert_eq!(entry.enqueued_ms, input.enqueued_ms);
    assert_eq!(expires, input.expires_ms.filter(|&e| e != 0));
    assert_eq!(entry.json, input.json);
    match (input.owner, entry.owner.as_deref()) {
        (None, None) => {}
        (Some(given), Some(read)) => {
            assert!(
                given.starts_with(read),
                "owner {given:?} read back as {read:?}"
            );
            assert!(
                read.len() == given.len() || read.len() > 251,
                "owner cut short"
            );
        }
        (given, read) => panic!("owner {given:?} read back as {read:?}"),
    }

    // A parked entry keeps the stored entry as it was.
    let parked = parked_encode(input.enqueued_ms, input.reason, &value);
    match parked_decode(&parked) {
        Some((ms, reason, stored)) => {
            assert_eq!(ms, input.enqueued_ms);
            assert!(input.reason.starts_with(reason));
            assert_eq!(stored, value.as_slice());
        }
        None => panic!("a parked entry does not read back"),
    }

    // Damaged on disk: read as not ours, or as an entry; never a panic.
    let key = damaged(key, &input.damage);
    let value = damaged(value, &input.damage);
    if let Some((entry, _)) = outbox_decode(&key, &value) {
        let _ = entry.typed_event();
    }
    let _ = parked_decode(&damaged(parked, &input.damage));
});
