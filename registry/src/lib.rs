//! The Brink artifact store.
//!
//! - **Blobs** are content-addressed: `blobs/<sha256 hex>` in a capability-scoped
//!   directory ([`cap_std`]), written to `tmp/` and renamed into place, so a crash
//!   never leaves a half-written blob under a digest. Reads check the digest.
//! - **Versions** (`name@semver`, per namespace) are immutable records on sled:
//!   digest, size, creation time, signatures, annotations and the deploy spec.
//!   Publishing a version stages it; nothing runs it until it is activated.
//! - **Deployments** say which version of a name is active and which were
//!   active before (for rollback); one sled key each, so activation is atomic.
//! - **Garbage collection** removes blobs no version refers to.
//!
//! Namespaces are opaque strings (the host uses tenant ids); nothing in one
//! namespace names anything in another.

mod canary;
pub mod signing;

#[cfg(test)]
mod test_support {
    /// The error of a call a test expects to fail.
    pub trait Failure<E> {
        fn failure(self) -> anyhow::Result<E>;
    }

    impl<T: std::fmt::Debug, E> Failure<E> for Result<T, E> {
        fn failure(self) -> anyhow::Result<E> {
            match self {
                Ok(v) => anyhow::bail!("expected an error, got {v:?}"),
                Err(e) => Ok(e),
            }
        }
    }
}

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use canary::Canary;
pub use signing::{PolicyError, PublicKey, SecretKey, Signature, TrustPolicy};

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "`{0}` is not a valid name: use 1-63 lowercase letters, digits, `-` or `_`, starting with a letter or digit"
    )]
    InvalidName(String),
    #[error("`{0}` is not a semantic version (like 1.2.3): {1}")]
    InvalidVersion(String, String),
    #[error("`{0}` is not a version requirement (like ^1.2, 1.2.3 or latest): {1}")]
    InvalidRequirement(String, String),
    #[error("`{0}` is not a digest: expected sha256:<64 hex digits>")]
    InvalidDigest(String),
    #[error("no blob {0} in the registry; upload it first")]
    BlobMissing(String),
    #[error("blob {digest} is corrupt on disk (its content hashes to {actual})")]
    Corrupt { digest: String, actual: String },
    #[error("no function `{0}`")]
    NoFunction(String),
    #[error("`{name}` has no version matching `{requirement}`")]
    NoVersion { name: String, requirement: String },
    #[error(
        "`{name}@{version}` already exists with other content ({existing}); versions are immutable, publish a new version"
    )]
    Conflict {
        name: String,
        version: String,
        existing: String,
    },
    #[error("`{name}` has no earlier version to roll back to")]
    NothingToRollBackTo { name: String },
    #[error("`{name}@{version}` is active; activate another version or remove the function")]
    VersionActive { name: String, version: String },
    #[error("{0}")]
    Canary(String),
    #[error("registry storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("registry metadata store: {0}")]
    Store(#[from] sled::Error),
    #[error("registry metadata record is unreadable: {0}")]
    Record(#[from] serde_json::Error),
}

type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// One published version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub namespace: String,
    pub name: String,
    /// Canonical semantic version.
    pub version: String,
    /// `sha256:<hex>` of the component.
    pub digest: String,
    pub size: u64,
    /// Milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    #[serde(default)]
    pub signatures: Vec<Signature>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// How the host runs it (triggers, grants, limits, config); opaque here.
    #[serde(default)]
    pub spec: serde_json::Value,
}

/// What to publish.
#[derive(Debug, Clone, Default)]
pub struct NewVersion {
    pub namespace: String,
    pub name: String,
    pub version: String,
    pub digest: String,
    pub signatures: Vec<Signature>,
    pub annotations: BTreeMap<String, String>,
    pub spec: serde_json::Value,
}

/// Which version of a name runs, and which ran before.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub active: Option<String>,
    /// Earlier active versions, oldest first; rollback returns to the last.
    #[serde(default)]
    pub previous: Vec<String>,
    /// A version that takes a share of the events beside the active one,
    /// until it is promoted or rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
}

/// What garbage collection removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    pub blobs: u64,
    pub bytes: u64,
}

/// The store: blobs and metadata under one directory.
#[derive(Debug)]
pub struct Registry {
    dir: Dir,
    db: sled::Db,
    versions: sled::Tree,
    deployments: sled::Tree,
}

