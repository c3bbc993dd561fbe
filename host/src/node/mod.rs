//! `brink up`: an edge node that runs a manifest's functions on the events
//! its triggers receive.

pub mod admin;
pub mod auth;
pub mod deploy;
pub mod dispatch;
pub mod http;
pub mod metrics;
pub mod mqtt;
pub mod tls;
pub mod tools;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::bindings::CloudEvent;
use crate::builder::{self, BuildRequest};
use crate::engine::Engine;
use crate::kv::Kv;
use crate::manifest::{Manifest, Output, Trigger};
use crate::nn::Models;
use crate::outbox::forward::{self, Target};
use crate::outbox::{Outbox, OutboxError};
use crate::store::{Backend, Sled};
use dispatch::{DEFAULT_CONCURRENCY, Dispatcher, Route, Sink};
use metrics::Metrics;

/// Delivers outputs that leave the node: webhooks over HTTP in binary mode,
/// MQTT topics through the publisher.
#[derive(Debug, Clone)]
struct NodeSink {
    client: reqwest::Client,
    mqtt: Option<mqtt::Publisher>,
    outbox: Option<Outbox>,
    /// Priority and TTL of outputs routed to each uplink.
    uplink_options: BTreeMap<String, (u8, Option<Duration>)>,
}

impl Sink for NodeSink {
    fn uplink<'a>(
        &'a self,
        owner: Option<&'a str>,
        uplink: &'a str,
        event: &'a CloudEvent,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>> {
        Box::pin(async move {
            let Some(outbox) = &self.outbox else {
                bail!("this node has no outbox");
            };
            let (priority, ttl) = self
                .uplink_options
                .get(uplink)
                .copied()
                .unwrap_or((0, None));
            match outbox.send_as(owner, uplink, event, priority, ttl).await {
                Ok(_) => Ok(()),
                // This event will never fit or be valid: retrying cannot help.
                Err(e @ (OutboxError::TooLarge { .. } | OutboxError::BadEvent(_))) => {
                    Err(crate::delivery::refused(e.to_string()))
                }
                Err(e) => Err(e.into()),
            }
        })
    }

    fn mqtt<'a>(
        &'a self,
        template: &'a str,
        event: &'a CloudEvent,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>> {
        Box::pin(async move {
            // A template the event cannot fill never will.
            let topic = mqtt::render_topic(template, event)
                .map_err(|e| crate::delivery::refused(format!("{e:#}")))?;
            match &self.mqtt {
                Some(publisher) => publisher.publish(&topic, event).await,
                None => bail!("this node has no MQTT connection"),
            }
        })
    }

    fn webhook<'a>(
        &'a self,
        url: &'a str,
        event: &'a CloudEvent,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>> {
        Box::pin(async move {
            let (headers, body) = crate::event::http::encode_binary(event)
                .map_err(|e| crate::delivery::refused(format!("{e:#}")))?;
            let response = self
                .client
                .post(url)
                .headers(headers)
                .body(body)
                .send()
                .await
                .context("sending")?;
            let status = response.status();
            if crate::delivery::http_status_is_permanent(status) {
                return Err(crate::delivery::refused(format!(
                    "the endpoint refused the event: {status}"
                )));
            }
            if !status.is_success() {
                bail!("the endpoint answered {status}");
            }
            Ok(())
        })
    }
}

/// Where a function's component comes from: a `.wasm`, or a crate to build.
fn component_path(base: &Path, source: &Path) -> anyhow::Result<PathBuf> {
    let path = base.join(source);
    if path.is_dir() {
        let manifest_path = path.join("Cargo.toml");
        let mut artifacts = builder::build(&BuildRequest {
            manifest_path,
            target_dir: None,
            release: true,
        })?;
        if artifacts.len() != 1 {
            bail!(
                "{} builds {} components; point `source` at one .wasm",
                path.display(),
                artifacts.len()
            );
        }
        Ok(artifacts.remove(0).path)
    } else {
        Ok(path)
    }
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    http_addr: SocketAddr,
    dispatcher: Dispatcher,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    mqtt: Option<mqtt::Mqtt>,
    mqtt_settings: Option<mqtt::Settings>,
    mqtt_broker: Option<String>,
    kv: Option<Kv>,
    sweeper: Option<JoinHandle<()>>,
    admin_addr: Option<SocketAddr>,
    admin: Option<JoinHandle<std::io::Result<()>>>,
    outbox: Option<Outbox>,
    /// Forwarder tasks and the MQTT uplink connections, stopped on shutdown.
    forwarders: Vec<JoinHandle<()>>,
    uplink_connections: Vec<(watch::Sender<bool>, JoinHandle<()>)>,
    stop_forwarders: watch::Sender<bool>,
}

