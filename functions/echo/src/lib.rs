//! Returns the event it receives, unchanged: the smallest possible function,
//! used to measure the host's own cost per event.

use brink_sdk::{Event, Result};

/// Echoes `event`.
pub fn handle(event: Event) -> Result<Event> {
    Ok(event)
}

brink_sdk::handler!(handle);
