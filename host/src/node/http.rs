//! The HTTP trigger: the CloudEvents HTTP binding on `POST /events`,
//! synchronous invocation on `POST /functions/<name>`, health and metrics.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;

use super::dispatch::{DispatchError, Dispatcher, TriggerKind};
use super::problem::{body_problem, dispatch_problem, problem};
use crate::bindings::CloudEvent;
use crate::event::{self, EventError, ExtTypes};

#[derive(Clone)]
struct AppState {
    dispatcher: Dispatcher,
    /// The body limit as the manifest names it, for 413 answers.
    limit: Arc<str>,
}

/// The node's HTTP routes; bodies over `max_body_kb` KiB are refused with 413.
pub fn router(dispatcher: Dispatcher, max_body_kb: usize) -> Router {
    let limit = format!("[http] max_body_kb = {max_body_kb} (KiB)");
    Router::new()
        .route("/events", post(events_root))
        .route("/events/{*path}", post(events_at))
        .route("/functions/{name}", post(invoke))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(max_body_kb.saturating_mul(1024)))
        .with_state(AppState {
            dispatcher,
            limit: Arc::from(limit),
        })
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// 404 for a path no route serves, as a problem like every other error.
pub(crate) async fn not_found(uri: axum::http::Uri) -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "No such resource",
        format!(
            "nothing is served at {}: the HTTP listener takes POST /events[/PATH] and POST /functions/NAME; the admin API lives under /v1/ (GET /v1/openapi.json lists it)",
            uri.path()
        ),
    )
}

/// 405 for a method a route does not take.
pub(crate) async fn method_not_allowed(
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> Response {
    problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed",
        format!("{} does not take {method}", uri.path()),
    )
}

fn event_problem(e: &EventError) -> Response {
    match e {
        EventError::UnsupportedFormat(_) => problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported event format",
            e,
        ),
        _ => problem(StatusCode::BAD_REQUEST, "Invalid CloudEvent", e),
    }
}

async fn events_root(
    state: State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    deliver(state, "/".to_owned(), headers, body).await
}

async fn events_at(
    state: State<AppState>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    deliver(state, format!("/{path}"), headers, body).await
}

/// Dispatches each event to every function it triggers; 202 once all succeeded.
async fn deliver(
    State(state): State<AppState>,
    path: String,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return body_problem(rejection, &state.limit),
    };
    let events = match event::http::decode(&headers, &body) {
        Ok(events) => events,
        Err(e) => return event_problem(&e),
    };
    let mut delivered = 0;
    for (record, types) in events {
        let receive = received(&state.dispatcher, &path, &headers, &record);
        let targets = state.dispatcher.http_targets(&path, &record.type_);
        for target in &targets {
            let sent = dispatch_received(
                &state.dispatcher,
                receive.as_ref(),
                (target, TriggerKind::Http),
                (record.clone(), &types),
            );
            if let Err(e) = sent.await {
                return dispatch_problem(&e);
            }
        }
        delivered += targets.len();
    }
    if delivered == 0 {
        return problem(
            StatusCode::NOT_FOUND,
            "No function is triggered by this event",
            format!(
                "no function has an http trigger for {path:?} or an event_type trigger matching the event type"
            ),
        );
    }
    StatusCode::ACCEPTED.into_response()
}

/// The receive span of a request's event, where the node traces: under the
/// context the event carries, else the request's W3C `traceparent` header
/// (and `tracestate`). The event is left as it came.
fn received(
    dispatcher: &Dispatcher,
    route: &str,
    headers: &HeaderMap,
    event: &CloudEvent,
) -> Option<crate::telemetry::Span> {
    use crate::telemetry::context;
    let tracer = dispatcher.tracer()?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let parent = context::of_event(event)
        .or_else(|| context::parse(header(context::TRACEPARENT), header(context::TRACESTATE)));
    Some(super::traced::http_receive(tracer, route, parent))
}

/// Dispatches `event` to `function`, under the receive span where there is
/// one.
async fn dispatch_received(
    dispatcher: &Dispatcher,
    receive: Option<&crate::telemetry::Span>,
    (function, trigger): (&str, TriggerKind),
    (event, types): (CloudEvent, &ExtTypes),
) -> Result<Vec<CloudEvent>, DispatchError> {
    let dispatch = dispatcher.dispatch(function, trigger, event, types);
    match receive {
        Some(span) => {
            crate::telemetry::context::RECEIVED
                .scope(span.parent(), dispatch)
                .await
        }
        None => dispatch.await,
    }
}

/// Invokes one of the manifest's functions (a tenant's are invoked through
/// the admin API, with its token).
async fn invoke(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !state.dispatcher.is_node_function(&name) {
        return dispatch_problem(&DispatchError::UnknownFunction(name));
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return body_problem(rejection, &state.limit),
    };
    invoke_function(&state.dispatcher, &name, &headers, body).await
}

/// Invokes `name` and answers with its outputs: none 204, one in binary mode, several as a batch.
pub(crate) async fn invoke_function(
    dispatcher: &Dispatcher,
    name: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let mut events = match event::http::decode(headers, &body) {
        Ok(events) => events,
        Err(e) => return event_problem(&e),
    };
    if events.len() != 1 {
        return problem(
            StatusCode::BAD_REQUEST,
            "One event expected",
            format!(
                "{} events sent; invoke a function with one event at a time",
                events.len()
            ),
        );
    }
    let (input, types) = events.remove(0);
    let receive = received(dispatcher, &format!("/functions/{name}"), headers, &input);
    let sent = dispatch_received(
        dispatcher,
        receive.as_ref(),
        (name, TriggerKind::Invoke),
        (input, &types),
    );
    let outputs = match sent.await {
        Ok(outputs) => outputs,
        Err(e) => return dispatch_problem(&e),
    };
    let encoded = match outputs.as_slice() {
        [] => return StatusCode::NO_CONTENT.into_response(),
        [one] => event::http::encode_binary(one).map(|(headers, body)| {
            // Not `(headers, body).into_response()`: a byte body would get
            // `application/octet-stream` where the event has no content type.
            let mut response = Response::new(axum::body::Body::from(body));
            *response.headers_mut() = headers;
            response
        }),
        many => event::json::write_batch(many.iter().map(|e| (e, &types))).map(|body| {
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, event::http::BATCH)],
                body,
            )
                .into_response()
        }),
    };
    encoded.unwrap_or_else(|e| problem(StatusCode::BAD_GATEWAY, "Unencodable output", e))
}

async fn healthz() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
        .into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    // Off the executor: reading bucket sizes may touch the store.
    // Node-wide figures only: this listener answers anyone who can reach it.
    let encoded =
        tokio::task::spawn_blocking(move || state.dispatcher.metrics().encode_public()).await;
    match encoded {
        Ok(Ok(text)) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Ok(Err(e)) => problem(StatusCode::INTERNAL_SERVER_ERROR, "Metrics unavailable", e),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, "Metrics unavailable", e),
    }
}
