//! `brink deploy|ls|rm|activate|rollback|invoke|usage`: a tenant's functions on a running node.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use std::io::Write as _;

use super::client::Remote;
use super::keys::{read_key, read_signatures};

/// `brink deploy`'s arguments.
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// A component (`.wasm`), or a function crate to build first.
    pub source: PathBuf,
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub version: String,
    /// `http:/t/<tenant>/path`, `mqtt:t/<tenant>/sensors/+` or
    /// `event_type:com.example.*` (repeatable).
    #[arg(long = "trigger")]
    pub triggers: Vec<String>,
    /// `function:<name>`, `uplink:<name>`, `mqtt:t/<tenant>/topic` or `webhook:<url>` (repeatable).
    #[arg(long = "output")]
    pub outputs: Vec<String>,
    /// `kv:<bucket>`, `model:<name>` or `outbox:<uplink>` (repeatable).
    #[arg(long = "grant")]
    pub grants: Vec<String>,
    /// `key=value`, read by the function with `config.get` (repeatable).
    #[arg(long = "config")]
    pub config: Vec<String>,
    #[arg(long)]
    pub memory_mb: Option<u64>,
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// Sign with this key (`brink keygen`) before deploying; signatures in
    /// `<component>.sigs.json` (`brink sign`) are sent too.
    #[arg(long)]
    pub sign_with: Option<PathBuf>,
    /// Store and compile it, but leave the active version running.
    #[arg(long)]
    pub no_activate: bool,
    /// Deploy to many nodes: the version is staged on every node first,
    /// then activated only on those where the upload and the node's checks
    /// passed.
    #[command(flatten)]
    pub fleet: super::fleet::FleetFlags,
    #[command(flatten)]
    pub remote: Remote,
}

fn pair<'a>(text: &'a str, what: &str, kinds: &str) -> anyhow::Result<(&'a str, &'a str)> {
    text.split_once(':')
        .with_context(|| format!("{what} {text:?}: expected <kind>:<value>, kind one of {kinds}"))
}

