//! WASI 0.2 with nothing granted: no preopened directories, no sockets, no
//! environment, no stdin; clocks and random allowed. The guest's stdout and
//! stderr go to the host's log, line by line, tagged with function and event.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime::component::Linker;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};

use super::log::LogTap;
use crate::state::HostState;

/// The interface prefixes this capability provides (any 0.2.x version, and
/// 0.3.x on the concurrent engine).
///
/// `wasi:filesystem` is linked because Rust's std imports it even when a
/// function never touches a file; with no preopened directory it reaches nothing.
pub const INTERFACES: &[&str] = &[
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:cli/",
    "wasi:filesystem/",
];

/// Bytes of stdout or stderr kept per invocation; the rest is dropped, and
/// the drop is logged once, so a chatty guest cannot flood the host's log.
const MAX_CAPTURE: usize = 64 * 1024;
/// Stderr lines remembered to explain a trap (a Rust panic message).
const TAIL_LINES: usize = 8;

/// Links WASI 0.2 (the interfaces above, plus `wasi:sockets`, which the
/// import check keeps from every function: none is granted the network).
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)
}

/// Links WASI 0.3 beside 0.2, for the concurrent engine only (its
/// `wasi:sockets` is linked, and refused by the import check, like 0.2's).
#[cfg(feature = "p3")]
pub fn add_p3_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p3::add_to_linker(linker)
}

/// Nothing to link in a host built without WASI 0.3.
#[cfg(not(feature = "p3"))]
pub fn add_p3_to_linker(_: &mut Linker<HostState>) -> wasmtime::Result<()> {
    Ok(())
}

/// The WASI context for one instance, and its stdout and stderr captures.
pub fn ctx(
    function: &Arc<str>,
    event_id: &Arc<str>,
    tap: Option<&LogTap>,
) -> (WasiCtx, GuestOutput, GuestOutput) {
    let stdout = GuestOutput::new(function, event_id, Stream::Stdout, tap);
    let stderr = GuestOutput::new(function, event_id, Stream::Stderr, tap);
    let ctx = WasiCtxBuilder::new()
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_blocking_current_thread(false)
        .build();
    (ctx, stdout, stderr)
}

#[derive(Debug, Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug)]
struct Capture {
    function: Arc<str>,
    event_id: Arc<str>,
    stream: Stream,
    tap: Option<LogTap>,
    partial: Vec<u8>,
    written: usize,
    truncated: bool,
    tail: Vec<String>,
}

impl Capture {
    fn write(&mut self, mut bytes: &[u8]) {
        let room = MAX_CAPTURE.saturating_sub(self.written);
        if bytes.len() > room {
            if !self.truncated {
                self.truncated = true;
                tracing::warn!(
                    target: "guest",
                    function = &*self.function,
                    event_id = &*self.event_id,
                    "{:?} over {MAX_CAPTURE} bytes in one invocation; the rest is dropped",
                    self.stream
                );
            }
            bytes = &bytes[..room];
        }
        self.written += bytes.len();
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            self.partial.extend_from_slice(chunk);
            if chunk.ends_with(b"\n") {
                self.emit_line();
            }
        }
    }

    fn emit_line(&mut self) {
        let raw = std::mem::take(&mut self.partial);
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end_matches(['\n', '\r']);
        if line.is_empty() {
            return;
        }
        let (function, event_id) = (&*self.function, &*self.event_id);
        if let Some(tap) = &self.tap {
            match self.stream {
                Stream::Stdout => tap.record("info", "stdout", event_id, line),
                Stream::Stderr => tap.record("warn", "stderr", event_id, line),
            }
        }
        match self.stream {
            Stream::Stdout => tracing::info!(target: "guest::stdout", function, event_id, "{line}"),
            Stream::Stderr => tracing::warn!(target: "guest::stderr", function, event_id, "{line}"),
        }
        if matches!(self.stream, Stream::Stderr) {
            if self.tail.len() == TAIL_LINES {
                self.tail.remove(0);
            }
            self.tail.push(line.to_owned());
        }
    }
}

/// One of a guest's output streams, sent to the host's log.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    capture: Arc<Mutex<Capture>>,
}

impl GuestOutput {
    fn new(function: &Arc<str>, event_id: &Arc<str>, stream: Stream, tap: Option<&LogTap>) -> Self {
        Self {
            capture: Arc::new(Mutex::new(Capture {
                function: function.clone(),
                event_id: event_id.clone(),
                stream,
                tap: tap.cloned(),
                partial: Vec::new(),
                written: 0,
                truncated: false,
                tail: Vec::new(),
            })),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Capture) -> R) -> R {
        // A poisoned lock only means a logging call panicked; the buffer is still usable.
        f(&mut self.capture.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Starts capturing for the next event a warm instance handles: its
    /// lines are tagged with `event_id`, and the per-event cap starts over.
    pub fn begin(&self, event_id: &Arc<str>) {
        self.with(|c| {
            c.event_id = event_id.clone();
            c.partial.clear();
            c.written = 0;
            c.truncated = false;
            c.tail.clear();
        });
    }

    /// Logs an unterminated last line, if any.
    pub fn finish(&self) {
        self.with(|c| {
            if !c.partial.is_empty() {
                c.emit_line();
            }
        });
    }

    /// The message of a Rust panic the guest printed, if it printed one.
    pub fn panic_message(&self) -> Option<String> {
        self.with(|c| {
            let at = c.tail.iter().rposition(|l| l.contains(" panicked at "))?;
            let message = c.tail.get(at + 1)?.trim();
            (!message.is_empty()).then(|| message.to_owned())
        })
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.with(|c| c.write(&bytes));
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always ready: bytes past the cap are dropped, never blocked on.
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.with(|c| c.write(buf));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
