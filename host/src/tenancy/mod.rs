//! Tenants: who may deploy to this node, with which quotas and grants, and
//! the bearer tokens that identify them.
//!
//! Tokens are 128 random bits; only their sha256 is stored (a fast hash is
//! enough for a high-entropy secret: nothing can be guessed from it), so a
//! copy of the data directory does not reveal them. A token is shown once,
//! when it is issued, and can be revoked by its id.

pub mod names;

use names::tenant_topic_prefix;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::store::{Backend, Tree};

/// Why a tenant call failed.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error(
        "`{0}` is not a valid tenant id: use 1-63 lowercase letters, digits, `-` or `_`, starting with a letter or digit"
    )]
    InvalidId(String),
    #[error("tenant `{0}` already exists")]
    Exists(String),
    #[error("no tenant `{0}`")]
    Unknown(String),
    #[error("tenant `{tenant}` has no token `{token}`")]
    UnknownToken { tenant: String, token: String },
    #[error("{0}")]
    InvalidGrant(String),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// A tenant's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quota {
    /// Functions it may have deployed at once.
    pub max_functions: u32,
    /// Guest memory per instance, in MiB.
    pub max_memory_mb: u64,
    /// Invocations per second across its functions (0: unlimited).
    pub max_invocations_per_s: u32,
    /// Key-value bytes (keys and values) across all its buckets, in MiB.
    pub max_kv_mb: u64,
    /// Bytes its functions may hold queued in the node's outboxes, across
    /// every uplink it is granted, in MiB.
    pub max_outbox_mb: u64,
    /// Invocations of its functions running at once, across all of them:
    /// its share of the node's instance pool. Further events wait in its
    /// own queue, so a tenant that saturates its share never takes another's.
    pub max_concurrency: u32,
    /// The longest time limit (`limits.timeout_ms`) its functions may ask for.
    pub max_timeout_ms: u64,
    /// Key-value buckets it may have: each is a tree in the node's store,
    /// so their number is bounded, not only their bytes.
    pub max_buckets: u32,
}

impl Default for Quota {
    fn default() -> Self {
        Self {
            max_functions: 20,
            max_memory_mb: 64,
            max_invocations_per_s: 1000,
            max_kv_mb: 64,
            max_outbox_mb: 64,
            max_concurrency: 32,
            max_timeout_ms: 10_000,
            max_buckets: 100,
        }
    }
}

/// What the operator lets a tenant use beyond its own namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantGrants {
    /// `[model.*]` of the node its functions may use.
    pub models: BTreeSet<String>,
    /// Uplinks of the node its functions may send to.
    pub uplinks: BTreeSet<String>,
    /// Whether its functions may post to webhooks (any URL the node reaches).
    pub webhooks: bool,
    /// MQTT topic prefixes beyond its own `t/<tenant>/` that its functions
    /// may subscribe to and publish under, such as `plant1/line3/`.
    pub topics: BTreeSet<String>,
}

impl TenantGrants {
    /// Refuses topic prefixes that are not plain topic levels ending in `/`:
    /// a wildcard or an empty prefix would grant every topic.
    pub fn check(&self) -> Result<(), TenantError> {
        for prefix in &self.topics {
            let plain = !prefix.is_empty()
                && prefix.ends_with('/')
                && !prefix.starts_with('$')
                && !prefix.starts_with('/')
                && !prefix.contains(['+', '#', '\0'])
                && !prefix.contains("//");
            if !plain {
                return Err(TenantError::InvalidGrant(format!(
                    "topic grant {prefix:?} must be whole topic levels ending in '/', such as \"plant1/line3/\": no wildcards, no leading '/' or '$', no empty level"
                )));
            }
        }
        Ok(())
    }

    /// The topic prefixes a tenant's functions may use: its own and the granted.
    pub fn topic_prefixes(&self, tenant: &str) -> Vec<String> {
        std::iter::once(tenant_topic_prefix(tenant))
            .chain(self.topics.iter().cloned())
            .collect()
    }
}

/// One token of a tenant (the secret itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub created_unix_ms: u64,
    pub revoked: bool,
}

/// A tenant as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    pub id: String,
    pub created_unix_ms: u64,
    pub quota: Quota,
    pub grants: TenantGrants,
    pub tokens: Vec<TokenInfo>,
}

