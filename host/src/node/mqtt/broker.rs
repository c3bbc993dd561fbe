//! The embedded broker: rumqttd in-process, so one `brink` binary is a whole
//! edge node.

use std::collections::HashMap;
use std::net::SocketAddr;

use anyhow::Context as _;
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

fn server(name: &str, listen: SocketAddr, max_payload: usize) -> ServerSettings {
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
        },
    }
}

/// Starts the broker: MQTT 3.1.1 on `v4`, MQTT 5 on `v5`.
///
/// rumqttd only logs a listener that fails to bind, so both addresses are
/// tried here first to fail with a clear message instead. The broker runs
/// on its own threads for the rest of the process: rumqttd has no stop.
pub fn start(v4: SocketAddr, v5: SocketAddr, max_payload: usize) -> anyhow::Result<()> {
    for (addr, what) in [(v4, "MQTT 3.1.1"), (v5, "MQTT 5")] {
        std::net::TcpListener::bind(addr).with_context(|| {
            format!("the embedded MQTT broker cannot listen for {what} on {addr}")
        })?;
    }
    let config = Config {
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
        v4: Some(HashMap::from([(
            "v4".to_owned(),
            server("brink-mqtt-v4", v4, max_payload),
        )])),
        v5: Some(HashMap::from([(
            "v5".to_owned(),
            server("brink-mqtt-v5", v5, max_payload),
        )])),
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    std::thread::Builder::new()
        .name("brink-mqtt-broker".to_owned())
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!("embedded MQTT broker stopped: {e}");
            }
        })
        .context("starting the embedded MQTT broker thread")?;
    tracing::info!(%v4, %v5, "embedded MQTT broker listening (3.1.1, 5)");
    Ok(())
}
