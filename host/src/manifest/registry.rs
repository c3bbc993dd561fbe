//! `[registry]`: run-time deployment by tenants, and the keys it trusts.

use std::path::PathBuf;

use serde::Deserialize;

use super::error::Invalid;

/// `[registry]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySection {
    /// `trusted_keys = ["ed25519:…"]`: public keys (`brink keygen`) whose
    /// signatures count towards deploying a component.
    #[serde(default)]
    pub trusted_keys: Vec<String>,
    /// `required_signatures = 2`: how many distinct trusted keys must have
    /// signed a component's digest, name and version (N of M). Default 1
    /// when `trusted_keys` is set, else 0 (signatures not checked).
    pub required_signatures: Option<usize>,
    /// `mqtt = true`: tenants' functions may take MQTT triggers and publish
    /// MQTT outputs under their topics; the node connects to `[mqtt]` (the
    /// embedded broker when it names no `url`) even when none of the
    /// manifest's functions uses MQTT. Default false.
    #[serde(default)]
    pub mqtt: bool,
    /// `[registry.oci]`: the OCI registries tenants may deploy from
    /// (`brink deploy oci://…`). Absent, the node pulls from none: a pull is
    /// a request the node makes on a tenant's behalf, so where it may go is
    /// the operator's choice.
    pub oci: Option<OciSection>,
}

/// `[registry.oci]`
///
/// ```toml
/// [registry.oci]
/// registries = ["ghcr.io", "registry.plant3.local:5000"]
/// plain_http = []                       # registries spoken to without TLS
/// ca_file = "certs/plant3-ca.pem"       # trusted beside the system's CAs
/// auth_file = "/etc/brink/registry-auth.json"  # docker config.json format
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OciSection {
    /// `registries = ["ghcr.io"]`: `host[:port]`s the node pulls from.
    pub registries: Vec<String>,
    /// `plain_http = ["127.0.0.1:5000"]`: those of `registries` spoken to
    /// over HTTP, not HTTPS (a registry on loopback). Default none.
    #[serde(default)]
    pub plain_http: Vec<String>,
    /// `ca_file = "ca.pem"`: PEM certificates trusted beside the system's
    /// CAs, relative to the manifest.
    pub ca_file: Option<PathBuf>,
    /// `auth_file = "auth.json"`: registry credentials in docker's
    /// `config.json` format (`brink login oci://… --config FILE` writes
    /// one), relative to the manifest. Default: pull anonymously.
    pub auth_file: Option<PathBuf>,
}

impl OciSection {
    /// Every registry well formed, and `plain_http` among `registries`.
    pub fn check(&self) -> Result<(), Invalid> {
        for (i, registry) in self.registries.iter().enumerate() {
            let ok = !registry.is_empty()
                && registry
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
            if !ok {
                return Err(Invalid::at(
                    format!("registry.oci.registries[{i}]"),
                    format!(
                        "registry.oci.registries[{i}] {registry:?} is not a registry host: \
                         write host[:port], e.g. \"ghcr.io\" or \"127.0.0.1:5000\""
                    ),
                ));
            }
        }
        for (i, registry) in self.plain_http.iter().enumerate() {
            if !self.registries.contains(registry) {
                return Err(Invalid::at(
                    format!("registry.oci.plain_http[{i}]"),
                    format!(
                        "registry.oci.plain_http[{i}] {registry:?} is not among \
                         registry.oci.registries; add it there too"
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl RegistrySection {
    /// The policy's keys, and `[registry.oci]`.
    pub fn check(&self) -> Result<(), Invalid> {
        self.policy()?;
        self.oci.as_ref().map_or(Ok(()), OciSection::check)
    }

    /// The trust policy these settings describe.
    pub fn policy(&self) -> Result<brink_registry::TrustPolicy, Invalid> {
        let keys = self
            .trusted_keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                brink_registry::PublicKey::parse(k).map_err(|e| {
                    Invalid::at(
                        format!("registry.trusted_keys[{i}]"),
                        format!("registry.trusted_keys[{i}]: {e}"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let required = self
            .required_signatures
            .unwrap_or(usize::from(!keys.is_empty()));
        brink_registry::TrustPolicy::new(keys, required).map_err(|e| {
            Invalid::at(
                "registry.required_signatures",
                format!("registry.required_signatures: {e}"),
            )
        })
    }
}
