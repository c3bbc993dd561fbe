//! `/v1/uploads`, `/v1/functions/...`, `/v1/usage` and `/v1/gc`: a tenant's functions.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;

use super::audit::noted;
use super::auth::{Principal, operator, principal};
use super::{Answer, PublishRequest, json, json_body, tenant_of};
use crate::engine::check_header;
use crate::node::canary;
use crate::node::deploy::Deployer;
use crate::node::http::invoke_function;
use crate::node::problem::Problem;
use crate::node::problem::{body_problem, dispatch_problem};
use crate::tenancy::names::{kv_namespace, route_name};
use brink_registry::{NewVersion, RegistryError, VersionRecord};

/// Stores `bytes` (already checked to be a component) in the registry as
/// `tenant`'s upload, which it may then publish; their digest.
pub(super) async fn store_upload<B: AsRef<[u8]> + Send + 'static>(
    deployer: &Deployer,
    tenant: &str,
    bytes: B,
) -> Result<String, Problem> {
    let inner = deployer.clone();
    let digest = tokio::task::spawn_blocking(move || inner.registry().put_blob(bytes.as_ref()))
        .await
        .map_err(Problem::internal)??;
    deployer.tenants().record_upload(tenant, &digest)?;
    Ok(digest)
}

pub(super) async fn upload(
    State(deployer): State<Deployer>,
    extensions: axum::http::Extensions,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let tenant = tenant_of(&deployer, &extensions)?;
    let body = body.map_err(|r| {
        let status = r.status();
        let title = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "Component too large"
        } else {
            "Unreadable request body"
        };
        Problem::new(status, title, r.body_text())
    })?;
    check_header(&body, "the upload").map_err(|e| Problem::invalid(format!("{e:#}")))?;
    let size = body.len();
    let digest = store_upload(&deployer, &tenant.id, body).await?;
    let answer = json(
        StatusCode::CREATED,
        &serde_json::json!({ "digest": digest, "size": size }),
    )?;
    Ok(noted(answer, Some(digest), format!("{size} bytes")))
}

pub(super) async fn publish(
    State(deployer): State<Deployer>,
    Path(name): Path<String>,
    extensions: axum::http::Extensions,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let tenant = tenant_of(&deployer, &extensions)?;
    let request: PublishRequest = json_body(&body)?;
    brink_registry::check_name(&name)?;
    let version = brink_registry::parse_version(&request.version)?.to_string();
    let owned = deployer.tenants().uploaded(&tenant.id, &request.digest)?
        || deployer
            .registry()
            .versions(&tenant.id, &name)?
            .iter()
            .any(|v| v.digest == request.digest);
    if !owned {
        return Err(Problem::invalid(format!(
            "no upload {} by tenant `{}`: upload the component first (POST /v1/uploads)",
            request.digest, tenant.id
        )));
    }
    deployer
        .node()
        .policy
        .check(&request.digest, &name, &version, &request.signatures)
        .map_err(|e| Problem::forbidden(e).audited_as("signature.refused"))?;
    let activate = request.activate.unwrap_or(true);
    let audited = (
        format!("{name}@{version}"),
        format!(
            "{}, {} signatures, {}",
            request.digest,
            request.signatures.len(),
            if activate { "activated" } else { "staged" }
        ),
    );
    let _one = deployer.deploys().lock().await;
    if activate {
        deployer.check_function_quota(&tenant, &name)?;
    }
    let spec = serde_json::to_value(&request.spec).map_err(Problem::internal)?;
    // Compile before recording, so a version that cannot run is never stored.
    let candidate = VersionRecord {
        namespace: tenant.id.clone(),
        name: name.clone(),
        version: version.clone(),
        digest: request.digest.clone(),
        size: 0,
        created_unix_ms: 0,
        signatures: request.signatures.clone(),
        annotations: request.annotations.clone(),
        spec: spec.clone(),
    };
    let route = deployer.load(&tenant, &candidate).await?;
    deployer.registry().publish(NewVersion {
        namespace: tenant.id.clone(),
        name: name.clone(),
        version: version.clone(),
        digest: request.digest,
        signatures: request.signatures,
        annotations: request.annotations,
        spec,
    })?;
    let view = if activate {
        let view = deployer.go_live(&tenant, &name, &version, route)?;
        deployer.follow_mqtt(&tenant.id, &name).await;
        view
    } else {
        deployer.view(&tenant.id, &name)?
    };
    Ok(noted(
        json(StatusCode::CREATED, &view)?,
        Some(audited.0),
        audited.1,
    ))
}

pub(super) async fn list_functions(
    State(deployer): State<Deployer>,
    extensions: axum::http::Extensions,
) -> Answer {
    let tenant = tenant_of(&deployer, &extensions)?;
    let views = deployer
        .registry()
        .names(&tenant.id)?
        .iter()
        .map(|name| deployer.view(&tenant.id, name))
        .collect::<Result<Vec<_>, _>>()?;
    json(StatusCode::OK, &serde_json::json!({ "functions": views }))
}

pub(super) async fn get_function(
    State(deployer): State<Deployer>,
    Path(name): Path<String>,
    extensions: axum::http::Extensions,
) -> Answer {
    let tenant = tenant_of(&deployer, &extensions)?;
    json(StatusCode::OK, &deployer.view(&tenant.id, &name)?)
}

