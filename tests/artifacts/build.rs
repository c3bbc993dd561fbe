//! Builds every function in `functions/` for wasm32-wasip2 and writes one
//! path constant per component (the wasmtime `test-programs/artifacts` pattern).

#![allow(clippy::print_stderr)]

use std::fmt::Write as _;
use std::path::PathBuf;

#[path = "../../host/src/builder.rs"]
#[allow(dead_code)]
mod builder;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .and_then(|p| p.parent())
        .ok_or("tests/artifacts is not two levels below the repository root")?
        .to_path_buf();
    for watched in ["functions", "guest-sdk", "wit", "host/src/builder.rs"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    // One fixed directory, shared by every profile of the outer build (test,
    // clippy, bench), so the guests compile once.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("functions");
    let artifacts = builder::build(&builder::BuildRequest {
        manifest_path: root.join("functions/Cargo.toml"),
        target_dir: Some(target_dir),
        release: true,
    })?;

    let mut code = String::new();
    let mut all = String::new();
    for a in &artifacts {
        let konst = a.package.to_uppercase().replace('-', "_");
        writeln!(
            code,
            "/// The `{}` component.\npub const {konst}: &str = {:?};",
            a.package,
            a.path.display().to_string()
        )?;
        writeln!(all, "    ({:?}, {konst}),", a.package)?;
    }
    writeln!(
        code,
        "/// Every component, as (package, path).\npub const ALL: &[(&str, &str)] = &[\n{all}];"
    )?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("artifacts.rs");
    std::fs::write(out, code)?;
    Ok(())
}
