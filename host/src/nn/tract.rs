//! The default backend: tract-onnx, pure Rust on the CPU, nothing to install.

use tract_onnx::prelude::{
    DatumType, Framework as _, InferenceModelExt as _, IntoRunnable as _, TValue,
    Tensor as TractTensor, TypedRunnableModel,
};
use tract_onnx::tract_core::prelude::f16;

use super::{ElementType, Graph, InputSpec, NnError, Tensor, decode};

/// A model optimised and planned by tract.
pub struct TractGraph {
    plan: std::sync::Arc<TypedRunnableModel>,
    inputs: Vec<InputSpec>,
    outputs: Vec<String>,
}

impl std::fmt::Debug for TractGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TractGraph")
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

fn element_type(dt: DatumType) -> Option<ElementType> {
    Some(match dt {
        DatumType::F16 => ElementType::F16,
        DatumType::F32 => ElementType::F32,
        DatumType::F64 => ElementType::F64,
        DatumType::U8 => ElementType::U8,
        DatumType::I32 => ElementType::I32,
        DatumType::I64 => ElementType::I64,
        _ => return None,
    })
}

impl TractGraph {
    /// Parses, optimises and plans ONNX bytes.
    pub fn load(bytes: &[u8]) -> Result<Self, NnError> {
        let model = tract_onnx::onnx()
            .model_for_read(&mut &bytes[..])
            .map_err(|e| {
                NnError::new(
                    super::ErrorCode::InvalidEncoding,
                    format!("not an ONNX model tract can read: {e:#}"),
                )
            })?;
        let unsupported = |e: tract_onnx::prelude::TractError| {
            NnError::unsupported(format!("tract cannot run this ONNX model: {e:#}"))
        };
        let outputs = model
            .output_outlets()
            .map_err(unsupported)?
            .iter()
            .map(|o| {
                model
                    .outlet_label(*o)
                    .map_or_else(|| model.node(o.node).name.clone(), str::to_owned)
            })
            .collect();
        let typed = model.into_optimized().map_err(unsupported)?;
        let mut inputs = Vec::new();
        for (ix, outlet) in typed
            .input_outlets()
            .map_err(unsupported)?
            .iter()
            .enumerate()
        {
            let fact = typed.input_fact(ix).map_err(unsupported)?;
            let ty = element_type(fact.datum_type).ok_or_else(|| {
                NnError::unsupported(format!(
                    "input {ix} has element type {:?}, which wasi:nn cannot pass",
                    fact.datum_type
                ))
            })?;
            inputs.push(InputSpec {
                name: typed.node(outlet.node).name.clone(),
                ty,
                dims: fact
                    .shape
                    .iter()
                    .map(|d| d.to_i64().ok().and_then(|d| u64::try_from(d).ok()))
                    .collect(),
            });
        }
        let plan = typed.into_runnable().map_err(unsupported)?;
        Ok(Self {
            plan,
            inputs,
            outputs,
        })
    }
}

fn to_tract(tensor: Tensor) -> Result<TractTensor, NnError> {
    let shape: Vec<usize> = tensor.dims().iter().map(|d| *d as usize).collect();
    let data = tensor.data();
    let made = match tensor.ty() {
        ElementType::F32 => TractTensor::from_shape(&shape, &decode(data, f32::from_le_bytes)),
        ElementType::F64 => TractTensor::from_shape(&shape, &decode(data, f64::from_le_bytes)),
        ElementType::I32 => TractTensor::from_shape(&shape, &decode(data, i32::from_le_bytes)),
        ElementType::I64 => TractTensor::from_shape(&shape, &decode(data, i64::from_le_bytes)),
        ElementType::U8 => TractTensor::from_shape(&shape, data),
        ElementType::F16 => TractTensor::from_shape(
            &shape,
            &decode(data, |b: [u8; 2]| f16::from_bits(u16::from_le_bytes(b))),
        ),
        ElementType::Bf16 => {
            return Err(NnError::unsupported(
                "the tract backend does not take bf16 tensors",
            ));
        }
    };
    made.map_err(|e| NnError::invalid(format!("{e:#}")))
}

fn from_tract(value: &TValue) -> Result<Tensor, NnError> {
    let ty = element_type(value.datum_type()).ok_or_else(|| {
        NnError::unsupported(format!(
            "the model returned element type {:?}, which wasi:nn cannot pass",
            value.datum_type()
        ))
    })?;
    let dims = value
        .shape()
        .iter()
        .map(|d| u32::try_from(*d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| NnError::runtime("an output dimension does not fit in u32"))?;
    let view = value
        .try_as_plain_ram()
        .map_err(|e| NnError::runtime(format!("{e:#}")))?;
    let bytes = view.as_bytes();
    // wasi:nn tensors are little-endian; tract holds native order.
    let data = if cfg!(target_endian = "little") {
        bytes.to_vec()
    } else {
        bytes
            .chunks_exact(ty.size())
            .flat_map(|c| c.iter().rev().copied())
            .collect()
    };
    Tensor::new(dims, ty, data)
}

impl Graph for TractGraph {
    fn inputs(&self) -> &[InputSpec] {
        &self.inputs
    }

    fn outputs(&self) -> &[String] {
        &self.outputs
    }

    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, NnError> {
        let inputs = inputs
            .into_iter()
            .map(|t| to_tract(t).map(TValue::from))
            .collect::<Result<Vec<_>, _>>()?;
        let outputs = self
            .plan
            .run(inputs.into_iter().collect::<tract_onnx::prelude::TVec<_>>())
            .map_err(|e| NnError::runtime(format!("tract: {e:#}")))?;
        outputs.iter().map(from_tract).collect()
    }

    fn device(&self) -> &'static str {
        "cpu"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ErrorCode;

    fn digits() -> Vec<u8> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/digits/digits.onnx"
        );
        std::fs::read(path).unwrap_or_default()
    }

    #[test]
    fn the_digits_model_loads_with_an_open_batch_dimension() {
        let graph = TractGraph::load(&digits());
        let graph = graph.as_ref().map_err(|e| e.message.clone());
        assert_eq!(
            graph.map(|g| (g.inputs().to_vec(), g.outputs().to_vec())),
            Ok((
                vec![InputSpec {
                    name: "pixels".into(),
                    ty: ElementType::F32,
                    dims: vec![None, Some(64)],
                }],
                vec!["probabilities".to_owned()],
            ))
        );
    }

    #[test]
    fn a_batch_of_rows_gives_one_probability_row_each() -> Result<(), NnError> {
        let graph = TractGraph::load(&digits())?;
        let out = graph.run(vec![Tensor::from_f32(vec![3, 64], &[8.0; 192])?])?;
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].dims(), &[3, 10]);
        let probabilities = out[0].to_f32().unwrap_or_default();
        for row in probabilities.chunks(10) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-4, "{row:?}");
        }
        Ok(())
    }

    #[test]
    fn bytes_that_are_not_onnx_fail_to_load_as_an_invalid_encoding() {
        let err = TractGraph::load(b"this is not a model").err();
        assert_eq!(
            err.as_ref().map(|e| e.code),
            Some(ErrorCode::InvalidEncoding)
        );
        assert!(err.is_some_and(|e| e.message.contains("not an ONNX model")));
    }
}
