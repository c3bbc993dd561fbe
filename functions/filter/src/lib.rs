//! Passes sensor readings whose value crosses a threshold and drops the rest
//! (EdgeX's "filter" function).
//!
//! Input data: `{"device": "t-17", "value": 31.2, ...}`.
//! Config:
//! - `threshold` (required): the value to compare against;
//! - `direction` (`above`, the default, or `below`): which side passes.

use brink_sdk::{Error, Event, Result, config, log};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reading {
    device: String,
    value: f64,
}

/// Returns `event` unchanged when its reading crosses the threshold, nothing otherwise.
pub fn handle(event: Event) -> Result<Option<Event>> {
    let threshold: f64 = config::require("threshold")?;
    let above = match config::get("direction").as_deref() {
        None | Some("above") => true,
        Some("below") => false,
        Some(other) => {
            return Err(Error::internal(format!(
                "config `direction` = {other:?} must be \"above\" or \"below\""
            )));
        }
    };
    let reading: Reading = event.json()?;
    if !reading.value.is_finite() {
        return Err(Error::invalid_event(format!(
            "reading from {} has a non-finite value",
            reading.device
        )));
    }
    let passes = if above {
        reading.value > threshold
    } else {
        reading.value < threshold
    };
    log::debug(format!(
        "{} = {} ({} threshold {threshold}): {}",
        reading.device,
        reading.value,
        if above { "above" } else { "below" },
        if passes { "pass" } else { "drop" }
    ));
    Ok(passes.then_some(event))
}

brink_sdk::handler!(handle);
