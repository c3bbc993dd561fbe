//! MQTT helpers for people at a terminal: `brink publish`, and `brink up`'s
//! `--tail` (print what arrives on a topic) and `--simulate` (temperature
//! sensors publishing plain JSON, as real devices do).

use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::mqtt::client::{self, ConnectOptions, Polled};
use super::mqtt::{Settings, client::Client};
use crate::event::mqtt::Outgoing;

fn options(settings: &Settings, role: &str) -> ConnectOptions {
    ConnectOptions {
        host: settings.host.clone(),
        port: settings.port,
        v5: settings.v5,
        client_id: format!("{}-{role}", settings.client_id),
        credentials: settings.credentials.clone(),
        persistent: false,
        manual_acks: false,
        max_packet: 1 << 20,
        tls: settings.tls.clone(),
        // `--tail` and `--simulate` run inside `brink up`: where the node is
        // linked in-process, so are they (its devices' listeners refuse
        // client ids with the node's prefix). `brink publish` has none.
        local: settings.local.clone(),
    }
}

/// One line for a message: topic, CloudEvent type and subject when known, data.
pub fn describe(received: &client::Received) -> String {
    let prop = |name: &str| {
        received
            .user_properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let text = String::from_utf8_lossy(&received.payload).into_owned();
    let structured = serde_json::from_slice::<serde_json::Value>(&received.payload)
        .ok()
        .filter(|v| v.get("specversion").is_some());
    let (ty, subject, data) = match structured {
        Some(event) => (
            event["type"].as_str().map(str::to_owned),
            event["subject"].as_str().map(str::to_owned),
            event.get("data").map(|d| d.to_string()).unwrap_or_default(),
        ),
        None => (prop("type"), prop("subject"), text),
    };
    let mut line = received.topic.clone();
    if let Some(ty) = ty {
        line.push_str(&format!("  type={ty}"));
    }
    if let Some(subject) = subject {
        line.push_str(&format!("  subject={subject}"));
    }
    line.push_str("  ");
    line.push_str(&data);
    line
}

/// Prints every message on `filters` to standard output until the task is dropped.
pub async fn tail(settings: Settings, filters: Vec<String>) {
    let (client, mut eventloop) = client::connect(&options(&settings, "tail"));
    loop {
        match eventloop.poll().await {
            Ok(Polled::Connected { .. }) => {
                if let Err(e) = client.subscribe(&filters).await {
                    tracing::warn!("tail: subscribing: {e:#}");
                }
            }
            Ok(Polled::Message(received)) => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}", describe(&received));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!("tail: {e:#}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Publishes `payload` to `topic` with QoS 1 and returns once the broker acknowledged it.
pub async fn publish_once(
    settings: &Settings,
    topic: &str,
    payload: Vec<u8>,
    content_type: Option<String>,
) -> anyhow::Result<()> {
    if topic.is_empty() || topic.contains(['+', '#']) {
        bail!("cannot publish to {topic:?}: a topic is non-empty and has no wildcards");
    }
    let (client, mut eventloop) = client::connect(&options(settings, "publish"));
    let message = Outgoing {
        payload,
        content_type,
        user_properties: Vec::new(),
    };
    client.publish(topic, message).await?;
    let acked = async {
        loop {
            match eventloop.poll().await? {
                Polled::PubAck { refused: None, .. } => return Ok(()),
                Polled::PubAck {
                    refused: Some(why), ..
                } => bail!("{}", why.reason),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), acked)
        .await
        .with_context(|| {
            format!(
                "no PUBACK from {}:{} within 10 s",
                settings.host, settings.port
            )
        })?
        .with_context(|| format!("publishing to {}:{}", settings.host, settings.port))?;
    let _ = client.disconnect().await;
    Ok(())
}

/// Simulated temperature sensors: every `interval`, each device publishes
/// `{"device": "t-N", "value": <°C>}` to `sensors/t-N/temperature`; values
/// drift, and now and then run hot, so a threshold filter has work to do.
pub async fn simulate(settings: Settings, interval: Duration) {
    let (client, mut eventloop) = client::connect(&options(&settings, "sensors"));
    tokio::spawn(async move {
        loop {
            if let Err(e) = eventloop.poll().await {
                tracing::debug!("simulated sensors: {e:#}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    });
    let mut values = [24.0f64, 27.5, 29.0];
    let mut tick: u64 = 0;
    loop {
        tokio::time::sleep(interval).await;
        tick += 1;
        for (i, value) in values.iter_mut().enumerate() {
            // A deterministic wobble plus a heat spike every so often.
            let wobble = ((tick as f64) * 0.7 + i as f64 * 2.1).sin() * 1.5;
            let spike = if (tick + i as u64 * 3).is_multiple_of(9) {
                6.0
            } else {
                0.0
            };
            let reading = ((*value + wobble + spike) * 10.0).round() / 10.0;
            *value = (*value + wobble * 0.1).clamp(18.0, 32.0);
            let device = format!("t-{}", i + 1);
            let payload = serde_json::json!({ "device": device, "value": reading });
            let topic = format!("sensors/{device}/temperature");
            if let Err(e) = publish_with(&client, &topic, payload.to_string()).await {
                tracing::warn!("simulated sensor {device}: {e:#}");
            }
        }
    }
}

async fn publish_with(client: &Client, topic: &str, payload: String) -> anyhow::Result<()> {
    client
        .publish(
            topic,
            Outgoing {
                payload: payload.into_bytes(),
                content_type: None,
                user_properties: Vec::new(),
            },
        )
        .await
}
