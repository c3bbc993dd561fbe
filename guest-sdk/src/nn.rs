//! Inference through the standard `wasi:nn`: the host owns the models and
//! the accelerator, and shares both between functions (batching concurrent
//! calls on the same model).
//!
//! Models are granted per function in the manifest (`models = ["digits"]`)
//! and opened by name:
//!
//! ```no_run
//! use brink_sdk::nn::{Model, Tensor};
//! # fn main() -> brink_sdk::Result<()> {
//! let model = Model::open("digits")?;
//! let pixels = [0.0f32; 64];
//! let outputs = model.infer(&[("pixels", Tensor::f32(&[1, 64], &pixels)?)])?;
//! let probabilities = outputs.f32("probabilities")?;
//! # let _ = probabilities;
//! # Ok(())
//! # }
//! ```

use crate::bindings::wasi::nn::errors::{Error as RawError, ErrorCode};
use crate::bindings::wasi::nn::graph::{self, Graph};
use crate::bindings::wasi::nn::inference::GraphExecutionContext;
use crate::bindings::wasi::nn::tensor::{Tensor as RawTensor, TensorType};
use crate::{Error, Result};

/// A tensor to pass to a model: dimensions, element type and little-endian data.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    dims: Vec<u32>,
    ty: TensorType,
    data: Vec<u8>,
}

impl Tensor {
    /// An `f32` tensor of shape `dims` from `values` in row-major order.
    pub fn f32(dims: &[u32], values: &[f32]) -> Result<Self> {
        Self::check(dims, values.len())?;
        Ok(Self {
            dims: dims.to_vec(),
            ty: TensorType::Fp32,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        })
    }

    /// An `i64` tensor of shape `dims`.
    pub fn i64(dims: &[u32], values: &[i64]) -> Result<Self> {
        Self::check(dims, values.len())?;
        Ok(Self {
            dims: dims.to_vec(),
            ty: TensorType::I64,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        })
    }

    /// A `u8` tensor of shape `dims` (image bytes, say).
    pub fn u8(dims: &[u32], values: &[u8]) -> Result<Self> {
        Self::check(dims, values.len())?;
        Ok(Self {
            dims: dims.to_vec(),
            ty: TensorType::U8,
            data: values.to_vec(),
        })
    }

    /// A tensor from raw parts, unchecked: the host checks it when it is used.
    pub fn from_raw(dims: Vec<u32>, ty: TensorType, data: Vec<u8>) -> Self {
        Self { dims, ty, data }
    }

    fn check(dims: &[u32], len: usize) -> Result<()> {
        let elements = dims
            .iter()
            .try_fold(1usize, |n, d| n.checked_mul(*d as usize));
        if elements == Some(len) {
            Ok(())
        } else {
            Err(Error::internal(format!(
                "a tensor of dimensions {dims:?} needs {} values, not {len}",
                elements.map_or_else(|| "too many".to_owned(), |n| n.to_string())
            )))
        }
    }

    /// Its dimensions.
    pub fn dims(&self) -> &[u32] {
        &self.dims
    }

    /// Its element type.
    pub fn ty(&self) -> TensorType {
        self.ty
    }

    /// Its data, little-endian.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Its values, for an `f32` tensor.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        if self.ty != TensorType::Fp32 {
            return Err(Error::internal(format!(
                "the tensor holds {:?}, not f32",
                self.ty
            )));
        }
        Ok(self
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn to_raw(&self) -> RawTensor {
        RawTensor::new(&self.dims, self.ty, &self.data)
    }

    fn from_raw_tensor(raw: &RawTensor) -> Self {
        Self {
            dims: raw.dimensions(),
            ty: raw.ty(),
            data: raw.data(),
        }
    }
}

/// A model's outputs, by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Outputs(Vec<(String, Tensor)>);

