//! What the engine refuses to load, and the compile cache.

use std::collections::BTreeSet;
use std::path::Path;

use brink_host::cache::Compiled;
use brink_host::error::LoadError;
use brink_host::{Engine, EngineConfig, FunctionSpec, Limits};
use brink_tests::{artifacts, engine, load, reading};

fn load_bytes(bytes: &[u8]) -> anyhow::Result<Result<brink_host::Function, LoadError>> {
    Ok(engine()?.load(FunctionSpec::new("f"), bytes, "upload.wasm"))
}

#[test]
fn a_component_importing_an_ungranted_interface_is_rejected_naming_the_import() -> anyhow::Result<()>
{
    let err = load(FunctionSpec::new("net"), artifacts::FIXTURE_SOCKETS)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("function `net` imports `wasi:sockets/"),
        "{err}"
    );
    assert!(err.contains("which it is not granted"), "{err}");
    Ok(())
}

#[test]
fn a_component_without_the_handler_export_is_rejected() -> anyhow::Result<()> {
    let err = load(
        FunctionSpec::new("nohandler"),
        artifacts::FIXTURE_NO_HANDLER,
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        err.contains("function `nohandler` does not export `brink:edge/handler` (0.1.x)"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_core_module_is_rejected_with_how_to_make_a_component() -> anyhow::Result<()> {
    let err = load_bytes(b"\0asm\x01\0\0\0")?.err();
    assert!(matches!(err, Some(LoadError::CoreModule { .. })), "{err:?}");
    assert!(err.is_some_and(|e| e.to_string().contains("wasm32-wasip2")));
    Ok(())
}

#[test]
fn bytes_that_are_not_wasm_are_rejected() -> anyhow::Result<()> {
    let err = load_bytes(b"#!/bin/sh\necho hi\n")?.err();
    assert!(matches!(err, Some(LoadError::NotWasm { .. })), "{err:?}");
    Ok(())
}

#[test]
fn a_truncated_component_is_rejected_as_invalid() -> anyhow::Result<()> {
    let bytes = std::fs::read(artifacts::ECHO)?;
    let err = load_bytes(&bytes[..bytes.len() / 2])?.err();
    assert!(matches!(err, Some(LoadError::Invalid { .. })), "{err:?}");
    Ok(())
}

#[test]
fn an_oversized_component_is_rejected_before_compiling() -> anyhow::Result<()> {
    let limit = engine()?.config().max_component_bytes;
    let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
    bytes.resize(limit + 1, 0);
    let err = load_bytes(&bytes)?.err();
    assert!(matches!(err, Some(LoadError::TooLarge { .. })), "{err:?}");
    Ok(())
}

#[test]
fn an_unknown_grant_is_rejected() -> anyhow::Result<()> {
    let spec = FunctionSpec {
        grants: BTreeSet::from(["everything".to_owned()]),
        ..FunctionSpec::new("greedy")
    };
    let err = load(spec, artifacts::ECHO)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("unknown grant `everything`"), "{err}");
    Ok(())
}

#[test]
fn a_memory_limit_above_the_hosts_maximum_is_rejected() -> anyhow::Result<()> {
    let spec = FunctionSpec {
        limits: Limits {
            memory_bytes: 1 << 40,
            ..Limits::default()
        },
        ..FunctionSpec::new("huge")
    };
    let err = engine()?.load_file(spec, Path::new(artifacts::ECHO)).err();
    assert!(matches!(err, Some(LoadError::BadLimits { .. })), "{err:?}");
    Ok(())
}

#[tokio::test]
async fn a_second_load_of_the_same_component_skips_compilation() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cached_engine = || {
        Engine::new(EngineConfig {
            max_instances: 4,
            max_memory_bytes: 64 << 20,
            cache_dir: Some(dir.path().to_owned()),
            ..EngineConfig::default()
        })
    };
    let first =
        cached_engine()?.load_file(FunctionSpec::new("echo"), Path::new(artifacts::ECHO))?;
    assert!(
        matches!(first.compiled(), Compiled::Fresh(_)),
        "{:?}",
        first.compiled()
    );
    // A new engine, as after a host restart.
    let second =
        cached_engine()?.load_file(FunctionSpec::new("echo"), Path::new(artifacts::ECHO))?;
    assert!(
        matches!(second.compiled(), Compiled::Cached(_)),
        "{:?}",
        second.compiled()
    );
    assert_eq!(first.digest(), second.digest());
    let input = reading("c-1", "t-1", 1.0);
    assert_eq!(second.invoke(input.clone()).await?, vec![input]);
    Ok(())
}

#[test]
fn a_corrupt_cache_entry_is_ignored_and_recompiled() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let engine = Engine::new(EngineConfig {
        max_instances: 4,
        max_memory_bytes: 64 << 20,
        cache_dir: Some(dir.path().to_owned()),
        ..EngineConfig::default()
    })?;
    engine.load_file(FunctionSpec::new("echo"), Path::new(artifacts::ECHO))?;
    for entry in std::fs::read_dir(dir.path())? {
        std::fs::write(entry?.path(), b"garbage")?;
    }
    let again = engine.load_file(FunctionSpec::new("echo"), Path::new(artifacts::ECHO))?;
    assert!(
        matches!(again.compiled(), Compiled::Fresh(_)),
        "{:?}",
        again.compiled()
    );
    Ok(())
}

