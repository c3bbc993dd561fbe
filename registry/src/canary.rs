//! Canary releases: a second version of a function that takes a fixed
//! share of its events, picked by event id, until it is promoted (made the
//! active version) or ended (rolled back).

use serde::{Deserialize, Serialize};

use crate::{Deployment, Registry, RegistryError, Result, key};

/// A version that takes `weight` percent of a function's events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    pub version: String,
    /// 1 to 99: the percentage of event ids whose bucket sends them here.
    pub weight: u8,
}

impl Canary {
    /// Whether the event with `id` goes to the canary: the id's bucket
    /// (FNV-1a of its bytes, modulo 100) below the weight. The same id
    /// always lands in the same bucket, on every node and after restarts,
    /// so a retried or redelivered event runs on the version it ran on.
    pub fn takes(&self, id: &str) -> bool {
        bucket(id) < self.weight
    }
}

/// The bucket (0 to 99) of an event id.
pub fn bucket(id: &str) -> u8 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // In 0..100, so it fits.
    u8::try_from(hash % 100).unwrap_or(0)
}

impl Registry {
    /// Sends `weight` percent of `name`'s events to `version`, beside the
    /// active version; replaces a canary already running.
    pub fn start_canary(
        &self,
        namespace: &str,
        name: &str,
        version: &str,
        weight: u8,
    ) -> Result<Deployment> {
        if !(1..=99).contains(&weight) {
            return Err(RegistryError::Canary(format!(
                "a canary's weight is 1 to 99 (percent of events), not {weight}; \
                 activate the version without --weight to send it every event"
            )));
        }
        let record = self.version(namespace, name, version)?;
        let mut deployment = self.deployment(namespace, name)?;
        match deployment.active.as_deref() {
            None => {
                return Err(RegistryError::Canary(format!(
                    "`{name}` has no active version to share its events with: activate one first"
                )));
            }
            Some(active) if active == record.version => {
                return Err(RegistryError::Canary(format!(
                    "`{name}@{active}` is already the active version"
                )));
            }
            Some(_) => {}
        }
        deployment.canary = Some(Canary {
            version: record.version,
            weight,
        });
        self.deployments
            .insert(key(&[namespace, name]), serde_json::to_vec(&deployment)?)?;
        self.db.flush()?;
        Ok(deployment)
    }

    /// Ends `name`'s canary, leaving the active version to take every
    /// event; the canary's version stays published.
    pub fn end_canary(&self, namespace: &str, name: &str) -> Result<Deployment> {
        let mut deployment = self.deployment(namespace, name)?;
        if deployment.canary.take().is_none() {
            return Err(RegistryError::Canary(format!("`{name}` has no canary")));
        }
        self.deployments
            .insert(key(&[namespace, name]), serde_json::to_vec(&deployment)?)?;
        self.db.flush()?;
        Ok(deployment)
    }

    /// Every canary: namespace, name and the canary, for a restart.
    pub fn canaries(&self) -> Result<Vec<(String, String, Canary)>> {
        let mut all = Vec::new();
        for kv in &self.deployments {
            let (k, v) = kv?;
            let d: Deployment = serde_json::from_slice(&v)?;
            let Some(canary) = d.canary else { continue };
            let text = String::from_utf8_lossy(&k).into_owned();
            if let Some((namespace, name)) = text.split_once('\0') {
                all.push((namespace.to_owned(), name.to_owned(), canary));
            }
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish_test_version(
        r: &Registry,
        namespace: &str,
        name: &str,
        version: &str,
        bytes: &[u8],
    ) -> anyhow::Result<()> {
        let digest = r.put_blob(bytes)?;
        r.publish(crate::NewVersion {
            namespace: namespace.into(),
            name: name.into(),
            version: version.into(),
            digest,
            ..crate::NewVersion::default()
        })?;
        Ok(())
    }

    #[test]
    fn buckets_are_stable_and_spread_evenly() {
        assert_eq!(bucket("b3f1c2a4-0001"), bucket("b3f1c2a4-0001"));
        let mut counts = [0u32; 100];
        for i in 0..100_000 {
            counts[usize::from(bucket(&format!("evt-{i}")))] += 1;
        }
        // 1,000 expected in each; a skewed hash would leave some far off.
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }

    #[test]
    fn a_canary_needs_an_active_version_and_ends_when_promoted_rolled_back_or_activated()
    -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let registry = Registry::open(dir.path())?;
        publish_test_version(&registry, "acme", "f", "1.0.0", b"one")?;
        publish_test_version(&registry, "acme", "f", "1.1.0", b"two")?;
        assert!(registry.start_canary("acme", "f", "1.1.0", 10).is_err());
        registry.activate("acme", "f", "1.0.0")?;
        assert!(registry.start_canary("acme", "f", "1.0.0", 10).is_err());
        assert!(registry.start_canary("acme", "f", "1.1.0", 0).is_err());
        assert!(registry.start_canary("acme", "f", "1.1.0", 100).is_err());
        let d = registry.start_canary("acme", "f", "1.1.0", 10)?;
        assert_eq!(d.canary.as_ref().map(|c| c.weight), Some(10));
        assert_eq!(registry.canaries()?.len(), 1);
        // Its version cannot be removed while it runs.
        assert!(registry.remove_version("acme", "f", "1.1.0").is_err());
        let d = registry.end_canary("acme", "f")?;
        assert_eq!((d.active.as_deref(), d.canary), (Some("1.0.0"), None));
        assert!(registry.end_canary("acme", "f").is_err());
        registry.start_canary("acme", "f", "1.1.0", 50)?;
        let d = registry.activate("acme", "f", "1.1.0")?;
        assert_eq!((d.active.as_deref(), d.canary), (Some("1.1.0"), None));
        assert!(registry.canaries()?.is_empty());
        Ok(())
    }
}
