//! `[registry]`: run-time deployment by tenants, and the keys it trusts.

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
}

impl RegistrySection {
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
