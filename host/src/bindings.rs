//! Host bindings for the `brink:edge` contract, generated once for the crate.

wasmtime::component::bindgen!({
    // The host's world (`wit/host/host.wit`): the contract's `function`
    // world plus the standard interfaces at the versions other hosts'
    // components import. The contract is pushed first; the host package's
    // dependencies resolve against it.
    world: "brink:host/runtime",
    path: ["../wit", "../wit/host"],
    // Host functions return `wasmtime::Result`: an `Err` is a host bug and
    // traps the instance; guest-visible failures live in the WIT types.
    imports: {
        // Waits for the sync that makes the event durable (group commit)
        // without blocking an executor thread.
        "brink:edge/outbox.send": async | trappable,
        // Waits in the model's queue; loading parses and optimises a model.
        "wasi:nn/inference.[method]graph-execution-context.compute": async | trappable,
        "wasi:nn/graph.load": async | trappable,
        default: trappable,
    },
    exports: { default: async },
    with: {
        "wasi:keyvalue/store.bucket": crate::capability::keyvalue::BucketHandle,
        "wasi:keyvalue/atomics.cas": crate::capability::keyvalue::CasHandle,
        "wasi:nn/tensor.tensor": crate::capability::nn::TensorHandle,
        "wasi:nn/graph.graph": crate::capability::nn::GraphHandle,
        "wasi:nn/inference.graph-execution-context": crate::capability::nn::ExecHandle,
        "wasi:nn/errors.error": crate::capability::nn::ErrorHandle,
    },
});

pub use brink::edge::types::{CloudEvent, ErrorKind, HandlerError};

// `additional_derives` would apply to every generated type, and the
// `wasi:keyvalue` ones hold resources, which have no equality.
impl PartialEq for CloudEvent {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.source == other.source
            && self.type_ == other.type_
            && self.specversion == other.specversion
            && self.subject == other.subject
            && self.time == other.time
            && self.datacontenttype == other.datacontenttype
            && self.dataschema == other.dataschema
            && self.extensions == other.extensions
            && self.data == other.data
    }
}

impl Eq for CloudEvent {}

impl PartialEq for HandlerError {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.message == other.message
    }
}

impl Eq for HandlerError {}
