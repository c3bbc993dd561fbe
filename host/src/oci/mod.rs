//! Components in OCI registries (`brink push|pull`, `brink deploy oci://…`).
//!
//! The layout is the Wasm OCI artifact that wasmCloud, Spin and `wkg` share:
//! one `application/wasm` layer and an `application/vnd.wasm.config.v0+json`
//! config. Brink's ed25519 signatures, and the name and version they sign,
//! travel as annotations of the manifest (ADR 0016 says why not a referrer).
//! Pulls check every digest: the manifest's against a pinned reference, the
//! layer's against the manifest, and the layer's size before a byte is read.

pub mod auth;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::{Context as _, bail, ensure};
use brink_registry::Signature;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;

/// The config blob's media type (the CNCF Wasm OCI artifact layout).
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The component layer's media type.
pub const LAYER_MEDIA_TYPE: &str = "application/wasm";
/// The function name the signatures sign.
pub const NAME_ANNOTATION: &str = "dev.brink.function.name";
/// The version the signatures sign (the standard OCI annotation).
pub const VERSION_ANNOTATION: &str = oci_client::annotations::ORG_OPENCONTAINERS_IMAGE_VERSION;
/// A JSON array of `{"key", "signature"}`, as in `<component>.sigs.json`.
pub const SIGNATURES_ANNOTATION: &str = "dev.brink.signatures";

/// `oci://<registry>/<repository>[:<tag>][@sha256:<hex>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciRef(oci_client::Reference);

impl OciRef {
    /// Parses a reference. The registry must be named: a bare `repo:tag`
    /// would silently mean Docker Hub.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let Some(rest) = text.strip_prefix("oci://") else {
            bail!("{text:?} is not an OCI reference: expected oci://<registry>/<repository>:<tag>");
        };
        let registry = rest.split('/').next().unwrap_or_default();
        ensure!(
            rest.contains('/')
                && (registry.contains('.') || registry.contains(':') || registry == "localhost"),
            "{text:?} names no registry: expected oci://<registry>/<repository>:<tag>, \
             e.g. oci://ghcr.io/acme/filter:1.0.0"
        );
        let reference: oci_client::Reference = rest
            .parse()
            .with_context(|| format!("{text:?} is not a valid OCI reference"))?;
        // The parser makes a bare repository `:latest`; a deploy should say
        // which version it means.
        let last = rest.rsplit('/').next().unwrap_or_default();
        ensure!(
            last.contains(':') || last.contains('@'),
            "{text:?} names no tag or digest: add :<tag> or @sha256:<hex>"
        );
        Ok(Self(reference))
    }

    /// `host[:port]`, as written.
    pub fn registry(&self) -> &str {
        self.0.registry()
    }

    /// The same repository, pinned to the manifest `digest`.
    pub fn pinned(&self, digest: &str) -> Self {
        Self(oci_client::Reference::with_digest(
            self.0.registry().to_owned(),
            self.0.repository().to_owned(),
            digest.to_owned(),
        ))
    }

    /// The manifest digest this reference is pinned to, if any.
    pub fn digest(&self) -> Option<&str> {
        self.0.digest()
    }
}

impl std::fmt::Display for OciRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "oci://{}", self.0.whole())
    }
}

/// How to reach registries: which speak plain HTTP, which CAs to trust
/// beyond the system's, and the credentials.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `host[:port]`s spoken to over plain HTTP (a registry on loopback);
    /// every other registry is HTTPS.
    pub plain_http: Vec<String>,
    /// PEM certificates trusted beside the system's CAs.
    pub ca_file: Option<PathBuf>,
    /// A docker `config.json`; `None` reads no credentials (anonymous).
    pub auth_file: Option<PathBuf>,
}

/// A component as it travels: the bytes, and the name, version and
/// signatures that go with them.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub bytes: Vec<u8>,
    pub name: Option<String>,
    pub version: Option<String>,
    pub signatures: Vec<Signature>,
}

/// What a pull fetched, and where from.
#[derive(Debug)]
pub struct Pulled {
    pub artifact: Artifact,
    /// `sha256:<hex>` of the component.
    pub digest: String,
    /// The manifest's digest: pull by it to get these bytes again.
    pub manifest_digest: String,
}

