//! Key-value state: namespaced buckets with TTL, atomic updates and limits,
//! on a [`Backend`] (sled by default).
//!
//! A bucket lives in its own tree named `<namespace>/kv/<bucket>`, where the
//! namespace is the app (and, once tenants exist, the tenant): two apps'
//! `default` buckets never meet. Each stored value starts with a header: `0`
//! for a permanent value, or `1` and its expiry (milliseconds since the Unix
//! epoch, big-endian) for one with a TTL. Expired values read as absent and
//! are swept by [`Kv::sweep_expired`] through an index tree ordered by expiry.
//!
//! Counters (`increment`) are stored as decimal text, as Redis does, so
//! `get` and the CLI show them as they are.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

pub use crate::store::{Backend, Sled, Tree};

mod bucket;
mod value;

pub use bucket::Observed;
pub(crate) use value::{encode, expiry_of, live};
use value::{index_expiry, now_ms, parse_index_key};

const MIB: usize = 1 << 20;
/// The tree that indexes values with a TTL by expiry.
const TTL_INDEX: &str = "__brink/ttl";
/// Keys one `list` call returns at most.
pub const PAGE: usize = 1000;

/// Limits and policy of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvConfig {
    /// The longest key, in bytes.
    pub max_key_bytes: usize,
    /// The largest value, in bytes.
    pub max_value_bytes: usize,
    /// Bytes (keys and values) one bucket may hold.
    pub bucket_quota_bytes: u64,
    /// Whether the writes of an invocation are flushed to disk before it
    /// returns (and so before its event is acknowledged).
    pub durable: bool,
}

impl Default for KvConfig {
    fn default() -> Self {
        Self {
            max_key_bytes: 1024,
            max_value_bytes: MIB,
            bucket_quota_bytes: 256 * MIB as u64,
            durable: true,
        }
    }
}

/// What went wrong with a key-value operation; every one is reported to the
/// guest, none traps it.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("bucket `{0}` is not granted to this function")]
    AccessDenied(String),
    #[error("`{0}` is not a valid bucket name (1 to 64 characters: a-z, 0-9, `-`, `_`, `.`)")]
    BadBucketName(String),
    #[error("there is no bucket `{0}`; a value written to it creates it")]
    NoSuchBucket(String),
    #[error("a key of {len} bytes is over the limit of {limit} bytes")]
    KeyTooLong { len: usize, limit: usize },
    #[error("keys must not be empty")]
    EmptyKey,
    #[error("a value of {len} bytes is over the limit of {limit} bytes")]
    ValueTooLarge { len: usize, limit: usize },
    #[error("bucket `{bucket}` would hold {would} bytes, over its quota of {quota} bytes")]
    QuotaExceeded {
        bucket: String,
        would: u64,
        quota: u64,
    },
    #[error(
        "namespace `{namespace}` would hold {would} bytes across its buckets, over its quota of {quota} bytes"
    )]
    NamespaceQuotaExceeded {
        namespace: String,
        would: u64,
        quota: u64,
    },
    #[error(
        "namespace `{namespace}` has {quota} buckets, its quota: a new bucket `{bucket}` would be one more (use an existing bucket, or ask the operator for a larger max_buckets)"
    )]
    TooManyBuckets {
        namespace: String,
        bucket: String,
        quota: u64,
    },
    #[error("the value of `{0}` is not a decimal 64-bit integer, so it cannot be incremented")]
    NotAnInteger(String),
    #[error("incrementing `{0}` overflows a 64-bit integer")]
    Overflow(String),
    #[error("the TTL must be above 0 ms")]
    ZeroTtl,
    #[error("the key-value store failed: {0:#}")]
    Backend(#[from] anyhow::Error),
}

/// The key-value store of a host: cheap to clone, shared by every function.
#[derive(Debug, Clone)]
pub struct Kv {
    inner: Arc<KvInner>,
}

#[derive(Debug)]
struct KvInner {
    backend: Arc<dyn Backend>,
    config: KvConfig,
    ttl_index: Arc<dyn Tree>,
    buckets: RwLock<HashMap<String, Arc<BucketState>>>,
    /// Usage of each namespace with an open bucket. Changed only under the
    /// `buckets` write lock, so a namespace is counted before any of its
    /// buckets takes writes.
    namespaces: RwLock<HashMap<String, Arc<NamespaceUsage>>>,
}

