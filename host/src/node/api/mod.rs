//! The admin API: one router over the node's deployments, tenants, state
//! and metrics, under `/v1`, behind bearer tokens ([`auth`]); errors are
//! RFC 9457 problem bodies ([`crate::node::problem`]). Its handlers parse
//! and answer; the [`Deployer`] and the stores do the work.

pub(crate) mod audit;
pub mod auth;
mod dashboard;
mod functions;
mod logs;
mod node;
pub mod openapi;
mod pulls;
pub mod state;
mod stats;
mod tenants;

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use brink_registry::Signature;
use serde::{Deserialize, Serialize};

use crate::node::deploy::{DeploySpec, Deployer};
use crate::node::problem::Problem;
use crate::tenancy::TenantRecord;
use auth::{Principal, principal};
use functions::*;
use logs::logs;
use openapi::openapi_document;
use tenants::*;

pub(crate) type Answer = Result<Response, Problem>;

pub(crate) fn json(status: StatusCode, value: &impl Serialize) -> Answer {
    let body = serde_json::to_vec(value).map_err(Problem::internal)?;
    Ok((
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

/// What the admin API serves.
#[derive(Debug)]
pub struct Parts<'a> {
    pub kv: Option<crate::kv::Kv>,
    pub outbox: Option<crate::outbox::Outbox>,
    pub metrics: std::sync::Arc<crate::node::metrics::Metrics>,
    /// The app's key-value namespace.
    pub namespace: &'a str,
    pub auth: auth::Auth,
    /// The node's deployments, when it has `[registry]`.
    pub deployer: Option<Deployer>,
    pub max_component_bytes: usize,
    /// The audit ledger: every change made through the API is recorded.
    pub audit: Option<crate::audit::Audit>,
    /// What the node is and has (`GET /v1/node`).
    pub facts: Option<crate::node::facts::Facts>,
}

/// Every admin route, and problem answers for the paths and methods it lacks.
pub fn router(parts: Parts<'_>) -> Router {
    let mut app = state::router(
        parts.kv,
        parts.outbox,
        parts.metrics,
        parts.namespace,
        parts.auth.clone(),
    );
    if let Some(deployer) = parts.deployer {
        app = app.merge(deploy_router(
            deployer,
            parts.auth.clone(),
            parts.max_component_bytes,
        ));
    }
    if let Some(ledger) = &parts.audit {
        app = app.merge(audit::router(ledger.clone(), parts.auth.clone()));
    }
    if let Some(facts) = parts.facts {
        app = app.merge(node::router(facts, parts.auth));
    }
    audit::recorded(app, parts.audit)
        .merge(dashboard::router())
        .fallback(crate::node::http::not_found)
        .method_not_allowed_fallback(crate::node::http::method_not_allowed)
}

/// The `/v1` deploy, tenant and usage routes.
fn deploy_router(deployer: Deployer, auth: auth::Auth, max_component_bytes: usize) -> Router {
    let tenant_routes = Router::new()
        .route(
            "/v1/uploads",
            post(upload).layer(DefaultBodyLimit::max(max_component_bytes)),
        )
        .route("/v1/pulls", post(pulls::pull))
        .route("/v1/functions", get(list_functions))
        .route(
            "/v1/functions/{name}",
            get(get_function).delete(remove_function),
        )
        .route("/v1/functions/{name}/versions", post(publish))
        .route("/v1/functions/{name}/activate", post(activate))
        .route("/v1/functions/{name}/rollback", post(rollback))
        .route("/v1/functions/{name}/promote", post(promote))
        .route("/v1/functions/{name}/invoke", post(invoke))
        .route("/v1/functions/{name}/logs", get(logs))
        .route("/v1/usage", get(usage))
        .route("/v1/tenants", get(list_tenants).post(create_tenant))
        .route(
            "/v1/tenants/{id}",
            get(get_tenant).patch(update_tenant).delete(delete_tenant),
        )
        .route("/v1/tenants/{id}/tokens", post(issue_token))
        .route("/v1/tenants/{id}/tokens/{token}", delete(revoke_token))
        .route("/v1/gc", post(gc))
        .layer(middleware::from_fn_with_state(auth, auth::middleware));
    Router::new()
        .route("/v1/openapi.json", get(openapi_document))
        .merge(tenant_routes)
        .with_state(deployer)
}

/// The calling tenant; the operator manages tenants, not their functions.
pub(crate) fn tenant_of(
    deployer: &Deployer,
    extensions: &axum::http::Extensions,
) -> Result<TenantRecord, Problem> {
    match principal(extensions)? {
        Principal::Tenant(id) => Ok(deployer.tenants().get(&id)?),
        Principal::Operator => Err(Problem::forbidden(
            "functions belong to tenants: call with a tenant's token (`brink tenant create` makes one)",
        )),
    }
}

/// `POST /v1/functions/{name}/versions`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishRequest {
    version: String,
    digest: String,
    #[serde(default)]
    spec: DeploySpec,
    #[serde(default)]
    signatures: Vec<Signature>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    /// Default true; false stages it (stored and compiled, not running).
    activate: Option<bool>,
}

pub(crate) fn json_body<T: serde::de::DeserializeOwned>(
    body: &Result<Bytes, BytesRejection>,
) -> Result<T, Problem> {
    let bytes = match body {
        Ok(b) => b,
        Err(r) => {
            return Err(Problem::new(
                r.status(),
                "Unreadable request body",
                r.body_text(),
            ));
        }
    };
    serde_json::from_slice(bytes)
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "Invalid JSON", e))
}