/// A registry client with the caller's settings and credentials.
pub struct Client {
    inner: oci_client::Client,
    credentials: auth::Credentials,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        crate::node::tls::install_default_provider();
        let mut config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(settings.plain_http.clone()),
            // Monolithic: a component is one modest blob, and chunked uploads
            // fail on registries behind proxies that drop PATCH.
            use_monolithic_push: true,
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            user_agent: concat!("brink/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        if let Some(path) = &settings.ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading the CA file {}", path.display()))?;
            ensure!(
                String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----"),
                "the CA file {} holds no PEM certificate",
                path.display()
            );
            config
                .extra_root_certificates
                .push(oci_client::client::Certificate {
                    encoding: oci_client::client::CertificateEncoding::Pem,
                    data: pem,
                });
        }
        let inner = oci_client::Client::try_from(config).context("setting up the OCI client")?;
        let credentials = match &settings.auth_file {
            Some(path) => auth::Credentials::load(path)?,
            None => auth::Credentials::default(),
        };
        Ok(Self { inner, credentials })
    }

    fn auth(&self, reference: &OciRef) -> anyhow::Result<RegistryAuth> {
        self.credentials.for_registry(reference.registry())
    }

    /// Checks `auth` against the registry with a request that needs it
    /// (`brink login`): listing `reference`'s tags. A repository the
    /// registry does not hold yet still proves the credentials.
    pub async fn check_login(&self, reference: &OciRef, auth: &RegistryAuth) -> anyhow::Result<()> {
        use oci_client::errors::{OciDistributionError, OciErrorCode};
        let refused = |e: OciDistributionError| {
            anyhow::anyhow!("{} refused the credentials: {e}", reference.registry())
        };
        self.inner
            .auth(&reference.0, auth, oci_client::RegistryOperation::Pull)
            .await
            .map_err(refused)?;
        match self
            .inner
            .list_tags(&reference.0, auth, Some(1), None)
            .await
        {
            Ok(_) => Ok(()),
            Err(OciDistributionError::RegistryError { envelope, .. })
                if envelope
                    .errors
                    .iter()
                    .all(|e| e.code == OciErrorCode::NameUnknown) =>
            {
                Ok(())
            }
            Err(e) => Err(refused(e)),
        }
    }

    /// Pushes `artifact` to `reference`; returns the manifest's digest.
    pub async fn push(&self, reference: &OciRef, artifact: &Artifact) -> anyhow::Result<String> {
        let digest = brink_registry::digest(&artifact.bytes);
        let config = serde_json::json!({
            "architecture": "wasm",
            "os": "wasip2",
            "layerDigests": [digest],
        });
        let config = Config::new(
            serde_json::to_vec(&config)?,
            CONFIG_MEDIA_TYPE.to_owned(),
            None,
        );
        let layer = ImageLayer::new(artifact.bytes.clone(), LAYER_MEDIA_TYPE.to_owned(), None);
        let manifest = OciImageManifest::build(
            std::slice::from_ref(&layer),
            &config,
            Some(annotations(artifact)?),
        );
        let auth = self.auth(reference)?;
        self.inner
            .push(&reference.0, &[layer], config, &auth, Some(manifest))
            .await
            .map_err(|e| explain(e, reference, "pushing to"))?;
        // The registry's own digest of the manifest as it stored it.
        self.inner
            .fetch_manifest_digest(&reference.0, &auth)
            .await
            .map_err(|e| explain(e, reference, "reading back the manifest of"))
    }

    /// The manifest `reference` names now, and its digest.
    pub async fn manifest(&self, reference: &OciRef) -> anyhow::Result<(OciImageManifest, String)> {
        let auth = self.auth(reference)?;
        self.inner
            .pull_image_manifest(&reference.0, &auth)
            .await
            .map_err(|e| explain(e, reference, "reading the manifest of"))
    }

    /// Pulls the component `reference` names, refusing anything but one
    /// Wasm layer of at most `max_bytes`, and any blob whose bytes do not
    /// match its digest.
    pub async fn pull(&self, reference: &OciRef, max_bytes: usize) -> anyhow::Result<Pulled> {
        let (manifest, manifest_digest) = self.manifest(reference).await?;
        let layer = component_layer(reference, &manifest, max_bytes)?;
        let mut bytes = Capped::new(max_bytes);
        self.inner
            .pull_blob(&reference.0, &layer, &mut bytes)
            .await
            .map_err(|e| explain(e, reference, "pulling the component of"))?;
        let bytes = bytes.into_inner();
        let digest = brink_registry::digest(&bytes);
        ensure!(
            digest == layer.digest,
            "{reference}: the layer's bytes have digest {digest}, the manifest says {}; \
             the registry's copy is damaged or tampered with",
            layer.digest
        );
        let artifact = from_annotations(reference, manifest.annotations.as_ref(), bytes)?;
        Ok(Pulled {
            artifact,
            digest,
            manifest_digest,
        })
    }
}

