//! `brink`: the edge-function host's command line.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use brink_host::manifest::Trigger;
use brink_host::{Engine, EngineConfig};
use clap::{Parser, Subcommand};

mod cli;

use cli::{audit, build, client, deploy, keys, kv, logs, new, outbox, run, status, tenant};

/// Run small sandboxed WebAssembly functions on an edge node: they handle
/// CloudEvents that arrive over MQTT or HTTP, keep state, run models, and
/// forward to the cloud through outages. `brink up` starts a node.
#[derive(Debug, Parser)]
#[command(name = "brink", version, long_about = None)]
struct Cli {
    /// Log filter: a level, then `target=level` pairs (e.g. `info`, `info,brink_host=debug,guest=trace`).
    #[arg(
        long,
        global = true,
        env = "BRINK_LOG",
        default_value = "info,rumqttd=warn"
    )]
    log: String,

    /// How log records are written to stderr: `text` for people, `json`
    /// (one object per line) for log shippers.
    #[arg(long, global = true, env = "BRINK_LOG_FORMAT", value_enum, default_value_t = cli::logging::LogFormat::Text)]
    log_format: cli::logging::LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a function once on CloudEvents and print its output events.
    ///
    /// Reads a CloudEvent in the JSON format (or a JSON array of them, the
    /// batch format), runs the component once per event in a fresh sandboxed
    /// instance, and prints each output event as one line of CloudEvents JSON.
    Run(run::RunArgs),
    /// Start an edge node: load the app manifest's functions and serve their triggers.
    ///
    /// Serves HTTP (`POST /events`, `POST /functions/<name>`, `GET /healthz`,
    /// `GET /metrics`) on the manifest's `[http] listen` address until
    /// SIGTERM or Ctrl-C, then drains in-flight requests and exits 0.
    Up(UpArgs),
    /// Publish one message to the node's MQTT broker, with QoS 1.
    ///
    /// The broker is the manifest's (`[mqtt] url`, or the embedded broker's
    /// address); `--url` names another. The payload is sent as is: plain
    /// JSON from a device, or a CloudEvent in the JSON format.
    Publish(PublishArgs),
    /// Build a function folder in Rust, Python or JavaScript into a component.
    ///
    /// Rust: adds the wasm32-wasip2 target with rustup when it is missing,
    /// then runs cargo. Python: componentize-py, installed on first use into
    /// a venv of brink's own. Prints the path of each component built.
    Build(build::BuildArgs),
    /// Write a new function folder from a template: `brink new python hello`.
    ///
    /// It holds the handler, a unit test, a sample event and a README, and
    /// builds with `brink build` and runs with `brink run`.
    New(new::NewArgs),
    /// Print a shell's completion script for brink, e.g.
    /// `brink completions bash > ~/.local/share/bash-completion/completions/brink`.
    Completions { shell: clap_complete::Shell },
    /// Inspect and seed a running node's key-value state, over its admin API.
    ///
    /// `brink kv ls` lists the app's buckets; `brink kv ls devices` the keys
    /// of one; `get` writes a value's bytes to stdout; `set` stores the value
    /// given (or `--file`); `del` removes a key.
    Kv(kv::KvArgs),
    /// Show or purge a running node's outbox, over its admin API.
    ///
    /// `brink outbox status` shows each uplink's backlog (events, bytes, age
    /// of the oldest), what was sent, retried, dropped and expired, and
    /// whether it is connected, and what is parked; `brink outbox purge
    /// <uplink>` drops its backlog; `brink outbox parked <uplink>` lists the
    /// events it refused for good, `retry` moves them back to the queue, and
    /// `purge <uplink> --parked` drops them.
    Outbox(outbox::OutboxArgs),
    /// Read a node's audit ledger (`ls`), or check it for tampering (`verify`).
    ///
    /// Every change made to the node (deploys, tenants, tokens, purges) and
    /// every refused sign-in is recorded in a hash-chained, signed ledger in
    /// its data directory.
    Audit(audit::AuditArgs),
    /// Make an ed25519 signing key (secret in --out; prints the public key).
    Keygen {
        #[arg(long, default_value = "brink.key")]
        out: PathBuf,
    },
    /// Sign a component as NAME@VERSION; adds to `<component>.sigs.json`, which `brink deploy` sends.
    Sign {
        component: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        version: String,
    },
    /// Check a token against a node's admin API and save both for the
    /// commands below; or, for `oci://<registry>`, check a registry login
    /// and store it in the docker config file.
    Login {
        /// The node's admin API, or `oci://<registry>`.
        url: String,
        #[arg(long, env = "BRINK_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// The registry user (`oci://` only).
        #[arg(long, short)]
        username: Option<String>,
        /// Read the registry password from standard input (`oci://` only).
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        registry: cli::oci::RegistryFlags,
    },
    /// Remove a registry's credentials from the docker config file.
    Logout {
        /// `oci://<registry>`.
        registry: String,
        #[command(flatten)]
        flags: cli::oci::RegistryFlags,
    },
    /// Push a component, its name, version and signatures to an OCI registry.
    Push(cli::oci::PushArgs),
    /// Pull a component and its signatures from an OCI registry.
    Pull(cli::oci::PullArgs),
    /// Upload, publish and activate a function version on a running node.
    Deploy(deploy::DeployArgs),
    /// The calling tenant's functions: active version, versions, previous.
    Ls {
        #[command(flatten)]
        remote: client::Remote,
    },
    /// Remove a function and all its versions.
    Rm {
        name: String,
        #[command(flatten)]
        remote: client::Remote,
    },
    /// End a function's canary; without one, make the previously active
    /// version active again.
    Rollback {
        name: String,
        #[command(flatten)]
        fleet: cli::fleet::FleetFlags,
        #[command(flatten)]
        remote: client::Remote,
    },
    /// Activate a version (`1.2.3`, `^1.2`, `latest`) of a function; with
    /// `--weight`, as a canary beside the active version.
    Activate {
        name: String,
        version: String,
        /// 1 to 99: send this percentage of the events (picked by event id,
        /// so a retried event lands on the same version) to VERSION, the
        /// rest to the active one, until `brink promote` or `brink rollback`.
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=99))]
        weight: Option<u8>,
        #[command(flatten)]
        remote: client::Remote,
    },
    /// Make a function's canary its active version.
    Promote {
        name: String,
        #[command(flatten)]
        remote: client::Remote,
    },
    /// Invoke a deployed function with one event; prints its output events as JSON lines.
    Invoke {
        name: String,
        /// The event's data: JSON, or else text.
        #[arg(long, default_value = "{}")]
        data: String,
        #[arg(long = "type", default_value = "com.brink.invoke")]
        ty: String,
        #[command(flatten)]
        remote: client::Remote,
    },
    /// A deployed function's recent log records (its log calls, stdout,
    /// stderr, and the host's word on failed invocations).
    Logs {
        name: String,
        /// Keep printing new records as they come (server-sent events).
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        remote: client::Remote,
    },
    /// What the node is and has: version, uptime, machine, disk, GPUs,
    /// ONNX Runtime's providers, and where each model runs.
    Status {
        #[command(flatten)]
        remote: client::Remote,
    },
    /// Usage per tenant: functions, invocations, execution time.
    Usage {
        #[command(flatten)]
        remote: client::Remote,
    },
    /// Manage tenants (operator token).
    Tenant {
        #[command(subcommand)]
        command: tenant::TenantCommand,
        #[command(flatten)]
        remote: client::Remote,
    },
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    /// The app manifest.
    #[arg(default_value = "brink.toml")]
    manifest: PathBuf,
    /// Override the manifest's `[http] listen` address.
    #[arg(long)]
    http_listen: Option<std::net::SocketAddr>,
    /// Where compiled code is cached [default: the user's cache dir, brink/compiled].
    #[arg(long, env = "BRINK_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Print every MQTT message on this topic filter to stdout (repeatable), e.g. `alerts/#`.
    #[arg(long, value_name = "FILTER")]
    tail: Vec<String>,
    /// Run three simulated temperature sensors that publish plain JSON to
    /// `sensors/t-N/temperature` on the node's broker.
    #[arg(long)]
    simulate: bool,
    /// Where key-value state and the outbox live, unless the manifest's `data_dir` says
    /// [default: the user's data dir, brink/data].
    #[arg(long, env = "BRINK_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// How often each simulated sensor publishes, in milliseconds.
    #[arg(long, default_value_t = 1000, requires = "simulate")]
    simulate_interval_ms: u64,
    /// Check the manifest and every function it names (build, load, grants)
    /// without serving anything, then exit: 0 when all is well.
    #[arg(long, conflicts_with_all = ["tail", "simulate"])]
    check: bool,
    /// Take this node out of its shared group for good: resume its broker
    /// session, unsubscribe, handle the messages the session held until
    /// none has come for `--quiet-ms`, then end the session and exit. What
    /// the broker had queued for it is handled, not dropped.
    #[arg(long, conflicts_with_all = ["tail", "simulate", "check"])]
    retire: bool,
    /// How long a retiring node waits with no message before it is done.
    #[arg(long, default_value_t = 3000, requires = "retire")]
    quiet_ms: u64,
    /// Function instances that may exist at once, warm ones included (the
    /// instance pool). Each reserves 8 GiB of address space, not memory;
    /// lower it where address space is short (39-bit ARM64 kernels, tools
    /// such as valgrind).
    #[arg(long, env = "BRINK_MAX_INSTANCES", default_value_t = brink_host::engine::DEFAULT_MAX_INSTANCES,
          value_parser = clap::value_parser!(u32).range(1..=16_384))]
    max_instances: u32,
}

