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
    /// A component (`.wasm`), a function crate to build first, or
    /// `oci://<registry>/<repository>:<tag>`, which the node pulls by digest.
    pub source: PathBuf,
    /// The function's name [default for oci://: the artifact's].
    #[arg(long)]
    pub name: Option<String>,
    /// The version [default for oci://: the artifact's].
    #[arg(long)]
    pub version: Option<String>,
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
    /// How the CLI reads an `oci://` source's manifest (the node pulls with
    /// its own `[registry.oci]` settings).
    #[command(flatten)]
    pub registry: super::oci::RegistryFlags,
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

/// A version ready to send: its name, version, digest and signatures, and
/// how each node gets the bytes.
pub(super) struct Prepared {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub signatures: Vec<brink_registry::Signature>,
    pub source: Source,
}

/// How a node gets a version's bytes.
pub(super) enum Source {
    /// Uploaded by the CLI.
    Upload(Vec<u8>),
    /// Pulled by the node itself, from this pinned reference.
    Pull(String),
}

/// The component `source` names: the file itself, or the one a function
/// crate builds.
pub async fn component_of(source: &Path) -> anyhow::Result<PathBuf> {
    if !source.is_dir() {
        return Ok(source.to_owned());
    }
    let source = source.to_owned();
    tokio::task::spawn_blocking(move || super::build::build_one(&source)).await?
}

/// Reads (or builds) the component, or the `oci://` artifact's manifest,
/// and signs it with `--sign-with` beside the signatures that came with it.
pub(super) async fn prepare(args: &DeployArgs) -> anyhow::Result<Prepared> {
    let text = args.source.to_string_lossy();
    let (name, version, digest, mut signatures, source) = if text.starts_with("oci://") {
        let resolved = super::oci::resolve(&text, &args.registry).await?;
        let name = args.name.clone().or(resolved.name).context(
            "the artifact names no function (no dev.brink.function.name annotation): pass --name",
        )?;
        let version = args.version.clone().or(resolved.version).context(
            "the artifact names no version (no org.opencontainers.image.version annotation): pass --version",
        )?;
        let source = Source::Pull(resolved.reference.to_string());
        (name, version, resolved.digest, resolved.signatures, source)
    } else {
        let component = component_of(&args.source).await?;
        let bytes = std::fs::read(&component)
            .with_context(|| format!("reading {}", component.display()))?;
        let (Some(name), Some(version)) = (args.name.clone(), args.version.clone()) else {
            bail!("pass --name and --version: a component file carries neither");
        };
        let digest = brink_registry::digest(&bytes);
        let signatures = read_signatures(&component)?;
        (name, version, digest, signatures, Source::Upload(bytes))
    };
    let version = brink_registry::parse_version(&version)?.to_string();
    if let Some(key) = &args.sign_with {
        let signature = read_key(key)?.sign(&digest, &name, &version);
        signatures.retain(|s| s.key != signature.key);
        signatures.push(signature);
    }
    Ok(Prepared {
        name,
        version,
        digest,
        signatures,
        source,
    })
}

/// Gets `prepared`'s bytes onto the node behind `api`: uploaded, or pulled
/// by the node; either way the node must hold exactly `prepared.digest`.
pub(super) async fn send(api: &super::client::Client, prepared: &Prepared) -> anyhow::Result<()> {
    let stored = match &prepared.source {
        Source::Upload(bytes) => api.upload(bytes.clone()).await?,
        Source::Pull(reference) => {
            api.call_json(
                reqwest::Method::POST,
                "/v1/pulls",
                Some(json!({ "reference": reference })),
            )
            .await?
        }
    };
    anyhow::ensure!(
        stored["digest"].as_str() == Some(prepared.digest.as_str()),
        "the node stored digest {} for {}",
        stored["digest"],
        prepared.digest
    );
    Ok(())
}

/// `brink deploy`.
pub async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let prepared = prepare(&args).await?;
    if args.fleet.any() {
        return super::fleet::deploy(args, prepared).await;
    }
    let api = args.remote.client()?;
    send(&api, &prepared).await?;
    let Prepared {
        name,
        version,
        digest,
        signatures,
        ..
    } = prepared;
    let published = api
        .call_json(
            reqwest::Method::POST,
            &format!("/v1/functions/{name}/versions"),
            Some(json!({
                "version": version,
                "digest": digest,
                "spec": spec_of(&args)?,
                "signatures": signatures,
                "activate": !args.no_activate,
            })),
        )
        .await?;
    if args.remote.json {
        println!("{published}");
    } else if args.no_activate {
        println!(
            "staged {name}@{version} ({digest}); active: {}",
            published["active"].as_str().unwrap_or("none")
        );
    } else {
        println!("deployed {name}@{version} ({digest})");
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
    change_with(remote, name, action, version, None).await
}

/// `brink rm|rollback|promote|activate [--weight]`: one call, one line.
pub async fn change_with(
    remote: &Remote,
    name: &str,
    action: &str,
    version: Option<&str>,
    weight: Option<u8>,
) -> anyhow::Result<()> {
    let api = remote.client()?;
    let path = format!("/v1/functions/{name}");
    let answer = match action {
        "rm" => api.call_json(reqwest::Method::DELETE, &path, None).await?,
        "rollback" | "promote" => {
            api.call_json(reqwest::Method::POST, &format!("{path}/{action}"), None)
                .await?
        }
        _ => {
            let mut body = json!({ "version": version.unwrap_or("latest") });
            if let Some(weight) = weight {
                body["weight"] = json!(weight);
            }
            api.call_json(
                reqwest::Method::POST,
                &format!("{path}/activate"),
                Some(body),
            )
            .await?
        }
    };
    if remote.json {
        println!("{answer}");
    } else if action == "rm" {
        println!("removed {name}");
    } else {
        let canary = match (
            answer["canary"]["version"].as_str(),
            answer["canary"]["weight"].as_u64(),
        ) {
            (Some(v), Some(w)) => format!(", canary {v} at {w}%"),
            _ => String::new(),
        };
        println!(
            "{name}: active {}{canary}",
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
