//! The accelerators a node has, as `brink status` reports them: NVIDIA GPUs
//! through NVML, loaded at run time (a node without the driver runs as
//! before, and says so), and ONNX Runtime's execution providers.

use serde::Serialize;

use super::NnConfig;

/// One NVIDIA GPU.
#[derive(Debug, Clone, Serialize)]
pub struct Gpu {
    pub index: u32,
    pub name: String,
    pub uuid: Option<String>,
    pub memory_total_bytes: Option<u64>,
    pub memory_used_bytes: Option<u64>,
    pub utilization_percent: Option<u32>,
}

/// What NVML says, or why it could not be asked.
#[derive(Debug, Clone, Serialize)]
pub struct Nvidia {
    pub driver_version: Option<String>,
    /// The CUDA version the driver supports, e.g. `12.4`.
    pub cuda_version: Option<String>,
    pub gpus: Vec<Gpu>,
    /// Set when NVML could not be loaded or started (no NVIDIA driver).
    pub unavailable: Option<String>,
}

/// The libraries NVML may be found as: the driver ships `.so.1`; the bare
/// name exists only where the development package is installed.
const NVML_LIBRARIES: [&str; 2] = ["libnvidia-ml.so.1", "libnvidia-ml.so"];

/// The node's NVIDIA GPUs, read now.
pub fn nvidia() -> Nvidia {
    let mut why = Vec::new();
    for library in NVML_LIBRARIES {
        match nvml_wrapper::Nvml::builder()
            .lib_path(std::ffi::OsStr::new(library))
            .init()
        {
            Ok(nvml) => return read_nvml(&nvml),
            Err(e) => why.push(format!("{library}: {e}")),
        }
    }
    Nvidia {
        driver_version: None,
        cuda_version: None,
        gpus: Vec::new(),
        unavailable: Some(format!(
            "no NVIDIA driver found through NVML ({})",
            why.join("; ")
        )),
    }
}

fn read_nvml(nvml: &nvml_wrapper::Nvml) -> Nvidia {
    let count = nvml.device_count();
    let gpus = (0..*count.as_ref().unwrap_or(&0))
        .filter_map(|index| {
            let device = nvml.device_by_index(index).ok()?;
            let memory = device.memory_info().ok();
            Some(Gpu {
                index,
                name: device.name().unwrap_or_else(|e| format!("(unnamed: {e})")),
                uuid: device.uuid().ok(),
                memory_total_bytes: memory.as_ref().map(|m| m.total),
                memory_used_bytes: memory.as_ref().map(|m| m.used),
                utilization_percent: device.utilization_rates().ok().map(|u| u.gpu),
            })
        })
        .collect();
    Nvidia {
        driver_version: nvml.sys_driver_version().ok(),
        cuda_version: nvml
            .sys_cuda_driver_version()
            .ok()
            .map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10)),
        gpus,
        unavailable: count.err().map(|e| format!("NVML counted no devices: {e}")),
    }
}

/// ONNX Runtime on this node: where its library is, and which execution
/// providers it was built with.
#[derive(Debug, Clone, Serialize)]
pub struct OnnxRuntime {
    /// The library named by `[nn] onnxruntime` or `ORT_DYLIB_PATH`.
    pub library: Option<String>,
    /// Whether this process loaded it (a model or a guest used it).
    pub loaded: bool,
    /// Its execution providers, e.g. `CPUExecutionProvider`,
    /// `CUDAExecutionProvider`; known only once it is loaded.
    pub providers: Vec<String>,
    pub note: Option<String>,
}

/// ONNX Runtime's state, without loading it: a node that uses no
/// onnxruntime model does not pay for the library to answer a status call.
pub fn onnxruntime(config: &NnConfig) -> OnnxRuntime {
    let configured = config
        .onnxruntime_library
        .clone()
        .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(Into::into))
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| p.display().to_string());
    match super::onnxruntime::loaded() {
        Some(Ok((library, providers))) => OnnxRuntime {
            library: Some(library),
            loaded: true,
            providers,
            note: None,
        },
        Some(Err(why)) => OnnxRuntime {
            library: configured,
            loaded: false,
            providers: Vec::new(),
            note: Some(why),
        },
        None => OnnxRuntime {
            note: Some(match &configured {
                Some(_) => {
                    "not loaded: no model or function has used the onnxruntime backend yet".into()
                }
                None => "not configured: set [nn] onnxruntime or ORT_DYLIB_PATH to use it".into(),
            }),
            library: configured,
            loaded: false,
            providers: Vec::new(),
        },
    }
}
