//! An instance of a function, for callers that run several events through one.

use std::sync::Arc;

use wasmtime::Store;

use super::entry::Entry;
use super::function::{Function, arm_deadline, classify, with_timeout};
use crate::bindings::CloudEvent;
use crate::capability::wasi::GuestOutput;
use crate::error::InvokeError;
use crate::event;
use crate::state::HostState;

/// A live instance of a function.
pub struct Instance {
    pub(super) function: Function,
    pub(super) parts: Parts,
}

/// What an instance is made of, without the function that owns it (warm
/// instances sit in their function's pool).
pub(super) struct Parts {
    pub(super) store: Store<HostState>,
    pub(super) bindings: Entry,
    pub(super) stdout: GuestOutput,
    pub(super) stderr: GuestOutput,
    /// Events this instance has handled.
    pub(super) used: u32,
}

impl Parts {
    /// Tags the host-side contexts with the event about to be handled.
    pub(super) fn begin(&mut self, event_id: &str) {
        if self.used == 0 {
            return;
        }
        let event_id: Arc<str> = Arc::from(event_id);
        self.stdout.begin(&event_id);
        self.stderr.begin(&event_id);
        self.store.data_mut().log.begin(event_id);
    }
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("function", &self.function)
            .finish_non_exhaustive()
    }
}

impl Instance {
    /// The bytes of linear memory the instance holds, across its memories:
    /// what counts against the spec's memory limit.
    pub fn memory_bytes(&self) -> u64 {
        self.parts.store.data().memory.used
    }

    /// Calls the handler with `event` and checks what it returns.
    pub async fn call(&mut self, event: CloudEvent) -> Result<Vec<CloudEvent>, InvokeError> {
        let function = self.function.clone();
        let timeout = function.inner.spec.limits.timeout;
        self.parts.begin(&event.id);
        let result = with_timeout(&function, timeout, self.call_unbounded(event)).await;
        self.parts.stderr.finish();
        self.parts.used += 1;
        let written = self.parts.store.data_mut().after_invoke();
        function.make_durable(written).await?;
        result?
    }

    /// [`Instance::call`] bounded by the epoch deadline alone.
    pub(super) async fn call_unbounded(
        &mut self,
        event: CloudEvent,
    ) -> Result<Vec<CloudEvent>, InvokeError> {
        let f = &self.function.inner;
        let parts = &mut self.parts;
        let run = f.gate.run(f.group.clone());
        if f.deadlines {
            arm_deadline(&mut parts.store, f.spec.limits.timeout, run.clone());
        }
        run.admit().await;
        let result = parts.bindings.call(&mut parts.store, event).await;
        run.give_up();
        parts.stdout.finish();
        parts.stderr.finish();
        match result {
            Ok(Ok(outputs)) => self.check_outputs(outputs),
            Ok(Err(e)) => Err(InvokeError::Handler {
                function: f.name.to_string(),
                kind: e.kind,
                message: e.message,
            }),
            Err(e) => Err(classify(&self.function, e, &self.parts.stderr)),
        }
    }

    fn check_outputs(&self, mut outputs: Vec<CloudEvent>) -> Result<Vec<CloudEvent>, InvokeError> {
        let f = &self.function.inner;
        if outputs.len() > f.spec.limits.max_outputs {
            return Err(InvokeError::TooManyOutputs {
                function: f.name.to_string(),
                count: outputs.len(),
                limit: f.spec.limits.max_outputs,
            });
        }
        let size: usize = outputs.iter().map(event::wire_size).sum();
        if size > f.spec.limits.max_output_bytes {
            return Err(InvokeError::OutputTooLarge {
                function: f.name.to_string(),
                size,
                limit: f.spec.limits.max_output_bytes,
            });
        }
        for (index, out) in outputs.iter_mut().enumerate() {
            if out.id.is_empty() {
                out.id = uuid::Uuid::new_v4().to_string();
            }
            if out.specversion.is_empty() {
                out.specversion = "1.0".to_owned();
            }
            event::validate(out, event::json::ATTRIBUTE).map_err(|e| {
                InvokeError::InvalidOutput {
                    function: f.name.to_string(),
                    index,
                    reason: e.to_string(),
                }
            })?;
        }
        Ok(outputs)
    }
}
