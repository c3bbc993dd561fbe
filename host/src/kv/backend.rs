//! The storage under key-value state: a small trait of ordered byte trees,
//! so a second backend can be added without touching the callers, and its
//! sled implementation.
//!
//! Everything above this trait (namespaces, TTL, limits, atomic increment)
//! is built from the five tree operations, compare-and-swap included.

use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;

/// A durable store of named, ordered byte trees.
pub trait Backend: Send + Sync + Debug {
    /// The tree called `name`, created empty if it does not exist.
    fn tree(&self, name: &str) -> anyhow::Result<Arc<dyn Tree>>;
    /// The names of the trees that exist.
    fn tree_names(&self) -> anyhow::Result<Vec<String>>;
    /// Makes every write so far durable (on disk, synced) before returning.
    fn flush(&self) -> anyhow::Result<()>;
}

/// One ordered map from byte keys to byte values.
pub trait Tree: Send + Sync + Debug {
    fn get(&self, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>>;
    /// Sets `key`; returns the value it replaced.
    fn insert(&self, key: &[u8], value: &[u8]) -> anyhow::Result<Option<Vec<u8>>>;
    /// Removes `key`; returns the value it had.
    fn remove(&self, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>>;
    /// Atomically sets `key` to `new` (none removes it) if its value is
    /// still `old` (none: absent); false when it was not.
    fn compare_and_swap(
        &self,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> anyhow::Result<bool>;
    /// Up to `limit` entries whose keys start with `prefix` and come after
    /// `after` (when given), in key order.
    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Calls `f` with every entry (key, value) in key order, until it returns false.
    fn for_each(&self, f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> anyhow::Result<()>;
}

/// sled, in one directory.
#[derive(Debug, Clone)]
pub struct Sled {
    db: sled::Db,
}

impl Sled {
    /// Opens (or creates) the database in `dir`. sled holds a lock on it:
    /// a second host on the same directory is refused with a clear error.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
        let db = sled::Config::new()
            .path(dir)
            // Writes are flushed before their event is acknowledged; this
            // background flush only bounds what other writers may lose.
            .flush_every_ms(Some(500))
            .open()
            .with_context(|| {
                format!(
                    "cannot open the key-value store in {} (is another host using it?)",
                    dir.display()
                )
            })?;
        Ok(Self { db })
    }
}

impl Backend for Sled {
    fn tree(&self, name: &str) -> anyhow::Result<Arc<dyn Tree>> {
        let tree = self
            .db
            .open_tree(name)
            .with_context(|| format!("cannot open tree `{name}`"))?;
        Ok(Arc::new(SledTree(tree)))
    }

    fn tree_names(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .db
            .tree_names()
            .into_iter()
            .filter_map(|n| String::from_utf8(n.to_vec()).ok())
            .collect())
    }

    fn flush(&self) -> anyhow::Result<()> {
        self.db
            .flush()
            .context("cannot flush the key-value store")?;
        Ok(())
    }
}

#[derive(Debug)]
struct SledTree(sled::Tree);

impl Tree for SledTree {
    fn get(&self, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self.0.get(key)?.map(|v| v.to_vec()))
    }

    fn insert(&self, key: &[u8], value: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self.0.insert(key, value)?.map(|v| v.to_vec()))
    }

    fn remove(&self, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self.0.remove(key)?.map(|v| v.to_vec()))
    }

    fn compare_and_swap(
        &self,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> anyhow::Result<bool> {
        Ok(self.0.compare_and_swap(key, old, new)?.is_ok())
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let iter = match after {
            Some(after) if after >= prefix => {
                let mut start = after.to_vec();
                // The smallest key after `after`.
                start.push(0);
                self.0.range(start..)
            }
            _ => self.0.range(prefix.to_vec()..),
        };
        let mut out = Vec::new();
        for entry in iter {
            let (k, v) = entry?;
            if !k.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn for_each(&self, f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> anyhow::Result<()> {
        for entry in self.0.iter() {
            let (k, v) = entry?;
            if !f(&k, &v) {
                break;
            }
        }
        Ok(())
    }
}
