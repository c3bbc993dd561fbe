//! One bucket's operations: get, set with TTL, increment, compare-and-swap, list.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::value::{encode, expiry_of, index_key, live, now_ms, parse_counter};
use super::{Bucket, KvError, PAGE};

/// A value as read for a later [`Bucket::swap`]: the stored bytes, header
/// included, are what the swap compares against.
#[derive(Debug, Clone)]
pub struct Observed {
    raw: Option<Vec<u8>>,
}

impl Observed {
    /// The value, or none when the key is absent or expired.
    pub fn value(&self) -> Option<&[u8]> {
        self.raw.as_deref().and_then(live)
    }
}

impl Bucket {
    /// The bucket's name (without its namespace).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes of keys and values the bucket holds.
    pub fn size(&self) -> u64 {
        self.state.size.load(Ordering::Relaxed).max(0) as u64
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.check_key(key)?;
        Ok(self
            .state
            .tree
            .get(key.as_bytes())?
            .and_then(|raw| live(&raw).map(<[u8]>::to_vec)))
    }

    pub fn exists(&self, key: &str) -> Result<bool, KvError> {
        self.check_key(key)?;
        Ok(self
            .state
            .tree
            .get(key.as_bytes())?
            .is_some_and(|raw| live(&raw).is_some()))
    }

