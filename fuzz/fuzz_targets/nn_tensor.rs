//! Tensors handed to wasi:nn: dimensions, element type and bytes, checked
//! against a model's inputs before anything runs. Properties: `Tensor::new`
//! accepts exactly the byte length the dimensions and type need (and never
//! overflows); `compute` on the digits model (tract) and on a two-input
//! model with open dimensions either refuses the inputs with an error or
//! runs them; never a panic, never a run on inputs that do not fit.
#![no_main]

use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use brink_host::nn::{
    BackendKind, BatchConfig, ElementType, Graph, InputSpec, Model, NnConfig, NnError, Target,
    Tensor, load_graph,
};
use libfuzzer_sys::fuzz_target;

/// Every element type `wasi:nn` names; a tensor picks one by index.
const TYPES: [ElementType; 7] = [
    ElementType::F16,
    ElementType::F32,
    ElementType::F64,
    ElementType::Bf16,
    ElementType::U8,
    ElementType::I32,
    ElementType::I64,
];

#[derive(Debug, Arbitrary)]
struct AnyTensor {
    name: u8,
    dims: Vec<u32>,
    ty: u8,
    /// Bytes as sent, or (None) exactly what the dimensions need.
    data: Option<Vec<u8>>,
}

#[derive(Debug, Arbitrary)]
struct Input {
    digits: bool,
    tensors: Vec<AnyTensor>,
}

/// Two inputs with open dimensions; returns what it was given.
#[derive(Debug)]
struct Echo {
    inputs: Vec<InputSpec>,
    outputs: Vec<String>,
}

impl Graph for Echo {
    fn inputs(&self) -> &[InputSpec] {
        &self.inputs
    }
    fn outputs(&self) -> &[String] {
        &self.outputs
    }
    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, NnError> {
        for (tensor, spec) in inputs.iter().zip(&self.inputs) {
            assert_eq!(tensor.ty(), spec.ty, "ran on an input of the wrong type");
            assert_eq!(
                tensor.dims().len(),
                spec.dims.len(),
                "ran on an input of the wrong rank"
            );
        }
        Ok(inputs)
    }
    fn device(&self) -> &'static str {
        "cpu"
    }
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    digits: Arc<Model>,
    echo: Arc<Model>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => panic!("runtime: {e}"),
        };
        let onnx = include_bytes!("../../examples/digits/digits.onnx");
        let graph = match load_graph(
            onnx,
            BackendKind::Tract,
            Target::Cpu,
            false,
            &NnConfig::default(),
        ) {
            Ok(graph) => graph,
            Err(e) => panic!("digits model: {e}"),
        };
        let echo = Arc::new(Echo {
            inputs: vec![
                InputSpec {
                    name: "a".into(),
                    ty: ElementType::F32,
                    dims: vec![None, Some(3)],
                },
                InputSpec {
                    name: "b".into(),
                    ty: ElementType::U8,
                    dims: vec![Some(2), None],
                },
            ],
            outputs: vec!["a".into(), "b".into()],
        });
        let (digits, echo) = runtime.block_on(async {
            (
                Model::new("digits", graph, BatchConfig::default()),
                Model::new("echo", echo, BatchConfig::default()),
            )
        });
        Fixture {
            runtime,
            digits,
            echo,
        }
    })
}

const NAMES: &[&str] = &["", "a", "b", "input", "float_input", "x"];

fuzz_target!(|input: Input| {
    let mut named = Vec::new();
    for t in input.tensors.iter().take(4) {
        let ty = TYPES[usize::from(t.ty) % TYPES.len()];
        let need = t
            .dims
            .iter()
            .try_fold(ty.size(), |n, d| n.checked_mul(*d as usize));
        // Never build more than 64 KiB of fuzz data.
        let data = match &t.data {
            Some(data) => data.clone(),
            None => match need {
                Some(n) if n <= 1 << 16 => vec![0; n],
                _ => continue,
            },
        };
        let len = data.len();
        match Tensor::new(t.dims.clone(), ty, data) {
            Ok(tensor) => {
                assert_eq!(
                    need,
                    Some(len),
                    "accepted {len} bytes for {:?} {ty}",
                    t.dims
                );
                named.push((NAMES[usize::from(t.name) % NAMES.len()].to_owned(), tensor));
            }
            Err(_) => assert!(need != Some(len) || t.dims.len() > 16),
        }
    }
    let fixture = fixture();
    let model = if input.digits {
        &fixture.digits
    } else {
        &fixture.echo
    };
    let function: Arc<str> = Arc::from("fuzz");
    let _ = fixture.runtime.block_on(model.compute(&function, named));
});
