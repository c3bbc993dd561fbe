//! The admin API: inspect and seed a running node's key-value state
//! (`brink kv`) and its outbox. JSON and raw bytes over HTTP under `/v1`;
//! errors are RFC 9457 problem bodies. Callers authenticate as in
//! [`super::auth`]: the operator sees the app's buckets (or a tenant's, with
//! `?tenant=<id>`), a tenant only its own; a tenant sees the uplinks it is
//! granted, and only the operator purges.
//!
//! - `GET /v1/kv`: the app's buckets, `{"buckets": [...]}`
//! - `GET /v1/kv/{bucket}?prefix=&cursor=`: `{"keys": [...], "cursor": ...}`
//! - `GET /v1/kv/{bucket}/{key}`: the value's bytes (404 when absent)
//! - `PUT /v1/kv/{bucket}/{key}?ttl_ms=`: sets it to the body (204)
//! - `DELETE /v1/kv/{bucket}/{key}`: removes it (204)
//! - `GET /v1/metrics`: every metric, tenants' included (operator); the public
//!   listener's `/metrics` has node-wide figures only
//! - `GET /v1/outbox`: every uplink's queue: backlog, counters, connected
//! - `POST /v1/outbox/{uplink}/purge`: drops everything queued for it, `{"purged": n}`
//! - `GET /v1/outbox/{uplink}/parked`: the events it refused for good,
//!   with the reason and the time (a tenant sees only its own)
//! - `POST /v1/outbox/{uplink}/parked/retry`, `.../parked/purge`: moves them
//!   back to the queue, or drops them; a body `{"seqs": [..]}` picks some

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{Extensions, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::auth::{Auth, Principal, operator, principal};
use crate::kv::{Kv, KvError};
use crate::node::metrics::Metrics;
use crate::node::problem::Problem;
use crate::outbox::{Outbox, OutboxError};
use crate::tenancy::names::kv_namespace;

#[derive(Clone)]
struct AdminState {
    kv: Option<Kv>,
    outbox: Option<Outbox>,
    metrics: Arc<Metrics>,
    namespace: Arc<str>,
    auth: Auth,
}

/// The admin routes over `kv` and `outbox` (none: the node has none), for
/// callers `auth` lets in.
pub fn router(
    kv: Option<Kv>,
    outbox: Option<Outbox>,
    metrics: Arc<Metrics>,
    namespace: &str,
    auth: Auth,
) -> Router {
    let max_body = kv
        .as_ref()
        .map_or(1 << 20, |kv| kv.config().max_value_bytes)
        .saturating_add(1);
    let state = AdminState {
        kv,
        outbox,
        metrics,
        namespace: Arc::from(namespace),
        auth: auth.clone(),
    };
    Router::new()
        .route("/v1/kv", get(buckets))
        .route("/v1/kv/{bucket}", get(list))
        .route(
            "/v1/kv/{bucket}/{*key}",
            get(get_value).put(put_value).delete(delete_value),
        )
        .route("/v1/metrics", get(all_metrics))
        .route("/v1/stats", get(stats))
        .route("/v1/outbox", get(outbox_status))
        .route(
            "/v1/outbox/{uplink}/purge",
            axum::routing::post(outbox_purge),
        )
        .route("/v1/outbox/{uplink}/parked", get(parked_list))
        .route(
            "/v1/outbox/{uplink}/parked/{action}",
            axum::routing::post(parked_act),
        )
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(
            auth,
            super::auth::middleware,
        ))
        .with_state(state)
}