/// Where key-value state lives when neither the manifest nor `--data-dir` says.
pub fn default_data_dir() -> PathBuf {
    dirs::data_local_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("brink")
        .join("data")
}

impl Node {
    /// Loads every function of `manifest` (paths relative to `base`), then
    /// starts the triggers. Fails before serving anything if a function does
    /// not load.
    pub async fn start(manifest: Manifest, base: &Path, engine: &Engine) -> anyhow::Result<Self> {
        let mut routes = Vec::new();
        tls::install_default_provider();
        let mut uses_mqtt = false;
        let mut uses_https = false;
        // The store opens only when some function is granted a bucket or an
        // uplink exists, so a stateless app touches no data directory.
        // Tenants may deploy functions with buckets at any time.
        let uses_kv =
            manifest.registry.is_some() || manifest.function.values().any(|f| !f.kv.is_empty());
        let data_dir = manifest
            .data_dir
            .as_ref()
            .map_or_else(default_data_dir, |d| base.join(d));
        let store: Option<Arc<dyn Backend>> = if uses_kv || !manifest.uplink.is_empty() {
            let dir = data_dir.clone();
            let sled = tokio::task::spawn_blocking(move || Sled::open(&dir)).await??;
            Some(Arc::new(sled))
        } else {
            None
        };
        let kv = match (&store, uses_kv) {
            (Some(store), true) => Some(Kv::new(store.clone(), manifest.kv.config())?),
            _ => None,
        };
        let outbox = match &store {
            Some(store) if !manifest.uplink.is_empty() => {
                let (store, queues) = (
                    store.clone(),
                    manifest
                        .uplink
                        .iter()
                        .map(|(name, u)| (name.clone(), u.queue_config()))
                        .collect::<Vec<_>>(),
                );
                Some(tokio::task::spawn_blocking(move || Outbox::open(store, queues)).await??)
            }
            _ => None,
        };
        let sweeper = kv.as_ref().map(|kv| {
            kv.spawn_sweeper(Duration::from_millis(
                manifest.kv.sweep_interval_ms.unwrap_or(1000),
            ))
        });
        // Models load once, before any function, and only when some are declared.
        let models =
            if manifest.model.is_empty() && !manifest.function.values().any(|f| f.load_models) {
                None
            } else {
                let configs: std::collections::BTreeMap<_, _> = manifest
                    .model
                    .iter()
                    .map(|(name, m)| (name.clone(), m.config(base)))
                    .collect();
                let config = manifest.nn.config(base);
                let runtime = tokio::runtime::Handle::current();
                Some(
                    tokio::task::spawn_blocking(move || {
                        let _runtime = runtime.enter();
                        Models::load(&configs, config)
                    })
                    .await??,
                )
            };
        for (name, section) in &manifest.function {
            uses_mqtt |= section
                .triggers
                .iter()
                .any(|t| matches!(t, Trigger::Mqtt(_)))
                || section.outputs.iter().any(|o| matches!(o, Output::Mqtt(_)));
            uses_https |= section
                .outputs
                .iter()
                .any(|o| matches!(o, Output::Webhook(url) if url.starts_with("https://")));
            let base = base.to_owned();
            let source = section.source.clone();
            let path = tokio::task::spawn_blocking(move || component_path(&base, &source))
                .await?
                .with_context(|| format!("function `{name}`"))?;
            let mut spec = section.spec(name);
            if let Some(kv) = &kv
                && !section.kv.is_empty()
            {
                spec = spec.with_kv(kv.clone(), &manifest.app, section.kv.iter().cloned());
            }
            if let Some(outbox) = &outbox
                && !section.outbox.is_empty()
            {
                spec = spec.with_outbox(outbox.clone(), section.outbox.iter().cloned());
            }
            if let Some(models) = &models
                && (!section.models.is_empty() || section.load_models)
            {
                spec = spec.with_models(
                    models.clone(),
                    section.models.iter().cloned(),
                    section.load_models,
                );
            }
            let function = engine
                .load_file(spec, &path)
                .with_context(|| format!("function `{name}`"))?;
            routes.push(Route {
                function,
                triggers: section.triggers.clone(),
                outputs: section.outputs.clone(),
                concurrency: section.limits.concurrency.unwrap_or(DEFAULT_CONCURRENCY),
            });
        }
        // MQTT only when a function uses it, or tenants may, so an HTTP-only
        // app binds no broker ports.
        let tenants_use_mqtt = manifest.registry.as_ref().is_some_and(|r| r.mqtt);
        let mut embedded = None;
        let (mut mqtt, settings) = if uses_mqtt || tenants_use_mqtt {
            let mut settings = mqtt::Settings::from_section(&manifest.mqtt, base)?;
            if manifest.mqtt.client_id.is_none() {
                settings.client_id = mqtt::node_client_id(&data_dir)?;
            }
            if manifest.mqtt.url.is_none() {
                // The node talks to the broker on listeners of its own.
                let broker = mqtt::start_embedded_broker(&manifest.mqtt, &settings.client_id)?;
                let own = if settings.v5 {
                    broker.internal_v5
                } else {
                    broker.internal_v4
                };
                (settings.host, settings.port) = (own.ip().to_string(), own.port());
                embedded = Some(broker);
            }
            (
                Some(mqtt::Mqtt::connect(settings.clone()).await?),
                Some(settings),
            )
        } else {
            (None, None)
        };
        // TLS roots are read only when some webhook is https://.
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
        let (forwarders, uplink_connections, stop_forwarders) = match &outbox {
            Some(outbox) => start_forwarders(&manifest, base, &data_dir, outbox)?,
            None => (Vec::new(), Vec::new(), watch::channel(false).0),
        };
        let sink = NodeSink {
            outbox: outbox.clone(),
            uplink_options: manifest
                .uplink
                .iter()
                .map(|(name, u)| {
                    (
                        name.clone(),
                        (u.priority.unwrap_or(0), u.ttl_ms.map(Duration::from_millis)),
                    )
                })
                .collect(),
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .tls_backend_preconfigured(Arc::unwrap_or_clone(webhook_tls))
                .build()
                .context("creating the webhook client")?,
            mqtt: mqtt.as_ref().map(mqtt::Mqtt::publisher),
        };
        let metrics = Arc::new(Metrics::default());
        if let Some(kv) = &kv {
            metrics.watch_kv(kv.clone(), &manifest.app);
        }
        if let Some(outbox) = &outbox {
            metrics.watch_outbox(outbox.clone());
        }
        if let Some(models) = &models {
            metrics.watch_models(models.clone());
        }
        let dispatcher = Dispatcher::new(routes, metrics, Arc::new(sink));
        let (shutdown, mut stop) = watch::channel(false);
        let tenants = match (&manifest.registry, &store) {
            (Some(_), Some(store)) => Some(crate::tenancy::Tenants::open(store.clone())?),
            _ => None,
        };
        let jwt = match &manifest.admin.jwt {
            Some(settings) => {
                Some(auth::JwtVerifier::open(settings, base).context("setting up admin.jwt")?)
            }
            None => None,
        };
        // Where tenants exist, some credential must make the operator.
        let operator_token = match (&manifest.admin.token, &tenants, &jwt) {
            (Some(token), _, _) => Some(token.clone()),
            (None, Some(_), None) => Some(auth::generated_operator_token(&data_dir)?),
            (None, _, _) => None,
        };
        let auth = auth::Auth::new(operator_token, tenants.clone(), jwt);
        let deployer = match (&manifest.registry, tenants) {
            (Some(registry), Some(tenants)) => {
                let policy = registry.policy().map_err(anyhow::Error::msg)?;
                let context = deploy::DeployContext {
                    engine: engine.clone(),
                    dispatcher: dispatcher.clone(),
                    kv: kv.clone(),
                    outbox: outbox.clone(),
                    models: models.clone(),
                    mqtt: mqtt
                        .as_ref()
                        .filter(|_| tenants_use_mqtt)
                        .map(mqtt::Mqtt::subscriptions),
                    policy,
                    auth: auth.clone(),
                    shutdown: shutdown.subscribe(),
                };
                Some(
                    deploy::Deployer::open(&data_dir.join("registry"), tenants, context)
                        .await
                        .context("opening the registry")?,
                )
            }
            _ => None,
        };
        if let (Some(mqtt), Some(settings)) = (&mut mqtt, &settings) {
            mqtt.subscribe(settings.clone(), dispatcher.clone(), tenants_use_mqtt)
                .await?;
        }
        // Devices only once the node's subscriptions exist.
        if let Some(broker) = &embedded {
            broker.open_to_devices().await?;
        }

        let listener = tokio::net::TcpListener::bind(manifest.http.listen)
            .await
            .with_context(|| format!("binding HTTP on {}", manifest.http.listen))?;
        let http_addr = listener.local_addr()?;
        let app = http::router(
            dispatcher.clone(),
            manifest.http.max_body_kb.saturating_mul(1024),
        );
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                })
                .await
        });
        let (admin_addr, admin) = match (&kv, &outbox, &deployer) {
            (None, None, None) => (None, None),
            _ => {
                let listener = tokio::net::TcpListener::bind(manifest.admin.listen)
                    .await
                    .with_context(|| {
                        format!("binding the admin API on {}", manifest.admin.listen)
                    })?;
                let addr = listener.local_addr()?;
                let mut app = admin::router(
                    kv.clone(),
                    outbox.clone(),
                    dispatcher.metrics_handle(),
                    &manifest.app,
                    auth,
                );
                if let Some(deployer) = deployer {
                    app = app.merge(deploy::router(
                        deployer,
                        engine.config().max_component_bytes,
                    ));
                }
                let mut stop = shutdown.subscribe();
                let server = tokio::spawn(async move {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async move {
                            let _ = stop.wait_for(|stop| *stop).await;
                        })
                        .await
                });
                (Some(addr), Some(server))
            }
        };
        let mqtt_broker = match (&embedded, &settings) {
            (Some(_), Some(s)) => Some(format!(
                "{} (embedded)",
                if s.v5 {
                    manifest.mqtt.listen_v5
                } else {
                    manifest.mqtt.listen
                }
            )),
            (None, Some(s)) => Some(format!("{}:{}", s.host, s.port)),
            (_, None) => None,
        };
        tracing::info!(
            %http_addr,
            mqtt = mqtt_broker.as_deref().unwrap_or("off"),
            admin = admin_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
            functions = manifest.function.len(),
            "brink node ready"
        );
        Ok(Self {
            http_addr,
            dispatcher,
            shutdown,
            server,
            mqtt,
            mqtt_settings: settings,
            mqtt_broker,
            kv,
            sweeper,
            admin_addr,
            admin,
            outbox,
            forwarders,
            uplink_connections,
            stop_forwarders,
        })
    }

    /// The node's outbox, if the manifest declares uplinks.
    pub fn outbox(&self) -> Option<&Outbox> {
        self.outbox.as_ref()
    }

    /// The node's key-value store, if any function is granted a bucket.
    pub fn kv(&self) -> Option<&Kv> {
        self.kv.as_ref()
    }

    /// Where the admin API listens, when the node has one (it has key-value state).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The node's resolved MQTT settings (broker, TLS), if any function uses
    /// MQTT: what tools beside the node connect with.
    pub fn mqtt_settings(&self) -> Option<&mqtt::Settings> {
        self.mqtt_settings.as_ref()
    }

    /// The MQTT broker the node uses (`host:port`), if any function uses MQTT.
    pub fn mqtt_broker(&self) -> Option<&str> {
        self.mqtt_broker.as_deref()
    }

    /// Where the HTTP trigger listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The node's routing table.
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// Stops accepting, lets in-flight requests and messages finish (MQTT
    /// messages are acknowledged), then returns.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        let mut mqtt = self.mqtt;
        if let Some(mqtt) = &mut mqtt {
            mqtt.stop_subscriber().await;
        }
        // HTTP requests in flight may still publish to MQTT.
        let served = self.server.await;
        if let Some(mqtt) = mqtt {
            mqtt.shutdown().await;
        }
        if let Some(admin) = self.admin {
            admin.await?.context("admin API")?;
        }
        // What is still queued stays on disk for the next start.
        let _ = self.stop_forwarders.send(true);
        for forwarder in self.forwarders {
            let _ = forwarder.await;
        }
        for (stop, connection) in self.uplink_connections {
            let _ = stop.send(true);
            let _ = connection.await;
        }
        if let Some(sweeper) = self.sweeper {
            sweeper.abort();
        }
        if let Some(kv) = self.kv {
            tokio::task::spawn_blocking(move || kv.flush())
                .await?
                .context("flushing the key-value store")?;
        }
        served?.context("HTTP server")?;
        Ok(())
    }
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
    outbox: &Outbox,
) -> anyhow::Result<Forwarders> {
    let (stop, stop_rx) = watch::channel(false);
    let mut forwarders = Vec::new();
    let mut connections = Vec::new();
    for (name, u) in &manifest.uplink {
        let target = match (&u.mqtt, &u.http) {
            (Some(url), _) => {
                let section = crate::manifest::MqttSection {
                    url: Some(url.clone()),
                    protocol: u.protocol,
                    output_mode: u.output_mode,
                    client_id: u.client_id.clone(),
                    username: u.username.clone(),
                    password: u.password.clone(),
                    ca_file: u.ca_file.clone(),
                    client_cert: u.client_cert.clone(),
                    client_key: u.client_key.clone(),
                    ..crate::manifest::MqttSection::default()
                };
                let mut settings = mqtt::Settings::from_section(&section, base)
                    .with_context(|| format!("uplink `{name}`"))?;
                // The node's own id, not the app's name: a fleet of nodes
                // running one app must not take over each other's connection.
                if u.client_id.is_none() {
                    settings.client_id = format!("{}-{name}", mqtt::node_client_id(data_dir)?);
                }
                let (publisher, stop, task) = mqtt::background_publisher(&settings, "");
                connections.push((stop, task));
                Target::Mqtt {
                    publisher,
                    topic: u
                        .topic
                        .clone()
                        .unwrap_or_else(|| "brink/outbox/{type}".to_owned()),
                }
            }
            (None, Some(url)) => {
                let tls = if url.starts_with("https://") {
                    let ca = u.ca_file.as_ref().map(|p| base.join(p));
                    tls::client_config(&tls::TlsFiles {
                        ca_file: ca.as_deref().map(|p| (p, "uplink.ca_file")),
                        ..tls::TlsFiles::default()
                    })?
                } else {
                    tls::no_roots()?
                };
                Target::Http {
                    client: reqwest::Client::builder()
                        .timeout(Duration::from_secs(30))
                        .tls_backend_preconfigured(Arc::unwrap_or_clone(tls))
                        .build()
                        .context("creating the uplink's HTTP client")?,
                    url: url.clone(),
                    token: u.token.clone(),
                    batched: u.batched,
                }
            }
            (None, None) => bail!("uplink `{name}` has neither mqtt nor http"),
        };
        forwarders.push(forward::spawn(
            outbox.clone(),
            name.clone(),
            target,
            u.forward_config(),
            stop_rx.clone(),
        )?);
    }
    Ok((forwarders, connections, stop))
}
