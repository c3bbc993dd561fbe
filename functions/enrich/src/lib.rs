//! Adds device metadata (location, model, ...) from key-value state to each
//! reading: the JSON object stored under the device's id in the `devices`
//! bucket is merged into the reading's data under `"meta"`. Operators load
//! the metadata with `brink kv set devices t-17 '{"location":"line 3","model":"TMP117"}'`.
//!
//! Input data: a JSON object with `device` (or the event's subject names the device).
//! Config:
//! - `bucket` (default `devices`);
//! - `missing` (`pass`, the default, or `drop`): what to do with a reading
//!   from a device that has no metadata (`pass` sends it on unenriched, with
//!   the extension `enrichment=missing`).
//!
//! Emits the event with type `<type>.enriched`.
//!
//! Grants: `kv = ["devices"]` (or the configured bucket).

use brink_sdk::{Error, Event, Result, config, kv, log};
use serde_json::{Map, Value};

/// The reading with its device's metadata under `meta`.
pub fn handle(event: Event) -> Result<Option<Event>> {
    let drop_missing = match config::get("missing").as_deref() {
        None | Some("pass") => false,
        Some("drop") => true,
        Some(other) => {
            return Err(Error::internal(format!(
                "config `missing` = {other:?} must be \"pass\" or \"drop\""
            )));
        }
    };
    let bucket = kv::bucket(&config::get("bucket").unwrap_or_else(|| "devices".into()))?;
    let mut data: Map<String, Value> = event.json()?;
    let device = data
        .get("device")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| event.subject.clone())
        .ok_or_else(|| {
            Error::invalid_event("the event names no device (no `device` in its data, no subject)")
        })?;
    let ty = format!("{}.enriched", event.type_);
    let enriched = match bucket.get_json::<Value>(&device)? {
        Some(meta) => {
            data.insert("meta".to_owned(), meta);
            event.clone().with_json(&data)?
        }
        None if drop_missing => {
            log::debug(format!("{device}: no metadata; dropped"));
            return Ok(None);
        }
        None => {
            log::debug(format!(
                "{device}: no metadata in bucket `{}`",
                bucket.name()
            ));
            event.clone().with_extension("enrichment", "missing")
        }
    };
    let mut out = enriched.with_id("");
    out.type_ = ty;
    if out.subject.is_none() {
        out.subject = Some(device);
    }
    Ok(Some(out))
}

brink_sdk::handler!(handle);
