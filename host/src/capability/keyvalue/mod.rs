//! Key-value state: the standard `wasi:keyvalue@0.2.0-draft2` (store,
//! atomics, batch), the `0.2.0-draft` that wasmtime's and wasmCloud's
//! components import ([`draft`]), and `brink:edge/kv` (TTL, prefix
//! listing), all on [`Kv`].
//!
//! A function opens only the buckets its spec grants; any other name gets
//! `access-denied`. Every failure (a limit, a quota, a bad counter, the
//! store itself) reaches the guest as `error::other` with its reason; none
//! traps it.

mod draft;
mod meters;

pub use meters::meters;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use crate::bindings::brink::edge::kv;
use crate::bindings::wasi::keyvalue0_2_0_draft2::{atomics, batch, store};
use crate::kv::{Bucket, Kv, KvError, Observed};
use crate::state::HostState;

/// The grant that allows these interfaces; given by `kv = [...]` in a spec.
pub const GRANT: &str = crate::contract::GRANT_KV;

/// The interfaces this capability provides, both drafts.
pub const INTERFACES: &[&str] = &[
    "wasi:keyvalue/store@0.2.0-draft2",
    "wasi:keyvalue/atomics@0.2.0-draft2",
    "wasi:keyvalue/batch@0.2.0-draft2",
    draft::INTERFACES[0],
    draft::INTERFACES[1],
    draft::INTERFACES[2],
];

/// The contract's own key-value interface, from 0.1.1 on.
pub const INTERFACE: crate::contract::EdgeInterface = crate::contract::EdgeInterface {
    name: "kv",
    since: "0.1.1",
};

/// Which buckets of which namespace a function may open.
#[derive(Debug, Clone)]
pub struct KvAccess {
    pub kv: Kv,
    /// The app (and tenant) the buckets belong to.
    pub namespace: Arc<str>,
    pub buckets: Arc<BTreeSet<String>>,
}

/// The after-invoke hook of an instance stopped mid-call: the store to
/// flush, if the function may write to it and writes are durable.
pub(crate) fn after_stop(access: Option<&KvAccess>) -> Option<Kv> {
    access
        .filter(|a| a.kv.config().durable)
        .map(|a| a.kv.clone())
}

/// The forget hook, on tenant removal: drops every bucket of `tenant`'s
/// namespace; answers their names.
pub fn forget(kv: &Kv, tenant: &str) -> Result<Vec<String>, crate::kv::KvError> {
    kv.drop_namespace(&crate::tenancy::names::kv_namespace(tenant))
}

/// A function's key-value context for one instance.
#[derive(Debug, Default)]
pub struct KvCtx {
    access: Option<KvAccess>,
    /// Whether this instance wrote since the last flush.
    pub(crate) dirty: bool,
}

impl KvCtx {
    /// The context of a function with `access` (none: no bucket granted).
    pub fn new(access: Option<KvAccess>) -> Self {
        Self {
            access,
            dirty: false,
        }
    }

    /// The store, where this instance wrote to it since the last call.
    pub(crate) fn take_dirty(&mut self) -> Option<Kv> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        self.access
            .as_ref()
            .filter(|a| a.kv.config().durable)
            .map(|a| a.kv.clone())
    }
}

/// An open bucket, as a `wasi:keyvalue/store.bucket` resource.
#[derive(Debug)]
pub struct BucketHandle(Bucket);

/// A `wasi:keyvalue/atomics.cas` resource: a key and what was read from it.
#[derive(Debug)]
pub struct CasHandle {
    bucket: Bucket,
    key: String,
    observed: Observed,
}

/// What the host functions see of the store.
pub struct KvView<'a> {
    ctx: &'a mut KvCtx,
    table: &'a mut ResourceTable,
}

impl std::fmt::Debug for KvView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvView").field("ctx", &self.ctx).finish()
    }
}

fn to_wit(e: KvError) -> store::Error {
    match e {
        KvError::AccessDenied(_) => store::Error::AccessDenied,
        other => store::Error::Other(other.to_string()),
    }
}

