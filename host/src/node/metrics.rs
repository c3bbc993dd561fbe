//! The node's Prometheus metrics (`GET /metrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionTrigger {
    pub function: String,
    pub trigger: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionLabel {
    pub function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BucketLabel {
    pub bucket: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UplinkLabel {
    pub uplink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    pub model: String,
    pub device: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabel {
    pub tenant: String,
}

/// What a tenant used, for billing: `GET /v1/usage` and `brink_tenant_*` on `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Usage {
    pub invocations: u64,
    pub execution_seconds: f64,
    /// Time its functions' inferences took, queueing for the model included.
    pub inference_seconds: f64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionError {
    pub function: String,
    pub kind: String,
}

/// Every metric the node exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub events_in: Family<FunctionTrigger, Counter>,
    pub events_out: Family<FunctionLabel, Counter>,
    pub errors: Family<FunctionError, Counter>,
    pub latency: Family<FunctionLabel, Histogram, fn() -> Histogram>,
    pub queue_depth: Family<FunctionLabel, Gauge>,
    pub dead_letters: Family<FunctionLabel, Counter>,
    /// Guest log records dropped over the log limits, per function.
    pub log_dropped: Family<FunctionLabel, Counter>,
    pub mqtt_connected: Gauge,
    pub kv_bucket_bytes: Family<BucketLabel, Gauge>,
    /// The app's key-value store, whose bucket sizes are read at each scrape.
    kv: std::sync::OnceLock<(crate::kv::Kv, String)>,
    outbox: std::sync::OnceLock<crate::outbox::Outbox>,
    outbox_gauges: [(&'static str, Family<UplinkLabel, Gauge>); 4],
    outbox_counters: [(&'static str, Family<UplinkLabel, Counter>); 6],
    models: std::sync::OnceLock<crate::nn::Models>,
    model_counters: [(&'static str, Family<ModelLabel, Counter>); 6],
    tenant_invocations: Family<TenantLabel, Counter>,
    tenant_seconds: Family<TenantLabel, Counter<f64, std::sync::atomic::AtomicU64>>,
    tenant_inference: Family<TenantLabel, Counter<f64, std::sync::atomic::AtomicU64>>,
    tenant_kv_bytes: Family<TenantLabel, Gauge>,
    tenant_outbox_bytes: Family<TenantLabel, Gauge>,
}

fn latency_histogram() -> Histogram {
    // 25 µs to ~1.6 s: fresh-instance calls sit at the bottom, deadlines at the top.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        25e-6, 2.0, 17,
    ))
}

/// Registers `metric` under `name` in `registry`, and hands it back.
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// A family per `(name, help)`, each registered.
fn families<L, M, const N: usize>(
    registry: &mut Registry,
    described: [(&'static str, &'static str); N],
) -> [(&'static str, Family<L, M>); N]
where
    Family<L, M>: Metric + Clone + Default,
{
    described.map(|(name, help)| (name, registered(registry, name, help, Family::default())))
}

/// The per-function and MQTT metrics.
fn function_metrics(r: &mut Registry) -> FunctionMetrics {
    FunctionMetrics {
        log_dropped: registered(
            r,
            "log_dropped",
            "Guest log records dropped over 100 per invocation or 200 per second per function",
            Family::default(),
        ),
        kv_bucket_bytes: registered(
            r,
            "kv_bucket_bytes",
            "Bytes (keys and values) each key-value bucket of the app holds",
            Family::default(),
        ),
        events_in: registered(
            r,
            "events_in",
            "Events delivered to a function, by trigger",
            Family::default(),
        ),
        events_out: registered(
            r,
            "events_out",
            "Events a function emitted",
            Family::default(),
        ),
        errors: registered(
            r,
            "errors",
            "Failed invocations, by kind",
            Family::default(),
        ),
        latency: registered(
            r,
            "invocation_duration_seconds",
            "Time from instantiation to checked outputs",
            Family::new_with_constructor(latency_histogram as fn() -> Histogram),
        ),
        queue_depth: registered(
            r,
            "queue_depth",
            "Events waiting for a free instance slot",
            Family::default(),
        ),
        dead_letters: registered(
            r,
            "dead_letters",
            "MQTT events given up on and published to brink/dead-letter/<function>",
            Family::default(),
        ),
        mqtt_connected: registered(
            r,
            "mqtt_connected",
            "1 while the node's MQTT subscriber is connected to its broker",
            Gauge::default(),
        ),
    }
}

/// What [`function_metrics`] makes.
struct FunctionMetrics {
    events_in: Family<FunctionTrigger, Counter>,
    events_out: Family<FunctionLabel, Counter>,
    errors: Family<FunctionError, Counter>,
    latency: Family<FunctionLabel, Histogram, fn() -> Histogram>,
    queue_depth: Family<FunctionLabel, Gauge>,
    dead_letters: Family<FunctionLabel, Counter>,
    log_dropped: Family<FunctionLabel, Counter>,
    mqtt_connected: Gauge,
    kv_bucket_bytes: Family<BucketLabel, Gauge>,
}

const OUTBOX_GAUGES: [(&str, &str); 4] = [
    (
        "outbox_backlog_events",
        "Events waiting in the outbox for an uplink",
    ),
    (
        "outbox_backlog_bytes",
        "Bytes waiting in the outbox for an uplink",
    ),
    ("outbox_connected", "1 while the uplink accepts deliveries"),
    (
        "outbox_parked_events",
        "Events the uplink refused for good, waiting in its parking queue",
    ),
];

const OUTBOX_COUNTERS: [(&str, &str); 6] = [
    ("outbox_sent", "Events the uplink acknowledged"),
    (
        "outbox_retried",
        "Event deliveries that failed and will be retried",
    ),
    (
        "outbox_dropped",
        "Events dropped: outbox full (drop_oldest) or purged",
    ),
    (
        "outbox_expired",
        "Events whose TTL passed before they could be sent",
    ),
    (
        "outbox_rejected",
        "Sends refused because the outbox was full",
    ),
    (
        "outbox_parked",
        "Events moved to the parking queue because the uplink refused them for good",
    ),
];

const MODEL_COUNTERS: [(&str, &str); 6] = [
    ("nn_requests", "Inferences answered, by model"),
    (
        "nn_runs",
        "Runs of the model; fewer than requests where batching joined them",
    ),
    ("nn_rows", "Rows (samples) run, by model"),
    ("nn_failed", "Inferences whose run failed"),
    (
        "nn_rejected",
        "Inferences refused because the model's queue was full",
    ),
    ("nn_busy_microseconds", "Time spent running the model"),
];

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("brink");
        let f = function_metrics(&mut registry);
        let outbox_gauges = families(&mut registry, OUTBOX_GAUGES);
        let outbox_counters = families(&mut registry, OUTBOX_COUNTERS);
        let model_counters = families(&mut registry, MODEL_COUNTERS);
        let r = &mut registry;
        let tenant_invocations = registered(
            r,
            "tenant_invocations",
            "Invocations of a tenant's functions",
            Family::default(),
        );
        let tenant_seconds = registered(
            r,
            "tenant_execution_seconds",
            "Time a tenant's functions ran, instantiation to checked outputs",
            Family::default(),
        );
        let tenant_inference = registered(
            r,
            "tenant_inference_seconds",
            "Time a tenant's inferences took, queueing for the model included",
            Family::default(),
        );
        let tenant_kv_bytes = registered(
            r,
            "tenant_kv_bytes",
            "Bytes of keys and values a tenant holds across its buckets",
            Family::default(),
        );
        let tenant_outbox_bytes = registered(
            r,
            "tenant_outbox_bytes",
            "Bytes a tenant's functions hold queued in the outbox, across uplinks",
            Family::default(),
        );
        Self {
            tenant_outbox_bytes,
            tenant_invocations,
            tenant_seconds,
            tenant_inference,
            tenant_kv_bytes,
            models: std::sync::OnceLock::new(),
            model_counters,
            outbox: std::sync::OnceLock::new(),
            outbox_gauges,
            outbox_counters,
            registry,
            dead_letters: f.dead_letters,
            log_dropped: f.log_dropped,
            mqtt_connected: f.mqtt_connected,
            events_in: f.events_in,
            events_out: f.events_out,
            errors: f.errors,
            latency: f.latency,
            queue_depth: f.queue_depth,
            kv_bucket_bytes: f.kv_bucket_bytes,
            kv: std::sync::OnceLock::new(),
        }
    }
}

impl Metrics {
    /// Counts one invocation of `tenant`'s that ran for `elapsed`.
    pub fn meter(&self, tenant: &str, elapsed: std::time::Duration) {
        let label = TenantLabel {
            tenant: tenant.to_owned(),
        };
        self.tenant_invocations.get_or_create(&label).inc();
        self.tenant_seconds
            .get_or_create(&label)
            .inc_by(elapsed.as_secs_f64());
    }

    /// What `tenant` has used since the node started.
    pub fn usage(&self, tenant: &str) -> Usage {
        let label = TenantLabel {
            tenant: tenant.to_owned(),
        };
        Usage {
            invocations: self.tenant_invocations.get_or_create(&label).get(),
            execution_seconds: self.tenant_seconds.get_or_create(&label).get(),
            inference_seconds: self.tenant_inference.get_or_create(&label).get(),
        }
    }

    /// A meter that bills inference time to `tenant`.
    pub fn inference_meter(&self, tenant: &str) -> crate::capability::nn::InferenceMeter {
        let counter = self
            .tenant_inference
            .get_or_create(&TenantLabel {
                tenant: tenant.to_owned(),
            })
            .clone();
        crate::capability::nn::InferenceMeter::new(move |took| {
            counter.inc_by(took.as_secs_f64());
        })
    }
    /// Reports the queues of `outbox` from now on.
    pub fn watch_outbox(&self, outbox: crate::outbox::Outbox) {
        let _ = self.outbox.set(outbox);
    }

    /// Reports the queues of `models` from now on.
    pub fn watch_models(&self, models: crate::nn::Models) {
        let _ = self.models.set(models);
    }

    /// Reports the buckets of `app` in `kv` from now on.
    pub fn watch_kv(&self, kv: crate::kv::Kv, app: &str) {
        let _ = self.kv.set((kv, app.to_owned()));
    }

    /// The exposition for the public HTTP listener, which anyone who can
    /// reach the node reads without a token: node-wide figures only. Every
    /// sample that names a tenant (a `tenant` label, or a tenant's function,
    /// routed as `<tenant>/<name>`) is left out; the operator reads them on
    /// the admin listener (`GET /v1/metrics`).
    pub fn encode_public(&self) -> Result<String, std::fmt::Error> {
        let full = self.encode()?;
        let mut out = String::with_capacity(full.len());
        for line in full.lines() {
            if !names_a_tenant(line) {
                out.push_str(line);
                out.push('\n');
            }
        }
        Ok(out)
    }

    /// The Prometheus text exposition, every tenant's figures included.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        if let Some((kv, app)) = self.kv.get() {
            for bucket in kv.buckets(app).unwrap_or_default() {
                if let Ok(b) = kv.bucket(app, &bucket) {
                    self.kv_bucket_bytes
                        .get_or_create(&BucketLabel { bucket })
                        .set(i64::try_from(b.size()).unwrap_or(i64::MAX));
                }
            }
            for (namespace, bytes) in kv.namespace_sizes() {
                if let Some(tenant) = crate::tenancy::names::tenant_of_namespace(&namespace) {
                    self.tenant_kv_bytes
                        .get_or_create(&TenantLabel {
                            tenant: tenant.to_owned(),
                        })
                        .set(i64::try_from(bytes).unwrap_or(i64::MAX));
                }
            }
        }
        if let Some(outbox) = self.outbox.get() {
            for (tenant, usage) in outbox.owners() {
                self.tenant_outbox_bytes
                    .get_or_create(&TenantLabel { tenant })
                    .set(i64::try_from(usage.bytes).unwrap_or(i64::MAX));
            }
            for s in outbox.status() {
                let label = UplinkLabel {
                    uplink: s.uplink.clone(),
                };
                let gauges = [
                    s.backlog_events,
                    s.backlog_bytes,
                    u64::from(s.connected),
                    s.parked_events,
                ];
                for ((_, family), value) in self.outbox_gauges.iter().zip(gauges) {
                    family
                        .get_or_create(&label)
                        .set(i64::try_from(value).unwrap_or(i64::MAX));
                }
                let counters = [
                    s.sent,
                    s.retried,
                    s.dropped,
                    s.expired,
                    s.rejected,
                    s.parked_total,
                ];
                for ((_, family), value) in self.outbox_counters.iter().zip(counters) {
                    let counter = family.get_or_create(&label);
                    counter.inc_by(value.saturating_sub(counter.get()));
                }
            }
        }
        if let Some(models) = self.models.get() {
            for model in models.iter() {
                let label = ModelLabel {
                    model: model.name().to_owned(),
                    device: model.graph().device().to_owned(),
                };
                let s = model.stats();
                let values = [
                    s.requests(),
                    s.batches(),
                    s.rows(),
                    s.failed(),
                    s.rejected(),
                    s.busy_us(),
                ];
                for ((_, family), value) in self.model_counters.iter().zip(values) {
                    let counter = family.get_or_create(&label);
                    counter.inc_by(value.saturating_sub(counter.get()));
                }
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Whether a sample line carries a tenant's name: a `tenant` label, or a
/// `function` label of a tenant's function (`<tenant>/<name>`; the
/// manifest's function names have no `/`).
fn names_a_tenant(line: &str) -> bool {
    if line.starts_with('#') {
        return false;
    }
    let Some(labels) = line
        .split_once('{')
        .and_then(|(_, rest)| rest.rsplit_once('}'))
    else {
        return false;
    };
    labels.0.contains("tenant=\"")
        || labels
            .0
            .split("function=\"")
            .skip(1)
            .any(|value| value.split('"').next().is_some_and(|f| f.contains('/')))
}

#[cfg(test)]
mod tests {
    use super::names_a_tenant;

    #[test]
    fn tenant_samples_are_told_from_node_wide_ones() {
        for (line, tenant) in [
            ("brink_tenant_kv_bytes{tenant=\"acme\"} 7", true),
            (
                "brink_events_in_total{function=\"acme/f\",trigger=\"http\"} 1",
                true,
            ),
            (
                "brink_events_in_total{function=\"echo\",trigger=\"http\"} 1",
                false,
            ),
            ("brink_outbox_sent_total{uplink=\"cloud\"} 3", false),
            ("brink_mqtt_connected 1", false),
            ("# HELP brink_tenant_kv_bytes Bytes", false),
        ] {
            assert_eq!(names_a_tenant(line), tenant, "{line}");
        }
    }
}
