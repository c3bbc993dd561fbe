//! `brink run`: one function, once per event, on this machine, with the
//! config, buckets and models given as flags.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use brink_host::error::LoadError;
use brink_host::manifest::LimitsSection;
use brink_host::nn::NnConfig;
use brink_host::{Engine, EngineConfig, FunctionSpec, event, plan};

use super::build::build_one;
use crate::parse_key_value;

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The function's component (`.wasm`, built for wasm32-wasip2), or a
    /// function crate's directory, which is built first.
    component: PathBuf,
    /// The event file; `-` reads standard input.
    #[arg(long, short, default_value = "-")]
    event: String,
    /// A configuration value for the function, as key=value (repeatable).
    #[arg(long = "config", short = 'c', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    config: Vec<(String, String)>,
    /// The function's name in logs and errors [default: the file's stem].
    #[arg(long)]
    name: Option<String>,
    /// Wall-clock limit of one invocation, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Memory limit of one instance, in MiB.
    #[arg(long, default_value_t = 64)]
    memory_mb: u64,
    /// Limit on the bytes of output events of one invocation, in KiB.
    #[arg(long, default_value_t = 4096)]
    max_output_kb: usize,
    /// Where compiled code is cached [default: the user's cache dir, brink/compiled].
    #[arg(long, env = "BRINK_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile every time; neither read nor write the cache.
    #[arg(long)]
    no_cache: bool,
    /// Grant the function this key-value bucket (repeatable), in the store
    /// under --data-dir (which a running node must not be using).
    #[arg(long = "kv", value_name = "BUCKET")]
    kv: Vec<String>,
    /// The app whose buckets --kv grants.
    #[arg(long, default_value = "default", requires = "kv")]
    app: String,
    /// Load an ONNX model for the function under a name, as NAME=PATH
    /// (repeatable), run on the CPU by tract: `--model digits=examples/digits/digits.onnx`.
    #[arg(long = "model", value_name = "NAME=PATH", value_parser = parse_key_value)]
    models: Vec<(String, String)>,
    /// Where key-value state lives [default: the user's data dir, brink/data].
    #[arg(long, env = "BRINK_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

pub(crate) fn run(args: RunArgs) -> anyhow::Result<()> {
    let events = event::json::parse(&read_input(&args.event)?)?;
    let component = if args.component.is_dir() {
        build_one(&args.component)?
    } else {
        args.component.clone()
    };
    let runtime = super::runtime()?;
    let spec = {
        // Each model's queue is a task on this runtime.
        let _runtime = runtime.enter();
        spec_of(&args, &component)?
    };
    let engine = Engine::new(EngineConfig {
        max_instances: 4,
        max_memory_bytes: spec.limits.memory_bytes.max(1 << 20),
        cache_dir: if args.no_cache {
            None
        } else {
            args.cache_dir.or_else(brink_host::cache::default_dir)
        },
        ..EngineConfig::default()
    })?;
    let function = engine.load_file(spec, &component).map_err(grant_hint)?;

    let mut stdout = std::io::stdout().lock();
    for (input, types) in events {
        let outputs = runtime.block_on(function.invoke(input)).map_err(|e| {
            match run_hint(&e.to_string()) {
                Some(hint) => anyhow::anyhow!("{e}; {hint}"),
                None => e.into(),
            }
        })?;
        for out in &outputs {
            stdout.write_all(&event::json::write(out, &types)?)?;
            stdout.write_all(b"\n")?;
        }
    }
    stdout.flush()?;
    Ok(())
}

/// The event file's bytes, or standard input's for `-` (saying so at a
/// terminal, where it would otherwise seem to hang).
fn read_input(event: &str) -> anyhow::Result<Vec<u8>> {
    if event != "-" {
        return std::fs::read(event).with_context(|| format!("reading the event file {event}"));
    }
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprintln!(
            "reading the event from standard input (CloudEvents JSON; end with Ctrl-D), or pass --event FILE"
        );
    }
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .context("reading the event from standard input")?;
    Ok(buf)
}