type KvResult<T> = wasmtime::Result<Result<T, store::Error>>;

/// A key of a batch read, and its value if it has one.
type Found = (String, Option<Vec<u8>>);

impl KvView<'_> {
    fn bucket(&self, handle: &Resource<BucketHandle>) -> wasmtime::Result<Bucket> {
        Ok(self.table.get(handle)?.0.clone())
    }

    fn list(
        &self,
        bucket: &Resource<BucketHandle>,
        prefix: &str,
        cursor: Option<String>,
    ) -> KvResult<store::KeyResponse> {
        Ok(self
            .bucket(bucket)?
            .list(prefix, cursor.as_deref())
            .map(|(keys, cursor)| store::KeyResponse { keys, cursor })
            .map_err(to_wit))
    }

    /// Runs a write, marking the instance dirty when it went through.
    fn write<T>(&mut self, result: Result<T, KvError>) -> KvResult<T> {
        Ok(self.wrote(result).map_err(to_wit))
    }

    /// Marks the instance dirty when a write went through.
    fn wrote<T>(&mut self, result: Result<T, KvError>) -> Result<T, KvError> {
        if result.is_ok() {
            self.ctx.dirty = true;
        }
        result
    }

    /// Each key with its value, if any; the first failure ends the batch.
    fn get_all(
        &self,
        bucket: &Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Found>, KvError>> {
        let bucket = self.bucket(bucket)?;
        Ok(keys
            .into_iter()
            .map(|key| bucket.get(&key).map(|value| (key, value)))
            .collect())
    }

    /// Sets each pair in order until one fails.
    fn set_all(
        &mut self,
        bucket: &Resource<BucketHandle>,
        key_values: &[(String, Vec<u8>)],
    ) -> wasmtime::Result<Result<(), KvError>> {
        let bucket = self.bucket(bucket)?;
        let result = key_values
            .iter()
            .try_for_each(|(key, value)| bucket.set(key, value, None));
        // Some may have gone through before one failed (both drafts allow it).
        self.ctx.dirty = true;
        Ok(result)
    }

    /// Deletes each key in order until one fails.
    fn delete_all(
        &mut self,
        bucket: &Resource<BucketHandle>,
        keys: &[String],
    ) -> wasmtime::Result<Result<(), KvError>> {
        let bucket = self.bucket(bucket)?;
        let result = keys.iter().try_for_each(|key| bucket.delete(key));
        self.ctx.dirty = true;
        Ok(result)
    }

    /// Opens `identifier` if the spec grants it, in either draft.
    fn open_bucket(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<BucketHandle>, KvError>> {
        let Some(access) = &self.ctx.access else {
            return Ok(Err(KvError::AccessDenied(identifier)));
        };
        if !access.buckets.contains(&identifier) {
            tracing::debug!(bucket = identifier, "refused an ungranted bucket");
            return Ok(Err(KvError::AccessDenied(identifier)));
        }
        match access.kv.bucket(&access.namespace, &identifier) {
            Ok(bucket) => Ok(Ok(self.table.push(BucketHandle(bucket))?)),
            Err(e) => Ok(Err(e)),
        }
    }
}

impl store::Host for KvView<'_> {
    fn open(&mut self, identifier: String) -> KvResult<Resource<BucketHandle>> {
        Ok(self.open_bucket(identifier)?.map_err(to_wit))
    }
}

