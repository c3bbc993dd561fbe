//! [`Node::start`], one step per function: open the state, load the
//! functions, connect MQTT, wire the dispatcher, open the registry, serve.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::dispatch::{DEFAULT_CONCURRENCY, Dispatcher, Route};
use super::metrics::Metrics;
use super::uplink::{self as forward};
use super::{
    Node, NodeSink, api, component_path, default_data_dir, deploy, http, mqtt, serve, tls,
};
use crate::engine::Engine;
use crate::kv::Kv;
use crate::manifest::{Manifest, Output, Trigger};
use crate::nn::Models;
use crate::outbox::Outbox;
use crate::plan;
use crate::store::{Backend, Sled};

impl Node {
    /// Loads every function of `manifest` (paths relative to `base`), then
    /// starts the triggers. Fails before serving anything if a function does
    /// not load.
    pub async fn start(manifest: Manifest, base: &Path, engine: &Engine) -> anyhow::Result<Self> {
        tls::install_default_provider();
        let data_dir = manifest
            .data_dir
            .as_ref()
            .map_or_else(default_data_dir, |d| base.join(d));
        // 1. State, models and functions: all that can fail before serving.
        let mut state = open_state(&manifest, &data_dir).await?;
        state.audit = open_audit(&manifest, &state, &data_dir).await?;
        state.tracer = start_tracer(&manifest)?;
        let models = load_models(&manifest, base).await?;
        state.facts = Some(super::facts::Facts::new(
            &data_dir,
            models.clone(),
            state.audit.as_ref().map(|a| a.public_key().to_string()),
            super::facts::Identity {
                id: manifest.node.resolved_id(),
                labels: manifest.node.labels.clone(),
            },
        ));
        let loaded = load_functions(&manifest, base, engine, &state, models.as_ref()).await?;
        // 2. The broker, and 3. the uplinks.
        let mut link = connect_mqtt(&manifest, base, &data_dir, loaded.uses_mqtt).await?;
        let uplinks = start_forwarders(&manifest, base, &data_dir, &state)?;
        // 4. Routing: triggers → dispatch → outputs.
        let dispatcher = route(&manifest, base, &state, models.as_ref(), &link, loaded)?;
        // 5. The registry and its tenants.
        let (shutdown, stop) = watch::channel(false);
        let (auth, deployer) = open_registry(
            &manifest,
            base,
            &data_dir,
            engine,
            &state,
            &models,
            &link,
            &dispatcher,
            &shutdown,
        )
        .await?;
        // 6. Live: subscriptions, then devices, then the listeners.
        let live = go_live(&manifest, &mut link, &dispatcher, stop).await?;
        let (admin_addr, admin) = serve_admin(
            &manifest,
            engine,
            &state,
            &dispatcher,
            auth,
            deployer,
            &shutdown,
        )
        .await?;
        let mqtt_broker = broker_label(&manifest, &link);
        tracing::info!(
            http_addr = %live.0,
            mqtt = mqtt_broker.as_deref().unwrap_or("off"),
            admin = admin_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
            functions = manifest.function.len(),
            "brink node ready"
        );
        Ok(Self {
            http_addr: live.0,
            dispatcher,
            shutdown,
            server: live.1,
            mqtt: link.mqtt,
            mqtt_settings: link.settings,
            mqtt_broker,
            kv: state.kv,
            sweeper: state.sweeper.take(),
            admin_addr,
            admin,
            outbox: state.outbox,
            forwarders: uplinks.0,
            uplink_connections: uplinks.1,
            stop_forwarders: uplinks.2,
            audit: state.audit,
            tracer: state.tracer,
        })
    }
}

/// The dispatcher over the loaded functions, with the node's outputs and metrics.
fn route(
    manifest: &Manifest,
    base: &Path,
    state: &State,
    models: Option<&Models>,
    link: &MqttLink,
    loaded: Loaded,
) -> anyhow::Result<Dispatcher> {
    let sink = node_sink(manifest, base, state, link.mqtt.as_ref(), loaded.uses_https)?;
    let metrics = watch_metrics(manifest, state, models);
    Ok(Dispatcher::new(loaded.routes, metrics, Arc::new(sink)).with_tracer(state.tracer.clone()))
}

