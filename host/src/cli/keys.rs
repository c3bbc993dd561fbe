//! `brink keygen` and `brink sign`: signing keys, and signatures kept beside a component.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::client::write_private;
use brink_registry::{SecretKey, Signature};

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

pub(crate) fn read_key(path: &Path) -> anyhow::Result<SecretKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading key {}", path.display()))?;
    SecretKey::parse(&text).with_context(|| format!("key {}", path.display()))
}

pub(crate) fn signatures_file(component: &Path) -> PathBuf {
    let mut name = component.as_os_str().to_owned();
    name.push(".sigs.json");
    PathBuf::from(name)
}

pub(crate) fn read_signatures(component: &Path) -> anyhow::Result<Vec<Signature>> {
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
