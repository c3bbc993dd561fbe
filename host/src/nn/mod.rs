//! Inference: models the node loads once at start and shares with every
//! instance of every function granted them, behind one [`Graph`] trait with
//! two backends ([`tract`] on the CPU, the default; [`onnxruntime`] on the CPU
//! or a CUDA GPU). Every `compute` goes through its model's queue
//! ([`batch`]), which forms batches and serves functions in turn.

pub mod batch;
pub mod devices;
pub mod onnxruntime;
pub mod tract;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;

pub use batch::{BatchConfig, ModelStats};

/// The largest rank a tensor may have.
const MAX_RANK: usize = 16;

/// The type of a tensor's elements (`wasi:nn/tensor.tensor-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElementType {
    F16,
    F32,
    F64,
    Bf16,
    U8,
    I32,
    I64,
}

impl ElementType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::U8 => 1,
            Self::F16 | Self::Bf16 => 2,
            Self::F32 | Self::I32 => 4,
            Self::F64 | Self::I64 => 8,
        }
    }
}

impl fmt::Display for ElementType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F16 => "fp16",
            Self::F32 => "fp32",
            Self::F64 => "fp64",
            Self::Bf16 => "bf16",
            Self::U8 => "u8",
            Self::I32 => "i32",
            Self::I64 => "i64",
        })
    }
}

/// A dense row-major tensor with little-endian elements, as `wasi:nn` passes them.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    dims: Vec<u32>,
    ty: ElementType,
    data: Vec<u8>,
}

impl Tensor {
    /// A tensor, if `data` holds exactly the elements `dims` describe.
    pub fn new(dims: Vec<u32>, ty: ElementType, data: Vec<u8>) -> Result<Self, NnError> {
        if dims.len() > MAX_RANK {
            return Err(NnError::invalid(format!(
                "a tensor may have at most {MAX_RANK} dimensions, not {}",
                dims.len()
            )));
        }
        let expected = dims
            .iter()
            .try_fold(ty.size(), |n, d| n.checked_mul(*d as usize));
        match expected {
            Some(n) if n == data.len() => Ok(Self { dims, ty, data }),
            Some(n) => Err(NnError::invalid(format!(
                "tensor data is {} bytes, but dimensions {dims:?} of {ty} need {n}",
                data.len()
            ))),
            None => Err(NnError::invalid(format!(
                "tensor dimensions {dims:?} are too large"
            ))),
        }
    }

    /// An `f32` tensor.
    pub fn from_f32(dims: Vec<u32>, values: &[f32]) -> Result<Self, NnError> {
        Self::new(
            dims,
            ElementType::F32,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    pub fn dims(&self) -> &[u32] {
        &self.dims
    }

    pub fn ty(&self) -> ElementType {
        self.ty
    }

    pub fn data(&self) -> &[u8] {
        &self.data
    }

    pub fn into_data(self) -> Vec<u8> {
        self.data
    }

    /// The elements as `f32`, for an `f32` tensor.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        (self.ty == ElementType::F32).then(|| {
            self.data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
    }

    /// The size of dimension 0 (1 for a scalar).
    fn rows(&self) -> usize {
        self.dims.first().map_or(1, |d| *d as usize)
    }
}

/// What went wrong, in `wasi:nn/errors.error-code` terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    InvalidEncoding,
    Timeout,
    RuntimeError,
    UnsupportedOperation,
    TooLarge,
    NotFound,
    Security,
    Unknown,
}

/// An inference error: its code and a message for the guest or operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct NnError {
    pub code: ErrorCode,
    pub message: String,
}

impl NnError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    pub fn runtime(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::RuntimeError, message)
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::UnsupportedOperation, message)
    }
}

/// Which engine runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// tract-onnx: pure Rust, CPU only, nothing to install.
    #[default]
    Tract,
    /// ONNX Runtime, loaded at run time from `libonnxruntime`.
    Onnxruntime,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tract => "tract",
            Self::Onnxruntime => "onnxruntime",
        })
    }
}

/// Where a model runs (`wasi:nn/graph.execution-target`, less `tpu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    #[default]
    Cpu,
    Gpu,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Gpu => "gpu",
        })
    }
}

