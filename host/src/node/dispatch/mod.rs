//! Routing: which functions an event triggers, bounded concurrency per
//! function, and where each function's outputs go next.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use tokio::sync::Semaphore;

mod canary;
mod tenant;

pub use tenant::Tenant;

use super::metrics::{FunctionError, FunctionLabel, FunctionMeters, Metrics};
use super::traced::{Trace, TraceNames};
use crate::bindings::{CloudEvent, ErrorKind};
use crate::engine::Function;
use crate::error::InvokeError;
use crate::event::ExtTypes;
use crate::manifest::{Output, Trigger};

/// Concurrency when the manifest sets none.
pub const DEFAULT_CONCURRENCY: u32 = 16;
/// Events that may wait for a slot, per unit of concurrency, before the
/// function reports overload instead of queueing without bound.
const QUEUE_PER_SLOT: usize = 4;

/// Why an event was not handled.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("no function named `{0}`")]
    UnknownFunction(String),
    #[error("function `{function}` is overloaded ({waiting} events waiting); retry later")]
    Overloaded { function: String, waiting: usize },
    #[error("tenant `{tenant}` is over its quota of {limit} invocations per second; retry later")]
    RateLimited { tenant: String, limit: u32 },
    #[error(transparent)]
    Invoke(#[from] InvokeError),
    #[error("function `{function}`: delivering output to {target} failed: {reason}")]
    Output {
        function: String,
        target: String,
        reason: String,
        /// The destination refuses this output for good: retrying the
        /// event cannot help ([`crate::delivery::is_permanent`]).
        permanent: bool,
    },
}

impl DispatchError {
    /// Whether trying the same event again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            DispatchError::UnknownFunction(_) => false,
            DispatchError::Overloaded { .. } | DispatchError::RateLimited { .. } => true,
            DispatchError::Output { permanent, .. } => !permanent,
            DispatchError::Invoke(e) => e.is_retryable(),
        }
    }

    /// A short name for metrics and dead letters.
    pub fn kind(&self) -> &'static str {
        match self {
            DispatchError::UnknownFunction(_) => "unknown_function",
            DispatchError::Overloaded { .. } => "overloaded",
            DispatchError::RateLimited { .. } => "rate_limited",
            DispatchError::Output { .. } => "output",
            DispatchError::Invoke(e) => e.kind(),
        }
    }

    /// Whether the event itself is at fault (a client error), not the host or the function.
    pub fn is_bad_event(&self) -> bool {
        matches!(
            self,
            DispatchError::Invoke(InvokeError::Handler {
                kind: ErrorKind::InvalidEvent,
                ..
            })
        )
    }
}

/// What a running invocation holds: a slot of its function and, for a
/// tenant's function, one of the tenant's share; both free when dropped.
struct Slot<'a> {
    _function: tokio::sync::SemaphorePermit<'a>,
    _tenant: Option<tokio::sync::SemaphorePermit<'a>>,
}

struct Stage {
    function: Function,
    /// The tenant that deployed it; none for the manifest's own functions.
    tenant: Option<Arc<Tenant>>,
    concurrency: u32,
    triggers: Vec<Trigger>,
    outputs: Vec<Output>,
    /// Its spans' names and attributes.
    names: TraceNames,
    permits: Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
    meters: FunctionMeters,
    /// The deployed version; none for the manifest's functions.
    version: Option<String>,
}

/// Where function outputs that leave the node go.
pub trait Sink: Send + Sync + 'static {
    /// Delivers `event` to the webhook at `url`.
    fn webhook<'a>(
        &'a self,
        url: &'a str,
        event: &'a CloudEvent,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>>;

    /// Publishes `event` on the MQTT topic the template `topic` names; done
    /// when the broker acknowledged it.
    fn mqtt<'a>(
        &'a self,
        topic: &'a str,
        event: &'a CloudEvent,
        types: &'a ExtTypes,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>>;

    /// Stores `event` in the outbox of `uplink`, counted against `owner`'s
    /// quota (the tenant whose function sent it); done when it is on disk.
    fn uplink<'a>(
        &'a self,
        owner: Option<&'a str>,
        uplink: &'a str,
        event: &'a CloudEvent,
        types: &'a ExtTypes,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>>;
}

/// How an event waits for a slot of a busy function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Wait in a bounded queue, and fail with [`DispatchError::Overloaded`]
    /// when it is full (HTTP answers 503 with Retry-After).
    Bounded,
    /// Wait as long as it takes: the caller bounds what it has in flight
    /// (the MQTT trigger stops reading instead).
    Wait,
}

