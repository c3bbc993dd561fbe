//! The app manifest, `brink.toml`: which functions a host runs, what triggers
//! them, where their outputs go, and their config, grants and limits.
//!
//! ```toml
//! brink_manifest_version = 1
//!
//! [function.filter]
//! source = "functions/filter"
//! triggers = [{ mqtt = "sensors/+/temperature" }, { http = "/temperature" }]
//! outputs = [{ function = "transform" }]
//! config = { threshold = "30" }
//! limits = { timeout_ms = 200, memory_mb = 32, concurrency = 8 }
//! ```
//!
//! Unknown keys are errors, and every error names the file, the line and
//! column, and the field.

mod admin;
mod error;
mod function;
mod http;
mod kv;
mod model;
mod mqtt;
mod node;
mod registry;
mod telemetry;
pub mod topic;
mod uplink;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use admin::{AdminSection, JwtSection};
pub use error::{Invalid, ManifestError, NAME_RULE};
use error::{line_column, locate};
pub use function::{
    DeploySpec, FunctionSection, LimitsSection, Output, SourceField, Trigger, Uploaded,
};
pub use http::HttpSection;
pub use kv::KvSection;
pub use model::{BackendKind, Fallback, ModelSection, NnSection, Target};
pub use mqtt::{MqttLink, MqttOutputMode, MqttProtocol, MqttSection};
pub use node::{NodeSection, RESERVED_LABELS};
pub use registry::RegistrySection;
pub use telemetry::{Percent, TelemetrySection};
pub(crate) use topic::{check_template, check_topic_filter};
pub use uplink::{UplinkSection, WhenFullSetting};

/// The manifest version this host reads.
pub const MANIFEST_VERSION: u32 = 1;
/// `brink.toml`, version 1.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// `brink_manifest_version = 1`: the format's version (required).
    pub brink_manifest_version: u32,
    /// `app = "line-3"`: the app's name, which namespaces its key-value
    /// buckets, so two apps' `default` buckets never meet. Default `default`.
    #[serde(default = "default_app")]
    pub app: String,
    /// `data_dir = "/var/lib/brink"`: where the host keeps key-value state
    /// and the outbox, relative to the manifest; default `brink up
    /// --data-dir`, else the user's data directory (`~/.local/share/brink/data`
    /// on Linux).
    pub data_dir: Option<PathBuf>,
    /// `[mqtt]`: the broker the host uses.
    #[serde(default)]
    pub mqtt: MqttSection,
    /// `[http]`: the host's HTTP server.
    #[serde(default)]
    pub http: HttpSection,
    /// `[kv]`: where key-value state lives, and its limits.
    #[serde(default)]
    pub kv: KvSection,
    /// `[admin]`: the admin API (`brink kv`, ...).
    #[serde(default)]
    pub admin: AdminSection,
    /// `[uplink.<name>]`: where the outbox forwards to, one table per uplink.
    #[serde(default)]
    pub uplink: BTreeMap<String, UplinkSection>,
    /// `[nn]`: inference settings every model shares.
    #[serde(default)]
    pub nn: NnSection,
    /// `[model.<name>]`: the models the host loads once at start and shares
    /// with every function granted them, one table per model.
    #[serde(default)]
    pub model: BTreeMap<String, ModelSection>,
    /// `[function.<name>]`: one table per function.
    #[serde(default)]
    pub function: BTreeMap<String, FunctionSection>,
    /// `[registry]`: tenants may deploy functions to this node at run time
    /// through the admin API (`brink deploy`); absent, the node runs only
    /// the functions above.
    pub registry: Option<RegistrySection>,
    /// `[telemetry]`: traces of every event over OTLP (off by default).
    #[serde(default)]
    pub telemetry: TelemetrySection,
    /// `[node]`: this node's id and labels, carried by its metrics, traces
    /// and the events it sends upstream.
    #[serde(default)]
    pub node: NodeSection,
    /// `sha256:<hex>` of the text this was parsed from (not a setting): the
    /// audit ledger's node-start record names the manifest by it.
    #[serde(skip)]
    pub digest: Option<String>,
}

fn default_app() -> String {
    "default".to_owned()
}