/// One input a graph takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    pub name: String,
    pub ty: ElementType,
    /// Each dimension's size; `None` where the model leaves it open.
    pub dims: Vec<Option<u64>>,
}

impl InputSpec {
    fn describe(&self) -> String {
        let dims: Vec<String> = self
            .dims
            .iter()
            .map(|d| d.map_or_else(|| "?".to_owned(), |d| d.to_string()))
            .collect();
        format!("{} {}[{}]", self.name, self.ty, dims.join(", "))
    }

    /// Checks `tensor` fits this input.
    fn check(&self, model: &str, tensor: &Tensor) -> Result<(), NnError> {
        let fits = tensor.ty == self.ty
            && tensor.dims.len() == self.dims.len()
            && tensor
                .dims
                .iter()
                .zip(&self.dims)
                .all(|(got, want)| want.is_none_or(|w| w == u64::from(*got)));
        if fits && !tensor.dims.contains(&0) {
            return Ok(());
        }
        Err(NnError::invalid(format!(
            "model `{model}` takes input {}, not {}{:?}",
            self.describe(),
            tensor.ty,
            tensor.dims
        )))
    }
}

/// A loaded model that a backend runs. `run` blocks: callers run it off the
/// async executor.
pub trait Graph: Send + Sync + fmt::Debug {
    /// Its inputs, in the order `run` takes them.
    fn inputs(&self) -> &[InputSpec];
    /// Its outputs' names, in the order `run` returns them.
    fn outputs(&self) -> &[String];
    /// Runs one inference on checked inputs.
    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, NnError>;
    /// Where it runs, for logs and metrics: "cpu", "cuda".
    fn device(&self) -> &'static str;
    /// Why it runs on the CPU though the GPU was asked for, where it does.
    fn fallback(&self) -> Option<&str> {
        None
    }
}

/// The node's inference settings (`[nn]`).
#[derive(Debug, Clone)]
pub struct NnConfig {
    /// Largest model a guest may `load` from bytes.
    pub max_load_bytes: usize,
    /// Where ONNX Runtime's library is; `None`: `ORT_DYLIB_PATH`.
    pub onnxruntime_library: Option<PathBuf>,
}

impl Default for NnConfig {
    fn default() -> Self {
        Self {
            max_load_bytes: 16 << 20,
            onnxruntime_library: None,
        }
    }
}

/// How to load one named model (`[model.<name>]`).
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub path: PathBuf,
    pub backend: BackendKind,
    pub target: Target,
    /// Whether a `gpu` model may run on the CPU when no GPU can be used.
    pub fallback_to_cpu: bool,
    pub batch: BatchConfig,
}

/// Loads a graph from ONNX bytes.
pub fn load_graph(
    bytes: &[u8],
    backend: BackendKind,
    target: Target,
    fallback_to_cpu: bool,
    config: &NnConfig,
) -> Result<Arc<dyn Graph>, NnError> {
    match (backend, target) {
        (BackendKind::Tract, Target::Cpu) => Ok(Arc::new(tract::TractGraph::load(bytes)?)),
        (BackendKind::Tract, Target::Gpu) if fallback_to_cpu => {
            tracing::warn!("the tract backend runs on the CPU only; running a gpu model there");
            Ok(Arc::new(tract::TractGraph::load(bytes)?))
        }
        (BackendKind::Tract, Target::Gpu) => Err(NnError::unsupported(
            "the tract backend runs on the CPU only: use backend = \"onnxruntime\" for target = \"gpu\", \
             or target = \"cpu\"",
        )),
        (BackendKind::Onnxruntime, target) => Ok(Arc::new(onnxruntime::OrtGraph::load(
            bytes,
            target,
            fallback_to_cpu,
            config.onnxruntime_library.as_deref(),
        )?)),
    }
}

/// A named model, shared by every instance granted it.
#[derive(Debug)]
pub struct Model {
    name: String,
    graph: Arc<dyn Graph>,
    queue: batch::Queue,
}

