//! Converts temperature readings from Celsius to Fahrenheit and reshapes them
//! into the payload downstream systems expect (EdgeX's "transform" function).
//!
//! Input data: `{"device": "t-17", "value": 31.2}` in degrees Celsius.
//! Output data:
//! `{"device_id": "t-17", "temperature": {"value": 88.16, "unit": "degF"}, "observed_at": "<time>"}`
//! with the type from config `output_type` (default `com.brink.temperature.fahrenheit`)
//! and the device as subject.

use brink_sdk::{Event, Result, config};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Reading {
    device: String,
    value: f64,
}

#[derive(Serialize)]
struct Temperature {
    value: f64,
    unit: &'static str,
}

#[derive(Serialize)]
struct Output {
    device_id: String,
    temperature: Temperature,
    #[serde(skip_serializing_if = "Option::is_none")]
    observed_at: Option<String>,
}

/// The default type of the events this function emits.
pub const DEFAULT_OUTPUT_TYPE: &str = "com.brink.temperature.fahrenheit";

/// Converts one reading.
pub fn handle(event: Event) -> Result<Event> {
    let output_type = config::get("output_type").unwrap_or_else(|| DEFAULT_OUTPUT_TYPE.to_owned());
    let reading: Reading = event.json()?;
    let fahrenheit = reading.value * 9.0 / 5.0 + 32.0;
    let output = Output {
        device_id: reading.device.clone(),
        temperature: Temperature {
            // Two decimals: sensors are not more precise, and it keeps payloads stable.
            value: (fahrenheit * 100.0).round() / 100.0,
            unit: "degF",
        },
        observed_at: event.time.clone(),
    };
    let mut out = Event::new(output_type, event.source.clone())
        .with_subject(reading.device)
        .with_json(&output)?;
    out.time = event.time.clone();
    Ok(out)
}

brink_sdk::handler!(handle);