/// The function's spec from the flags: limits, config, models, buckets.
fn spec_of(args: &RunArgs, component: &Path) -> anyhow::Result<FunctionSpec> {
    let name = args.name.clone().unwrap_or_else(|| {
        component
            .file_stem()
            .map(|s| s.to_string_lossy().replace('_', "-"))
            .unwrap_or_else(|| "function".to_owned())
    });
    let mut scope = plan::Scope::default();
    if !args.models.is_empty() {
        let configs = args
            .models
            .iter()
            .map(|(name, path)| {
                (
                    name.clone(),
                    plan::model_config(&cpu_model(path), Path::new(".")),
                )
            })
            .collect();
        scope.models = Some(brink_host::nn::Models::load(&configs, NnConfig::default())?);
    }
    if !args.kv.is_empty() {
        let dir = args
            .data_dir
            .clone()
            .unwrap_or_else(brink_host::node::default_data_dir);
        let kv = brink_host::kv::Kv::open_sled(&dir, brink_host::kv::KvConfig::default())?;
        scope.kv = Some((kv, args.app.clone()));
    }
    let limits = LimitsSection {
        timeout_ms: Some(args.timeout_ms),
        memory_mb: Some(args.memory_mb),
        max_output_kb: Some(args.max_output_kb),
        ..LimitsSection::default()
    };
    let config = args.config.iter().cloned().collect();
    let none = BTreeSet::new();
    let models = args.models.iter().map(|(n, _)| n.clone()).collect();
    let kv = args.kv.iter().cloned().collect();
    let body = plan::Body {
        config: &config,
        limits: &limits,
        instance_reuse: None,
        grants: &none,
        kv: &kv,
        outbox: &none,
        models: &models,
        load_models: false,
    };
    Ok(plan::spec(&name, body, &scope)?)
}

/// A model at `path`, run by tract on the CPU.
fn cpu_model(path: &str) -> brink_host::manifest::ModelSection {
    brink_host::manifest::ModelSection {
        path: PathBuf::from(path),
        backend: brink_host::nn::BackendKind::Tract,
        target: brink_host::nn::Target::Cpu,
        fallback: None,
        max_batch: None,
        max_wait_us: None,
        max_queue: None,
        parallelism: None,
        inline_max_us: None,
    }
}

/// A load refused for an import `brink run` grants through a flag says
/// which flag, not what a manifest would say.
fn grant_hint(error: LoadError) -> anyhow::Error {
    let LoadError::Ungranted {
        function, import, ..
    } = &error
    else {
        return error.into();
    };
    let flag = if import.starts_with("wasi:nn/") {
        "give it a model with --model NAME=PATH (an ONNX file)"
    } else if import.starts_with("wasi:keyvalue/") || import.starts_with("brink:edge/kv") {
        "grant it a bucket with --kv BUCKET"
    } else if import.starts_with("brink:edge/outbox") {
        "brink run has no outbox; run it in a node with `brink up`"
    } else {
        return error.into();
    };
    anyhow::anyhow!("function `{function}` imports `{import}`, which it is not granted; {flag}")
}

/// What to pass `brink run` when a function failed for want of something
/// only a manifest or a flag gives: a config value or a model.
fn run_hint(error: &str) -> Option<String> {
    let quoted = |after: &str| {
        let rest = &error[error.find(after)? + after.len()..];
        rest.split('`').next().map(str::to_owned)
    };
    if error.contains("is not set in the function's spec") {
        let key = quoted("config `")?;
        return Some(format!("pass it with --config {key}=VALUE"));
    }
    if error.contains("is not granted to this function") || error.contains("has no model `") {
        let name = quoted("model `")?;
        return Some(format!("load it with --model {name}=PATH (an ONNX file)"));
    }
    None
}
