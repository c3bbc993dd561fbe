//! The key-value capability's metrics: each bucket's size for the app, and
//! each tenant's bytes across its buckets, read from the store at scrape.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::capability::{Meters, TenantLabel, gauge_value};
use crate::kv::Kv;
use crate::tenancy::names::tenant_of_namespace;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BucketLabel {
    pub bucket: String,
}

/// The families, and the store and app they report.
#[derive(Debug)]
struct KvMeters {
    kv: Kv,
    app: String,
    bucket_bytes: Family<BucketLabel, Gauge>,
    tenant_bytes: Family<TenantLabel, Gauge>,
}

/// The metrics hook: registers the families in `registry`.
pub fn meters(registry: &mut Registry, kv: Kv, app: &str) -> Box<dyn Meters> {
    let bucket_bytes = Family::default();
    registry.register(
        "kv_bucket_bytes",
        "Bytes (keys and values) each key-value bucket of the app holds",
        bucket_bytes.clone(),
    );
    let tenant_bytes = Family::default();
    registry.register(
        "tenant_kv_bytes",
        "Bytes of keys and values a tenant holds across its buckets",
        tenant_bytes.clone(),
    );
    Box::new(KvMeters {
        kv,
        app: app.to_owned(),
        bucket_bytes,
        tenant_bytes,
    })
}

impl Meters for KvMeters {
    fn collect(&self) {
        let (kv, app) = (&self.kv, self.app.as_str());
        for bucket in kv.buckets(app).unwrap_or_default() {
            if let Ok(b) = kv.bucket(app, &bucket) {
                self.bucket_bytes
                    .get_or_create(&BucketLabel { bucket })
                    .set(gauge_value(b.size()));
            }
        }
        for (namespace, bytes) in kv.namespace_sizes() {
            if let Some(tenant) = tenant_of_namespace(&namespace) {
                self.tenant_bytes
                    .get_or_create(&TenantLabel {
                        tenant: tenant.to_owned(),
                    })
                    .set(gauge_value(bytes));
            }
        }
    }
}
