//! Takes `wasi:sockets` out of a component's imports by plugging in a
//! component that exports it and refuses every call.
//!
//! CPython carries `_socket`, so every componentize-py component imports
//! `wasi:sockets`, which the host refuses at load: no function is granted the
//! network. Plugging the import at build time keeps that rule whole (a
//! component that still imports sockets is refused, with the import named)
//! while a Python function that never opens a socket loads. One that does
//! traps at that call, since the plug's functions are `unreachable`.

use anyhow::{Context as _, bail};
use wit_parser::{ManglingAndAbi, Resolve, WorldItem};

use crate::contract::REFUSED_CALL_PREFIX;

/// The package whose imports are plugged.
const SOCKETS: &str = "wasi:sockets";

/// `component` with its `wasi:sockets` imports satisfied by a refusing
/// plug, or `None` when it imports none.
pub fn without_sockets(component: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
    let wit_parser::decoding::DecodedWasm::Component(mut resolve, world) =
        wit_component::decode(component).context("reading the component's WIT")?
    else {
        bail!("expected a component, found a WIT package");
    };
    let sockets = sockets_imports(&resolve, world);
    if sockets.is_empty() {
        return Ok(None);
    }
    let plug = plug(&mut resolve, &sockets).context("making the wasi:sockets plug")?;
    // wasm-compose reads its inputs from files, and also looks in their
    // directory for components named after the root's imports: a fresh
    // directory of our own holds nothing it could pick up.
    let dir = tempfile::tempdir().context("creating a directory to compose in")?;
    let scratch = dir.path();
    let root = scratch.join("component.wasm");
    let definition = scratch.join("deny-sockets.wasm");
    std::fs::write(&root, component).with_context(|| format!("writing {}", root.display()))?;
    std::fs::write(&definition, &plug)
        .with_context(|| format!("writing {}", definition.display()))?;
    let config = wasm_compose::config::Config {
        dir: scratch.to_owned(),
        definitions: vec![definition],
        ..Default::default()
    };
    let composed = wasm_compose::composer::ComponentComposer::new(&root, &config)
        .compose()
        .context("plugging wasi:sockets")?;
    Ok(Some(composed))
}

/// The names (`wasi:sockets/tcp@0.2.9`) of the component's sockets imports.
fn sockets_imports(resolve: &Resolve, world: wit_parser::WorldId) -> Vec<String> {
    resolve.worlds[world]
        .imports
        .values()
        .filter_map(|item| match item {
            WorldItem::Interface { id, .. } => resolve.id_of(*id),
            _ => None,
        })
        .filter(|name| name.starts_with(&format!("{SOCKETS}/")))
        .collect()
}

/// A component exporting `interfaces`, every function of which traps.
fn plug(resolve: &mut Resolve, interfaces: &[String]) -> anyhow::Result<Vec<u8>> {
    let exports: String = interfaces
        .iter()
        .map(|name| format!("  export {name};\n"))
        .collect();
    let text = format!("package brink:plug;\n\nworld deny-sockets {{\n{exports}}}\n");
    let package = resolve.push_str("deny-sockets.wit", &text)?;
    let world = resolve.select_world(&[package], Some("deny-sockets"))?;
    let mut module = name_exports(&wit_component::dummy_module(
        resolve,
        world,
        ManglingAndAbi::Legacy(wit_parser::LiftLowerAbi::Sync),
    ))?;
    wit_component::embed_component_metadata(
        &mut module,
        resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )?;
    wit_component::ComponentEncoder::default()
        .module(&module)?
        .validate(true)
        .encode()
}

/// `module` with a name section that names each exported function after
/// its export, prefixed with [`REFUSED_CALL_PREFIX`]
/// (`brink-denied:wasi:sockets/tcp-create-socket@0.2.9#create-tcp-socket`),
/// so the trap's backtrace names the call that was refused.
fn name_exports(module: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut exports = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        if let wasmparser::Payload::ExportSection(reader) = payload? {
            for export in reader {
                let export = export?;
                if export.kind == wasmparser::ExternalKind::Func {
                    exports.push((
                        export.index,
                        format!("{REFUSED_CALL_PREFIX}{}", export.name),
                    ));
                }
            }
        }
    }
    // A name map lists each function once, in index order.
    exports.sort();
    exports.dedup_by_key(|(index, _)| *index);
    let mut names = wasm_encoder::NameMap::new();
    for (index, name) in &exports {
        names.append(*index, name);
    }
    let mut section = wasm_encoder::NameSection::new();
    section.functions(&names);
    let mut out = module.to_vec();
    wasm_encoder::Section::append_to(&section, &mut out);
    Ok(out)
}
