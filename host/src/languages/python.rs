//! `brink build` for a Python function: componentize-py over the SDK this
//! binary carries, against a world of the function's declared capabilities,
//! with `wasi:sockets` plugged (see `plug.rs`).
//!
//! The function's folder holds `pyproject.toml` and its module:
//!
//! ```toml
//! [project]
//! name = "filter"
//!
//! [tool.brink]
//! app = "app"              # the module that defines the handler
//! capabilities = ["kv"]    # beyond log and config: "kv", "outbox", "nn"
//! async = false            # true: an `async def` handler (WASI 0.3 task)
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Deserialize;

use super::{plug, toolchain, world};

/// The SDK, as released with this binary; written beside each build.
const SDK: &[(&str, &str)] = &[
    (
        "__init__.py",
        include_str!("../../../guest-sdk/python/brink/__init__.py"),
    ),
    (
        "_dispatch.py",
        include_str!("../../../guest-sdk/python/brink/_dispatch.py"),
    ),
    (
        "config.py",
        include_str!("../../../guest-sdk/python/brink/config.py"),
    ),
    (
        "errors.py",
        include_str!("../../../guest-sdk/python/brink/errors.py"),
    ),
    (
        "event.py",
        include_str!("../../../guest-sdk/python/brink/event.py"),
    ),
    (
        "kv.py",
        include_str!("../../../guest-sdk/python/brink/kv.py"),
    ),
    (
        "nn.py",
        include_str!("../../../guest-sdk/python/brink/nn.py"),
    ),
    (
        "log.py",
        include_str!("../../../guest-sdk/python/brink/log.py"),
    ),
    (
        "outbox.py",
        include_str!("../../../guest-sdk/python/brink/outbox.py"),
    ),
    (
        "testing.py",
        include_str!("../../../guest-sdk/python/brink/testing.py"),
    ),
];

/// `[tool.brink]`: how to build the function.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrinkTable {
    /// `app = "app"`: the module that defines the handler.
    #[serde(default)]
    pub app: Option<String>,
    /// `capabilities = ["kv", "outbox"]`: what the function imports beyond log and config.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// `async = true`: the handler is an `async def`, called as a WASI 0.3 task.
    #[serde(default, rename = "async")]
    pub asynchronous: bool,
}

#[derive(Debug, Deserialize)]
struct PyProject {
    project: Option<Project>,
    #[serde(default)]
    tool: Tools,
}

#[derive(Debug, Deserialize)]
struct Project {
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Tools {
    brink: Option<BrinkTable>,
}

/// What `pyproject.toml` says: the function's name and its `[tool.brink]`.
pub fn read_project(dir: &Path) -> anyhow::Result<(String, BrinkTable)> {
    let path = dir.join("pyproject.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let project: PyProject =
        toml::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    let name = project
        .project
        .and_then(|p| p.name)
        .with_context(|| format!("{} sets no `name` under [project]", path.display()))?;
    super::check_name(&name, &path)?;
    Ok((name, project.tool.brink.unwrap_or_default()))
}

/// Builds the function in `dir`, with the toolchains under `toolchains`, and
/// returns its component, `target/<name>.wasm`.
pub fn build(dir: &Path, toolchains: &Path) -> anyhow::Result<PathBuf> {
    let (name, table) = read_project(dir)?;
    let app = table.app.clone().unwrap_or_else(|| "app".to_owned());
    if !dir.join(format!("{app}.py")).is_file() && !dir.join(&app).join("__init__.py").is_file() {
        bail!(
            "{} has no module `{app}` ({app}.py); set `app` under [tool.brink] in pyproject.toml",
            dir.display()
        );
    }
    let work = dir.join("target").join("brink");
    let wit = world::write(&work, &table.capabilities, table.asynchronous)?;
    let sdk = work.join("sdk");
    super::write_files(&sdk.join("brink"), SDK)?;
    let raw = work.join("componentized.wasm");
    let mut cmd = toolchain::componentize_py(toolchains)?;
    cmd.arg("-d")
        .arg(&wit)
        .args(["-w", "brink:app/function", "componentize", "-p", "."])
        .arg("-p")
        .arg(&sdk)
        .arg(&app)
        .arg("-o")
        .arg(&raw)
        .current_dir(dir);
    eprintln!(
        "brink: building {name} with componentize-py {}",
        toolchain::COMPONENTIZE_PY
    );
    toolchain::run(&mut cmd).context("componentize-py failed; its errors are above")?;
    let bytes = std::fs::read(&raw).with_context(|| format!("reading {}", raw.display()))?;
    let component = plug::without_sockets(&bytes)?.unwrap_or(bytes);
    let out = dir.join("target").join(format!("{name}.wasm"));
    std::fs::write(&out, component).with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
}
