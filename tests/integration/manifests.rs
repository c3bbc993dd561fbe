//! Golden tests of `brink.toml`: every file in `tests/manifests/valid` loads;
//! every file in `tests/manifests/invalid` fails with exactly the message in
//! its `.expected` sibling. `BRINK_BLESS=1` rewrites the `.expected` files.

use std::path::{Path, PathBuf};

use brink_host::manifest::Manifest;
use brink_host::plan;

fn files(kind: &str) -> anyhow::Result<Vec<PathBuf>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| Ok(e?.path()))
        .collect::<anyhow::Result<_>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "toml"));
    files.sort();
    Ok(files)
}

/// The error for `path`, named relative to the manifests directory so the
/// golden files do not depend on where the repository is checked out.
fn load(path: &Path) -> anyhow::Result<Result<Manifest, String>> {
    let text = std::fs::read_to_string(path)?;
    let name = format!(
        "{}/{}",
        path.parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    );
    Ok(Manifest::parse(&text, &name).map_err(|e| e.to_string()))
}

#[test]
fn every_valid_manifest_loads() -> anyhow::Result<()> {
    let files = files("valid")?;
    assert!(files.len() >= 3);
    for path in files {
        if let Err(e) = load(&path)? {
            panic!("{} should load: {e}", path.display());
        }
    }
    Ok(())
}

#[test]
fn every_invalid_manifest_fails_with_its_golden_message() -> anyhow::Result<()> {
    let bless = std::env::var_os("BRINK_BLESS").is_some();
    let files = files("invalid")?;
    assert!(files.len() >= 15);
    let mut mismatches = Vec::new();
    for path in files {
        let expected_path = path.with_extension("expected");
        let actual = match load(&path)? {
            Ok(_) => "<loaded without error>".to_owned(),
            Err(e) => e,
        };
        if bless {
            std::fs::write(&expected_path, format!("{actual}\n"))?;
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected.trim_end() != actual {
            mismatches.push(format!(
                "{}\n  expected: {}\n  actual:   {actual}",
                path.display(),
                expected.trim_end()
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    Ok(())
}

#[test]
fn the_pipeline_manifest_maps_to_engine_specs() -> anyhow::Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/valid/pipeline.toml");
    let manifest = Manifest::load(&path)?;
    let spec = |name: &str| {
        plan::spec(
            name,
            plan::Body::from(&manifest.function[name]),
            &plan::Scope::default(),
        )
    };
    let filter = spec("filter")?;
    assert_eq!(filter.limits.timeout, std::time::Duration::from_millis(200));
    assert_eq!(filter.limits.memory_bytes, 32 << 20);
    assert_eq!(filter.config["threshold"], "30");
    assert_eq!(filter.instance_reuse, 1000);
    // Unset: a fresh instance for every event.
    assert_eq!(spec("transform")?.instance_reuse, 1);
    assert_eq!(manifest.http.max_body_kb, 256);
    Ok(())
}

#[test]
fn every_example_manifest_loads() -> anyhow::Result<()> {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut loaded = 0;
    for entry in std::fs::read_dir(examples)? {
        let manifest = entry?.path().join("brink.toml");
        if manifest.is_file() {
            Manifest::load(&manifest)?;
            loaded += 1;
        }
    }
    assert!(loaded >= 2);
    Ok(())
}
