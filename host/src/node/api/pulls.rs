//! `POST /v1/pulls`: a component fetched from an OCI registry into the
//! node's store, as if the tenant had uploaded it. The answer carries the
//! signatures and the name and version the artifact's manifest holds;
//! publishing it (`POST /v1/functions/{name}/versions`) then checks the
//! node's signature policy exactly as for an upload.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::Deserialize;

use super::audit::noted;
use super::{Answer, json, json_body, tenant_of};
use crate::engine::check_header;
use crate::node::deploy::Deployer;
use crate::node::problem::Problem;
use crate::oci::OciRef;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PullRequest {
    /// `oci://<registry>/<repository>@sha256:<hex>` (or `:<tag>`).
    reference: String,
}

pub(super) async fn pull(
    State(deployer): State<Deployer>,
    extensions: axum::http::Extensions,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let tenant = tenant_of(&deployer, &extensions)?;
    let request: PullRequest = json_body(&body)?;
    let reference =
        OciRef::parse(&request.reference).map_err(|e| Problem::invalid(format!("{e:#}")))?;
    let Some(puller) = &deployer.node().pulls else {
        return Err(Problem::forbidden(
            "this node pulls from no OCI registry: its operator lists the registries tenants \
             may deploy from in [registry.oci] registries; until then, upload the component",
        ));
    };
    if !puller.allows(reference.registry()) {
        return Err(Problem::forbidden(format!(
            "this node does not pull from {}: [registry.oci] registries lists {:?}",
            reference.registry(),
            puller.registries()
        )));
    }
    let max_bytes = deployer.node().engine.config().max_component_bytes;
    let pulled = puller.pull(&reference, max_bytes).await.map_err(|e| {
        Problem::new(StatusCode::BAD_GATEWAY, "Pull failed", format!("{e:#}"))
            .audited_as("pull.refused")
    })?;
    let pinned = reference.pinned(&pulled.manifest_digest);
    let artifact = pulled.artifact;
    check_header(&artifact.bytes, "the pulled component")
        .map_err(|e| Problem::invalid(format!("{pinned}: {e:#}")))?;
    let size = artifact.bytes.len();
    let digest = super::functions::store_upload(&deployer, &tenant.id, artifact.bytes).await?;
    let answer = json(
        StatusCode::CREATED,
        &serde_json::json!({
            "digest": digest,
            "size": size,
            "reference": pinned.to_string(),
            "manifest_digest": pulled.manifest_digest,
            "name": artifact.name,
            "version": artifact.version,
            "signatures": artifact.signatures,
        }),
    )?;
    Ok(noted(
        answer,
        Some(digest),
        format!("{size} bytes from {pinned}"),
    ))
}
