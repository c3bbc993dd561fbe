//! Inference: the standard `wasi:nn@0.2.0-rc-2024-10-28`, on the node's
//! shared [`Models`].
//!
//! `load-by-name` opens only the models the function's spec grants
//! (`models = ["digits"]`); any other name gets `security`. `load` from bytes
//! needs `load_models = true` in the spec and is bounded by `[nn]
//! max_load_mb`; such a model belongs to the instance that loaded it.
//! `compute` waits for its turn in the model's queue without blocking an
//! executor thread. Every failure reaches the guest as an `error` resource
//! with a code and a message; none traps it.

mod meters;

pub use meters::meters;

use std::collections::BTreeSet;
use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use crate::bindings::wasi::nn::errors::{self, ErrorCode as WitCode};
use crate::bindings::wasi::nn::graph::{self, ExecutionTarget, GraphEncoding};
use crate::bindings::wasi::nn::inference;
use crate::bindings::wasi::nn::tensor::{self, TensorType};
use crate::nn::{
    BackendKind, BatchConfig, ElementType, ErrorCode, Model, Models, NnError, Target, Tensor,
};
use crate::state::HostState;

/// The grant that allows these interfaces; given by `models = [...]` or
/// `load_models = true` in a spec.
pub const GRANT: &str = crate::contract::GRANT_NN;

/// The interfaces this capability provides.
pub const INTERFACES: &[&str] = &[
    "wasi:nn/tensor@0.2.0-rc-2024-10-28",
    "wasi:nn/graph@0.2.0-rc-2024-10-28",
    "wasi:nn/inference@0.2.0-rc-2024-10-28",
    "wasi:nn/errors@0.2.0-rc-2024-10-28",
];

/// What of the node's inference a function may use.
#[derive(Debug, Clone)]
pub struct NnAccess {
    pub models: Models,
    /// The named models it may open.
    pub granted: Arc<BTreeSet<String>>,
    /// Whether it may `load` models from bytes.
    pub load_bytes: bool,
    /// Whose requests these are, for the queues' fair share.
    pub function: Arc<str>,
    /// Told how long each inference took, queueing included (for billing).
    pub meter: Option<InferenceMeter>,
}

/// Adds up a function's inference time; the node bills it to the tenant.
#[derive(Clone)]
pub struct InferenceMeter(Arc<dyn Fn(std::time::Duration) + Send + Sync>);

impl InferenceMeter {
    /// A meter that hands each inference's duration to `record`.
    pub fn new(record: impl Fn(std::time::Duration) + Send + Sync + 'static) -> Self {
        Self(Arc::new(record))
    }
}

impl std::fmt::Debug for InferenceMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InferenceMeter")
    }
}

/// A function's inference context.
#[derive(Debug, Default)]
pub struct NnCtx {
    access: Option<NnAccess>,
    /// Bytes of tensor data the instance holds in the host; each tensor
    /// copies guest memory out, so this is bounded like guest memory is.
    held: u64,
    limit: u64,
}

impl NnCtx {
    /// The context of a function with `access` (none: no model granted) that
    /// may hold up to `limit` bytes of tensors in the host.
    pub fn new(access: Option<NnAccess>, limit: u64) -> Self {
        Self {
            access,
            held: 0,
            limit,
        }
    }

    /// Counts `bytes` more held; traps past the limit.
    fn hold(&mut self, bytes: usize) -> wasmtime::Result<()> {
        let requested = self.held.saturating_add(bytes as u64);
        if requested > self.limit {
            return Err(crate::error::LimitExceeded::Memory {
                limit: self.limit,
                requested,
            }
            .into());
        }
        self.held = requested;
        Ok(())
    }

    fn release(&mut self, bytes: usize) {
        self.held = self.held.saturating_sub(bytes as u64);
    }
}

/// A `wasi:nn/tensor.tensor`: checked against its dimensions when used, as
/// the constructor cannot fail.
#[derive(Debug)]
pub struct TensorHandle {
    dims: Vec<u32>,
    ty: TensorType,
    data: Vec<u8>,
}

