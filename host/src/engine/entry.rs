//! The handler a component exports, and how the host calls it:
//! `brink:edge/handler` (a plain function, through the host world's
//! bindings), or `brink:edge/async-handler` (an `async func`, added in 0.1.3
//! for WASI 0.3 guests), called as a task on the concurrent engine, where
//! the guest may await host calls and run several at once.

use wasmtime::Store;
use wasmtime::component::{Component, ComponentExportIndex, InstancePre, TypedFunc};

use crate::bindings::{CloudEvent, HandlerError, Runtime, RuntimePre};
use crate::state::HostState;

/// The asynchronous handler's interface, at the version that added it.
const ASYNC_HANDLER: &str = "brink:edge/async-handler@0.1.3";

type Outcome = Result<Vec<CloudEvent>, HandlerError>;
type AsyncHandle = TypedFunc<(CloudEvent,), (Outcome,)>;

/// A component's handler, linked and ready to instantiate.
#[derive(Clone)]
pub(super) enum EntryPre {
    Sync(RuntimePre<HostState>),
    Async {
        pre: InstancePre<HostState>,
        handle: ComponentExportIndex,
    },
}

/// The handler of one live instance.
pub(super) enum Entry {
    Sync(Runtime),
    Async(AsyncHandle),
}

impl EntryPre {
    /// The handler `component` exports: the asynchronous one where it
    /// exports that, the plain one otherwise (whose absence is the error).
    pub(super) fn new(
        component: &Component,
        pre: InstancePre<HostState>,
    ) -> wasmtime::Result<Self> {
        let handle = component
            .get_export_index(None, ASYNC_HANDLER)
            .and_then(|interface| component.get_export_index(Some(&interface), "handle"));
        Ok(match handle {
            Some(handle) => Self::Async { pre, handle },
            None => Self::Sync(RuntimePre::new(pre)?),
        })
    }

    /// Instantiates the component in `store`, and finds its handler.
    pub(super) async fn instantiate(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Entry> {
        match self {
            Self::Sync(pre) => Ok(Entry::Sync(pre.instantiate_async(store).await?)),
            Self::Async { pre, handle } => {
                let instance = pre.instantiate_async(&mut *store).await?;
                Ok(Entry::Async(instance.get_typed_func(store, handle)?))
            }
        }
    }
}

impl Entry {
    /// Calls the handler with `event`: an `Err` is a trap, the inner one the
    /// handler's own failure.
    pub(super) async fn call(
        &self,
        store: &mut Store<HostState>,
        event: CloudEvent,
    ) -> wasmtime::Result<Outcome> {
        match self {
            Self::Sync(bindings) => {
                bindings
                    .brink_edge_handler()
                    .call_handle(store, &event)
                    .await
            }
            Self::Async(handle) => Ok(handle.call_async(store, (event,)).await?.0),
        }
    }
}
