//! `wasi:keyvalue@0.2.0-draft`: the version wasmtime's own keyvalue host and
//! wasmCloud link, on the same buckets, grants and limits as `draft2`.
//!
//! It differs from `draft2` in three ways, each mapped here:
//! - the list cursor is a `u64`: an offset into the bucket's keys in order,
//!   so a cursor means the same in every instance and after a restart (a
//!   key set or deleted between pages shifts the rest, as the draft allows);
//! - `increment` takes and returns a `u64`: a counter below zero, or a
//!   delta past `i64::MAX`, is an error rather than a wrapped number;
//! - it has no compare-and-swap, and `get-many` answers `none` for a key
//!   that is not there instead of the key with no value.

use wasmtime::component::{Linker, Resource};

use super::{BucketHandle, KeyValue, KvView, view};
use crate::bindings::wasi::keyvalue0_2_0_draft::{atomics, batch, store};
use crate::kv::{Bucket, KvError};
use crate::state::HostState;

/// The interfaces of this version.
pub const INTERFACES: &[&str] = &[
    "wasi:keyvalue/store@0.2.0-draft",
    "wasi:keyvalue/atomics@0.2.0-draft",
    "wasi:keyvalue/batch@0.2.0-draft",
];

type DraftResult<T> = wasmtime::Result<Result<T, store::Error>>;

fn to_wit(e: KvError) -> store::Error {
    match e {
        KvError::AccessDenied(_) => store::Error::AccessDenied,
        other => store::Error::Other(other.to_string()),
    }
}

/// Up to a page of keys from `offset` on, and the offset after them when
/// more follow. Walks the pages before `offset`, so a page costs what the
/// keys before it cost to read; a cursor past the end answers no keys.
fn list_from(bucket: &Bucket, offset: u64) -> Result<(Vec<String>, Option<u64>), KvError> {
    let mut skip = usize::try_from(offset).unwrap_or(usize::MAX);
    let mut after: Option<String> = None;
    loop {
        let (mut keys, next) = bucket.list("", after.as_deref())?;
        if skip < keys.len() {
            let page = keys.split_off(skip);
            let cursor = next.map(|_| offset.saturating_add(page.len() as u64));
            return Ok((page, cursor));
        }
        skip -= keys.len();
        match next {
            Some(next) => after = Some(next),
            None => return Ok((Vec::new(), None)),
        }
    }
}

impl store::Host for KvView<'_> {
    fn open(&mut self, identifier: String) -> DraftResult<Resource<BucketHandle>> {
        Ok(self.open_bucket(identifier)?.map_err(to_wit))
    }
}

impl store::HostBucket for KvView<'_> {
    fn get(&mut self, bucket: Resource<BucketHandle>, key: String) -> DraftResult<Option<Vec<u8>>> {
        Ok(self.bucket(&bucket)?.get(&key).map_err(to_wit))
    }

    fn set(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
        value: Vec<u8>,
    ) -> DraftResult<()> {
        let result = self.bucket(&bucket)?.set(&key, &value, None);
        Ok(self.wrote(result).map_err(to_wit))
    }

    fn delete(&mut self, bucket: Resource<BucketHandle>, key: String) -> DraftResult<()> {
        let result = self.bucket(&bucket)?.delete(&key);
        Ok(self.wrote(result).map_err(to_wit))
    }

    fn exists(&mut self, bucket: Resource<BucketHandle>, key: String) -> DraftResult<bool> {
        Ok(self.bucket(&bucket)?.exists(&key).map_err(to_wit))
    }

    fn list_keys(
        &mut self,
        bucket: Resource<BucketHandle>,
        cursor: Option<u64>,
    ) -> DraftResult<store::KeyResponse> {
        Ok(list_from(&self.bucket(&bucket)?, cursor.unwrap_or(0))
            .map(|(keys, cursor)| store::KeyResponse { keys, cursor })
            .map_err(to_wit))
    }

    fn drop(&mut self, bucket: Resource<BucketHandle>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for KvView<'_> {
    fn increment(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
        delta: u64,
    ) -> DraftResult<u64> {
        let bucket = self.bucket(&bucket)?;
        let Ok(delta) = i64::try_from(delta) else {
            return Ok(Err(store::Error::Other(format!(
                "a delta of {delta} is over the largest a counter holds ({}); \
                 increment by less",
                i64::MAX
            ))));
        };
        let result = bucket.increment(&key, delta);
        Ok(self.wrote(result).map_err(to_wit).and_then(|n| {
            u64::try_from(n).map_err(|_| {
                store::Error::Other(format!(
                    "counter `{key}` is {n}, below zero, which this version's \
                     unsigned counters cannot show; read it with \
                     wasi:keyvalue@0.2.0-draft2"
                ))
            })
        }))
    }
}

impl batch::Host for KvView<'_> {
    fn get_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> DraftResult<Vec<Option<(String, Vec<u8>)>>> {
        Ok(self
            .get_all(&bucket, keys)?
            .map(|found| {
                found
                    .into_iter()
                    .map(|(key, value)| value.map(|v| (key, v)))
                    .collect()
            })
            .map_err(to_wit))
    }

    fn set_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> DraftResult<()> {
        Ok(self.set_all(&bucket, &key_values)?.map_err(to_wit))
    }

    fn delete_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> DraftResult<()> {
        Ok(self.delete_all(&bucket, &keys)?.map_err(to_wit))
    }
}

/// Links `wasi:keyvalue@0.2.0-draft`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    store::add_to_linker::<HostState, KeyValue>(linker, view)?;
    atomics::add_to_linker::<HostState, KeyValue>(linker, view)?;
    batch::add_to_linker::<HostState, KeyValue>(linker, view)
}
