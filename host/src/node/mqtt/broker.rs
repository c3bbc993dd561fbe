//! The embedded broker: rumqttd in-process, so one `brink` binary is a whole
//! edge node.
//!
//! The node reaches it in-process through the router (`[mqtt] link`, ADR
//! 0003), or on listeners of its own (loopback, a free port), and the
//! devices' listeners open only once the node has subscribed
//! ([`EmbeddedBroker::open_to_devices`]): a broker drops a message that
//! matches no subscription, so a device that published while the node was
//! still starting got a PUBACK for a message nobody would ever handle.
//!
//! A device's QoS 1 PUBACK waits until the node's subscriber has
//! acknowledged the message, which it does only once the message is handled
//! (vendored rumqttd, patch 5): a PUBACK from the embedded broker means the
//! same as one from the node, and a crash loses nothing a device was told
//! was received (ADR 0003). Devices may not use the node's client ids, which
//! would take over its sessions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rumqttd::{AckHold, Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use tokio::sync::watch;

/// Who connects to a listener.
enum Side<'a> {
    /// The node's own clients.
    Node,
    /// Devices: the listener opens when `gate` says so, bumps `bound` once
    /// bound, and refuses client ids starting with `reserved`.
    Devices {
        gate: watch::Receiver<bool>,
        bound: Arc<AtomicUsize>,
        reserved: &'a str,
    },
}

fn server(name: &str, listen: SocketAddr, max_payload: usize, side: Side<'_>) -> ServerSettings {
    let (ack_hold, reserved_client_prefix, open_when, bound) = match side {
        Side::Node => (AckHold::Node, None, None, None),
        Side::Devices {
            gate,
            bound,
            reserved,
        } => (
            AckHold::Device,
            Some(reserved.to_owned()),
            Some(gate),
            Some(bound),
        ),
    };
    ServerSettings {
        name: name.to_owned(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 5000,
            max_payload_size: max_payload,
            max_inflight_count: 256,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
            ack_hold,
            reserved_client_prefix,
        },
        open_when,
        bound,
    }
}

/// The running broker: where the node connects, and the devices' listeners
/// waiting to open.
#[derive(Debug)]
pub struct EmbeddedBroker {
    /// The node's own listeners, MQTT 3.1.1 and MQTT 5; none when the node
    /// uses the in-process link.
    pub internal: Option<(SocketAddr, SocketAddr)>,
    /// Opens in-process links to the broker's router.
    pub links: rumqttd::local::LocalLinks,
    devices: [SocketAddr; 2],
    open: watch::Sender<bool>,
    /// How many of the devices' listeners are bound.
    bound: Arc<AtomicUsize>,
}

impl EmbeddedBroker {
    /// Opens the devices' listeners and returns once they accept
    /// connections (or after 5 s, with what the last attempt said).
    pub async fn open_to_devices(&self) -> anyhow::Result<()> {
        let _ = self.open.send(true);
        let started = Instant::now();
        // rumqttd counts its listeners up as they bind: no probe connection,
        // which it would log as a failed connect.
        while self.bound.load(Ordering::Acquire) < self.devices.len() {
            if started.elapsed() > Duration::from_secs(5) {
                anyhow::bail!(
                    "the embedded MQTT broker did not open {} and {} to devices within 5 s",
                    self.devices[0],
                    self.devices[1]
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tracing::info!(v4 = %self.devices[0], v5 = %self.devices[1], "embedded MQTT broker open to devices (3.1.1, 5)");
        Ok(())
    }
}

/// The broker's settings around its MQTT 3.1.1 and MQTT 5 listeners.
fn config(v4: HashMap<String, ServerSettings>, v5: HashMap<String, ServerSettings>) -> Config {
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: 10_000,
            max_outgoing_packet_count: 256,
            // Per topic filter, the log the router keeps for slow subscribers.
            max_segment_size: 4 << 20,
            max_segment_count: 8,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(v4),
        v5: Some(v5),
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    }
}

/// A free loopback address for one of the node's own listeners.
fn internal_addr() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .context("the embedded MQTT broker found no free loopback port")?;
    Ok(listener.local_addr()?)
}

/// Serves the broker's listeners. On the runtime of the caller, the node's,
/// when there is one (vendored patch 11): a connection's packets then move
/// between tasks that share the node's threads, where a thread and a
/// runtime per listener made two more busy threads on a two-core node and a
/// wake-up across threads for every batch of packets (BENCHMARKS.md, "The
/// broker's listeners on the node's runtime"). Outside a runtime, on a
/// thread of their own.
fn serve(mut broker: Broker) -> anyhow::Result<()> {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        return broker
            .serve_on(&runtime)
            .context("serving the embedded MQTT broker's listeners");
    }
    std::thread::Builder::new()
        .name("brink-mqtt-broker".to_owned())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!("embedded MQTT broker stopped: {e}");
            }
        })
        .context("starting the embedded MQTT broker thread")?;
    Ok(())
}

/// Starts the broker: the node's listeners at once when `node_over_tcp`,
/// the devices' MQTT 3.1.1 on `v4` and MQTT 5 on `v5` once
/// [`EmbeddedBroker::open_to_devices`].
///
/// rumqttd only logs a listener that fails to bind, so the devices'
/// addresses are tried here first to fail with a clear message instead.
/// rumqttd has no stop: the router's thread runs for the rest of the
/// process, and the listeners for as long as the runtime that serves them.
pub fn start(
    v4: SocketAddr,
    v5: SocketAddr,
    max_payload: usize,
    node_client_id: &str,
    node_over_tcp: bool,
) -> anyhow::Result<EmbeddedBroker> {
    for (addr, what) in [(v4, "MQTT 3.1.1"), (v5, "MQTT 5")] {
        std::net::TcpListener::bind(addr).with_context(|| {
            format!("the embedded MQTT broker cannot listen for {what} on {addr}")
        })?;
    }
    let internal = if node_over_tcp {
        Some((internal_addr()?, internal_addr()?))
    } else {
        None
    };
    let (open, gate) = watch::channel(false);
    let bound = Arc::new(AtomicUsize::new(0));
    let listeners = |internal: Option<SocketAddr>, device: SocketAddr, version: &str| {
        let mut servers = HashMap::from([(
            "devices".to_owned(),
            server(
                &format!("brink-mqtt-{version}"),
                device,
                max_payload,
                Side::Devices {
                    gate: gate.clone(),
                    bound: bound.clone(),
                    reserved: node_client_id,
                },
            ),
        )]);
        if let Some(internal) = internal {
            let name = format!("brink-mqtt-{version}-node");
            servers.insert(
                "node".to_owned(),
                server(&name, internal, max_payload, Side::Node),
            );
        }
        servers
    };
    let config = config(
        listeners(internal.map(|i| i.0), v4, "v4"),
        listeners(internal.map(|i| i.1), v5, "v5"),
    );
    // The router starts here, on a thread of its own.
    let broker = Broker::new(config);
    let links = broker.local_links();
    serve(broker)?;
    match internal {
        Some((v4, v5)) => {
            tracing::info!(internal_v4 = %v4, internal_v5 = %v5, "embedded MQTT broker started; devices wait until the node has subscribed")
        }
        None => tracing::info!(
            "embedded MQTT broker started, linked in-process; devices wait until the node has subscribed"
        ),
    }
    Ok(EmbeddedBroker {
        internal,
        links,
        devices: [v4, v5],
        open,
        bound,
    })
}
