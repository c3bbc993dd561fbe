//! Deploying to a running node: tenants, the registry, hot activation and
//! rollback, behind bearer tokens. Routes under `/v1` (see [`openapi`]);
//! errors are RFC 9457 problem bodies.
//!
//! A deploy is two calls, as in OCI registries: upload the component
//! (`POST /v1/uploads`, raw bytes, content-addressed), then publish a version
//! of it with its spec and signatures (`POST /v1/functions/{name}/versions`).
//! Publishing checks the tenant's namespace, grants and quotas and the
//! node's signature policy, compiles and links the component, records the
//! version, and (unless told not to) activates it: the dispatcher swaps the
//! new version in atomically, and events already running finish on the old.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use brink_registry::{Registry, RegistryError, TrustPolicy, VersionRecord};
use serde::Serialize;

use super::dispatch::{DEFAULT_CONCURRENCY, Dispatcher, Route, Tenant};
use super::problem::Problem;
use crate::capability::log::LogTap;
use crate::engine::Engine;
use crate::kv::Kv;
pub use crate::manifest::DeploySpec;
use crate::manifest::{LimitsSection, Output, Trigger};
use crate::nn::Models;
use crate::outbox::Outbox;
use crate::plan;
use crate::tenancy::names::{kv_namespace, route_name, tenant_path_prefix};
use crate::tenancy::{TenantRecord, Tenants};

/// A tenant's spec grants what it names in `kv`, `outbox` and `models`,
/// within the tenant's own grants: never a raw grant, nor loading models
/// from bytes.
fn refuse_raw_grants(spec: &DeploySpec) -> Result<(), Problem> {
    if let Some(grant) = spec.grants.iter().next() {
        return Err(Problem::forbidden(format!(
            "grants [{grant:?}]: a tenant's function is granted what it names in kv, outbox and models, within the tenant's own grants"
        )));
    }
    if spec.load_models {
        return Err(Problem::forbidden(
            "load_models: tenants' functions use the node's models by name (models = [...]); loading models from bytes is not offered to tenants",
        ));
    }
    Ok(())
}

/// A deploy spec's body, with the tenant's limits.
fn body_of<'a>(spec: &'a DeploySpec, limits: &'a LimitsSection) -> plan::Body<'a> {
    let mut body = plan::Body::from(spec);
    body.limits = limits;
    body
}

/// `limits` with what is unset filled in: the host's defaults, but never
/// more than the tenant's quota.
fn tenant_limits(
    tenant: &TenantRecord,
    limits: &crate::manifest::LimitsSection,
) -> crate::manifest::LimitsSection {
    let defaults = crate::engine::Limits::default();
    let quota = &tenant.quota;
    let mut limits = limits.clone();
    limits.memory_mb = Some(
        limits
            .memory_mb
            .unwrap_or((defaults.memory_bytes >> 20).min(quota.max_memory_mb)),
    );
    limits.timeout_ms = Some(
        limits
            .timeout_ms
            .unwrap_or((defaults.timeout.as_millis() as u64).min(quota.max_timeout_ms)),
    );
    limits.concurrency = Some(
        limits
            .concurrency
            .unwrap_or(DEFAULT_CONCURRENCY)
            .min(quota.max_concurrency),
    );
    limits
}

/// Refuses limits over the tenant's time and concurrency quotas.
fn check_time_and_concurrency(
    tenant: &TenantRecord,
    limits: &crate::manifest::LimitsSection,
) -> Result<(), Problem> {
    let (id, quota) = (&tenant.id, &tenant.quota);
    if let Some(n) = limits.concurrency
        && n > quota.max_concurrency
    {
        return Err(Problem::forbidden(format!(
            "limits.concurrency {n} is over tenant `{id}`'s quota of {} invocations at once",
            quota.max_concurrency
        )));
    }
    if let Some(ms) = limits.timeout_ms
        && ms > quota.max_timeout_ms
    {
        return Err(Problem::forbidden(format!(
            "limits.timeout_ms {ms} is over tenant `{id}`'s quota of {} ms per invocation",
            quota.max_timeout_ms
        )));
    }
    Ok(())
}