pub(super) async fn remove_function(
    State(deployer): State<Deployer>,
    Path(name): Path<String>,
    extensions: axum::http::Extensions,
) -> Answer {
    let tenant = tenant_of(&deployer, &extensions)?;
    let _one = deployer.deploys().lock().await;
    deployer.remove(&tenant.id, &name)?;
    deployer.follow_mqtt(&tenant.id, &name).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivateRequest {
    /// `1.2.3`, `^1.2` or `latest`.
    version: String,
    /// 1 to 99: make it a canary that takes this percentage of the events
    /// (picked by event id) beside the active version.
    weight: Option<u8>,
}

pub(super) async fn activate(
    State(deployer): State<Deployer>,
    Path(name): Path<String>,
    extensions: axum::http::Extensions,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let tenant = tenant_of(&deployer, &extensions)?;
    let request: ActivateRequest = json_body(&body)?;
    if let Some(weight) = request.weight {
        let view = canary::start(&deployer, &tenant, &name, &request.version, weight).await?;
        return Ok(noted(
            json(StatusCode::OK, &view)?,
            Some(format!("{name}@{}", request.version)),
            format!("canary at {weight}%"),
        ));
    }
    let _one = deployer.deploys().lock().await;
    deployer.check_function_quota(&tenant, &name)?;
    let record = deployer
        .registry()
        .resolve(&tenant.id, &name, &request.version)?;
    let route = deployer.load(&tenant, &record).await?;
    let view = deployer.go_live(&tenant, &name, &record.version, route)?;
    deployer.follow_mqtt(&tenant.id, &name).await;
    Ok(noted(
        json(StatusCode::OK, &view)?,
        Some(format!("{name}@{}", record.version)),
        record.digest,
    ))
}

pub(super) async fn rollback(
    State(deployer): State<Deployer>,
    Path(name): Path<String>,
    extensions: axum::http::Extensions,
) -> Answer {
    let tenant = tenant_of(&deployer, &extensions)?;
    let _one = deployer.deploys().lock().await;
    deployer.view(&tenant.id, &name)?;
    // During a canary, rolling back ends it: the active version stays.
    if let Some(ended) = canary::end(&deployer, &tenant, &name)? {
        return Ok(noted(
            json(StatusCode::OK, &deployer.view(&tenant.id, &name)?)?,
            Some(format!("{name}@{}", ended.version)),
            "canary ended".to_owned(),
        ));
    }
    let deployment = deployer.registry().deployment(&tenant.id, &name)?;
    let Some(back) = deployment.previous.last() else {
        return Err(RegistryError::NothingToRollBackTo { name }.into());
    };
    let record = deployer.registry().version(&tenant.id, &name, back)?;
    let route = deployer.load(&tenant, &record).await?;
    deployer.registry().rollback(&tenant.id, &name)?;
    deployer.install(&tenant, &name, route);
    deployer.follow_mqtt(&tenant.id, &name).await;
    tracing::info!(
        tenant = tenant.id,
        function = name,
        version = record.version,
        "rolled back"
    );
    Ok(noted(
        json(StatusCode::OK, &deployer.view(&tenant.id, &name)?)?,
        Some(format!("{name}@{}", record.version)),
        record.digest,
    ))
}

pub(super) async fn promote(
    State(deployer): State<Deployer>,
    Path(name): Path<String>,
    extensions: axum::http::Extensions,
) -> Answer {
    let tenant = tenant_of(&deployer, &extensions)?;
    let (view, version) = canary::promote(&deployer, &tenant, &name).await?;
    Ok(noted(
        json(StatusCode::OK, &view)?,
        Some(format!("{name}@{version}")),
        "canary promoted".to_owned(),
    ))
}

pub(super) async fn invoke(
    State(deployer): State<Deployer>,
    Path(name): Path<String>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let tenant = tenant_of(&deployer, &extensions)?;
    let key = route_name(&tenant.id, &name);
    if deployer.node().dispatcher.digest_of(&key).is_none() {
        return Ok(dispatch_problem(
            &crate::node::dispatch::DispatchError::UnknownFunction(name),
        ));
    }
    let body = match body {
        Ok(body) => body,
        // axum's default limit: this route sets none of its own.
        Err(rejection) => {
            return Ok(body_problem(
                rejection,
                "the admin API's 2 MiB for an event",
            ));
        }
    };
    Ok(invoke_function(&deployer.node().dispatcher, &key, &headers, body).await)
}

pub(super) async fn usage(
    State(deployer): State<Deployer>,
    extensions: axum::http::Extensions,
) -> Answer {
    let metrics = deployer.node().dispatcher.metrics();
    let ids = match principal(&extensions)? {
        Principal::Tenant(id) => vec![id],
        Principal::Operator => deployer
            .tenants()
            .list()?
            .into_iter()
            .map(|t| t.id)
            .collect(),
    };
    let mut usage = Vec::new();
    for id in ids {
        let u = metrics.usage(&id);
        let kv_bytes = match &deployer.node().kv {
            Some(kv) => kv.namespace_size(&kv_namespace(&id))?,
            None => 0,
        };
        usage.push(serde_json::json!({
            "tenant": id,
            "functions": deployer.active_count(&id)?,
            "invocations": u.invocations,
            "execution_seconds": u.execution_seconds,
            "inference_seconds": u.inference_seconds,
            "kv_bytes": kv_bytes,
            "outbox_bytes": deployer
                .node()
                .outbox
                .as_ref()
                .map_or(0, |o| o.owner_usage(&id).bytes),
        }));
    }
    json(StatusCode::OK, &serde_json::json!({ "usage": usage }))
}

pub(super) async fn gc(
    State(deployer): State<Deployer>,
    extensions: axum::http::Extensions,
) -> Answer {
    operator(&extensions, "collect the registry's garbage")?;
    let inner = deployer.clone();
    let report = tokio::task::spawn_blocking(move || inner.registry().gc())
        .await
        .map_err(Problem::internal)??;
    let detail = serde_json::to_string(&report).map_err(Problem::internal)?;
    Ok(noted(json(StatusCode::OK, &report)?, None, detail))
}
