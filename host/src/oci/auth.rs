//! Registry credentials in docker's `config.json`, the file `docker login`,
//! `podman login`, `oras login` and `brink login oci://…` all write, so a
//! registry signed into with any of them works with every other.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use oci_client::secrets::RegistryAuth;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One registry's entry under `auths`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Entry {
    /// Base64 of `user:password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password: Option<String>,
    /// A token the registry issued for the login (used as the bearer).
    #[serde(
        default,
        rename = "registrytoken",
        skip_serializing_if = "Option::is_none"
    )]
    registry_token: Option<String>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

/// The credentials a `config.json` holds.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    path: Option<PathBuf>,
    auths: BTreeMap<String, Entry>,
    /// `credsStore` / `credHelpers`: credentials kept by a helper program,
    /// which Brink does not run (a node never executes what a file names).
    helpers: BTreeMap<String, String>,
    store: Option<String>,
}

/// Where `docker login` keeps its file: `$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`.
pub fn default_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    dirs::home_dir().map(|home| home.join(".docker").join("config.json"))
}

/// `https://host:port/v1/` and `host:port` name the same registry.
fn key_of(registry: &str) -> &str {
    let host = registry
        .strip_prefix("https://")
        .or_else(|| registry.strip_prefix("http://"))
        .unwrap_or(registry);
    host.split('/').next().unwrap_or(host)
}

fn read_json(path: &Path) -> anyhow::Result<Map<String, Value>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not a docker config file (a JSON object)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Map::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

impl Credentials {
    /// Reads `path`; a missing file holds no credentials.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let json = read_json(path)?;
        let field = |name: &str| json.get(name).cloned().unwrap_or(Value::Null);
        let auths: BTreeMap<String, Entry> = serde_json::from_value(match field("auths") {
            Value::Null => Value::Object(Map::new()),
            v => v,
        })
        .with_context(|| format!("{}: `auths` is not a map of registries", path.display()))?;
        let helpers = serde_json::from_value(match field("credHelpers") {
            Value::Null => Value::Object(Map::new()),
            v => v,
        })
        .with_context(|| format!("{}: `credHelpers` is not a map", path.display()))?;
        Ok(Self {
            path: Some(path.to_owned()),
            auths: auths
                .into_iter()
                .map(|(k, v)| (key_of(&k).to_owned(), v))
                .collect(),
            helpers,
            store: field("credsStore").as_str().map(str::to_owned),
        })
    }

    /// The credentials for `registry`; anonymous when the file has none.
    pub fn for_registry(&self, registry: &str) -> anyhow::Result<RegistryAuth> {
        let file = || {
            self.path
                .as_ref()
                .map_or_else(|| "the config".to_owned(), |p| p.display().to_string())
        };
        let Some(entry) = self.auths.get(key_of(registry)) else {
            if let Some(helper) = self.helpers.get(registry).or(self.store.as_ref()) {
                bail!(
                    "{} keeps {registry}'s credentials in the helper docker-credential-{helper}, \
                     which brink does not run: sign in with `brink login oci://{registry}`, \
                     which stores them in a file of its own (--config)",
                    file()
                );
            }
            return Ok(RegistryAuth::Anonymous);
        };
        if let Some(token) = &entry.registry_token {
            return Ok(RegistryAuth::Bearer(token.clone()));
        }
        if let (Some(user), Some(password)) = (&entry.username, &entry.password) {
            return Ok(RegistryAuth::Basic(user.clone(), password.clone()));
        }
        let Some(encoded) = &entry.auth else {
            bail!(
                "{}: the entry for {registry} has no `auth`; sign in again with `brink login oci://{registry}`",
                file()
            );
        };
        let decoded = STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .with_context(|| format!("{}: {registry}'s `auth` is not base64 text", file()))?;
        let (user, password) = decoded
            .split_once(':')
            .with_context(|| format!("{}: {registry}'s `auth` is not `user:password`", file()))?;
        Ok(RegistryAuth::Basic(user.to_owned(), password.to_owned()))
    }
}