#[derive(Debug, Serialize, Deserialize)]
struct TokenEntry {
    tenant: String,
    id: String,
}

/// The tenants of a node, on its store.
#[derive(Debug, Clone)]
pub struct Tenants {
    tenants: Arc<dyn Tree>,
    tokens: Arc<dyn Tree>,
    uploads: Arc<dyn Tree>,
    backend: Arc<dyn Backend>,
}

/// Checks a tenant id: it becomes part of topics, paths and tree names.
pub fn check_id(id: &str) -> Result<(), TenantError> {
    brink_registry::check_name(id).map_err(|_| TenantError::InvalidId(id.to_owned()))
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(hex::encode(buf))
}

impl Tenants {
    pub fn open(backend: Arc<dyn Backend>) -> anyhow::Result<Self> {
        Ok(Self {
            tenants: backend.tree("tenancy/tenants")?,
            tokens: backend.tree("tenancy/tokens")?,
            uploads: backend.tree("tenancy/uploads")?,
            backend,
        })
    }

    /// Creates `id` and returns it with its first token.
    pub fn create(
        &self,
        id: &str,
        quota: Quota,
        grants: TenantGrants,
    ) -> Result<(TenantRecord, String), TenantError> {
        check_id(id)?;
        grants.check()?;
        let record = TenantRecord {
            id: id.to_owned(),
            created_unix_ms: now_ms(),
            quota,
            grants,
            tokens: Vec::new(),
        };
        let value = serde_json::to_vec(&record).context("encoding the tenant")?;
        let swapped = self
            .tenants
            .compare_and_swap(id.as_bytes(), None, Some(&value))?;
        if !swapped {
            return Err(TenantError::Exists(id.to_owned()));
        }
        let token = self.issue_token(id)?;
        Ok((self.get(id)?, token))
    }

    /// Every tenant, by id.
    pub fn list(&self) -> Result<Vec<TenantRecord>, TenantError> {
        let mut all = Vec::new();
        let mut failed = None;
        self.tenants.for_each(&mut |_, v| {
            match serde_json::from_slice(v) {
                Ok(t) => all.push(t),
                Err(e) => failed = Some(e),
            }
            true
        })?;
        if let Some(e) = failed {
            return Err(anyhow::Error::from(e).context("reading tenants").into());
        }
        Ok(all)
    }

    pub fn get(&self, id: &str) -> Result<TenantRecord, TenantError> {
        let value = self
            .tenants
            .get(id.as_bytes())?
            .ok_or_else(|| TenantError::Unknown(id.to_owned()))?;
        Ok(serde_json::from_slice(&value).context("reading the tenant")?)
    }

    fn put(&self, record: &TenantRecord) -> Result<(), TenantError> {
        let value = serde_json::to_vec(record).context("encoding the tenant")?;
        self.tenants.insert(record.id.as_bytes(), &value)?;
        self.backend.flush()?;
        Ok(())
    }

    /// A new token for `id`: `brink_<token id>_<secret>`. Shown only now.
    pub fn issue_token(&self, id: &str) -> Result<String, TenantError> {
        let mut record = self.get(id)?;
        let token_id = random_hex(4)?;
        let token = format!("brink_{token_id}_{}", random_hex(16)?);
        let entry = serde_json::to_vec(&TokenEntry {
            tenant: id.to_owned(),
            id: token_id.clone(),
        })
        .context("encoding the token")?;
        self.tokens.insert(&hash(&token), &entry)?;
        record.tokens.push(TokenInfo {
            id: token_id,
            created_unix_ms: now_ms(),
            revoked: false,
        });
        self.put(&record)?;
        Ok(token)
    }

    /// Revokes token `token_id` of `id`: it authenticates nothing from now on.
    pub fn revoke_token(&self, id: &str, token_id: &str) -> Result<(), TenantError> {
        let mut record = self.get(id)?;
        let Some(info) = record.tokens.iter_mut().find(|t| t.id == token_id) else {
            return Err(TenantError::UnknownToken {
                tenant: id.to_owned(),
                token: token_id.to_owned(),
            });
        };
        info.revoked = true;
        let mut hashes = Vec::new();
        self.tokens.for_each(&mut |k, v| {
            if let Ok(entry) = serde_json::from_slice::<TokenEntry>(v)
                && entry.tenant == id
                && entry.id == token_id
            {
                hashes.push(k.to_vec());
            }
            true
        })?;
        for h in hashes {
            self.tokens.remove(&h)?;
        }
        self.put(&record)
    }

