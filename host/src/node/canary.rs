//! Canary releases of a tenant's function (`brink activate NAME VERSION
//! --weight N`, `brink promote`, `brink rollback`): the registry records
//! the canary, the dispatcher sends it the events whose id falls in its
//! share, and this module keeps the two in step, at start too.

use super::deploy::{Deployer, FunctionView};
use super::problem::Problem;
use crate::tenancy::TenantRecord;
use crate::tenancy::names::route_name;
use brink_registry::{Canary, RegistryError};

/// Starts (or re-weights) a canary of `name` at `requirement`'s version.
/// It must take the same triggers as the active version: it gets a share
/// of that version's events, not events of its own.
pub(crate) async fn start(
    deployer: &Deployer,
    tenant: &TenantRecord,
    name: &str,
    requirement: &str,
    weight: u8,
) -> Result<FunctionView, Problem> {
    let _one = deployer.deploys().lock().await;
    let registry = deployer.registry();
    let record = registry.resolve(&tenant.id, name, requirement)?;
    let Some(active) = registry.deployment(&tenant.id, name)?.active else {
        return Err(RegistryError::Canary(format!(
            "`{name}` has no active version to share its events with: activate one first"
        ))
        .into());
    };
    let current = registry.version(&tenant.id, name, &active)?;
    if record.spec.get("triggers") != current.spec.get("triggers") {
        return Err(Problem::invalid(format!(
            "{name}@{} has other triggers than the active {name}@{active}; a canary takes a \
             share of the active version's events, so publish it with the same triggers, or \
             activate it outright",
            record.version
        )));
    }
    let route = deployer.load(tenant, &record).await?;
    let deployment = registry.start_canary(&tenant.id, name, &record.version, weight)?;
    let canary = deployment.canary.clone().ok_or_else(|| {
        Problem::internal(format!("the registry recorded no canary for `{name}`"))
    })?;
    if !deployer.install_canary(tenant, name, route, canary) {
        registry.end_canary(&tenant.id, name)?;
        return Err(Problem::invalid(format!(
            "`{name}`'s active version is not running (see `brink ls`); activate it first"
        )));
    }
    tracing::info!(
        tenant = tenant.id,
        function = name,
        version = record.version,
        weight,
        "canary started"
    );
    deployer.view(&tenant.id, name)
}

/// Makes `name`'s canary its active version, taking every event.
pub(crate) async fn promote(
    deployer: &Deployer,
    tenant: &TenantRecord,
    name: &str,
) -> Result<(FunctionView, String), Problem> {
    let _one = deployer.deploys().lock().await;
    let Some(canary) = deployer.registry().deployment(&tenant.id, name)?.canary else {
        return Err(RegistryError::Canary(format!(
            "`{name}` has no canary to promote: start one with `brink activate {name} <version> --weight <percent>`"
        ))
        .into());
    };
    let record = deployer
        .registry()
        .version(&tenant.id, name, &canary.version)?;
    let route = deployer.load(tenant, &record).await?;
    let view = deployer.go_live(tenant, name, &record.version, route)?;
    deployer.follow_mqtt(&tenant.id, name).await;
    Ok((view, record.version))
}

/// Ends `name`'s canary, if it has one: the active version takes every
/// event again. The caller holds the deploy lock.
pub(crate) fn end(
    deployer: &Deployer,
    tenant: &TenantRecord,
    name: &str,
) -> Result<Option<Canary>, Problem> {
    let Some(canary) = deployer.registry().deployment(&tenant.id, name)?.canary else {
        return Ok(None);
    };
    deployer.registry().end_canary(&tenant.id, name)?;
    deployer
        .node()
        .dispatcher
        .end_canary(&route_name(&tenant.id, name));
    tracing::info!(
        tenant = tenant.id,
        function = name,
        version = canary.version,
        "canary ended"
    );
    Ok(Some(canary))
}

/// Routes every recorded canary again after a restart. One that no longer
/// loads is ended, so its share goes back to the active version rather
/// than failing.
pub(crate) async fn restore(deployer: &Deployer) -> anyhow::Result<()> {
    for (namespace, name, canary) in deployer.registry().canaries()? {
        let restored = async {
            let tenant = deployer.tenants().get(&namespace)?;
            let record = deployer
                .registry()
                .version(&namespace, &name, &canary.version)?;
            let route = deployer.load(&tenant, &record).await?;
            if deployer.install_canary(&tenant, &name, route, canary.clone()) {
                Ok(())
            } else {
                Err(Problem::invalid("its active version is not running"))
            }
        }
        .await;
        if let Err(e) = restored {
            tracing::error!(
                tenant = namespace,
                function = name,
                version = canary.version,
                "canary not restored, ended: {}",
                e.detail
            );
            deployer.registry().end_canary(&namespace, &name)?;
        }
    }
    Ok(())
}
