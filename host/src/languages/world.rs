//! The WIT a Python or JavaScript function is built against: a world that
//! imports only the capabilities the function declares.
//!
//! componentize-py and componentize-js import every interface of the world
//! they are given, used or not, and the host refuses an import the spec does
//! not grant. So `brink build` writes a world per function, `brink:app/function`,
//! from `capabilities` in its project file, over the contract embedded in
//! this binary; the component then asks for exactly what it uses.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// The contract, as released with this binary.
const CONTRACT: &[(&str, &str)] = &[
    ("brink-edge/edge.wit", include_str!("../../../wit/edge.wit")),
    (
        "keyvalue-2024-10-17/atomic.wit",
        include_str!("../../../wit/deps/keyvalue-2024-10-17/atomic.wit"),
    ),
    (
        "keyvalue-2024-10-17/batch.wit",
        include_str!("../../../wit/deps/keyvalue-2024-10-17/batch.wit"),
    ),
    (
        "keyvalue-2024-10-17/store.wit",
        include_str!("../../../wit/deps/keyvalue-2024-10-17/store.wit"),
    ),
    (
        "keyvalue-2024-10-17/watch.wit",
        include_str!("../../../wit/deps/keyvalue-2024-10-17/watch.wit"),
    ),
    (
        "keyvalue-2024-10-17/world.wit",
        include_str!("../../../wit/deps/keyvalue-2024-10-17/world.wit"),
    ),
    (
        "nn-2024-10-28/wasi-nn.wit",
        include_str!("../../../wit/deps/nn-2024-10-28/wasi-nn.wit"),
    ),
];

/// The contract version the world is written against.
const EDGE: &str = "brink:edge";
const EDGE_VERSION: &str = "0.1.3";

/// What a function may declare beyond log and config, and what each imports.
pub const CAPABILITIES: &[(&str, &[&str])] = &[
    (
        "kv",
        &[
            "wasi:keyvalue/store@0.2.0-draft2",
            "wasi:keyvalue/atomics@0.2.0-draft2",
            "wasi:keyvalue/batch@0.2.0-draft2",
            "brink:edge/kv@0.1.3",
        ],
    ),
    ("outbox", &["brink:edge/outbox@0.1.3"]),
    (
        "nn",
        &[
            "wasi:nn/tensor@0.2.0-rc-2024-10-28",
            "wasi:nn/graph@0.2.0-rc-2024-10-28",
            "wasi:nn/inference@0.2.0-rc-2024-10-28",
            "wasi:nn/errors@0.2.0-rc-2024-10-28",
        ],
    ),
];

/// The world's text: log and config, the declared capabilities' imports,
/// and the handler (the async one when `asynchronous`).
pub fn world_text(capabilities: &[String], asynchronous: bool) -> anyhow::Result<String> {
    let mut imports = vec![
        format!("{EDGE}/log@{EDGE_VERSION}"),
        format!("{EDGE}/config@{EDGE_VERSION}"),
    ];
    for capability in capabilities {
        let Some((_, interfaces)) = CAPABILITIES.iter().find(|(name, _)| name == capability) else {
            let known: Vec<&str> = CAPABILITIES.iter().map(|(name, _)| *name).collect();
            bail!(
                "unknown capability {capability:?} in `capabilities`; the choices are {}",
                known.join(", ")
            );
        };
        imports.extend(interfaces.iter().map(|i| (*i).to_owned()));
    }
    let export = if asynchronous {
        "async-handler"
    } else {
        "handler"
    };
    let mut text = String::from(
        "// Written by `brink build` from the function's declared capabilities.\npackage brink:app;\n\nworld function {\n",
    );
    for import in imports {
        text.push_str(&format!("    import {import};\n"));
    }
    text.push_str(&format!("    export {EDGE}/{export}@{EDGE_VERSION};\n}}\n"));
    Ok(text)
}

/// Writes the contract as a WIT directory at `wit`: `edge.wit` and `deps/`,
/// the layout the Rust SDK's `generate!` reads.
pub fn write_contract(wit: &Path) -> anyhow::Result<()> {
    let (edge, deps): (Vec<_>, Vec<_>) = CONTRACT
        .iter()
        .map(|(path, text)| match path.strip_prefix("brink-edge/") {
            Some(root) => (root, *text),
            None => (*path, *text),
        })
        .partition(|(path, _)| !path.contains('/'));
    super::write_files(wit, &edge)?;
    super::write_files(&wit.join("deps"), &deps)
}

/// Writes the world and the contract under `dir` (replacing what an earlier
/// build left) and returns the WIT directory to pass to the toolchain.
pub fn write(dir: &Path, capabilities: &[String], asynchronous: bool) -> anyhow::Result<PathBuf> {
    let wit = dir.join("wit");
    if wit.exists() {
        std::fs::remove_dir_all(&wit).with_context(|| format!("clearing {}", wit.display()))?;
    }
    super::write_files(&wit.join("deps"), CONTRACT)?;
    let app = world_text(capabilities, asynchronous)?;
    super::write_files(&wit, &[("app.wit", &app)])?;
    Ok(wit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_world_imports_only_what_the_function_declares() -> anyhow::Result<()> {
        let text = world_text(&["outbox".to_owned()], false)?;
        assert!(text.contains("import brink:edge/outbox@0.1.3;"));
        assert!(text.contains("export brink:edge/handler@0.1.3;"));
        assert!(!text.contains("keyvalue"));
        assert!(!text.contains("wasi:nn"));
        let text = world_text(&["kv".to_owned()], true)?;
        assert!(text.contains("import wasi:keyvalue/store@0.2.0-draft2;"));
        assert!(text.contains("export brink:edge/async-handler@0.1.3;"));
        Ok(())
    }

    #[test]
    fn an_unknown_capability_is_refused_with_the_choices() {
        let error = world_text(&["sockets".to_owned()], false)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("kv, outbox, nn"), "{error:?}");
    }

    #[test]
    fn the_written_world_resolves_against_the_embedded_contract() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let every: Vec<String> = CAPABILITIES.iter().map(|(n, _)| (*n).to_owned()).collect();
        let wit = write(dir.path(), &every, false)?;
        let mut resolve = wit_parser::Resolve::default();
        let (package, _) = resolve.push_dir(&wit)?;
        let world = resolve.select_world(&[package], Some("function"))?;
        // log, config, types (used), kv's four, outbox, nn's four.
        assert!(resolve.worlds[world].imports.len() >= 12);
        Ok(())
    }
}
