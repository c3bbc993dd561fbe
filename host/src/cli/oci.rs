//! `brink push`, `brink pull` and `brink login oci://…`: components in OCI
//! registries (ADR 0016), and what `brink deploy oci://…` reads of one.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use brink_host::oci::{self, Artifact, Client, OciRef, Settings};

use super::keys::{read_key, read_signatures, signatures_file};

/// How the CLI reaches a registry.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RegistryFlags {
    /// Speak plain HTTP to the registry (one on loopback); HTTPS otherwise.
    #[arg(long, env = "BRINK_OCI_PLAIN_HTTP")]
    pub plain_http: bool,
    /// PEM certificates to trust beside the system's CAs (a registry with
    /// its own CA).
    #[arg(long, value_name = "FILE", env = "BRINK_OCI_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// The docker config file with the registry's credentials [default:
    /// $DOCKER_CONFIG/config.json, else ~/.docker/config.json].
    #[arg(
        long = "registry-config",
        value_name = "FILE",
        env = "BRINK_OCI_CONFIG"
    )]
    pub registry_config: Option<PathBuf>,
}

impl RegistryFlags {
    fn config_path(&self) -> Option<PathBuf> {
        self.registry_config
            .clone()
            .or_else(oci::auth::default_path)
    }

    pub fn client(&self, reference: &OciRef) -> anyhow::Result<Client> {
        Client::new(&Settings {
            plain_http: if self.plain_http {
                vec![reference.registry().to_owned()]
            } else {
                Vec::new()
            },
            ca_file: self.ca_file.clone(),
            auth_file: self.config_path(),
        })
    }
}

/// `brink push`'s arguments.
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// A component (`.wasm`), or a function crate to build first.
    pub source: PathBuf,
    /// `oci://<registry>/<repository>:<tag>`.
    pub reference: String,
    /// The function name its signatures sign [default: the file's or crate's name].
    #[arg(long)]
    pub name: Option<String>,
    /// The version its signatures sign, and the artifact's version annotation.
    #[arg(long)]
    pub version: String,
    /// Sign with this key; signatures in `<component>.sigs.json` travel too.
    #[arg(long)]
    pub sign_with: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

/// `brink pull`'s arguments.
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// `oci://<registry>/<repository>:<tag>` or `…@sha256:<hex>`.
    pub reference: String,
    /// Where to write the component; its signatures go beside it in
    /// `<out>.sigs.json`, where `brink deploy` finds them [default: the
    /// repository's last part, `.wasm`].
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

/// The name a component goes by when `--name` is not given: its file's
/// stem, with `_` as `-` (cargo's `my_filter.wasm` is crate `my-filter`).
fn default_name(component: &Path) -> anyhow::Result<String> {
    let stem = component
        .file_stem()
        .and_then(|s| s.to_str())
        .context("the component's file name is not UTF-8; pass --name")?;
    Ok(stem.replace('_', "-"))
}

/// `brink push`: the component, its name, version and signatures, as one
/// artifact; prints the pinned reference.
pub async fn push(args: PushArgs, component: &Path) -> anyhow::Result<()> {
    let reference = OciRef::parse(&args.reference)?;
    let bytes =
        std::fs::read(component).with_context(|| format!("reading {}", component.display()))?;
    let name = match args.name {
        Some(name) => name,
        None => default_name(component)?,
    };
    brink_registry::check_name(&name)?;
    let version = brink_registry::parse_version(&args.version)?.to_string();
    let digest = brink_registry::digest(&bytes);
    let mut signatures = read_signatures(component)?;
    if let Some(key) = &args.sign_with {
        let signature = read_key(key)?.sign(&digest, &name, &version);
        signatures.retain(|s| s.key != signature.key);
        signatures.push(signature);
    }
    let count = signatures.len();
    let artifact = Artifact {
        bytes,
        name: Some(name.clone()),
        version: Some(version.clone()),
        signatures,
    };
    let manifest = args
        .registry
        .client(&reference)?
        .push(&reference, &artifact)
        .await?;
    eprintln!("pushed {name}@{version} ({digest}), {count} signatures");
    println!("{}", reference.pinned(&manifest));
    Ok(())
}

