//! The deploy half of the CLI: `brink keygen|sign|login|deploy|ls|rm|activate|rollback|invoke|usage|tenant`,
//! talking to a node's admin API (`/v1`, see `brink_host::node::deploy`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use brink_registry::{SecretKey, Signature};
use clap::Subcommand;
use serde_json::{Value, json};

/// Where and as whom to call: flags, then the environment, then `brink login`'s file.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// The node's admin API (default: the URL `brink login` saved).
    #[arg(long, env = "BRINK_URL", global = true)]
    url: Option<String>,
    /// A tenant token, or the operator token (default: the one `brink login` saved).
    #[arg(long, env = "BRINK_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant and print its first token (shown only once).
    Create {
        id: String,
        #[arg(long)]
        max_functions: Option<u32>,
        #[arg(long)]
        max_memory_mb: Option<u64>,
        #[arg(long)]
        max_invocations_per_s: Option<u32>,
        /// Key-value bytes across all the tenant's buckets, in MiB.
        #[arg(long)]
        max_kv_mb: Option<u64>,
        /// A model of the node the tenant's functions may use (repeatable).
        #[arg(long = "model")]
        models: Vec<String>,
        /// An uplink of the node the tenant's functions may send to (repeatable).
        #[arg(long = "uplink")]
        uplinks: Vec<String>,
        /// Let the tenant's functions post to webhooks.
        #[arg(long)]
        webhooks: bool,
        /// An MQTT topic prefix beyond `t/<tenant>/` its functions may use,
        /// such as `plant1/line3/` (repeatable).
        #[arg(long = "topic")]
        topics: Vec<String>,
        /// Bytes its functions may keep queued in the node's outboxes, in MiB.
        #[arg(long)]
        max_outbox_mb: Option<u64>,
        /// Invocations of its functions running at once: its share of the pool.
        #[arg(long)]
        max_concurrency: Option<u32>,
        /// The longest `limits.timeout_ms` its functions may ask for.
        #[arg(long)]
        max_timeout_ms: Option<u64>,
        /// Key-value buckets it may have.
        #[arg(long)]
        max_buckets: Option<u32>,
    },
    /// Every tenant, with quotas and token ids.
    Ls,
    /// Issue another token for a tenant (shown only once).
    Token { id: String },
    /// Revoke one of a tenant's tokens, by its id (`brink tenant ls` shows them).
    RevokeToken { id: String, token_id: String },
    /// Delete a tenant with its tokens, functions and key-value buckets.
    Rm { id: String },
}

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
    #[command(flatten)]
    pub remote: Remote,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Login {
    url: String,
    token: String,
}

fn login_file() -> anyhow::Result<PathBuf> {
    Ok(dirs::config_dir()
        .context("this system has no user configuration directory")?
        .join("brink")
        .join("login.json"))
}

/// Writes `text` to `path`, readable by its owner only (it holds a secret).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// `brink login <url>`: checks the token against the node, then saves both.
pub async fn login(url: &str, token: &str) -> anyhow::Result<()> {
    let api = Api::new(url.to_owned(), Some(token.to_owned()))?;
    // A tenant can list its functions; the operator can list tenants.
    let who = match api.call(reqwest::Method::GET, "/v1/functions", None).await {
        Ok(_) => "a tenant",
        Err(_) => {
            api.call(reqwest::Method::GET, "/v1/tenants", None)
                .await
                .context("the node accepts this token for neither a tenant nor the operator")?;
            "the operator"
        }
    };
    let path = login_file()?;
    write_private(
        &path,
        &serde_json::to_string_pretty(&Login {
            url: url.to_owned(),
            token: token.to_owned(),
        })?,
    )?;
    eprintln!("logged in to {url} as {who} (saved in {})", path.display());
    Ok(())
}

/// `brink keygen`: a new signing key in `out`; prints the public key.
pub fn keygen(out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        bail!("{} exists; choose another --out", out.display());
    }
    let key = SecretKey::generate()?;
    write_private(out, &key.to_file_text())?;
    println!("{}", key.public());
    eprintln!(
        "secret key written to {}; trust it on a node with `[registry] trusted_keys = [\"{}\"]`",
        out.display(),
        key.public()
    );
    Ok(())
}

fn read_key(path: &Path) -> anyhow::Result<SecretKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading key {}", path.display()))?;
    SecretKey::parse(&text).with_context(|| format!("key {}", path.display()))
}

fn signatures_file(component: &Path) -> PathBuf {
    let mut name = component.as_os_str().to_owned();
    name.push(".sigs.json");
    PathBuf::from(name)
}

