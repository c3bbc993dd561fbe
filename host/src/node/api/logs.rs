//! `GET /v1/functions/{name}/logs`: a function's recent log records, and a live tail.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;

use super::{Answer, json, tenant_of};
use crate::capability::log::LogRecord;
use crate::node::deploy::Deployer;
use crate::node::problem::Problem;
use crate::tenancy::names::route_name;
use axum::response::sse::{Event, KeepAlive, Sse};

/// `GET /v1/functions/{name}/logs`: the recent records as JSON; with
/// `?follow=true` (or `Accept: text/event-stream`) a server-sent event
/// stream of them and then of every new one, resumable with `Last-Event-ID`.
pub(super) async fn logs(
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
    let follow = match super::state::query_param(query.as_deref(), "follow").as_deref() {
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
    let mut stop = deployer.node().shutdown.clone();
    let stream = futures_util::stream::iter(backlog)
        .chain(live)
        .take_until(async move {
            let _ = stop.wait_for(|stop| *stop).await;
        });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