/// The registries a node pulls from for its tenants (`[registry.oci]`),
/// and the client it pulls with.
#[derive(Clone)]
pub struct Puller {
    client: Arc<Client>,
    registries: Arc<[String]>,
}

impl std::fmt::Debug for Puller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Puller")
            .field("registries", &self.registries)
            .finish_non_exhaustive()
    }
}

impl Puller {
    pub fn new(registries: Vec<String>, settings: &Settings) -> anyhow::Result<Self> {
        Ok(Self {
            client: Arc::new(Client::new(settings)?),
            registries: registries.into(),
        })
    }

    /// Whether tenants may pull from `registry`.
    pub fn allows(&self, registry: &str) -> bool {
        self.registries.iter().any(|r| r == registry)
    }

    /// The registries tenants may pull from.
    pub fn registries(&self) -> &[String] {
        &self.registries
    }

    pub async fn pull(&self, reference: &OciRef, max_bytes: usize) -> anyhow::Result<Pulled> {
        self.client.pull(reference, max_bytes).await
    }
}

/// `error` in words that say what happened and what to do: the client's
/// own are terse ("Server error: url …, code: 401") and quote raw bodies.
fn explain(
    error: oci_client::errors::OciDistributionError,
    reference: &OciRef,
    doing: &str,
) -> anyhow::Error {
    use oci_client::errors::{DigestError, OciDistributionError as E, OciErrorCode};
    let registry = reference.registry();
    let refused = || {
        anyhow::anyhow!(
            "{doing} {reference}: {registry} refused access; sign in with \
             `brink login oci://{registry}` (a node reads [registry.oci] auth_file)"
        )
    };
    match error {
        E::DigestError(DigestError::VerificationError { expected, actual }) => anyhow::anyhow!(
            "{doing} {reference}: the bytes {registry} sent hash to {actual}, not {expected}; \
             its copy is damaged or tampered with, and nothing was kept"
        ),
        E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => refused(),
        E::ServerError {
            code: 401 | 403, ..
        } => refused(),
        E::RegistryError { envelope, .. } => {
            if envelope
                .errors
                .iter()
                .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                return refused();
            }
            let said: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| format!("{:?} {}", e.code, e.message))
                .collect();
            anyhow::anyhow!(
                "{doing} {reference}: {registry} answered {}",
                said.join("; ")
            )
        }
        E::ServerError { code, message, .. } => anyhow::anyhow!(
            "{doing} {reference}: {registry} answered {code}: {}",
            message.trim()
        ),
        other => anyhow::Error::new(other).context(format!("{doing} {reference}")),
    }
}

fn annotations(artifact: &Artifact) -> anyhow::Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    if let Some(name) = &artifact.name {
        map.insert(NAME_ANNOTATION.to_owned(), name.clone());
    }
    if let Some(version) = &artifact.version {
        map.insert(VERSION_ANNOTATION.to_owned(), version.clone());
    }
    if !artifact.signatures.is_empty() {
        map.insert(
            SIGNATURES_ANNOTATION.to_owned(),
            serde_json::to_string(&artifact.signatures)?,
        );
    }
    Ok(map)
}

pub fn from_annotations(
    reference: &OciRef,
    annotations: Option<&BTreeMap<String, String>>,
    bytes: Vec<u8>,
) -> anyhow::Result<Artifact> {
    let get = |key: &str| annotations.and_then(|a| a.get(key)).cloned();
    let signatures = match get(SIGNATURES_ANNOTATION) {
        Some(text) => serde_json::from_str(&text).with_context(|| {
            format!("{reference}: the {SIGNATURES_ANNOTATION} annotation is not a signature list")
        })?,
        None => Vec::new(),
    };
    Ok(Artifact {
        bytes,
        name: get(NAME_ANNOTATION),
        version: get(VERSION_ANNOTATION),
        signatures,
    })
}

