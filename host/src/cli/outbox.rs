//! `brink outbox`: a running node's queues over its admin API: status,
//! purge, and the parking queue of events an uplink refused for good.

use std::io::Write as _;

use anyhow::{Context as _, bail};
use clap::Subcommand;

use super::client::{Client, NodeFlags};
use crate::key_path;

#[derive(Debug, clap::Args)]
pub(crate) struct OutboxArgs {
    #[command(flatten)]
    node: NodeFlags,
    #[command(subcommand)]
    command: OutboxCommand,
}

#[derive(Debug, Subcommand)]
enum OutboxCommand {
    /// Each uplink's backlog, counters and parked events.
    Status {
        /// Print the JSON the API returns instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Drop everything queued for UPLINK, or with --parked what it parked
    /// (asks first, unless --yes).
    Purge {
        uplink: String,
        /// Drop the parked events instead of the queue.
        #[arg(long)]
        parked: bool,
        /// Only these parked events (their `seq`), with --parked.
        #[arg(long = "seq", requires = "parked")]
        seqs: Vec<u64>,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
    /// The events UPLINK refused for good: why and when.
    Parked {
        uplink: String,
        /// Print the JSON the API returns instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Move UPLINK's parked events (all, or --seq N...) back to its queue,
    /// at their old place, once the uplink can take them.
    Retry {
        uplink: String,
        #[arg(long = "seq")]
        seqs: Vec<u64>,
    },
}

pub(crate) fn run(args: OutboxArgs) -> anyhow::Result<()> {
    let runtime = super::runtime()?;
    runtime.block_on(command(args))
}

/// `{"seqs": [..]}`, or no body for all.
fn selection(seqs: &[u64]) -> Option<Vec<u8>> {
    (!seqs.is_empty()).then(|| serde_json::json!({ "seqs": seqs }).to_string().into_bytes())
}

async fn command(args: OutboxArgs) -> anyhow::Result<()> {
    let api = args.node.client()?;
    let get = async |path: &str| -> anyhow::Result<serde_json::Value> {
        let body = api.call(reqwest::Method::GET, path, None).await?;
        Ok(serde_json::from_slice(&body)?)
    };
    let mut stdout = std::io::stdout().lock();
    match args.command {
        OutboxCommand::Status { json: true } => {
            serde_json::to_writer_pretty(&mut stdout, &get("/v1/outbox").await?)?;
            writeln!(stdout)?;
        }
        OutboxCommand::Status { json: false } => {
            status_table(&mut stdout, &get("/v1/outbox").await?)?;
        }
        OutboxCommand::Parked { uplink, json } => {
            let list = get(&format!("/v1/outbox/{}/parked", key_path(&uplink))).await?;
            if json {
                serde_json::to_writer_pretty(&mut stdout, &list)?;
                writeln!(stdout)?;
            } else {
                parked_table(&mut stdout, &list)?;
            }
        }
        OutboxCommand::Retry { uplink, seqs } => {
            let path = format!("/v1/outbox/{}/parked/retry", key_path(&uplink));
            let body = api
                .call(reqwest::Method::POST, &path, selection(&seqs))
                .await?;
            let moved: serde_json::Value = serde_json::from_slice(&body)?;
            writeln!(
                stdout,
                "moved {} parked events back to `{uplink}`'s queue",
                moved["moved"]
            )?;
        }
        OutboxCommand::Purge {
            uplink,
            parked,
            seqs,
            yes,
        } => purge(&api, &mut stdout, &uplink, parked, &seqs, yes).await?,
    }
    stdout.flush()?;
    Ok(())
}

/// `brink outbox purge`: the queue, or with `parked` the parking queue.
async fn purge(
    api: &Client,
    stdout: &mut impl std::io::Write,
    uplink: &str,
    parked: bool,
    seqs: &[u64],
    yes: bool,
) -> anyhow::Result<()> {
    if !yes {
        let body = api.call(reqwest::Method::GET, "/v1/outbox", None).await?;
        let status: serde_json::Value = serde_json::from_slice(&body)?;
        let field = if parked {
            "parked_events"
        } else {
            "backlog_events"
        };
        let count = status["uplinks"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|u| u["uplink"] == uplink)
            .and_then(|u| u[field].as_u64())
            .with_context(|| format!("the node has no uplink `{uplink}`"))?;
        confirm(count, parked, uplink)?;
    }
    let (path, body) = if parked {
        (
            format!("/v1/outbox/{}/parked/purge", key_path(uplink)),
            selection(seqs),
        )
    } else {
        (format!("/v1/outbox/{}/purge", key_path(uplink)), None)
    };
    let body = api.call(reqwest::Method::POST, &path, body).await?;
    let purged: serde_json::Value = serde_json::from_slice(&body)?;
    let what = if parked { "parked " } else { "" };
    writeln!(
        stdout,
        "purged {} {what}events from `{uplink}`",
        purged["purged"]
    )?;
    Ok(())
}

/// Asks on the terminal; refuses when there is none (pass --yes).
fn confirm(count: u64, parked: bool, uplink: &str) -> anyhow::Result<()> {
    let what = if parked { "parked " } else { "" };
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        bail!("purging drops {count} {what}events for good: pass --yes to confirm");
    }
    let held = if parked { "parked" } else { "queued" };
    eprint!("Drop the {count} events {held} for `{uplink}` for good? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        bail!("not purged");
    }
    Ok(())
}

fn status_table(out: &mut impl std::io::Write, status: &serde_json::Value) -> anyhow::Result<()> {
    writeln!(
        out,
        "{:<16} {:>10} {:>12} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7}  connected",
        "uplink",
        "backlog",
        "bytes",
        "oldest",
        "sent",
        "retried",
        "dropped",
        "expired",
        "rejected",
        "parked"
    )?;
    for u in status["uplinks"].as_array().into_iter().flatten() {
        let n = |field: &str| u[field].as_u64().unwrap_or(0);
        let oldest = u["oldest_age_ms"].as_u64().map_or_else(
            || "-".to_owned(),
            |ms| format!("{:.1}s", ms as f64 / 1000.0),
        );
        writeln!(
            out,
            "{:<16} {:>10} {:>12} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7}  {}",
            u["uplink"].as_str().unwrap_or_default(),
            n("backlog_events"),
            n("backlog_bytes"),
            oldest,
            n("sent"),
            n("retried"),
            n("dropped"),
            n("expired"),
            n("rejected"),
            n("parked_events"),
            if u["connected"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            },
        )?;
    }
    Ok(())
}

fn parked_table(out: &mut impl std::io::Write, list: &serde_json::Value) -> anyhow::Result<()> {
    writeln!(
        out,
        "{:>20} {:<36} {:<28} {:>9} {:>20}  reason",
        "seq", "id", "type", "bytes", "parked at (ms)"
    )?;
    for p in list["parked"].as_array().into_iter().flatten() {
        let text = |field: &str| p[field].as_str().unwrap_or_default().to_owned();
        let cut = |s: String, n: usize| s.chars().take(n).collect::<String>();
        writeln!(
            out,
            "{:>20} {:<36} {:<28} {:>9} {:>20}  {}",
            p["seq"].as_u64().unwrap_or(0),
            cut(text("id"), 36),
            cut(text("type"), 28),
            p["bytes"].as_u64().unwrap_or(0),
            p["parked_ms"].as_u64().unwrap_or(0),
            text("reason"),
        )?;
    }
    Ok(())
}
