//! `[node]`: which node this is, for metrics, traces and the events it
//! sends upstream, where many nodes share a broker or a cloud.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::error::Invalid;

/// The longest node id: it rides on every event sent upstream.
const MAX_ID: usize = 64;
/// The most labels, and the longest value: they are metric labels.
const MAX_LABELS: usize = 16;
const MAX_LABEL_VALUE: usize = 128;

/// `[node]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// `id = "gw-plant3-07"`: the node's name, unique in its fleet: letters,
    /// digits, `.`, `_` and `-`, up to 64. Default: the machine's hostname.
    pub id: Option<String>,
    /// `[node.labels]` `site = "plant-3"`: what else tells this node apart;
    /// Prometheus label names (`[a-zA-Z_][a-zA-Z0-9_]*`), up to 16.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl NodeSection {
    pub(super) fn check(&self) -> Result<(), Invalid> {
        if let Some(id) = &self.id
            && !valid_id(id)
        {
            return Err(Invalid::at(
                "node.id",
                format!(
                    "node.id {id:?}: use 1 to {MAX_ID} letters, digits, '.', '_' or '-', e.g. \"gw-plant3-07\""
                ),
            ));
        }
        if self.labels.len() > MAX_LABELS {
            return Err(Invalid::at(
                "node.labels",
                format!(
                    "{} node labels: at most {MAX_LABELS}; each is a label on the node's metrics",
                    self.labels.len()
                ),
            ));
        }
        for (name, value) in &self.labels {
            if !valid_label_name(name) {
                return Err(Invalid::at(
                    "node.labels",
                    format!(
                        "node label {name:?}: a label name is a letter or '_', then letters, digits or '_', and not one of the node's own (node, version, os, arch, …)"
                    ),
                ));
            }
            if value.len() > MAX_LABEL_VALUE || value.chars().any(char::is_control) {
                return Err(Invalid::at(
                    "node.labels",
                    format!(
                        "node label {name}: its value must be printable and at most {MAX_LABEL_VALUE} bytes"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The node's id: `id`, else the hostname, else `brink`.
    pub fn resolved_id(&self) -> String {
        self.id.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| valid_id(h))
                .unwrap_or_else(|| "brink".to_owned())
        })
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The label names `brink_node_info` has of its own.
pub const RESERVED_LABELS: &[&str] = &[
    "node",
    "version",
    "os",
    "arch",
    "cpus",
    "cpu_model",
    "gpus",
    "gpu_models",
    "nvidia_driver",
    "onnxruntime_providers",
];

fn valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.starts_with("__")
        && !RESERVED_LABELS.contains(&name)
}