/// The compile runs in a throwaway engine and its code is loaded back from
/// the cache file; where the cache cannot be written (here its directory
/// is a file), the code comes from memory and the function still serves.
#[tokio::test]
async fn a_cache_that_cannot_be_written_still_serves_the_freshly_compiled_function()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let blocked = dir.path().join("not-a-directory");
    std::fs::write(&blocked, b"a file where the cache directory should be")?;
    let engine = Engine::new(EngineConfig {
        max_instances: 4,
        max_memory_bytes: 64 << 20,
        cache_dir: Some(blocked.clone()),
        ..EngineConfig::default()
    })?;
    let echo = engine.load_file(FunctionSpec::new("echo"), Path::new(artifacts::ECHO))?;
    assert!(
        matches!(echo.compiled(), Compiled::Fresh(_)),
        "{:?}",
        echo.compiled()
    );
    let input = reading("c-1", "t-1", 1.0);
    assert_eq!(echo.invoke(input.clone()).await?, vec![input]);
    assert!(blocked.is_file(), "the blocking file was replaced");
    Ok(())
}

#[tokio::test]
async fn functions_with_the_same_component_share_its_code_until_the_last_one_goes()
-> anyhow::Result<()> {
    let engine = Engine::new(EngineConfig {
        max_instances: 4,
        max_memory_bytes: 64 << 20,
        cache_dir: None,
        ..EngineConfig::default()
    })?;
    let first = engine.load_file(FunctionSpec::new("a"), Path::new(artifacts::ECHO))?;
    let second = engine.load_file(FunctionSpec::new("b"), Path::new(artifacts::ECHO))?;
    assert!(
        matches!(first.compiled(), Compiled::Fresh(_)),
        "{:?}",
        first.compiled()
    );
    assert_eq!(second.compiled(), Compiled::Shared);
    // Shared code, separate functions: each runs as itself.
    let input = reading("s-1", "t-1", 1.0);
    assert_eq!(first.invoke(input.clone()).await?, vec![input.clone()]);
    assert_eq!(second.invoke(input.clone()).await?, vec![input]);
    // Another component is its own code.
    let other = engine.load_file(FunctionSpec::new("c"), Path::new(artifacts::FILTER))?;
    assert!(
        matches!(other.compiled(), Compiled::Fresh(_)),
        "{:?}",
        other.compiled()
    );
    drop((first, second));
    let again = engine.load_file(FunctionSpec::new("d"), Path::new(artifacts::ECHO))?;
    assert!(
        matches!(again.compiled(), Compiled::Fresh(_)),
        "the code outlived its functions"
    );
    Ok(())
}