impl Outputs {
    /// The output called `name`.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| {
                let names: Vec<&str> = self.0.iter().map(|(n, _)| n.as_str()).collect();
                Error::internal(format!(
                    "the model has no output `{name}`; it has: {}",
                    names.join(", ")
                ))
            })
    }

    /// The values of the `f32` output called `name`.
    pub fn f32(&self, name: &str) -> Result<Vec<f32>> {
        self.get(name)?.to_f32()
    }

    /// Every output, in the model's order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.0.iter().map(|(n, t)| (n.as_str(), t))
    }
}

/// A `wasi:nn` failure: its code and the host's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NnError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// Why, in the host's words.
    pub message: String,
}

impl std::fmt::Display for NnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "wasi:nn {:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for NnError {}

impl From<RawError> for NnError {
    fn from(e: RawError) -> Self {
        Self {
            code: e.code(),
            message: e.data(),
        }
    }
}

impl From<NnError> for Error {
    /// A full queue or a runtime failure may pass on retry; a refused or
    /// malformed request will not.
    fn from(e: NnError) -> Self {
        match e.code {
            ErrorCode::RuntimeError | ErrorCode::Timeout => Error::transient(e.to_string()),
            _ => Error::internal(e.to_string()),
        }
    }
}

/// A model opened for inference.
#[derive(Debug)]
pub struct Model {
    // Kept so the host-side model outlives the context.
    _graph: Graph,
    context: GraphExecutionContext,
}

impl Model {
    /// Opens the model the host calls `name` (granted in the manifest).
    pub fn open(name: &str) -> core::result::Result<Self, NnError> {
        let graph = graph::load_by_name(name)?;
        Self::from_graph(graph)
    }

    /// Loads an ONNX model from bytes (needs `load_models = true`).
    pub fn load_onnx(bytes: &[u8], gpu: bool) -> core::result::Result<Self, NnError> {
        let target = if gpu {
            graph::ExecutionTarget::Gpu
        } else {
            graph::ExecutionTarget::Cpu
        };
        let graph = graph::load(&[bytes.to_vec()], graph::GraphEncoding::Onnx, target)?;
        Self::from_graph(graph)
    }

    fn from_graph(graph: Graph) -> core::result::Result<Self, NnError> {
        let context = graph.init_execution_context()?;
        Ok(Self {
            _graph: graph,
            context,
        })
    }

    /// Runs one inference on named inputs.
    pub fn infer(&self, inputs: &[(&str, Tensor)]) -> core::result::Result<Outputs, NnError> {
        let raw: Vec<(String, RawTensor)> = inputs
            .iter()
            .map(|(name, t)| ((*name).to_owned(), t.to_raw()))
            .collect();
        let outputs = self.context.compute(raw)?;
        Ok(Outputs(
            outputs
                .iter()
                .map(|(name, t)| (name.clone(), Tensor::from_raw_tensor(t)))
                .collect(),
        ))
    }
}

/// The index and value of the largest of `values` (the predicted class of a
/// row of probabilities or logits); `None` for an empty slice or NaNs only.
pub fn argmax(values: &[f32]) -> Option<(usize, f32)> {
    values
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, v)| !v.is_nan())
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tensor_needs_as_many_values_as_its_dimensions_say() {
        assert!(Tensor::f32(&[2, 3], &[0.0; 6]).is_ok());
        assert!(Tensor::f32(&[2, 3], &[0.0; 5]).is_err());
        assert!(Tensor::f32(&[u32::MAX, u32::MAX, u32::MAX], &[]).is_err());
    }

    #[test]
    fn f32_tensors_are_little_endian_and_read_back() -> Result<()> {
        let t = Tensor::f32(&[2], &[1.0, -0.5])?;
        assert_eq!(t.data(), &[0, 0, 128, 63, 0, 0, 0, 191]);
        assert_eq!(t.to_f32()?, vec![1.0, -0.5]);
        assert!(Tensor::u8(&[1], &[7])?.to_f32().is_err());
        Ok(())
    }

    #[test]
    fn argmax_picks_the_largest_and_ignores_nan() {
        assert_eq!(argmax(&[0.1, 0.7, 0.2]), Some((1, 0.7)));
        assert_eq!(argmax(&[f32::NAN, 0.3]), Some((1, 0.3)));
        assert_eq!(argmax(&[]), None);
    }
}
