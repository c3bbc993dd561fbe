//! TLS to an external broker (`mqtts://`): rustls with the ring provider,
//! the system's trusted roots or a configured CA file, and an optional
//! client certificate for mutual TLS.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// Where the TLS material comes from; paths are already resolved.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles<'a> {
    pub ca_file: Option<&'a Path>,
    pub client_cert: Option<&'a Path>,
    pub client_key: Option<&'a Path>,
}

/// A client configuration for brokers whose certificates chain to the roots
/// `files` names (or the system's), presenting a client certificate if given.
pub fn client_config(files: &TlsFiles<'_>) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    match files.ca_file {
        Some(path) => {
            let certs = read_certs(path, "mqtt.ca_file")?;
            for cert in certs {
                roots.add(cert).with_context(|| {
                    format!(
                        "mqtt.ca_file {}: a certificate is not a valid CA certificate",
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
                    "mqtt.url is mqtts:// but this system has no trusted CA certificates (install ca-certificates, or set mqtt.ca_file)"
                );
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?
        .with_root_certificates(roots);
    let config = match (files.client_cert, files.client_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert, "mqtt.client_cert")?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                anyhow::anyhow!(
                    "mqtt.client_key {}: no usable private key in PEM format ({e})",
                    key.display()
                )
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .context("mqtt.client_cert and mqtt.client_key do not form a usable pair")?
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
