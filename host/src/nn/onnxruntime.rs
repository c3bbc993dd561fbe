//! The ONNX Runtime backend, on the CPU or a CUDA GPU.
//!
//! The library is loaded at run time (the `ort` crate's `load-dynamic`), so
//! the host builds and runs without it and nothing downloads at build time.
//! It is found at `[nn] onnxruntime = "..."` or `ORT_DYLIB_PATH`; pip's
//! `onnxruntime` wheel ships it as `onnxruntime/capi/libonnxruntime.so.*`
//! and `onnxruntime-gpu` adds the CUDA provider beside it.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::ep;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, TensorElementType, ValueType};

use super::{ElementType, Graph, InputSpec, NnError, Target, Tensor, decode};

/// The process's one ONNX Runtime environment, or why there is none.
static ENVIRONMENT: OnceLock<Result<(PathBuf, Environment), String>> = OnceLock::new();

/// Loads the library once per process.
fn environment(library: Option<&Path>) -> Result<&'static Environment, NnError> {
    let loaded = ENVIRONMENT.get_or_init(|| {
        let path = match library {
            Some(path) => path.to_owned(),
            None => match std::env::var_os("ORT_DYLIB_PATH") {
                Some(path) if !path.is_empty() => PathBuf::from(path),
                _ => {
                    return Err("the onnxruntime backend needs the ONNX Runtime library, and none \
                        is configured: set ORT_DYLIB_PATH or `[nn] onnxruntime = \"/path/to/libonnxruntime.so\"` \
                        (pip's `onnxruntime` wheel ships it in site-packages/onnxruntime/capi/)"
                        .to_owned());
                }
            },
        };
        // `ort` resolves a relative path against the executable's folder and
        // panics where that has none; an absolute path avoids both.
        let path = std::fs::canonicalize(&path).map_err(|e| {
            format!("the ONNX Runtime library {} cannot be used: {e}", path.display())
        })?;
        let builder = ort::init_from(&path)
            .map_err(|e| format!("loading ONNX Runtime from {}: {e}", path.display()))?;
        let environment = builder
            .with_name("brink")
            .with_telemetry(false)
            .build()
            .map_err(|e| format!("starting ONNX Runtime from {}: {e}", path.display()))?;
        tracing::info!(library = %path.display(), "ONNX Runtime loaded");
        Ok((path, environment))
    });
    match loaded {
        Ok((_, environment)) => Ok(environment),
        Err(why) => Err(NnError::unsupported(why.clone())),
    }
}

/// The loaded library and its execution providers; `None` when this
/// process has not tried to load it, `Some(Err)` when loading failed.
pub fn loaded() -> Option<Result<(String, Vec<String>), String>> {
    use ort::ep::ExecutionProvider as _;
    let loaded = ENVIRONMENT.get()?;
    Some(match loaded {
        Ok((path, _)) => {
            // The two providers the host can use (the `cpu` and `gpu` targets).
            let providers = [
                ("CPUExecutionProvider", ep::CPU::is_available()),
                ("CUDAExecutionProvider", ep::CUDA::is_available()),
            ]
            .into_iter()
            .filter(|(_, available)| matches!(available, Ok(true)))
            .map(|(name, _)| name.to_owned())
            .collect();
            Ok((path.display().to_string(), providers))
        }
        Err(why) => Err(why.clone()),
    })
}

/// A model in an ONNX Runtime session.
pub struct OrtGraph {
    // `Session::run` takes `&mut self`; the model's queue already bounds how
    // many runs there are at once, so a lock is all it needs.
    session: Mutex<Session>,
    inputs: Vec<InputSpec>,
    outputs: Vec<String>,
    device: &'static str,
    /// Why a `gpu` model runs on the CPU, where it does.
    fallback: Option<String>,
}

impl std::fmt::Debug for OrtGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtGraph")
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

fn element_type(ty: TensorElementType) -> Option<ElementType> {
    Some(match ty {
        TensorElementType::Float16 => ElementType::F16,
        TensorElementType::Float32 => ElementType::F32,
        TensorElementType::Float64 => ElementType::F64,
        TensorElementType::Bfloat16 => ElementType::Bf16,
        TensorElementType::Uint8 => ElementType::U8,
        TensorElementType::Int32 => ElementType::I32,
        TensorElementType::Int64 => ElementType::I64,
        _ => return None,
    })
}

fn ort_error(what: &str) -> impl Fn(ort::Error) -> NnError + '_ {
    move |e| NnError::runtime(format!("{what}: {e}"))
}

