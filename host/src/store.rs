//! The host's durable storage: a small trait of ordered byte trees, so a
//! second backend can be added without touching the callers, and its sled
//! implementation. One store per data directory serves key-value state and
//! the outbox.
//!
//! Everything above this trait (namespaces, TTL, limits, atomic increment,
//! queues) is built from the tree operations, compare-and-swap included.

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
    /// Deletes the tree called `name` and everything in it; whether it existed.
    fn drop_tree(&self, name: &str) -> anyhow::Result<bool>;
    /// Makes every write so far durable (on disk, synced) before returning.
    fn flush(&self) -> anyhow::Result<()>;
    /// A number never returned before, not even before a crash; increasing.
    fn next_id(&self) -> anyhow::Result<u64>;
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
        // A host that just stopped in this process may still be letting go
        // of the lock (its committer thread ends after the last handle):
        // a busy lock is tried again for up to 5 s before it is an error.
        let started = std::time::Instant::now();
        loop {
            let opened = sled::Config::new()
                .path(dir)
                // Writes are flushed before their event is acknowledged; this
                // background flush only bounds what other writers may lose.
                .flush_every_ms(Some(500))
                .open();
            match opened {
                Ok(db) => return Ok(Self { db }),
                Err(sled::Error::Io(e))
                    if lock_is_busy(&e)
                        && started.elapsed() < std::time::Duration::from_secs(5) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "cannot open the store in {} (is another host using it?)",
                            dir.display()
                        )
                    });
                }
            }
        }
    }
}

/// Whether sled refused to open because another handle holds the lock.
/// sled 0.34 wraps the `WouldBlock` from `flock` in an `ErrorKind::Other`
/// error, so the kind alone never says so; its message is the only sign.
fn lock_is_busy(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
}

impl Backend for Sled {
    fn tree(&self, name: &str) -> anyhow::Result<Arc<dyn Tree>> {
        let tree = self
            .db
            .open_tree(name)
            .with_context(|| format!("cannot open tree `{name}`"))?;
        Ok(Arc::new(SledTree(tree)))
    }

    fn drop_tree(&self, name: &str) -> anyhow::Result<bool> {
        self.db
            .drop_tree(name)
            .with_context(|| format!("cannot drop tree `{name}`"))
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
        self.db.flush().context("cannot flush the store")?;
        Ok(())
    }

    fn next_id(&self) -> anyhow::Result<u64> {
        self.db.generate_id().context("cannot generate an id")
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

/// Group commit: writers that need their writes on disk take a ticket after
/// writing and wait for a sync that covers it. One thread syncs at a time;
/// every writer whose ticket was taken before a sync started is released by
/// that one sync, however many there are.
#[derive(Debug, Clone)]
pub struct Committer {
    inner: Arc<CommitterInner>,
}

#[derive(Debug)]
struct CommitterInner {
    requested: std::sync::Mutex<u64>,
    wake: std::sync::Condvar,
    synced: tokio::sync::watch::Sender<Synced>,
}

/// How far syncing got: every ticket up to `upto` is durable; tickets up to
/// `failed_upto` (and above `upto`) were in a sync that failed.
#[derive(Debug, Clone, Default)]
struct Synced {
    upto: u64,
    failed_upto: u64,
    error: Option<Arc<str>>,
}

impl Committer {
    /// Starts the syncing thread for `backend`; it ends when the last
    /// handle is dropped.
    pub fn new(backend: Arc<dyn Backend>) -> anyhow::Result<Self> {
        let inner = Arc::new(CommitterInner {
            requested: std::sync::Mutex::new(0),
            wake: std::sync::Condvar::new(),
            synced: tokio::sync::watch::channel(Synced::default()).0,
        });
        let weak = Arc::downgrade(&inner);
        // Weak, so dropping the store's last user closes it at once (a
        // restart in the same process can reopen the directory).
        let backend = Arc::downgrade(&backend);
        std::thread::Builder::new()
            .name("brink-commit".into())
            .spawn(move || sync_loop(&weak, &backend))
            .context("starting the commit thread")?;
        Ok(Self { inner })
    }

    /// Takes a ticket for the writes made so far (call it after writing).
    pub fn ticket(&self) -> u64 {
        let mut requested = self
            .inner
            .requested
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *requested += 1;
        self.inner.wake.notify_one();
        *requested
    }

    /// Waits until the writes before `ticket` are durable.
    pub async fn synced(&self, ticket: u64) -> anyhow::Result<()> {
        let mut rx = self.inner.synced.subscribe();
        let state = rx
            .wait_for(|s| s.upto >= ticket || s.failed_upto >= ticket)
            .await
            .context("the commit thread stopped")?;
        if state.upto >= ticket {
            Ok(())
        } else {
            anyhow::bail!(
                "syncing to disk failed: {}",
                state.error.as_deref().unwrap_or("unknown error")
            )
        }
    }
}

fn sync_loop(inner: &std::sync::Weak<CommitterInner>, backend: &std::sync::Weak<dyn Backend>) {
    let mut done = 0;
    loop {
        let Some(committer) = inner.upgrade() else {
            return;
        };
        let target = {
            let mut requested = committer
                .requested
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *requested <= done {
                // Timed, so the thread notices when the committer is dropped.
                requested = committer
                    .wake
                    .wait_timeout(requested, std::time::Duration::from_millis(200))
                    .map(|(guard, _)| guard)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            *requested
        };
        if target <= done {
            continue;
        }
        let Some(store) = backend.upgrade() else {
            return;
        };
        let result = store.flush();
        drop(store);
        committer.synced.send_modify(|s| match &result {
            Ok(()) => s.upto = target,
            Err(e) => {
                s.failed_upto = target;
                s.error = Some(Arc::from(format!("{e:#}")));
            }
        });
        if let Err(e) = result {
            tracing::error!("syncing the store failed: {e:#}");
        }
        done = target;
    }
}

#[cfg(test)]
mod tests {
    use super::Sled;

    #[test]
    fn a_store_reopened_while_its_last_user_lets_go_waits_for_the_lock() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let first = Sled::open(dir.path())?;
        // Another thread still holds the store for a moment, as a host that
        // is stopping in the same process does.
        let holder = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(first);
        });
        let second = Sled::open(dir.path());
        holder
            .join()
            .map_err(|_| anyhow::anyhow!("the holder thread panicked"))?;
        second?;
        Ok(())
    }

    #[test]
    fn a_store_held_by_another_user_is_refused_with_a_clear_error() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let _held = Sled::open(dir.path())?;
        let Err(e) = Sled::open(dir.path()) else {
            anyhow::bail!("a second open of a held store succeeded");
        };
        assert!(
            format!("{e:#}").contains("is another host using it?"),
            "{e:#}"
        );
        Ok(())
    }
}
