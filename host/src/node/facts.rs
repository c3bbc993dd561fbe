//! What the node is and has, for `brink status` (`GET /v1/node`) and the
//! `brink_node_info` metric: its version and uptime, the machine (CPU,
//! architecture, memory), the disk free under the data directory, the
//! accelerators found, and where each model runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::capability::{Meters, gauge_value};
use crate::nn::devices::{self, Nvidia, OnnxRuntime};
use crate::nn::{Models, NnConfig, Placement};

/// Which node this is (`[node]`).
#[derive(Debug, Clone, Serialize)]
pub struct Identity {
    pub id: String,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// The node's facts, read afresh at each call.
#[derive(Debug, Clone, Serialize)]
pub struct NodeFacts {
    pub node: Identity,
    pub version: &'static str,
    pub started: String,
    pub uptime_s: u64,
    pub machine: Machine,
    pub disk: Disk,
    pub accelerators: Accelerators,
    /// Where each model runs; a `fallback` says why a `gpu` model is on the CPU.
    pub models: Vec<Placement>,
    /// The audit ledger's public key, where the node keeps one.
    pub audit_key: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub hostname: Option<String>,
    pub os: &'static str,
    pub arch: &'static str,
    pub cpus: usize,
    pub cpu_model: Option<String>,
    pub memory_total_bytes: Option<u64>,
    pub memory_available_bytes: Option<u64>,
    /// This process's resident memory.
    pub rss_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Disk {
    /// The data directory (or the nearest folder above it that exists).
    pub path: String,
    pub total_bytes: Option<u64>,
    pub free_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Accelerators {
    pub nvidia: Nvidia,
    pub onnxruntime: OnnxRuntime,
}

/// Reads the facts; shared by the admin API and the metrics.
#[derive(Debug, Clone)]
pub struct Facts {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    started: Instant,
    started_at: String,
    data_dir: PathBuf,
    models: Option<Models>,
    audit_key: Option<String>,
    identity: Identity,
}

impl Facts {
    pub fn new(
        data_dir: &Path,
        models: Option<Models>,
        audit_key: Option<String>,
        identity: Identity,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                identity,
                started: Instant::now(),
                started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                data_dir: data_dir.to_owned(),
                models,
                audit_key,
            }),
        }
    }

    /// Everything, read now. Blocking (files under /proc, NVML): call it
    /// from a blocking thread on the async paths.
    pub fn collect(&self) -> NodeFacts {
        let inner = &self.inner;
        let nn = inner
            .models
            .as_ref()
            .map_or_else(NnConfig::default, |m| m.config().clone());
        NodeFacts {
            node: inner.identity.clone(),
            version: env!("CARGO_PKG_VERSION"),
            started: inner.started_at.clone(),
            uptime_s: inner.started.elapsed().as_secs(),
            machine: machine(),
            disk: disk(&inner.data_dir),
            accelerators: Accelerators {
                nvidia: devices::nvidia(),
                onnxruntime: devices::onnxruntime(&nn),
            },
            models: inner
                .models
                .as_ref()
                .map(|m| m.placements().to_vec())
                .unwrap_or_default(),
            audit_key: inner.audit_key.clone(),
        }
    }
}

/// A `Field:   N kB` line of a /proc file, in bytes.
fn kib(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(field))?;
    let value: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(value.saturating_mul(1024))
}

fn memory_available() -> Option<u64> {
    kib(
        &std::fs::read_to_string("/proc/meminfo").unwrap_or_default(),
        "MemAvailable:",
    )
}

fn machine() -> Machine {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name") || l.starts_with("Model"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned());
    Machine {
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned()),
        os: std::env::consts::OS,
        arch: std::env::consts::ARCH,
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        cpu_model,
        memory_total_bytes: kib(&meminfo, "MemTotal:"),
        memory_available_bytes: kib(&meminfo, "MemAvailable:"),
        rss_bytes: kib(&status, "VmRSS:"),
    }
}