/// A `wasi:nn/graph.graph`.
#[derive(Debug)]
pub struct GraphHandle(Arc<Model>);

/// A `wasi:nn/inference.graph-execution-context`.
#[derive(Debug)]
pub struct ExecHandle(Arc<Model>);

/// A `wasi:nn/errors.error`.
#[derive(Debug)]
pub struct ErrorHandle(NnError);

/// What the host functions see of the store.
pub struct NnView<'a> {
    ctx: &'a mut NnCtx,
    table: &'a mut ResourceTable,
}

impl std::fmt::Debug for NnView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NnView").field("ctx", &self.ctx).finish()
    }
}

type NnResult<T> = wasmtime::Result<Result<T, Resource<ErrorHandle>>>;

pub(crate) fn element_type(ty: TensorType) -> ElementType {
    match ty {
        TensorType::Fp16 => ElementType::F16,
        TensorType::Fp32 => ElementType::F32,
        TensorType::Fp64 => ElementType::F64,
        TensorType::Bf16 => ElementType::Bf16,
        TensorType::U8 => ElementType::U8,
        TensorType::I32 => ElementType::I32,
        TensorType::I64 => ElementType::I64,
    }
}

pub(crate) fn tensor_type(ty: ElementType) -> TensorType {
    match ty {
        ElementType::F16 => TensorType::Fp16,
        ElementType::F32 => TensorType::Fp32,
        ElementType::F64 => TensorType::Fp64,
        ElementType::Bf16 => TensorType::Bf16,
        ElementType::U8 => TensorType::U8,
        ElementType::I32 => TensorType::I32,
        ElementType::I64 => TensorType::I64,
    }
}

pub(crate) fn error_code(code: ErrorCode) -> WitCode {
    match code {
        ErrorCode::InvalidArgument => WitCode::InvalidArgument,
        ErrorCode::InvalidEncoding => WitCode::InvalidEncoding,
        ErrorCode::Timeout => WitCode::Timeout,
        ErrorCode::RuntimeError => WitCode::RuntimeError,
        ErrorCode::UnsupportedOperation => WitCode::UnsupportedOperation,
        ErrorCode::TooLarge => WitCode::TooLarge,
        ErrorCode::NotFound => WitCode::NotFound,
        ErrorCode::Security => WitCode::Security,
        ErrorCode::Unknown => WitCode::Unknown,
    }
}

impl NnView<'_> {
    /// Hands `error` to the guest.
    fn fail<T>(&mut self, error: NnError) -> NnResult<T> {
        tracing::debug!(code = ?error.code, message = %error.message, "wasi:nn error");
        Ok(Err(self.table.push(ErrorHandle(error))?))
    }

    fn access(&self) -> Result<&NnAccess, NnError> {
        self.ctx.access.as_ref().ok_or_else(|| {
            NnError::new(
                ErrorCode::Security,
                "this function is not granted inference: grant it models in its spec (models = [\"...\"])",
            )
        })
    }
}

