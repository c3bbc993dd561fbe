//! Functions in Rust, Python and JavaScript: `brink new`, `brink build` and
//! `brink run`, driven as a user drives them, with componentize-py and
//! componentize-js installed by `brink build` itself on first use (into
//! target/toolchains, shared by these tests).

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

use super::{brink, example, root, stderr, stdout_events as events};

/// functions/python/filter, copied out and built once for this process (a
/// copy, so that no other test process builds into the same folder).
fn python_filter() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Mutex<Option<(tempfile::TempDir, PathBuf)>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(|| Mutex::new(None))
        .lock()
        .map_err(|_| anyhow::anyhow!("an earlier build panicked"))?;
    if let Some((_, wasm)) = built.as_ref() {
        return Ok(wasm.clone());
    }
    let dir = tempfile::tempdir()?;
    let src = root().join("functions/python/filter");
    for file in ["app.py", "pyproject.toml", "test_app.py"] {
        std::fs::copy(src.join(file), dir.path().join(file))?;
    }
    let cache = tempfile::tempdir()?;
    let out = brink(cache.path(), &["build", &dir.path().display().to_string()])?;
    assert!(out.status.success(), "{}", stderr(&out));
    let wasm = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    assert_eq!(wasm, dir.path().join("target/filter.wasm"));
    *built = Some((dir, wasm.clone()));
    Ok(wasm)
}

fn run_filter(event: &str, extra: &[&str]) -> anyhow::Result<Output> {
    // One compile cache for these runs: CPython compiles in seconds, once.
    static CACHE: OnceLock<tempfile::TempDir> = OnceLock::new();
    let cache = match CACHE.get() {
        Some(cache) => cache,
        None => {
            let _ = CACHE.set(tempfile::tempdir()?);
            CACHE.get().ok_or_else(|| anyhow::anyhow!("no cache"))?
        }
    };
    let wasm = python_filter()?.display().to_string();
    let mut args = vec!["run", &wasm, "--event", event, "-c", "threshold=30"];
    args.extend_from_slice(extra);
    brink(cache.path(), &args)
}

/// `brink new LANGUAGE hello`, `brink build hello`, and `brink run hello`
/// on its sample event with a greeting from config: the greeting comes out.
fn new_build_run(language: &str, files: &[&str]) -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    let work = tempfile::tempdir()?;
    let cache = tempfile::tempdir()?;
    let hello = work.path().join("hello");
    let hello_arg = hello.display().to_string();
    let out = brink(
        cache.path(),
        &["new", language, "hello", "--dir", &hello_arg],
    )?;
    assert!(out.status.success(), "{}", stderr(&out));
    for file in files
        .iter()
        .chain(&["event.json", "README.md", ".gitignore"])
    {
        assert!(hello.join(file).is_file(), "{language}: {file} missing");
    }

    let out = brink(cache.path(), &["build", &hello_arg])?;
    assert!(out.status.success(), "{}", stderr(&out));
    let event = hello.join("event.json").display().to_string();
    let out = brink(
        cache.path(),
        &["run", &hello_arg, "--event", &event, "-c", "greeting=hi"],
    )?;
    assert!(out.status.success(), "{}", stderr(&out));
    let events = events(&out)?;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "com.example.greeting");
    assert_eq!(events[0]["subject"], "edge");
    assert_eq!(
        events[0]["data"],
        serde_json::json!({"message": "hi, edge"})
    );

    // A second `brink new` into the same folder leaves it alone.
    let out = brink(
        cache.path(),
        &["new", language, "hello", "--dir", &hello_arg],
    )?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("already exists and is not empty"),
        "{}",
        stderr(&out)
    );
    Ok((work, hello))
}

#[test]
fn brink_new_python_builds_runs_the_sample_event_and_its_unit_tests_pass() -> anyhow::Result<()> {
    let (_work, hello) = new_build_run("python", &["app.py", "pyproject.toml", "test_app.py"])?;
    // The template's unit tests run in plain CPython over the SDK the build wrote.
    let unit = Command::new("python3")
        .args(["-m", "unittest", "-q"])
        .current_dir(&hello)
        .env("PYTHONPATH", hello.join("target/brink/sdk"))
        .output()?;
    assert!(unit.status.success(), "{}", stderr(&unit));
    assert!(stderr(&unit).contains("Ran 3 tests"), "{}", stderr(&unit));
    Ok(())
}

#[test]
fn brink_new_js_builds_runs_the_sample_event_and_its_unit_tests_pass() -> anyhow::Result<()> {
    let (_work, hello) = new_build_run("js", &["index.js", "package.json", "index.test.js"])?;
    // `npm test`: node's test runner over the SDK's stand-ins for the host.
    let unit = Command::new("npm")
        .args(["test", "--silent"])
        .current_dir(&hello)
        .output()?;
    let report = String::from_utf8_lossy(&unit.stdout);
    assert!(unit.status.success(), "{report}{}", stderr(&unit));
    assert!(report.contains("# pass 3"), "{report}");
    // The contract's TypeScript types, generated from the function's world.
    let types = hello.join("target/brink/sdk/types/contract");
    let records = std::fs::read_to_string(types.join("interfaces/brink-edge-types.d.ts"))?;
    assert!(records.contains("export interface CloudEvent"), "{records}");
    assert!(
        records.contains("extensions: Array<[string, string]>"),
        "{records}"
    );
    assert!(types.join("interfaces/brink-edge-config.d.ts").is_file());
    assert!(
        !types.join("interfaces/wasi-keyvalue-store.d.ts").exists(),
        "kv was not declared"
    );
    Ok(())
}

