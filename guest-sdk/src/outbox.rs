//! Store-and-forward to the cloud: events sent here are kept on disk by the
//! host until the uplink acknowledges them, through outages and crashes.
//!
//! Uplinks are granted per function in the manifest (`outbox = ["cloud"]`).
//!
//! ```no_run
//! # fn main() -> brink_sdk::Result<()> {
//! # let alert = brink_sdk::Event::new("com.example.alert", "/line-3");
//! // Priority 0 to 9: higher leaves first; order is kept within a priority.
//! let seq = brink_sdk::outbox::send(&alert, "cloud", 9)?;
//! # let _ = seq;
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use crate::bindings::brink::edge::outbox::{self as raw, SendError, SendOptions};
use crate::{Error, Event, Result};

/// Stores `event` for `uplink` with `priority` (0 to 9); returns its
/// sequence number once it is on disk. A full outbox or a failing store is a
/// transient error (the host may retry the event later).
pub fn send(event: &Event, uplink: &str, priority: u8) -> Result<u64> {
    send_with_ttl(event, uplink, priority, None)
}

/// [`send`], dropping the event (counted by the host) if it has not left
/// after `ttl`.
pub fn send_with_ttl(
    event: &Event,
    uplink: &str,
    priority: u8,
    ttl: Option<Duration>,
) -> Result<u64> {
    raw::send(
        event,
        &SendOptions {
            uplink: uplink.to_owned(),
            priority,
            ttl_ms: ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        },
    )
    .map_err(|e| match e {
        SendError::Full(m) | SendError::Other(m) => Error::transient(m),
        SendError::AccessDenied(m) | SendError::Invalid(m) => Error::internal(m),
    })
}
