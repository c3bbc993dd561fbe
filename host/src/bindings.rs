//! Host bindings for the `brink:edge` contract, generated once for the crate.

wasmtime::component::bindgen!({
    world: "brink:edge/function",
    path: "../wit",
    // Host functions return `wasmtime::Result`: an `Err` is a host bug and
    // traps the instance; guest-visible failures live in the WIT types.
    imports: { default: trappable },
    exports: { default: async },
    additional_derives: [PartialEq, Eq],
});

pub use brink::edge::types::{CloudEvent, ErrorKind, HandlerError};
