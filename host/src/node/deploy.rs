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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use brink_registry::{NewVersion, Registry, RegistryError, Signature, TrustPolicy, VersionRecord};
use serde::{Deserialize, Serialize};

use super::auth::{self, Auth, Principal, operator, principal};
use super::dispatch::{DEFAULT_CONCURRENCY, Dispatcher, Route, Tenant, tenant_path_prefix};
use super::http::{Problem, body_problem, dispatch_problem, invoke_function};
use crate::capability::log::{LogRecord, LogTap};
use crate::engine::{Engine, check_header};
use crate::kv::Kv;
use crate::manifest::{LimitsSection, Output, Trigger};
use crate::nn::Models;
use crate::outbox::Outbox;
use crate::plan;
use crate::tenancy::{Quota, TenantGrants, TenantRecord, Tenants};

/// How a deployed function runs: what `[function.<name>]` says for the
/// manifest's own functions, as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeploySpec {
    /// `[{"http": "/t/<tenant>/readings"}, {"event_type": "com.example.*"}]`
    pub triggers: Vec<Trigger>,
    /// `[{"function": "alert"}, {"uplink": "cloud"}, {"mqtt": "t/<tenant>/alerts"}]`
    pub outputs: Vec<Output>,
    pub config: BTreeMap<String, String>,
    /// Key-value buckets, in the tenant's own namespace.
    pub kv: BTreeSet<String>,
    /// Uplinks the operator granted the tenant.
    pub outbox: BTreeSet<String>,
    /// Models the operator granted the tenant.
    pub models: BTreeSet<String>,
    pub limits: LimitsSection,
    pub instance_reuse: Option<u32>,
}

impl DeploySpec {
    /// What the spec asks for, with `limits` in place of its own.
    fn body<'a>(&'a self, limits: &'a LimitsSection) -> plan::Body<'a> {
        static NO_GRANTS: BTreeSet<String> = BTreeSet::new();
        plan::Body {
            config: &self.config,
            limits,
            instance_reuse: self.instance_reuse,
            grants: &NO_GRANTS,
            kv: &self.kv,
            outbox: &self.outbox,
            models: &self.models,
            load_models: false,
        }
    }
}

/// What a tenant's key-value namespace starts with (`:` appears in no app name).
pub const TENANT_NAMESPACE: &str = "tenant:";

/// The namespace of a tenant's key-value buckets.
pub fn kv_namespace(tenant: &str) -> String {
    format!("{TENANT_NAMESPACE}{tenant}")
}

/// The dispatcher's name for a tenant's function.
fn route_name(tenant: &str, name: &str) -> String {
    format!("{tenant}/{name}")
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
    pub auth: Auth,
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

impl From<RegistryError> for Problem {
    fn from(e: RegistryError) -> Self {
        let (status, title) = match &e {
            RegistryError::NoFunction(_) | RegistryError::NoVersion { .. } => {
                (StatusCode::NOT_FOUND, "Not found")
            }
            RegistryError::Conflict { .. } | RegistryError::VersionActive { .. } => {
                (StatusCode::CONFLICT, "Conflict")
            }
            RegistryError::NothingToRollBackTo { .. } => {
                (StatusCode::CONFLICT, "Nothing to roll back to")
            }
            RegistryError::InvalidName(_)
            | RegistryError::InvalidVersion(..)
            | RegistryError::InvalidRequirement(..)
            | RegistryError::InvalidDigest(_)
            | RegistryError::BlobMissing(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "Invalid request")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "Registry failed"),
        };
        Self::new(status, title, e)
    }
}

type Answer = Result<Response, Problem>;

fn json(status: StatusCode, value: &impl Serialize) -> Answer {
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

/// A function as the API shows it.
#[derive(Debug, Serialize)]
struct FunctionView {
    name: String,
    active: Option<String>,
    /// Earlier active versions; `rollback` returns to the last.
    previous: Vec<String>,
    versions: Vec<VersionView>,
    /// Why the active version is not running (it could not be restored).
    #[serde(skip_serializing_if = "Option::is_none")]
    not_loaded: Option<String>,
}

#[derive(Debug, Serialize)]
struct VersionView {
    version: String,
    digest: String,
    size: u64,
    created_unix_ms: u64,
    signed_by: Vec<String>,
    annotations: BTreeMap<String, String>,
    spec: serde_json::Value,
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
        }
    }
}

