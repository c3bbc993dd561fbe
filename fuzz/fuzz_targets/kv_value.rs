//! The key-value store's value header (a flag byte, then an expiry in ms
//! when the value has a TTL): reading any stored bytes never panics; a
//! value written without TTL, or with one in the future, reads back as it
//! was; one whose TTL has passed reads as absent.
#![no_main]

use std::time::{SystemTime, UNIX_EPOCH};

use arbitrary::Arbitrary;
use brink_host::surface::{kv_encode, kv_expiry, kv_live};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    value: &'a [u8],
    expiry_ms: Option<u64>,
    raw: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    let _ = kv_live(input.raw);
    let _ = kv_expiry(input.raw);

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let stored = kv_encode(input.value, input.expiry_ms);
    assert_eq!(kv_expiry(&stored), input.expiry_ms);
    match input.expiry_ms {
        None => assert_eq!(kv_live(&stored), Some(input.value)),
        // An hour either side of now, so the clock moving under the check cannot flip it.
        Some(at) if at > now.saturating_add(3_600_000) => {
            assert_eq!(kv_live(&stored), Some(input.value))
        }
        Some(at) if at < now.saturating_sub(3_600_000) => assert_eq!(kv_live(&stored), None),
        Some(_) => {}
    }
});