#[derive(Debug)]
struct BucketState {
    tree: Arc<dyn Tree>,
    /// Bytes of keys and values held, counted once at first open and then
    /// kept up to date by every write.
    size: AtomicI64,
    namespace: Arc<NamespaceUsage>,
}

/// Bytes a namespace (a tenant) holds across its buckets, and its quota.
#[derive(Debug)]
struct NamespaceUsage {
    name: String,
    size: AtomicI64,
    /// `u64::MAX`: none.
    quota: AtomicU64,
    /// Buckets it may have; `u64::MAX`: any number.
    max_buckets: AtomicU64,
}

/// One bucket of one namespace.
#[derive(Debug, Clone)]
pub struct Bucket {
    kv: Kv,
    name: Arc<str>,
    tree_name: Arc<str>,
    state: Arc<BucketState>,
}

impl Kv {
    /// The store on sled in `dir`.
    pub fn open_sled(dir: &Path, config: KvConfig) -> anyhow::Result<Self> {
        Self::new(Arc::new(Sled::open(dir)?), config)
    }

    /// The store on `backend`.
    pub fn new(backend: Arc<dyn Backend>, config: KvConfig) -> anyhow::Result<Self> {
        let ttl_index = backend.tree(TTL_INDEX)?;
        Ok(Self {
            inner: Arc::new(KvInner {
                backend,
                config,
                ttl_index,
                buckets: RwLock::new(HashMap::new()),
                namespaces: RwLock::new(HashMap::new()),
            }),
        })
    }

    /// The store's limits and policy.
    pub fn config(&self) -> &KvConfig {
        &self.inner.config
    }

