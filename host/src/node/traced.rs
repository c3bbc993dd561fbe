//! The dispatcher's spans: one per dispatch (admission and the wait for a
//! slot included), one per invocation under it, and one per output under
//! that; the event the guest sees and every event it sends on carry the
//! invocation's context.

use crate::bindings::CloudEvent;
use crate::engine::Instantiated;
use crate::error::InvokeError;
use crate::telemetry::{Kind, Span, SpanContext, Tracer};

use super::dispatch::TriggerKind;

/// What a traced function is, for its spans' attributes.
pub(super) struct Traced<'a> {
    pub(super) function: &'a str,
    pub(super) version: Option<&'a str>,
    pub(super) digest: &'a str,
    pub(super) tenant: Option<&'a str>,
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
        what: &Traced<'_>,
        trigger: TriggerKind,
        event: &CloudEvent,
    ) -> Self {
        let mut dispatch =
            tracer.span_for(format!("dispatch {}", what.function), Kind::Internal, event);
        dispatch.set("brink.function", what.function.to_owned());
        dispatch.set("brink.trigger", trigger.label());
        if let Some(tenant) = what.tenant {
            dispatch.set("brink.tenant", tenant.to_owned());
        }
        Self {
            tracer: tracer.clone(),
            dispatch,
            invoked: None,
        }
    }

    /// The invocation's span; `event` (what the guest will see) carries it.
    pub(super) fn invoke(&mut self, what: &Traced<'_>, event: &mut CloudEvent) -> Span {
        let mut span = self
            .dispatch
            .child(format!("invoke {}", what.function), Kind::Internal);
        span.set("brink.function", what.function.to_owned());
        if let Some(version) = what.version {
            span.set("brink.function.version", version.to_owned());
        }
        let short = what.digest.get(..19).unwrap_or(what.digest);
        span.set("brink.function.digest", short.to_owned());
        if let Some(tenant) = what.tenant {
            span.set("brink.tenant", tenant.to_owned());
        }
        span.set("cloudevents.event_id", event.id.clone());
        span.set("cloudevents.event_type", event.type_.clone());
        span.stamp(event);
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
    pub(super) fn output(&self, name: String, kind: Kind, target: String) -> Span {
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
/// carries; the event then carries the span's.
pub(crate) fn mqtt_receive(tracer: &Tracer, topic: &str, qos: u8, event: &mut CloudEvent) -> Span {
    let mut span = tracer.span_for(format!("receive {topic}"), Kind::Consumer, event);
    span.set("messaging.system", "mqtt");
    span.set("messaging.destination.name", topic.to_owned());
    span.set("messaging.mqtt.qos", i64::from(qos));
    span.set("cloudevents.event_id", event.id.clone());
    span.stamp(event);
    span
}

/// The receive span of an HTTP request's event.
pub(crate) fn http_receive(tracer: &Tracer, route: &str, event: &mut CloudEvent) -> Span {
    let mut span = tracer.span_for(format!("POST {route}"), Kind::Server, event);
    span.set("http.request.method", "POST");
    span.set("http.route", route.to_owned());
    span.set("cloudevents.event_id", event.id.clone());
    span.stamp(event);
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
            let mut span = tracer.span_for(format!("deliver {uplink}"), Kind::Producer, event);
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
