//! Functions in Python and JavaScript: the toolchains that make them
//! components, the WIT world each is built against, and the plug that takes
//! `wasi:sockets` out of a Python component. `brink build` and the tests'
//! artifacts both build through here.

pub mod js;
pub mod plug;
pub mod python;
pub mod toolchain;
pub mod world;

use std::path::Path;

use anyhow::{Context as _, bail};

/// Writes each `(path, text)` under `dir`, making folders as needed.
fn write_files(dir: &Path, files: &[(&str, &str)]) -> anyhow::Result<()> {
    for (file, text) in files {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// A function's name from its project file: it names the component file,
/// so letters, digits, `-` and `_` only.
fn check_name(name: &str, project: &Path) -> anyhow::Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!(
            "{}: the name {name:?} must be letters, digits, - and _",
            project.display()
        );
    }
    Ok(())
}