impl OrtGraph {
    /// Creates a session for ONNX bytes on `target`.
    pub fn load(
        bytes: &[u8],
        target: Target,
        fallback_to_cpu: bool,
        library: Option<&Path>,
    ) -> Result<Self, NnError> {
        let environment = environment(library)?;
        let (session, device, fallback) = match target {
            Target::Cpu => (session(environment, bytes, false)?, "cpu", None),
            Target::Gpu => match session(environment, bytes, true) {
                Ok(session) => (session, "cuda", None),
                Err(e) if fallback_to_cpu => {
                    tracing::warn!(error = %e, "no CUDA for a gpu model; running it on the CPU");
                    (
                        session(environment, bytes, false)?,
                        "cpu",
                        Some(e.to_string()),
                    )
                }
                Err(e) => return Err(e),
            },
        };
        let mut inputs = Vec::new();
        for outlet in session.inputs() {
            let ValueType::Tensor { ty, shape, .. } = outlet.dtype() else {
                return Err(NnError::unsupported(format!(
                    "input `{}` is not a tensor",
                    outlet.name()
                )));
            };
            let ty = element_type(*ty).ok_or_else(|| {
                NnError::unsupported(format!(
                    "input `{}` has element type {ty:?}, which wasi:nn cannot pass",
                    outlet.name()
                ))
            })?;
            inputs.push(InputSpec {
                name: outlet.name().to_owned(),
                ty,
                dims: shape.iter().map(|d| u64::try_from(*d).ok()).collect(),
            });
        }
        let outputs = session
            .outputs()
            .iter()
            .map(|o| o.name().to_owned())
            .collect();
        Ok(Self {
            session: Mutex::new(session),
            inputs,
            outputs,
            device,
            fallback,
        })
    }
}

fn session(environment: &Environment, bytes: &[u8], cuda: bool) -> Result<Session, NnError> {
    let builder = Session::builder(environment).map_err(ort_error("ONNX Runtime session"))?;
    let builder = if cuda {
        builder
            .with_execution_providers([ep::CUDA::default().build().error_on_failure()])
            .map_err(|e| {
                NnError::new(
                    super::ErrorCode::UnsupportedOperation,
                    format!(
                        "target = \"gpu\" needs ONNX Runtime's CUDA execution provider, which did not start: {e}. \
                         The library must be a CUDA build (pip's `onnxruntime-gpu`, with \
                         libonnxruntime_providers_cuda.so beside it), and the CUDA and cuDNN libraries it was \
                         built for must be loadable (LD_LIBRARY_PATH); or set fallback = \"cpu\" on the model"
                    ),
                )
            })?
    } else {
        builder
    };
    let mut builder = builder;
    builder.commit_from_memory(bytes).map_err(|e| {
        NnError::new(
            super::ErrorCode::InvalidEncoding,
            format!("not an ONNX model ONNX Runtime can load: {e}"),
        )
    })
}

fn to_value(tensor: Tensor) -> Result<DynValue, NnError> {
    let shape: Vec<i64> = tensor.dims().iter().map(|d| i64::from(*d)).collect();
    let ty = tensor.ty();
    let data = tensor.into_data();
    let made = match ty {
        ElementType::F32 => {
            ort::value::Tensor::from_array((shape, decode(&data, f32::from_le_bytes)))
                .map(|t| t.into_dyn())
        }
        ElementType::F64 => {
            ort::value::Tensor::from_array((shape, decode(&data, f64::from_le_bytes)))
                .map(|t| t.into_dyn())
        }
        ElementType::I32 => {
            ort::value::Tensor::from_array((shape, decode(&data, i32::from_le_bytes)))
                .map(|t| t.into_dyn())
        }
        ElementType::I64 => {
            ort::value::Tensor::from_array((shape, decode(&data, i64::from_le_bytes)))
                .map(|t| t.into_dyn())
        }
        ElementType::U8 => ort::value::Tensor::from_array((shape, data)).map(|t| t.into_dyn()),
        ElementType::F16 | ElementType::Bf16 => {
            return Err(NnError::unsupported(format!(
                "the onnxruntime backend does not take {ty} tensors yet"
            )));
        }
    };
    made.map_err(ort_error("making an input tensor"))
}

