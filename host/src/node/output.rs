//! Outputs that leave the node: MQTT topics through the publisher,
//! webhooks over HTTP in binary mode, and uplinks through the outbox. The
//! dispatcher hands every output here; triggers never publish.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::dispatch::Sink;
use super::mqtt;
use crate::bindings::CloudEvent;
use crate::event::ExtTypes;
use crate::outbox::{Outbox, OutboxError};

/// Delivers outputs that leave the node: webhooks over HTTP in binary mode,
/// MQTT topics through the publisher.
#[derive(Debug, Clone)]
pub(super) struct NodeSink {
    pub(super) client: reqwest::Client,
    pub(super) mqtt: Option<mqtt::Publisher>,
    pub(super) outbox: Option<Outbox>,
    /// Priority and TTL of outputs routed to each uplink.
    pub(super) uplink_options: BTreeMap<String, (u8, Option<Duration>)>,
}

impl Sink for NodeSink {
    fn uplink<'a>(
        &'a self,
        owner: Option<&'a str>,
        uplink: &'a str,
        event: &'a CloudEvent,
        types: &'a ExtTypes,
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
            match outbox
                .send_typed(owner, uplink, (event, types), priority, ttl)
                .await
            {
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
        types: &'a ExtTypes,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>> {
        Box::pin(async move {
            // A template the event cannot fill never will.
            let topic = crate::manifest::topic::render(template, event)
                .map_err(|e| crate::delivery::refused(format!("{e:#}")))?;
            match &self.mqtt {
                Some(publisher) => publisher.publish(&topic, event, types).await,
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
