//! Emits at most one event per device per window and drops the rest, for
//! chatty sensors (EdgeX's downsampling). The first reading of a device
//! passes; later ones pass once `window_ms` has gone by since the last one
//! that passed. Which event passes is decided atomically in key-value state,
//! so concurrent instances never let two through for one window.
//!
//! Input data: `{"device": "t-17", ...}` (or the event's subject names the device).
//! Config:
//! - `window_ms` (default 60000): the window;
//! - `bucket` (default `default`): where the last-passed times are kept.
//!
//! Grants: `kv = ["default"]` (or the configured bucket).

use std::time::{SystemTime, UNIX_EPOCH};

use brink_sdk::{Error, Event, Result, config, kv, log};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reading {
    device: Option<String>,
}

/// The device an event is about: its data's `device`, else its subject.
fn device_of(event: &Event) -> Result<String> {
    let reading: Reading = event.json().unwrap_or(Reading { device: None });
    reading
        .device
        .or_else(|| event.subject.clone())
        .ok_or_else(|| {
            Error::invalid_event("the event names no device (no `device` in its data, no subject)")
        })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Returns `event` when it is the first of its device's window.
pub fn handle(event: Event) -> Result<Option<Event>> {
    let window: u64 = config::get_or("window_ms", 60_000)?;
    let bucket = kv::bucket(&config::get("bucket").unwrap_or_else(|| "default".into()))?;
    let device = device_of(&event)?;
    let key = format!("downsample/{device}");
    let now = now_ms();
    let last = bucket.get(&key)?;
    let due = |last: Option<&[u8]>| {
        last.and_then(|l| std::str::from_utf8(l).ok()?.parse::<u64>().ok())
            .is_none_or(|l| now.saturating_sub(l) >= window)
    };
    if !due(last.as_deref()) {
        log::trace(format!("{device}: dropped (window of {window} ms)"));
        return Ok(None);
    }
    // Only the one writer whose swap lands on the value it read passes.
    let passes = bucket.compare_and_swap(&key, last.as_deref(), now.to_string().as_bytes())?;
    log::debug(format!(
        "{device}: {}",
        if passes {
            "passed"
        } else {
            "lost the race; dropped"
        }
    ));
    Ok(passes.then_some(event))
}

brink_sdk::handler!(handle);