fn from_value(value: &DynValue) -> Result<Tensor, NnError> {
    fn make<T: ort::value::PrimitiveTensorElementType + Copy, const N: usize>(
        value: &DynValue,
        ty: ElementType,
        bytes: impl Fn(T) -> [u8; N],
    ) -> Result<Tensor, NnError> {
        let (shape, data) = value
            .try_extract_tensor::<T>()
            .map_err(ort_error("reading an output"))?;
        let dims = shape
            .iter()
            .map(|d| u32::try_from(*d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| NnError::runtime("an output dimension does not fit in u32"))?;
        Tensor::new(dims, ty, data.iter().flat_map(|v| bytes(*v)).collect())
    }
    match value.dtype() {
        ValueType::Tensor { ty, .. } => match element_type(*ty) {
            Some(ElementType::F32) => make(value, ElementType::F32, f32::to_le_bytes),
            Some(ElementType::F64) => make(value, ElementType::F64, f64::to_le_bytes),
            Some(ElementType::I32) => make(value, ElementType::I32, i32::to_le_bytes),
            Some(ElementType::I64) => make(value, ElementType::I64, i64::to_le_bytes),
            Some(ElementType::U8) => make(value, ElementType::U8, |v: u8| [v]),
            _ => Err(NnError::unsupported(format!(
                "the model returned a {ty:?} tensor, which this backend cannot pass back"
            ))),
        },
        other => Err(NnError::unsupported(format!(
            "the model returned a {other:?}, not a tensor"
        ))),
    }
}

impl Graph for OrtGraph {
    fn inputs(&self) -> &[InputSpec] {
        &self.inputs
    }

    fn outputs(&self) -> &[String] {
        &self.outputs
    }

    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, NnError> {
        let named: Vec<(String, SessionInputValue<'_>)> = self
            .inputs
            .iter()
            .zip(inputs)
            .map(|(spec, t)| to_value(t).map(|v| (spec.name.clone(), SessionInputValue::from(v))))
            .collect::<Result<_, _>>()?;
        let mut session = self
            .session
            .lock()
            .map_err(|_| NnError::runtime("an earlier run of this model panicked"))?;
        let outputs = session.run(named).map_err(ort_error("onnxruntime"))?;
        self.outputs
            .iter()
            .map(|name| {
                outputs
                    .get(name)
                    .ok_or_else(|| NnError::runtime(format!("the model did not return `{name}`")))
                    .and_then(from_value)
            })
            .collect()
    }

    fn device(&self) -> &'static str {
        self.device
    }

    fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The library, where this machine has one. CI installs pip's
    /// `onnxruntime` and sets `BRINK_REQUIRE_ONNXRUNTIME=1`, so there a
    /// missing library fails the test instead of skipping it.
    fn library() -> Option<PathBuf> {
        let path = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from);
        if path.is_none() {
            assert!(
                std::env::var_os("BRINK_REQUIRE_ONNXRUNTIME").is_none(),
                "BRINK_REQUIRE_ONNXRUNTIME is set but ORT_DYLIB_PATH is not"
            );
            eprintln!("skipped: no ONNX Runtime library (set ORT_DYLIB_PATH to run this test)");
        }
        path
    }

    fn digits() -> Vec<u8> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/digits/digits.onnx"
        );
        std::fs::read(path).unwrap_or_default()
    }

    #[test]
    fn onnxruntime_runs_the_digits_model_on_the_cpu_like_tract() -> Result<(), NnError> {
        let Some(library) = library() else {
            return Ok(());
        };
        let graph = OrtGraph::load(&digits(), Target::Cpu, false, Some(&library))?;
        assert_eq!(graph.inputs()[0].dims, vec![None, Some(64)]);
        let input = Tensor::from_f32(
            vec![2, 64],
            &(0..128).map(|i| (i % 17) as f32).collect::<Vec<_>>(),
        )?;
        let ort = graph.run(vec![input.clone()])?;
        let tract = super::super::tract::TractGraph::load(&digits())?.run(vec![input])?;
        assert_eq!(ort[0].dims(), &[2, 10]);
        let (a, b) = (
            ort[0].to_f32().unwrap_or_default(),
            tract[0].to_f32().unwrap_or_default(),
        );
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-4, "onnxruntime {a:?} vs tract {b:?}");
        }
        Ok(())
    }

    #[test]
    fn onnxruntime_refuses_bytes_that_are_not_a_model() {
        let Some(library) = library() else {
            return;
        };
        let err = OrtGraph::load(b"not a model", Target::Cpu, false, Some(&library)).err();
        assert_eq!(
            err.map(|e| e.code),
            Some(super::super::ErrorCode::InvalidEncoding)
        );
    }
}