impl Model {
    /// A model served through a queue with `batch` settings. Needs a tokio runtime.
    pub fn new(name: impl Into<String>, graph: Arc<dyn Graph>, batch: BatchConfig) -> Arc<Self> {
        let name = name.into();
        let queue = batch::Queue::start(&name, graph.clone(), batch);
        Arc::new(Self { name, graph, queue })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn graph(&self) -> &Arc<dyn Graph> {
        &self.graph
    }

    pub fn stats(&self) -> &ModelStats {
        self.queue.stats()
    }

    /// Runs one inference for `function`: checks the inputs against the
    /// model, then waits for its turn in the model's queue.
    pub async fn compute(
        &self,
        function: &Arc<str>,
        inputs: Vec<(String, Tensor)>,
    ) -> Result<Vec<(String, Tensor)>, NnError> {
        let ordered = self.order_inputs(inputs)?;
        let outputs = self.queue.submit(function, ordered).await?;
        Ok(self.graph.outputs().iter().cloned().zip(outputs).collect())
    }

    /// Puts named inputs in the graph's order, checking each.
    fn order_inputs(&self, inputs: Vec<(String, Tensor)>) -> Result<Vec<Tensor>, NnError> {
        let specs = self.graph.inputs();
        if inputs.len() != specs.len() {
            return Err(NnError::invalid(format!(
                "model `{}` takes {} input(s) ({}), not {}",
                self.name,
                specs.len(),
                self.describe_inputs(),
                inputs.len()
            )));
        }
        let mut slots: Vec<Option<Tensor>> = vec![None; specs.len()];
        for (name, tensor) in inputs {
            // A single-input model accepts an unnamed tensor.
            let ix = match specs.iter().position(|s| s.name == name) {
                Some(ix) => ix,
                None if name.is_empty() && specs.len() == 1 => 0,
                None => {
                    return Err(NnError::invalid(format!(
                        "model `{}` has no input `{name}`; its inputs: {}",
                        self.name,
                        self.describe_inputs()
                    )));
                }
            };
            specs[ix].check(&self.name, &tensor)?;
            if slots[ix].replace(tensor).is_some() {
                return Err(NnError::invalid(format!(
                    "input `{}` of model `{}` is given twice",
                    specs[ix].name, self.name
                )));
            }
        }
        Ok(slots.into_iter().flatten().collect())
    }

    fn describe_inputs(&self) -> String {
        let inputs: Vec<String> = self
            .graph
            .inputs()
            .iter()
            .map(InputSpec::describe)
            .collect();
        inputs.join(", ")
    }
}

/// The node's models, by name.
#[derive(Debug, Clone, Default)]
pub struct Models {
    inner: Arc<ModelsInner>,
}

#[derive(Debug, Default)]
struct ModelsInner {
    models: BTreeMap<String, Arc<Model>>,
    config: NnConfig,
    placements: Vec<Placement>,
}

/// Where a model runs, against where it was asked to: `brink status` and
/// `brink_model_placement` say it, so a GPU→CPU fallback is never silent.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Placement {
    pub model: String,
    pub backend: String,
    /// `cpu` or `gpu`, as the manifest asked.
    pub requested: String,
    /// `cpu` or `cuda`, where it runs.
    pub device: String,
    /// Why a `gpu` model runs on the CPU.
    pub fallback: Option<String>,
}

impl Models {
    /// Loads every model once. Needs a tokio runtime (each model's queue is a task).
    pub fn load(models: &BTreeMap<String, ModelConfig>, config: NnConfig) -> anyhow::Result<Self> {
        let mut loaded = BTreeMap::new();
        let mut placements = Vec::new();
        for (name, model) in models {
            let started = std::time::Instant::now();
            let graph = load_model_file(&model.path, model, &config)
                .with_context(|| format!("loading model `{name}` from {}", model.path.display()))?;
            tracing::info!(
                model = name,
                backend = %model.backend,
                device = graph.device(),
                "model loaded in {:.1?}",
                started.elapsed()
            );
            placements.push(placement(name, model, graph.as_ref()));
            loaded.insert(name.clone(), Model::new(name, graph, model.batch.clone()));
        }
        Ok(Self {
            inner: Arc::new(ModelsInner {
                models: loaded,
                config,
                placements,
            }),
        })
    }

