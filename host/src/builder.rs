//! Builds function crates for `wasm32-wasip2`.
//!
//! Shared by `brink build` and the test-support crate's `build.rs` (which
//! includes this file with `#[path]`), so it depends on `std` and `serde_json`
//! only.

use std::ffi::OsString;
use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The target every Brink function is built for.
pub const WASM_TARGET: &str = "wasm32-wasip2";

/// Variables an outer cargo (a build script, `cargo clippy`) sets that must not
/// leak into the nested guest build: they would retarget it, re-wrap rustc with
/// clippy-driver, or apply host-only flags to wasm.
const SCRUBBED_ENV: &[&str] = &[
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_PRIMARY_PACKAGE",
    "CLIPPY_ARGS",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTC_WRAPPER",
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "__CARGO_FIX_PLZ",
];

/// Why a build failed.
#[derive(Debug)]
pub enum BuildError {
    /// `wasm32-wasip2` is not installed and could not be added.
    MissingTarget(String),
    /// A tool could not be started.
    Spawn {
        program: String,
        error: std::io::Error,
    },
    /// cargo ran and failed.
    CargoFailed { manifest: PathBuf, status: String },
    /// cargo succeeded but produced no component.
    NoArtifacts { manifest: PathBuf },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::MissingTarget(msg) => f.write_str(msg),
            BuildError::Spawn { program, error } => write!(f, "cannot run `{program}`: {error}"),
            BuildError::CargoFailed { manifest, status } => write!(
                f,
                "building {} for {WASM_TARGET} failed ({status}); cargo's errors are above",
                manifest.display()
            ),
            BuildError::NoArtifacts { manifest } => write!(
                f,
                "building {} produced no .wasm component; a function crate needs `crate-type = [\"cdylib\"]`",
                manifest.display()
            ),
        }
    }
}

impl std::error::Error for BuildError {}

/// One built component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// The cargo package it came from, e.g. `fixture-trap`.
    pub package: String,
    /// Where the component is.
    pub path: PathBuf,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The crate's or workspace's `Cargo.toml`.
    pub manifest_path: PathBuf,
    /// Where cargo puts its output; cargo's default when `None`.
    pub target_dir: Option<PathBuf>,
    /// Release (optimised) or debug.
    pub release: bool,
}

fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

fn rustc() -> OsString {
    std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into())
}

fn target_installed() -> Result<bool, BuildError> {
    let out = Command::new(rustc())
        .args(["--print", "sysroot"])
        .output()
        .map_err(|error| BuildError::Spawn {
            program: "rustc".into(),
            error,
        })?;
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok(Path::new(&sysroot)
        .join("lib/rustlib")
        .join(WASM_TARGET)
        .join("lib")
        .is_dir())
}

/// Makes sure `wasm32-wasip2` is installed, adding it with rustup when it is
/// missing (a fresh machine lacks it) and saying so on stderr.
pub fn ensure_wasm_target() -> Result<(), BuildError> {
    if target_installed()? {
        return Ok(());
    }
    eprintln!(
        "brink: the {WASM_TARGET} target is missing; adding it with `rustup target add {WASM_TARGET}`"
    );
    let status = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .status();
    match status {
        Ok(s) if s.success() && target_installed()? => Ok(()),
        Ok(s) => Err(BuildError::MissingTarget(format!(
            "`rustup target add {WASM_TARGET}` failed ({s}); run it by hand, then build again"
        ))),
        Err(_) => Err(BuildError::MissingTarget(format!(
            "the {WASM_TARGET} target is not installed and rustup is not available; \
             install the target for this toolchain (with rustup: `rustup target add {WASM_TARGET}`)"
        ))),
    }
}

/// Builds every `cdylib` in the crate or workspace at `request.manifest_path`
/// for `wasm32-wasip2` and returns the components produced.
///
/// cargo's own progress and errors go to this process's stderr.
pub fn build(request: &BuildRequest) -> Result<Vec<Artifact>, BuildError> {
    ensure_wasm_target()?;
    let mut cmd = Command::new(cargo());
    cmd.arg("build")
        .arg("--target")
        .arg(WASM_TARGET)
        .arg("--manifest-path")
        .arg(&request.manifest_path)
        .arg("--message-format=json-render-diagnostics");
    if request.release {
        cmd.arg("--release");
    }
    if let Some(dir) = &request.target_dir {
        cmd.arg("--target-dir").arg(dir);
    }
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd.spawn().map_err(|error| BuildError::Spawn {
        program: "cargo".into(),
        error,
    })?;
    let mut artifacts = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(artifact) = parse_artifact(&line) {
                artifacts.push(artifact);
            }
        }
    }
    let status = child.wait().map_err(|error| BuildError::Spawn {
        program: "cargo".into(),
        error,
    })?;
    if !status.success() {
        return Err(BuildError::CargoFailed {
            manifest: request.manifest_path.clone(),
            status: status.to_string(),
        });
    }
    if artifacts.is_empty() {
        return Err(BuildError::NoArtifacts {
            manifest: request.manifest_path.clone(),
        });
    }
    artifacts.sort_by(|a, b| a.package.cmp(&b.package));
    Ok(artifacts)
}

/// Reads one line of cargo's JSON messages: a `compiler-artifact` with a
/// `.wasm` file is a built component.
fn parse_artifact(line: &str) -> Option<Artifact> {
    let msg: serde_json::Value = serde_json::from_str(line).ok()?;
    if msg.get("reason")?.as_str()? != "compiler-artifact" {
        return None;
    }
    let path = msg
        .get("filenames")?
        .as_array()?
        .iter()
        .filter_map(|f| f.as_str())
        .find(|f| f.ends_with(".wasm"))?;
    // The lib target's name is the package name with `-` turned into `_`.
    let package = msg.get("target")?.get("name")?.as_str()?.replace('_', "-");
    Some(Artifact {
        package,
        path: PathBuf::from(path),
    })
}