/// Subscribes, then opens the embedded broker to devices (only once the
/// node's subscriptions exist), then serves HTTP.
async fn go_live(
    manifest: &Manifest,
    link: &mut MqttLink,
    dispatcher: &Dispatcher,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, Served)> {
    if let (Some(mqtt), Some(settings)) = (&mut link.mqtt, &link.settings) {
        mqtt.subscribe(settings.clone(), dispatcher.clone(), link.tenants_use_mqtt)
            .await?;
    }
    if let Some(broker) = &link.embedded {
        broker.open_to_devices().await?;
    }
    serve_http(manifest, dispatcher, stop).await
}

impl Node {
    /// Checks `manifest` as [`Node::start`] would, without serving or
    /// touching the node's state: models load, every function builds, loads
    /// and gets its grants (against a scratch store, so a running node's
    /// lock does not matter). The number of functions checked.
    pub async fn check(manifest: &Manifest, base: &Path, engine: &Engine) -> anyhow::Result<usize> {
        tls::install_default_provider();
        let scratch =
            std::env::temp_dir().join(format!("brink-check-{}", uuid::Uuid::new_v4().simple()));
        let checked = async {
            let mut state = open_state(manifest, &scratch).await?;
            let models = load_models(manifest, base).await?;
            load_functions(manifest, base, engine, &state, models.as_ref()).await?;
            if let Some(sweeper) = state.sweeper.take() {
                sweeper.abort();
            }
            if manifest.mqtt.url.is_some() {
                mqtt::Settings::from_section(&manifest.mqtt, base)?;
            }
            anyhow::Ok(manifest.function.len())
        }
        .await;
        let _ = std::fs::remove_dir_all(&scratch);
        checked
    }
}

/// What the node keeps on disk.
struct State {
    store: Option<Arc<dyn Backend>>,
    kv: Option<Kv>,
    /// Removes expired keys.
    sweeper: Option<JoinHandle<()>>,
    outbox: Option<Outbox>,
    /// The audit ledger, beside the store.
    audit: Option<crate::audit::Audit>,
    /// What the node is and has, once its models are loaded.
    facts: Option<super::facts::Facts>,
    /// Spans over OTLP, where `[telemetry] otlp` is set.
    tracer: Option<crate::telemetry::Tracer>,
}

/// The store opens only when some function is granted a bucket or an
/// uplink exists, so a stateless app touches no data directory. Tenants may
/// deploy functions with buckets at any time.
async fn open_state(manifest: &Manifest, data_dir: &Path) -> anyhow::Result<State> {
    let uses_kv =
        manifest.registry.is_some() || manifest.function.values().any(|f| !f.kv.is_empty());
    let store: Option<Arc<dyn Backend>> = if uses_kv || !manifest.uplink.is_empty() {
        let dir = data_dir.to_owned();
        let sled = tokio::task::spawn_blocking(move || Sled::open(&dir)).await??;
        Some(Arc::new(sled))
    } else {
        None
    };
    let kv = match (&store, uses_kv) {
        (Some(store), true) => Some(Kv::new(store.clone(), plan::kv_config(&manifest.kv))?),
        _ => None,
    };
    let outbox = match &store {
        Some(store) if !manifest.uplink.is_empty() => {
            let store = store.clone();
            let queues = manifest
                .uplink
                .iter()
                .map(|(name, u)| (name.clone(), plan::queue_config(u)))
                .collect::<Vec<_>>();
            Some(tokio::task::spawn_blocking(move || Outbox::open(store, queues)).await??)
        }
        _ => None,
    };
    let sweeper = kv.as_ref().map(|kv| {
        let every = manifest.kv.sweep_interval_ms.unwrap_or(1000);
        kv.spawn_sweeper(Duration::from_millis(every))
    });
    Ok(State {
        store,
        kv,
        sweeper,
        outbox,
        audit: None,
        facts: None,
        tracer: None,
    })
}

