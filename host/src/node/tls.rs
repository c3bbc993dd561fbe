//! TLS for the node's outgoing connections (an `mqtts://` broker, `https://`
//! webhooks): rustls with the ring provider, the system's trusted roots or a
//! configured CA file, and an optional client certificate for mutual TLS.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// Makes ring the process's default rustls provider, for clients that
/// build their own TLS setup (reqwest's default client). Idempotent.
pub fn install_default_provider() {
    // An error only means a provider is installed already, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Where the TLS material comes from: resolved paths, each with the
/// manifest setting that named it (for error messages).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles<'a> {
    pub ca_file: Option<(&'a Path, &'a str)>,
    pub client_cert: Option<(&'a Path, &'a str)>,
    pub client_key: Option<(&'a Path, &'a str)>,
}

/// A client configuration for brokers whose certificates chain to the roots
/// `files` names (or the system's), presenting a client certificate if given.
pub fn client_config(files: &TlsFiles<'_>) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    match files.ca_file {
        Some((path, field)) => {
            let certs = read_certs(path, field)?;
            for cert in certs {
                roots.add(cert).with_context(|| {
                    format!(
                        "{field} {}: a certificate is not a valid CA certificate",
                        path.display()
                    )
                })?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                tracing::warn!("loading the system's trusted certificates: {e}");
            }
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                bail!(
                    "TLS needs trusted CA certificates and this system has none: install ca-certificates, or name a CA file in the manifest"
                );
            }
        }
    }
    with_roots(roots, files)
}

/// A client configuration that trusts no server: for a client that must
/// have TLS configured but never connects to an `https://` URL.
pub fn no_roots() -> anyhow::Result<Arc<ClientConfig>> {
    with_roots(RootCertStore::empty(), &TlsFiles::default())
}

fn with_roots(roots: RootCertStore, files: &TlsFiles<'_>) -> anyhow::Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?
        .with_root_certificates(roots);
    let config = match (files.client_cert, files.client_key) {
        (Some((cert, cert_field)), Some((key, key_field))) => {
            let chain = read_certs(cert, cert_field)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                anyhow::anyhow!(
                    "{key_field} {}: no usable private key in PEM format ({e})",
                    key.display()
                )
            })?;
            builder.with_client_auth_cert(chain, key).with_context(|| {
                format!("{cert_field} and {key_field} do not form a usable pair")
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

fn read_certs(path: &Path, field: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("{field} {}: cannot read", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{field} {}: not PEM certificates ({e})", path.display()))?;
    if certs.is_empty() {
        bail!("{field} {}: holds no PEM certificate", path.display());
    }
    Ok(certs)
}