    /// Bucket `name` of `namespace`.
    pub fn bucket(&self, namespace: &str, name: &str) -> Result<Bucket, KvError> {
        check_bucket_name(name)?;
        let full_name = tree_name(namespace, name);
        let known = self
            .inner
            .buckets
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&full_name)
            .cloned();
        let state = match known {
            Some(state) => state,
            None => {
                let mut buckets = self
                    .inner
                    .buckets
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                match buckets.get(&full_name) {
                    Some(state) => state.clone(),
                    None => {
                        let usage = self.namespace_usage(namespace)?;
                        self.check_bucket_count(&usage, namespace, name, &full_name)?;
                        let tree = self.inner.backend.tree(&full_name)?;
                        let size = tree_size(tree.as_ref())?;
                        let state = Arc::new(BucketState {
                            tree,
                            size: AtomicI64::new(size),
                            namespace: usage,
                        });
                        buckets.insert(full_name.clone(), state.clone());
                        state
                    }
                }
            }
        };
        Ok(Bucket {
            kv: self.clone(),
            name: Arc::from(name),
            tree_name: Arc::from(full_name),
            state,
        })
    }

    /// Bucket `name` of `namespace` if it exists, else [`KvError::NoSuchBucket`]:
    /// a read never creates a bucket, so reads of made-up names cannot grow
    /// a namespace's bucket list past any quota.
    pub fn existing_bucket(&self, namespace: &str, name: &str) -> Result<Bucket, KvError> {
        check_bucket_name(name)?;
        let full_name = tree_name(namespace, name);
        let open = self
            .inner
            .buckets
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&full_name);
        if !open && !self.inner.backend.tree_names()?.contains(&full_name) {
            return Err(KvError::NoSuchBucket(name.to_owned()));
        }
        self.bucket(namespace, name)
    }

    /// The usage of `namespace`, counted on first use; the caller holds the
    /// `buckets` write lock, or no bucket of the namespace is open yet.
    fn namespace_usage(&self, namespace: &str) -> Result<Arc<NamespaceUsage>, KvError> {
        if let Some(usage) = self.namespace_of(namespace) {
            return Ok(usage);
        }
        let mut size = 0;
        for bucket in self.buckets(namespace)? {
            size += tree_size(
                self.inner
                    .backend
                    .tree(&tree_name(namespace, &bucket))?
                    .as_ref(),
            )?;
        }
        let usage = Arc::new(NamespaceUsage {
            name: namespace.to_owned(),
            size: AtomicI64::new(size),
            quota: AtomicU64::new(u64::MAX),
            max_buckets: AtomicU64::new(u64::MAX),
        });
        self.inner
            .namespaces
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(namespace.to_owned(), usage.clone());
        Ok(usage)
    }

    /// Holds `namespace` to `quota` bytes across all its buckets from now on
    /// (none: only each bucket's quota). Writes that would go over it fail
    /// with [`KvError::NamespaceQuotaExceeded`]; deletes always succeed.
    pub fn set_namespace_quota(&self, namespace: &str, quota: Option<u64>) -> Result<(), KvError> {
        self.counted(namespace)?
            .quota
            .store(quota.unwrap_or(u64::MAX), Ordering::Relaxed);
        Ok(())
    }

    /// Caps how many buckets `namespace` may have (`None`: any number).
    pub fn set_namespace_bucket_quota(
        &self,
        namespace: &str,
        max: Option<u64>,
    ) -> Result<(), KvError> {
        self.counted(namespace)?
            .max_buckets
            .store(max.unwrap_or(u64::MAX), Ordering::Relaxed);
        Ok(())
    }

    /// Refuses to create bucket `full_name` past its namespace's count; an
    /// existing bucket opens whatever the count. The caller holds the
    /// `buckets` write lock, so two new buckets cannot both take the last place.
    fn check_bucket_count(
        &self,
        usage: &NamespaceUsage,
        namespace: &str,
        name: &str,
        full_name: &str,
    ) -> Result<(), KvError> {
        let max = usage.max_buckets.load(Ordering::Relaxed);
        if max == u64::MAX
            || self
                .inner
                .backend
                .tree_names()?
                .iter()
                .any(|t| t == full_name)
        {
            return Ok(());
        }
        if self.buckets(namespace)?.len() as u64 >= max {
            return Err(KvError::TooManyBuckets {
                namespace: namespace.to_owned(),
                bucket: name.to_owned(),
                quota: max,
            });
        }
        Ok(())
    }

    /// Bytes of keys and values `namespace` holds across its buckets.
    pub fn namespace_size(&self, namespace: &str) -> Result<u64, KvError> {
        Ok(self.counted(namespace)?.size.load(Ordering::Relaxed).max(0) as u64)
    }

    /// The usage of `namespace`, counting it first (under the `buckets`
    /// write lock) only when it is not counted yet.
    fn counted(&self, namespace: &str) -> Result<Arc<NamespaceUsage>, KvError> {
        if let Some(usage) = self.namespace_of(namespace) {
            return Ok(usage);
        }
        let _counting = self
            .inner
            .buckets
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        self.namespace_usage(namespace)
    }

    fn namespace_of(&self, namespace: &str) -> Option<Arc<NamespaceUsage>> {
        self.inner
            .namespaces
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(namespace)
            .cloned()
    }

    /// Bytes held by each namespace counted so far (each with a bucket open
    /// or a quota set), by namespace.
    pub fn namespace_sizes(&self) -> Vec<(String, u64)> {
        self.inner
            .namespaces
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(ns, u)| (ns.clone(), u.size.load(Ordering::Relaxed).max(0) as u64))
            .collect()
    }

    /// Deletes every bucket of `namespace` with all its keys, and forgets
    /// its usage and quota; the names of the buckets deleted. Handles to
    /// them still held see the data gone; the caller stops their users first.
    pub fn drop_namespace(&self, namespace: &str) -> Result<Vec<String>, KvError> {
        let mut buckets = self
            .inner
            .buckets
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let names = self.buckets(namespace)?;
        for name in &names {
            let full_name = tree_name(namespace, name);
            buckets.remove(&full_name);
            self.inner.backend.drop_tree(&full_name)?;
        }
        self.inner
            .namespaces
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(namespace);
        Ok(names)
    }

    /// The buckets of `namespace` that exist.
    pub fn buckets(&self, namespace: &str) -> Result<Vec<String>, KvError> {
        let prefix = tree_name(namespace, "");
        Ok(self
            .inner
            .backend
            .tree_names()?
            .into_iter()
            .filter_map(|n| n.strip_prefix(&prefix).map(str::to_owned))
            .collect())
    }

    /// Makes every write so far durable. Concurrent callers share one sync
    /// (group commit): a caller whose writes a sync in progress already
    /// covers waits for it instead of starting another.
    pub fn flush(&self) -> anyhow::Result<()> {
        self.inner.backend.flush()
    }

    /// Removes every value whose TTL has passed; returns how many.
    pub fn sweep_expired(&self) -> anyhow::Result<usize> {
        let now = now_ms();
        let mut removed = 0;
        loop {
            let due = self.inner.ttl_index.scan(&[], None, PAGE)?;
            let due: Vec<_> = due
                .into_iter()
                .take_while(|(k, _)| index_expiry(k).is_some_and(|e| e <= now))
                .collect();
            if due.is_empty() {
                return Ok(removed);
            }
            for (index_key, _) in due {
                if let Some((expiry, tree, key)) = parse_index_key(&index_key) {
                    let bucket = self
                        .inner
                        .buckets
                        .read()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get(tree)
                        .cloned();
                    let tree_handle = match &bucket {
                        Some(b) => b.tree.clone(),
                        None => self.inner.backend.tree(tree)?,
                    };
                    if let Some(raw) = tree_handle.get(key)?
                        && expiry_of(&raw) == Some(expiry)
                        && tree_handle.compare_and_swap(key, Some(&raw), None)?
                    {
                        removed += 1;
                        let freed = (key.len() + raw.len()) as i64;
                        match bucket {
                            Some(b) => {
                                b.size.fetch_sub(freed, Ordering::Relaxed);
                                b.namespace.size.fetch_sub(freed, Ordering::Relaxed);
                            }
                            None => {
                                let usage = tree
                                    .rsplit_once("/kv/")
                                    .and_then(|(ns, _)| self.namespace_of(ns));
                                if let Some(usage) = usage {
                                    usage.size.fetch_sub(freed, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                }
                self.inner.ttl_index.remove(&index_key)?;
            }
        }
    }

    /// Sweeps expired values every `interval` until the store is dropped.
    pub fn spawn_sweeper(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let kv = Kv { inner };
                match tokio::task::spawn_blocking(move || kv.sweep_expired()).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => tracing::debug!(removed = n, "swept expired keys"),
                    Ok(Err(e)) => tracing::warn!("sweeping expired keys failed: {e:#}"),
                    Err(e) => tracing::warn!("the TTL sweeper stopped: {e}"),
                }
            }
        })
    }
}