impl graph::Host for NnView<'_> {
    async fn load(
        &mut self,
        builders: Vec<Vec<u8>>,
        encoding: GraphEncoding,
        target: ExecutionTarget,
    ) -> NnResult<Resource<GraphHandle>> {
        let access = match self.access() {
            Ok(a) if a.load_bytes => a.clone(),
            Ok(_) => {
                return self.fail(NnError::new(
                    ErrorCode::Security,
                    "this function may not load models from bytes (load_models = true in its spec allows it); \
                     load-by-name opens the models it is granted",
                ));
            }
            Err(e) => return self.fail(e),
        };
        if !matches!(encoding, GraphEncoding::Onnx | GraphEncoding::Autodetect) {
            return self.fail(NnError::new(
                ErrorCode::InvalidEncoding,
                format!("this host loads ONNX models only, not {encoding:?}"),
            ));
        }
        let target = match target {
            ExecutionTarget::Cpu => Target::Cpu,
            ExecutionTarget::Gpu => Target::Gpu,
            ExecutionTarget::Tpu => {
                return self.fail(NnError::unsupported("this host has no TPU backend"));
            }
        };
        let size: usize = builders.iter().map(Vec::len).sum();
        let limit = access.models.config().max_load_bytes;
        if size > limit {
            return self.fail(NnError::new(
                ErrorCode::TooLarge,
                format!(
                    "the model is {size} bytes; this host loads at most {limit} from a function"
                ),
            ));
        }
        let bytes = builders.concat();
        let backend = match target {
            Target::Cpu => BackendKind::Tract,
            Target::Gpu => BackendKind::Onnxruntime,
        };
        let config = access.models.config().clone();
        // Parsing and optimising a model is CPU work: off the executor.
        let loaded = tokio::task::spawn_blocking(move || {
            crate::nn::load_graph(&bytes, backend, target, false, &config)
        })
        .await
        .map_err(|e| NnError::runtime(format!("loading the model failed: {e}")));
        match loaded.and_then(|r| r) {
            Ok(graph) => {
                let model = Model::new(
                    format!("{} (loaded)", access.function),
                    graph,
                    BatchConfig {
                        max_batch: 1,
                        parallelism: 1,
                        ..BatchConfig::default()
                    },
                );
                Ok(Ok(self.table.push(GraphHandle(model))?))
            }
            Err(e) => self.fail(e),
        }
    }

    fn load_by_name(&mut self, name: String) -> NnResult<Resource<GraphHandle>> {
        let access = match self.access() {
            Ok(a) => a,
            Err(e) => return self.fail(e),
        };
        if !access.granted.contains(&name) {
            let granted: Vec<&str> = access.granted.iter().map(String::as_str).collect();
            let message = format!(
                "model `{name}` is not granted to this function (it is granted: {})",
                if granted.is_empty() {
                    "none".to_owned()
                } else {
                    granted.join(", ")
                }
            );
            return self.fail(NnError::new(ErrorCode::Security, message));
        }
        match access.models.get(&name).cloned() {
            Some(model) => Ok(Ok(self.table.push(GraphHandle(model))?)),
            None => self.fail(NnError::new(
                ErrorCode::NotFound,
                format!("this node has no model `{name}`"),
            )),
        }
    }
}

impl graph::HostGraph for NnView<'_> {
    fn init_execution_context(
        &mut self,
        graph: Resource<GraphHandle>,
    ) -> NnResult<Resource<ExecHandle>> {
        let model = self.table.get(&graph)?.0.clone();
        Ok(Ok(self.table.push(ExecHandle(model))?))
    }

    fn drop(&mut self, graph: Resource<GraphHandle>) -> wasmtime::Result<()> {
        self.table.delete(graph)?;
        Ok(())
    }
}

impl inference::Host for NnView<'_> {}

impl inference::HostGraphExecutionContext for NnView<'_> {
    async fn compute(
        &mut self,
        context: Resource<ExecHandle>,
        inputs: Vec<(String, Resource<TensorHandle>)>,
    ) -> NnResult<Vec<(String, Resource<TensorHandle>)>> {
        let model = self.table.get(&context)?.0.clone();
        let (function, meter) = match self.access() {
            Ok(a) => (a.function.clone(), a.meter.clone()),
            Err(e) => return self.fail(e),
        };
        let mut tensors = Vec::with_capacity(inputs.len());
        let mut invalid = None;
        for (name, handle) in inputs {
            // The guest passed them on (`own<tensor>`): they are the host's to drop.
            let t = self.table.delete(handle)?;
            self.ctx.release(t.data.len());
            match Tensor::new(t.dims, element_type(t.ty), t.data) {
                Ok(tensor) => tensors.push((name, tensor)),
                Err(e) => {
                    invalid
                        .get_or_insert(NnError::invalid(format!("input `{name}`: {}", e.message)));
                }
            }
        }
        if let Some(e) = invalid {
            return self.fail(e);
        }
        let started = std::time::Instant::now();
        let computed = model.compute(&function, tensors).await;
        if let Some(meter) = meter {
            (meter.0)(started.elapsed());
        }
        match computed {
            Ok(outputs) => {
                let mut named = Vec::with_capacity(outputs.len());
                for (name, t) in outputs {
                    self.ctx.hold(t.data().len())?;
                    let handle = TensorHandle {
                        dims: t.dims().to_vec(),
                        ty: tensor_type(t.ty()),
                        data: t.into_data(),
                    };
                    named.push((name, self.table.push(handle)?));
                }
                Ok(Ok(named))
            }
            Err(e) => self.fail(e),
        }
    }

    fn drop(&mut self, context: Resource<ExecHandle>) -> wasmtime::Result<()> {
        self.table.delete(context)?;
        Ok(())
    }
}

