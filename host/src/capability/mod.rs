//! Host capabilities: each is one module with its context and `add_to_linker`.
//!
//! Every capability is linked into the one shared linker, but a function may
//! only *import* what its grants allow: [`check_imports`] runs at load time
//! and refuses a component that imports anything else, naming the import.

pub mod config;
pub mod keyvalue;
pub mod log;
pub mod nn;
pub mod outbox;
pub mod wasi;

use std::collections::BTreeSet;

use wasmtime::component::Linker;

use crate::bindings::brink::edge::types;
use crate::contract::EdgeInterface;
use crate::error::LoadError;
use crate::state::HostState;

/// A capability the host offers.
#[derive(Debug)]
pub struct Capability {
    /// Its name in messages.
    pub name: &'static str,
    /// The grant a function's spec needs to use it; `None` for the ones every
    /// function gets.
    pub grant: Option<&'static str>,
    /// How a manifest grants it, where that is not `grants = ["<grant>"]`.
    pub how_to_grant: Option<&'static str>,
    /// Import names it provides outside the contract: `pkg:name/iface@`
    /// prefixes, or exact names.
    pub interfaces: &'static [&'static str],
    /// The contract's interface it provides, at every version from its first.
    pub edge: Option<EdgeInterface>,
    /// Links it.
    pub add_to_linker: fn(&mut Linker<HostState>) -> wasmtime::Result<()>,
}

/// Every capability. A new capability is one folder, one entry here and one
/// `HostState` field (built in `state.rs`).
pub const CAPABILITIES: &[Capability] = &[
    Capability {
        name: "wasi",
        grant: None,
        how_to_grant: None,
        interfaces: wasi::INTERFACES,
        edge: None,
        add_to_linker: wasi::add_to_linker,
    },
    Capability {
        name: "types",
        grant: None,
        how_to_grant: None,
        interfaces: &[],
        edge: Some(EdgeInterface {
            name: "types",
            since: "0.1.0",
        }),
        add_to_linker: add_types_to_linker,
    },
    Capability {
        name: "log",
        grant: None,
        how_to_grant: None,
        interfaces: &[],
        edge: Some(log::INTERFACE),
        add_to_linker: log::add_to_linker,
    },
    Capability {
        name: "config",
        grant: None,
        how_to_grant: None,
        interfaces: config::INTERFACES,
        edge: Some(config::INTERFACE),
        add_to_linker: config::add_to_linker,
    },
    Capability {
        name: "key-value",
        grant: Some(keyvalue::GRANT),
        how_to_grant: Some("name the buckets it may open in its spec: kv = [\"default\"]"),
        interfaces: keyvalue::INTERFACES,
        edge: Some(keyvalue::INTERFACE),
        add_to_linker: keyvalue::add_to_linker,
    },
    Capability {
        name: "outbox",
        grant: Some(outbox::GRANT),
        how_to_grant: Some("name the uplinks it may send to in its spec: outbox = [\"cloud\"]"),
        interfaces: &[],
        edge: Some(outbox::INTERFACE),
        add_to_linker: outbox::add_to_linker,
    },
    Capability {
        name: "inference",
        grant: Some(nn::GRANT),
        how_to_grant: Some("name the models it may use in its spec: models = [\"digits\"]"),
        interfaces: nn::INTERFACES,
        edge: None,
        add_to_linker: nn::add_to_linker,
    },
];

/// A capability's metrics hook: the families it registered when the node
/// started it, filled from its backend just before each exposition (as
/// wasmCloud plugins inject their meters).
pub trait Meters: Send + Sync + std::fmt::Debug {
    /// Reads the backend into the families.
    fn collect(&self);
}

/// The label of figures billed to a tenant.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct TenantLabel {
    pub tenant: String,
}

/// A family per `(name, help)`, each registered in `registry`.
fn families<L, M, const N: usize>(
    registry: &mut prometheus_client::registry::Registry,
    described: [(&'static str, &'static str); N],
) -> [prometheus_client::metrics::family::Family<L, M>; N]
where
    prometheus_client::metrics::family::Family<L, M>:
        prometheus_client::registry::Metric + Clone + Default,
{
    described.map(|(name, help)| {
        let family = prometheus_client::metrics::family::Family::default();
        registry.register(name, help, Clone::clone(&family));
        family
    })
}

/// A byte or event count as a gauge's value.
pub(crate) fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Brings a counter mirrored from a backend's own count up to `total`.
fn catch_up(counter: &prometheus_client::metrics::counter::Counter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

/// The contract's shared types: an interface with no functions of its own.
struct Types;

impl wasmtime::component::HasData for Types {
    type Data<'a> = &'a mut HostState;
}

impl types::Host for HostState {}

fn add_types_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    types::add_to_linker::<HostState, Types>(linker, |s| s)
}