/// Stores `user:password` for `registry` in the config file at `path`,
/// keeping every other key and registry it holds; the file is written
/// owner-only, like docker's.
pub fn store(path: &Path, registry: &str, user: &str, password: &str) -> anyhow::Result<()> {
    let mut json = read_json(path)?;
    let auths = json
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .with_context(|| format!("{}: `auths` is not a map", path.display()))?;
    auths.retain(|k, _| key_of(k) != key_of(registry));
    auths.insert(
        key_of(registry).to_owned(),
        serde_json::json!({ "auth": STANDARD.encode(format!("{user}:{password}")) }),
    );
    write(path, &json)
}

/// Removes `registry`'s entry; whether there was one.
pub fn remove(path: &Path, registry: &str) -> anyhow::Result<bool> {
    let mut json = read_json(path)?;
    let Some(auths) = json.get_mut("auths").and_then(Value::as_object_mut) else {
        return Ok(false);
    };
    let before = auths.len();
    auths.retain(|k, _| key_of(k) != key_of(registry));
    let removed = auths.len() != before;
    if removed {
        write(path, &json)?;
    }
    Ok(removed)
}

fn write(path: &Path, json: &Map<String, Value>) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(json)?;
    // A new file beside it, renamed over it: a crash mid-write leaves the
    // old file whole, and the credentials are never readable by others.
    let mut temp = path.as_os_str().to_owned();
    temp.push(".brink-tmp");
    let temp = PathBuf::from(temp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&temp)
        .with_context(|| format!("writing {}", temp.display()))?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", temp.display()))?;
    std::fs::rename(&temp, path).with_context(|| format!("replacing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_is_stored_beside_what_the_file_held_and_read_back() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("docker").join("config.json");
        std::fs::create_dir_all(path.parent().context("parent")?)?;
        std::fs::write(
            &path,
            r#"{"auths":{"https://ghcr.io/v1/":{"auth":"b2xkOnRva2Vu"}},"psFormat":"table"}"#,
        )?;
        store(&path, "127.0.0.1:5000", "ci", "s3:cret")?;
        let creds = Credentials::load(&path)?;
        assert_eq!(
            creds.for_registry("127.0.0.1:5000")?,
            RegistryAuth::Basic("ci".into(), "s3:cret".into())
        );
        assert_eq!(
            creds.for_registry("ghcr.io")?,
            RegistryAuth::Basic("old".into(), "token".into())
        );
        assert_eq!(creds.for_registry("quay.io")?, RegistryAuth::Anonymous);
        let text = std::fs::read_to_string(&path)?;
        assert!(text.contains("psFormat"), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path)?.permissions().mode() & 0o077, 0);
        }
        assert!(remove(&path, "127.0.0.1:5000")?);
        assert!(!remove(&path, "127.0.0.1:5000")?);
        let creds = Credentials::load(&path)?;
        assert_eq!(
            creds.for_registry("127.0.0.1:5000")?,
            RegistryAuth::Anonymous
        );
        Ok(())
    }

    #[test]
    fn credentials_a_helper_keeps_or_a_broken_entry_give_an_error_that_says_what_to_do()
    -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"quay.io":{"auth":"bm9jb2xvbg=="},"x.io":{}},"credsStore":"desktop"}"#,
        )?;
        let creds = Credentials::load(&path)?;
        let helper = format!(
            "{:#}",
            creds.for_registry("ghcr.io").err().context("taken")?
        );
        assert!(helper.contains("docker-credential-desktop"), "{helper}");
        assert!(creds.for_registry("quay.io").is_err());
        assert!(creds.for_registry("x.io").is_err());
        std::fs::write(&path, "[1]")?;
        assert!(Credentials::load(&path).is_err());
        Ok(())
    }
}
