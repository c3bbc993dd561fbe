//! `brink logs`: a function's recent log records, and a live tail over server-sent events.

use anyhow::Context as _;
use serde_json::Value;

use std::io::Write as _;
use std::time::Duration;

use super::client::Remote;

/// `brink logs`: a function's recent log records; with `follow`, then every
/// new one as it comes, reconnecting (without repeats) when the connection drops.
pub async fn logs(remote: &Remote, name: &str, follow: bool) -> anyhow::Result<()> {
    let api = remote.client()?;
    let path = format!("/v1/functions/{name}/logs");
    if !follow {
        let answer = api.call_json(reqwest::Method::GET, &path, None).await?;
        for record in answer["records"].as_array().into_iter().flatten() {
            print_log_record(remote.json, record)?;
        }
        return Ok(());
    }
    let mut last_seen: Option<String> = None;
    let mut retry = Duration::from_millis(500);
    loop {
        let mut request = api
            .request(reqwest::Method::GET, &format!("{path}?follow=true"))
            .header(reqwest::header::ACCEPT, "text/event-stream")
            // A tail runs until stopped; the client's default timeout would end it.
            .timeout(Duration::from_secs(365 * 24 * 3600));
        if let Some(seq) = &last_seen {
            request = request.header("last-event-id", seq);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) if last_seen.is_some() => {
                eprintln!("brink logs: {e}; reconnecting in {retry:?}");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(5));
                continue;
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot reach the admin API at {}", api.url()));
            }
        };
        if !response.status().is_success() {
            super::client::answer(response).await?;
            return Ok(());
        }
        retry = Duration::from_millis(500);
        let mut events = SseReader::default();
        let mut body = response;
        loop {
            let chunk = match body.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    eprintln!("brink logs: {e}; reconnecting");
                    break;
                }
            };
            for event in events.feed(&chunk) {
                match event.kind.as_str() {
                    "log" => {
                        let record: Value = serde_json::from_str(&event.data)
                            .context("the node sent a log record that is not JSON")?;
                        print_log_record(remote.json, &record)?;
                        if let Some(id) = event.id {
                            last_seen = Some(id);
                        }
                    }
                    "lagged" => {
                        eprintln!("brink logs: fell behind, records skipped: {}", event.data)
                    }
                    _ => {}
                }
            }
        }
        // The stream ended: the node stopped or the function was removed;
        // the next request says which.
        if last_seen.is_none() {
            last_seen = Some("0".to_owned());
        }
        tokio::time::sleep(retry).await;
    }
}

fn print_log_record(as_json: bool, record: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if as_json {
        writeln!(out, "{record}")?;
    } else {
        let time = record["time_unix_ms"]
            .as_i64()
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            .unwrap_or_default();
        writeln!(
            out,
            "{time} {:<5} {:<6} {} {}",
            record["level"].as_str().unwrap_or("?").to_uppercase(),
            record["source"].as_str().unwrap_or("?"),
            record["event_id"].as_str().unwrap_or("-"),
            record["message"].as_str().unwrap_or_default()
        )?;
    }
    out.flush()?;
    Ok(())
}

/// One server-sent event.
#[derive(Debug, Default)]
struct SseEvent {
    kind: String,
    id: Option<String>,
    data: String,
}

/// Splits a server-sent event stream into events, across chunk boundaries.
#[derive(Debug, Default)]
struct SseReader {
    line: Vec<u8>,
    event: SseEvent,
}

impl SseReader {
    fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut done = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            let line = String::from_utf8_lossy(&self.line)
                .trim_end_matches('\r')
                .to_owned();
            self.line.clear();
            if line.is_empty() {
                let event = std::mem::take(&mut self.event);
                if !event.data.is_empty() || !event.kind.is_empty() {
                    done.push(event);
                }
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.event.kind = value.to_owned(),
                "id" => self.event.id = Some(value.to_owned()),
                "data" => {
                    if !self.event.data.is_empty() {
                        self.event.data.push('\n');
                    }
                    self.event.data.push_str(value);
                }
                _ => {}
            }
        }
        done
    }
}