/// `brink pull`: writes the component and its signatures; prints where.
pub async fn pull(args: PullArgs) -> anyhow::Result<()> {
    let reference = OciRef::parse(&args.reference)?;
    let pulled = args
        .registry
        .client(&reference)?
        .pull(
            &reference,
            brink_host::EngineConfig::default().max_component_bytes,
        )
        .await?;
    let out = match args.out {
        Some(out) => out,
        None => {
            let last = args.reference.rsplit('/').next().unwrap_or("component");
            let repo = last.split([':', '@']).next().unwrap_or("component");
            PathBuf::from(format!("{repo}.wasm"))
        }
    };
    std::fs::write(&out, &pulled.artifact.bytes)
        .with_context(|| format!("writing {}", out.display()))?;
    let sigs = signatures_file(&out);
    if pulled.artifact.signatures.is_empty() {
        match std::fs::remove_file(&sigs) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing the stale {}", sigs.display()));
            }
            _ => {}
        }
    } else {
        std::fs::write(
            &sigs,
            serde_json::to_vec_pretty(&pulled.artifact.signatures)?,
        )
        .with_context(|| format!("writing {}", sigs.display()))?;
    }
    eprintln!(
        "pulled {}@{} ({}), {} signatures, from {}",
        pulled.artifact.name.as_deref().unwrap_or("?"),
        pulled.artifact.version.as_deref().unwrap_or("?"),
        pulled.digest,
        pulled.artifact.signatures.len(),
        reference.pinned(&pulled.manifest_digest),
    );
    println!("{}", out.display());
    Ok(())
}

/// What `brink deploy oci://…` learns from the manifest alone: the layer's
/// digest, the name, version and signatures, and the reference pinned to
/// the manifest's digest, so every node pulls the same bytes.
pub struct Resolved {
    pub reference: OciRef,
    pub digest: String,
    pub name: Option<String>,
    pub version: Option<String>,
    pub signatures: Vec<brink_registry::Signature>,
}

pub async fn resolve(text: &str, flags: &RegistryFlags) -> anyhow::Result<Resolved> {
    let reference = OciRef::parse(text)?;
    let (manifest, manifest_digest) = flags.client(&reference)?.manifest(&reference).await?;
    let layer = oci::component_layer(&reference, &manifest, usize::MAX)?;
    let artifact = oci::from_annotations(&reference, manifest.annotations.as_ref(), Vec::new())?;
    Ok(Resolved {
        reference: reference.pinned(&manifest_digest),
        digest: layer.digest,
        name: artifact.name,
        version: artifact.version,
        signatures: artifact.signatures,
    })
}

/// `brink login oci://<registry>`: checks the credentials with the
/// registry, then stores them in the docker config file.
pub async fn login(
    registry: &str,
    username: Option<String>,
    password_stdin: bool,
    flags: &RegistryFlags,
) -> anyhow::Result<()> {
    let host = registry.trim_start_matches("oci://").trim_end_matches('/');
    let username = username.context("pass --username for a registry login")?;
    if !password_stdin {
        bail!("pass the password on standard input with --password-stdin (never as an argument)");
    }
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .context("reading the password from standard input")?;
    let password = password.trim_end_matches(['\r', '\n']).to_owned();
    anyhow::ensure!(!password.is_empty(), "standard input held no password");
    // Any repository serves to check the credentials against.
    let probe = OciRef::parse(&format!("oci://{host}/brink/login-check:latest"))?;
    let auth = oci_client::secrets::RegistryAuth::Basic(username.clone(), password.clone());
    flags.client(&probe)?.check_login(&probe, &auth).await?;
    let path = flags
        .config_path()
        .context("no home directory for the docker config; pass --registry-config")?;
    oci::auth::store(&path, host, &username, &password)?;
    println!(
        "signed in to {host} as {username}; credentials in {}",
        path.display()
    );
    Ok(())
}

/// `brink logout oci://<registry>`.
pub fn logout(registry: &str, flags: &RegistryFlags) -> anyhow::Result<()> {
    let host = registry.trim_start_matches("oci://").trim_end_matches('/');
    let path = flags
        .config_path()
        .context("no home directory for the docker config; pass --registry-config")?;
    if oci::auth::remove(&path, host)? {
        println!("signed out of {host}");
    } else {
        println!("{} held no credentials for {host}", path.display());
    }
    Ok(())
}