/// What a deploy needs from the node.
#[derive(Debug, Clone)]
pub struct DeployContext {
    pub engine: Engine,
    pub dispatcher: Dispatcher,
    pub kv: Option<Kv>,
    pub outbox: Option<Outbox>,
    pub models: Option<Models>,
    /// The MQTT subscriber, when tenants may use MQTT (`[registry] mqtt`).
    pub mqtt: Option<super::mqtt::Subscriptions>,
    pub policy: TrustPolicy,
    /// The OCI registries tenants may deploy from (`[registry.oci]`).
    pub pulls: Option<crate::oci::Puller>,
    /// Turns true when the node stops; live log tails end then, so they do
    /// not hold the admin listener open.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// The node's deployments.
#[derive(Debug, Clone)]
pub struct Deployer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    tenants: Tenants,
    node: DeployContext,
    /// The dispatcher's handle of each tenant (its rate limit), made once.
    handles: Mutex<BTreeMap<String, Arc<Tenant>>>,
    /// One deploy at a time, so two activations never interleave.
    deploys: tokio::sync::Mutex<()>,
    /// Each deployed function's log, by route name; kept across versions.
    logs: Mutex<BTreeMap<String, LogTap>>,
    /// Active versions that could not be restored at start, by route name,
    /// with the reason: `brink ls` shows them until one is activated.
    not_loaded: Mutex<BTreeMap<String, String>>,
}

/// A function as the API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct FunctionView {
    name: String,
    active: Option<String>,
    /// Earlier active versions; `rollback` returns to the last.
    previous: Vec<String>,
    versions: Vec<VersionView>,
    /// Why the active version is not running (it could not be restored).
    #[serde(skip_serializing_if = "Option::is_none")]
    not_loaded: Option<String>,
    /// A version taking a share of the events beside the active one.
    #[serde(skip_serializing_if = "Option::is_none")]
    canary: Option<brink_registry::Canary>,
}

#[derive(Debug, Serialize)]
pub(crate) struct VersionView {
    version: String,
    digest: String,
    size: u64,
    created_unix_ms: u64,
    signed_by: Vec<String>,
    annotations: BTreeMap<String, String>,
    spec: serde_json::Value,
    /// Invocations of this version since the node started, and how many failed.
    invocations: u64,
    errors: u64,
}

impl From<VersionRecord> for VersionView {
    fn from(v: VersionRecord) -> Self {
        Self {
            version: v.version,
            digest: v.digest,
            size: v.size,
            created_unix_ms: v.created_unix_ms,
            signed_by: v.signatures.into_iter().map(|s| s.key).collect(),
            annotations: v.annotations,
            spec: v.spec,
            invocations: 0,
            errors: 0,
        }
    }
}

impl Deployer {
    /// Deletes tenant `id`: its tokens first (so it cannot deploy while it
    /// goes), then its functions, its key-value buckets and its outbox
    /// quota. Answers the functions and buckets removed.
    pub(crate) async fn delete_tenant(
        &self,
        id: &str,
    ) -> Result<(Vec<String>, Vec<String>), Problem> {
        let _one = self.deploys().lock().await;
        self.tenants().delete(id)?;
        let mut functions = Vec::new();
        for name in self.registry().names(id)? {
            self.remove(id, &name)?;
            functions.push(name);
        }
        if let Some(name) = functions.first() {
            self.follow_mqtt(id, name).await;
        }
        let buckets = match &self.node().kv {
            Some(kv) => crate::capability::keyvalue::forget(kv, id)?,
            None => Vec::new(),
        };
        if let Some(outbox) = &self.node().outbox {
            crate::capability::outbox::forget(outbox, id);
        }
        self.inner
            .handles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        tracing::info!(tenant = id, ?functions, ?buckets, "tenant deleted");
        Ok((functions, buckets))
    }

