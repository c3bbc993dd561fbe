//! Errors callers match on: loading a component and invoking it.

use std::time::Duration;

use crate::bindings::ErrorKind;

/// Why a component could not be loaded as a function.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} is {size} bytes, over the limit of {limit} bytes for a component")]
    TooLarge {
        what: String,
        size: usize,
        limit: usize,
    },
    #[error("{what} is not WebAssembly (it does not start with the `\\0asm` magic bytes)")]
    NotWasm { what: String },
    #[error(
        "{what} is a core WebAssembly module, not a component; build it for wasm32-wasip2 \
         (`brink build`) or wrap it with `wasm-tools component new`"
    )]
    CoreModule { what: String },
    #[error("{what} is not a valid component: {reason}")]
    Invalid { what: String, reason: String },
    #[error(
        "function `{function}` imports `{import}`, which it is not granted{}",
        match grant { Some(g) => format!("; {g}"), None => "; no capability of this host provides it".to_owned() }
    )]
    Ungranted {
        function: String,
        import: String,
        grant: Option<String>,
    },
    #[error("function `{function}` asks for unknown grant `{grant}`; known grants: {known}")]
    UnknownGrant {
        function: String,
        grant: String,
        known: String,
    },
    #[error(
        "function `{function}` does not export `brink:edge/handler` (0.1.x); \
         is it built with brink-sdk's `handler!`? ({reason})"
    )]
    MissingExport { function: String, reason: String },
    #[error("function `{function}` cannot be linked: {reason}")]
    Link { function: String, reason: String },
    #[error("invalid limits for function `{function}`: {reason}")]
    BadLimits { function: String, reason: String },
}

/// Why one invocation failed. The host goes on serving whatever happens here.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("function `{function}` exceeded its time limit of {} ms", limit.as_millis())]
    Timeout { function: String, limit: Duration },
    #[error(
        "function `{function}` exceeded its memory limit of {} MiB (it asked for {} MiB)",
        limit / (1 << 20),
        requested.div_ceil(1 << 20)
    )]
    MemoryLimit {
        function: String,
        limit: u64,
        requested: u64,
    },
    #[error(
        "function `{function}` returned {size} bytes of events, over its output limit of {limit} bytes"
    )]
    OutputTooLarge {
        function: String,
        size: usize,
        limit: usize,
    },
    #[error(
        "function `{function}` returned {count} events, over its limit of {limit} per invocation (limits.max_outputs)"
    )]
    TooManyOutputs {
        function: String,
        count: usize,
        limit: usize,
    },
    #[error("function `{function}` returned an invalid event #{index}: {reason}")]
    InvalidOutput {
        function: String,
        index: usize,
        reason: String,
    },
    #[error("function `{function}` trapped: {trap}{}", panic.as_ref().map(|p| format!(" (guest panicked: {p})")).unwrap_or_default())]
    Trap {
        function: String,
        trap: String,
        panic: Option<String>,
    },
    #[error("function `{function}` called exit({code})")]
    Exit { function: String, code: i32 },
    #[error("function `{function}` failed: {message} ({})", kind_label(*kind))]
    Handler {
        function: String,
        kind: ErrorKind,
        message: String,
    },
    #[error("function `{function}` could not be instantiated: {reason}")]
    Instantiate { function: String, reason: String },
    #[error(
        "function `{function}` found no free instance slot ({reason}); the node is busy, retry later"
    )]
    Busy { function: String, reason: String },
    #[error("the key-value writes of function `{function}` could not be made durable: {reason}")]
    Durability { function: String, reason: String },
}

impl InvokeError {
    /// A short, stable name for metrics and logs (`timeout`, `trap`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            InvokeError::Timeout { .. } => "timeout",
            InvokeError::MemoryLimit { .. } => "memory_limit",
            InvokeError::OutputTooLarge { .. } => "output_too_large",
            InvokeError::TooManyOutputs { .. } => "too_many_outputs",
            InvokeError::InvalidOutput { .. } => "invalid_output",
            InvokeError::Trap { .. } => "trap",
            InvokeError::Exit { .. } => "exit",
            InvokeError::Handler { .. } => "handler_error",
            InvokeError::Instantiate { .. } => "instantiate",
            InvokeError::Busy { .. } => "busy",
            InvokeError::Durability { .. } => "durability",
        }
    }

    /// Whether the guest itself failed hard: trapped, exited, hit its memory
    /// cap or its time limit, or could not start. The CPU gate counts the
    /// time such calls take (`sched::CpuGate::failed`).
    pub fn is_guest_fault(&self) -> bool {
        matches!(
            self,
            InvokeError::Timeout { .. }
                | InvokeError::MemoryLimit { .. }
                | InvokeError::Trap { .. }
                | InvokeError::Exit { .. }
                | InvokeError::Instantiate { .. }
        )
    }

    /// Whether running the same event again could succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            InvokeError::Handler { kind, .. } => *kind == ErrorKind::Transient,
            InvokeError::Instantiate { .. } | InvokeError::Busy { .. } => true,
            _ => false,
        }
    }
}

/// A limit the store hit while the guest ran; carried through wasmtime's
/// error chain so the engine can name the limit.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LimitExceeded {
    #[error("time limit exceeded")]
    Timeout,
    #[error("memory limit exceeded")]
    Memory { limit: u64, requested: u64 },
}

/// How people read a handler's error kind.
fn kind_label(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidEvent => "it refused the event",
        ErrorKind::Transient => "a transient failure; retrying may help",
        ErrorKind::Internal => "an internal error of the function",
    }
}
