//! `brink up`: an edge node that runs a manifest's functions on the events
//! its triggers receive.

pub mod dispatch;
pub mod http;
pub mod metrics;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::bindings::CloudEvent;
use crate::builder::{self, BuildRequest};
use crate::engine::Engine;
use crate::manifest::{Manifest, Output, Trigger};
use dispatch::{DEFAULT_CONCURRENCY, Dispatcher, Route, Sink};
use metrics::Metrics;

/// Delivers webhook outputs over HTTP in binary mode.
#[derive(Debug, Clone)]
struct HttpSink {
    client: reqwest::Client,
}

impl Sink for HttpSink {
    fn webhook<'a>(
        &'a self,
        url: &'a str,
        event: &'a CloudEvent,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>> {
        Box::pin(async move {
            let (headers, body) = crate::event::http::encode_binary(event)?;
            let response = self
                .client
                .post(url)
                .headers(headers)
                .body(body)
                .send()
                .await
                .context("sending")?;
            let status = response.status();
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
}

impl Node {
    /// Loads every function of `manifest` (paths relative to `base`), then
    /// starts the triggers. Fails before serving anything if a function does
    /// not load.
    pub async fn start(manifest: Manifest, base: &Path, engine: &Engine) -> anyhow::Result<Self> {
        let mut routes = Vec::new();
        for (name, section) in &manifest.function {
            if let Some(Trigger::Mqtt(filter)) = section
                .triggers
                .iter()
                .find(|t| matches!(t, Trigger::Mqtt(_)))
            {
                bail!(
                    "function `{name}`: MQTT triggers ({filter:?}) are not served by this build yet"
                );
            }
            for output in &section.outputs {
                match output {
                    Output::Mqtt(topic) => {
                        bail!(
                            "function `{name}`: MQTT outputs ({topic:?}) are not served by this build yet"
                        )
                    }
                    Output::Webhook(url) if url.starts_with("https://") => {
                        bail!(
                            "function `{name}`: webhook {url:?} needs TLS, which this build does not include; use http://"
                        )
                    }
                    _ => {}
                }
            }
            let base = base.to_owned();
            let source = section.source.clone();
            let path = tokio::task::spawn_blocking(move || component_path(&base, &source))
                .await?
                .with_context(|| format!("function `{name}`"))?;
            let function = engine
                .load_file(section.spec(name), &path)
                .with_context(|| format!("function `{name}`"))?;
            routes.push(Route {
                function,
                triggers: section.triggers.clone(),
                outputs: section.outputs.clone(),
                concurrency: section.limits.concurrency.unwrap_or(DEFAULT_CONCURRENCY),
            });
        }
        let sink = HttpSink {
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .context("creating the webhook client")?,
        };
        let dispatcher = Dispatcher::new(routes, Arc::new(Metrics::default()), Arc::new(sink));

        let listener = tokio::net::TcpListener::bind(manifest.http.listen)
            .await
            .with_context(|| format!("binding HTTP on {}", manifest.http.listen))?;
        let http_addr = listener.local_addr()?;
        let app = http::router(
            dispatcher.clone(),
            manifest.http.max_body_kb.saturating_mul(1024),
        );
        let (shutdown, mut stop) = watch::channel(false);
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                })
                .await
        });
        tracing::info!(%http_addr, functions = manifest.function.len(), "brink node ready");
        Ok(Self {
            http_addr,
            dispatcher,
            shutdown,
            server,
        })
    }

    /// Where the HTTP trigger listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The node's routing table.
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// Stops accepting, lets in-flight requests finish, then returns.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.server.await?.context("HTTP server")?;
        Ok(())
    }
}