/// The manifest's one component layer, checked before it is fetched.
pub fn component_layer(
    reference: &OciRef,
    manifest: &OciImageManifest,
    max_bytes: usize,
) -> anyhow::Result<OciDescriptor> {
    ensure!(
        manifest.config.media_type == CONFIG_MEDIA_TYPE,
        "{reference} is not a Wasm component artifact: its config is {:?}, not {CONFIG_MEDIA_TYPE}",
        manifest.config.media_type
    );
    let [layer] = manifest.layers.as_slice() else {
        bail!(
            "{reference} has {} layers; a component artifact has one {LAYER_MEDIA_TYPE} layer",
            manifest.layers.len()
        );
    };
    ensure!(
        layer.media_type == LAYER_MEDIA_TYPE,
        "{reference}: its layer is {:?}, not {LAYER_MEDIA_TYPE}",
        layer.media_type
    );
    let size = usize::try_from(layer.size).unwrap_or(usize::MAX);
    ensure!(
        size <= max_bytes,
        "{reference}: the component is {size} bytes, over this node's limit of {max_bytes}"
    );
    brink_registry::check_digest(&layer.digest)
        .with_context(|| format!("{reference}: the layer's digest"))?;
    Ok(layer.clone())
}

/// A buffer that refuses to grow past its limit, so a registry that sends
/// more than the manifest declared cannot fill the node's memory.
struct Capped {
    bytes: Vec<u8>,
    limit: usize,
}

impl Capped {
    fn new(limit: usize) -> Self {
        Self {
            bytes: Vec::new(),
            limit,
        }
    }

    fn into_inner(self) -> Vec<u8> {
        self.bytes
    }
}

impl tokio::io::AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.bytes.len().saturating_add(buf.len()) > self.limit {
            return Poll::Ready(Err(std::io::Error::other(format!(
                "the registry sent more than the {} bytes allowed",
                self.limit
            ))));
        }
        self.bytes.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_their_registry_and_a_tag_or_digest() -> anyhow::Result<()> {
        let r = OciRef::parse("oci://127.0.0.1:5000/acme/filter:1.0.0")?;
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.to_string(), "oci://127.0.0.1:5000/acme/filter:1.0.0");
        let digest = format!("sha256:{}", "a".repeat(64));
        let pinned = r.pinned(&digest);
        assert_eq!(pinned.digest(), Some(digest.as_str()));
        assert_eq!(
            pinned.to_string(),
            format!("oci://127.0.0.1:5000/acme/filter@{digest}")
        );
        for bad in [
            "127.0.0.1:5000/acme/filter:1",
            "oci://acme/filter:1",
            "oci://filter:1",
            "oci://ghcr.io/acme/filter",
            "oci://ghcr.io/acme/Filter:1",
        ] {
            assert!(OciRef::parse(bad).is_err(), "{bad} was taken");
        }
        Ok(())
    }

    #[test]
    fn a_layer_that_is_not_one_small_component_is_refused_before_it_is_fetched()
    -> anyhow::Result<()> {
        let r = OciRef::parse("oci://ghcr.io/acme/filter:1")?;
        let layer = |media: &str, size: i64| OciDescriptor {
            media_type: media.to_owned(),
            digest: format!("sha256:{}", "b".repeat(64)),
            size,
            ..OciDescriptor::default()
        };
        let mut manifest = OciImageManifest::default();
        manifest.config.media_type = CONFIG_MEDIA_TYPE.to_owned();
        manifest.layers = vec![layer(LAYER_MEDIA_TYPE, 10)];
        assert!(component_layer(&r, &manifest, 10).is_ok());
        let over = format!(
            "{:#}",
            component_layer(&r, &manifest, 9).err().context("taken")?
        );
        assert!(over.contains("over this node's limit"), "{over}");
        manifest.layers = vec![layer("application/vnd.oci.image.layer.v1.tar", 10)];
        assert!(component_layer(&r, &manifest, 10).is_err());
        manifest.layers = vec![layer(LAYER_MEDIA_TYPE, 1), layer(LAYER_MEDIA_TYPE, 1)];
        assert!(component_layer(&r, &manifest, 10).is_err());
        manifest.layers = vec![layer(LAYER_MEDIA_TYPE, 1)];
        manifest.config.media_type = "application/vnd.oci.image.config.v1+json".to_owned();
        assert!(component_layer(&r, &manifest, 10).is_err());
        Ok(())
    }

    #[test]
    fn a_capped_buffer_refuses_bytes_past_its_limit() -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt as _;
        let runtime = tokio::runtime::Builder::new_current_thread().build()?;
        runtime.block_on(async {
            let mut capped = Capped::new(4);
            capped.write_all(b"abcd").await?;
            assert!(capped.write_all(b"e").await.is_err());
            assert_eq!(capped.into_inner(), b"abcd");
            Ok(())
        })
    }
}