/// The `sha256:<hex>` digest of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn digest_hex(digest: &str) -> Result<&str> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .ok_or_else(|| RegistryError::InvalidDigest(digest.to_owned()))
}

/// Checks a function (or namespace) name.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_'))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(RegistryError::InvalidName(name.to_owned()))
    }
}

/// Parses `version` as semver, canonically written.
pub fn parse_version(version: &str) -> Result<semver::Version> {
    semver::Version::parse(version.trim())
        .map_err(|e| RegistryError::InvalidVersion(version.to_owned(), e.to_string()))
}

/// Parses a version requirement as `brink deploy NAME@REQ` takes it: empty,
/// `latest` or `*` for the newest; a bare version for exactly it; otherwise
/// a semver range (`^1.2`, `>=1, <2`).
pub fn parse_requirement(requirement: &str) -> Result<semver::VersionReq> {
    match requirement.trim() {
        "" | "latest" | "*" => Ok(semver::VersionReq::STAR),
        r => {
            // A bare version means exactly it, as `brink deploy` and `activate` use it.
            let r = if semver::Version::parse(r).is_ok() {
                format!("={r}")
            } else {
                r.to_owned()
            };
            semver::VersionReq::parse(&r).map_err(|e| {
                RegistryError::InvalidRequirement(requirement.to_owned(), e.to_string())
            })
        }
    }
}

/// Checks a content digest: `sha256:` and 64 lowercase hex digits.
pub fn check_digest(digest: &str) -> Result<()> {
    digest_hex(digest).map(|_| ())
}