fn disk(data_dir: &Path) -> Disk {
    // A node without state has not made its data directory.
    let existing = data_dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(data_dir);
    let stats = rustix::fs::statvfs(existing).ok();
    Disk {
        path: std::fs::canonicalize(existing)
            .unwrap_or_else(|_| existing.to_owned())
            .display()
            .to_string(),
        total_bytes: stats
            .as_ref()
            .map(|s| s.f_blocks.saturating_mul(s.f_frsize)),
        free_bytes: stats
            .as_ref()
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize)),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlacementLabels {
    model: String,
    backend: String,
    requested: String,
    device: String,
    fallback: String,
}

#[derive(Debug)]
struct NodeMeters {
    facts: Facts,
    uptime: Gauge,
    memory_available: Gauge,
    disk_free: Gauge,
}

/// The metrics hook: `brink_node_info` and `brink_model_placement` (1, with
/// the facts as labels, read at start), and the node's uptime, available
/// memory and free disk, read at each scrape.
pub fn meters(registry: &mut Registry, facts: Facts) -> Box<dyn Meters> {
    let now = facts.collect();
    let info = Family::<Vec<(String, String)>, Gauge>::default();
    registry.register(
        "node_info",
        "The node's version, machine and accelerators, as labels (always 1)",
        info.clone(),
    );
    info.get_or_create(&info_labels(&now)).set(1);
    let placement = Family::<PlacementLabels, Gauge>::default();
    registry.register(
        "model_placement",
        "Where each model runs against where it was asked to; fallback=\"true\" is a gpu model on the CPU (always 1)",
        placement.clone(),
    );
    for p in &now.models {
        let labels = PlacementLabels {
            model: p.model.clone(),
            backend: p.backend.clone(),
            requested: p.requested.clone(),
            device: p.device.clone(),
            fallback: p.fallback.is_some().to_string(),
        };
        placement.get_or_create(&labels).set(1);
    }
    let gauge = |registry: &mut Registry, name: &str, help: &str| {
        let g = Gauge::default();
        registry.register(name, help, g.clone());
        g
    };
    Box::new(NodeMeters {
        uptime: gauge(
            registry,
            "node_uptime_seconds",
            "Seconds since the node started",
        ),
        memory_available: gauge(
            registry,
            "node_memory_available_bytes",
            "Memory the machine has available (MemAvailable)",
        ),
        disk_free: gauge(
            registry,
            "node_disk_free_bytes",
            "Bytes free to the node's user on the data directory's file system",
        ),
        facts,
    })
}

/// `brink_node_info`'s labels: the node's id, what it runs on, then its
/// `[node.labels]` (whose names cannot take one of these: checked at load).
fn info_labels(facts: &NodeFacts) -> Vec<(String, String)> {
    let nvidia = &facts.accelerators.nvidia;
    let fixed = [
        ("node", facts.node.id.clone()),
        ("version", facts.version.to_owned()),
        ("os", facts.machine.os.to_owned()),
        ("arch", facts.machine.arch.to_owned()),
        ("cpus", facts.machine.cpus.to_string()),
        (
            "cpu_model",
            facts.machine.cpu_model.clone().unwrap_or_default(),
        ),
        ("gpus", nvidia.gpus.len().to_string()),
        (
            "gpu_models",
            nvidia
                .gpus
                .iter()
                .map(|g| g.name.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ),
        (
            "nvidia_driver",
            nvidia.driver_version.clone().unwrap_or_default(),
        ),
        (
            "onnxruntime_providers",
            facts.accelerators.onnxruntime.providers.join(","),
        ),
    ];
    fixed
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .chain(facts.node.labels.clone())
        .collect()
}

impl Meters for NodeMeters {
    fn collect(&self) {
        let inner = &self.facts.inner;
        self.uptime
            .set(gauge_value(inner.started.elapsed().as_secs()));
        if let Some(bytes) = memory_available() {
            self.memory_available.set(gauge_value(bytes));
        }
        if let Some(bytes) = disk(&inner.data_dir).free_bytes {
            self.disk_free.set(gauge_value(bytes));
        }
    }
}
