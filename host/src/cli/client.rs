//! The one admin-API client of the CLI, and the one way to name a node:
//! `--url`/`BRINK_URL` and `--token`/`BRINK_TOKEN`, else what `brink login`
//! saved, else the default admin address. `--admin`, `BRINK_ADMIN_URL` and
//! `BRINK_ADMIN_TOKEN` still work, as hidden aliases.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;

/// Where the admin API listens when nothing names a node (`[admin] listen`'s default).
const DEFAULT_URL: &str = "http://127.0.0.1:7070";

/// Which node to call and as whom. Global: the flags may stand after the
/// subcommand, as the README writes them.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeFlags {
    /// The node's admin API [default: the URL `brink login` saved, else
    /// http://127.0.0.1:7070].
    #[arg(long, env = "BRINK_URL", alias = "admin", global = true)]
    url: Option<String>,
    /// A tenant token, or the operator token (`[admin] token`) [default: the
    /// one `brink login` saved].
    #[arg(long, env = "BRINK_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
}

/// [`NodeFlags`], and whether to print the API's JSON.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    #[command(flatten)]
    pub node: NodeFlags,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

impl NodeFlags {
    /// The token these flags (or the environment) give, for a command that
    /// names its nodes itself (`brink deploy --node`).
    pub fn token(&self) -> Option<String> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        self.token.clone().or_else(|| env("BRINK_ADMIN_TOKEN"))
    }

    /// The node these flags name: flags, then the environment (the old
    /// `BRINK_ADMIN_*` names too), then `brink login`'s file, then the
    /// default address.
    pub fn client(&self) -> anyhow::Result<Client> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let url = self.url.clone().or_else(|| env("BRINK_ADMIN_URL"));
        let token = self.token.clone().or_else(|| env("BRINK_ADMIN_TOKEN"));
        let saved = || -> Option<Login> {
            let bytes = std::fs::read(login_file().ok()?).ok()?;
            serde_json::from_slice(&bytes).ok()
        };
        let (url, token) = match url {
            Some(url) => (url, token),
            None => match saved() {
                Some(login) => (login.url, token.or(Some(login.token))),
                None => (DEFAULT_URL.to_owned(), token),
            },
        };
        Client::new(&url, token)
    }
}

impl Remote {
    /// [`NodeFlags::client`].
    pub fn client(&self) -> anyhow::Result<Client> {
        self.node.client()
    }
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
pub(crate) fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
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
    let api = Client::new(url, Some(token.to_owned()))?;
    // A tenant can list its functions; the operator can list tenants.
    let who = match api
        .call_json(reqwest::Method::GET, "/v1/functions", None)
        .await
    {
        Ok(_) => "a tenant",
        Err(_) => {
            api.call_json(reqwest::Method::GET, "/v1/tenants", None)
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

/// The headers and body of a 2xx answer; otherwise the status and the
/// problem's detail as the error.
pub(crate) async fn answer(
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

/// A client of a running node's admin API.
#[derive(Debug)]
pub struct Client {
    client: reqwest::Client,
    url: String,
    token: Option<String>,
}

impl Client {
    pub(crate) fn new(url: &str, token: Option<String>) -> anyhow::Result<Self> {
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

    /// The admin API's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A request for `path` under the API's URL, with the token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, format!("{}{path}", self.url));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends `request`; a 2xx answer's headers and body, else the problem's
    /// detail as the error.
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<(reqwest::header::HeaderMap, bytes::Bytes)> {
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the admin API at {}", self.url))?;
        answer(response).await
    }

    /// `method` on `path` with raw bytes; the body of a 2xx answer.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<bytes::Bytes> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.body(body);
        }
        Ok(self.send(request).await?.1)
    }

    /// `method` on `path` with JSON; the JSON of a 2xx answer (null when empty).
    pub async fn call_json(
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
        let (_, body) = self.send(request).await?;
        if body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&body).context("the node answered something other than JSON")
    }
    /// Uploads `bytes` with a progress bar on stderr (when it is a terminal).
    pub async fn upload(&self, bytes: Vec<u8>) -> anyhow::Result<Value> {
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
            .body(reqwest::Body::wrap_stream(stream));
        let sent = self.send(response).await;
        bar.finish_and_clear();
        let (_, body) = sent?;
        Ok(serde_json::from_slice(&body)?)
    }
}