fn read_signatures(component: &Path) -> anyhow::Result<Vec<Signature>> {
    let path = signatures_file(component);
    match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// `brink sign`: adds a signature of `component` as `name@version` to `<component>.sigs.json`.
pub fn sign(component: &Path, key: &Path, name: &str, version: &str) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(component).with_context(|| format!("reading {}", component.display()))?;
    let version = brink_registry::parse_version(version)?.to_string();
    let signature = read_key(key)?.sign(&brink_registry::digest(&bytes), name, &version);
    let mut all = read_signatures(component)?;
    all.retain(|s| s.key != signature.key);
    all.push(signature.clone());
    let path = signatures_file(component);
    std::fs::write(&path, serde_json::to_vec_pretty(&all)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("{}", serde_json::to_string(&signature)?);
    eprintln!(
        "signed {name}@{version} with {}; {} signatures in {}",
        signature.key,
        all.len(),
        path.display()
    );
    Ok(())
}

/// The headers and body of a 2xx answer; otherwise the status and the
/// problem's detail as the error.
pub async fn answer(
    response: reqwest::Response,
) -> anyhow::Result<(reqwest::header::HeaderMap, bytes::Bytes)> {
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.context("reading the response")?;
    if !status.is_success() {
        let detail = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|p| p.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        bail!("{status}: {detail}");
    }
    Ok((headers, body))
}

/// The admin API, as a client.
#[derive(Debug)]
pub struct Api {
    client: reqwest::Client,
    url: String,
    token: Option<String>,
}

impl Api {
    fn new(url: String, token: Option<String>) -> anyhow::Result<Self> {
        brink_host::node::tls::install_default_provider();
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .context("creating the HTTP client")?,
            url: url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// From flags and environment, else the saved login.
    pub fn from_remote(remote: &Remote) -> anyhow::Result<Self> {
        let saved = || -> Option<Login> {
            let bytes = std::fs::read(login_file().ok()?).ok()?;
            serde_json::from_slice(&bytes).ok()
        };
        let (url, token) = match (&remote.url, &remote.token) {
            (Some(url), token) => (url.clone(), token.clone()),
            (None, token) => match saved() {
                Some(login) => (login.url, token.clone().or(Some(login.token))),
                None => bail!(
                    "no node to talk to: run `brink login <url> --token <token>`, or pass --url and --token"
                ),
            },
        };
        Self::new(url, token)
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, format!("{}{path}", self.url));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the admin API at {}", self.url))?;
        let (_, body) = answer(response).await?;
        if body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&body).context("the node answered something other than JSON")
    }

    /// Uploads `bytes` with a progress bar on stderr (when it is a terminal).
    async fn upload(&self, bytes: Vec<u8>) -> anyhow::Result<Value> {
        let total = bytes.len() as u64;
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "uploading {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
        ) {
            bar.set_style(style);
        }
        let chunks: Vec<anyhow::Result<bytes::Bytes>> = bytes::Bytes::from(bytes)
            .chunks(64 * 1024)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        let progress = bar.clone();
        let stream = futures_util::stream::iter(chunks.into_iter().map(move |chunk| {
            if let Ok(c) = &chunk {
                progress.inc(c.len() as u64);
            }
            chunk.map_err(std::io::Error::other)
        }));
        let response = self
            .request(reqwest::Method::POST, "/v1/uploads")
            .header(reqwest::header::CONTENT_TYPE, "application/wasm")
            .header(reqwest::header::CONTENT_LENGTH, total)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .with_context(|| format!("cannot reach the admin API at {}", self.url))?;
        bar.finish_and_clear();
        let (_, body) = answer(response).await?;
        Ok(serde_json::from_slice(&body)?)
    }
}

fn pair<'a>(text: &'a str, what: &str, kinds: &str) -> anyhow::Result<(&'a str, &'a str)> {
    text.split_once(':')
        .with_context(|| format!("{what} {text:?}: expected <kind>:<value>, kind one of {kinds}"))
}