impl Deployer {
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
    fn apply_quotas(&self, tenant: &TenantRecord) -> Result<(), Problem> {
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
    fn tap(&self, key: &str) -> LogTap {
        self.inner
            .logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.to_owned())
            .or_default()
            .clone()
    }

    fn install(&self, tenant: &TenantRecord, name: &str, route: Route) {
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

    /// Checks `spec` against the tenant's namespace and grants.
    fn check_spec(&self, tenant: &TenantRecord, spec: &DeploySpec) -> Result<(), Problem> {
        let id = &tenant.id;
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
                    "kv bucket {bucket:?} must be 1 to 64 characters: a-z, 0-9, '-', '_' or '.'"
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
    fn remove(&self, tenant: &str, name: &str) -> Result<(), Problem> {
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
    async fn follow_mqtt(&self, tenant: &str, name: &str) {
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
    async fn load(&self, tenant: &TenantRecord, record: &VersionRecord) -> Result<Route, Problem> {
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
        let mut function_spec = plan::spec(&key, spec.body(&limits), &scope)
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

    fn view(&self, tenant: &str, name: &str) -> Result<FunctionView, Problem> {
        let deployment = self.inner.registry.deployment(tenant, name)?;
        let versions = self.inner.registry.versions(tenant, name)?;
        if versions.is_empty() && deployment.active.is_none() {
            return Err(RegistryError::NoFunction(name.to_owned()).into());
        }
        Ok(FunctionView {
            name: name.to_owned(),
            active: deployment.active,
            previous: deployment.previous,
            versions: versions.into_iter().map(VersionView::from).collect(),
            not_loaded: self
                .inner
                .not_loaded
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&route_name(tenant, name))
                .cloned(),
        })
    }

    /// Records `version` of `name` as active and routes its events to
    /// `route` (loaded from it); the caller holds the deploy lock.
    fn go_live(
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
    fn check_function_quota(&self, tenant: &TenantRecord, name: &str) -> Result<(), Problem> {
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

    fn active_count(&self, tenant: &str) -> Result<usize, Problem> {
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

/// The `/v1` deploy, tenant and usage routes.
pub fn router(deployer: Deployer, max_component_bytes: usize) -> Router {
    let tenant_routes = Router::new()
        .route(
            "/v1/uploads",
            post(upload).layer(DefaultBodyLimit::max(max_component_bytes)),
        )
        .route("/v1/functions", get(list_functions))
        .route(
            "/v1/functions/{name}",
            get(get_function).delete(remove_function),
        )
        .route("/v1/functions/{name}/versions", post(publish))
        .route("/v1/functions/{name}/activate", post(activate))
        .route("/v1/functions/{name}/rollback", post(rollback))
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
        .layer(middleware::from_fn_with_state(
            deployer.inner.node.auth.clone(),
            auth::middleware,
        ));
    Router::new()
        .route("/v1/openapi.json", get(openapi_document))
        .merge(tenant_routes)
        .with_state(deployer)
}

/// The calling tenant; the operator manages tenants, not their functions.
fn tenant_of(
    deployer: &Deployer,
    extensions: &axum::http::Extensions,
) -> Result<TenantRecord, Problem> {
    match principal(extensions)? {
        Principal::Tenant(id) => Ok(deployer.inner.tenants.get(&id)?),
        Principal::Operator => Err(Problem::forbidden(
            "functions belong to tenants: call with a tenant's token (`brink tenant create` makes one)",
        )),
    }
}

async fn upload(
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
    let inner = deployer.clone();
    let digest = tokio::task::spawn_blocking(move || inner.inner.registry.put_blob(&body))
        .await
        .map_err(Problem::internal)??;
    deployer.inner.tenants.record_upload(&tenant.id, &digest)?;
    json(
        StatusCode::CREATED,
        &serde_json::json!({ "digest": digest, "size": size }),
    )
}

/// `POST /v1/functions/{name}/versions`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
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

fn json_body<T: serde::de::DeserializeOwned>(
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

async fn publish(
    State(deployer): State<Deployer>,
    Path(name): Path<String>,
    extensions: axum::http::Extensions,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let tenant = tenant_of(&deployer, &extensions)?;
    let request: PublishRequest = json_body(&body)?;
    brink_registry::check_name(&name)?;
    let version = brink_registry::parse_version(&request.version)?.to_string();
    let owned = deployer
        .inner
        .tenants
        .uploaded(&tenant.id, &request.digest)?
        || deployer
            .inner
            .registry
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
        .inner
        .node
        .policy
        .check(&request.digest, &name, &version, &request.signatures)
        .map_err(Problem::forbidden)?;
    let activate = request.activate.unwrap_or(true);
    let _one = deployer.inner.deploys.lock().await;
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
    deployer.inner.registry.publish(NewVersion {
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
    json(StatusCode::CREATED, &view)
}

async fn list_functions(
    State(deployer): State<Deployer>,
    extensions: axum::http::Extensions,
) -> Answer {
    let tenant = tenant_of(&deployer, &extensions)?;
    let views = deployer
        .inner
        .registry
        .names(&tenant.id)?
        .iter()
        .map(|name| deployer.view(&tenant.id, name))
        .collect::<Result<Vec<_>, _>>()?;
    json(StatusCode::OK, &serde_json::json!({ "functions": views }))
}

async fn get_function(
    State(deployer): State<Deployer>,
    Path(name): Path<String>,
    extensions: axum::http::Extensions,
) -> Answer {
    let tenant = tenant_of(&deployer, &extensions)?;
    json(StatusCode::OK, &deployer.view(&tenant.id, &name)?)
}

async fn remove_function(
    State(deployer): State<Deployer>,
    Path(name): Path<String>,
    extensions: axum::http::Extensions,
) -> Answer {
    let tenant = tenant_of(&deployer, &extensions)?;
    let _one = deployer.inner.deploys.lock().await;
    deployer.remove(&tenant.id, &name)?;
    deployer.follow_mqtt(&tenant.id, &name).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivateRequest {
    /// `1.2.3`, `^1.2` or `latest`.
    version: String,
}

async fn activate(
    State(deployer): State<Deployer>,
    Path(name): Path<String>,
    extensions: axum::http::Extensions,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let tenant = tenant_of(&deployer, &extensions)?;
    let request: ActivateRequest = json_body(&body)?;
    let _one = deployer.inner.deploys.lock().await;
    deployer.check_function_quota(&tenant, &name)?;
    let record = deployer
        .inner
        .registry
        .resolve(&tenant.id, &name, &request.version)?;
    let route = deployer.load(&tenant, &record).await?;
    let view = deployer.go_live(&tenant, &name, &record.version, route)?;
    deployer.follow_mqtt(&tenant.id, &name).await;
    json(StatusCode::OK, &view)
}

async fn rollback(
    State(deployer): State<Deployer>,
    Path(name): Path<String>,
    extensions: axum::http::Extensions,
) -> Answer {
    let tenant = tenant_of(&deployer, &extensions)?;
    let _one = deployer.inner.deploys.lock().await;
    deployer.view(&tenant.id, &name)?;
    let deployment = deployer.inner.registry.deployment(&tenant.id, &name)?;
    let Some(back) = deployment.previous.last() else {
        return Err(RegistryError::NothingToRollBackTo { name }.into());
    };
    let record = deployer.inner.registry.version(&tenant.id, &name, back)?;
    let route = deployer.load(&tenant, &record).await?;
    deployer.inner.registry.rollback(&tenant.id, &name)?;
    deployer.install(&tenant, &name, route);
    deployer.follow_mqtt(&tenant.id, &name).await;
    tracing::info!(
        tenant = tenant.id,
        function = name,
        version = record.version,
        "rolled back"
    );
    json(StatusCode::OK, &deployer.view(&tenant.id, &name)?)
}

async fn invoke(
    State(deployer): State<Deployer>,
    Path(name): Path<String>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let tenant = tenant_of(&deployer, &extensions)?;
    let key = route_name(&tenant.id, &name);
    if deployer.inner.node.dispatcher.digest_of(&key).is_none() {
        return Ok(dispatch_problem(
            &super::dispatch::DispatchError::UnknownFunction(name),
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
    Ok(invoke_function(&deployer.inner.node.dispatcher, &key, &headers, body).await)
}

/// `GET /v1/functions/{name}/logs`: the recent records as JSON; with
/// `?follow=true` (or `Accept: text/event-stream`) a server-sent event
/// stream of them and then of every new one, resumable with `Last-Event-ID`.
async fn logs(
    State(deployer): State<Deployer>,
    Path(name): Path<String>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Answer {
    use futures_util::StreamExt;
    use tokio::sync::broadcast::error::RecvError;

    let tenant = tenant_of(&deployer, &extensions)?;
    deployer.view(&tenant.id, &name)?;
    let tap = deployer.tap(&route_name(&tenant.id, &name));
    let follow = match super::admin::query_param(query.as_deref(), "follow").as_deref() {
        Some("true" | "1" | "") => true,
        Some("false" | "0") | None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream")),
        Some(other) => {
            return Err(Problem::invalid(format!(
                "follow={other:?}: expected true or false"
            )));
        }
    };
    if !follow {
        return json(
            StatusCode::OK,
            &serde_json::json!({ "records": tap.recent() }),
        );
    }
    let after: u64 = match headers.get("last-event-id") {
        None => 0,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| Problem::invalid("Last-Event-ID must be a record's seq"))?,
    };
    let (history, feed) = tap.follow();
    let event = |record: &LogRecord| {
        Ok::<_, std::convert::Infallible>(
            Event::default()
                .id(record.seq.to_string())
                .event("log")
                .data(serde_json::to_string(record).unwrap_or_default()),
        )
    };
    let backlog: Vec<_> = history
        .iter()
        .filter(|r| r.seq > after)
        .map(event)
        .collect();
    let live = futures_util::stream::unfold(feed, move |mut feed| async move {
        loop {
            match feed.recv().await {
                Ok(record) if record.seq <= after => continue,
                Ok(record) => return Some((event(&record), feed)),
                Err(RecvError::Lagged(missed)) => {
                    let note = Event::default()
                        .event("lagged")
                        .data(serde_json::json!({ "missed": missed }).to_string());
                    return Some((Ok(note), feed));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    let mut stop = deployer.inner.node.shutdown.clone();
    let stream = futures_util::stream::iter(backlog)
        .chain(live)
        .take_until(async move {
            let _ = stop.wait_for(|stop| *stop).await;
        });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn usage(State(deployer): State<Deployer>, extensions: axum::http::Extensions) -> Answer {
    let metrics = deployer.inner.node.dispatcher.metrics();
    let ids = match principal(&extensions)? {
        Principal::Tenant(id) => vec![id],
        Principal::Operator => deployer
            .inner
            .tenants
            .list()?
            .into_iter()
            .map(|t| t.id)
            .collect(),
    };
    let mut usage = Vec::new();
    for id in ids {
        let u = metrics.usage(&id);
        let kv_bytes = match &deployer.inner.node.kv {
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
                .inner
                .node
                .outbox
                .as_ref()
                .map_or(0, |o| o.owner_usage(&id).bytes),
        }));
    }
    json(StatusCode::OK, &serde_json::json!({ "usage": usage }))
}

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

async fn create_tenant(
    State(deployer): State<Deployer>,
    extensions: axum::http::Extensions,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    operator(&extensions, "manage tenants")?;
    let request: CreateTenant = json_body(&body)?;
    let (tenant, token) =
        deployer
            .inner
            .tenants
            .create(&request.id, request.quota, request.grants)?;
    deployer.apply_quotas(&tenant)?;
    json(
        StatusCode::CREATED,
        &serde_json::json!({ "tenant": tenant_json(&tenant), "token": token }),
    )
}

async fn list_tenants(
    State(deployer): State<Deployer>,
    extensions: axum::http::Extensions,
) -> Answer {
    operator(&extensions, "manage tenants")?;
    let tenants: Vec<_> = deployer
        .inner
        .tenants
        .list()?
        .iter()
        .map(tenant_json)
        .collect();
    json(StatusCode::OK, &serde_json::json!({ "tenants": tenants }))
}

async fn get_tenant(
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
    json(
        StatusCode::OK,
        &tenant_json(&deployer.inner.tenants.get(&id)?),
    )
}

/// `PATCH /v1/tenants/{id}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateTenant {
    quota: Option<Quota>,
    grants: Option<TenantGrants>,
}

async fn update_tenant(
    State(deployer): State<Deployer>,
    Path(id): Path<String>,
    extensions: axum::http::Extensions,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    operator(&extensions, "manage tenants")?;
    let request: UpdateTenant = json_body(&body)?;
    let tenant = deployer
        .inner
        .tenants
        .update(&id, request.quota, request.grants)?;
    deployer.apply_quotas(&tenant)?;
    json(StatusCode::OK, &tenant_json(&tenant))
}

/// `DELETE /v1/tenants/{id}`: the tenant, its tokens, its functions (every
/// version) and its key-value buckets. Events its functions already queued
/// in the outbox are still delivered: they were accepted.
async fn delete_tenant(
    State(deployer): State<Deployer>,
    Path(id): Path<String>,
    extensions: axum::http::Extensions,
) -> Answer {
    operator(&extensions, "manage tenants")?;
    let _one = deployer.inner.deploys.lock().await;
    // Its tokens stop working first, so it cannot deploy while it goes.
    deployer.inner.tenants.delete(&id)?;
    let mut functions = Vec::new();
    for name in deployer.inner.registry.names(&id)? {
        deployer.remove(&id, &name)?;
        functions.push(name);
    }
    if let Some(name) = functions.first() {
        deployer.follow_mqtt(&id, name).await;
    }
    let buckets = match &deployer.inner.node.kv {
        Some(kv) => kv.drop_namespace(&kv_namespace(&id))?,
        None => Vec::new(),
    };
    if let Some(outbox) = &deployer.inner.node.outbox {
        outbox.set_owner_quota(&id, None);
    }
    deployer
        .inner
        .handles
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&id);
    tracing::info!(tenant = id, ?functions, ?buckets, "tenant deleted");
    json(
        StatusCode::OK,
        &serde_json::json!({ "tenant": id, "functions": functions, "kv_buckets": buckets }),
    )
}

async fn issue_token(
    State(deployer): State<Deployer>,
    Path(id): Path<String>,
    extensions: axum::http::Extensions,
) -> Answer {
    operator(&extensions, "manage tenants")?;
    let token = deployer.inner.tenants.issue_token(&id)?;
    json(
        StatusCode::CREATED,
        &serde_json::json!({ "tenant": id, "token": token }),
    )
}

async fn revoke_token(
    State(deployer): State<Deployer>,
    Path((id, token)): Path<(String, String)>,
    extensions: axum::http::Extensions,
) -> Answer {
    operator(&extensions, "manage tenants")?;
    deployer.inner.tenants.revoke_token(&id, &token)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn gc(State(deployer): State<Deployer>, extensions: axum::http::Extensions) -> Answer {
    operator(&extensions, "collect the registry's garbage")?;
    let inner = deployer.clone();
    let report = tokio::task::spawn_blocking(move || inner.inner.registry.gc())
        .await
        .map_err(Problem::internal)??;
    json(StatusCode::OK, &report)
}

async fn openapi_document() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi().to_string(),
    )
        .into_response()
}

/// The admin API's OpenAPI 3.1 document: every route the admin listener serves.
pub fn openapi() -> serde_json::Value {
    let problem = serde_json::json!({"description": "An RFC 9457 problem", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}});
    let op = |summary: &str, ok: &str| {
        serde_json::json!({
            "summary": summary,
            "security": [{"bearer": []}],
            "responses": {
                ok: {"description": "Success"},
                "401": problem, "403": problem, "404": problem, "422": problem,
            }
        })
    };
    let name = serde_json::json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}});
    let with = |mut o: serde_json::Value, params: &[&serde_json::Value]| {
        o["parameters"] = serde_json::Value::Array(params.iter().map(|p| (*p).clone()).collect());
        o
    };
    let follow = serde_json::json!({"name": "follow", "in": "query", "required": false, "schema": {"type": "boolean"}});
    let id = serde_json::json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}});
    let token = serde_json::json!({"name": "token", "in": "path", "required": true, "schema": {"type": "string"}});
    let bucket = serde_json::json!({"name": "bucket", "in": "path", "required": true, "schema": {"type": "string"}});
    let key = serde_json::json!({"name": "key", "in": "path", "required": true, "schema": {"type": "string"}});
    let tenant = serde_json::json!({"name": "tenant", "in": "query", "required": false, "description": "The operator's view of a tenant's namespace", "schema": {"type": "string"}});
    let uplink = serde_json::json!({"name": "uplink", "in": "path", "required": true, "schema": {"type": "string"}});
    let action = serde_json::json!({"name": "action", "in": "path", "required": true, "schema": {"type": "string", "enum": ["retry", "purge"]}});
    serde_json::json!({
        "openapi": "3.1.0",
        "info": {"title": "Brink admin API", "version": "1"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "The operator token, a tenant token (`brink_…`), or a JWT from the identity server `[admin.jwt]` names"}},
            "schemas": {"Problem": {"type": "object", "properties": {
                "type": {"type": "string"}, "title": {"type": "string"},
                "status": {"type": "integer"}, "detail": {"type": "string"}}}}
        },
        "paths": {
            "/v1/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}},
            "/v1/uploads": {"post": op("Upload a component (raw bytes, application/wasm); answers its digest", "201")},
            "/v1/functions": {"get": op("The calling tenant's functions", "200")},
            "/v1/functions/{name}": {
                "get": with(op("A function: active version, earlier ones, every version", "200"), &[&name]),
                "delete": with(op("Remove a function and all its versions", "204"), &[&name]),
            },
            "/v1/functions/{name}/versions": {"post": with(op("Publish a version of an upload with its spec and signatures; activates it unless `activate` is false", "201"), &[&name])},
            "/v1/functions/{name}/activate": {"post": with(op("Activate a version (`1.2.3`, `^1.2`, `latest`)", "200"), &[&name])},
            "/v1/functions/{name}/rollback": {"post": with(op("Activate the previously active version", "200"), &[&name])},
            "/v1/functions/{name}/invoke": {"post": with(op("Invoke the function with one CloudEvent; answers its outputs", "200"), &[&name])},
            "/v1/functions/{name}/logs": {"get": with(op("The function's recent log records; `follow=true` (or Accept: text/event-stream) streams them and every new one as server-sent events, resumable with Last-Event-ID", "200"), &[&name, &follow])},
            "/v1/usage": {"get": op("Usage per tenant: invocations, execution time, functions", "200")},
            "/v1/tenants": {
                "get": op("Every tenant (operator)", "200"),
                "post": op("Create a tenant and its first token (operator)", "201"),
            },
            "/v1/tenants/{id}": {
                "get": with(op("A tenant: quota, grants, token ids", "200"), &[&id]),
                "patch": with(op("Change a tenant's quota or grants (operator)", "200"), &[&id]),
                "delete": with(op("Delete a tenant with its tokens, functions and key-value buckets (operator)", "200"), &[&id]),
            },
            "/v1/tenants/{id}/tokens": {"post": with(op("Issue another token (operator)", "201"), &[&id])},
            "/v1/tenants/{id}/tokens/{token}": {"delete": with(op("Revoke a token (operator)", "204"), &[&id, &token])},
            "/v1/gc": {"post": op("Delete blobs no version refers to, unpublished uploads included (operator)", "200")},
            "/v1/kv": {"get": with(op("Key-value buckets: a tenant's own; the operator's view is the app's, or a tenant's with `tenant`", "200"), &[&tenant])},
            "/v1/kv/{bucket}": {"get": with(op("Keys of a bucket (`prefix`, `cursor`)", "200"), &[&bucket, &tenant])},
            "/v1/kv/{bucket}/{key}": {
                "get": with(op("A value's bytes", "200"), &[&bucket, &key, &tenant]),
                "put": with(op("Set a value (`ttl_ms`)", "204"), &[&bucket, &key, &tenant]),
                "delete": with(op("Remove a value", "204"), &[&bucket, &key, &tenant]),
            },
            "/v1/metrics": {"get": op("Every metric in the Prometheus text format, tenants' included (operator); the public /metrics has node-wide figures only", "200")},
            "/v1/outbox": {"get": op("Uplink queues: every one for the operator, the granted ones for a tenant", "200")},
            "/v1/outbox/{uplink}/purge": {"post": with(op("Drop what is queued for an uplink (operator)", "200"), &[&uplink])},
            "/v1/outbox/{uplink}/parked": {"get": with(op("Events the uplink refused for good, with the reason and the time (a tenant sees its own)", "200"), &[&uplink])},
            "/v1/outbox/{uplink}/parked/{action}": {"post": with(op("`retry`: move parked events back to the queue; `purge`: drop them (operator; body `{\"seqs\": [..]}` picks some)", "200"), &[&uplink, &action])},
        }
    })
}