#[derive(Debug, clap::Args)]
struct PublishArgs {
    /// The topic, e.g. `sensors/t-1/temperature`.
    topic: String,
    /// The payload, e.g. `{"device":"t-1","value":35.2}`; `-` reads standard input.
    payload: String,
    /// The app manifest whose broker to use [default: ./brink.toml when
    /// there is one, else the embedded broker's default address]. A
    /// manifest named here must be readable.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// The broker, e.g. `mqtt://127.0.0.1:1883`, instead of the manifest's.
    #[arg(long)]
    url: Option<String>,
    /// MQTT 5 Content Type of the message (e.g. `application/cloudevents+json`).
    #[arg(long)]
    content_type: Option<String>,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// The command line, with a "did you mean" for mistyped subcommands that
/// clap's own similarity test misses: `rnu` is one swap from `run`.
fn parse_cli() -> Cli {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let mut error = match Cli::try_parse() {
        Ok(cli) => return cli,
        Err(e) => e,
    };
    if error.kind() == ErrorKind::InvalidSubcommand
        && error.get(ContextKind::SuggestedSubcommand).is_none()
        && let Some(ContextValue::String(typed)) = error.get(ContextKind::InvalidSubcommand)
    {
        let command = <Cli as clap::CommandFactory>::command();
        let closest = command
            .get_subcommands()
            .map(|c| c.get_name())
            .map(|name| (strsim::osa_distance(typed, name), name))
            .filter(|(distance, name)| *distance <= 2 && *distance < name.len())
            .min();
        if let Some((_, name)) = closest {
            error.insert(
                ContextKind::SuggestedSubcommand,
                ContextValue::Strings(vec![name.to_owned()]),
            );
        }
    }
    error.exit()
}

fn main() -> ExitCode {
    let cli = parse_cli();
    if let Err(e) = cli::logging::init(&cli.log, cli.log_format) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Up(args) => up(args),
        Command::Publish(args) => publish(args),
        Command::Build(args) => build::build(args),
        Command::New(args) => new::new(args),
        Command::Kv(args) => kv::run(args),
        Command::Outbox(args) => outbox::run(args),
        Command::Audit(args) => audit::run(args),
        Command::Keygen { out } => keys::keygen(&out),
        Command::Completions { shell } => {
            // Into a buffer: clap_complete panics when stdout is closed early.
            let mut script = Vec::new();
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "brink",
                &mut script,
            );
            std::io::stdout()
                .write_all(&script)
                .context("writing the completion script")
        }
        Command::Sign {
            component,
            key,
            name,
            version,
        } => keys::sign(&component, &key, &name, &version),
        other => remote_command(other),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, for people and scripts alike.
            let _ = writeln!(std::io::stderr(), "error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// `error` and its causes on one line, each said once: many errors repeat
/// their source's message in their own (io, hyper, reqwest), so printing the
/// whole chain would say "Connection refused" two or three times.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        // Some causes quote a server's answer, newline and all.
        let text = cause.to_string().trim().replace(['\r', '\n'], " ");
        if line.contains(text.as_str()) {
            continue;
        }
        // A cause that repeats everything so far and adds to it replaces it.
        if !line.is_empty() && text.contains(line.as_str()) {
            line = text;
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn remote_command(command: Command) -> anyhow::Result<()> {
    let runtime = cli::runtime()?;
    runtime.block_on(async move {
        match command {
            Command::Login {
                url,
                token,
                username,
                password_stdin,
                registry,
            } => {
                if url.starts_with("oci://") {
                    cli::oci::login(&url, username, password_stdin, &registry).await
                } else {
                    let token = token.context("pass --token (or set BRINK_TOKEN)")?;
                    client::login(&url, &token).await
                }
            }
            Command::Logout { registry, flags } => cli::oci::logout(&registry, &flags),
            Command::Push(args) => {
                let component = deploy::component_of(&args.source).await?;
                cli::oci::push(args, &component).await
            }
            Command::Pull(args) => cli::oci::pull(args).await,
            Command::Deploy(args) => deploy::deploy(args).await,
            Command::Ls { remote } => deploy::ls(&remote).await,
            Command::Rm { name, remote } => deploy::change(&remote, &name, "rm", None).await,
            Command::Rollback {
                name,
                fleet,
                remote,
            } => {
                if fleet.any() {
                    cli::fleet::rollback(&fleet, &remote, &name).await
                } else {
                    deploy::change(&remote, &name, "rollback", None).await
                }
            }
            Command::Activate {
                name,
                version,
                weight,
                remote,
            } => deploy::change_with(&remote, &name, "activate", Some(&version), weight).await,
            Command::Promote { name, remote } => {
                deploy::change(&remote, &name, "promote", None).await
            }
            Command::Invoke {
                name,
                data,
                ty,
                remote,
            } => deploy::invoke(&remote, &name, &data, &ty).await,
            Command::Logs {
                name,
                follow,
                remote,
            } => logs::logs(&remote, &name, follow).await,
            Command::Usage { remote } => deploy::usage(&remote).await,
            Command::Status { remote } => status::status(&remote).await,
            Command::Tenant { command, remote } => tenant::tenant(&remote, command).await,
            _ => bail!("not a remote command"),
        }
    })
}

fn up(args: UpArgs) -> anyhow::Result<()> {
    let mut manifest = brink_host::manifest::Manifest::load(&args.manifest)?;
    if let Some(addr) = args.http_listen {
        manifest.http.listen = addr;
    }
    if manifest.data_dir.is_none() {
        manifest.data_dir = args.data_dir.clone();
    }
    let base = args
        .manifest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
        .to_owned();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let engine = Engine::new(EngineConfig {
            cache_dir: args.cache_dir.or_else(brink_host::cache::default_dir),
            max_instances: args.max_instances,
            ..EngineConfig::default()
        })?;
        if args.check {
            let n = brink_host::node::Node::check(&manifest, &base, &engine).await?;
            println!(
                "{}: valid; {n} function(s) built and loaded",
                args.manifest.display()
            );
            return Ok(());
        }
        if args.retire {
            return retire(
                manifest,
                &base,
                &engine,
                Duration::from_millis(args.quiet_ms),
            )
            .await;
        }
        let routes = routes(&manifest);
        let node = brink_host::node::Node::start(manifest, &base, &engine).await?;
        print_routes(&routes, &node);
        if args.simulate || !args.tail.is_empty() {
            let Some(settings) = node.mqtt_settings().cloned() else {
                anyhow::bail!("--simulate and --tail need a manifest whose functions use MQTT");
            };
            if !args.tail.is_empty() {
                tokio::spawn(brink_host::node::tools::tail(
                    settings.clone(),
                    args.tail.clone(),
                ));
            }
            if args.simulate {
                tokio::spawn(brink_host::node::tools::simulate(
                    settings,
                    Duration::from_millis(args.simulate_interval_ms.max(1)),
                ));
            }
        }
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
            _ = sigterm.recv() => {}
        }
        tracing::info!("shutting down: draining in-flight events");
        node.shutdown().await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// `brink up --retire`.
async fn retire(
    mut manifest: brink_host::manifest::Manifest,
    base: &std::path::Path,
    engine: &Engine,
    quiet: Duration,
) -> anyhow::Result<()> {
    if manifest.mqtt.url.is_none() {
        bail!(
            "--retire ends a node's session at an external broker ([mqtt] url); the embedded \
             broker's sessions live and end with this node"
        );
    }
    manifest.mqtt.retire = true;
    let node = brink_host::node::Node::start(manifest, base, engine).await?;
    let broker = node.mqtt_broker().unwrap_or("the broker").to_owned();
    let client = node
        .mqtt_settings()
        .map(|s| s.client_id.clone())
        .unwrap_or_default();
    let handled = node.retire(quiet).await?;
    println!("retired {client} at {broker}: handled {handled} queued messages, session ended");
    Ok(())
}

/// Each function's triggers, as `brink up` lists them once the node is ready.
fn routes(manifest: &brink_host::manifest::Manifest) -> Vec<(String, Vec<Trigger>)> {
    manifest
        .function
        .iter()
        .map(|(name, f)| (name.clone(), f.triggers.clone()))
        .collect()
}

fn print_routes(routes: &[(String, Vec<Trigger>)], node: &brink_host::node::Node) {
    let http = node.http_addr();
    let broker = node.mqtt_broker().unwrap_or("the node's broker");
    let mut out = String::from("Functions:\n");
    for (name, triggers) in routes {
        out.push_str(&format!(
            "  {name}\n    POST http://{http}/functions/{name}\n"
        ));
        for trigger in triggers {
            out.push_str(&match trigger {
                Trigger::Http(path) => format!("    POST http://{http}/events{path}\n"),
                Trigger::Mqtt(filter) => format!("    MQTT {filter} on {broker}\n"),
                Trigger::EventType(ty) => {
                    format!("    POST http://{http}/events[/PATH] with type {ty}\n")
                }
            });
        }
    }
    // On stderr: stdout carries data (`--tail`), for pipes and scripts.
    eprint!("{out}");
}

fn publish(args: PublishArgs) -> anyhow::Result<()> {
    // A manifest named on the command line must be read; only the implicit
    // ./brink.toml may be absent.
    let manifest = match &args.manifest {
        Some(path) => Some(path.clone()),
        None => Some(PathBuf::from("brink.toml")).filter(|p| p.is_file()),
    };
    let (mut section, base) = if let Some(manifest) = manifest {
        let base = manifest
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        (brink_host::manifest::Manifest::load(&manifest)?.mqtt, base)
    } else {
        (
            brink_host::manifest::MqttSection::default(),
            std::path::PathBuf::new(),
        )
    };
    if args.url.is_some() {
        section.url = args.url;
    }
    let payload = if args.payload == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading the payload from standard input")?;
        buf
    } else {
        args.payload.into_bytes()
    };
    let settings = brink_host::node::mqtt::Settings::from_section(&section, &base)?;
    let runtime = cli::runtime()?;
    runtime.block_on(brink_host::node::tools::publish_once(
        &settings,
        &args.topic,
        payload,
        args.content_type,
    ))?;
    eprintln!(
        "published to {} on {}:{}",
        args.topic, settings.host, settings.port
    );
    Ok(())
}

/// Encodes a key for the admin API's path, keeping `/` (keys may hold it).
fn key_path(key: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(key, SET).to_string()
}
