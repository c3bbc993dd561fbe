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

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::http::problem;
use crate::kv::{Kv, KvError};

#[derive(Clone)]
struct AdminState {
    kv: Option<Kv>,
    namespace: Arc<str>,
    token: Option<Arc<str>>,
}

/// The admin routes over `kv` (none: the node has no key-value store).
pub fn router(kv: Option<Kv>, namespace: &str, token: Option<&str>) -> Router {
    let max_body = kv
        .as_ref()
        .map_or(1 << 20, |kv| kv.config().max_value_bytes)
        .saturating_add(1);
    let state = AdminState {
        kv,
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
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

async fn authorize(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
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
    }
    next.run(request).await
}

/// Compares without an early exit, so timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn store(state: &AdminState) -> Result<&Kv, Response> {
    state.kv.as_ref().ok_or_else(|| {
        problem(
            StatusCode::NOT_FOUND,
            "No key-value store",
            "this node has no key-value store: no function of its manifest is granted a bucket (`kv = [...]`)",
        )
    })
}

fn kv_problem(e: &KvError) -> Response {
    match e {
        KvError::Backend(_) => problem(StatusCode::INTERNAL_SERVER_ERROR, "Store failed", e),
        KvError::QuotaExceeded { .. } => {
            problem(StatusCode::INSUFFICIENT_STORAGE, "Quota exceeded", e)
        }
        KvError::ValueTooLarge { .. } => {
            problem(StatusCode::PAYLOAD_TOO_LARGE, "Value too large", e)
        }
        _ => problem(StatusCode::BAD_REQUEST, "Invalid key-value request", e),
    }
}

fn json(value: &serde_json::Value) -> Response {
    let mut response = (StatusCode::OK, value.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn buckets(State(state): State<AdminState>) -> Response {
    let kv = match store(&state) {
        Ok(kv) => kv.clone(),
        Err(response) => return response,
    };
    let namespace = state.namespace.clone();
    match blocking(move || kv.buckets(&namespace)).await {
        Ok(buckets) => json(&serde_json::json!({ "buckets": buckets })),
        Err(response) => response,
    }
}

async fn list(
    State(state): State<AdminState>,
    Path(bucket): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let kv = match store(&state) {
        Ok(kv) => kv.clone(),
        Err(response) => return response,
    };
    let prefix = query_param(query.as_deref(), "prefix").unwrap_or_default();
    let cursor = query_param(query.as_deref(), "cursor");
    let namespace = state.namespace.clone();
    let listed = blocking(move || {
        kv.bucket(&namespace, &bucket)?
            .list(&prefix, cursor.as_deref())
    })
    .await;
    match listed {
        Ok((keys, cursor)) => json(&serde_json::json!({ "keys": keys, "cursor": cursor })),
        Err(response) => response,
    }
}

async fn get_value(
    State(state): State<AdminState>,
    Path((bucket, key)): Path<(String, String)>,
) -> Response {
    let kv = match store(&state) {
        Ok(kv) => kv.clone(),
        Err(response) => return response,
    };
    let namespace = state.namespace.clone();
    let what = format!("`{key}` in bucket `{bucket}`");
    match blocking(move || kv.bucket(&namespace, &bucket)?.get(&key)).await {
        Ok(Some(value)) => {
            let mut response = (StatusCode::OK, value).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            response
        }
        Ok(None) => problem(StatusCode::NOT_FOUND, "No such key", format!("no {what}")),
        Err(response) => response,
    }
}

async fn put_value(
    State(state): State<AdminState>,
    Path((bucket, key)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let kv = match store(&state) {
        Ok(kv) => kv.clone(),
        Err(response) => return response,
    };
    let ttl = match query_param(query.as_deref(), "ttl_ms").map(|t| t.parse::<u64>()) {
        None => None,
        Some(Ok(ms)) => Some(Duration::from_millis(ms)),
        Some(Err(e)) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "Invalid TTL",
                format!("ttl_ms: {e}"),
            );
        }
    };
    let namespace = state.namespace.clone();
    let written = blocking(move || {
        kv.bucket(&namespace, &bucket)?.set(&key, &body, ttl)?;
        kv.flush().map_err(KvError::Backend)
    })
    .await;
    match written {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(response) => response,
    }
}

async fn delete_value(
    State(state): State<AdminState>,
    Path((bucket, key)): Path<(String, String)>,
) -> Response {
    let kv = match store(&state) {
        Ok(kv) => kv.clone(),
        Err(response) => return response,
    };
    let namespace = state.namespace.clone();
    let deleted = blocking(move || {
        kv.bucket(&namespace, &bucket)?.delete(&key)?;
        kv.flush().map_err(KvError::Backend)
    })
    .await;
    match deleted {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(response) => response,
    }
}

/// Runs a store call off the async executor; its error as a problem.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KvError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(kv_problem(&e)),
        Err(e) => Err(problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Store failed",
            e,
        )),
    }
}