impl tensor::Host for NnView<'_> {}

impl tensor::HostTensor for NnView<'_> {
    fn new(
        &mut self,
        dimensions: Vec<u32>,
        ty: TensorType,
        data: Vec<u8>,
    ) -> wasmtime::Result<Resource<TensorHandle>> {
        self.ctx.hold(data.len())?;
        Ok(self.table.push(TensorHandle {
            dims: dimensions,
            ty,
            data,
        })?)
    }

    fn dimensions(&mut self, tensor: Resource<TensorHandle>) -> wasmtime::Result<Vec<u32>> {
        Ok(self.table.get(&tensor)?.dims.clone())
    }

    fn ty(&mut self, tensor: Resource<TensorHandle>) -> wasmtime::Result<TensorType> {
        Ok(self.table.get(&tensor)?.ty)
    }

    fn data(&mut self, tensor: Resource<TensorHandle>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.table.get(&tensor)?.data.clone())
    }

    fn drop(&mut self, tensor: Resource<TensorHandle>) -> wasmtime::Result<()> {
        let t = self.table.delete(tensor)?;
        self.ctx.release(t.data.len());
        Ok(())
    }
}

impl errors::Host for NnView<'_> {}

impl errors::HostError for NnView<'_> {
    fn code(&mut self, error: Resource<ErrorHandle>) -> wasmtime::Result<WitCode> {
        Ok(error_code(self.table.get(&error)?.0.code))
    }

    fn data(&mut self, error: Resource<ErrorHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(&error)?.0.message.clone())
    }

    fn drop(&mut self, error: Resource<ErrorHandle>) -> wasmtime::Result<()> {
        self.table.delete(error)?;
        Ok(())
    }
}

struct Nn;

impl HasData for Nn {
    type Data<'a> = NnView<'a>;
}

fn view(s: &mut HostState) -> NnView<'_> {
    NnView {
        ctx: &mut s.nn,
        table: &mut s.table,
    }
}

/// Links `wasi:nn`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    errors::add_to_linker::<HostState, Nn>(linker, view)?;
    tensor::add_to_linker::<HostState, Nn>(linker, view)?;
    graph::add_to_linker::<HostState, Nn>(linker, view)?;
    inference::add_to_linker::<HostState, Nn>(linker, view)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tensor_type_maps_to_an_element_type_and_back() {
        for ty in [
            TensorType::Fp16,
            TensorType::Fp32,
            TensorType::Fp64,
            TensorType::Bf16,
            TensorType::U8,
            TensorType::I32,
            TensorType::I64,
        ] {
            assert_eq!(tensor_type(element_type(ty)), ty);
        }
    }

    #[test]
    fn error_codes_map_one_to_one_onto_the_wit_codes() {
        let codes = [
            ErrorCode::InvalidArgument,
            ErrorCode::InvalidEncoding,
            ErrorCode::Timeout,
            ErrorCode::RuntimeError,
            ErrorCode::UnsupportedOperation,
            ErrorCode::TooLarge,
            ErrorCode::NotFound,
            ErrorCode::Security,
            ErrorCode::Unknown,
        ];
        let mapped: BTreeSet<String> = codes
            .iter()
            .map(|c| format!("{:?}", error_code(*c)))
            .collect();
        assert_eq!(mapped.len(), codes.len());
        for c in codes {
            assert_eq!(format!("ErrorCode::{c:?}"), format!("{:?}", error_code(c)));
        }
    }
}
