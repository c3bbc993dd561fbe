//! The admin API: inspect and seed a running node's key-value state
//! (`brink kv`). JSON and raw bytes over HTTP under `/v1`; errors are
//! RFC 9457 problem bodies. With `[admin] token` set, every call needs it as
//! a bearer token.
//!
//! - `GET /v1/kv`: the app's buckets, `{"buckets": [...]}`
//! - `GET /v1/kv/{bucket}?prefix=&cursor=`: `{"keys": [...], "cursor": ...}`
//! - `GET /v1/kv/{bucket}/{key}`: the value's bytes (404 when absent)
//! - `PUT /v1/kv/{bucket}/{key}?ttl_ms=`: sets it to the body (204)
//! - `DELETE /v1/kv/{bucket}/{key}`: removes it (204)
//! - `GET /v1/outbox`: every uplink's queue: backlog, counters, connected
//! - `POST /v1/outbox/{uplink}/purge`: drops everything queued for it, `{"purged": n}`

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::http::{Problem, problem};
use crate::kv::{Kv, KvError};
use crate::outbox::{Outbox, OutboxError};

#[derive(Clone)]
struct AdminState {
    kv: Option<Kv>,
    outbox: Option<Outbox>,
    namespace: Arc<str>,
    token: Option<Arc<str>>,
}

/// The admin routes over `kv` and `outbox` (none: the node has none).
pub fn router(
    kv: Option<Kv>,
    outbox: Option<Outbox>,
    namespace: &str,
    token: Option<&str>,
) -> Router {
    let max_body = kv
        .as_ref()
        .map_or(1 << 20, |kv| kv.config().max_value_bytes)
        .saturating_add(1);
    let state = AdminState {
        kv,
        outbox,
        namespace: Arc::from(namespace),
        token: token.map(Arc::from),
    };
    Router::new()
        .route("/v1/kv", get(buckets))
        .route("/v1/kv/{bucket}", get(list))
        .route(
            "/v1/kv/{bucket}/{*key}",
            get(get_value).put(put_value).delete(delete_value),
        )
        .route("/v1/outbox", get(outbox_status))
        .route(
            "/v1/outbox/{uplink}/purge",
            axum::routing::post(outbox_purge),
        )
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

async fn authorize(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")));
    // Without an operator token only callers with no token pass (the API is
    // on loopback); a tenant's token is never the operator's.
    let allowed = match (&state.token, presented) {
        (None, None) => true,
        (Some(token), Some(Some(p))) => constant_time_eq(p.as_bytes(), token.as_bytes()),
        _ => false,
    };
    if !allowed {
        let mut response = problem(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "this admin API needs `Authorization: Bearer <token>` with the node's admin token",
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    next.run(request).await
}

/// Compares without an early exit, so timing does not reveal the token.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl From<KvError> for Problem {
    fn from(e: KvError) -> Self {
        let (status, title) = match &e {
            KvError::Backend(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Store failed"),
            KvError::QuotaExceeded { .. } => (StatusCode::INSUFFICIENT_STORAGE, "Quota exceeded"),
            KvError::ValueTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "Value too large"),
            _ => (StatusCode::BAD_REQUEST, "Invalid key-value request"),
        };
        Self::new(status, title, e)
    }
}

type Answer = Result<Response, Problem>;

fn store(state: &AdminState) -> Result<Kv, Problem> {
    state.kv.clone().ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "No key-value store",
            "this node has no key-value store: no function of its manifest is granted a bucket (`kv = [...]`)",
        )
    })
}

fn json(value: &serde_json::Value) -> Response {
    let mut response = (StatusCode::OK, value.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub(super) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn buckets(State(state): State<AdminState>) -> Answer {
    let kv = store(&state)?;
    let namespace = state.namespace.clone();
    let buckets = blocking(move || kv.buckets(&namespace)).await?;
    Ok(json(&serde_json::json!({ "buckets": buckets })))
}

async fn list(
    State(state): State<AdminState>,
    Path(bucket): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    let kv = store(&state)?;
    let prefix = query_param(query.as_deref(), "prefix").unwrap_or_default();
    let cursor = query_param(query.as_deref(), "cursor");
    let namespace = state.namespace.clone();
    let (keys, cursor) = blocking(move || {
        kv.bucket(&namespace, &bucket)?
            .list(&prefix, cursor.as_deref())
    })
    .await?;
    Ok(json(&serde_json::json!({ "keys": keys, "cursor": cursor })))
}

async fn get_value(
    State(state): State<AdminState>,
    Path((bucket, key)): Path<(String, String)>,
) -> Answer {
    let kv = store(&state)?;
    let namespace = state.namespace.clone();
    let what = format!("no `{key}` in bucket `{bucket}`");
    let value = blocking(move || kv.bucket(&namespace, &bucket)?.get(&key))
        .await?
        .ok_or_else(|| Problem::new(StatusCode::NOT_FOUND, "No such key", what))?;
    let mut response = (StatusCode::OK, value).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}

async fn put_value(
    State(state): State<AdminState>,
    Path((bucket, key)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Answer {
    let kv = store(&state)?;
    let ttl = query_param(query.as_deref(), "ttl_ms")
        .map(|t| t.parse::<u64>())
        .transpose()
        .map_err(|e| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "Invalid TTL",
                format!("ttl_ms: {e}"),
            )
        })?
        .map(Duration::from_millis);
    let namespace = state.namespace.clone();
    blocking(move || {
        kv.bucket(&namespace, &bucket)?.set(&key, &body, ttl)?;
        kv.flush().map_err(KvError::Backend)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_value(
    State(state): State<AdminState>,
    Path((bucket, key)): Path<(String, String)>,
) -> Answer {
    let kv = store(&state)?;
    let namespace = state.namespace.clone();
    blocking(move || {
        kv.bucket(&namespace, &bucket)?.delete(&key)?;
        kv.flush().map_err(KvError::Backend)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Runs a store call off the async executor.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KvError> + Send + 'static,
) -> Result<T, Problem> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => Ok(result?),
        Err(e) => Err(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Store failed",
            e,
        )),
    }
}

fn outbox_of(state: &AdminState) -> Result<Outbox, Problem> {
    state.outbox.clone().ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "No outbox",
            "this node has no outbox: its manifest declares no uplink (`[uplink.<name>]`)",
        )
    })
}

async fn outbox_status(State(state): State<AdminState>) -> Answer {
    let outbox = outbox_of(&state)?;
    let status = tokio::task::spawn_blocking(move || outbox.status())
        .await
        .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Outbox failed", e))?;
    Ok(json(&serde_json::json!({ "uplinks": status })))
}

async fn outbox_purge(State(state): State<AdminState>, Path(uplink): Path<String>) -> Answer {
    let outbox = outbox_of(&state)?;
    match outbox.purge(&uplink).await {
        Ok(purged) => Ok(json(
            &serde_json::json!({ "uplink": uplink, "purged": purged }),
        )),
        Err(e @ OutboxError::UnknownUplink(_)) => {
            Err(Problem::new(StatusCode::NOT_FOUND, "No such uplink", e))
        }
        Err(e) => Err(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Outbox failed",
            e,
        )),
    }
}
