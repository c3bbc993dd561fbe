//! The dispatcher's spans: one per dispatch (admission and the wait for a
//! slot included), one per invocation under it, and one per output under
//! that; every event the guest sends on carries the invocation's context.

use std::sync::Arc;

use crate::bindings::CloudEvent;
use crate::engine::Instantiated;
use crate::error::InvokeError;
use crate::manifest::Output;
use crate::telemetry::{Kind, Name, Span, SpanContext, Tracer};

use super::dispatch::TriggerKind;

/// A stage's names, made once when it is installed and shared by every
/// span of its events: making a span copies no string.
#[derive(Debug)]
pub(super) struct TraceNames {
    function: Arc<str>,
    version: Option<Arc<str>>,
    /// The component's digest, shortened to `sha256:` and 12 hex digits.
    digest: Arc<str>,
    tenant: Option<Arc<str>>,
    /// Each output's target, in the stage's order (`alerts/{subject}`).
    pub(super) outputs: Vec<Arc<str>>,
}

impl TraceNames {
    pub(super) fn new(
        function: &str,
        version: Option<&str>,
        digest: &str,
        tenant: Option<&str>,
        outputs: &[Output],
    ) -> Self {
        Self {
            function: Arc::from(function),
            version: version.map(Arc::from),
            digest: Arc::from(digest.get(..19).unwrap_or(digest)),
            tenant: tenant.map(Arc::from),
            outputs: outputs
                .iter()
                .map(|o| match o {
                    Output::Mqtt(t)
                    | Output::Function(t)
                    | Output::Webhook(t)
                    | Output::Uplink(t) => Arc::from(t.as_str()),
                })
                .collect(),
        }
    }
}

/// One event's dispatch through one function.
pub(super) struct Trace {
    tracer: Tracer,
    dispatch: Span,
    /// The invocation's context, once it ran: the outputs' parent.
    invoked: Option<(SpanContext, Option<String>)>,
}

impl Trace {
    /// The dispatch span, under the context `event` carries.
    pub(super) fn begin(
        tracer: &Tracer,
        names: &TraceNames,
        trigger: TriggerKind,
        event: &CloudEvent,
    ) -> Self {
        let name = Name::Of("dispatch", names.function.clone());
        // Under the receive span, for an event a trigger received; under
        // the context the event carries, for a pipeline stage's input (the
        // upstream invocation stamped it).
        let parent = match trigger {
            TriggerKind::Function => None,
            _ => crate::telemetry::context::received(),
        }
        .or_else(|| crate::telemetry::context::of_event(event));
        let mut dispatch = tracer.start_span(name, Kind::Internal, parent);
        // The function and tenant are the invocation's attributes.
        dispatch.set("brink.trigger", trigger.label());
        dispatch.set("cloudevents.event_id", event.id.clone());
        Self {
            tracer: tracer.clone(),
            dispatch,
            invoked: None,
        }
    }

    /// The invocation's span. The guest's input keeps the context of the
    /// step that delivered it (the receive, or the upstream function's
    /// invocation), as a message carries its producer's span: stamping the
    /// invocation's own on it cost a tenth of what tracing costs, for
    /// nothing the guest needs (its outputs get the invocation's).
    pub(super) fn invoke(&mut self, names: &TraceNames) -> Span {
        let mut span = self
            .dispatch
            .child(Name::Of("invoke", names.function.clone()), Kind::Internal);
        span.set("brink.function", &names.function);
        if let Some(version) = &names.version {
            span.set("brink.function.version", version);
        }
        span.set("brink.function.digest", &names.digest);
        if let Some(tenant) = &names.tenant {
            span.set("brink.tenant", tenant);
        }
        self.invoked = Some(span.parent());
        span
    }

    /// Ends the invocation's span with its outcome, and puts its context on
    /// every output event.
    pub(super) fn invoked(
        mut span: Span,
        result: &mut Result<Vec<CloudEvent>, InvokeError>,
        instance: Instantiated,
    ) {
        span.set("brink.instance", instance.label());
        match result {
            Ok(outputs) => {
                span.set("brink.outcome", "ok");
                span.set(
                    "brink.outputs",
                    i64::try_from(outputs.len()).unwrap_or(i64::MAX),
                );
                for output in outputs {
                    span.stamp(output);
                }
            }
            Err(e) => {
                span.set("brink.outcome", e.kind());
                span.fail(e);
            }
        }
    }

    /// A span for one output leaving the node.
    pub(super) fn output(&self, name: Name, kind: Kind, target: &Arc<str>) -> Span {
        let parent = self
            .invoked
            .clone()
            .unwrap_or_else(|| self.dispatch.parent());
        let mut span = self.tracer.start_span(name, kind, Some(parent));
        span.set("brink.output", target);
        span
    }

    /// Marks the dispatch failed.
    pub(super) fn fail(&mut self, why: impl std::fmt::Display) {
        self.dispatch.fail(why);
    }
}

/// The receive span of an MQTT message, under the context its event
/// carries. The event is left as it came: the dispatches find the span in
/// the task ([`crate::telemetry::context::RECEIVED`]). Named `receive`
/// alone: the topic names a device, and span names must stay few
/// (OpenTelemetry's messaging conventions); the topic is an attribute.
pub(crate) fn mqtt_receive(tracer: &Tracer, topic: &str, qos: u8, event: &CloudEvent) -> Span {
    let mut span = tracer.span_for("receive", Kind::Consumer, event);
    span.set("messaging.system", "mqtt");
    span.set("messaging.destination.name", topic.to_owned());
    span.set("messaging.mqtt.qos", i64::from(qos));
    span
}

/// The receive span of an HTTP request's event, under `parent`: the
/// event's context, else the request's `traceparent` header.
pub(crate) fn http_receive(
    tracer: &Tracer,
    route: &str,
    parent: Option<crate::telemetry::context::Parent>,
) -> Span {
    let name = Name::Of("POST", Arc::from(route));
    let mut span = tracer.start_span(name, Kind::Server, parent);
    span.set("http.request.method", "POST");
    span.set("http.route", route.to_owned());
    span
}

/// One span per event of a batch the forwarder sends upstream, under the
/// context each carries (kept in the outbox through any outage); each
/// event then carries its delivery's context to the cloud.
pub(crate) fn uplink_deliver(
    tracer: &Tracer,
    uplink: &str,
    events: &mut [(CloudEvent, crate::event::ExtTypes)],
) -> Vec<Span> {
    events
        .iter_mut()
        .map(|(event, _)| {
            let name = Name::Of("deliver", Arc::from(uplink));
            let mut span = tracer.span_for(name, Kind::Producer, event);
            span.set("brink.uplink", uplink.to_owned());
            span.set("cloudevents.event_id", event.id.clone());
            span.stamp(event);
            span
        })
        .collect()
}

/// Ends a batch's delivery spans: the first `delivered` went through, the
/// rest failed with `error`.
pub(crate) fn uplink_delivered(spans: Vec<Span>, delivered: usize, error: Option<&str>) {
    for (i, mut span) in spans.into_iter().enumerate() {
        match error {
            Some(why) if i >= delivered => {
                span.set("brink.outcome", "failed");
                span.fail(why);
            }
            _ => span.set("brink.outcome", "delivered"),
        }
    }
}