    /// Deletes `id` with its tokens and upload records: none of its tokens
    /// authenticates from now on. Its functions and data are the caller's.
    pub fn delete(&self, id: &str) -> Result<TenantRecord, TenantError> {
        let record = self.get(id)?;
        let mut hashes = Vec::new();
        self.tokens.for_each(&mut |k, v| {
            if serde_json::from_slice::<TokenEntry>(v).is_ok_and(|e| e.tenant == id) {
                hashes.push(k.to_vec());
            }
            true
        })?;
        for h in hashes {
            self.tokens.remove(&h)?;
        }
        let prefix = format!("{id}\0");
        loop {
            let page = self.uploads.scan(prefix.as_bytes(), None, 1000)?;
            if page.is_empty() {
                break;
            }
            for (k, _) in page {
                self.uploads.remove(&k)?;
            }
        }
        self.tenants.remove(id.as_bytes())?;
        self.backend.flush()?;
        Ok(record)
    }

    /// Updates the quota and grants of `id`.
    pub fn update(
        &self,
        id: &str,
        quota: Option<Quota>,
        grants: Option<TenantGrants>,
    ) -> Result<TenantRecord, TenantError> {
        let mut record = self.get(id)?;
        if let Some(quota) = quota {
            record.quota = quota;
        }
        if let Some(grants) = grants {
            grants.check()?;
            record.grants = grants;
        }
        self.put(&record)?;
        Ok(record)
    }

    /// The tenant a bearer token belongs to, and the token's id.
    pub fn authenticate(&self, token: &str) -> Result<Option<(String, String)>, TenantError> {
        if !token.starts_with("brink_") {
            return Ok(None);
        }
        let Some(entry) = self.tokens.get(&hash(token))? else {
            return Ok(None);
        };
        let entry: TokenEntry = serde_json::from_slice(&entry).context("reading a token")?;
        Ok(Some((entry.tenant, entry.id)))
    }

    /// Records that `tenant` uploaded the blob `digest`: only it may publish it.
    pub fn record_upload(&self, tenant: &str, digest: &str) -> Result<(), TenantError> {
        self.uploads
            .insert(format!("{tenant}\0{digest}").as_bytes(), b"")?;
        Ok(())
    }

    /// Whether `tenant` uploaded the blob `digest`.
    pub fn uploaded(&self, tenant: &str, digest: &str) -> Result<bool, TenantError> {
        Ok(self
            .uploads
            .get(format!("{tenant}\0{digest}").as_bytes())?
            .is_some())
    }

    /// Quota and grants of every tenant, by id: what the dispatcher enforces.
    pub fn quotas(&self) -> Result<BTreeMap<String, Quota>, TenantError> {
        Ok(self.list()?.into_iter().map(|t| (t.id, t.quota)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_authenticate_their_tenant_until_revoked() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let tenants = Tenants::open(Arc::new(crate::store::Sled::open(dir.path())?))?;
        let (acme, token) = tenants.create("acme", Quota::default(), TenantGrants::default())?;
        assert!(matches!(
            tenants.create("acme", Quota::default(), TenantGrants::default()),
            Err(TenantError::Exists(_))
        ));
        assert!(matches!(
            tenants.create("Not/Valid", Quota::default(), TenantGrants::default()),
            Err(TenantError::InvalidId(_))
        ));
        let second = tenants.issue_token("acme")?;
        assert_eq!(
            tenants.authenticate(&token)?,
            Some(("acme".to_owned(), acme.tokens[0].id.clone()))
        );
        assert_eq!(tenants.authenticate("brink_00_nope")?, None);
        tenants.revoke_token("acme", &acme.tokens[0].id)?;
        assert_eq!(tenants.authenticate(&token)?, None);
        assert!(tenants.authenticate(&second)?.is_some());
        let stored = tenants.get("acme")?;
        assert!(stored.tokens[0].revoked && !stored.tokens[1].revoked);
        // The secret is nowhere in what is stored.
        assert!(!serde_json::to_string(&stored)?.contains(&second));
        Ok(())
    }
}
