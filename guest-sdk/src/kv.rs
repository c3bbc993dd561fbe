//! Key-value state, kept by the host across events and restarts.
//!
//! Buckets are granted per function in the manifest (`kv = ["default"]`);
//! opening any other fails. Writes are durable before the event that caused
//! them is acknowledged.
//!
//! ```no_run
//! # fn main() -> brink_sdk::Result<()> {
//! use std::time::Duration;
//! let state = brink_sdk::kv::bucket("default")?;
//! let seen = state.increment("readings/t-1", 1)?;
//! state.set_with_ttl("last/t-1", b"21.5", Duration::from_secs(600))?;
//! let meta: Option<serde_json::Value> = brink_sdk::kv::bucket("devices")?.get_json("t-1")?;
//! # let _ = (seen, meta);
//! # Ok(())
//! # }
//! ```
//!
//! This is the standard `wasi:keyvalue@0.2.0-draft2` (so the raw bindings
//! also run on other hosts), plus Brink's TTL and prefix listing.

use std::time::Duration;

use crate::bindings::brink::edge::kv as ext;
use crate::bindings::wasi::keyvalue::{atomics, batch, store};
use crate::{Error, Result};

/// An open bucket.
#[derive(Debug)]
pub struct Bucket {
    inner: store::Bucket,
    name: String,
}

/// Opens bucket `name`; fails when the function is not granted it.
pub fn bucket(name: &str) -> Result<Bucket> {
    let inner = store::open(name).map_err(|e| error(name, e))?;
    Ok(Bucket {
        inner,
        name: name.to_owned(),
    })
}

fn error(bucket: &str, e: store::Error) -> Error {
    match e {
        store::Error::AccessDenied => Error::internal(format!(
            "bucket `{bucket}` is not granted to this function (add it to `kv = [...]` in the manifest)"
        )),
        store::Error::NoSuchStore => Error::internal(format!("no bucket `{bucket}`")),
        store::Error::Other(message) => Error::internal(format!("bucket `{bucket}`: {message}")),
    }
}

impl Bucket {
    fn err(&self, e: store::Error) -> Error {
        error(&self.name, e)
    }

    /// The bucket's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value of `key`, if set (and not expired).
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.inner.get(key).map_err(|e| self.err(e))
    }

    /// The value of `key` parsed as JSON.
    pub fn get_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.get(key)? {
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::internal(format!(
                    "`{key}` in bucket `{}` is not the JSON expected: {e}",
                    self.name
                ))
            }),
            None => Ok(None),
        }
    }

    /// Sets `key` to `value`, permanently.
    pub fn set(&self, key: &str, value: impl AsRef<[u8]>) -> Result<()> {
        self.inner.set(key, value.as_ref()).map_err(|e| self.err(e))
    }

    /// Sets `key` to `value` as JSON.
    pub fn set_json<T: serde::Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        self.set(key, to_json(value)?)
    }

    /// Sets `key` to `value`; it reads as absent after `ttl`.
    pub fn set_with_ttl(&self, key: &str, value: impl AsRef<[u8]>, ttl: Duration) -> Result<()> {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        ext::set_with_ttl(&self.inner, key, value.as_ref(), ms).map_err(|e| self.err(e))
    }

    /// Sets `key` to `value` as JSON; it reads as absent after `ttl`.
    pub fn set_json_with_ttl<T: serde::Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<()> {
        self.set_with_ttl(key, to_json(value)?, ttl)
    }

    /// Removes `key` (no error when it is absent).
    pub fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).map_err(|e| self.err(e))
    }

    /// Whether `key` is set (and not expired).
    pub fn exists(&self, key: &str) -> Result<bool> {
        self.inner.exists(key).map_err(|e| self.err(e))
    }

    /// Adds `delta` to the counter at `key` (absent: 0) and returns the new
    /// value; atomic across every instance of every function. Counters are
    /// stored as decimal text.
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        atomics::increment(&self.inner, key, delta).map_err(|e| self.err(e))
    }

    /// Atomically replaces the value of `key` with what `f` makes of the
    /// current one (none: absent), retrying when another writer came first;
    /// returns the value written. `f` may run more than once.
    pub fn update(
        &self,
        key: &str,
        mut f: impl FnMut(Option<&[u8]>) -> Vec<u8>,
    ) -> Result<Vec<u8>> {
        let mut cas = atomics::Cas::new(&self.inner, key).map_err(|e| self.err(e))?;
        loop {
            let current = cas.current().map_err(|e| self.err(e))?;
            let new = f(current.as_deref());
            match atomics::swap(cas, &new) {
                Ok(()) => return Ok(new),
                Err(atomics::CasError::CasFailed(again)) => cas = again,
                Err(atomics::CasError::StoreError(e)) => return Err(self.err(e)),
            }
        }
    }

    /// Sets `key` to `new` only if it still holds `expected` (none: absent);
    /// false when it held something else.
    pub fn compare_and_swap(&self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> Result<bool> {
        let cas = atomics::Cas::new(&self.inner, key).map_err(|e| self.err(e))?;
        if cas.current().map_err(|e| self.err(e))?.as_deref() != expected {
            return Ok(false);
        }
        match atomics::swap(cas, new) {
            Ok(()) => Ok(true),
            Err(atomics::CasError::CasFailed(_)) => Ok(false),
            Err(atomics::CasError::StoreError(e)) => Err(self.err(e)),
        }
    }

    /// Every key starting with `prefix`, in byte order (all pages).
    pub fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = ext::list_prefix(&self.inner, prefix, cursor.as_deref())
                .map_err(|e| self.err(e))?;
            keys.extend(page.keys);
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(keys),
            }
        }
    }

    /// Every key of the bucket (all pages).
    pub fn keys(&self) -> Result<Vec<String>> {
        self.keys_with_prefix("")
    }

    /// The values of `keys`, in order.
    pub fn get_many(&self, keys: &[String]) -> Result<Vec<(String, Option<Vec<u8>>)>> {
        batch::get_many(&self.inner, keys).map_err(|e| self.err(e))
    }

    /// Sets every pair; not atomic (some may be set when one fails).
    pub fn set_many(&self, pairs: &[(String, Vec<u8>)]) -> Result<()> {
        batch::set_many(&self.inner, pairs).map_err(|e| self.err(e))
    }

    /// Removes every key.
    pub fn delete_many(&self, keys: &[String]) -> Result<()> {
        batch::delete_many(&self.inner, keys).map_err(|e| self.err(e))
    }
}

fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::internal(format!("cannot encode JSON: {e}")))
}
