//! Raises an alert when a device's value stays above a threshold for N
//! consecutive readings, and a "resolved" event when it falls back. The
//! state of each device (readings above in a row, alerting or not) lives in
//! key-value state and is updated atomically, so each transition emits
//! exactly one event even with concurrent instances.
//!
//! Input data: `{"device": "t-17", "value": 31.2}`.
//! Config:
//! - `threshold` (required);
//! - `consecutive` (default 3): readings above in a row that raise the alert;
//! - `bucket` (default `default`).
//!
//! Emits `com.brink.alert.raised` and `com.brink.alert.resolved`, with
//! subject = the device and data `{"device", "value", "threshold", "readings"}`.
//!
//! Grants: `kv = ["default"]` (or the configured bucket).

use brink_sdk::{Error, Event, Result, config, kv, log};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Reading {
    device: String,
    value: f64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct State {
    /// Readings above the threshold in a row.
    above: u32,
    alerting: bool,
}

#[derive(Serialize)]
struct Alert<'a> {
    device: &'a str,
    value: f64,
    threshold: f64,
    readings: u32,
}

/// The next state, and the event type the transition emits, if any.
fn step(state: State, above: bool, consecutive: u32) -> (State, Option<&'static str>) {
    if above {
        let next = State {
            above: state.above.saturating_add(1),
            alerting: state.alerting,
        };
        if !state.alerting && next.above >= consecutive {
            (
                State {
                    alerting: true,
                    ..next
                },
                Some("com.brink.alert.raised"),
            )
        } else {
            (next, None)
        }
    } else if state.alerting {
        (State::default(), Some("com.brink.alert.resolved"))
    } else {
        (State::default(), None)
    }
}

/// Updates the device's state; emits an alert or a resolution on a transition.
pub fn handle(event: Event) -> Result<Option<Event>> {
    let threshold: f64 = config::require("threshold")?;
    let consecutive: u32 = config::get_or("consecutive", 3)?;
    if consecutive == 0 {
        return Err(Error::internal("config `consecutive` must be at least 1"));
    }
    let bucket = kv::bucket(&config::get("bucket").unwrap_or_else(|| "default".into()))?;
    let reading: Reading = event.json()?;
    if !reading.value.is_finite() {
        return Err(Error::invalid_event(format!(
            "reading from {} has a non-finite value",
            reading.device
        )));
    }
    let above = reading.value > threshold;
    let mut transition = None;
    let mut after = State::default();
    bucket.update(&format!("threshold/{}", reading.device), |current| {
        let state = current
            .and_then(|c| serde_json::from_slice(c).ok())
            .unwrap_or_default();
        let (next, emitted) = step(state, above, consecutive);
        transition = emitted;
        after = next;
        serde_json::to_vec(&next).unwrap_or_default()
    })?;
    let Some(ty) = transition else {
        return Ok(None);
    };
    log::info(format!(
        "{}: {ty} at {} (threshold {threshold})",
        reading.device, reading.value
    ));
    Event::new(ty, event.source.clone())
        .with_subject(reading.device.clone())
        .with_json(&Alert {
            device: &reading.device,
            value: reading.value,
            threshold,
            readings: after.above,
        })
        .map(Some)
}

brink_sdk::handler!(handle);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_is_raised_once_after_n_readings_above_and_resolved_once() {
        let mut s = State::default();
        let mut emitted = Vec::new();
        for above in [true, true, true, true, false, false, true] {
            let (next, e) = step(s, above, 3);
            s = next;
            emitted.extend(e);
        }
        assert_eq!(
            emitted,
            ["com.brink.alert.raised", "com.brink.alert.resolved"]
        );
        assert_eq!(
            s,
            State {
                above: 1,
                alerting: false
            }
        );
    }
}