    /// Sets `key`; with a TTL, the value expires after it.
    pub fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), KvError> {
        self.check_key(key)?;
        self.check_value(value)?;
        let expiry = match ttl {
            Some(ttl) if ttl.is_zero() => return Err(KvError::ZeroTtl),
            Some(ttl) => Some(now_ms().saturating_add(ttl.as_millis() as u64)),
            None => None,
        };
        let raw = encode(value, expiry);
        let old_len = self.state.tree.get(key.as_bytes())?.map(|old| old.len());
        self.check_quota(key, old_len, raw.len())?;
        if let Some(expiry) = expiry {
            // Indexed before the write, so a crash between the two leaves an
            // index entry the sweeper discards, never an expired value it misses.
            self.kv
                .inner
                .ttl_index
                .insert(&index_key(expiry, &self.tree_name, key), &[])?;
        }
        let old = self.state.tree.insert(key.as_bytes(), &raw)?;
        self.account(key, old.as_deref(), Some(&raw));
        Ok(())
    }

    pub fn delete(&self, key: &str) -> Result<(), KvError> {
        self.check_key(key)?;
        let old = self.state.tree.remove(key.as_bytes())?;
        self.account(key, old.as_deref(), None);
        Ok(())
    }

    /// Adds `delta` to the counter at `key` (absent counts as 0) and returns
    /// the new value; atomic across every caller. A TTL the key has is kept.
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        self.check_key(key)?;
        loop {
            let old = self.state.tree.get(key.as_bytes())?;
            let (current, expiry) = match old.as_deref() {
                Some(raw) => match live(raw) {
                    Some(value) => (parse_counter(key, value)?, expiry_of(raw)),
                    None => (0, None),
                },
                None => (0, None),
            };
            let new = current
                .checked_add(delta)
                .ok_or_else(|| KvError::Overflow(key.to_owned()))?;
            let raw = encode(new.to_string().as_bytes(), expiry);
            self.check_quota(key, old.as_ref().map(Vec::len), raw.len())?;
            if self
                .state
                .tree
                .compare_and_swap(key.as_bytes(), old.as_deref(), Some(&raw))?
            {
                self.account(key, old.as_deref(), Some(&raw));
                return Ok(new);
            }
        }
    }

    /// Reads `key` for a later [`Bucket::swap`].
    pub fn observe(&self, key: &str) -> Result<Observed, KvError> {
        self.check_key(key)?;
        Ok(Observed {
            raw: self.state.tree.get(key.as_bytes())?,
        })
    }

    /// Sets `key` to `value` if it still holds what `observed` saw; false
    /// (and `observed` refreshed to what it holds now) when another writer
    /// came first. Exactly one of several racing swaps wins.
    pub fn swap(&self, key: &str, observed: &mut Observed, value: &[u8]) -> Result<bool, KvError> {
        self.check_key(key)?;
        self.check_value(value)?;
        let raw = encode(value, None);
        self.check_quota(key, observed.raw.as_ref().map(Vec::len), raw.len())?;
        if self
            .state
            .tree
            .compare_and_swap(key.as_bytes(), observed.raw.as_deref(), Some(&raw))?
        {
            self.account(key, observed.raw.as_deref(), Some(&raw));
            observed.raw = Some(raw);
            Ok(true)
        } else {
            observed.raw = self.state.tree.get(key.as_bytes())?;
            Ok(false)
        }
    }

    /// Up to [`PAGE`] live keys starting with `prefix`, after `cursor`, and
    /// the cursor of the next page (none when this was the last).
    pub fn list(
        &self,
        prefix: &str,
        cursor: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), KvError> {
        let mut keys = Vec::new();
        let mut after = cursor.map(|c| c.as_bytes().to_vec());
        loop {
            let page = self
                .state
                .tree
                .scan(prefix.as_bytes(), after.as_deref(), PAGE)?;
            let full = page.len() == PAGE;
            for (k, v) in page {
                let is_live = live(&v).is_some();
                let key = String::from_utf8_lossy(&k).into_owned();
                after = Some(k);
                if is_live {
                    keys.push(key);
                    if keys.len() == PAGE {
                        let cursor = keys.last().cloned();
                        return Ok((keys, cursor));
                    }
                }
            }
            if !full {
                return Ok((keys, None));
            }
        }
    }

    fn check_key(&self, key: &str) -> Result<(), KvError> {
        let limit = self.kv.inner.config.max_key_bytes;
        if key.is_empty() {
            Err(KvError::EmptyKey)
        } else if key.len() > limit {
            Err(KvError::KeyTooLong {
                len: key.len(),
                limit,
            })
        } else {
            Ok(())
        }
    }

    fn check_value(&self, value: &[u8]) -> Result<(), KvError> {
        let limit = self.kv.inner.config.max_value_bytes;
        if value.len() > limit {
            return Err(KvError::ValueTooLarge {
                len: value.len(),
                limit,
            });
        }
        Ok(())
    }

    /// Refuses a write that would take the bucket over its quota. Checked
    /// before the write, so concurrent writers can overshoot it by at most
    /// one value each.
    fn check_quota(
        &self,
        key: &str,
        old_len: Option<usize>,
        new_len: usize,
    ) -> Result<(), KvError> {
        let quota = self.kv.inner.config.bucket_quota_bytes;
        let growth = match old_len {
            Some(old) => new_len as i64 - old as i64,
            None => (key.len() + new_len) as i64,
        };
        let would = self
            .state
            .size
            .load(Ordering::Relaxed)
            .saturating_add(growth);
        if growth > 0 && would > quota as i64 {
            return Err(KvError::QuotaExceeded {
                bucket: self.name.to_string(),
                would: would as u64,
                quota,
            });
        }
        let namespace = &self.state.namespace;
        let quota = namespace.quota.load(Ordering::Relaxed);
        let would = namespace
            .size
            .load(Ordering::Relaxed)
            .saturating_add(growth);
        if growth > 0 && would > quota.min(i64::MAX as u64) as i64 {
            return Err(KvError::NamespaceQuotaExceeded {
                namespace: namespace.name.clone(),
                would: would as u64,
                quota,
            });
        }
        Ok(())
    }

    fn account(&self, key: &str, old: Option<&[u8]>, new: Option<&[u8]>) {
        let size = |v: Option<&[u8]>| v.map_or(0, |v| (key.len() + v.len()) as i64);
        let change = size(new) - size(old);
        self.state.size.fetch_add(change, Ordering::Relaxed);
        self.state
            .namespace
            .size
            .fetch_add(change, Ordering::Relaxed);
    }
}
