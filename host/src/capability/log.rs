//! `brink:edge/log`: guest log records go to the host's `tracing` log, tagged
//! with the function and the event id, and, for a function with a
//! [`LogTap`], to the tap too: the recent records and a live feed that
//! `brink logs <name> -f` follows.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;

use wasmtime::component::{HasData, Linker};

use crate::bindings::brink::edge::log::{self, Level};
use crate::state::HostState;

/// The interface this capability provides, from the contract's first version.
pub const INTERFACE: crate::contract::EdgeInterface = crate::contract::EdgeInterface {
    name: "log",
    since: "0.1.0",
};

/// Log records one invocation may write; later ones are dropped and counted.
pub const MAX_RECORDS_PER_INVOCATION: u32 = 100;
/// Log records one function may write per second, across all its instances.
pub const MAX_RECORDS_PER_SECOND: u32 = 200;

/// Who is logging: the function and the event being handled, and what this
/// invocation has written so far.
#[derive(Debug, Clone)]
pub struct LogCtx {
    pub(crate) function: Arc<str>,
    pub(crate) event_id: Arc<str>,
    pub(crate) tap: Option<LogTap>,
    budget: Arc<LogBudget>,
    written: u32,
}

impl LogCtx {
    /// The context for one invocation of a function whose records per
    /// second `budget` holds.
    pub fn new(
        function: Arc<str>,
        event_id: Arc<str>,
        tap: Option<LogTap>,
        budget: Arc<LogBudget>,
    ) -> Self {
        Self {
            function,
            event_id,
            tap,
            budget,
            written: 0,
        }
    }

    /// A warm instance starts its next invocation: `event_id`, and a fresh
    /// per-invocation count.
    pub(crate) fn begin(&mut self, event_id: Arc<str>) {
        self.event_id = event_id;
        self.written = 0;
    }
}

/// One function's log rate: a window of one second shared by all its
/// instances, and what was dropped. A guest that floods its log loses its
/// own records, never the host's disk or its neighbours' log lines.
#[derive(Debug)]
pub struct LogBudget {
    window: Mutex<Window>,
    dropped: std::sync::atomic::AtomicU64,
    /// How many of `dropped` a counter was told of.
    reported: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct Window {
    start: std::time::Instant,
    written: u32,
    dropped: u64,
    /// Whether this window's drops were already reported.
    said: bool,
}

impl Default for LogBudget {
    fn default() -> Self {
        Self {
            window: Mutex::new(Window {
                start: std::time::Instant::now(),
                written: 0,
                dropped: 0,
                said: false,
            }),
            dropped: std::sync::atomic::AtomicU64::new(0),
            reported: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl LogBudget {
    /// Records dropped since the function was loaded.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records dropped since the last call. `fetch_max` keeps two callers
    /// from reporting the same drops twice, whatever order they run in.
    pub fn take_unreported(&self) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        let total = self.dropped.load(Relaxed);
        if total == 0 {
            return 0;
        }
        total.saturating_sub(self.reported.fetch_max(total, Relaxed))
    }

    /// Whether one more record fits in this second; `over_invocation` says
    /// the invocation already used its own share. A drop is said once per
    /// window, with the count of the window before.
    fn admit(&self, function: &str, over_invocation: bool) -> bool {
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        if window.start.elapsed() >= std::time::Duration::from_secs(1) {
            if window.dropped > 0 {
                tracing::warn!(
                    function,
                    dropped = window.dropped,
                    "guest log: records dropped in the last window (limits: {MAX_RECORDS_PER_INVOCATION} per invocation, {MAX_RECORDS_PER_SECOND} per second)"
                );
            }
            *window = Window {
                start: std::time::Instant::now(),
                written: 0,
                dropped: 0,
                said: false,
            };
        }
        if !over_invocation && window.written < MAX_RECORDS_PER_SECOND {
            window.written += 1;
            return true;
        }
        window.dropped += 1;
        self.dropped
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !window.said {
            window.said = true;
            tracing::warn!(
                function,
                "guest log: dropping records over {MAX_RECORDS_PER_INVOCATION} per invocation or {MAX_RECORDS_PER_SECOND} per second; counting them instead"
            );
        }
        false
    }
}

/// Records kept per function for `brink logs` without `-f`.
const TAP_HISTORY: usize = 128;
/// Records a follower may fall behind by before it is told it missed some.
const TAP_FEED: usize = 1024;

/// One line of a function's log, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LogRecord {
    /// Rises with every record of the function; a follower that
    /// reconnects with `Last-Event-ID` skips what it has seen.
    pub seq: u64,
    pub time_unix_ms: u64,
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: &'static str,
    /// `log` (the log interface), `stdout`, `stderr`, or `host` (what the
    /// host says of an invocation: a trap, a timeout, a handler error).
    pub source: &'static str,
    pub event_id: String,
    pub message: String,
}

/// A function's log as the admin API serves it: its recent records and a
/// live feed. Cheap to clone; kept across versions, so a follower goes on
/// through a deploy.
#[derive(Clone)]
pub struct LogTap {
    inner: Arc<TapInner>,
}

struct TapInner {
    /// The history and the next number. Records are numbered, stored and
    /// sent under this lock, so a new follower's history and feed neither
    /// overlap nor leave a gap.
    history: Mutex<(VecDeque<LogRecord>, u64)>,
    feed: broadcast::Sender<LogRecord>,
}

impl std::fmt::Debug for LogTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogTap")
            .field("followers", &self.inner.feed.receiver_count())
            .finish_non_exhaustive()
    }
}

