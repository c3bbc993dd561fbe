//! `brink build` for a JavaScript function: rolldown bundles its modules,
//! its npm packages and the SDK this binary carries into one ES module, and
//! componentize-js (StarlingMonkey) makes it a component of a world of the
//! function's declared capabilities.
//!
//! The function's folder holds `package.json` and its modules:
//!
//! ```json
//! { "name": "transform", "type": "module",
//!   "brink": { "main": "transform.js", "capabilities": ["kv"] } }
//! ```
//!
//! componentize-js's own HTTP server (`http`, `fetch-event`) is left out, so
//! the component imports no `wasi:http` or `wasi:sockets`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use serde::Deserialize;

use super::{toolchain, world};

/// The SDK, as released with this binary; written beside each build.
const SDK: &[(&str, &str)] = &[
    (
        "package.json",
        include_str!("../../../guest-sdk/js/package.json"),
    ),
    (
        "src/index.js",
        include_str!("../../../guest-sdk/js/src/index.js"),
    ),
    ("src/kv.js", include_str!("../../../guest-sdk/js/src/kv.js")),
    (
        "src/outbox.js",
        include_str!("../../../guest-sdk/js/src/outbox.js"),
    ),
    (
        "testing/register.js",
        include_str!("../../../guest-sdk/js/testing/register.js"),
    ),
    (
        "testing/hooks.js",
        include_str!("../../../guest-sdk/js/testing/hooks.js"),
    ),
    (
        "testing/host.js",
        include_str!("../../../guest-sdk/js/testing/host.js"),
    ),
    (
        "types/index.d.ts",
        include_str!("../../../guest-sdk/js/types/index.d.ts"),
    ),
    (
        "types/kv.d.ts",
        include_str!("../../../guest-sdk/js/types/kv.d.ts"),
    ),
    (
        "types/outbox.d.ts",
        include_str!("../../../guest-sdk/js/types/outbox.d.ts"),
    ),
];

/// `"brink"` in package.json: how to build the function.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrinkSection {
    /// `"main": "transform.js"`: the module that exports `handler`.
    #[serde(default)]
    pub main: Option<String>,
    /// `"capabilities": ["kv", "outbox"]`: imports beyond log and config.
    #[serde(default)]
    pub capabilities: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct PackageJson {
    name: Option<String>,
    #[serde(default)]
    dependencies: serde_json::Map<String, serde_json::Value>,
    brink: Option<BrinkSection>,
}

/// What `package.json` says: the function's name, its `"brink"` section, and
/// whether it has npm dependencies.
fn read_project(dir: &Path) -> anyhow::Result<(String, BrinkSection, bool)> {
    let path = dir.join("package.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let package: PackageJson =
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    let name = package
        .name
        .with_context(|| format!("{} sets no \"name\"", path.display()))?;
    super::check_name(&name, &path)?;
    let has_dependencies = !package.dependencies.is_empty();
    Ok((name, package.brink.unwrap_or_default(), has_dependencies))
}

/// Builds the function in `dir`, with the toolchains under `toolchains`, and
/// returns its component, `target/<name>.wasm`.
pub fn build(dir: &Path, toolchains: &Path) -> anyhow::Result<PathBuf> {
    let (name, section, has_dependencies) = read_project(dir)?;
    let main = section
        .main
        .clone()
        .unwrap_or_else(|| "index.js".to_owned());
    if !dir.join(&main).is_file() {
        bail!(
            "{} has no {main}; set \"main\" under \"brink\" in package.json",
            dir.display()
        );
    }
    if has_dependencies && !dir.join("node_modules").is_dir() {
        if !dir.join("package-lock.json").is_file() {
            bail!(
                "{} has dependencies but no node_modules or package-lock.json; run `npm install` there, then build again",
                dir.display()
            );
        }
        eprintln!("brink: installing {name}'s dependencies (npm ci)");
        toolchain::run(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(dir),
        )
        .context("npm ci failed; its errors are above")?;
    }
    let work = dir.join("target").join("brink");
    let wit = world::write(&work, &section.capabilities, false)?;
    let sdk = work.join("sdk");
    super::write_files(&sdk, SDK)?;
    let bin = toolchain::js_bin(toolchains)?;
    contract_types(&bin, &work, &wit, &sdk.join("types").join("contract"))?;
    let bundle = work.join("bundle.js");
    let config = work.join("rolldown.config.mjs");
    std::fs::write(&config, rolldown_config(&dir.join(&main), &sdk, &bundle))
        .with_context(|| format!("writing {}", config.display()))?;
    eprintln!("brink: bundling {main} with rolldown");
    toolchain::run(
        Command::new(bin.join("rolldown"))
            .arg("--config")
            .arg(&config)
            .current_dir(dir),
    )
    .context("rolldown failed; its errors are above")?;
    let out = dir.join("target").join(format!("{name}.wasm"));
    eprintln!(
        "brink: building {name} with componentize-js {}",
        toolchain::COMPONENTIZE_JS
    );
    toolchain::run(
        Command::new(bin.join("componentize-js"))
            .arg(&bundle)
            .arg("--wit")
            .arg(&wit)
            .args([
                "--world-name",
                "brink:app/function",
                "--disable",
                "http",
                "fetch-event",
                "--out",
            ])
            .arg(&out)
            .current_dir(dir),
    )
    .context("componentize-js failed; its errors are above")?;
    Ok(out)
}

/// The TypeScript declarations of the function's world (the contract's
/// records and interfaces it imports), generated from the WIT by jco.
///
/// jco reads the WIT through its WASI shim, which in this version opens no
/// directory unless told to; a module loaded first gives it `/`.
fn contract_types(bin: &Path, work: &Path, wit: &Path, out: &Path) -> anyhow::Result<()> {
    let shim = bin.join(
        "../@bytecodealliance/jco-transpile/node_modules/@bytecodealliance/preview2-shim/dist/nodejs/filesystem.js",
    );
    let preopen = work.join("preopen.mjs");
    let url = serde_json::Value::String(format!("file://{}", shim.display())).to_string();
    std::fs::write(
        &preopen,
        format!("import {{ _addPreopen }} from {url};\n_addPreopen('/', '/');\n"),
    )
    .with_context(|| format!("writing {}", preopen.display()))?;
    toolchain::run(
        Command::new("node")
            .arg("--import")
            .arg(&preopen)
            .arg(bin.join("jco"))
            .arg("types")
            .arg(wit)
            .args(["--world-name", "brink:app/function", "--quiet", "--out-dir"])
            .arg(out),
    )
    .context("jco could not write the TypeScript types; its errors are above")
}

/// Bundles `main` into one ES module: the contract's imports stay imports,
/// and `brink`, `brink/kv` and `brink/outbox` are the SDK written at `sdk`.
fn rolldown_config(main: &Path, sdk: &Path, bundle: &Path) -> String {
    let js = |p: &Path| serde_json::Value::String(p.display().to_string()).to_string();
    format!(
        "// Written by `brink build`.\nexport default {{\n  input: {input},\n  external: [/^brink:/, /^wasi:/],\n  platform: 'neutral',\n  resolve: {{ alias: {{\n    'brink/kv': {kv},\n    'brink/outbox': {outbox},\n    'brink': {index},\n  }} }},\n  output: {{ file: {file}, format: 'esm', codeSplitting: false }},\n  logLevel: 'warn',\n}};\n",
        input = js(main),
        kv = js(&sdk.join("src/kv.js")),
        outbox = js(&sdk.join("src/outbox.js")),
        index = js(&sdk.join("src/index.js")),
        file = js(bundle),
    )
}