fn tree_size(tree: &dyn Tree) -> Result<i64, KvError> {
    let mut size = 0i64;
    tree.for_each(&mut |k, v| {
        size += (k.len() + v.len()) as i64;
        true
    })?;
    Ok(size)
}

fn tree_name(namespace: &str, bucket: &str) -> String {
    format!("{namespace}/kv/{bucket}")
}

fn check_bucket_name(name: &str) -> Result<(), KvError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(KvError::BadBucketName(name.to_owned()))
    }
}

/// Whether `name` may name a bucket.
pub fn valid_bucket_name(name: &str) -> bool {
    check_bucket_name(name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::value::index_key;
    use super::*;

    #[test]
    fn a_namespace_quota_holds_across_buckets_and_survives_a_reopen() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        {
            let kv = Kv::open_sled(dir.path(), KvConfig::default())?;
            kv.bucket("tenant:a", "one")?.set("k", &[0; 600], None)?;
            kv.bucket("app", "other")?.set("k", &[0; 900], None)?;
            kv.flush()?;
        }
        let kv = Kv::open_sled(dir.path(), KvConfig::default())?;
        kv.set_namespace_quota("tenant:a", Some(1000))?;
        let used = kv.namespace_size("tenant:a")?;
        assert!((600..700).contains(&used), "counted from disk: {used}");
        let two = kv.bucket("tenant:a", "two")?;
        let refused = two.set("k", &[0; 500], None);
        assert!(
            matches!(refused, Err(KvError::NamespaceQuotaExceeded { ref namespace, quota: 1000, .. }) if namespace == "tenant:a"),
            "{refused:?}"
        );
        // Another namespace is not held to it; a delete makes room.
        kv.bucket("app", "other")?.set("k2", &[0; 900], None)?;
        kv.bucket("tenant:a", "one")?.delete("k")?;
        two.set("k", &[0; 500], None)?;
        assert_eq!(
            kv.namespace_size("tenant:a")?,
            kv.bucket("tenant:a", "two")?.size()
        );
        Ok(())
    }

    fn open() -> anyhow::Result<(Kv, tempfile::TempDir)> {
        let dir = tempfile::tempdir()?;
        Ok((Kv::open_sled(dir.path(), KvConfig::default())?, dir))
    }

    #[test]
    fn values_round_trip_with_and_without_expiry() {
        assert_eq!(live(&encode(b"abc", None)), Some(&b"abc"[..]));
        let future = now_ms() + 60_000;
        assert_eq!(live(&encode(b"abc", Some(future))), Some(&b"abc"[..]));
        assert_eq!(expiry_of(&encode(b"abc", Some(future))), Some(future));
        assert_eq!(live(&encode(b"abc", Some(now_ms() - 1))), None);
        // Garbage (a truncated header) reads as absent, never as a panic.
        assert_eq!(live(&[1, 0, 0]), None);
        assert_eq!(live(&[]), None);
    }

    #[test]
    fn index_keys_parse_back_and_sort_by_expiry() {
        let early = index_key(5, "app/kv/default", "k/1");
        let late = index_key(6, "a", "");
        assert!(early < late);
        assert_eq!(
            parse_index_key(&early),
            Some((5, "app/kv/default", &b"k/1"[..]))
        );
        assert_eq!(parse_index_key(&early[..9]), None);
    }

    #[test]
    fn scan_respects_prefix_cursor_and_limit() -> anyhow::Result<()> {
        let (kv, _dir) = open()?;
        let tree = kv.inner.backend.tree("t")?;
        for k in ["a", "b/1", "b/2", "b/3", "c"] {
            tree.insert(k.as_bytes(), b"v")?;
        }
        let keys = |entries: Vec<(Vec<u8>, Vec<u8>)>| {
            entries
                .into_iter()
                .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(tree.scan(b"b/", None, 10)?), ["b/1", "b/2", "b/3"]);
        assert_eq!(keys(tree.scan(b"b/", None, 2)?), ["b/1", "b/2"]);
        assert_eq!(keys(tree.scan(b"b/", Some(b"b/2"), 10)?), ["b/3"]);
        // A cursor before the prefix starts at the prefix.
        assert_eq!(
            keys(tree.scan(b"b/", Some(b"a"), 10)?),
            ["b/1", "b/2", "b/3"]
        );
        assert_eq!(keys(tree.scan(b"", Some(b"b/3"), 10)?), ["c"]);
        Ok(())
    }

    #[test]
    fn compare_and_swap_distinguishes_absent_from_present() -> anyhow::Result<()> {
        let (kv, _dir) = open()?;
        let tree = kv.inner.backend.tree("t")?;
        assert!(tree.compare_and_swap(b"k", None, Some(b"1"))?);
        assert!(!tree.compare_and_swap(b"k", None, Some(b"2"))?);
        assert!(tree.compare_and_swap(b"k", Some(b"1"), None)?);
        assert_eq!(tree.get(b"k")?, None);
        Ok(())
    }

    #[test]
    fn bucket_size_follows_writes_and_is_recounted_on_reopen() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        {
            let kv = Kv::open_sled(dir.path(), KvConfig::default())?;
            let b = kv.bucket("app", "default")?;
            b.set("ab", b"1234", None)?; // 2 + header 1 + 4
            assert_eq!(b.size(), 7);
            b.set("ab", b"12", None)?;
            assert_eq!(b.size(), 5);
            b.increment("n", 10)?; // 1 + header 1 + "10"
            assert_eq!(b.size(), 9);
            b.delete("ab")?;
            assert_eq!(b.size(), 4);
            kv.flush()?;
        }
        let kv = Kv::open_sled(dir.path(), KvConfig::default())?;
        assert_eq!(kv.bucket("app", "default")?.size(), 4);
        Ok(())
    }

    #[test]
    fn increment_keeps_a_ttl_and_refuses_overflow() -> anyhow::Result<()> {
        let (kv, _dir) = open()?;
        let b = kv.bucket("app", "default")?;
        b.set("n", b"41", Some(Duration::from_secs(60)))?;
        assert_eq!(b.increment("n", 1)?, 42);
        let raw = b.state.tree.get(b"n")?.unwrap_or_default();
        assert!(expiry_of(&raw).is_some());
        b.set("max", i64::MAX.to_string().as_bytes(), None)?;
        assert!(matches!(b.increment("max", 1), Err(KvError::Overflow(_))));
        Ok(())
    }

    #[test]
    fn bucket_names_are_checked() -> anyhow::Result<()> {
        let (kv, _dir) = open()?;
        for bad in ["", "UPPER", "a/b", "white space", &"x".repeat(65)] {
            assert!(
                matches!(kv.bucket("app", bad), Err(KvError::BadBucketName(_))),
                "{bad}"
            );
        }
        Ok(())
    }
}
