//! The `brink:edge` contract's names: the versions a host links and the
//! grants a function's spec may name. The manifest checks grants and the
//! capabilities provide them, so both read the names from here.

/// Every version of `brink:edge` this host links, oldest first. A new
/// contract version is one more entry here (and its `wit/` package).
pub const VERSIONS: &[&str] = &["0.1.0", "0.1.1", "0.1.2", "0.1.3"];

/// The grant for key-value state; a manifest gives it by naming buckets.
pub const GRANT_KV: &str = "kv";
/// The grant for the outbox; a manifest gives it by naming uplinks.
pub const GRANT_OUTBOX: &str = "outbox";
/// The grant for inference; a manifest gives it by naming models.
pub const GRANT_NN: &str = "nn";

/// One interface of the contract, `brink:edge/<name>`, present from
/// version `since` on.
#[derive(Debug, Clone, Copy)]
pub struct EdgeInterface {
    pub name: &'static str,
    pub since: &'static str,
}

impl EdgeInterface {
    /// Whether `import` names this interface at a version this host links.
    pub fn provides(&self, import: &str) -> bool {
        let Some((name, version)) = import
            .strip_prefix("brink:edge/")
            .and_then(|rest| rest.split_once('@'))
        else {
            return false;
        };
        let first = VERSIONS.iter().position(|v| *v == self.since);
        name == self.name
            && VERSIONS
                .iter()
                .position(|v| *v == version)
                .is_some_and(|at| first.is_some_and(|first| at >= first))
    }
}

/// The prefix of the function names in a plug that `brink build` puts in
/// place of an import no function is granted (`languages::plug`): a trap in
/// such a function is reported as the refused call it names
/// (`brink-denied:wasi:sockets/tcp-create-socket@0.2.9#create-tcp-socket`).
pub const REFUSED_CALL_PREFIX: &str = "brink-denied:";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interface_is_provided_from_its_first_version_on() {
        let kv = EdgeInterface {
            name: "kv",
            since: "0.1.1",
        };
        assert!(kv.provides("brink:edge/kv@0.1.1"));
        assert!(kv.provides("brink:edge/kv@0.1.2"));
        assert!(!kv.provides("brink:edge/kv@0.1.0"));
        assert!(!kv.provides("brink:edge/kv@0.1.01"));
        assert!(!kv.provides("brink:edge/kvx@0.1.1"));
        assert!(!kv.provides("brink:edgex/kv@0.1.1"));
    }
}