/// The key-value namespace the caller sees: a tenant its own; the operator
/// the app's, or the tenant's that `?tenant=` names.
fn namespace(
    state: &AdminState,
    extensions: &Extensions,
    query: Option<&str>,
) -> Result<String, Problem> {
    let asked = query_param(query, "tenant");
    match (principal(extensions)?, asked) {
        (Principal::Operator, None) => Ok(state.namespace.to_string()),
        (Principal::Operator, Some(tenant)) => {
            state.auth.tenant(&tenant)?;
            Ok(kv_namespace(&tenant))
        }
        (Principal::Tenant(own), Some(other)) if other != own => Err(Problem::forbidden(format!(
            "tenant `{own}` may not see tenant `{other}`'s state"
        ))),
        (Principal::Tenant(own), _) => Ok(kv_namespace(&own)),
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

pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn buckets(
    State(state): State<AdminState>,
    extensions: Extensions,
    RawQuery(query): RawQuery,
) -> Answer {
    let kv = store(&state)?;
    let namespace = namespace(&state, &extensions, query.as_deref())?;
    let buckets = blocking(move || kv.buckets(&namespace)).await?;
    Ok(json(&serde_json::json!({ "buckets": buckets })))
}

async fn list(
    State(state): State<AdminState>,
    Path(bucket): Path<String>,
    extensions: Extensions,
    RawQuery(query): RawQuery,
) -> Answer {
    let kv = store(&state)?;
    let prefix = query_param(query.as_deref(), "prefix").unwrap_or_default();
    let cursor = query_param(query.as_deref(), "cursor");
    let namespace = namespace(&state, &extensions, query.as_deref())?;
    let (keys, cursor) = blocking(move || {
        kv.existing_bucket(&namespace, &bucket)?
            .list(&prefix, cursor.as_deref())
    })
    .await?;
    Ok(json(&serde_json::json!({ "keys": keys, "cursor": cursor })))
}

async fn get_value(
    State(state): State<AdminState>,
    Path((bucket, key)): Path<(String, String)>,
    extensions: Extensions,
    RawQuery(query): RawQuery,
) -> Answer {
    let kv = store(&state)?;
    let namespace = namespace(&state, &extensions, query.as_deref())?;
    let what = format!("no `{key}` in bucket `{bucket}`");
    let value = blocking(move || kv.existing_bucket(&namespace, &bucket)?.get(&key))
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
    extensions: Extensions,
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
    let namespace = namespace(&state, &extensions, query.as_deref())?;
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
    extensions: Extensions,
    RawQuery(query): RawQuery,
) -> Answer {
    let kv = store(&state)?;
    let namespace = namespace(&state, &extensions, query.as_deref())?;
    blocking(move || {
        kv.existing_bucket(&namespace, &bucket)?.delete(&key)?;
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

async fn outbox_status(State(state): State<AdminState>, extensions: Extensions) -> Answer {
    let outbox = outbox_of(&state)?;
    // A tenant sees the uplinks it is granted: their queues, not whose events are in them.
    let granted = match principal(&extensions)? {
        Principal::Operator => None,
        Principal::Tenant(id) => Some(state.auth.tenant(&id)?.grants.uplinks),
    };
    let status = tokio::task::spawn_blocking(move || outbox.status())
        .await
        .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Outbox failed", e))?;
    let status: Vec<_> = status
        .into_iter()
        .filter(|u| granted.as_ref().is_none_or(|g| g.contains(&u.uplink)))
        .collect();
    Ok(json(&serde_json::json!({ "uplinks": status })))
}

async fn outbox_purge(
    State(state): State<AdminState>,
    Path(uplink): Path<String>,
    extensions: Extensions,
) -> Answer {
    operator(&extensions, "purge an uplink's queue")?;
    let outbox = outbox_of(&state)?;
    match outbox.purge(&uplink).await {
        Ok(purged) => Ok(super::audit::noted(
            json(&serde_json::json!({ "uplink": uplink, "purged": purged })),
            None,
            format!("{purged} events dropped"),
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

fn outbox_problem(e: OutboxError) -> Problem {
    match e {
        OutboxError::UnknownUplink(_) => Problem::new(StatusCode::NOT_FOUND, "No such uplink", e),
        e => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Outbox failed", e),
    }
}

async fn parked_list(
    State(state): State<AdminState>,
    Path(uplink): Path<String>,
    extensions: Extensions,
) -> Answer {
    let outbox = outbox_of(&state)?;
    // A tenant sees its own parked events on the uplinks it is granted.
    let owner = match principal(&extensions)? {
        Principal::Operator => None,
        Principal::Tenant(id) => {
            if !state.auth.tenant(&id)?.grants.uplinks.contains(&uplink) {
                return Err(Problem::new(
                    StatusCode::FORBIDDEN,
                    "Uplink not granted",
                    format!("tenant `{id}` is not granted uplink `{uplink}`"),
                ));
            }
            Some(id)
        }
    };
    let list = {
        let uplink = uplink.clone();
        tokio::task::spawn_blocking(move || outbox.parked(&uplink))
            .await
            .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Outbox failed", e))?
            .map_err(outbox_problem)?
    };
    let parked: Vec<_> = list
        .iter()
        .filter(|p| owner.is_none() || p.entry.owner == owner)
        .map(crate::outbox::ParkedEntry::view)
        .collect();
    Ok(json(
        &serde_json::json!({ "uplink": uplink, "parked": parked }),
    ))
}

/// `{"seqs": [..]}`: the parked events an action takes; none: all of them.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ParkedSelection {
    seqs: Option<Vec<u64>>,
}

async fn parked_act(
    State(state): State<AdminState>,
    Path((uplink, action)): Path<(String, String)>,
    extensions: Extensions,
    body: Bytes,
) -> Answer {
    operator(&extensions, "retry or purge parked events")?;
    let outbox = outbox_of(&state)?;
    let selection: ParkedSelection = if body.iter().all(u8::is_ascii_whitespace) {
        ParkedSelection::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "Bad selection",
                format!("expected {{\"seqs\": [numbers]}} or no body: {e}"),
            )
        })?
    };
    let seqs = selection.seqs.as_deref();
    let (field, count) = match action.as_str() {
        "retry" => ("moved", outbox.retry_parked(&uplink, seqs).await),
        "purge" => ("purged", outbox.purge_parked(&uplink, seqs).await),
        other => {
            return Err(Problem::new(
                StatusCode::NOT_FOUND,
                "No such action",
                format!("parked events can be `retry`-ed or `purge`-d, not `{other}`-ed"),
            ));
        }
    };
    let count = count.map_err(outbox_problem)?;
    Ok(super::audit::noted(
        json(&serde_json::json!({ "uplink": uplink, field: count })),
        None,
        format!("{count} parked events {field}"),
    ))
}

/// `GET /v1/stats`: each visible function's and model's figures.
async fn stats(State(state): State<AdminState>, extensions: Extensions) -> Answer {
    super::stats::stats(state.metrics.clone(), &extensions).await
}

async fn all_metrics(State(state): State<AdminState>, extensions: Extensions) -> Answer {
    operator(&extensions, "read every tenant's metrics")?;
    let metrics = state.metrics.clone();
    let text = tokio::task::spawn_blocking(move || metrics.encode())
        .await
        .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Metrics unavailable", e))?
        .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Metrics unavailable", e))?;
    let mut response = (StatusCode::OK, text).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}