type Stages = Arc<BTreeMap<String, Arc<Stage>>>;

use canary::Canaries;

/// The routing table of a running node. Functions deployed at run time are
/// swapped in atomically: an event runs on the stage it found when it
/// arrived, so in-flight events finish on the version they started on.
#[derive(Clone)]
pub struct Dispatcher {
    stages: Arc<RwLock<Stages>>,
    /// Canaries by function; `canary_count` lets the common case, no
    /// canary anywhere, skip this table with one atomic load.
    canaries: Arc<RwLock<Canaries>>,
    canary_count: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    sink: Arc<dyn Sink>,
    /// Spans of every dispatch, invocation and output (`[telemetry]`).
    tracer: Option<crate::telemetry::Tracer>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("functions", &self.snapshot().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A function to route, with its place in the manifest.
#[derive(Debug)]
pub struct Route {
    pub function: Function,
    pub triggers: Vec<Trigger>,
    pub outputs: Vec<Output>,
    pub concurrency: u32,
    /// The deployed version (`1.2.0`); none for the manifest's functions.
    pub version: Option<String>,
}

/// Whether `pattern` (exact, or ending in `*`) matches `ty`.
fn type_matches(pattern: &str, ty: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => ty.starts_with(prefix),
        None => pattern == ty,
    }
}

fn stage(route: Route, tenant: Option<Arc<Tenant>>) -> Arc<Stage> {
    let concurrency = route.concurrency.max(1);
    let names = TraceNames::new(
        &route.function.spec().name,
        route.version.as_deref(),
        route.function.digest(),
        tenant.as_ref().map(|t| t.id.as_str()),
        &route.outputs,
    );
    Arc::new(Stage {
        function: route.function,
        tenant,
        concurrency,
        triggers: route.triggers,
        outputs: route.outputs,
        names,
        permits: Semaphore::new(concurrency as usize),
        waiting: AtomicUsize::new(0),
        max_waiting: concurrency as usize * QUEUE_PER_SLOT,
        meters: FunctionMeters::default(),
        version: route.version,
    })
}

/// What delivered an event to a function: the `trigger` label of its
/// `events_in` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerKind {
    /// `POST /events[/path]`.
    Http,
    /// `POST /functions/<name>`, or `brink invoke`.
    Invoke,
    /// A message on a subscribed topic.
    Mqtt,
    /// Another function's output (a pipeline stage).
    Function,
}

impl TriggerKind {
    /// Every kind, in the order of their discriminants.
    pub const ALL: [Self; 4] = [Self::Http, Self::Invoke, Self::Mqtt, Self::Function];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Invoke => "invoke",
            Self::Mqtt => "mqtt",
            Self::Function => "function",
        }
    }
}

impl Dispatcher {
    /// A dispatcher over `routes`.
    pub fn new(routes: Vec<Route>, metrics: Arc<Metrics>, sink: Arc<dyn Sink>) -> Self {
        let stages = routes
            .into_iter()
            .map(|r| (r.function.spec().name.clone(), stage(r, None)))
            .collect();
        Self {
            stages: Arc::new(RwLock::new(Arc::new(stages))),
            canaries: Arc::default(),
            canary_count: Arc::default(),
            metrics,
            sink,
            tracer: None,
        }
    }