impl store::HostBucket for KvView<'_> {
    fn get(&mut self, bucket: Resource<BucketHandle>, key: String) -> KvResult<Option<Vec<u8>>> {
        Ok(self.bucket(&bucket)?.get(&key).map_err(to_wit))
    }

    fn set(&mut self, bucket: Resource<BucketHandle>, key: String, value: Vec<u8>) -> KvResult<()> {
        let result = self.bucket(&bucket)?.set(&key, &value, None);
        self.write(result)
    }

    fn delete(&mut self, bucket: Resource<BucketHandle>, key: String) -> KvResult<()> {
        let result = self.bucket(&bucket)?.delete(&key);
        self.write(result)
    }

    fn exists(&mut self, bucket: Resource<BucketHandle>, key: String) -> KvResult<bool> {
        Ok(self.bucket(&bucket)?.exists(&key).map_err(to_wit))
    }

    fn list_keys(
        &mut self,
        bucket: Resource<BucketHandle>,
        cursor: Option<String>,
    ) -> KvResult<store::KeyResponse> {
        self.list(&bucket, "", cursor)
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
        delta: i64,
    ) -> KvResult<i64> {
        let result = self.bucket(&bucket)?.increment(&key, delta);
        self.write(result)
    }

    fn swap(
        &mut self,
        cas: Resource<CasHandle>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let handle = self.table.get_mut(&cas)?;
        let bucket = handle.bucket.clone();
        match bucket.swap(&handle.key, &mut handle.observed, &value) {
            Ok(true) => {
                self.table.delete(cas)?;
                self.ctx.dirty = true;
                Ok(Ok(()))
            }
            // The handle now holds the value that won, so the guest can
            // look at it and try again with the same handle.
            Ok(false) => Ok(Err(atomics::CasError::CasFailed(cas))),
            Err(e) => {
                self.table.delete(cas)?;
                Ok(Err(atomics::CasError::StoreError(to_wit(e))))
            }
        }
    }
}

impl atomics::HostCas for KvView<'_> {
    fn new(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> KvResult<Resource<CasHandle>> {
        let bucket = self.bucket(&bucket)?;
        match bucket.observe(&key) {
            Ok(observed) => Ok(Ok(self.table.push(CasHandle {
                bucket,
                key,
                observed,
            })?)),
            Err(e) => Ok(Err(to_wit(e))),
        }
    }

    fn current(&mut self, cas: Resource<CasHandle>) -> KvResult<Option<Vec<u8>>> {
        Ok(Ok(self
            .table
            .get(&cas)?
            .observed
            .value()
            .map(<[u8]>::to_vec)))
    }

    fn drop(&mut self, cas: Resource<CasHandle>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl batch::Host for KvView<'_> {
    fn get_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> KvResult<Vec<(String, Option<Vec<u8>>)>> {
        Ok(self.get_all(&bucket, keys)?.map_err(to_wit))
    }

    fn set_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> KvResult<()> {
        Ok(self.set_all(&bucket, &key_values)?.map_err(to_wit))
    }

    fn delete_many(&mut self, bucket: Resource<BucketHandle>, keys: Vec<String>) -> KvResult<()> {
        Ok(self.delete_all(&bucket, &keys)?.map_err(to_wit))
    }
}

impl kv::Host for KvView<'_> {
    fn set_with_ttl(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> KvResult<()> {
        let result = self
            .bucket(&bucket)?
            .set(&key, &value, Some(Duration::from_millis(ttl_ms)));
        self.write(result)
    }

    fn list_prefix(
        &mut self,
        bucket: Resource<BucketHandle>,
        prefix: String,
        cursor: Option<String>,
    ) -> KvResult<store::KeyResponse> {
        self.list(&bucket, &prefix, cursor)
    }
}

struct KeyValue;

impl HasData for KeyValue {
    type Data<'a> = KvView<'a>;
}

fn view(s: &mut HostState) -> KvView<'_> {
    KvView {
        ctx: &mut s.kv,
        table: &mut s.table,
    }
}

/// Links both drafts of `wasi:keyvalue` and `brink:edge/kv`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    draft::add_to_linker(linker)?;
    store::add_to_linker::<HostState, KeyValue>(linker, view)?;
    atomics::add_to_linker::<HostState, KeyValue>(linker, view)?;
    batch::add_to_linker::<HostState, KeyValue>(linker, view)?;
    kv::add_to_linker::<HostState, KeyValue>(linker, view)
}
