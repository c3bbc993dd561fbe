//! Finds or installs the tools a Python or JavaScript build needs, in a
//! directory of their own, so nothing touches the user's environment.
//!
//! An install goes into a fresh directory that is renamed into place only
//! when it succeeded, so two builds at once, or one cut off, never leave a
//! half-installed toolchain that later builds would trust.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use sha2::Digest as _;

/// The componentize-py `brink build` uses (PyPI).
pub const COMPONENTIZE_PY: &str = "0.25.1";

/// Where toolchains live: `$BRINK_TOOLCHAINS_DIR`, else the user's cache.
/// Each build function takes the directory, so tests choose their own.
pub fn dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("BRINK_TOOLCHAINS_DIR") {
        return Ok(PathBuf::from(dir));
    }
    dirs::cache_dir()
        .map(|d| d.join("brink").join("toolchains"))
        .context("no cache directory for toolchains; set BRINK_TOOLCHAINS_DIR")
}

/// A command that runs componentize-py: from a venv of its own, made on
/// first use with `python3 -m venv` and pip.
pub fn componentize_py(toolchains: &Path) -> anyhow::Result<Command> {
    let home = toolchains.join(format!("componentize-py-{COMPONENTIZE_PY}"));
    let python = home.join("bin").join("python");
    if !python.is_file() {
        eprintln!(
            "brink: installing componentize-py {COMPONENTIZE_PY} (PyPI) into {}",
            home.display()
        );
        install(&home, |tmp| {
            run(Command::new("python3").arg("-m").arg("venv").arg(tmp))?;
            run(Command::new(tmp.join("bin").join("pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .arg(format!("componentize-py=={COMPONENTIZE_PY}")))
        })
        .with_context(|| {
            format!(
                "componentize-py could not be installed; run `python3 -m venv {0} && {0}/bin/pip install componentize-py=={COMPONENTIZE_PY}` \
                 (Debian: `apt install python3-venv` first), then build again",
                home.display()
            )
        })?;
    }
    // The venv's own interpreter, not the console script, whose `#!` line
    // names the directory it was installed in before the rename.
    let mut cmd = Command::new(python);
    cmd.args([
        "-c",
        "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())",
    ]);
    Ok(cmd)
}

/// The JavaScript toolchain's `package.json` and lock: `npm ci` installs
/// exactly these versions.
const JS_PACKAGE: &str = include_str!("js-toolchain/package.json");
const JS_LOCK: &str = include_str!("js-toolchain/package-lock.json");

/// The componentize-js the JavaScript toolchain pins.
pub const COMPONENTIZE_JS: &str = "0.23.0";

/// The JavaScript toolchain's `node_modules/.bin`: componentize-js,
/// rolldown and jco, installed on first use with `npm ci` from the lock
/// this binary carries.
pub fn js_bin(toolchains: &Path) -> anyhow::Result<PathBuf> {
    // Named by the lock too, so a brink with another lock installs afresh
    // instead of trusting what an older one left.
    let lock = hex::encode(sha2::Sha256::digest(JS_LOCK.as_bytes()));
    let home = toolchains.join(format!("componentize-js-{COMPONENTIZE_JS}-{}", &lock[..12]));
    let bin = home.join("node_modules").join(".bin");
    if !bin.join("componentize-js").exists() {
        eprintln!(
            "brink: installing componentize-js {COMPONENTIZE_JS}, rolldown and jco (npm ci) into {}",
            home.display()
        );
        install(&home, |tmp| {
            std::fs::write(tmp.join("package.json"), JS_PACKAGE)?;
            std::fs::write(tmp.join("package-lock.json"), JS_LOCK)?;
            run(Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(tmp))
        })
        .with_context(|| {
            format!(
                "the JavaScript toolchain could not be installed; it needs Node.js 20 or later with npm \
                 (Debian: `apt install nodejs npm`). By hand: write brink's js-toolchain package.json \
                 and package-lock.json into {} and run `npm ci` there, then build again",
                home.display()
            )
        })?;
    }
    Ok(bin)
}

/// Runs `fill` on a fresh directory beside `home` and renames it to `home`
/// when it succeeds; another build that got there first wins.
pub fn install(home: &Path, fill: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let parent = home
        .parent()
        .context("a toolchain directory has a parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".installing-")
        .tempdir_in(parent)
        .with_context(|| format!("creating a directory in {}", parent.display()))?;
    fill(tmp.path())?;
    let staged = tmp.keep();
    if let Err(e) = std::fs::rename(&staged, home) {
        let _ = std::fs::remove_dir_all(&staged);
        if !home.is_dir() {
            return Err(e).with_context(|| format!("moving the toolchain to {}", home.display()));
        }
    }
    Ok(())
}

/// Runs `cmd`, its output going to this process's stderr (standard output
/// is the built component's path, and commands' own is never that); an
/// error names the command.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .stdout(std::process::Stdio::from(std::io::stderr()))
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}
