//! `/v1/tenants/...`: the operator's tenants and their tokens.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;

use super::audit::noted;
use super::auth::{Principal, operator, principal};
use super::{Answer, json, json_body};
use crate::node::deploy::Deployer;
use crate::node::problem::Problem;
use crate::tenancy::{Quota, TenantGrants, TenantRecord};

/// `POST /v1/tenants`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    id: String,
    #[serde(default)]
    quota: Quota,
    #[serde(default)]
    grants: TenantGrants,
}

/// The public id inside a token (`brink_<id>_<secret>`), never its secret.
fn token_id(token: &str) -> &str {
    token.split('_').nth(1).unwrap_or("?")
}

/// A tenant as the API shows it (token secrets are never shown again).
fn tenant_json(t: &TenantRecord) -> serde_json::Value {
    serde_json::json!({
        "id": t.id,
        "created_unix_ms": t.created_unix_ms,
        "quota": t.quota,
        "grants": t.grants,
        "tokens": t.tokens,
    })
}

pub(super) async fn create_tenant(
    State(deployer): State<Deployer>,
    extensions: axum::http::Extensions,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    operator(&extensions, "manage tenants")?;
    let request: CreateTenant = json_body(&body)?;
    let (tenant, token) = deployer
        .tenants()
        .create(&request.id, request.quota, request.grants)?;
    deployer.apply_quotas(&tenant)?;
    let answer = json(
        StatusCode::CREATED,
        &serde_json::json!({ "tenant": tenant_json(&tenant), "token": token }),
    )?;
    Ok(noted(
        answer,
        Some(tenant.id.clone()),
        format!("first token {}", token_id(&token)),
    ))
}

pub(super) async fn list_tenants(
    State(deployer): State<Deployer>,
    extensions: axum::http::Extensions,
) -> Answer {
    operator(&extensions, "manage tenants")?;
    let tenants: Vec<_> = deployer.tenants().list()?.iter().map(tenant_json).collect();
    json(StatusCode::OK, &serde_json::json!({ "tenants": tenants }))
}

pub(super) async fn get_tenant(
    State(deployer): State<Deployer>,
    Path(id): Path<String>,
    extensions: axum::http::Extensions,
) -> Answer {
    // A tenant may read its own record (quota, grants, token ids).
    match principal(&extensions)? {
        Principal::Tenant(own) if own != id => {
            return Err(Problem::forbidden(format!(
                "tenant `{own}` may not read tenant `{id}`"
            )));
        }
        _ => {}
    }
    json(StatusCode::OK, &tenant_json(&deployer.tenants().get(&id)?))
}

/// `PATCH /v1/tenants/{id}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateTenant {
    quota: Option<Quota>,
    grants: Option<TenantGrants>,
}

pub(super) async fn update_tenant(
    State(deployer): State<Deployer>,
    Path(id): Path<String>,
    extensions: axum::http::Extensions,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    operator(&extensions, "manage tenants")?;
    let request: UpdateTenant = json_body(&body)?;
    let tenant = deployer
        .tenants()
        .update(&id, request.quota, request.grants)?;
    deployer.apply_quotas(&tenant)?;
    json(StatusCode::OK, &tenant_json(&tenant))
}

/// `DELETE /v1/tenants/{id}`: the tenant, its tokens, its functions (every
/// version) and its key-value buckets. Events its functions already queued
/// in the outbox are still delivered: they were accepted.
pub(super) async fn delete_tenant(
    State(deployer): State<Deployer>,
    Path(id): Path<String>,
    extensions: axum::http::Extensions,
) -> Answer {
    operator(&extensions, "manage tenants")?;
    let (functions, buckets) = deployer.delete_tenant(&id).await?;
    json(
        StatusCode::OK,
        &serde_json::json!({ "tenant": id, "functions": functions, "kv_buckets": buckets }),
    )
    .map(|answer| {
        noted(
            answer,
            None,
            format!("{functions:?} functions, {buckets:?} buckets removed"),
        )
    })
}

pub(super) async fn issue_token(
    State(deployer): State<Deployer>,
    Path(id): Path<String>,
    extensions: axum::http::Extensions,
) -> Answer {
    operator(&extensions, "manage tenants")?;
    let token = deployer.tenants().issue_token(&id)?;
    let answer = json(
        StatusCode::CREATED,
        &serde_json::json!({ "tenant": id, "token": token }),
    )?;
    Ok(noted(
        answer,
        Some(format!("{id}/{}", token_id(&token))),
        String::new(),
    ))
}

pub(super) async fn revoke_token(
    State(deployer): State<Deployer>,
    Path((id, token)): Path<(String, String)>,
    extensions: axum::http::Extensions,
) -> Answer {
    operator(&extensions, "manage tenants")?;
    deployer.tenants().revoke_token(&id, &token)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