#[test]
fn brink_new_rust_builds_runs_the_sample_event() -> anyhow::Result<()> {
    let (_work, hello) = new_build_run(
        "rust",
        &[
            "Cargo.toml",
            "src/lib.rs",
            "brink-sdk/src/lib.rs",
            "wit/edge.wit",
        ],
    )?;
    assert!(
        hello
            .join("target/wasm32-wasip2/release/hello.wasm")
            .is_file()
    );
    Ok(())
}

#[test]
fn the_python_filter_passes_a_hot_reading_unchanged() -> anyhow::Result<()> {
    let out = run_filter(&example("reading-hot.json"), &[])?;
    assert!(out.status.success(), "{}", stderr(&out));
    let events = events(&out)?;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["id"], "b3f1c2a4-0001");
    assert_eq!(events[0]["type"], "com.example.reading");
    assert_eq!(
        events[0]["data"],
        serde_json::json!({"device": "t-17", "value": 31.5})
    );
    Ok(())
}

#[test]
fn the_python_filter_drops_a_normal_reading_and_passes_the_hot_ones_of_a_batch()
-> anyhow::Result<()> {
    let out = run_filter(&example("reading-normal.json"), &[])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.is_empty());

    let out = run_filter(&example("readings-batch.json"), &[])?;
    assert!(out.status.success(), "{}", stderr(&out));
    let ids: Vec<_> = events(&out)?.iter().map(|e| e["id"].clone()).collect();
    assert_eq!(ids, ["batch-2", "batch-3"]);

    let out = run_filter(&example("readings-batch.json"), &["-c", "direction=below"])?;
    let ids: Vec<_> = events(&out)?.iter().map(|e| e["id"].clone()).collect();
    assert_eq!(ids, ["batch-1"]);
    Ok(())
}

#[test]
fn a_reading_the_python_filter_cannot_use_is_an_invalid_event_not_a_trap() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"specversion":"1.0","id":"bad-1","source":"/s","type":"com.example.reading","datacontenttype":"application/json","data":{"device":"t-1","value":"hot"}}"#,
    )?;
    let out = run_filter(&bad.display().to_string(), &[])?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("refused the event"), "{err}");
    assert!(err.contains("bad-1"), "{err}");
    assert!(!err.contains("trap"), "{err}");

    // A misconfigured filter says which config is wrong.
    let out = run_filter(&example("reading-hot.json"), &["-c", "direction=sideways"])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("direction"), "{}", stderr(&out));
    Ok(())
}

#[test]
fn componentize_py_output_that_still_imports_sockets_is_refused_naming_the_import()
-> anyhow::Result<()> {
    // What componentize-py wrote before `brink build` plugged wasi:sockets.
    let wasm = python_filter()?;
    let raw = wasm.with_file_name("brink").join("componentized.wasm");
    let cache = tempfile::tempdir()?;
    let out = brink(
        cache.path(),
        &[
            "run",
            &raw.display().to_string(),
            "--event",
            &example("reading-hot.json"),
        ],
    )?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("wasi:sockets/"), "{}", stderr(&out));
    Ok(())
}

#[test]
fn a_python_project_with_an_unknown_capability_or_no_module_fails_with_what_to_fix()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cache = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("pyproject.toml"),
        "[project]\nname = \"x\"\n[tool.brink]\ncapabilities = [\"sockets\"]\n",
    )?;
    std::fs::write(dir.path().join("app.py"), "")?;
    let arg = dir.path().display().to_string();
    let out = brink(cache.path(), &["build", &arg])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("unknown capability \"sockets\""),
        "{}",
        stderr(&out)
    );

    std::fs::write(
        dir.path().join("pyproject.toml"),
        "[project]\nname = \"x\"\n[tool.brink]\napp = \"main\"\n",
    )?;
    let out = brink(cache.path(), &["build", &arg])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no module `main`"),
        "{}",
        stderr(&out)
    );

    std::fs::write(
        dir.path().join("pyproject.toml"),
        "[project]\nname = \"x\"\n[tool.brink]\nap = \"x\"\n",
    )?;
    let out = brink(cache.path(), &["build", &arg])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("unknown field `ap`"),
        "{}",
        stderr(&out)
    );
    Ok(())
}

#[test]
fn the_example_functions_unit_tests_pass_over_the_sdks_in_the_repo() -> anyhow::Result<()> {
    let python = Command::new("python3")
        .args(["-m", "unittest", "-q"])
        .current_dir(root().join("functions/python/filter"))
        .env("PYTHONPATH", root().join("guest-sdk/python"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()?;
    assert!(python.status.success(), "{}", stderr(&python));
    assert!(
        stderr(&python).contains("Ran 5 tests"),
        "{}",
        stderr(&python)
    );

    let register = root().join("guest-sdk/js/testing/register.js");
    let node = Command::new("node")
        .arg("--import")
        .arg(&register)
        .arg("--test")
        .current_dir(root().join("functions/js/transform"))
        .output()?;
    let report = String::from_utf8_lossy(&node.stdout);
    assert!(node.status.success(), "{report}{}", stderr(&node));
    assert!(report.contains("# pass 3"), "{report}");
    Ok(())
}
