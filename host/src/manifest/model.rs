//! `[nn]` and `[model.<name>]`: inference settings and the models a node loads.

use std::path::PathBuf;

use serde::Deserialize;

use super::error::{Invalid, above_zero, check_name};
pub use crate::nn::{BackendKind, Target};

/// `[nn]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NnSection {
    /// `max_load_mb = 16`: the largest model a function granted
    /// `load_models` may load from bytes, in MiB.
    pub max_load_mb: Option<usize>,
    /// `onnxruntime = "/opt/onnxruntime/lib/libonnxruntime.so"`: the ONNX
    /// Runtime library for `backend = "onnxruntime"`, relative to the
    /// manifest; default `ORT_DYLIB_PATH`.
    pub onnxruntime: Option<PathBuf>,
}

/// What a `gpu` model does where no GPU can be used: `fallback = "cpu"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    Cpu,
}

/// `[model.<name>]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// `path = "models/digits.onnx"`: the ONNX file, relative to the manifest.
    pub path: PathBuf,
    /// `backend = "tract"` (pure Rust, CPU; the default) or `"onnxruntime"`
    /// (CPU or CUDA; needs the ONNX Runtime library, see `[nn] onnxruntime`).
    #[serde(default)]
    pub backend: BackendKind,
    /// `target = "cpu"` (the default) or `"gpu"` (onnxruntime with CUDA).
    #[serde(default)]
    pub target: Target,
    /// `fallback = "cpu"`: run a `gpu` model on the CPU where CUDA cannot
    /// start, instead of refusing to start.
    pub fallback: Option<Fallback>,
    /// `max_batch = 32`: most rows one run joins from concurrent callers;
    /// 1 turns batching off.
    pub max_batch: Option<usize>,
    /// `max_wait_us = 0`: how long the oldest waiting call waits for others
    /// to join its batch. 0 joins only the calls already waiting when a run
    /// slot frees up, which adds no latency.
    pub max_wait_us: Option<u64>,
    /// `max_queue = 1024`: most calls waiting; past it `compute` fails at once.
    pub max_queue: Option<usize>,
    /// `parallelism = 2`: runs of this model at once; default the CPU count
    /// on the CPU, 1 on a GPU.
    pub parallelism: Option<usize>,
    /// `inline_max_us = 200`: while the model's mean run takes at most this
    /// long, runs skip the hand-off to the blocking pool (a call that finds
    /// the queue empty and a slot free runs on the calling thread; queued
    /// batches run on the queue's task); 0 always hands runs off.
    pub inline_max_us: Option<u64>,
}

impl NnSection {
    pub(super) fn check(&self) -> Result<(), Invalid> {
        above_zero("nn.", &[("max_load_mb", self.max_load_mb == Some(0))])
    }
}

impl ModelSection {
    /// Checks `[model.<name>]`.
    pub(super) fn check(&self, name: &str) -> Result<(), Invalid> {
        check_name("model name", name)?;
        if self.backend == BackendKind::Tract
            && self.target == Target::Gpu
            && self.fallback.is_none()
        {
            let at = format!("model.{name}.target");
            return Err(Invalid::at(
                at.clone(),
                format!(
                    "{at}: the tract backend runs on the CPU only; use backend = \"onnxruntime\" for a GPU, \
                     or fallback = \"cpu\""
                ),
            ));
        }
        above_zero(
            &format!("model.{name}."),
            &[
                ("max_batch", self.max_batch == Some(0)),
                ("max_queue", self.max_queue == Some(0)),
                ("parallelism", self.parallelism == Some(0)),
            ],
        )
    }
}