/// The tracer `[telemetry] otlp` asks for; none when it is unset.
fn start_tracer(manifest: &Manifest) -> anyhow::Result<Option<crate::telemetry::Tracer>> {
    let section = &manifest.telemetry;
    let Some(traces_url) = section.traces_url() else {
        return Ok(None);
    };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let config = crate::telemetry::TelemetryConfig {
        traces_url,
        sample_ratio: section.sample_percent.map_or(1.0, |p| p.0 / 100.0),
        max_queue_spans: section.max_queue_spans.unwrap_or(8192),
        export_interval: Duration::from_millis(section.export_interval_ms.unwrap_or(1000)),
        headers: section.headers.clone().into_iter().collect(),
        resource: [
            ("service.name", "brink".to_owned()),
            ("service.version", env!("CARGO_PKG_VERSION").to_owned()),
            ("service.instance.id", manifest.node.resolved_id()),
            ("host.name", host),
            ("brink.app", manifest.app.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .chain((manifest.node.labels.iter()).map(|(k, v)| (format!("brink.node.{k}"), v.clone())))
        .collect(),
    };
    tracing::info!(url = %config.traces_url, "telemetry: exporting spans over OTLP");
    let client = crate::telemetry::client().context("setting up the OTLP exporter")?;
    Ok(Some(crate::telemetry::Tracer::start(config, client)))
}

/// The audit ledger, where the node keeps a data directory, and its
/// node-start record.
async fn open_audit(
    manifest: &Manifest,
    state: &State,
    data_dir: &Path,
) -> anyhow::Result<Option<crate::audit::Audit>> {
    if state.store.is_none() {
        return Ok(None);
    }
    let dir = data_dir.to_owned();
    let audit = tokio::task::spawn_blocking(move || crate::audit::Audit::open(&dir))
        .await?
        .context("opening the audit ledger")?;
    let detail = format!(
        "brink {}, manifest {}, app `{}`, {} functions",
        env!("CARGO_PKG_VERSION"),
        manifest.digest.as_deref().unwrap_or("(not from a file)"),
        manifest.app,
        manifest.function.len()
    );
    let record = audit.clone();
    tokio::task::spawn_blocking(move || {
        record.record(crate::audit::Entry::node("node.start", "node", detail))
    })
    .await?
    .context("recording the node's start in the audit ledger")?;
    Ok(Some(audit))
}

/// Models load once, before any function, and only when some are declared.
async fn load_models(manifest: &Manifest, base: &Path) -> anyhow::Result<Option<Models>> {
    if manifest.model.is_empty() && !manifest.function.values().any(|f| f.load_models) {
        return Ok(None);
    }
    let configs: std::collections::BTreeMap<_, _> = manifest
        .model
        .iter()
        .map(|(name, m)| (name.clone(), plan::model_config(m, base)))
        .collect();
    let config = plan::nn_config(&manifest.nn, base);
    let runtime = tokio::runtime::Handle::current();
    Ok(Some(
        tokio::task::spawn_blocking(move || {
            let _runtime = runtime.enter();
            Models::load(&configs, config)
        })
        .await??,
    ))
}

/// The manifest's functions, loaded, and what their triggers and outputs need.
struct Loaded {
    routes: Vec<Route>,
    uses_mqtt: bool,
    uses_https: bool,
}

async fn load_functions(
    manifest: &Manifest,
    base: &Path,
    engine: &Engine,
    state: &State,
    models: Option<&Models>,
) -> anyhow::Result<Loaded> {
    let scope = plan::Scope {
        kv: state.kv.clone().map(|kv| (kv, manifest.app.clone())),
        outbox: state.outbox.clone(),
        models: models.cloned(),
        ..plan::Scope::default()
    };
    let mut loaded = Loaded {
        routes: Vec::new(),
        uses_mqtt: false,
        uses_https: false,
    };
    for (name, section) in &manifest.function {
        loaded.uses_mqtt |= section
            .triggers
            .iter()
            .any(|t| matches!(t, Trigger::Mqtt(_)))
            || section.outputs.iter().any(|o| matches!(o, Output::Mqtt(_)));
        loaded.uses_https |= section
            .outputs
            .iter()
            .any(|o| matches!(o, Output::Webhook(url) if url.starts_with("https://")));
        let (base, source) = (base.to_owned(), section.source.clone());
        let path = tokio::task::spawn_blocking(move || component_path(&base, &source))
            .await?
            .with_context(|| format!("function `{name}`"))?;
        let spec = plan::spec(name, plan::Body::from(section), &scope)
            .with_context(|| format!("function `{name}`"))?;
        let function = engine
            .load_file(spec, &path)
            .with_context(|| format!("function `{name}`"))?;
        loaded.routes.push(Route {
            function,
            triggers: section.triggers.clone(),
            outputs: section.outputs.clone(),
            concurrency: section.limits.concurrency.unwrap_or(DEFAULT_CONCURRENCY),
            version: None,
        });
    }
    Ok(loaded)
}

/// The node's MQTT side: its connection and settings, and the embedded
/// broker when there is no external one.
struct MqttLink {
    mqtt: Option<mqtt::Mqtt>,
    settings: Option<mqtt::Settings>,
    embedded: Option<mqtt::EmbeddedBroker>,
    tenants_use_mqtt: bool,
}

/// MQTT only when a function uses it, or tenants may, so an HTTP-only app
/// binds no broker ports.
async fn connect_mqtt(
    manifest: &Manifest,
    base: &Path,
    data_dir: &Path,
    uses_mqtt: bool,
) -> anyhow::Result<MqttLink> {
    let tenants_use_mqtt = manifest.registry.as_ref().is_some_and(|r| r.mqtt);
    let mut link = MqttLink {
        mqtt: None,
        settings: None,
        embedded: None,
        tenants_use_mqtt,
    };
    if !uses_mqtt && !tenants_use_mqtt {
        return Ok(link);
    }
    let mut settings = mqtt::Settings::from_section(&manifest.mqtt, base)?;
    if manifest.mqtt.client_id.is_none() {
        settings.client_id = mqtt::node_client_id(data_dir)?;
    }
    if manifest.mqtt.url.is_none() {
        // The node talks to the broker in-process, or on listeners of its own.
        let broker = mqtt::start_embedded_broker(&manifest.mqtt, &settings.client_id)?;
        match broker.internal {
            Some((v4, v5)) => {
                let own = if settings.v5 { v5 } else { v4 };
                (settings.host, settings.port) = (own.ip().to_string(), own.port());
            }
            None => settings.local = Some(broker.links.clone()),
        }
        link.embedded = Some(broker);
    }
    link.mqtt = Some(mqtt::Mqtt::connect(settings.clone()).await?);
    link.settings = Some(settings);
    Ok(link)
}

/// Where outputs that leave the node go. TLS roots are read only when some
/// webhook is https://.
fn node_sink(
    manifest: &Manifest,
    base: &Path,
    state: &State,
    mqtt: Option<&mqtt::Mqtt>,
    uses_https: bool,
) -> anyhow::Result<NodeSink> {
    let webhook_tls = if uses_https {
        let ca = manifest.http.webhook_ca_file.as_ref().map(|p| base.join(p));
        tls::client_config(&tls::TlsFiles {
            ca_file: ca.as_deref().map(|p| (p, "http.webhook_ca_file")),
            ..tls::TlsFiles::default()
        })
        .context("setting up TLS for https:// webhooks")?
    } else {
        tls::no_roots()?
    };
    Ok(NodeSink {
        outbox: state.outbox.clone(),
        uplink_options: manifest
            .uplink
            .iter()
            .map(|(name, u)| {
                let ttl = u.ttl_ms.map(Duration::from_millis);
                (name.clone(), (u.priority.unwrap_or(0), ttl))
            })
            .collect(),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .tls_backend_preconfigured(Arc::unwrap_or_clone(webhook_tls))
            .build()
            .context("creating the webhook client")?,
        mqtt: mqtt.map(mqtt::Mqtt::publisher),
    })
}

fn watch_metrics(manifest: &Manifest, state: &State, models: Option<&Models>) -> Arc<Metrics> {
    let metrics = Arc::new(Metrics::default());
    if let Some(kv) = &state.kv {
        metrics.watch(|r| crate::capability::keyvalue::meters(r, kv.clone(), &manifest.app));
    }
    if let Some(outbox) = &state.outbox {
        metrics.watch(|r| crate::capability::outbox::meters(r, outbox.clone()));
    }
    if let Some(models) = models {
        metrics.watch(|r| crate::capability::nn::meters(r, models.clone()));
    }
    if let Some(facts) = &state.facts {
        metrics.watch(|r| super::facts::meters(r, facts.clone()));
    }
    if let Some(tracer) = &state.tracer {
        metrics.watch(|r| crate::telemetry::meters(r, tracer.clone()));
    }
    metrics
}

/// The admin API's credentials and, with `[registry]`, the deployer.
#[allow(clippy::too_many_arguments)]
async fn open_registry(
    manifest: &Manifest,
    base: &Path,
    data_dir: &Path,
    engine: &Engine,
    state: &State,
    models: &Option<Models>,
    link: &MqttLink,
    dispatcher: &Dispatcher,
    shutdown: &watch::Sender<bool>,
) -> anyhow::Result<(api::auth::Auth, Option<deploy::Deployer>)> {
    let tenants = match (&manifest.registry, &state.store) {
        (Some(_), Some(store)) => Some(crate::tenancy::Tenants::open(store.clone())?),
        _ => None,
    };
    let jwt = match &manifest.admin.jwt {
        Some(settings) => {
            Some(api::auth::JwtVerifier::open(settings, base).context("setting up admin.jwt")?)
        }
        None => None,
    };
    // Where tenants exist, some credential must make the operator.
    let configured = match (&manifest.admin.token, &manifest.admin.token_file) {
        (Some(token), _) => Some(token.clone()),
        (None, Some(file)) => Some(api::auth::read_token_file(&base.join(file))?),
        (None, None) => None,
    };
    let operator_token = match (configured, &tenants, &jwt) {
        (Some(token), _, _) => Some(token),
        (None, Some(_), None) => Some(api::auth::generated_operator_token(data_dir)?),
        (None, _, _) => None,
    };
    let auth = api::auth::Auth::new(operator_token, tenants.clone(), jwt);
    let (Some(registry), Some(tenants)) = (&manifest.registry, tenants) else {
        return Ok((auth, None));
    };
    let context = deploy::DeployContext {
        engine: engine.clone(),
        dispatcher: dispatcher.clone(),
        kv: state.kv.clone(),
        outbox: state.outbox.clone(),
        models: models.clone(),
        mqtt: link
            .mqtt
            .as_ref()
            .filter(|_| link.tenants_use_mqtt)
            .map(mqtt::Mqtt::subscriptions),
        policy: registry.policy().map_err(anyhow::Error::msg)?,
        pulls: registry
            .oci
            .as_ref()
            .map(|oci| {
                let settings = crate::oci::Settings {
                    plain_http: oci.plain_http.clone(),
                    ca_file: oci.ca_file.as_ref().map(|f| base.join(f)),
                    auth_file: oci.auth_file.as_ref().map(|f| base.join(f)),
                };
                crate::oci::Puller::new(oci.registries.clone(), &settings)
            })
            .transpose()
            .context("setting up [registry.oci]")?,
        shutdown: shutdown.subscribe(),
    };
    let deployer = deploy::Deployer::open(&data_dir.join("registry"), tenants, context)
        .await
        .context("opening the registry")?;
    Ok((auth, Some(deployer)))
}

type Served = JoinHandle<std::io::Result<()>>;

async fn serve_http(
    manifest: &Manifest,
    dispatcher: &Dispatcher,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, Served)> {
    let listener = tokio::net::TcpListener::bind(manifest.http.listen)
        .await
        .with_context(|| format!("binding HTTP on {}", manifest.http.listen))?;
    let addr = listener.local_addr()?;
    let app = http::router(dispatcher.clone(), manifest.http.max_body_kb);
    let limits = conn_limits(&manifest.http);
    let server = tokio::spawn(serve::serve(listener, app, limits, stop));
    Ok((addr, server))
}

/// The limits both listeners serve clients with (`[http]`).
fn conn_limits(http: &crate::manifest::HttpSection) -> serve::ConnLimits {
    serve::ConnLimits {
        max_connections: http.max_connections,
        header_timeout: Duration::from_secs(http.header_timeout_s),
        body_timeout: Duration::from_secs(http.body_timeout_s),
    }
}

/// The admin API, when the node has state or a registry to administer.
async fn serve_admin(
    manifest: &Manifest,
    engine: &Engine,
    state: &State,
    dispatcher: &Dispatcher,
    auth: api::auth::Auth,
    deployer: Option<deploy::Deployer>,
    shutdown: &watch::Sender<bool>,
) -> anyhow::Result<(Option<SocketAddr>, Option<Served>)> {
    if state.kv.is_none() && state.outbox.is_none() && deployer.is_none() {
        return Ok((None, None));
    }
    let listener = tokio::net::TcpListener::bind(manifest.admin.listen)
        .await
        .with_context(|| format!("binding the admin API on {}", manifest.admin.listen))?;
    let addr = listener.local_addr()?;
    let app = api::router(api::Parts {
        kv: state.kv.clone(),
        outbox: state.outbox.clone(),
        metrics: dispatcher.metrics_handle(),
        namespace: &manifest.app,
        auth,
        deployer,
        max_component_bytes: engine.config().max_component_bytes,
        audit: state.audit.clone(),
        facts: state.facts.clone(),
    });
    let limits = conn_limits(&manifest.http);
    let server = tokio::spawn(serve::serve(listener, app, limits, shutdown.subscribe()));
    Ok((Some(addr), Some(server)))
}

/// The broker the node uses, as `brink up` prints it.
fn broker_label(manifest: &Manifest, link: &MqttLink) -> Option<String> {
    let settings = link.settings.as_ref()?;
    Some(match &link.embedded {
        Some(_) if settings.v5 => format!("{} (embedded)", manifest.mqtt.listen_v5),
        Some(_) => format!("{} (embedded)", manifest.mqtt.listen),
        None => format!("{}:{}", settings.host, settings.port),
    })
}

type Forwarders = (
    Vec<JoinHandle<()>>,
    Vec<(watch::Sender<bool>, JoinHandle<()>)>,
    watch::Sender<bool>,
);

/// One forwarder per uplink, each with its own connection.
fn start_forwarders(
    manifest: &Manifest,
    base: &Path,
    data_dir: &Path,
    state: &State,
) -> anyhow::Result<Forwarders> {
    let (stop, stop_rx) = watch::channel(false);
    let mut forwarders = Vec::new();
    let mut connections = Vec::new();
    let Some(outbox) = &state.outbox else {
        return Ok((forwarders, connections, stop));
    };
    let node: std::sync::Arc<str> = manifest.node.resolved_id().into();
    for (name, u) in &manifest.uplink {
        let (target, connection) = forward::Target::for_uplink(name, u, base, data_dir)?;
        connections.extend(connection);
        forwarders.push(forward::spawn(
            outbox.clone(),
            name.clone(),
            target,
            forward::ForwardConfig {
                node: Some(node.clone()),
                ..forward::ForwardConfig::from_section(u)
            },
            stop_rx.clone(),
            state.tracer.clone(),
        )?);
    }
    Ok((forwarders, connections, stop))
}