impl Default for LogTap {
    fn default() -> Self {
        Self::new()
    }
}

impl LogTap {
    /// An empty tap.
    pub fn new() -> Self {
        let (feed, _) = broadcast::channel(TAP_FEED);
        Self {
            inner: Arc::new(TapInner {
                // Numbers start at the clock in microseconds, so they keep
                // rising across a node restart and a follower that reconnects
                // with `Last-Event-ID` misses nothing the new node logs.
                history: Mutex::new((VecDeque::with_capacity(TAP_HISTORY), now_micros())),
                feed,
            }),
        }
    }

    /// Adds a record.
    pub fn record(&self, level: &'static str, source: &'static str, event_id: &str, message: &str) {
        let time_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut history = self
            .inner
            .history
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (records, next) = &mut *history;
        let record = LogRecord {
            seq: *next,
            time_unix_ms,
            level,
            source,
            event_id: event_id.to_owned(),
            message: truncate(message, MAX_MESSAGE).to_owned(),
        };
        *next += 1;
        if records.len() == TAP_HISTORY {
            records.pop_front();
        }
        records.push_back(record.clone());
        // No follower is not an error: the history keeps it.
        let _ = self.inner.feed.send(record);
    }

    /// The recent records, oldest first.
    pub fn recent(&self) -> Vec<LogRecord> {
        let history = self
            .inner
            .history
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        history.0.iter().cloned().collect()
    }

    /// The recent records and the feed of every later one.
    pub fn follow(&self) -> (Vec<LogRecord>, broadcast::Receiver<LogRecord>) {
        let history = self
            .inner
            .history
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        (
            history.0.iter().cloned().collect(),
            self.inner.feed.subscribe(),
        )
    }
}

/// Longest message kept; the rest is cut so a guest cannot flood the log.
const MAX_MESSAGE: usize = 8 * 1024;

impl log::Host for LogCtx {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let over_invocation = self.written >= MAX_RECORDS_PER_INVOCATION;
        if !self.budget.admit(&self.function, over_invocation) {
            return Ok(());
        }
        self.written += 1;
        let message = truncate(&message, MAX_MESSAGE);
        let (function, event_id) = (&*self.function, &*self.event_id);
        if let Some(tap) = &self.tap {
            tap.record(level_name(level), "log", event_id, message);
        }
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

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64)
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_gets_the_history_then_every_later_record_once() {
        let tap = LogTap::new();
        for i in 0..(TAP_HISTORY + 5) {
            tap.record("info", "log", "e", &format!("line {i}"));
        }
        let (history, mut feed) = tap.follow();
        assert_eq!(history.len(), TAP_HISTORY);
        assert_eq!(history[0].message, "line 5");
        assert!(history.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        tap.record("warn", "stderr", "e2", "next");
        let next = feed.try_recv().ok();
        let last = history[TAP_HISTORY - 1].seq;
        assert_eq!(
            next.map(|r| (r.seq, r.message)),
            Some((last + 1, "next".to_owned()))
        );
        assert!(feed.try_recv().is_err());
        let long = "é".repeat(MAX_MESSAGE);
        tap.record("info", "log", "e3", &long);
        assert!(
            tap.recent()
                .last()
                .is_some_and(|r| r.message.len() <= MAX_MESSAGE)
        );
    }
}