/// Opens the metadata store. A registry just dropped in this process (a
/// node restarting) may still be letting go of sled's lock from its flusher
/// thread, so a busy lock is tried again for up to 5 s, as the host's store does.
fn open_meta(path: &Path) -> std::result::Result<sled::Db, sled::Error> {
    let started = std::time::Instant::now();
    loop {
        match sled::open(path) {
            Err(sled::Error::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock
                    && started.elapsed() < std::time::Duration::from_secs(5) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn key(parts: &[&str]) -> Vec<u8> {
    parts.join("\0").into_bytes()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Registry {
    /// Opens (creating) the registry in `path`.
    pub fn open(path: &Path) -> Result<Self> {
        std::fs::create_dir_all(path)?;
        let dir = Dir::open_ambient_dir(path, ambient_authority())?;
        dir.create_dir_all("blobs")?;
        dir.create_dir_all("tmp")?;
        // Uploads a crash interrupted are worthless: their digest was never recorded.
        for entry in dir.read_dir("tmp")? {
            let entry = entry?;
            let _ = dir.remove_file(Path::new("tmp").join(entry.file_name()));
        }
        let db = open_meta(&path.join("meta"))?;
        Ok(Self {
            versions: db.open_tree("versions")?,
            deployments: db.open_tree("deployments")?,
            dir,
            db,
        })
    }

    /// Stores `bytes` and returns their digest; storing the same bytes twice is a no-op.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<String> {
        let digest = digest(bytes);
        let hex = digest_hex(&digest)?;
        let path = Path::new("blobs").join(hex);
        if self.dir.exists(&path) {
            return Ok(digest);
        }
        let mut nonce = [0u8; 8];
        getrandom::getrandom(&mut nonce).map_err(|e| std::io::Error::other(e.to_string()))?;
        let tmp = Path::new("tmp").join(format!("{hex}.{}", hex::encode(nonce)));
        let mut file = self.dir.create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        self.dir.rename(&tmp, &self.dir, &path)?;
        Ok(digest)
    }

    /// Whether the blob `digest` is stored.
    pub fn has_blob(&self, digest: &str) -> Result<bool> {
        Ok(self
            .dir
            .exists(Path::new("blobs").join(digest_hex(digest)?)))
    }

    /// The bytes of `digest`, checked against it.
    pub fn blob(&self, digest: &str) -> Result<Vec<u8>> {
        let path = Path::new("blobs").join(digest_hex(digest)?);
        let mut file = match self.dir.open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RegistryError::BlobMissing(digest.to_owned()));
            }
            Err(e) => return Err(e.into()),
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let actual = self::digest(&bytes);
        if actual != digest {
            return Err(RegistryError::Corrupt {
                digest: digest.to_owned(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Records a version of stored content (staged: not active). Publishing
    /// the same name, version and digest again adds any new signatures.
    pub fn publish(&self, new: NewVersion) -> Result<VersionRecord> {
        check_name(&new.name)?;
        let version = parse_version(&new.version)?.to_string();
        let hex = digest_hex(&new.digest)?;
        let size = match self.dir.metadata(Path::new("blobs").join(hex)) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RegistryError::BlobMissing(new.digest));
            }
            Err(e) => return Err(e.into()),
        };
        let k = key(&[&new.namespace, &new.name, &version]);
        let record = match self.versions.get(&k)? {
            Some(old) => {
                let mut old: VersionRecord = serde_json::from_slice(&old)?;
                if old.digest != new.digest {
                    return Err(RegistryError::Conflict {
                        name: new.name,
                        version,
                        existing: old.digest,
                    });
                }
                for s in new.signatures {
                    if !old.signatures.contains(&s) {
                        old.signatures.push(s);
                    }
                }
                old
            }
            None => VersionRecord {
                namespace: new.namespace,
                name: new.name,
                version,
                digest: new.digest,
                size,
                created_unix_ms: now_ms(),
                signatures: new.signatures,
                annotations: new.annotations,
                spec: new.spec,
            },
        };
        self.versions.insert(k, serde_json::to_vec(&record)?)?;
        self.db.flush()?;
        Ok(record)
    }

    /// One version, exactly.
    pub fn version(&self, namespace: &str, name: &str, version: &str) -> Result<VersionRecord> {
        let canonical = parse_version(version)?.to_string();
        match self.versions.get(key(&[namespace, name, &canonical]))? {
            Some(v) => Ok(serde_json::from_slice(&v)?),
            None => Err(RegistryError::NoVersion {
                name: name.to_owned(),
                requirement: version.to_owned(),
            }),
        }
    }

    /// Every version of `name`, lowest first.
    pub fn versions(&self, namespace: &str, name: &str) -> Result<Vec<VersionRecord>> {
        let mut prefix = key(&[namespace, name]);
        prefix.push(0);
        let mut all = self
            .versions
            .scan_prefix(prefix)
            .map(|kv| Ok(serde_json::from_slice::<VersionRecord>(&kv?.1)?))
            .collect::<Result<Vec<_>>>()?;
        all.sort_by_cached_key(|v| semver::Version::parse(&v.version).ok());
        Ok(all)
    }

    /// The names with versions or a deployment in `namespace`.
    pub fn names(&self, namespace: &str) -> Result<Vec<String>> {
        let mut prefix = namespace.as_bytes().to_vec();
        prefix.push(0);
        let mut names = BTreeSet::new();
        for tree in [&self.versions, &self.deployments] {
            for kv in tree.scan_prefix(&prefix) {
                let (k, _) = kv?;
                let rest = &k[prefix.len()..];
                let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
                names.insert(String::from_utf8_lossy(&rest[..end]).into_owned());
            }
        }
        Ok(names.into_iter().collect())
    }

    /// The highest version of `name` matching `requirement` (`^1.2`, `=1.2.3`,
    /// `1.2.3`, `latest` or `*`); pre-releases only when asked for.
    pub fn resolve(&self, namespace: &str, name: &str, requirement: &str) -> Result<VersionRecord> {
        let req = parse_requirement(requirement)?;
        let versions = self.versions(namespace, name)?;
        if versions.is_empty() {
            return Err(RegistryError::NoFunction(name.to_owned()));
        }
        versions
            .into_iter()
            .rev()
            .find(|v| semver::Version::parse(&v.version).is_ok_and(|sv| req.matches(&sv)))
            .ok_or_else(|| RegistryError::NoVersion {
                name: name.to_owned(),
                requirement: requirement.to_owned(),
            })
    }

    /// Which version of `name` is active, and which were before.
    pub fn deployment(&self, namespace: &str, name: &str) -> Result<Deployment> {
        Ok(match self.deployments.get(key(&[namespace, name]))? {
            Some(d) => serde_json::from_slice(&d)?,
            None => Deployment::default(),
        })
    }

    /// Every active version in every namespace: what a host runs after a restart.
    pub fn active(&self) -> Result<Vec<VersionRecord>> {
        let mut active = Vec::new();
        for kv in &self.deployments {
            let (k, v) = kv?;
            let d: Deployment = serde_json::from_slice(&v)?;
            let text = String::from_utf8_lossy(&k).into_owned();
            let mut parts = text.splitn(2, '\0');
            let (Some(namespace), Some(name), Some(version)) =
                (parts.next(), parts.next(), d.active)
            else {
                continue;
            };
            active.push(self.version(namespace, name, &version)?);
        }
        Ok(active)
    }

    /// Makes `version` the active version of `name`, in one atomic write.
    pub fn activate(&self, namespace: &str, name: &str, version: &str) -> Result<Deployment> {
        let record = self.version(namespace, name, version)?;
        let k = key(&[namespace, name]);
        let mut deployment = self.deployment(namespace, name)?;
        // Activating a version outright ends any canary.
        let had_canary = deployment.canary.take().is_some();
        if deployment.active.as_deref() == Some(record.version.as_str()) {
            if had_canary {
                self.deployments
                    .insert(k, serde_json::to_vec(&deployment)?)?;
                self.db.flush()?;
            }
            return Ok(deployment);
        }
        if let Some(old) = deployment.active.take() {
            deployment.previous.retain(|v| *v != old);
            deployment.previous.push(old);
        }
        deployment.previous.retain(|v| *v != record.version);
        deployment.active = Some(record.version);
        self.deployments
            .insert(k, serde_json::to_vec(&deployment)?)?;
        self.db.flush()?;
        Ok(deployment)
    }

    /// Makes the previously active version active again.
    pub fn rollback(&self, namespace: &str, name: &str) -> Result<Deployment> {
        let mut deployment = self.deployment(namespace, name)?;
        let Some(back) = deployment.previous.pop() else {
            return Err(RegistryError::NothingToRollBackTo {
                name: name.to_owned(),
            });
        };
        // The version we leave stays available to activate, but is no rollback target.
        deployment.active = Some(back);
        deployment.canary = None;
        self.deployments
            .insert(key(&[namespace, name]), serde_json::to_vec(&deployment)?)?;
        self.db.flush()?;
        Ok(deployment)
    }

    /// Removes `name`: its deployment and every version. Blobs go at the next [`Registry::gc`].
    pub fn remove(&self, namespace: &str, name: &str) -> Result<usize> {
        let versions = self.versions(namespace, name)?;
        let existed = self.deployments.remove(key(&[namespace, name]))?.is_some();
        if versions.is_empty() && !existed {
            return Err(RegistryError::NoFunction(name.to_owned()));
        }
        for v in &versions {
            self.versions.remove(key(&[namespace, name, &v.version]))?;
        }
        self.db.flush()?;
        Ok(versions.len())
    }

    /// Removes one version that is not active.
    pub fn remove_version(&self, namespace: &str, name: &str, version: &str) -> Result<()> {
        let record = self.version(namespace, name, version)?;
        let mut deployment = self.deployment(namespace, name)?;
        let canary = deployment.canary.as_ref().map(|c| c.version.as_str());
        if deployment.active.as_deref() == Some(record.version.as_str())
            || canary == Some(record.version.as_str())
        {
            return Err(RegistryError::VersionActive {
                name: name.to_owned(),
                version: record.version,
            });
        }
        deployment.previous.retain(|v| *v != record.version);
        self.deployments
            .insert(key(&[namespace, name]), serde_json::to_vec(&deployment)?)?;
        self.versions
            .remove(key(&[namespace, name, &record.version]))?;
        self.db.flush()?;
        Ok(())
    }

    /// Deletes blobs no version refers to.
    pub fn gc(&self) -> Result<GcReport> {
        let mut referenced = BTreeSet::new();
        for kv in &self.versions {
            let record: VersionRecord = serde_json::from_slice(&kv?.1)?;
            referenced.insert(record.digest.trim_start_matches("sha256:").to_owned());
        }
        let mut report = GcReport::default();
        for entry in self.dir.read_dir("blobs")? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if referenced.contains(&name) {
                continue;
            }
            let size = entry.metadata().map_or(0, |m| m.len());
            self.dir.remove_file(Path::new("blobs").join(&name))?;
            report.blobs += 1;
            report.bytes += size;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::Failure as _;

    fn publish(
        r: &Registry,
        name: &str,
        version: &str,
        bytes: &[u8],
    ) -> anyhow::Result<VersionRecord> {
        let digest = r.put_blob(bytes)?;
        Ok(r.publish(NewVersion {
            namespace: "acme".into(),
            name: name.into(),
            version: version.into(),
            digest,
            ..NewVersion::default()
        })?)
    }

    #[test]
    fn blobs_are_addressed_by_content_and_checked_on_read() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let r = Registry::open(dir.path())?;
        let d = r.put_blob(b"component")?;
        assert_eq!(r.put_blob(b"component")?, d);
        assert_eq!(r.blob(&d)?, b"component");
        let hex = d.trim_start_matches("sha256:");
        std::fs::write(dir.path().join("blobs").join(hex), b"tampered")?;
        assert!(matches!(r.blob(&d), Err(RegistryError::Corrupt { .. })));
        assert!(matches!(
            r.blob("sha256:../../etc/passwd"),
            Err(RegistryError::InvalidDigest(_))
        ));
        Ok(())
    }

    #[test]
    fn versions_are_immutable_and_resolve_by_semver() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let r = Registry::open(dir.path())?;
        publish(&r, "filter", "1.2.0", b"a")?;
        publish(&r, "filter", "1.10.0", b"b")?;
        publish(&r, "filter", "2.0.0-rc.1", b"c")?;
        publish(&r, "filter", "2.0.0-rc.1", b"c")?;
        let digest = r.put_blob(b"other")?;
        let conflict = r.publish(NewVersion {
            namespace: "acme".into(),
            name: "filter".into(),
            version: "1.2.0".into(),
            digest,
            ..NewVersion::default()
        });
        assert!(matches!(conflict, Err(RegistryError::Conflict { .. })));
        assert_eq!(r.resolve("acme", "filter", "^1.2")?.version, "1.10.0");
        assert_eq!(r.resolve("acme", "filter", "latest")?.version, "1.10.0");
        assert_eq!(r.resolve("acme", "filter", "1.2.0")?.version, "1.2.0");
        assert_eq!(
            r.resolve("acme", "filter", ">=2.0.0-rc.1")?.version,
            "2.0.0-rc.1"
        );
        assert!(matches!(
            r.resolve("acme", "filter", "^3"),
            Err(RegistryError::NoVersion { .. })
        ));
        assert!(matches!(
            r.resolve("other", "filter", "^1"),
            Err(RegistryError::NoFunction(_))
        ));
        assert!(matches!(
            r.resolve("acme", "filter", "not a req"),
            Err(RegistryError::InvalidRequirement(..))
        ));
        let versions: Vec<_> = r
            .versions("acme", "filter")?
            .into_iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(versions, ["1.2.0", "1.10.0", "2.0.0-rc.1"]);
        assert!(matches!(
            publish_err(&r, "Bad Name")?,
            RegistryError::InvalidName(_)
        ));
        Ok(())
    }

    fn publish_err(r: &Registry, name: &str) -> anyhow::Result<RegistryError> {
        let digest = r.put_blob(b"x")?;
        r.publish(NewVersion {
            namespace: "acme".into(),
            name: name.into(),
            version: "1.0.0".into(),
            digest,
            ..NewVersion::default()
        })
        .failure()
    }

    #[test]
    fn activation_and_rollback_survive_a_reopen() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        {
            let r = Registry::open(dir.path())?;
            publish(&r, "filter", "1.0.0", b"a")?;
            publish(&r, "filter", "1.1.0", b"b")?;
            assert!(r.active()?.is_empty());
            r.activate("acme", "filter", "1.0.0")?;
            let d = r.activate("acme", "filter", "1.1.0")?;
            assert_eq!(d.previous, ["1.0.0"]);
            assert!(matches!(
                r.remove_version("acme", "filter", "1.1.0"),
                Err(RegistryError::VersionActive { .. })
            ));
        }
        let r = Registry::open(dir.path())?;
        assert_eq!(r.active()?[0].version, "1.1.0");
        let d = r.rollback("acme", "filter")?;
        assert_eq!(d.active.as_deref(), Some("1.0.0"));
        assert!(matches!(
            r.rollback("acme", "filter"),
            Err(RegistryError::NothingToRollBackTo { .. })
        ));
        assert_eq!(r.names("acme")?, ["filter"]);
        assert!(r.names("acm")?.is_empty());
        Ok(())
    }

    #[test]
    fn gc_removes_only_unreferenced_blobs() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let r = Registry::open(dir.path())?;
        let kept = publish(&r, "filter", "1.0.0", b"kept")?;
        publish(&r, "alert", "1.0.0", b"removed")?;
        r.put_blob(b"never published")?;
        r.remove("acme", "alert")?;
        let report = r.gc()?;
        assert_eq!(report.blobs, 2);
        assert_eq!(r.blob(&kept.digest)?, b"kept");
        assert!(matches!(
            r.remove("acme", "alert"),
            Err(RegistryError::NoFunction(_))
        ));
        Ok(())
    }
}