/// Links every capability.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    for capability in CAPABILITIES {
        (capability.add_to_linker)(linker)?;
    }
    Ok(())
}

/// The grants a spec may name.
pub fn known_grants() -> impl Iterator<Item = &'static str> {
    CAPABILITIES.iter().filter_map(|c| c.grant)
}

fn provides(capability: &Capability, import: &str) -> bool {
    capability.edge.is_some_and(|edge| edge.provides(import))
        || capability.interfaces.iter().any(|i| {
            import == *i || (i.ends_with('/') || i.ends_with('@')) && import.starts_with(i)
        })
}

/// Checks `grants` names real capabilities.
pub fn check_grants(function: &str, grants: &BTreeSet<String>) -> Result<(), LoadError> {
    match grants
        .iter()
        .find(|g| !known_grants().any(|k| k == g.as_str()))
    {
        Some(grant) => Err(LoadError::UnknownGrant {
            function: function.to_owned(),
            grant: grant.clone(),
            known: {
                let known: Vec<_> = known_grants().collect();
                if known.is_empty() {
                    "none yet".to_owned()
                } else {
                    known.join(", ")
                }
            },
        }),
        None => Ok(()),
    }
}

/// Refuses a component that imports anything `grants` does not allow.
pub fn check_imports<'a>(
    function: &str,
    imports: impl IntoIterator<Item = &'a str>,
    grants: &BTreeSet<String>,
) -> Result<(), LoadError> {
    for import in imports {
        let allowed = CAPABILITIES
            .iter()
            .any(|c| provides(c, import) && c.grant.is_none_or(|g| grants.contains(g)));
        if !allowed {
            return Err(LoadError::Ungranted {
                function: function.to_owned(),
                import: import.to_owned(),
                grant: CAPABILITIES
                    .iter()
                    .find(|c| provides(c, import))
                    .and_then(|c| match (c.how_to_grant, c.grant) {
                        (Some(how), _) => Some(how.to_owned()),
                        (None, Some(g)) => Some(format!("add `{g}` to its grants to allow it")),
                        (None, None) => None,
                    }),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::GRANT_KV as GRANT_KV_NAME;

    #[test]
    fn base_wasi_and_the_contract_need_no_grant() {
        let none = BTreeSet::new();
        let imports = [
            "wasi:io/streams@0.2.4",
            "wasi:cli/environment@0.2.0",
            "brink:edge/log@0.1.0",
            "brink:edge/config@0.1.0",
        ];
        assert!(check_imports("f", imports, &none).is_ok());
    }

    #[test]
    fn other_hosts_versions_need_the_same_grants_as_ours() {
        let none = BTreeSet::new();
        let kv = BTreeSet::from([GRANT_KV_NAME.to_owned()]);
        let config = ["wasi:config/store@0.2.0-draft-2024-09-27"];
        assert!(check_imports("f", config, &none).is_ok());
        for import in [
            "wasi:keyvalue/store@0.2.0-draft",
            "wasi:keyvalue/atomics@0.2.0-draft",
        ] {
            assert!(check_imports("f", [import], &none).is_err(), "{import}");
            assert!(check_imports("f", [import], &kv).is_ok(), "{import}");
        }
        // A version no capability links is refused, granted or not.
        assert!(check_imports("f", ["wasi:keyvalue/store@0.2.0-draft3"], &kv).is_err());
        assert!(check_imports("f", ["wasi:config/store@0.2.0-rc.1"], &none).is_err());
    }

    #[test]
    fn sockets_are_refused_with_the_import_named() {
        let err = check_imports("f", ["wasi:sockets/tcp@0.2.4"], &BTreeSet::new())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("`wasi:sockets/tcp@0.2.4`"), "{err}");
        assert!(
            err.contains("no capability of this host provides it"),
            "{err}"
        );
    }

    #[test]
    fn a_prefix_does_not_match_a_longer_package_name() {
        assert!(check_imports("f", ["wasi:iox/streams@0.2.0"], &BTreeSet::new()).is_err());
        assert!(check_imports("f", ["brink:edge/log@0.1.01"], &BTreeSet::new()).is_err());
    }

    #[test]
    fn unknown_grants_are_refused() {
        let grants = BTreeSet::from(["teleport".to_owned()]);
        assert!(matches!(
            check_grants("f", &grants),
            Err(LoadError::UnknownGrant { .. })
        ));
    }
}
