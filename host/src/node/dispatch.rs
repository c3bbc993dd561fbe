//! Routing: which functions an event triggers, bounded concurrency per
//! function, and where each function's outputs go next.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::Semaphore;

use super::metrics::{FunctionError, FunctionLabel, FunctionTrigger, Metrics};
use crate::bindings::{CloudEvent, ErrorKind};
use crate::engine::Function;
use crate::error::InvokeError;
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
    #[error(transparent)]
    Invoke(#[from] InvokeError),
    #[error("function `{function}`: delivering output to {target} failed: {reason}")]
    Output {
        function: String,
        target: String,
        reason: String,
    },
}

impl DispatchError {
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

struct Stage {
    function: Function,
    triggers: Vec<Trigger>,
    outputs: Vec<Output>,
    permits: Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// Where function outputs that leave the node go.
pub trait Sink: Send + Sync + 'static {
    /// Delivers `event` to the webhook at `url`.
    fn webhook<'a>(
        &'a self,
        url: &'a str,
        event: &'a CloudEvent,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>>;
}

/// The routing table of a running node.
#[derive(Clone)]
pub struct Dispatcher {
    stages: Arc<BTreeMap<String, Stage>>,
    metrics: Arc<Metrics>,
    sink: Arc<dyn Sink>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("functions", &self.stages.keys().collect::<Vec<_>>())
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
}

/// Whether `pattern` (exact, or ending in `*`) matches `ty`.
fn type_matches(pattern: &str, ty: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => ty.starts_with(prefix),
        None => pattern == ty,
    }
}

impl Dispatcher {
    /// A dispatcher over `routes`.
    pub fn new(routes: Vec<Route>, metrics: Arc<Metrics>, sink: Arc<dyn Sink>) -> Self {
        let stages = routes
            .into_iter()
            .map(|r| {
                let concurrency = r.concurrency.max(1);
                (
                    r.function.spec().name.clone(),
                    Stage {
                        function: r.function,
                        triggers: r.triggers,
                        outputs: r.outputs,
                        permits: Semaphore::new(concurrency as usize),
                        waiting: AtomicUsize::new(0),
                        max_waiting: concurrency as usize * QUEUE_PER_SLOT,
                    },
                )
            })
            .collect();
        Self {
            stages: Arc::new(stages),
            metrics,
            sink,
        }
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Functions an HTTP event triggers: an `http` trigger equal to `path`, or
    /// an `event_type` trigger matching the event's type.
    pub fn http_targets(&self, path: &str, event_type: &str) -> Vec<String> {
        self.targets(|t| match t {
            Trigger::Http(p) => p == path,
            Trigger::EventType(pattern) => type_matches(pattern, event_type),
            Trigger::Mqtt(_) => false,
        })
    }

    fn targets(&self, matches: impl Fn(&Trigger) -> bool) -> Vec<String> {
        self.stages
            .iter()
            .filter(|(_, s)| s.triggers.iter().any(&matches))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Runs `event` through `function`, routes its outputs, and returns them.
    pub async fn dispatch(
        &self,
        function: &str,
        trigger: &str,
        event: CloudEvent,
    ) -> Result<Vec<CloudEvent>, DispatchError> {
        let stage = self
            .stages
            .get(function)
            .ok_or_else(|| DispatchError::UnknownFunction(function.to_owned()))?;
        let label = FunctionLabel {
            function: function.to_owned(),
        };
        self.metrics
            .events_in
            .get_or_create(&FunctionTrigger {
                function: function.to_owned(),
                trigger: trigger.to_owned(),
            })
            .inc();

        let permit = match stage.permits.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                let waiting = stage.waiting.fetch_add(1, Ordering::SeqCst) + 1;
                let guard = WaitGuard(&stage.waiting);
                if waiting > stage.max_waiting {
                    drop(guard);
                    self.count_error(function, "overloaded");
                    return Err(DispatchError::Overloaded {
                        function: function.to_owned(),
                        waiting,
                    });
                }
                let depth = self.metrics.queue_depth.get_or_create(&label).clone();
                depth.inc();
                let permit = stage.permits.acquire().await;
                depth.dec();
                drop(guard);
                permit.map_err(|_| DispatchError::UnknownFunction(function.to_owned()))?
            }
        };
        let start = Instant::now();
        let result = stage.function.invoke(event).await;
        drop(permit);
        self.metrics
            .latency
            .get_or_create(&label)
            .observe(start.elapsed().as_secs_f64());
        let outputs = match result {
            Ok(outputs) => outputs,
            Err(e) => {
                self.count_error(function, e.kind());
                tracing::warn!(function, "{e}");
                return Err(e.into());
            }
        };
        self.metrics
            .events_out
            .get_or_create(&label)
            .inc_by(outputs.len() as u64);
        self.route(function, &stage.outputs, &outputs).await?;
        Ok(outputs)
    }

    fn count_error(&self, function: &str, kind: &str) {
        self.metrics
            .errors
            .get_or_create(&FunctionError {
                function: function.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Sends `events` on along every output of `function`.
    fn route<'a>(
        &'a self,
        function: &'a str,
        outputs: &'a [Output],
        events: &'a [CloudEvent],
    ) -> Pin<Box<dyn Future<Output = Result<(), DispatchError>> + Send + 'a>> {
        Box::pin(async move {
            for output in outputs {
                for event in events {
                    match output {
                        Output::Function(next) => {
                            self.dispatch(next, "function", event.clone()).await?;
                        }
                        Output::Webhook(url) => {
                            self.sink.webhook(url, event).await.map_err(|e| {
                                self.count_error(function, "output");
                                DispatchError::Output {
                                    function: function.to_owned(),
                                    target: url.clone(),
                                    reason: format!("{e:#}"),
                                }
                            })?;
                        }
                        Output::Mqtt(topic) => {
                            return Err(DispatchError::Output {
                                function: function.to_owned(),
                                target: format!("MQTT topic {topic:?}"),
                                reason: "this node has no MQTT connection".to_owned(),
                            });
                        }
                    }
                }
            }
            Ok(())
        })
    }
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
    use super::type_matches;

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
