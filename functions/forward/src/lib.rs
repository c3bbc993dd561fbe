//! Sends readings upstream in batches, and urgent events at once, through
//! the outbox (store-and-forward: nothing is lost while the uplink is down).
//!
//! Events whose type matches `urgent_types` (default `*.alert.*`-style:
//! any type containing `.alert.`) are sent on their own with priority 9.
//! Other events are collected in key-value state and sent as one batch
//! event (`com.brink.batch`, data = a JSON array of the events' data) with
//! priority 1 once `batch` of them are waiting. A batch's id is made from
//! the ids of the events in it, so if two instances race and both send it,
//! the receiver sees the same id twice and keeps one; run it with
//! `limits = { concurrency = 1 }` to avoid the race. A batch is sent before
//! it leaves the pending list, so a crash can repeat it but never lose it.
//!
//! Config: `uplink` (default `cloud`), `batch` (default 10), `bucket`
//! (default `default`), `urgent_types` (comma-separated substrings,
//! default `.alert.`).
//!
//! Grants: `outbox = ["cloud"]`, `kv = ["default"]`.

use brink_sdk::outbox::send;
use brink_sdk::{Error, Event, Result, config, kv, log};
use serde::{Deserialize, Serialize};
use serde_json::Value;

const PENDING: &str = "forward/pending";

#[derive(Serialize, Deserialize, Clone)]
struct Pending {
    id: String,
    data: Value,
}

/// Sends urgent events at once; batches the rest.
pub fn handle(event: Event) -> Result<()> {
    let uplink = config::get("uplink").unwrap_or_else(|| "cloud".into());
    let urgent = config::get("urgent_types").unwrap_or_else(|| ".alert.".into());
    if urgent
        .split(',')
        .any(|u| !u.is_empty() && event.type_.contains(u.trim()))
    {
        let seq = send(&event, &uplink, 9)?;
        log::debug(format!("sent {} at once (#{seq})", event.id));
        return Ok(());
    }
    let batch_size: usize = config::get_or("batch", 10)?;
    let bucket = kv::bucket(&config::get("bucket").unwrap_or_else(|| "default".into()))?;
    let data: Value = event.json().unwrap_or(Value::Null);
    let reading = Pending {
        id: event.id.clone(),
        data,
    };
    let pending = bucket.update(PENDING, |current| {
        let mut list: Vec<Pending> = current
            .and_then(|c| serde_json::from_slice(c).ok())
            .unwrap_or_default();
        list.push(reading.clone());
        serde_json::to_vec(&list).unwrap_or_default()
    })?;
    let list: Vec<Pending> = serde_json::from_slice(&pending)
        .map_err(|e| Error::internal(format!("pending readings do not parse: {e}")))?;
    if list.len() < batch_size {
        return Ok(());
    }
    let batch: Vec<Pending> = list.into_iter().take(batch_size).collect();
    let id = format!(
        "batch-{}-{}-{}",
        batch.first().map_or("", |p| p.id.as_str()),
        batch.last().map_or("", |p| p.id.as_str()),
        batch.len()
    );
    let out = Event::new("com.brink.batch", event.source.clone())
        .with_id(id)
        .with_json(&batch.iter().map(|p| &p.data).collect::<Vec<_>>())?;
    // Sent before it leaves the pending list: a crash in between sends it
    // twice (same id), never loses it.
    let seq = send(&out, &uplink, 1)?;
    let sent: Vec<&str> = batch.iter().map(|p| p.id.as_str()).collect();
    bucket.update(PENDING, |current| {
        let list: Vec<Pending> = current
            .and_then(|c| serde_json::from_slice(c).ok())
            .unwrap_or_default();
        let rest: Vec<Pending> = list
            .into_iter()
            .filter(|p| !sent.contains(&p.id.as_str()))
            .collect();
        serde_json::to_vec(&rest).unwrap_or_default()
    })?;
    log::debug(format!("sent a batch of {} (#{seq})", batch.len()));
    Ok(())
}

brink_sdk::handler!(handle);