    fn snapshot(&self) -> Stages {
        self.stages
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Routes `name` to `route` from now on, replacing what it routed to
    /// before; events already running finish where they started.
    pub fn install(&self, name: &str, route: Route, tenant: Option<Arc<Tenant>>) {
        let stage = stage(route, tenant);
        {
            let mut stages = self.stages.write().unwrap_or_else(PoisonError::into_inner);
            let mut next = BTreeMap::clone(&stages);
            next.insert(name.to_owned(), stage);
            *stages = Arc::new(next);
        }
        // A version installed outright takes every event.
        self.end_canary(name);
    }

    /// Stops routing to `name`; events already running finish. Whether it was routed.
    pub fn uninstall(&self, name: &str) -> bool {
        self.end_canary(name);
        let mut stages = self.stages.write().unwrap_or_else(PoisonError::into_inner);
        if !stages.contains_key(name) {
            return false;
        }
        let mut next = BTreeMap::clone(&stages);
        next.remove(name);
        *stages = Arc::new(next);
        true
    }

    /// The digest of the component `name` runs, if it is routed.
    pub fn digest_of(&self, name: &str) -> Option<String> {
        self.snapshot()
            .get(name)
            .map(|s| s.function.digest().to_owned())
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The node's metrics, to keep.
    pub fn metrics_handle(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Functions an HTTP event triggers: an `http` trigger equal to `path`, or
    /// an `event_type` trigger matching the event's type.
    /// A tenant's functions see only events posted under its own prefix
    /// (`/events/t/<tenant>/...`), so no trigger can capture another's events.
    pub fn http_targets(&self, path: &str, event_type: &str) -> Vec<String> {
        self.snapshot()
            .iter()
            .filter(|(_, s)| {
                s.tenant.as_ref().is_none_or(|t| {
                    path.starts_with(&crate::tenancy::names::tenant_path_prefix(&t.id))
                })
            })
            .filter(|(_, s)| {
                s.triggers.iter().any(|t| match t {
                    Trigger::Http(p) => p == path,
                    Trigger::EventType(pattern) => type_matches(pattern, event_type),
                    Trigger::Mqtt(_) => false,
                })
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Whether `name` is a function of the manifest (not deployed by a tenant).
    pub fn is_node_function(&self, name: &str) -> bool {
        self.snapshot()
            .get(name)
            .is_some_and(|s| s.tenant.is_none())
    }

    /// Functions with an MQTT trigger whose filter matches `topic`.
    /// A tenant's functions see only topics under its own prefixes, whatever
    /// their filters say (deploy refuses filters outside them, and this holds
    /// even for a record written before a grant was withdrawn).
    pub fn mqtt_targets(&self, topic: &str) -> Vec<String> {
        self.snapshot()
            .iter()
            .filter(|(_, s)| {
                s.tenant
                    .as_ref()
                    .is_none_or(|t| t.topics.iter().any(|p| topic.starts_with(p.as_str())))
            })
            .filter(|(_, s)| {
                s.triggers.iter().any(|t| match t {
                    Trigger::Mqtt(filter) => topic_matches(filter, topic),
                    _ => false,
                })
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The concurrency limit of `function`.
    pub fn concurrency(&self, function: &str) -> Option<u32> {
        self.snapshot().get(function).map(|s| s.concurrency)
    }

    /// Every MQTT topic filter the functions subscribe to, without repeats.
    pub fn mqtt_filters(&self) -> Vec<String> {
        let mut filters: Vec<String> = self
            .snapshot()
            .values()
            .flat_map(|s| &s.triggers)
            .filter_map(|t| match t {
                Trigger::Mqtt(filter) => Some(filter.clone()),
                _ => None,
            })
            .collect();
        filters.sort();
        filters.dedup();
        filters
    }

    /// Whether any function publishes to MQTT.
    pub fn has_mqtt_outputs(&self) -> bool {
        self.snapshot()
            .values()
            .flat_map(|s| &s.outputs)
            .any(|o| matches!(o, Output::Mqtt(_)))
    }

    /// Traces every dispatch with `tracer` from now on.
    pub fn with_tracer(mut self, tracer: Option<crate::telemetry::Tracer>) -> Self {
        self.tracer = tracer;
        self
    }

    /// The tracer, where `[telemetry]` switched one on.
    pub fn tracer(&self) -> Option<&crate::telemetry::Tracer> {
        self.tracer.as_ref()
    }

    /// Runs `event` through `function`, routes its outputs, and returns them.
    /// `types` are the JSON types of the event's extensions: outputs that
    /// carry an extension of the same name on write it as that type.
    pub async fn dispatch(
        &self,
        function: &str,
        trigger: TriggerKind,
        event: CloudEvent,
        types: &ExtTypes,
    ) -> Result<Vec<CloudEvent>, DispatchError> {
        self.dispatch_with(function, trigger, (event, types), Admission::Bounded)
            .await
    }

    /// [`Dispatcher::dispatch`], waiting for a slot as `admission` says;
    /// pipeline stages downstream wait the same way.
    pub async fn dispatch_with(
        &self,
        function: &str,
        trigger: TriggerKind,
        (event, types): (CloudEvent, &ExtTypes),
        admission: Admission,
    ) -> Result<Vec<CloudEvent>, DispatchError> {
        // Under the read lock, not through a snapshot: two atomic updates of
        // the table's shared count fewer per event.
        let stage = match self.canary_stage(function, &event.id) {
            Some(canary) => canary,
            None => self
                .stages
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(function)
                .cloned()
                .ok_or_else(|| DispatchError::UnknownFunction(function.to_owned()))?,
        };
        self.admit(function, &stage)?;
        stage.meters.event_in(&self.metrics, function, trigger);
        let mut trace = self
            .tracer
            .as_ref()
            .map(|t| Box::new(Trace::begin(t, &stage.names, trigger, &event)));
        let permit = self.take_slot(function, &stage, admission).await?;
        let tap = stage.function.spec().logs.as_ref();
        let event_id = tap.map(|_| event.id.clone());
        let start = Instant::now();
        let span = trace.as_mut().map(|t| t.invoke(&stage.names));
        // Boxed: a call's future (wasmtime's instantiate and call, the
        // deadline) is 4.3 KB, and held inline it made every future above
        // it as large, each copied whole when built, spawned and finished
        // (memcpy was a tenth of a warm MQTT run's CPU).
        let (mut result, instance) = Box::pin(stage.function.invoke_reporting(event)).await;
        drop(permit);
        self.observe(function, &stage, start.elapsed());
        if let Some(version) = &stage.version {
            stage
                .meters
                .version_invoked(&self.metrics, function, version, result.is_ok());
        }
        if let Some(span) = span {
            Trace::invoked(span, &mut result, instance);
        }
        let outputs = match result {
            Ok(outputs) => outputs,
            Err(e) => {
                self.count_error(function, e.kind());
                tracing::warn!(function, "{e}");
                if let (Some(tap), Some(id)) = (tap, &event_id) {
                    tap.record("error", "host", id, &e.to_string());
                }
                return Err(e.into());
            }
        };
        stage
            .meters
            .events_out(&self.metrics, function, outputs.len() as u64);
        let owner = stage.tenant.as_ref().map(|t| t.id.as_str());
        let routed = self
            .route(
                (function, owner, trace.as_deref()),
                (&stage.outputs, &stage.names.outputs),
                (&outputs, types),
                admission,
            )
            .await;
        if let (Err(e), Some(trace)) = (&routed, &mut trace) {
            trace.fail(e);
        }
        routed.map(|()| outputs)
    }

    /// Refuses an event over its tenant's rate.
    fn admit(&self, function: &str, stage: &Stage) -> Result<(), DispatchError> {
        match &stage.tenant {
            Some(tenant) if !tenant.admit() => {
                self.count_error(function, "rate_limited");
                Err(DispatchError::RateLimited {
                    tenant: tenant.id.clone(),
                    limit: tenant.max_invocations_per_s,
                })
            }
            _ => Ok(()),
        }
    }

    /// A slot of `stage` (waiting as `admission` says) and, for a tenant's
    /// function, one of the tenant's share of the pool, for which its
    /// events wait in their own tenant's queue.
    async fn take_slot<'a>(
        &self,
        function: &str,
        stage: &'a Stage,
        admission: Admission,
    ) -> Result<Slot<'a>, DispatchError> {
        let gone = || DispatchError::UnknownFunction(function.to_owned());
        let permit = match stage.permits.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                let waiting = stage.waiting.fetch_add(1, Ordering::SeqCst) + 1;
                let guard = WaitGuard(&stage.waiting);
                if admission == Admission::Bounded && waiting > stage.max_waiting {
                    drop(guard);
                    self.count_error(function, "overloaded");
                    return Err(DispatchError::Overloaded {
                        function: function.to_owned(),
                        waiting,
                    });
                }
                let label = FunctionLabel::of(function);
                let depth = self.metrics.queue_depth.get_or_create(&label).clone();
                depth.inc();
                let permit = stage.permits.acquire().await;
                depth.dec();
                drop(guard);
                permit.map_err(|_| gone())?
            }
        };
        let share = match &stage.tenant {
            Some(tenant) => Some(tenant.slots.acquire().await.map_err(|_| gone())?),
            None => None,
        };
        Ok(Slot {
            _function: permit,
            _tenant: share,
        })
    }

    /// Records one call's time, and the log records it dropped.
    fn observe(&self, function: &str, stage: &Stage, elapsed: std::time::Duration) {
        // One atomic load on the common path; more only for a function that
        // dropped log records.
        let dropped = stage.function.take_log_drops();
        if dropped > 0 {
            let label = FunctionLabel::of(function);
            self.metrics
                .log_dropped
                .get_or_create(&label)
                .inc_by(dropped);
        }
        let tenant = stage.tenant.as_ref().map(|t| t.id.as_str());
        stage
            .meters
            .invoked(&self.metrics, (function, tenant), elapsed);
    }

    fn output_result(
        &self,
        function: &str,
        target: &str,
        sent: anyhow::Result<()>,
    ) -> Result<(), DispatchError> {
        sent.map_err(|e| {
            self.count_error(function, "output");
            DispatchError::Output {
                function: function.to_owned(),
                target: target.to_owned(),
                reason: format!("{e:#}"),
                permanent: crate::delivery::is_permanent(&e),
            }
        })
    }

    /// Counts an error of `kind` against `function`.
    pub fn count_error(&self, function: &str, kind: &str) {
        self.metrics
            .errors
            .get_or_create(&FunctionError {
                function: function.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Sends `events` on along every output of `function` (`owner`'s, traced in `trace`).
    fn route<'a>(
        &'a self,
        (function, owner, trace): (&'a str, Option<&'a str>, Option<&'a Trace>),
        (outputs, labels): (&'a [Output], &'a [Arc<str>]),
        (events, types): (&'a [CloudEvent], &'a ExtTypes),
        admission: Admission,
    ) -> Pin<Box<dyn Future<Output = Result<(), DispatchError>> + Send + 'a>> {
        Box::pin(async move {
            for (output, label) in outputs.iter().zip(labels) {
                for event in events {
                    let mut span = trace.and_then(|t| output_span(t, output, label));
                    let sent = match output {
                        Output::Function(next) => {
                            let input = (event.clone(), types);
                            self.dispatch_with(next, TriggerKind::Function, input, admission)
                                .await
                                .map(|_| ())
                        }
                        Output::Webhook(url) => {
                            let sent = self.sink.webhook(url, event).await;
                            self.output_result(function, url, sent)
                        }
                        Output::Mqtt(topic) => {
                            let sent = self.sink.mqtt(topic, event, types).await;
                            self.output_result(function, &format!("MQTT topic {topic:?}"), sent)
                        }
                        Output::Uplink(uplink) => {
                            let stored = self.sink.uplink(owner, uplink, event, types).await;
                            self.output_result(function, &format!("uplink `{uplink}`"), stored)
                        }
                    };
                    if let (Err(e), Some(span)) = (&sent, &mut span) {
                        span.fail(e);
                    }
                    sent?;
                }
            }
            Ok(())
        })
    }
}

/// The span of one output leaving the node; none for the next function,
/// whose own dispatch span follows the event's context.
fn output_span(trace: &Trace, output: &Output, label: &Arc<str>) -> Option<crate::telemetry::Span> {
    use crate::telemetry::{Kind, Name};
    Some(match output {
        Output::Function(_) => return None,
        Output::Webhook(_) => trace.output(Name::Static("webhook POST"), Kind::Client, label),
        Output::Mqtt(_) => trace.output(Name::Of("publish", label.clone()), Kind::Producer, label),
        Output::Uplink(_) => trace.output(
            Name::Of("outbox store", label.clone()),
            Kind::Producer,
            label,
        ),
    })
}

/// Whether the MQTT topic filter `filter` (with `+` and `#`) matches `topic`.
/// Wildcards at the start do not match topics beginning with `$`, as MQTT says.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut levels = topic.split('/');
    for part in filter.split('/') {
        match part {
            "#" => return true,
            "+" => {
                if levels.next().is_none() {
                    return false;
                }
            }
            exact => {
                if levels.next() != Some(exact) {
                    return false;
                }
            }
        }
    }
    levels.next().is_none()
}

/// Leaves the wait queue however the wait ends (a dropped request included).
struct WaitGuard<'a>(&'a AtomicUsize);

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::{topic_matches, type_matches};

    #[test]
    fn topic_filters_match_as_mqtt_defines_wildcards() {
        assert!(topic_matches(
            "sensors/+/temperature",
            "sensors/7/temperature"
        ));
        assert!(!topic_matches(
            "sensors/+/temperature",
            "sensors/7/humidity"
        ));
        assert!(!topic_matches("sensors/+", "sensors/7/temperature"));
        assert!(topic_matches("sensors/#", "sensors"));
        assert!(topic_matches("sensors/#", "sensors/7/temperature"));
        assert!(topic_matches("#", "anything/at/all"));
        assert!(!topic_matches("#", "$SYS/broker/load"));
        assert!(!topic_matches("+/broker", "$SYS/broker"));
        assert!(topic_matches("$SYS/#", "$SYS/broker"));
        assert!(topic_matches("a/+/+", "a//x"));
        assert!(!topic_matches("a/b", "a/b/c"));
    }

    #[test]
    fn event_type_patterns_match_exactly_or_by_prefix() {
        assert!(type_matches("com.example.reading", "com.example.reading"));
        assert!(!type_matches(
            "com.example.reading",
            "com.example.reading.v2"
        ));
        assert!(type_matches("com.example.*", "com.example.reading"));
        assert!(!type_matches("com.example.*", "org.example.reading"));
        assert!(type_matches("*", "anything"));
    }
}