    /// The registry of deployed components and versions.
    pub(crate) fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The node's tenants.
    pub(crate) fn tenants(&self) -> &Tenants {
        &self.inner.tenants
    }

    /// What deploys use of the node.
    pub(crate) fn node(&self) -> &DeployContext {
        &self.inner.node
    }

    /// Held while a deploy changes what runs, so two never interleave.
    pub(crate) fn deploys(&self) -> &tokio::sync::Mutex<()> {
        &self.inner.deploys
    }

    /// Opens the registry in `dir` and the tenants on `tenants`, and runs
    /// every active deployment again (a node restart loses none).
    pub async fn open(
        dir: &std::path::Path,
        tenants: Tenants,
        node: DeployContext,
    ) -> anyhow::Result<Self> {
        let dir = dir.to_owned();
        let registry = tokio::task::spawn_blocking(move || Registry::open(&dir)).await??;
        let deployer = Self {
            inner: Arc::new(Inner {
                registry,
                tenants,
                node,
                handles: Mutex::new(BTreeMap::new()),
                deploys: tokio::sync::Mutex::new(()),
                logs: Mutex::new(BTreeMap::new()),
                not_loaded: Mutex::new(BTreeMap::new()),
            }),
        };
        deployer.restore().await?;
        Ok(deployer)
    }

    async fn restore(&self) -> anyhow::Result<()> {
        for tenant in self.inner.tenants.list()? {
            if let Err(e) = self.apply_quotas(&tenant) {
                tracing::error!(tenant = tenant.id, "quotas not applied: {}", e.detail);
            }
        }
        self.restore_active().await?;
        super::canary::restore(self).await
    }