/// The spec `brink deploy`'s flags describe.
pub(super) fn spec_of(args: &DeployArgs) -> anyhow::Result<Value> {
    let mut triggers = Vec::new();
    for t in &args.triggers {
        let (kind, value) = pair(t, "--trigger", "http, event_type, mqtt")?;
        match kind {
            "http" | "event_type" | "mqtt" => triggers.push(json!({ kind: value })),
            _ => bail!("--trigger {t:?}: kind must be http, event_type or mqtt"),
        }
    }
    let mut outputs = Vec::new();
    for o in &args.outputs {
        let (kind, value) = pair(o, "--output", "function, uplink, mqtt, webhook")?;
        match kind {
            "function" | "uplink" | "mqtt" | "webhook" => outputs.push(json!({ kind: value })),
            _ => bail!("--output {o:?}: kind must be function, uplink, mqtt or webhook"),
        }
    }
    let (mut kv, mut models, mut outbox) = (Vec::new(), Vec::new(), Vec::new());
    for g in &args.grants {
        let (kind, value) = pair(g, "--grant", "kv, model, outbox")?;
        match kind {
            "kv" => kv.push(value),
            "model" => models.push(value),
            "outbox" => outbox.push(value),
            _ => bail!("--grant {g:?}: kind must be kv, model or outbox"),
        }
    }
    let mut config = serde_json::Map::new();
    for c in &args.config {
        let (k, v) = c
            .split_once('=')
            .with_context(|| format!("--config {c:?}: expected key=value"))?;
        config.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    Ok(json!({
        "triggers": triggers,
        "outputs": outputs,
        "kv": kv,
        "models": models,
        "outbox": outbox,
        "config": config,
        "limits": {
            "memory_mb": args.memory_mb,
            "timeout_ms": args.timeout_ms,
            "concurrency": args.concurrency,
        },
    }))
}

/// A version ready to send: its bytes, digest and signatures.
pub(super) struct Prepared {
    pub bytes: Vec<u8>,
    pub digest: String,
    pub version: String,
    pub signatures: Vec<brink_registry::Signature>,
}

/// Reads `component`, and signs it with `--sign-with` beside the
/// signatures `brink sign` left next to it.
pub(super) fn prepare(args: &DeployArgs, component: &Path) -> anyhow::Result<Prepared> {
    let bytes =
        std::fs::read(component).with_context(|| format!("reading {}", component.display()))?;
    let digest = brink_registry::digest(&bytes);
    let version = brink_registry::parse_version(&args.version)?.to_string();
    let mut signatures = read_signatures(component)?;
    if let Some(key) = &args.sign_with {
        let signature = read_key(key)?.sign(&digest, &args.name, &version);
        signatures.retain(|s| s.key != signature.key);
        signatures.push(signature);
    }
    Ok(Prepared {
        bytes,
        digest,
        version,
        signatures,
    })
}

/// `brink deploy`.
pub async fn deploy(args: DeployArgs, component: &Path) -> anyhow::Result<()> {
    if args.fleet.any() {
        return super::fleet::deploy(args, component).await;
    }
    let api = args.remote.client()?;
    let Prepared {
        bytes,
        digest,
        version,
        signatures,
    } = prepare(&args, component)?;
    let spec = spec_of(&args)?;
    let uploaded = api.upload(bytes).await?;
    let published = api
        .call_json(
            reqwest::Method::POST,
            &format!("/v1/functions/{}/versions", args.name),
            Some(json!({
                "version": version,
                "digest": uploaded["digest"],
                "spec": spec,
                "signatures": signatures,
                "activate": !args.no_activate,
            })),
        )
        .await?;
    if args.remote.json {
        println!("{published}");
    } else if args.no_activate {
        println!(
            "staged {}@{version} ({digest}); active: {}",
            args.name,
            published["active"].as_str().unwrap_or("none")
        );
    } else {
        println!("deployed {}@{version} ({digest})", args.name);
    }
    Ok(())
}

fn print_function_table(functions: &[Value]) {
    println!(
        "{:<24} {:<12} {:<10} {:<14} digest",
        "name", "active", "versions", "previous"
    );
    for f in functions {
        let active = f["active"].as_str().unwrap_or("-");
        let digest = f["versions"]
            .as_array()
            .and_then(|vs| vs.iter().find(|v| v["version"].as_str() == Some(active)))
            .and_then(|v| v["digest"].as_str())
            .unwrap_or("-");
        println!(
            "{:<24} {:<12} {:<10} {:<14} {}",
            f["name"].as_str().unwrap_or_default(),
            active,
            f["versions"].as_array().map_or(0, Vec::len),
            f["previous"]
                .as_array()
                .and_then(|p| p.last())
                .and_then(Value::as_str)
                .unwrap_or("-"),
            digest
        );
        if let Some(why) = f["not_loaded"].as_str() {
            println!("{:<24} NOT RUNNING: {why}", "");
        }
    }
}

/// `brink ls`.
pub async fn ls(remote: &Remote) -> anyhow::Result<()> {
    let api = remote.client()?;
    let list = api
        .call_json(reqwest::Method::GET, "/v1/functions", None)
        .await?;
    if remote.json {
        println!("{list}");
    } else {
        print_function_table(list["functions"].as_array().map_or(&[], Vec::as_slice));
    }
    Ok(())
}

/// `brink rm`, `brink rollback`, `brink activate`.
pub async fn change(
    remote: &Remote,
    name: &str,
    action: &str,
    version: Option<&str>,
) -> anyhow::Result<()> {
    let api = remote.client()?;
    let answer = match action {
        "rm" => {
            api.call_json(
                reqwest::Method::DELETE,
                &format!("/v1/functions/{name}"),
                None,
            )
            .await?
        }
        "rollback" => {
            api.call_json(
                reqwest::Method::POST,
                &format!("/v1/functions/{name}/rollback"),
                None,
            )
            .await?
        }
        _ => {
            api.call_json(
                reqwest::Method::POST,
                &format!("/v1/functions/{name}/activate"),
                Some(json!({ "version": version.unwrap_or("latest") })),
            )
            .await?
        }
    };
    if remote.json {
        println!("{answer}");
    } else if action == "rm" {
        println!("removed {name}");
    } else {
        println!(
            "{name}: active {}",
            answer["active"].as_str().unwrap_or("-")
        );
    }
    Ok(())
}

/// `brink invoke`: one event (type `--type`, data `--data` as JSON or text); prints the outputs.
pub async fn invoke(remote: &Remote, name: &str, data: &str, ty: &str) -> anyhow::Result<()> {
    let api = remote.client()?;
    let data_json: Option<Value> = serde_json::from_str(data).ok();
    let mut event = json!({
        "specversion": "1.0",
        "id": uuid::Uuid::new_v4().to_string(),
        "source": "brink-cli",
        "type": ty,
    });
    match data_json {
        Some(v) => {
            event["datacontenttype"] = json!("application/json");
            event["data"] = v;
        }
        None => {
            event["datacontenttype"] = json!("text/plain");
            event["data"] = json!(data);
        }
    }
    let response = api
        .request(
            reqwest::Method::POST,
            &format!("/v1/functions/{name}/invoke"),
        )
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/cloudevents+json",
        )
        .body(event.to_string());
    let (headers, body) = api.send(response).await?;
    if body.is_empty() && !headers.contains_key("ce-type") {
        eprintln!("no output events");
        return Ok(());
    }
    let events = brink_host::event::http::decode(&headers, &body)?;
    let mut stdout = std::io::stdout().lock();
    for (event, types) in &events {
        stdout.write_all(&brink_host::event::json::write(event, types)?)?;
        stdout.write_all(b"\n")?;
    }
    Ok(())
}

/// `brink usage`.
pub async fn usage(remote: &Remote) -> anyhow::Result<()> {
    let api = remote.client()?;
    let usage = api
        .call_json(reqwest::Method::GET, "/v1/usage", None)
        .await?;
    if remote.json {
        println!("{usage}");
        return Ok(());
    }
    println!(
        "{:<24} {:>10} {:>12} {:>14} {:>14} {:>12} {:>12}",
        "tenant",
        "functions",
        "invocations",
        "execution (s)",
        "inference (s)",
        "kv bytes",
        "outbox bytes"
    );
    for u in usage["usage"].as_array().into_iter().flatten() {
        println!(
            "{:<24} {:>10} {:>12} {:>14.3} {:>14.3} {:>12} {:>12}",
            u["tenant"].as_str().unwrap_or_default(),
            u["functions"],
            u["invocations"],
            u["execution_seconds"].as_f64().unwrap_or(0.0),
            u["inference_seconds"].as_f64().unwrap_or(0.0),
            u["kv_bytes"],
            u["outbox_bytes"]
        );
    }
    Ok(())
}