    /// The model called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Model>> {
        self.inner.models.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Model>> {
        self.inner.models.values()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.models.is_empty()
    }

    pub fn config(&self) -> &NnConfig {
        &self.inner.config
    }

    /// Where each model runs.
    pub fn placements(&self) -> &[Placement] {
        &self.inner.placements
    }
}

fn placement(name: &str, model: &ModelConfig, graph: &dyn Graph) -> Placement {
    let requested = match model.target {
        Target::Cpu => "cpu",
        Target::Gpu => "gpu",
    };
    let fallback = match (model.target, graph.device()) {
        (Target::Gpu, "cpu") => Some(graph.fallback().map_or_else(
            || format!("the {} backend runs on the CPU only", model.backend),
            str::to_owned,
        )),
        _ => None,
    };
    Placement {
        model: name.to_owned(),
        backend: model.backend.to_string(),
        requested: requested.to_owned(),
        device: graph.device().to_owned(),
        fallback,
    }
}

fn load_model_file(
    path: &Path,
    model: &ModelConfig,
    config: &NnConfig,
) -> anyhow::Result<Arc<dyn Graph>> {
    let bytes = std::fs::read(path).context("reading the model file")?;
    Ok(load_graph(
        &bytes,
        model.backend,
        model.target,
        model.fallback_to_cpu,
        config,
    )?)
}

/// Decodes little-endian elements of `N` bytes.
pub(crate) fn decode<T, const N: usize>(data: &[u8], from: impl Fn([u8; N]) -> T) -> Vec<T> {
    data.chunks_exact(N)
        .map(|c| {
            let mut bytes = [0; N];
            bytes.copy_from_slice(c);
            from(bytes)
        })
        .collect()
}

/// The duration as whole microseconds, saturating.
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tensor_whose_data_does_not_match_its_dimensions_is_refused() {
        let err = Tensor::new(vec![2, 3], ElementType::F32, vec![0; 20]).err();
        assert_eq!(
            err.as_ref().map(|e| e.code),
            Some(ErrorCode::InvalidArgument)
        );
        assert!(
            err.is_some_and(|e| e.message.contains("20 bytes") && e.message.contains("need 24")),
        );
        assert!(Tensor::new(vec![2, 3], ElementType::F32, vec![0; 24]).is_ok());
    }

    #[test]
    fn tensor_dimensions_that_overflow_are_refused_not_wrapped() {
        let err = Tensor::new(vec![u32::MAX, u32::MAX, u32::MAX], ElementType::F64, vec![]).err();
        assert!(err.is_some_and(|e| e.message.contains("too large")));
    }

    #[test]
    fn f32_tensors_round_trip_little_endian() {
        let t = Tensor::from_f32(vec![3], &[1.5, -2.0, 0.25]);
        assert_eq!(t.ok().and_then(|t| t.to_f32()), Some(vec![1.5, -2.0, 0.25]));
    }

    #[test]
    fn an_input_with_an_open_batch_dimension_takes_any_positive_batch() {
        let spec = InputSpec {
            name: "x".into(),
            ty: ElementType::F32,
            dims: vec![None, Some(2)],
        };
        let ok = Tensor::from_f32(vec![3, 2], &[0.0; 6]);
        assert!(ok.is_ok_and(|t| spec.check("m", &t).is_ok()));
        let wrong_width = Tensor::from_f32(vec![3, 3], &[0.0; 9]);
        let err = wrong_width.and_then(|t| spec.check("m", &t)).err();
        assert!(err.is_some_and(|e| {
            e.message
                .contains("takes input x fp32[?, 2], not fp32[3, 3]")
        }));
        let empty = Tensor::from_f32(vec![0, 2], &[]);
        assert!(empty.and_then(|t| spec.check("m", &t)).is_err());
        let wrong_type = Tensor::new(vec![1, 2], ElementType::I32, vec![0; 8]);
        assert!(wrong_type.and_then(|t| spec.check("m", &t)).is_err());
    }
}