    async fn restore_active(&self) -> anyhow::Result<()> {
        for record in self.inner.registry.active()? {
            let tenant = match self.inner.tenants.get(&record.namespace) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(function = record.name, "not restored: {e}");
                    continue;
                }
            };
            // A version that no longer loads (an engine upgrade, a revoked
            // grant) must not keep the node from serving the others.
            match self.load(&tenant, &record).await {
                Ok(route) => self.install(&tenant, &record.name, route),
                Err(e) => {
                    tracing::error!(
                        tenant = tenant.id,
                        function = record.name,
                        version = record.version,
                        "deployed function not restored: {}",
                        e.detail
                    );
                    self.inner
                        .not_loaded
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(
                            route_name(&tenant.id, &record.name),
                            format!("version {} not loaded: {}", record.version, e.detail),
                        );
                }
            }
        }
        Ok(())
    }

    fn handle(&self, tenant: &TenantRecord) -> Arc<Tenant> {
        let mut handles = self
            .inner
            .handles
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = handles.get(&tenant.id).filter(|h| {
            h.max_invocations_per_s == tenant.quota.max_invocations_per_s
                && h.max_concurrency == tenant.quota.max_concurrency
                && h.topics == tenant.grants.topic_prefixes(&tenant.id)
        });
        match current {
            Some(h) => h.clone(),
            None => {
                let mut h = Tenant::new(tenant.id.clone(), tenant.quota.max_invocations_per_s)
                    .with_concurrency(tenant.quota.max_concurrency);
                h.topics = tenant.grants.topic_prefixes(&tenant.id);
                let h = Arc::new(h);
                handles.insert(tenant.id.clone(), h.clone());
                h
            }
        }
    }

    /// Holds the tenant's key-value namespace and its outbox bytes to its quotas.
    pub(crate) fn apply_quotas(&self, tenant: &TenantRecord) -> Result<(), Problem> {
        if let Some(outbox) = &self.inner.node.outbox {
            outbox.set_owner_quota(
                &tenant.id,
                Some(tenant.quota.max_outbox_mb.saturating_mul(1 << 20)),
            );
        }
        if let Some(kv) = &self.inner.node.kv {
            let namespace = kv_namespace(&tenant.id);
            kv.set_namespace_quota(
                &namespace,
                Some(tenant.quota.max_kv_mb.saturating_mul(1 << 20)),
            )?;
            kv.set_namespace_bucket_quota(&namespace, Some(u64::from(tenant.quota.max_buckets)))?;
        }
        Ok(())
    }

    /// The log of the function routed as `key`.
    pub(crate) fn tap(&self, key: &str) -> LogTap {
        self.inner
            .logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.to_owned())
            .or_default()
            .clone()
    }

    pub(crate) fn install(&self, tenant: &TenantRecord, name: &str, route: Route) {
        let key = route_name(&tenant.id, name);
        self.inner
            .not_loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
        self.inner
            .node
            .dispatcher
            .install(&key, route, Some(self.handle(tenant)));
    }

    /// Routes `canary`'s share of `name`'s events to `route`; false when
    /// `name` does not run (its active version was not restored).
    pub(crate) fn install_canary(
        &self,
        tenant: &TenantRecord,
        name: &str,
        route: Route,
        canary: brink_registry::Canary,
    ) -> bool {
        self.inner.node.dispatcher.install_canary(
            &route_name(&tenant.id, name),
            route,
            Some(self.handle(tenant)),
            canary,
        )
    }

    /// Checks `spec` against the tenant's namespace and grants.
    fn check_spec(&self, tenant: &TenantRecord, spec: &DeploySpec) -> Result<(), Problem> {
        let id = &tenant.id;
        refuse_raw_grants(spec)?;
        let prefix = tenant_path_prefix(id);
        for trigger in &spec.triggers {
            match trigger {
                Trigger::Http(path) if !path.starts_with(&prefix) => {
                    return Err(Problem::forbidden(format!(
                        "http trigger {path:?} is outside tenant `{id}`'s namespace: a tenant's paths start with {prefix:?} (events arrive at POST /events{prefix}...)"
                    )));
                }
                Trigger::Mqtt(filter) => {
                    crate::manifest::check_topic_filter(filter)
                        .map_err(|e| Problem::invalid(format!("mqtt trigger {filter:?} {e}")))?;
                    self.check_topic(tenant, "mqtt trigger", filter)?;
                }
                _ => {}
            }
        }
        for output in &spec.outputs {
            match output {
                Output::Function(next) => {
                    brink_registry::check_name(next).map_err(Problem::invalid)?;
                }
                Output::Mqtt(topic) => {
                    crate::manifest::check_template(topic)
                        .map_err(|e| Problem::invalid(format!("mqtt output {topic:?} {e}")))?;
                    self.check_topic(tenant, "mqtt output", topic)?;
                }
                Output::Webhook(url) if !tenant.grants.webhooks => {
                    return Err(Problem::forbidden(format!(
                        "webhook output {url:?}: tenant `{id}` is not granted webhooks; an operator grants them"
                    )));
                }
                Output::Uplink(uplink) if !tenant.grants.uplinks.contains(uplink) => {
                    return Err(Problem::forbidden(format!(
                        "uplink output `{uplink}`: tenant `{id}` is not granted this uplink"
                    )));
                }
                _ => {}
            }
        }
        for uplink in &spec.outbox {
            if !tenant.grants.uplinks.contains(uplink) {
                return Err(Problem::forbidden(format!(
                    "outbox `{uplink}`: tenant `{id}` is not granted this uplink"
                )));
            }
        }
        for model in &spec.models {
            if !tenant.grants.models.contains(model) {
                return Err(Problem::forbidden(format!(
                    "model `{model}`: tenant `{id}` is not granted this model"
                )));
            }
        }
        for bucket in &spec.kv {
            if !crate::kv::valid_bucket_name(bucket) {
                return Err(Problem::invalid(format!(
                    "kv bucket {bucket:?} {}",
                    crate::manifest::NAME_RULE
                )));
            }
        }
        if let Some(mb) = spec.limits.memory_mb
            && mb > tenant.quota.max_memory_mb
        {
            return Err(Problem::forbidden(format!(
                "limits.memory_mb {mb} is over tenant `{id}`'s quota of {} MiB per instance",
                tenant.quota.max_memory_mb
            )));
        }
        check_time_and_concurrency(tenant, &spec.limits)
    }

    /// Refuses an MQTT filter or topic outside the tenant's topics, or any
    /// when the node takes no MQTT for tenants.
    fn check_topic(&self, tenant: &TenantRecord, what: &str, topic: &str) -> Result<(), Problem> {
        let id = &tenant.id;
        let prefixes = tenant.grants.topic_prefixes(id);
        if !prefixes.iter().any(|p| topic.starts_with(p.as_str())) {
            return Err(Problem::forbidden(format!(
                "{what} {topic:?} is outside tenant `{id}`'s topics: they start with {}",
                prefixes
                    .iter()
                    .map(|p| format!("{p:?}"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            )));
        }
        if self.inner.node.mqtt.is_none() {
            return Err(Problem::invalid(format!(
                "{what} {topic:?}: this node takes no MQTT for tenants' functions (the operator enables it with `mqtt = true` under [registry])"
            )));
        }
        Ok(())
    }

    /// Removes every version of `tenant`'s `name` and stops routing to it;
    /// the caller holds the deploy lock.
    pub(crate) fn remove(&self, tenant: &str, name: &str) -> Result<(), Problem> {
        self.inner.registry.remove(tenant, name)?;
        let key = route_name(tenant, name);
        self.inner.node.dispatcher.uninstall(&key);
        // Followers' feeds close once the last running event of it is done.
        self.inner
            .logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
        Ok(())
    }

    /// Makes the node's MQTT subscriptions follow the functions now routed.
    /// The function is live either way; a subscription the broker refuses
    /// is told in the function's log, and tried again at the next deploy or
    /// reconnect.
    pub(crate) async fn follow_mqtt(&self, tenant: &str, name: &str) {
        let Some(mqtt) = &self.inner.node.mqtt else {
            return;
        };
        if let Err(e) = mqtt.sync().await {
            let key = route_name(tenant, name);
            tracing::warn!(tenant, function = name, "MQTT subscriptions: {e:#}");
            self.tap(&key)
                .record("warn", "host", "", &format!("MQTT subscriptions: {e:#}"));
        }
    }

    /// Compiles and links `record` for `tenant`: the route to install.
    pub(crate) async fn load(
        &self,
        tenant: &TenantRecord,
        record: &VersionRecord,
    ) -> Result<Route, Problem> {
        self.check_trust(record)?;
        let spec: DeploySpec = serde_json::from_value(record.spec.clone())
            .map_err(|e| Problem::invalid(format!("spec: {e}")))?;
        self.check_spec(tenant, &spec)?;
        let node = &self.inner.node;
        let key = route_name(&tenant.id, &record.name);
        let limits = tenant_limits(tenant, &spec.limits);
        let scope = plan::Scope {
            kv: node.kv.clone().map(|kv| (kv, kv_namespace(&tenant.id))),
            outbox: node.outbox.clone(),
            owner: Some(Arc::from(tenant.id.as_str())),
            models: node.models.clone(),
            meter: Some(node.dispatcher.metrics().inference_meter(&tenant.id)),
        };
        let mut function_spec = plan::spec(&key, body_of(&spec, &limits), &scope)
            .map_err(|e| Problem::invalid(e.to_string()))?;
        function_spec.logs = Some(self.tap(&key));
        let registry_bytes = {
            let digest = record.digest.clone();
            let deployer = self.clone();
            tokio::task::spawn_blocking(move || deployer.inner.registry.blob(&digest))
                .await
                .map_err(Problem::internal)??
        };
        let engine = node.engine.clone();
        let what = format!("{}@{}", record.name, record.version);
        let function =
            tokio::task::spawn_blocking(move || engine.load(function_spec, &registry_bytes, &what))
                .await
                .map_err(Problem::internal)?
                .map_err(|e| Problem::invalid(format!("{e:#}")))?;
        let outputs = spec
            .outputs
            .into_iter()
            .map(|o| match o {
                Output::Function(next) => Output::Function(route_name(&tenant.id, &next)),
                other => other,
            })
            .collect();
        Ok(Route {
            function,
            triggers: spec.triggers,
            outputs,
            concurrency: spec
                .limits
                .concurrency
                .unwrap_or(DEFAULT_CONCURRENCY)
                .min(tenant.quota.max_concurrency),
            version: Some(record.version.clone()),
        })
    }

    /// Checked at every load (publish, activate, rollback, restore): a key
    /// the operator stopped trusting no longer runs what it signed.
    fn check_trust(&self, record: &VersionRecord) -> Result<(), Problem> {
        self.inner
            .node
            .policy
            .check(
                &record.digest,
                &record.name,
                &record.version,
                &record.signatures,
            )
            .map_err(|e| {
                Problem::forbidden(format!(
                    "version {} of `{}` does not satisfy this node's signature policy: {e}",
                    record.version, record.name
                ))
            })
    }

    pub(crate) fn view(&self, tenant: &str, name: &str) -> Result<FunctionView, Problem> {
        let deployment = self.inner.registry.deployment(tenant, name)?;
        let versions = self.inner.registry.versions(tenant, name)?;
        if versions.is_empty() && deployment.active.is_none() {
            return Err(RegistryError::NoFunction(name.to_owned()).into());
        }
        let key = route_name(tenant, name);
        let metrics = self.inner.node.dispatcher.metrics();
        let versions = versions
            .into_iter()
            .map(|record| {
                let (invocations, errors) = metrics.version_usage(&key, &record.version);
                VersionView {
                    invocations,
                    errors,
                    ..VersionView::from(record)
                }
            })
            .collect();
        Ok(FunctionView {
            name: name.to_owned(),
            active: deployment.active,
            previous: deployment.previous,
            canary: deployment.canary,
            versions,
            not_loaded: self
                .inner
                .not_loaded
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&key)
                .cloned(),
        })
    }

    /// Records `version` of `name` as active and routes its events to
    /// `route` (loaded from it); the caller holds the deploy lock.
    pub(crate) fn go_live(
        &self,
        tenant: &TenantRecord,
        name: &str,
        version: &str,
        route: Route,
    ) -> Result<FunctionView, Problem> {
        self.inner.registry.activate(&tenant.id, name, version)?;
        self.install(tenant, name, route);
        tracing::info!(tenant = tenant.id, function = name, version, "activated");
        self.view(&tenant.id, name)
    }

    /// Refuses to activate `name` when it is not active yet and the tenant
    /// is at its quota of active functions.
    pub(crate) fn check_function_quota(
        &self,
        tenant: &TenantRecord,
        name: &str,
    ) -> Result<(), Problem> {
        if self
            .inner
            .registry
            .deployment(&tenant.id, name)?
            .active
            .is_some()
        {
            return Ok(());
        }
        let active = self.active_count(&tenant.id)?;
        if active >= tenant.quota.max_functions as usize {
            return Err(Problem::forbidden(format!(
                "tenant `{}` has {active} active functions, its quota of {}: remove one first",
                tenant.id, tenant.quota.max_functions
            )));
        }
        Ok(())
    }

    pub(crate) fn active_count(&self, tenant: &str) -> Result<usize, Problem> {
        let mut n = 0;
        for name in self.inner.registry.names(tenant)? {
            if self
                .inner
                .registry
                .deployment(tenant, &name)?
                .active
                .is_some()
            {
                n += 1;
            }
        }
        Ok(n)
    }
}
