//! The node's Prometheus metrics (`GET /metrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

use std::sync::atomic::AtomicU64;
use std::sync::{OnceLock, PoisonError};

use super::dispatch::TriggerKind;

use crate::capability::{Meters, TenantLabel};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionTrigger {
    pub function: String,
    pub trigger: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionLabel {
    pub function: String,
}

impl FunctionLabel {
    /// The label of `function`'s series.
    pub fn of(function: &str) -> Self {
        Self {
            function: function.to_owned(),
        }
    }
}

/// What a tenant used, for billing: `GET /v1/usage` and `brink_tenant_*` on `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Usage {
    pub invocations: u64,
    pub execution_seconds: f64,
    /// Time its functions' inferences took, queueing for the model included.
    pub inference_seconds: f64,
}

/// A deployed function's version: a canary's figures beside the active's.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionVersion {
    pub function: String,
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionError {
    pub function: String,
    pub kind: String,
}

/// Every metric the node exports.
#[derive(Debug)]
pub struct Metrics {
    /// Behind a lock: capabilities register their families when the node
    /// starts them, after the node's own.
    registry: std::sync::Mutex<Registry>,
    pub events_in: Family<FunctionTrigger, Counter>,
    pub events_out: Family<FunctionLabel, Counter>,
    pub errors: Family<FunctionError, Counter>,
    pub latency: Family<FunctionLabel, Histogram, fn() -> Histogram>,
    pub queue_depth: Family<FunctionLabel, Gauge>,
    pub dead_letters: Family<FunctionLabel, Counter>,
    /// Guest log records dropped over the log limits, per function.
    pub log_dropped: Family<FunctionLabel, Counter>,
    pub mqtt_connected: Gauge,
    /// The capabilities' meters, filled at each exposition.
    meters: std::sync::Mutex<Vec<Box<dyn Meters>>>,
    tenant_invocations: Family<TenantLabel, Counter>,
    tenant_seconds: Family<TenantLabel, Counter<f64, AtomicU64>>,
    tenant_inference: Family<TenantLabel, Counter<f64, AtomicU64>>,
    version_invocations: Family<FunctionVersion, Counter>,
    version_errors: Family<FunctionVersion, Counter>,
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

/// The per-function and MQTT metrics.
fn function_metrics(r: &mut Registry) -> FunctionMetrics {
    FunctionMetrics {
        log_dropped: registered(
            r,
            "log_dropped",
            "Guest log records dropped over 100 per invocation or 200 per second per function",
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
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("brink");
        let f = function_metrics(&mut registry);
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
        let version_invocations = registered(
            r,
            "function_version_invocations",
            "Invocations of a deployed function, by version (a canary beside the active one)",
            Family::default(),
        );
        let version_errors = registered(
            r,
            "function_version_errors",
            "Failed invocations of a deployed function, by version",
            Family::default(),
        );
        Self {
            version_invocations,
            version_errors,
            tenant_invocations,
            tenant_seconds,
            tenant_inference,
            meters: std::sync::Mutex::default(),
            registry: std::sync::Mutex::new(registry),
            dead_letters: f.dead_letters,
            log_dropped: f.log_dropped,
            mqtt_connected: f.mqtt_connected,
            events_in: f.events_in,
            events_out: f.events_out,
            errors: f.errors,
            latency: f.latency,
            queue_depth: f.queue_depth,
        }
    }
}

/// One routed function's metric handles, each taken from its family at
/// its first use and kept. Looking them up per event took each family's
/// lock and hashed a label built from freshly allocated strings, four
/// times an event. Families never drop a series, so a handle stays the one
/// `/metrics` reads, and a redeployed function's new handles find the same
/// series.
#[derive(Debug, Default)]
pub struct FunctionMeters {
    events_in: [OnceLock<Counter>; TriggerKind::ALL.len()],
    events_out: OnceLock<Counter>,
    latency: OnceLock<Histogram>,
    tenant: OnceLock<(Counter, Counter<f64, AtomicU64>)>,
    version: OnceLock<(Counter, Counter)>,
}

impl FunctionMeters {
    /// Counts an event `trigger` delivered to `function`.
    pub fn event_in(&self, metrics: &Metrics, function: &str, trigger: TriggerKind) {
        let slot = &self.events_in[trigger as usize];
        slot.get_or_init(|| {
            metrics
                .events_in
                .get_or_create(&FunctionTrigger {
                    function: function.to_owned(),
                    trigger: trigger.label().to_owned(),
                })
                .clone()
        })
        .inc();
    }

    /// Counts `n` events `function` emitted.
    pub fn events_out(&self, metrics: &Metrics, function: &str, n: u64) {
        self.events_out
            .get_or_init(|| {
                metrics
                    .events_out
                    .get_or_create(&FunctionLabel::of(function))
                    .clone()
            })
            .inc_by(n);
    }

    /// Counts one invocation of `version` of `function`, and whether it failed.
    pub fn version_invoked(&self, metrics: &Metrics, function: &str, version: &str, ok: bool) {
        let (invocations, errors) = self.version.get_or_init(|| {
            let label = FunctionVersion {
                function: function.to_owned(),
                version: version.to_owned(),
            };
            (
                metrics.version_invocations.get_or_create(&label).clone(),
                metrics.version_errors.get_or_create(&label).clone(),
            )
        });
        invocations.inc();
        if !ok {
            errors.inc();
        }
    }

    /// Records one invocation of `function` that took `elapsed`, and bills
    /// it to `tenant` where a tenant deployed it.
    pub fn invoked(
        &self,
        metrics: &Metrics,
        (function, tenant): (&str, Option<&str>),
        elapsed: std::time::Duration,
    ) {
        let seconds = elapsed.as_secs_f64();
        self.latency
            .get_or_init(|| {
                metrics
                    .latency
                    .get_or_create(&FunctionLabel::of(function))
                    .clone()
            })
            .observe(seconds);
        if let Some(tenant) = tenant {
            let (invocations, time) = self.tenant.get_or_init(|| {
                let label = TenantLabel {
                    tenant: tenant.to_owned(),
                };
                (
                    metrics.tenant_invocations.get_or_create(&label).clone(),
                    metrics.tenant_seconds.get_or_create(&label).clone(),
                )
            });
            invocations.inc();
            time.inc_by(seconds);
        }
    }
}

impl Metrics {
    /// Invocations and failures of `version` of `function` since the node started.
    pub fn version_usage(&self, function: &str, version: &str) -> (u64, u64) {
        let label = FunctionVersion {
            function: function.to_owned(),
            version: version.to_owned(),
        };
        // `get`, not `get_or_create`: reading must not add a series per version.
        (
            self.version_invocations.get(&label).map_or(0, |c| c.get()),
            self.version_errors.get(&label).map_or(0, |c| c.get()),
        )
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
    /// Adds a capability's metrics: `hook` registers its families (the
    /// capability's `meters`), which are filled at every exposition from now on.
    pub fn watch(&self, hook: impl FnOnce(&mut Registry) -> Box<dyn Meters>) {
        let meters = hook(&mut self.registry.lock().unwrap_or_else(PoisonError::into_inner));
        self.meters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(meters);
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
        for meters in self
            .meters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            meters.collect();
        }
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
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
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::{FunctionMeters, Metrics, TriggerKind, names_a_tenant};
    use std::time::Duration;

    #[test]
    fn a_redeployed_functions_meters_count_into_the_series_its_old_ones_did() {
        let metrics = Metrics::default();
        let old = FunctionMeters::default();
        old.event_in(&metrics, "acme/f", TriggerKind::Http);
        old.invoked(&metrics, ("acme/f", Some("acme")), Duration::from_millis(2));
        let new = FunctionMeters::default();
        for trigger in [TriggerKind::Http, TriggerKind::Mqtt, TriggerKind::Mqtt] {
            new.event_in(&metrics, "acme/f", trigger);
        }
        new.invoked(&metrics, ("acme/f", Some("acme")), Duration::from_millis(2));
        new.events_out(&metrics, "acme/f", 3);
        let other = FunctionMeters::default();
        other.event_in(&metrics, "echo", TriggerKind::Function);
        other.invoked(&metrics, ("echo", None), Duration::from_millis(1));

        let text = metrics.encode().unwrap();
        for line in [
            r#"brink_events_in_total{function="acme/f",trigger="http"} 2"#,
            r#"brink_events_in_total{function="acme/f",trigger="mqtt"} 2"#,
            r#"brink_events_in_total{function="echo",trigger="function"} 1"#,
            r#"brink_events_out_total{function="acme/f"} 3"#,
            r#"brink_invocation_duration_seconds_count{function="acme/f"} 2"#,
            r#"brink_invocation_duration_seconds_count{function="echo"} 1"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        let usage = metrics.usage("acme");
        assert_eq!(usage.invocations, 2);
        assert!((usage.execution_seconds - 0.004).abs() < 1e-9, "{usage:?}");
        assert_eq!(metrics.usage("echo").invocations, 0);
    }

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
