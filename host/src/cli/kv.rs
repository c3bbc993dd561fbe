//! `brink kv`: a running node's key-value state over its admin API.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Subcommand;

use super::client::{Client, NodeFlags};
use crate::key_path;

#[derive(Debug, clap::Args)]
pub(crate) struct KvArgs {
    #[command(flatten)]
    node: NodeFlags,
    #[command(subcommand)]
    command: KvCommand,
}

#[derive(Debug, Subcommand)]
enum KvCommand {
    /// List the app's buckets, or the keys of BUCKET (one per line).
    Ls {
        bucket: Option<String>,
        /// Only keys starting with this.
        #[arg(long, requires = "bucket")]
        prefix: Option<String>,
        /// Print a JSON array instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Write the value of KEY in BUCKET to stdout, as stored.
    Get { bucket: String, key: String },
    /// Set KEY in BUCKET to VALUE, or to the content of --file (`-`: stdin).
    Set {
        bucket: String,
        key: String,
        #[arg(required_unless_present = "file")]
        value: Option<String>,
        #[arg(long, conflicts_with = "value")]
        file: Option<PathBuf>,
        /// Expire the key after this many milliseconds.
        #[arg(long)]
        ttl_ms: Option<u64>,
    },
    /// Remove KEY from BUCKET.
    Del { bucket: String, key: String },
}

pub(crate) fn run(args: KvArgs) -> anyhow::Result<()> {
    let runtime = super::runtime()?;
    runtime.block_on(command(args))
}

async fn command(args: KvArgs) -> anyhow::Result<()> {
    let api = args.node.client()?;
    let base = "/v1/kv".to_owned();
    let get = |path: String| {
        let api = &api;
        async move { api.call(reqwest::Method::GET, &path, None).await }
    };
    let mut stdout = std::io::stdout().lock();
    match args.command {
        KvCommand::Ls {
            bucket: None, json, ..
        } => {
            let body = get(base.clone()).await?;
            let listed: serde_json::Value = serde_json::from_slice(&body)?;
            let buckets = listed.get("buckets").cloned().unwrap_or_default();
            print_names(&mut stdout, &buckets, json)?;
        }
        KvCommand::Ls {
            bucket: Some(bucket),
            prefix,
            json,
        } => {
            let keys = list_keys(&api, &bucket, prefix.as_deref()).await?;
            print_names(&mut stdout, &serde_json::Value::Array(keys), json)?;
        }
        KvCommand::Get { bucket, key } => {
            let url = format!("{base}/{}/{}", key_path(&bucket), key_path(&key));
            let body = get(url).await?;
            stdout.write_all(&body)?;
        }
        KvCommand::Set {
            bucket,
            key,
            value,
            file,
            ttl_ms,
        } => {
            let body = value_of(value, file)?;
            let mut url = format!("{base}/{}/{}", key_path(&bucket), key_path(&key));
            if let Some(ttl) = ttl_ms {
                url.push_str(&format!("?ttl_ms={ttl}"));
            }
            api.call(reqwest::Method::PUT, &url, Some(body)).await?;
        }
        KvCommand::Del { bucket, key } => {
            let url = format!("{base}/{}/{}", key_path(&bucket), key_path(&key));
            api.call(reqwest::Method::DELETE, &url, None).await?;
        }
    }
    stdout.flush()?;
    Ok(())
}

/// Every key of `bucket` starting with `prefix`, page by page.
async fn list_keys(
    api: &Client,
    bucket: &str,
    prefix: Option<&str>,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.append_pair("prefix", prefix.unwrap_or_default());
        if let Some(c) = &cursor {
            query.append_pair("cursor", c);
        }
        let url = format!("/v1/kv/{}?{}", key_path(bucket), query.finish());
        let body = api.call(reqwest::Method::GET, &url, None).await?;
        let page: serde_json::Value = serde_json::from_slice(&body)?;
        if let Some(page_keys) = page.get("keys").and_then(|k| k.as_array()) {
            keys.extend(page_keys.iter().cloned());
        }
        cursor = page
            .get("cursor")
            .and_then(|c| c.as_str())
            .map(str::to_owned);
        if cursor.is_none() {
            return Ok(keys);
        }
    }
}

/// The value to set: VALUE, or the content of --file (`-`: stdin).
fn value_of(value: Option<String>, file: Option<PathBuf>) -> anyhow::Result<Vec<u8>> {
    match (value, file) {
        (Some(value), _) => Ok(value.into_bytes()),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading the value from standard input")?;
            Ok(buf)
        }
        (None, Some(path)) => {
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
        }
        (None, None) => bail!("give a value or --file"),
    }
}

fn print_names(
    out: &mut impl std::io::Write,
    names: &serde_json::Value,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, names)?;
        out.write_all(b"\n")?;
        return Ok(());
    }
    for name in names.as_array().into_iter().flatten() {
        if let Some(name) = name.as_str() {
            writeln!(out, "{name}")?;
        }
    }
    Ok(())
}
