//! Every function in `functions/` is exercised by some test.

use brink_tests::artifacts;

#[test]
fn every_function_has_a_test() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut sources = String::new();
    for dir in ["tests/integration", "host/tests"] {
        for entry in std::fs::read_dir(root.join(dir))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("test_coverage.rs") {
                sources.push_str(&std::fs::read_to_string(&path)?);
            }
        }
    }
    assert!(!artifacts::ALL.is_empty());
    let untested: Vec<&str> = artifacts::ALL
        .iter()
        .map(|(package, _)| *package)
        .filter(|package| {
            let konst = package.to_uppercase().replace('-', "_");
            let file = format!("{}.wasm", package.replace('-', "_"));
            !sources.contains(&format!("artifacts::{konst}")) && !sources.contains(&file)
        })
        .collect();
    assert!(
        untested.is_empty(),
        "functions without a test: {untested:?}"
    );
    Ok(())
}

#[test]
fn every_python_and_javascript_function_has_a_test() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut sources = String::new();
    for entry in std::fs::read_dir(root.join("tests/integration"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("test_coverage.rs") {
            sources.push_str(&std::fs::read_to_string(&path)?);
        }
    }
    let mut functions = Vec::new();
    for language in ["python", "js"] {
        for entry in std::fs::read_dir(root.join("functions").join(language))? {
            let path = entry?.path();
            if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                functions.push((language, name.to_owned()));
            }
        }
    }
    assert!(functions.len() >= 3, "{functions:?}");
    let untested: Vec<_> = functions
        .iter()
        .filter(|(language, name)| !sources.contains(&format!("guest(\"{language}\", \"{name}\")")))
        .collect();
    assert!(
        untested.is_empty(),
        "functions without a test: {untested:?}"
    );
    Ok(())
}
