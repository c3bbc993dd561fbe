//! `brink up`: an edge node that runs a manifest's functions on the events
//! its triggers receive.

pub mod api;
mod canary;
pub mod deploy;
pub mod dispatch;
pub mod facts;
pub mod http;
pub mod metrics;
pub mod mqtt;
mod output;
pub mod problem;
mod serve;
mod start;
pub mod tls;
pub mod tools;
mod traced;
pub mod uplink;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::builder::{self, BuildRequest};
use crate::kv::Kv;
use crate::outbox::Outbox;
use dispatch::Dispatcher;
use output::NodeSink;

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
    /// The audit ledger, where the node keeps a data directory.
    audit: Option<crate::audit::Audit>,
    /// Spans over OTLP (`[telemetry]`), sent on before the node stops.
    tracer: Option<crate::telemetry::Tracer>,
}

/// Where key-value state lives when neither the manifest nor `--data-dir` says.
pub fn default_data_dir() -> PathBuf {
    dirs::data_local_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("brink")
        .join("data")
}

impl Node {
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
    /// `brink up --retire`: the node started with `[mqtt] retire`, so it
    /// resumed its session and unsubscribed. Waits until it has received
    /// nothing for `quiet` and handles nothing, stops (acknowledging what
    /// it handled), then ends its broker session, so the broker queues
    /// nothing more for a node that will not come back. Returns how many
    /// messages it received.
    pub async fn retire(self, quiet: std::time::Duration) -> anyhow::Result<u64> {
        let (Some(mqtt), Some(settings)) = (&self.mqtt, self.mqtt_settings.clone()) else {
            anyhow::bail!("this node has no MQTT subscriber, so no broker session to retire");
        };
        let step = std::time::Duration::from_millis(100);
        let mut last = mqtt.activity().0;
        let mut still = std::time::Duration::ZERO;
        while still < quiet {
            tokio::time::sleep(step).await;
            let (received, idle) = mqtt.activity();
            if received == last && idle {
                still += step;
            } else {
                (last, still) = (received, std::time::Duration::ZERO);
            }
        }
        self.shutdown().await?;
        mqtt::end_session(&settings)
            .await
            .context("ending the broker session")?;
        Ok(last)
    }

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
        if let Some(audit) = self.audit {
            let refused = audit.take_unrecorded_refusals();
            let detail = match refused {
                0 => String::new(),
                n => format!("{n} refused sign-ins since the last one recorded"),
            };
            audit
                .record_async(crate::audit::Entry::node("node.stop", "node", detail))
                .await;
        }
        if let Some(tracer) = self.tracer {
            tracer.flush(Duration::from_secs(5)).await;
        }
        served?.context("HTTP server")?;
        Ok(())
    }
}