impl Manifest {
    /// Reads and validates the manifest at `path`.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|e| ManifestError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates `text`; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Self, ManifestError> {
        let mut manifest: Manifest = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|span| line_column(text, span.start))
                .unwrap_or((1, 1));
            ManifestError::Parse {
                path: path.to_owned(),
                line,
                column,
                message: e.message().trim().to_owned(),
            }
        })?;
        manifest
            .validate()
            .map_err(|invalid| ManifestError::Invalid {
                path: path.to_owned(),
                at: invalid.setting.and_then(|setting| locate(text, &setting)),
                message: invalid.message,
            })?;
        manifest.digest = Some(format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()))
        ));
        Ok(manifest)
    }

    /// Checks every section, then what the sections say of each other.
    fn validate(&self) -> Result<(), Invalid> {
        self.http.check()?;
        if self.brink_manifest_version != MANIFEST_VERSION {
            return Err(Invalid::at(
                "brink_manifest_version",
                format!(
                    "brink_manifest_version {} is not supported; this host reads version {MANIFEST_VERSION}",
                    self.brink_manifest_version
                ),
            ));
        }
        self.mqtt.check()?;
        self.telemetry.check()?;
        self.node.check()?;
        error::check_name("app", &self.app)?;
        self.kv.check()?;
        if let Some(registry) = &self.registry {
            registry.check()?;
        }
        self.admin.check()?;
        for (name, uplink) in &self.uplink {
            uplink.check(name)?;
        }
        for (name, model) in &self.model {
            model.check(name)?;
        }
        self.nn.check()?;
        for (name, function) in &self.function {
            function.check(name, self)?;
        }
        if let Some(cycle) = self.find_cycle() {
            return Err(Invalid::whole(format!(
                "function outputs form a cycle: {}",
                cycle.join(" -> ")
            )));
        }
        Ok(())
    }

    /// A cycle in the function-to-function outputs, as the names along it.
    fn find_cycle(&self) -> Option<Vec<String>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            Visiting,
            Done,
        }
        fn visit<'a>(
            m: &'a Manifest,
            name: &'a str,
            marks: &mut BTreeMap<&'a str, Mark>,
            path: &mut Vec<&'a str>,
        ) -> Option<Vec<String>> {
            match marks.get(name) {
                Some(Mark::Done) => return None,
                Some(Mark::Visiting) => {
                    let start = path.iter().position(|n| *n == name).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        path[start..].iter().map(|s| (*s).to_owned()).collect();
                    cycle.push(name.to_owned());
                    return Some(cycle);
                }
                None => {}
            }
            marks.insert(name, Mark::Visiting);
            path.push(name);
            for output in m
                .function
                .get(name)
                .map(|f| f.outputs.as_slice())
                .unwrap_or_default()
            {
                if let Output::Function(next) = output
                    && let Some(cycle) = visit(m, next, marks, path)
                {
                    return Some(cycle);
                }
            }
            path.pop();
            marks.insert(name, Mark::Done);
            None
        }
        let mut marks = BTreeMap::new();
        for name in self.function.keys() {
            if let Some(cycle) = visit(self, name, &mut marks, &mut Vec::new()) {
                return Some(cycle);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn error(text: &str) -> String {
        Manifest::parse(text, "brink.toml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn a_minimal_manifest_takes_every_default() -> Result<(), ManifestError> {
        let m = Manifest::parse("brink_manifest_version = 1\n", "brink.toml")?;
        assert_eq!(m.mqtt, MqttSection::default());
        assert_eq!(m.http.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert!(m.function.is_empty());
        Ok(())
    }

    #[test]
    fn a_topic_template_holding_nul_is_refused_as_mqtt_forbids_it() {
        // Found by the `topic` fuzz target: it rendered to a topic no broker takes.
        let err = check_template("fixed/top\0ic").err().unwrap_or_default();
        assert!(err.contains("NUL"), "{err}");
        assert!(check_template("fixed/topic/{subject}").is_ok());
    }

    #[test]
    fn topic_filter_rules_follow_the_mqtt_spec() {
        for ok in ["a/b", "a/+/c", "#", "a/#", "+", "+/+/#"] {
            assert!(check_topic_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/#/c", "a/b#", "a+/b", "a/+b"] {
            assert!(check_topic_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_three_stage_cycle_is_reported_along_its_path() {
        let err = error(
            r#"brink_manifest_version = 1
[function.a]
source = "a.wasm"
outputs = [{ function = "b" }]
[function.b]
source = "b.wasm"
outputs = [{ function = "c" }]
[function.c]
source = "c.wasm"
outputs = [{ function = "a" }]
"#,
        );
        assert_eq!(
            err,
            "brink.toml: function outputs form a cycle: a -> b -> c -> a"
        );
    }
}
