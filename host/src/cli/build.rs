//! `brink build`: a function folder in Rust, Python or JavaScript to a
//! component, with the toolchain each needs.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use brink_host::builder::{self, BuildRequest};
use brink_host::languages::{js, python, toolchain};

/// The language of a function folder, told by its project file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    /// `Cargo.toml`: cargo for wasm32-wasip2.
    Rust,
    /// `pyproject.toml`: componentize-py.
    Python,
    /// `package.json`: componentize-js.
    Js,
}

impl Language {
    /// The language of the folder at `dir`, from its project file.
    pub fn of(dir: &Path) -> anyhow::Result<Language> {
        let found: Vec<Language> = [
            ("Cargo.toml", Language::Rust),
            ("pyproject.toml", Language::Python),
            ("package.json", Language::Js),
        ]
        .into_iter()
        .filter(|(file, _)| dir.join(file).is_file())
        .map(|(_, language)| language)
        .collect();
        match found.as_slice() {
            [one] => Ok(*one),
            [] => bail!(
                "{} holds no Cargo.toml, pyproject.toml or package.json: not a function folder \
                 (`brink new <rust|python|js> NAME` makes one)",
                dir.display()
            ),
            _ => bail!(
                "{} holds more than one of Cargo.toml, pyproject.toml and package.json; \
                 keep one language per function folder",
                dir.display()
            ),
        }
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct BuildArgs {
    /// The function folder (Rust crate or workspace, Python or JS project),
    /// or a Cargo.toml.
    #[arg(default_value = ".")]
    path: PathBuf,
    /// Build without optimisations (Rust).
    #[arg(long)]
    debug: bool,
    /// cargo's target directory [default: the crate's workspace target/] (Rust).
    #[arg(long)]
    target_dir: Option<PathBuf>,
}

/// Builds the function in `dir` and returns its one component.
pub(crate) fn build_one(dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = absolute(dir)?;
    match Language::of(&dir)? {
        Language::Rust => {
            let mut artifacts = builder::build(&BuildRequest {
                manifest_path: dir.join("Cargo.toml"),
                target_dir: None,
                release: true,
            })?;
            match artifacts.len() {
                1 => Ok(artifacts.remove(0).path),
                n => bail!(
                    "{} builds {n} components; name one .wasm instead",
                    dir.display()
                ),
            }
        }
        Language::Python => python::build(&dir, &toolchain::dir()?),
        Language::Js => js::build(&dir, &toolchain::dir()?),
    }
}

pub(crate) fn build(args: BuildArgs) -> anyhow::Result<()> {
    let paths = if args.path.is_file() {
        cargo(args.path.clone(), args)?
    } else {
        let dir = absolute(&args.path)?;
        match Language::of(&dir)? {
            Language::Rust => cargo(dir.join("Cargo.toml"), args)?,
            _ => vec![build_one(&dir)?],
        }
    };
    let mut stdout = std::io::stdout().lock();
    for path in paths {
        writeln!(stdout, "{}", path.display())?;
    }
    Ok(())
}

fn cargo(manifest_path: PathBuf, args: BuildArgs) -> anyhow::Result<Vec<PathBuf>> {
    if manifest_path.file_name().is_none_or(|n| n != "Cargo.toml") {
        bail!(
            "{} is not a Cargo.toml; pass a function folder",
            manifest_path.display()
        );
    }
    let artifacts = builder::build(&BuildRequest {
        manifest_path,
        target_dir: args.target_dir,
        release: !args.debug,
    })?;
    Ok(artifacts.into_iter().map(|a| a.path).collect())
}

fn absolute(dir: &Path) -> anyhow::Result<PathBuf> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    std::path::absolute(dir).with_context(|| format!("resolving {}", dir.display()))
}
