//! `brink:edge/log`: guest log records go to the host's `tracing` log, tagged
//! with the function and the event id.

use std::sync::Arc;

use wasmtime::component::{HasData, Linker};

use crate::bindings::brink::edge::log::{self, Level};
use crate::state::HostState;

/// The interfaces this capability provides.
pub const INTERFACES: &[&str] = &[
    "brink:edge/log@0.1.0",
    "brink:edge/log@0.1.1",
    "brink:edge/log@0.1.2",
];

/// Who is logging: the function and the event being handled.
#[derive(Debug, Clone)]
pub struct LogCtx {
    pub(crate) function: Arc<str>,
    pub(crate) event_id: Arc<str>,
}

impl LogCtx {
    /// The context for one invocation.
    pub fn new(function: Arc<str>, event_id: Arc<str>) -> Self {
        Self { function, event_id }
    }
}

/// Longest message kept; the rest is cut so a guest cannot flood the log.
const MAX_MESSAGE: usize = 8 * 1024;

impl log::Host for LogCtx {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let message = truncate(&message, MAX_MESSAGE);
        let (function, event_id) = (&*self.function, &*self.event_id);
        match level {
            Level::Trace => tracing::trace!(target: "guest", function, event_id, "{message}"),
            Level::Debug => tracing::debug!(target: "guest", function, event_id, "{message}"),
            Level::Info => tracing::info!(target: "guest", function, event_id, "{message}"),
            Level::Warn => tracing::warn!(target: "guest", function, event_id, "{message}"),
            Level::Error => tracing::error!(target: "guest", function, event_id, "{message}"),
        }
        Ok(())
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct Log;

impl HasData for Log {
    type Data<'a> = &'a mut LogCtx;
}

/// Links `brink:edge/log`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    log::add_to_linker::<HostState, Log>(linker, |s| &mut s.log)
}