/// The spec `brink deploy`'s flags describe.
fn spec_of(args: &DeployArgs) -> anyhow::Result<Value> {
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

/// `brink deploy`.
pub async fn deploy(args: DeployArgs, component: &Path) -> anyhow::Result<()> {
    let api = Api::from_remote(&args.remote)?;
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
    let spec = spec_of(&args)?;
    let uploaded = api.upload(bytes).await?;
    let published = api
        .call(
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
    let api = Api::from_remote(remote)?;
    let list = api
        .call(reqwest::Method::GET, "/v1/functions", None)
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
    let api = Api::from_remote(remote)?;
    let answer = match action {
        "rm" => {
            api.call(
                reqwest::Method::DELETE,
                &format!("/v1/functions/{name}"),
                None,
            )
            .await?
        }
        "rollback" => {
            api.call(
                reqwest::Method::POST,
                &format!("/v1/functions/{name}/rollback"),
                None,
            )
            .await?
        }
        _ => {
            api.call(
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
    let api = Api::from_remote(remote)?;
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
        .body(event.to_string())
        .send()
        .await
        .with_context(|| format!("cannot reach the admin API at {}", api.url))?;
    let (headers, body) = answer(response).await?;
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

/// `brink logs`: a function's recent log records; with `follow`, then every
/// new one as it comes, reconnecting (without repeats) when the connection drops.
pub async fn logs(remote: &Remote, name: &str, follow: bool) -> anyhow::Result<()> {
    let api = Api::from_remote(remote)?;
    let path = format!("/v1/functions/{name}/logs");
    if !follow {
        let answer = api.call(reqwest::Method::GET, &path, None).await?;
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
                    .with_context(|| format!("cannot reach the admin API at {}", api.url));
            }
        };
        if !response.status().is_success() {
            answer(response).await?;
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

/// `brink usage`.
pub async fn usage(remote: &Remote) -> anyhow::Result<()> {
    let api = Api::from_remote(remote)?;
    let usage = api.call(reqwest::Method::GET, "/v1/usage", None).await?;
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

/// `brink tenant ...` (operator).
pub async fn tenant(remote: &Remote, command: TenantCommand) -> anyhow::Result<()> {
    let api = Api::from_remote(remote)?;
    let answer = match command {
        TenantCommand::Create {
            id,
            max_functions,
            max_memory_mb,
            max_invocations_per_s,
            max_kv_mb,
            models,
            uplinks,
            webhooks,
            topics,
            max_outbox_mb,
            max_concurrency,
            max_timeout_ms,
            max_buckets,
        } => {
            let mut quota = serde_json::Map::new();
            for (k, v) in [
                ("max_functions", max_functions.map(u64::from)),
                ("max_memory_mb", max_memory_mb),
                (
                    "max_invocations_per_s",
                    max_invocations_per_s.map(u64::from),
                ),
                ("max_kv_mb", max_kv_mb),
                ("max_outbox_mb", max_outbox_mb),
                ("max_concurrency", max_concurrency.map(u64::from)),
                ("max_timeout_ms", max_timeout_ms),
                ("max_buckets", max_buckets.map(u64::from)),
            ] {
                if let Some(v) = v {
                    quota.insert(k.to_owned(), json!(v));
                }
            }
            let created = api
                .call(
                    reqwest::Method::POST,
                    "/v1/tenants",
                    Some(json!({
                        "id": id,
                        "quota": quota,
                        "grants": {
                            "models": models,
                            "uplinks": uplinks,
                            "webhooks": webhooks,
                            "topics": topics,
                        },
                    })),
                )
                .await?;
            if !remote.json {
                println!("{}", created["token"].as_str().unwrap_or_default());
                eprintln!("created tenant `{id}`; the token above is shown only now");
                return Ok(());
            }
            created
        }
        TenantCommand::Ls => {
            let list = api.call(reqwest::Method::GET, "/v1/tenants", None).await?;
            if !remote.json {
                println!(
                    "{:<24} {:>9} {:>10} {:>8} {:>6} {:>9}  tokens",
                    "tenant", "functions", "memory_mb", "inv/s", "kv_mb", "outbox_mb"
                );
                for t in list["tenants"].as_array().into_iter().flatten() {
                    let tokens: Vec<String> = t["tokens"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|k| {
                            let id = k["id"].as_str().unwrap_or_default();
                            if k["revoked"] == true {
                                format!("{id} (revoked)")
                            } else {
                                id.to_owned()
                            }
                        })
                        .collect();
                    println!(
                        "{:<24} {:>9} {:>10} {:>8} {:>6} {:>9}  {}",
                        t["id"].as_str().unwrap_or_default(),
                        t["quota"]["max_functions"],
                        t["quota"]["max_memory_mb"],
                        t["quota"]["max_invocations_per_s"],
                        t["quota"]["max_kv_mb"],
                        t["quota"]["max_outbox_mb"],
                        tokens.join(", ")
                    );
                }
                return Ok(());
            }
            list
        }
        TenantCommand::Token { id } => {
            let issued = api
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/tenants/{id}/tokens"),
                    None,
                )
                .await?;
            if !remote.json {
                println!("{}", issued["token"].as_str().unwrap_or_default());
                return Ok(());
            }
            issued
        }
        TenantCommand::RevokeToken { id, token_id } => {
            api.call(
                reqwest::Method::DELETE,
                &format!("/v1/tenants/{id}/tokens/{token_id}"),
                None,
            )
            .await?;
            if !remote.json {
                println!("revoked token {token_id} of `{id}`");
                return Ok(());
            }
            json!({ "revoked": token_id, "tenant": id })
        }
        TenantCommand::Rm { id } => {
            let deleted = api
                .call(reqwest::Method::DELETE, &format!("/v1/tenants/{id}"), None)
                .await?;
            if !remote.json {
                let count = |k: &str| deleted[k].as_array().map_or(0, Vec::len);
                println!(
                    "deleted tenant `{id}`: {} functions, {} key-value buckets",
                    count("functions"),
                    count("kv_buckets")
                );
                return Ok(());
            }
            deleted
        }
    };
    println!("{answer}");
    Ok(())
}
