//! `brink audit`: read a node's audit ledger over its admin API, and check
//! a ledger file for tampering.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use brink_host::audit::{self, chain};
use brink_registry::PublicKey;
use clap::Subcommand;

use super::client::{Client, NodeFlags};

#[derive(Debug, clap::Args)]
pub(crate) struct AuditArgs {
    #[command(flatten)]
    node: NodeFlags,
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// The ledger's records: all of them for the operator, a tenant's own
    /// for a tenant's token.
    Ls {
        /// Only records after this one.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Keep printing new records as they are written.
        #[arg(short, long)]
        follow: bool,
        /// One JSON object per record instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check the ledger file for records edited, deleted, reordered or cut
    /// off, and name the first broken link; exits 1 when there is one.
    ///
    /// Reads the files directly, so it works with the node stopped. Give
    /// `--key` (the node's public key, as `brink audit ls` or the node's
    /// first start printed it) to check a copy against a key kept
    /// elsewhere; else the key in the data directory is trusted.
    Verify {
        /// The node's data directory [default: BRINK_DATA_DIR, else the user's data dir, brink/data].
        #[arg(long, env = "BRINK_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// The node's public key, `ed25519:<base64>`.
        #[arg(long)]
        key: Option<String>,
    },
}

pub(crate) fn run(args: AuditArgs) -> anyhow::Result<()> {
    match args.command {
        AuditCommand::Verify { data_dir, key } => verify(data_dir, key.as_deref()),
        AuditCommand::Ls {
            after,
            follow,
            json,
        } => {
            let api = args.node.client()?;
            super::runtime()?.block_on(list(&api, after, follow, json))
        }
    }
}

fn verify(data_dir: Option<PathBuf>, key: Option<&str>) -> anyhow::Result<()> {
    let dir = data_dir.unwrap_or_else(brink_host::node::default_data_dir);
    let path = audit::ledger_path(&dir);
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "reading the ledger {}: is --data-dir the node's data directory?",
            path.display()
        )
    })?;
    let key = match key {
        Some(text) => PublicKey::parse(text)?,
        None => {
            let path = audit::key_path(&dir);
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!("reading the node's key {}; or give --key", path.display())
            })?;
            brink_registry::SecretKey::parse(&text)
                .with_context(|| format!("reading the node's key {}", path.display()))?
                .public()
        }
    };
    let head = audit::read_head(&dir);
    let report = match &head {
        Ok(head) => chain::verify(&bytes, head.as_ref(), &key),
        Err(e) => bail!("the ledger is broken: the head file is unreadable: {e:#}"),
    };
    if let Some(found) = report.first_break {
        bail!(
            "the ledger is broken: {found} ({} records read, {})",
            report.records,
            path.display()
        );
    }
    println!(
        "ok: {} records, each linked to the one before and signed by {key}; the signed head names record {}",
        report.records,
        report.head.unwrap_or(0)
    );
    Ok(())
}

async fn list(api: &Client, mut after: u64, follow: bool, json: bool) -> anyhow::Result<()> {
    loop {
        let page = api
            .call_json(
                reqwest::Method::GET,
                &format!("/v1/audit?after={after}"),
                None,
            )
            .await?;
        let records = page["records"].as_array().cloned().unwrap_or_default();
        let mut out = std::io::stdout().lock();
        for record in &records {
            if json {
                writeln!(out, "{record}")?;
            } else {
                writeln!(out, "{}", line(record))?;
            }
            after = after.max(record["seq"].as_u64().unwrap_or(after));
        }
        out.flush()?;
        drop(out);
        if records.is_empty() && !follow {
            return Ok(());
        }
        if records.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

fn line(record: &serde_json::Value) -> String {
    let field = |name: &str| record[name].as_str().unwrap_or("").to_owned();
    let mut text = format!(
        "{:>5} {} {:<16} {:<18} {:<28} {}",
        record["seq"].as_u64().unwrap_or(0),
        field("time"),
        field("principal"),
        field("action"),
        field("target"),
        field("outcome"),
    );
    let detail = field("detail");
    if !detail.is_empty() {
        text.push_str("  ");
        text.push_str(&detail);
    }
    text
}
