//! The `brink` binary, driven as a user drives it.

#![allow(clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use brink_test_artifacts as artifacts;

#[path = "cli/languages.rs"]
mod languages;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn example(name: &str) -> String {
    root()
        .join("examples/events")
        .join(name)
        .display()
        .to_string()
}

/// Runs `brink` with a private compile cache in `cache`.
fn brink(cache: &Path, args: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_brink"))
        .args(args)
        .env("BRINK_CACHE_DIR", cache)
        // Python and JS builds install their toolchains once, for every test.
        .env("BRINK_TOOLCHAINS_DIR", root().join("target/toolchains"))
        .env("BRINK_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()?)
}

fn stdout_events(out: &Output) -> anyhow::Result<Vec<serde_json::Value>> {
    String::from_utf8(out.stdout.clone())?
        .lines()
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a clean failure: exit 1 (not a panic's 101, not a signal) and one
/// `error:` line last on stderr.
fn assert_clean_failure(out: &Output, expected: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{err}");
    assert!(last.contains(expected), "expected {expected:?} in {last:?}");
    assert_eq!(err.matches("error: ").count(), 1, "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn run_filter_prints_the_reading_over_the_threshold() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    let out = brink(
        cache.path(),
        &[
            "run",
            artifacts::FILTER,
            "--event",
            &example("reading-hot.json"),
            "--config",
            "threshold=30",
        ],
    )?;
    assert!(out.status.success(), "{}", stderr(&out));
    let events = stdout_events(&out)?;
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
fn run_filter_prints_nothing_for_a_normal_reading() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    let out = brink(
        cache.path(),
        &[
            "run",
            artifacts::FILTER,
            "-e",
            &example("reading-normal.json"),
            "-c",
            "threshold=30",
        ],
    )?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    Ok(())
}

#[test]
fn run_filter_on_a_batch_prints_each_passing_event() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    let out = brink(
        cache.path(),
        &[
            "run",
            artifacts::FILTER,
            "-e",
            &example("readings-batch.json"),
            "-c",
            "threshold=30",
        ],
    )?;
    assert!(out.status.success(), "{}", stderr(&out));
    let ids: Vec<_> = stdout_events(&out)?
        .iter()
        .map(|e| e["id"].clone())
        .collect();
    assert_eq!(ids, vec!["batch-2", "batch-3"]);
    Ok(())
}

#[test]
fn run_transform_prints_the_converted_reading() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    let out = brink(
        cache.path(),
        &[
            "run",
            artifacts::TRANSFORM,
            "-e",
            &example("reading-hot.json"),
        ],
    )?;
    assert!(out.status.success(), "{}", stderr(&out));
    let events = stdout_events(&out)?;
    assert_eq!(events[0]["type"], "com.brink.temperature.fahrenheit");
    assert_eq!(events[0]["data"]["temperature"]["value"], 88.7);
    Ok(())
}

#[test]
fn run_reads_the_event_from_stdin() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_brink"))
        .args(["run", artifacts::ECHO])
        .env("BRINK_CACHE_DIR", cache.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        std::io::Write::write_all(&mut stdin, &std::fs::read(example("reading-hot.json"))?)?;
    }
    let out = child.wait_with_output()?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout_events(&out)?[0]["subject"], "t-17");
    Ok(())
}

#[test]
fn an_event_without_an_id_is_refused_naming_the_attribute() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    let out = brink(
        cache.path(),
        &["run", artifacts::ECHO, "-e", &example("missing-id.json")],
    )?;
    assert_clean_failure(&out, "missing attribute `id`");
    Ok(())
}

#[test]
fn the_log_filter_picks_levels_by_target_and_a_malformed_one_is_refused() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    let event = example("reading-hot.json");
    let run = |filter: &str| {
        Command::new(env!("CARGO_BIN_EXE_brink"))
            .args(["--log", filter, "run", "--no-cache", artifacts::FILTER])
            .args(["-e", &event, "--config", "threshold=30"])
            .env("BRINK_CACHE_DIR", cache.path())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
    };
    let shown = run("warn,brink_host=info")?;
    assert!(shown.status.success(), "{}", stderr(&shown));
    assert!(stderr(&shown).contains("INFO"), "{}", stderr(&shown));
    let hidden = run("info,brink_host=warn")?;
    assert!(hidden.status.success(), "{}", stderr(&hidden));
    assert!(!stderr(&hidden).contains("INFO"), "{}", stderr(&hidden));
    // Span and field matching is not part of the syntax: refused, naming
    // the filter, before anything runs.
    let refused = run("info,[span{tenant=a}]=debug")?;
    let err = stderr(&refused);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(err.contains("is not a log filter"), "{err}");
    assert!(err.contains("[span{tenant=a}]"), "{err}");
    assert!(refused.stdout.is_empty());
    Ok(())
}

#[test]
fn hostile_functions_each_end_with_one_clear_error_line() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    let hot = example("reading-hot.json");
    let cases = [
        (
            artifacts::FIXTURE_TRAP,
            "trapped: wasm trap: wasm `unreachable` instruction executed (guest panicked: calibration table",
        ),
        (
            artifacts::FIXTURE_SPIN_LOOP,
            "exceeded its time limit of 300 ms",
        ),
        (
            artifacts::FIXTURE_MEMORY_BOMB,
            "exceeded its memory limit of 32 MiB",
        ),
        (artifacts::FIXTURE_SOCKETS, "imports `wasi:sockets/"),
    ];
    for (component, expected) in cases {
        let out = brink(
            cache.path(),
            &[
                "run",
                component,
                "-e",
                &hot,
                "--timeout-ms",
                "300",
                "--memory-mb",
                "32",
            ],
        )?;
        assert_clean_failure(&out, expected);
        if component == artifacts::FIXTURE_TRAP {
            // The guest's stderr reached the host's log, tagged with function and event.
            let log = stderr(&out);
            let line = log
                .lines()
                .find(|l| l.contains("calibration table for"))
                .unwrap_or_default();
            assert!(line.contains(r#"function="fixture-trap""#), "{log}");
            assert!(line.contains(r#"event_id="b3f1c2a4-0001""#), "{log}");
        }
    }
    Ok(())
}

#[test]
fn a_core_module_or_a_non_wasm_file_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0")?;
    let text = dir.path().join("text.wasm");
    std::fs::write(&text, b"hello")?;
    let hot = example("reading-hot.json");
    let out = brink(
        dir.path(),
        &["run", &core.display().to_string(), "-e", &hot],
    )?;
    assert_clean_failure(&out, "is a core WebAssembly module, not a component");
    let out = brink(
        dir.path(),
        &["run", &text.display().to_string(), "-e", &hot],
    )?;
    assert_clean_failure(&out, "is not WebAssembly");
    let out = brink(dir.path(), &["run", "/nonexistent/f.wasm", "-e", &hot])?;
    assert_clean_failure(&out, "cannot read /nonexistent/f.wasm");
    Ok(())
}

#[test]
fn the_second_run_of_a_component_loads_it_from_the_compile_cache() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    let args = ["run", artifacts::ECHO, "-e", &example("reading-hot.json")];
    let first = brink(cache.path(), &args)?;
    assert!(stderr(&first).contains("compiled in"), "{}", stderr(&first));
    let second = brink(cache.path(), &args)?;
    assert!(
        stderr(&second).contains("loaded precompiled code from the cache"),
        "{}",
        stderr(&second)
    );
    assert_eq!(first.stdout, second.stdout);
    Ok(())
}

#[test]
fn build_prints_the_component_it_built() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // The test-support crate already built this workspace into target/functions,
    // so this is cargo's no-op path through `brink build`.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("functions");
    let echo = root().join("functions/echo");
    let out = brink(
        dir.path(),
        &[
            "build",
            &echo.display().to_string(),
            "--target-dir",
            &target.display().to_string(),
        ],
    )?;
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = String::from_utf8(out.stdout)?;
    assert_eq!(
        std::fs::canonicalize(printed.trim())?,
        std::fs::canonicalize(artifacts::ECHO)?
    );
    Ok(())
}

#[test]
fn build_of_a_directory_without_a_project_file_fails_clearly() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = brink(dir.path(), &["build", &dir.path().display().to_string()])?;
    assert_clean_failure(&out, "holds no Cargo.toml, pyproject.toml or package.json");
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[test]
fn up_with_simulated_sensors_prints_alerts_and_stops_cleanly_on_sigterm() -> anyhow::Result<()> {
    use std::io::BufRead as _;

    let dir = tempfile::tempdir()?;
    let (http, v4, v5) = (free_port()?, free_port()?, free_port()?);
    let manifest = dir.path().join("brink.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"brink_manifest_version = 1
[http]
listen = "127.0.0.1:{http}"
[mqtt]
listen = "127.0.0.1:{v4}"
listen_v5 = "127.0.0.1:{v5}"
plain_event_type = "com.example.reading"

[function.filter]
source = {filter:?}
triggers = [{{ mqtt = "sensors/+/temperature" }}]
outputs = [{{ function = "transform" }}]
config = {{ threshold = "30" }}

[function.transform]
source = {transform:?}
outputs = [{{ mqtt = "alerts/{{subject}}" }}]
"#,
            filter = artifacts::FILTER,
            transform = artifacts::TRANSFORM,
        ),
    )?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_brink"))
        .arg("up")
        .arg(&manifest)
        .args(["--simulate", "--simulate-interval-ms", "20"])
        .args(["--tail", "alerts/#"])
        .env("BRINK_CACHE_DIR", dir.path().join("cache"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = rx.recv_timeout(std::time::Duration::from_secs(60));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    assert!(killed.success());
    let status = child.wait()?;
    let line = line?;
    assert!(
        line.starts_with("alerts/t-") && line.contains("type=com.brink.temperature.fahrenheit"),
        "{line}"
    );
    assert_eq!(status.code(), Some(0), "SIGTERM must drain and exit 0");
    Ok(())
}

#[test]
fn publish_to_an_unreachable_broker_fails_with_one_clear_line() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    let port = free_port()?.to_string();
    let url = format!("mqtt://127.0.0.1:{port}");
    let out = brink(
        cache.path(),
        &["publish", "--url", &url, "sensors/t-1/temperature", "{}"],
    )?;
    assert_clean_failure(&out, &format!("publishing to 127.0.0.1:{port}"));
    let out = brink(cache.path(), &["publish", "--url", &url, "sensors/+", "{}"])?;
    assert_clean_failure(&out, "has no wildcards");
    Ok(())
}

/// One HTTP/1.1 request over a plain socket; the status and body.
fn http(port: u16, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/cloudevents+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A `brink up` child process, killed (SIGKILL) when dropped.
struct NodeProcess(std::process::Child);

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `brink up` child on `manifest`, ready to serve HTTP on `http_port`.
fn start_node(manifest: &Path, cache: &Path, http_port: u16) -> anyhow::Result<NodeProcess> {
    start_node_with(manifest, cache, http_port, &[])
}

/// [`start_node`] with more arguments to `brink up`.
fn start_node_with(
    manifest: &Path,
    cache: &Path,
    http_port: u16,
    args: &[&str],
) -> anyhow::Result<NodeProcess> {
    let child = up_command(manifest, cache)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    // Killed on every way out, the early ones included.
    let mut node = NodeProcess(child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while http(http_port, "GET", "/healthz", "").map(|(s, _)| s).ok() != Some(200) {
        if let Some(status) = node.0.try_wait()? {
            anyhow::bail!("brink up exited early: {status}");
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "node not ready in 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(node)
}

/// A manifest with enrich (bucket `devices`) and the kv-ops fixture
/// (bucket `default`), both invocable over HTTP; state under `dir/state`.
fn stateful_manifest(dir: &Path, http_port: u16, admin_port: u16) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("brink.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"brink_manifest_version = 1
app = "plant-7"
data_dir = "state"
[http]
listen = "127.0.0.1:{http_port}"
[admin]
listen = "127.0.0.1:{admin_port}"

[function.enrich]
source = {enrich:?}
kv = ["devices"]

[function.ops]
source = {ops:?}
kv = ["default"]
"#,
            enrich = artifacts::ENRICH,
            ops = artifacts::FIXTURE_KV_OPS,
        ),
    )?;
    Ok(manifest)
}

/// `brink kv ARGS --admin URL`: the connection flag last, as the README writes it.
fn kv_cli(cache: &Path, admin_port: u16, args: &[&str]) -> anyhow::Result<Output> {
    let admin = format!("http://127.0.0.1:{admin_port}");
    let mut all = vec!["kv"];
    all.extend_from_slice(args);
    all.extend(["--admin", admin.as_str()]);
    brink(cache, &all)
}

fn reading_event(id: &str, data: &str) -> String {
    format!(
        r#"{{"specversion":"1.0","id":"{id}","source":"/test","type":"com.example.reading","datacontenttype":"application/json","data":{data}}}"#
    )
}

#[test]
fn kv_cli_seeds_and_inspects_the_state_of_a_running_node() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("cache");
    let (http_port, admin_port) = (free_port()?, free_port()?);
    let manifest = stateful_manifest(dir.path(), http_port, admin_port)?;
    let _node = start_node(&manifest, &cache, http_port)?;
    {
        let meta = r#"{"location":"line 3","model":"TMP117"}"#;
        let out = kv_cli(&cache, admin_port, &["set", "devices", "t-1", meta])?;
        assert!(out.status.success(), "{}", stderr(&out));
        let file = dir.path().join("t-2.json");
        std::fs::write(&file, r#"{"location":"line 4"}"#)?;
        let file = file.display().to_string();
        let out = kv_cli(
            &cache,
            admin_port,
            &["set", "devices", "t-2", "--file", &file],
        )?;
        assert!(out.status.success(), "{}", stderr(&out));

        // The function sees what the CLI loaded.
        let (status, body) = http(
            http_port,
            "POST",
            "/functions/enrich",
            &reading_event("r1", r#"{"device":"t-1","value":21.5}"#),
        )?;
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains(r#""meta":{"location":"line 3","model":"TMP117"}"#),
            "{body}"
        );

        let out = kv_cli(&cache, admin_port, &["get", "devices", "t-1"])?;
        assert_eq!(String::from_utf8(out.stdout)?, meta);
        let out = kv_cli(&cache, admin_port, &["ls", "devices"])?;
        assert_eq!(String::from_utf8(out.stdout)?, "t-1\nt-2\n");
        let out = kv_cli(&cache, admin_port, &["ls"])?;
        assert_eq!(String::from_utf8(out.stdout)?, "devices\n");
        let out = kv_cli(&cache, admin_port, &["del", "devices", "t-1"])?;
        assert!(out.status.success(), "{}", stderr(&out));
        let out = kv_cli(&cache, admin_port, &["get", "devices", "t-1"])?;
        assert_clean_failure(&out, "404 Not Found: no `t-1` in bucket `devices`");
        let out = kv_cli(&cache, admin_port, &["get", "Devices!", "t-1"])?;
        assert_clean_failure(&out, "is not a valid bucket name");
    }
    Ok(())
}

/// `brink kv ls` as `brink_command` runs it (private config directory),
/// with `env` set.
fn kv_ls(home: &Path, extra: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Output> {
    let mut args = vec!["kv", "ls"];
    args.extend_from_slice(extra);
    let mut command = brink_command(home, &args);
    command
        .env_remove("BRINK_ADMIN_URL")
        .env_remove("BRINK_ADMIN_TOKEN");
    for (k, v) in env {
        command.env(k, v);
    }
    Ok(command.output()?)
}

#[test]
fn every_command_names_the_node_the_same_way() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let home = dir.path().join("home");
    let (http_port, admin_port) = (free_port()?, free_port()?);
    let manifest = stateful_manifest(dir.path(), http_port, admin_port)?;
    let text = std::fs::read_to_string(&manifest)?.replace(
        &format!("listen = \"127.0.0.1:{admin_port}\"\n"),
        &format!("listen = \"127.0.0.1:{admin_port}\"\ntoken = \"op-secret\"\n"),
    );
    std::fs::write(&manifest, text)?;
    let _node = start_node(&manifest, &home.join("cache"), http_port)?;
    let url = format!("http://127.0.0.1:{admin_port}");
    let closed = format!("http://127.0.0.1:{}", free_port()?);
    let token = "op-secret";

    // The one name: --url and --token, or BRINK_URL and BRINK_TOKEN.
    ok(kv_ls(&home, &["--url", &url, "--token", token], &[])?)?;
    ok(kv_ls(
        &home,
        &[],
        &[("BRINK_URL", &url), ("BRINK_TOKEN", token)],
    )?)?;
    // The old names still work.
    ok(kv_ls(&home, &["--admin", &url, "--token", token], &[])?)?;
    ok(kv_ls(
        &home,
        &[],
        &[("BRINK_ADMIN_URL", &url), ("BRINK_ADMIN_TOKEN", token)],
    )?)?;
    // A node that wants a token refuses a call without one, by name.
    assert_clean_failure(
        &kv_ls(&home, &["--url", &url], &[])?,
        "no `Authorization: Bearer <token>` header",
    );

    // What `brink login` saved names the node when nothing else does...
    let login = home.join("config").join("brink");
    std::fs::create_dir_all(&login)?;
    std::fs::write(
        login.join("login.json"),
        serde_json::json!({ "url": url, "token": token }).to_string(),
    )?;
    ok(kv_ls(&home, &[], &[])?)?;
    // ... a flag or the environment still wins over it ...
    for out in [
        kv_ls(&home, &["--url", &closed], &[])?,
        kv_ls(&home, &[], &[("BRINK_URL", &closed)])?,
        kv_ls(&home, &[], &[("BRINK_ADMIN_URL", &closed)])?,
    ] {
        // One line, though the transport's own words say "error" more than once.
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!("error: cannot reach the admin API at {closed}")),
            "{err}"
        );
    }
    // ... and a wrong token given beats the saved one.
    assert_clean_failure(
        &kv_ls(&home, &["--token", "wrong"], &[])?,
        "the token is not the operator's",
    );
    Ok(())
}

#[test]
fn acknowledged_writes_survive_a_host_kill() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("cache");
    let (http_port, admin_port) = (free_port()?, free_port()?);
    let manifest = stateful_manifest(dir.path(), http_port, admin_port)?;
    for round in 0..3 {
        let node = start_node(&manifest, &cache, http_port)?;
        for i in 0..20 {
            let ops = format!(
                r#"[{{"op":"set","key":"r{round}-{i}","value":"acked"}},{{"op":"increment","key":"count","delta":1}}]"#
            );
            let (status, body) = http(
                http_port,
                "POST",
                "/functions/ops",
                &reading_event("w", &ops),
            )?;
            assert_eq!(status, 200, "{body}");
        }
        // SIGKILL right after the last acknowledgement: no clean shutdown,
        // no background flush; only what was flushed before each answer.
        drop(node);
    }
    let _node = start_node(&manifest, &cache, http_port)?;
    let out = kv_cli(&cache, admin_port, &["get", "default", "count"])?;
    assert_eq!(String::from_utf8(out.stdout)?, "60");
    let out = kv_cli(&cache, admin_port, &["ls", "default", "--prefix", "r"])?;
    assert_eq!(String::from_utf8(out.stdout)?.lines().count(), 60);
    Ok(())
}

#[test]
fn run_with_a_kv_grant_keeps_state_from_one_run_to_the_next() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data").display().to_string();
    let hot = example("reading-hot.json");
    let run = |grant: &str| {
        brink(
            dir.path(),
            &[
                "run",
                artifacts::THRESHOLD_ALERT,
                "--event",
                &hot,
                "--config",
                "threshold=30",
                "--kv",
                grant,
                "--data-dir",
                &data,
            ],
        )
    };
    // Three readings above in a row raise the alert, on the third run.
    for expected in [0, 0, 1] {
        let out = run("default")?;
        assert!(out.status.success(), "{}", stderr(&out));
        let events = stdout_events(&out)?;
        assert_eq!(events.len(), expected, "{events:?}");
    }
    let out = run("other")?;
    assert_clean_failure(&out, "bucket `default` is not granted to this function");
    Ok(())
}

/// An HTTP sink for CloudEvents batches on its own thread and runtime; the
/// ids it received, duplicates included.
fn start_batch_sink() -> anyhow::Result<(String, std::sync::Arc<std::sync::Mutex<Vec<String>>>)> {
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let url = format!("http://{}/ingest", listener.local_addr()?);
    let sink = received.clone();
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            let app = axum::Router::new().route(
                "/ingest",
                axum::routing::post(move |body: axum::body::Bytes| {
                    let sink = sink.clone();
                    async move {
                        let events: Vec<serde_json::Value> =
                            serde_json::from_slice(&body).unwrap_or_default();
                        if let Ok(mut ids) = sink.lock() {
                            ids.extend(
                                events
                                    .iter()
                                    .filter_map(|e| e["id"].as_str().map(str::to_owned)),
                            );
                        }
                        axum::http::StatusCode::ACCEPTED
                    }
                }),
            );
            let _ = axum::serve(listener, app).await;
        });
    });
    Ok((url, received))
}

#[test]
fn outbox_status_shows_drops_expiries_and_refusals_and_purge_empties_a_queue() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("cache");
    let (http_port, admin_port, dead) = (free_port()?, free_port()?, free_port()?);
    let manifest = dir.path().join("brink.toml");
    // Every uplink points at a port nothing listens on: the outage never ends.
    let uplink = |name: &str, extra: &str| {
        format!("[uplink.{name}]\nhttp = \"http://127.0.0.1:{dead}/ingest\"\n{extra}\n")
    };
    let function = |name: &str| {
        format!(
            "[function.to-{name}]\nsource = {:?}\ntriggers = [{{ http = \"/{name}\" }}]\noutputs = [{{ uplink = \"{name}\" }}]\n",
            artifacts::ECHO
        )
    };
    std::fs::write(
        &manifest,
        format!(
            "brink_manifest_version = 1\ndata_dir = \"state\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n{}{}{}{}{}{}",
            uplink("full", "max_events = 5\nwhen_full = \"drop_oldest\""),
            uplink("short", "ttl_ms = 50"),
            uplink("strict", "max_events = 2"),
            function("full"),
            function("short"),
            function("strict"),
        ),
    )?;
    let _node = start_node(&manifest, &cache, http_port)?;
    let post = |path: &str, id: &str| {
        http(
            http_port,
            "POST",
            path,
            &reading_event(id, r#"{"device":"t-1","value":1}"#),
        )
        .map(|(status, _)| status)
    };
    for i in 0..8 {
        assert_eq!(post("/events/full", &format!("f{i}"))?, 202);
        assert_eq!(post("/events/short", &format!("s{i}"))?, 202);
    }
    assert_eq!(post("/events/strict", "x0")?, 202);
    assert_eq!(post("/events/strict", "x1")?, 202);
    // The third is refused: the sender learns its event was not stored.
    assert_eq!(post("/events/strict", "x2")?, 502);

    let admin = format!("http://127.0.0.1:{admin_port}");
    let status = |cache: &Path| -> anyhow::Result<serde_json::Value> {
        // The README's form: `brink outbox status --json --admin URL`.
        let out = brink(cache, &["outbox", "status", "--json", "--admin", &admin])?;
        anyhow::ensure!(out.status.success(), "{}", stderr(&out));
        let all: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        Ok(all["uplinks"].clone())
    };
    // Expired events go once the forwarder reaches them again (after a backoff).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let uplinks = loop {
        let uplinks = status(&cache)?;
        if uplinks[1]["expired"] == 8 {
            break uplinks;
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "{uplinks}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let pick = |u: &serde_json::Value| {
        (
            u["uplink"].as_str().unwrap_or_default().to_owned(),
            u["backlog_events"].as_u64(),
            u["dropped"].as_u64(),
            u["expired"].as_u64(),
            u["rejected"].as_u64(),
            u["connected"].as_bool(),
        )
    };
    assert_eq!(
        pick(&uplinks[0]),
        (
            "full".into(),
            Some(5),
            Some(3),
            Some(0),
            Some(0),
            Some(false)
        )
    );
    assert_eq!(
        pick(&uplinks[1]),
        (
            "short".into(),
            Some(0),
            Some(0),
            Some(8),
            Some(0),
            Some(false)
        )
    );
    assert_eq!(
        pick(&uplinks[2]),
        (
            "strict".into(),
            Some(2),
            Some(0),
            Some(0),
            Some(1),
            Some(false)
        )
    );
    assert!(uplinks[0]["retried"].as_u64() > Some(0));

    let (_, metrics) = http(http_port, "GET", "/metrics", "")?;
    for line in [
        "brink_outbox_dropped_total{uplink=\"full\"} 3",
        "brink_outbox_expired_total{uplink=\"short\"} 8",
        "brink_outbox_rejected_total{uplink=\"strict\"} 1",
        "brink_outbox_backlog_events{uplink=\"full\"} 5",
        "brink_outbox_connected{uplink=\"full\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }

    let table = brink(&cache, &["outbox", "status", "--admin", &admin])?;
    let table = String::from_utf8(table.stdout)?;
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("full") && l.ends_with("no")),
        "{table}"
    );

    // Purging asks first; without a terminal it needs --yes.
    let out = brink(&cache, &["outbox", "purge", "full", "--admin", &admin])?;
    assert_clean_failure(
        &out,
        "purging drops 5 events for good: pass --yes to confirm",
    );
    let out = brink(
        &cache,
        &["outbox", "purge", "full", "--yes", "--admin", &admin],
    )?;
    assert_eq!(
        String::from_utf8(out.stdout)?,
        "purged 5 events from `full`\n"
    );
    let uplinks = status(&cache)?;
    assert_eq!(pick(&uplinks[0]).1, Some(0));
    let out = brink(
        &cache,
        &["outbox", "purge", "nowhere", "--yes", "--admin", &admin],
    )?;
    assert_clean_failure(&out, "no uplink named `nowhere`");
    Ok(())
}

/// A manifest serving classify-digits on `/digits` with the digits model on `backend`.
fn digits_manifest(dir: &Path, http_port: u16, backend: &str) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("brink.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"brink_manifest_version = 1
[http]
listen = "127.0.0.1:{http_port}"

[model.digits]
path = {model:?}
backend = "{backend}"

[function.classify-digits]
source = {classify:?}
triggers = [{{ http = "/digits" }}]
models = ["digits"]
"#,
            model = root().join("examples/digits/digits.onnx"),
            classify = artifacts::CLASSIFY_DIGITS,
        ),
    )?;
    Ok(manifest)
}

#[test]
fn up_classifies_a_posted_digit_with_the_shared_model() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let http_port = free_port()?;
    let manifest = digits_manifest(dir.path(), http_port, "tract")?;
    let _node = start_node(&manifest, &dir.path().join("cache"), http_port)?;
    let event = std::fs::read_to_string(root().join("examples/digits/digit-event.json"))?;
    let (status, body) = http(
        http_port,
        "POST",
        "/functions/classify-digits",
        event.trim(),
    )?;
    assert_eq!(status, 200, "{body}");
    // One event back, in binary mode: its data is the classification.
    let classification: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(classification["label"], 7, "{body}");
    assert!(classification["confidence"].as_f64() > Some(0.5), "{body}");
    let (_, metrics) = http(http_port, "GET", "/metrics", "")?;
    assert!(
        metrics.contains(r#"brink_nn_requests_total{model="digits",device="cpu"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"brink_nn_rows_total{model="digits",device="cpu"} 1"#));
    Ok(())
}

/// `brink up manifest` with a private compile cache, no terminal input.
fn up_command(manifest: &Path, cache: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_brink"));
    command
        .arg("up")
        .arg(manifest)
        .env("BRINK_CACHE_DIR", cache)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    command
}

/// `VmSize` of a process, in KiB: the address space it has reserved.
fn reserved_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmSize in /proc/{pid}/status"))
}

#[test]
fn a_node_with_a_small_instance_pool_reserves_little_and_still_serves() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let http_port = free_port()?;
    let manifest = digits_manifest(dir.path(), http_port, "tract")?;
    let cache = dir.path().join("cache");
    let node = start_node_with(&manifest, &cache, http_port, &["--max-instances", "2"])?;
    // The default pool (256 slots of two 4 GiB memories) reserves 2 TiB.
    let reserved = reserved_kib(node.0.id())?;
    assert!(reserved < 64 << 20, "{reserved} KiB reserved");
    let event = std::fs::read_to_string(root().join("examples/digits/digit-event.json"))?;
    // More events than slots, one after another: warm and fresh instances
    // give their slots back.
    for _ in 0..5 {
        let (status, body) = http(
            http_port,
            "POST",
            "/functions/classify-digits",
            event.trim(),
        )?;
        assert_eq!(status, 200, "{body}");
    }
    Ok(())
}

#[test]
fn an_instance_pool_of_zero_is_refused_naming_the_flag() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let manifest = digits_manifest(dir.path(), free_port()?, "tract")?;
    let out = up_command(&manifest, &dir.path().join("cache"))
        .args(["--max-instances", "0"])
        .output()?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--max-instances"), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    Ok(())
}

#[test]
fn up_with_an_onnxruntime_model_and_no_library_fails_with_one_clear_line() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let manifest = digits_manifest(dir.path(), free_port()?, "onnxruntime")?;
    let out = up_command(&manifest, &dir.path().join("cache"))
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .output()?;
    assert_clean_failure(&out, "loading model `digits`");
    assert!(
        stderr(&out).contains("/nonexistent/libonnxruntime.so cannot be used"),
        "{}",
        stderr(&out)
    );
    Ok(())
}

/// `brink` with a private compile cache and a private config directory (for `brink login`).
fn brink_as(home: &Path, args: &[&str]) -> anyhow::Result<Output> {
    Ok(brink_command(home, args).output()?)
}

fn brink_command(home: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_brink"));
    command
        .args(args)
        .env("BRINK_CACHE_DIR", home.join("cache"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("HOME", home)
        .env_remove("BRINK_URL")
        .env_remove("BRINK_TOKEN")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    command
}

fn ok(out: Output) -> anyhow::Result<String> {
    anyhow::ensure!(out.status.success(), "brink failed: {}", stderr(&out));
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn the_deploy_flow_runs_from_keygen_to_logs() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let home = dir.path();
    let key = home.join("release.key");
    let public = ok(brink_as(
        home,
        &["keygen", "--out", &key.display().to_string()],
    )?)?;
    let public = public.trim();
    assert!(public.starts_with("ed25519:"), "{public}");
    let (http_port, admin_port) = (free_port()?, free_port()?);
    let manifest = home.join("brink.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"brink_manifest_version = 1
data_dir = "state"
[http]
listen = "127.0.0.1:{http_port}"
[admin]
listen = "127.0.0.1:{admin_port}"
token = "operator-secret"
[registry]
trusted_keys = ["{public}"]
"#
        ),
    )?;
    let _node = start_node(&manifest, &home.join("cache"), http_port)?;
    let url = format!("http://127.0.0.1:{admin_port}");
    let operator = ["--url", url.as_str(), "--token", "operator-secret"];
    let token = ok(brink_as(
        home,
        &[
            &["tenant", "create", "acme", "--max-functions", "5"][..],
            &operator[..],
        ]
        .concat(),
    )?)?;
    let token = token.trim().to_owned();
    assert!(token.starts_with("brink_"), "{token}");
    let tenants = ok(brink_as(
        home,
        &[&["tenant", "ls", "--json"][..], &operator[..]].concat(),
    )?)?;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&tenants)?["tenants"][0]["id"],
        "acme"
    );

    ok(brink_as(home, &["login", &url, "--token", &token])?)?;
    // A component copied aside, so its signatures file lands in the temp dir.
    let wasm = home.join("transform.wasm");
    std::fs::copy(artifacts::TRANSFORM, &wasm)?;
    let wasm = wasm.display().to_string();
    let unsigned = brink_as(
        home,
        &[
            "deploy",
            &wasm,
            "--name",
            "transform",
            "--version",
            "1.0.0",
            "--trigger",
            "http:/t/acme/readings",
        ],
    )?;
    assert_clean_failure(&unsigned, "needs valid signatures from 1");
    ok(brink_as(
        home,
        &[
            "sign",
            &wasm,
            "--key",
            &key.display().to_string(),
            "--name",
            "transform",
            "--version",
            "1.0.0",
        ],
    )?)?;
    let deployed = ok(brink_as(
        home,
        &[
            "deploy",
            &wasm,
            "--name",
            "transform",
            "--version",
            "1.0.0",
            "--trigger",
            "http:/t/acme/readings",
            "--config",
            "output_type=com.acme.v1",
        ],
    )?)?;
    assert!(deployed.contains("deployed transform@1.0.0"), "{deployed}");
    let key_arg = key.display().to_string();
    ok(brink_as(
        home,
        &[
            "deploy",
            &wasm,
            "--name",
            "transform",
            "--version",
            "1.1.0",
            "--sign-with",
            &key_arg,
            "--config",
            "output_type=com.acme.v2",
        ],
    )?)?;

    let invoked = ok(brink_as(
        home,
        &[
            "invoke",
            "transform",
            "--data",
            r#"{"device":"t-1","value":100}"#,
        ],
    )?)?;
    let event: serde_json::Value = serde_json::from_str(invoked.trim())?;
    assert_eq!(event["type"], "com.acme.v2");
    assert_eq!(event["data"]["temperature"]["value"], 212.0);
    let listed = ok(brink_as(home, &["ls"])?)?;
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("transform") && l.contains("1.1.0")),
        "{listed}"
    );
    let rolled = ok(brink_as(home, &["rollback", "transform"])?)?;
    assert!(rolled.contains("active 1.0.0"), "{rolled}");
    let invoked = ok(brink_as(
        home,
        &[
            "invoke",
            "transform",
            "--data",
            r#"{"device":"t-1","value":0}"#,
        ],
    )?)?;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(invoked.trim())?["type"],
        "com.acme.v1"
    );
    let usage = ok(brink_as(home, &["usage", "--json"])?)?;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&usage)?["usage"][0]["invocations"],
        2
    );
    // `brink logs -f` follows the function: an event it refuses shows up
    // there with the host's reason.
    let mut tail = NodeProcess(
        brink_command(home, &["logs", "transform", "-f", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let stdout = tail
        .0
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let (lines, followed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let refused = brink_as(home, &["invoke", "transform", "--data", "not a reading"])?;
    assert!(!refused.status.success());
    let line = followed.recv_timeout(std::time::Duration::from_secs(30))?;
    let record: serde_json::Value = serde_json::from_str(&line)?;
    assert_eq!(record["source"], "host", "{line}");
    assert_eq!(record["level"], "error", "{line}");
    drop(tail);
    let logs = ok(brink_as(home, &["logs", "transform"])?)?;
    assert!(
        logs.lines()
            .any(|l| l.contains(" ERROR ") && l.contains(" host ")),
        "{logs}"
    );

    ok(brink_as(home, &["rm", "transform"])?)?;
    let listed = ok(brink_as(home, &["ls", "--json"])?)?;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&listed)?["functions"],
        serde_json::json!([])
    );
    let missing = brink_as(home, &["invoke", "transform"])?;
    assert_clean_failure(&missing, "404");
    let deleted = ok(brink_as(
        home,
        &[&["tenant", "rm", "acme"][..], &operator[..]].concat(),
    )?)?;
    assert!(deleted.contains("deleted tenant `acme`"), "{deleted}");
    // Its token, kept by `brink login`, no longer signs in.
    assert_clean_failure(&brink_as(home, &["ls"])?, "401");
    Ok(())
}

/// An HTTP endpoint on a free port that answers 400 to events of type
/// `poison` and 202 to the rest, for as long as the test runs.
fn refusing_sink() -> anyhow::Result<u16> {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers, then the body its Content-Length announces.
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() >= length {
                        break;
                    }
                }
            }
            let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
            let status = if text.contains("ce-type: poison") {
                "400 Bad Request"
            } else {
                "202 Accepted"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    Ok(port)
}

#[test]
fn an_event_the_uplink_refuses_is_listed_retried_and_purged_with_brink_outbox() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("cache");
    let (http_port, admin_port, sink) = (free_port()?, free_port()?, refusing_sink()?);
    let manifest = dir.path().join("brink.toml");
    std::fs::write(
        &manifest,
        format!(
            "brink_manifest_version = 1\ndata_dir = \"state\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n[uplink.cloud]\nhttp = \"http://127.0.0.1:{sink}/ingest\"\nmax_delay_ms = 10\n[function.to-cloud]\nsource = {:?}\ntriggers = [{{ http = \"/cloud\" }}]\noutputs = [{{ uplink = \"cloud\" }}]\n",
            artifacts::ECHO
        ),
    )?;
    let _node = start_node(&manifest, &cache, http_port)?;
    let admin = format!("http://127.0.0.1:{admin_port}");
    let event = |id: &str, ty: &str| {
        format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"/t","type":"{ty}","datacontenttype":"application/json","data":{{"v":1}}}}"#
        )
    };
    for (id, ty) in [("p1", "poison"), ("ok1", "fine")] {
        assert_eq!(
            http(http_port, "POST", "/events/cloud", &event(id, ty))?.0,
            202
        );
    }
    let outbox = |args: &[&str]| -> anyhow::Result<Output> {
        // The README's form: the connection flag after the subcommand's own.
        let mut all = vec!["outbox"];
        all.extend_from_slice(args);
        all.extend(["--admin", admin.as_str()]);
        brink(&cache, &all)
    };
    let parked = || -> anyhow::Result<serde_json::Value> {
        let out = outbox(&["parked", "cloud", "--json"])?;
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while parked()?["parked"].as_array().map_or(0, Vec::len) != 1 {
        assert!(std::time::Instant::now() < deadline, "nothing parked");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let table = String::from_utf8(outbox(&["parked", "cloud"])?.stdout)?;
    assert!(
        table.lines().any(|l| l.contains("p1") && l.contains("400")),
        "{table}"
    );
    let status = String::from_utf8(outbox(&["status"])?.stdout)?;
    assert!(
        status.lines().next().is_some_and(|h| h.contains("parked")),
        "{status}"
    );
    // Retry sends it again; the sink still refuses, so it is parked again.
    let out = outbox(&["retry", "cloud"])?;
    assert_eq!(
        String::from_utf8(out.stdout)?,
        "moved 1 parked events back to `cloud`'s queue\n"
    );
    // Purging asks first; without a terminal it needs --yes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let out = outbox(&["purge", "cloud", "--parked"])?;
        if stderr(&out).contains("purging drops 1 parked events") {
            assert_clean_failure(&out, "purging drops 1 parked events for good: pass --yes");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", stderr(&out));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = outbox(&["purge", "cloud", "--parked", "--yes"])?;
    assert_eq!(
        String::from_utf8(out.stdout)?,
        "purged 1 parked events from `cloud`\n"
    );
    assert_eq!(parked()?["parked"], serde_json::json!([]));
    Ok(())
}

/// A mosquitto on a free port with a persistent-session-friendly setup,
/// killed when dropped.
struct Mosquitto {
    port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "allow_anonymous true\npersistence false\nmax_inflight_messages 100\nmax_queued_messages 1000000\nset_tcp_nodelay true\nlistener {port} 127.0.0.1\n"
            ),
        )?;
        let binary = ["/usr/sbin/mosquitto", "mosquitto"]
            .into_iter()
            .find(|b| !b.contains('/') || Path::new(b).exists())
            .unwrap_or("mosquitto");
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting mosquitto (apt-get install mosquitto): {e}"))?;
        let broker = Self {
            port,
            child,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "mosquitto did not listen"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(broker)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP bridge from a port of its own to `to` that can be taken down
/// (every live connection cut, new ones refused) and brought back.
struct Bridge {
    port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    live: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Bridge {
    fn start(to: u16) -> anyhow::Result<Self> {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let live = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (flag, streams) = (up.clone(), live.clone());
        std::thread::spawn(move || {
            for inbound in listener.incoming().flatten() {
                if !flag.load(Ordering::Relaxed) {
                    let _ = inbound.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(outbound) = std::net::TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
                let pipe = |mut from: std::net::TcpStream, mut to: std::net::TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                };
                if let (Ok(a), Ok(b), Ok(mut streams)) =
                    (inbound.try_clone(), outbound.try_clone(), streams.lock())
                {
                    streams.push(a);
                    streams.push(b);
                }
                if let (Ok(i2), Ok(o2)) = (inbound.try_clone(), outbound.try_clone()) {
                    pipe(inbound, o2);
                    pipe(outbound, i2);
                }
            }
        });
        Ok(Self { port, up, live })
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::Relaxed);
        if !up && let Ok(mut live) = self.live.lock() {
            for stream in live.drain(..) {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

/// An MQTT 5 device on its own thread: publishes QoS 1 messages to `in/<n>`
/// one at a time until `stop`, each waiting for its PUBACK; returns the ids
/// the broker acknowledged.
fn mqtt_device(
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, Incoming, MqttOptions};
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return Vec::new();
        };
        runtime.block_on(async move {
            let options = MqttOptions::new(format!("soak-device-{port}"), "127.0.0.1", port);
            let mut acked = Vec::new();
            let mut n = 0u64;
            // A fresh client after every failure: a client that outlived its
            // connection would send what it had queued meanwhile on the next
            // one, and a PUBACK could no longer be matched to its message.
            'connection: while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (client, mut events) = AsyncClient::new(options.clone(), 16);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let id = format!("m{n}");
                    n += 1;
                    let event = format!(
                        r#"{{"specversion":"1.0","id":"{id}","source":"/d","type":"t","datacontenttype":"application/json","data":{{"n":{n}}}}}"#
                    );
                    if client
                        .publish(format!("in/{n}"), QoS::AtLeastOnce, false, event)
                        .await
                        .is_err()
                    {
                        continue 'connection;
                    }
                    // One message in flight: the PUBACK is for it.
                    loop {
                        match events.poll().await {
                            Ok(Event::Incoming(Incoming::PubAck(_))) => break,
                            Ok(_) => {}
                            // Dropped before the PUBACK: not acknowledged.
                            Err(_) => {
                                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                                continue 'connection;
                            }
                        }
                    }
                    acked.push(id);
                    // About 500 a second: a steady stream, not a flood.
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
            }
            acked
        })
    })
}

/// An MQTT 5 subscriber to `filter` on its own thread; the event ids it
/// received (structured payloads), duplicates included.
fn mqtt_collector(port: u16, filter: &str) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, Incoming, MqttOptions};
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = received.clone();
    let filter = filter.to_owned();
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async move {
            let mut options = MqttOptions::new(format!("soak-cloud-{port}"), "127.0.0.1", port);
            options.set_max_packet_size(Some(2 << 20));
            let (client, mut events) = AsyncClient::new(options, 1024);
            let _ = client.subscribe(filter, QoS::AtLeastOnce).await;
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        // A structured event's id, else (binary mode: the
                        // payload is the data) the topic's last level.
                        let id = serde_json::from_slice::<serde_json::Value>(&p.payload)
                            .ok()
                            .and_then(|v| v["id"].as_str().map(str::to_owned))
                            .or_else(|| {
                                let topic = String::from_utf8_lossy(&p.topic);
                                topic.rsplit('/').next().map(str::to_owned)
                            });
                        if let (Some(id), Ok(mut sink)) = (id, sink.lock()) {
                            sink.push(id);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                }
            }
        });
    });
    received
}

/// Ids in `acked` missing from `arrived`, and how many arrived twice or more.
fn missing_and_duplicates(acked: &[String], arrived: &[String]) -> (Vec<String>, usize) {
    use std::collections::{BTreeMap, BTreeSet};
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for id in arrived {
        *counts.entry(id).or_default() += 1;
    }
    let missing = acked
        .iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let duplicates = counts.values().filter(|n| **n > 1).count();
    (missing, duplicates)
}

/// Where the soak's MQTT device publishes.
enum SoakInput {
    /// A mosquitto the node subscribes to.
    External(Mosquitto),
    /// The node's embedded broker, on these MQTT 3.1.1 and MQTT 5 ports.
    Embedded { v4: u16, v5: u16 },
}

impl SoakInput {
    fn mqtt_section(&self) -> String {
        match self {
            Self::External(broker) => format!("url = \"mqtt://127.0.0.1:{}\"", broker.port),
            Self::Embedded { v4, v5 } => {
                format!("listen = \"127.0.0.1:{v4}\"\nlisten_v5 = \"127.0.0.1:{v5}\"")
            }
        }
    }

    fn device_port(&self) -> u16 {
        match self {
            Self::External(broker) => broker.port,
            Self::Embedded { v5, .. } => *v5,
        }
    }
}

#[test]
fn acknowledged_events_survive_twenty_sigkills_and_an_uplink_outage_on_mqtt_and_http()
-> anyhow::Result<()> {
    soak(SoakInput::External(Mosquitto::start()?))
}

#[test]
fn pubacks_from_the_embedded_broker_survive_twenty_sigkills_and_an_uplink_outage()
-> anyhow::Result<()> {
    soak(SoakInput::Embedded {
        v4: free_port()?,
        v5: free_port()?,
    })
}

/// 20 SIGKILLs at random moments while an MQTT device and an HTTP client
/// send events, the uplinks down for four of them; then every event the
/// producers had a PUBACK or a 202 for must arrive upstream.
fn soak(input: SoakInput) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("cache");
    // Devices publish to `input`; the node's MQTT uplink reaches `cloud`
    // through a bridge that the outage takes down; the HTTP uplink is a sink.
    let cloud = Mosquitto::start()?;
    let bridge = Bridge::start(cloud.port)?;
    let arrived_mqtt = mqtt_collector(cloud.port, "up/#");
    let (sink_url, arrived_http) = start_batch_sink()?;
    let http_port = free_port()?;
    let manifest = dir.path().join("brink.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"brink_manifest_version = 1
data_dir = "state"
[http]
listen = "127.0.0.1:{http_port}"
[admin]
listen = "127.0.0.1:0"
[mqtt]
{input}

[uplink.cloud]
http = {sink_url:?}
batched = true

[uplink.edge]
mqtt = "mqtt://127.0.0.1:{bridge}"
topic = "up/{{id}}"

[function.relay-http]
source = {echo:?}
triggers = [{{ http = "/readings" }}]
outputs = [{{ uplink = "cloud" }}]

[function.relay-mqtt]
source = {echo:?}
triggers = [{{ mqtt = "in/#" }}]
outputs = [{{ uplink = "edge" }}]
"#,
            input = input.mqtt_section(),
            bridge = bridge.port,
            echo = artifacts::ECHO,
        ),
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let acked_http = Arc::new(Mutex::new(Vec::<String>::new()));
    let http_producer = {
        let (acked, stop) = (acked_http.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("h{n}");
                n += 1;
                let body = reading_event(&id, r#"{"device":"t-1","value":1}"#);
                if let Ok((202, _)) = http(http_port, "POST", "/events/readings", &body)
                    && let Ok(mut acked) = acked.lock()
                {
                    acked.push(id);
                } else {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
        })
    };
    // The device starts once the node's session exists at the broker: a
    // message published before any subscriber is the broker's to drop.
    let mut mqtt_producer = None;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for kill in 0..20 {
        // The uplinks go down for kills 8 to 11.
        bridge.set_up(!(8..12).contains(&kill));
        let node = start_node(&manifest, &cache, http_port)?;
        if mqtt_producer.is_none() {
            mqtt_producer = Some(mqtt_device(input.device_port(), stop.clone()));
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(std::time::Duration::from_millis(50 + seed % 350));
        drop(node); // SIGKILL
    }
    bridge.set_up(true);
    stop.store(true, Ordering::Relaxed);
    let _ = http_producer.join();
    let acked_mqtt = mqtt_producer
        .map(std::thread::JoinHandle::join)
        .transpose()
        .map_err(|_| anyhow::anyhow!("the device thread panicked"))?
        .unwrap_or_default();
    let acked_http = acked_http.lock().map(|a| a.clone()).unwrap_or_default();
    assert!(
        acked_http.len() > 100 && acked_mqtt.len() > 100,
        "too few events acknowledged"
    );

    // After the last restart, everything acknowledged arrives.
    let _node = start_node(&manifest, &cache, http_port)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let got_http = arrived_http.lock().map(|r| r.clone()).unwrap_or_default();
        let got_mqtt = arrived_mqtt.lock().map(|r| r.clone()).unwrap_or_default();
        let (missing_http, dup_http) = missing_and_duplicates(&acked_http, &got_http);
        let (missing_mqtt, dup_mqtt) = missing_and_duplicates(&acked_mqtt, &got_mqtt);
        if missing_http.is_empty() && missing_mqtt.is_empty() {
            // The figures BENCHMARKS.md records (cargo test ... -- --nocapture).
            println!(
                "soak ({}): 20 SIGKILLs; HTTP in: {} acknowledged, 0 missing, {dup_http} duplicated; MQTT in: {} acknowledged, 0 missing, {dup_mqtt} duplicated",
                match input {
                    SoakInput::External(_) => "MQTT in through mosquitto",
                    SoakInput::Embedded { .. } => "MQTT in through the embedded broker",
                },
                acked_http.len(),
                acked_mqtt.len()
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "missing: HTTP {} of {} (e.g. {:?}), MQTT {} of {} (e.g. {:?})",
            missing_http.len(),
            acked_http.len(),
            &missing_http[..missing_http.len().min(5)],
            missing_mqtt.len(),
            acked_mqtt.len(),
            &missing_mqtt[..missing_mqtt.len().min(5)],
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Ok(())
}

/// `brink audit verify --data-dir DIR`.
fn audit_verify(cache: &Path, dir: &Path) -> anyhow::Result<Output> {
    brink(
        cache,
        &["audit", "verify", "--data-dir", &dir.display().to_string()],
    )
}

/// A copy of the ledger, head and key under `state` in `to`, its ledger
/// lines passed through `tamper`.
fn tampered_copy(state: &Path, to: &Path, tamper: impl Fn(&mut Vec<String>)) -> anyhow::Result<()> {
    std::fs::create_dir_all(to.join("audit"))?;
    std::fs::copy(state.join("node.key"), to.join("node.key"))?;
    std::fs::copy(state.join("audit/head.json"), to.join("audit/head.json"))?;
    let mut lines: Vec<String> = std::fs::read_to_string(state.join("audit/ledger.jsonl"))?
        .lines()
        .map(str::to_owned)
        .collect();
    tamper(&mut lines);
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(to.join("audit/ledger.jsonl"), text)?;
    Ok(())
}

#[test]
fn audit_verify_names_each_way_the_ledger_was_tampered_with_and_a_torn_record() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("cache");
    let (http_port, admin_port) = (free_port()?, free_port()?);
    let manifest = stateful_manifest(dir.path(), http_port, admin_port)?;
    let node = start_node(&manifest, &cache, http_port)?;
    for i in 0..4 {
        let out = kv_cli(
            &cache,
            admin_port,
            &["set", "devices", &format!("d{i}"), "{}"],
        )?;
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // SIGKILL: every change acknowledged was recorded before its answer.
    drop(node);
    let state = dir.path().join("state");
    let out = audit_verify(&cache, &state)?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8(out.stdout)?.starts_with("ok: 5 records"),
        "node.start and four kv.set"
    );
    type Tamper = fn(&mut Vec<String>);
    let ways: [(&str, Tamper, &str); 4] = [
        (
            "edit",
            |l| l[2] = l[2].replace("devices/d1", "devices/d9"),
            "edited: record 3",
        ),
        ("delete", |l| drop(l.remove(2)), "deleted: record 3"),
        (
            "reorder",
            |l| l.swap(2, 3),
            "reordered: line 3 holds record 4",
        ),
        (
            "truncate",
            |l| l.truncate(3),
            "truncated: the ledger ends at record 3",
        ),
    ];
    for (name, tamper, says) in ways {
        let copy = dir.path().join(name);
        tampered_copy(&state, &copy, tamper)?;
        let out = audit_verify(&cache, &copy)?;
        assert_clean_failure(&out, says);
    }
    // A record torn by a crash mid-write is reported, then kept in a
    // `ledger.torn` record at the next start, never silently dropped.
    let ledger = state.join("audit/ledger.jsonl");
    let mut text = std::fs::read_to_string(&ledger)?;
    text.push_str(r#"{"seq":6,"time":"2026-12-04T07:00:00.000Z","princ"#);
    std::fs::write(&ledger, text)?;
    assert_clean_failure(&audit_verify(&cache, &state)?, "torn: line 6");
    let node = start_node(&manifest, &cache, http_port)?;
    let admin = format!("http://127.0.0.1:{admin_port}");
    let out = brink(&cache, &["audit", "ls", "--url", &admin])?;
    let listed = String::from_utf8(out.stdout)?;
    let torn = listed.lines().find(|l| l.contains("ledger.torn"));
    assert!(torn.is_some_and(|l| l.contains(r#""princ"#)), "{listed}");
    drop(node);
    let out = audit_verify(&cache, &state)?;
    assert!(out.status.success(), "{}", stderr(&out));
    Ok(())
}

#[test]
fn status_names_the_machine_and_its_accelerators_and_prints_json_for_scripts() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("cache");
    let (http_port, admin_port) = (free_port()?, free_port()?);
    let manifest = stateful_manifest(dir.path(), http_port, admin_port)?;
    let _node = start_node(&manifest, &cache, http_port)?;
    let admin = format!("http://127.0.0.1:{admin_port}");
    let out = brink(&cache, &["status", "--url", &admin])?;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout)?;
    for label in [
        "node ",
        "machine ",
        "disk ",
        "onnxruntime ",
        "models ",
        "audit key ",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(label)),
            "no {label:?} in\n{text}"
        );
    }
    assert!(
        text.lines().any(|l| l.starts_with("gpu")),
        "GPUs, or why none were found:\n{text}"
    );
    let out = brink(&cache, &["status", "--json", "--url", &admin])?;
    let facts: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(facts["machine"]["arch"], std::env::consts::ARCH);
    assert!(facts["disk"]["free_bytes"].as_u64() > Some(0), "{facts}");
    // Without [node], the node is named for its machine.
    let id = facts["node"]["id"].as_str().unwrap_or_default();
    assert!(!id.is_empty(), "{facts}");
    assert!(
        text.starts_with(&format!("node         {id}: brink ")),
        "{text}"
    );
    Ok(())
}

#[test]
fn log_format_json_writes_one_object_per_record_for_log_shippers() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let manifest = dir.path().join("brink.toml");
    std::fs::write(
        &manifest,
        format!(
            "brink_manifest_version = 1\n[model.digits]\npath = {:?}\ntarget = \"gpu\"\nfallback = \"cpu\"\n",
            root()
                .join("examples/digits/digits.onnx")
                .display()
                .to_string()
        ),
    )?;
    let cache = dir.path().join("cache");
    let path = manifest.display().to_string();
    let out = brink(&cache, &["--log-format", "json", "up", &path, "--check"])?;
    assert!(out.status.success(), "{}", stderr(&out));
    let records: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    // The fallback is said, as a record a shipper can filter on.
    assert!(
        records.iter().any(|r| r["level"] == "WARN"
            && r["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("CPU only"))),
        "{records:?}"
    );
    let out = brink(&cache, &["--log-format", "yaml", "up", &path, "--check"])?;
    assert_eq!(out.status.code(), Some(2), "an unknown format is refused");
    Ok(())
}

/// Publishes `n` QoS 1 events (ids `f0`, `f1`, …) to `in/<k>` with up to
/// 100 in flight; the ids the broker acknowledged. A PUBACK is matched to
/// its message through the packet id rumqttc gave it, in publish order.
fn mqtt_burst(port: u16, n: usize) -> anyhow::Result<Vec<String>> {
    mqtt_burst_from(port, 0, n)
}

/// [`mqtt_burst`] of the events `f<first>` to `f<first + n - 1>`.
fn mqtt_burst_from(port: u16, first: usize, n: usize) -> anyhow::Result<Vec<String>> {
    use rumqttc::Outgoing;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, Incoming, MqttOptions};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut options =
            MqttOptions::new(format!("fleet-device-{port}-{first}"), "127.0.0.1", port);
        options.set_outgoing_inflight_upper_limit(100);
        let (client, mut events) = AsyncClient::new(options, 256);
        let publisher = tokio::spawn(async move {
            for k in first..first + n {
                let event = format!(
                    r#"{{"specversion":"1.0","id":"f{k}","source":"/d","type":"t","datacontenttype":"application/json","data":{{"n":{k}}}}}"#
                );
                client
                    .publish(format!("in/{k}"), QoS::AtLeastOnce, false, event)
                    .await?;
            }
            anyhow::Ok(client)
        });
        let mut next = 0usize;
        let mut in_flight = std::collections::HashMap::new();
        let mut acked = Vec::with_capacity(n);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(180);
        while acked.len() < n {
            let event = tokio::time::timeout_at(deadline, events.poll())
                .await
                .map_err(|_| anyhow::anyhow!("{} of {n} acknowledged in 180 s", acked.len()))?
                .map_err(|e| anyhow::anyhow!("the device lost mosquitto: {e}"))?;
            match event {
                Event::Outgoing(Outgoing::Publish(pkid)) => {
                    in_flight.insert(pkid, format!("f{}", first + next));
                    next += 1;
                }
                Event::Incoming(Incoming::PubAck(ack)) => {
                    acked.extend(in_flight.remove(&ack.pkid));
                }
                _ => {}
            }
        }
        drop(publisher.await??);
        Ok(acked)
    })
}

/// `brink_events_in_total` of `function` on the node serving `http_port`.
fn events_in(http_port: u16, function: &str) -> u64 {
    let prefix = format!(r#"brink_events_in_total{{function="{function}",trigger="mqtt"}} "#);
    http(http_port, "GET", "/metrics", "")
        .ok()
        .and_then(|(_, text)| {
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str())?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn three_nodes_share_one_mosquitto_and_a_sigkilled_one_loses_no_acknowledged_event()
-> anyhow::Result<()> {
    let broker = Mosquitto::start()?;
    let arrived = mqtt_collector(broker.port, "out/#");
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("cache");
    let mut nodes = Vec::new();
    for i in 0..3 {
        let http_port = free_port()?;
        let manifest = fleet_manifest(
            &dir.path().join(format!("node-{i}")),
            &format!("node-{i}"),
            broker.port,
            http_port,
        )?;
        let process = start_node(&manifest, &cache, http_port)?;
        nodes.push((manifest, http_port, Some(process)));
    }
    let n = 30_000;
    let started = std::time::Instant::now();
    let producer = {
        let port = broker.port;
        std::thread::spawn(move || mqtt_burst(port, n))
    };
    // SIGKILL node 1 once a sixth of the events are through, mid-stream.
    let count = |arrived: &std::sync::Mutex<Vec<String>>| arrived.lock().map_or(0, |a| a.len());
    while count(&arrived) < n / 6 {
        anyhow::ensure!(
            started.elapsed().as_secs() < 120,
            "the fleet stalled: {} arrived, handled {:?}",
            count(&arrived),
            nodes
                .iter()
                .map(|(_, port, _)| events_in(*port, "relay"))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let handled_before_kill = events_in(nodes[1].1, "relay");
    let killed_at = std::time::Instant::now();
    drop(nodes[1].2.take()); // SIGKILL
    std::thread::sleep(std::time::Duration::from_millis(500));
    nodes[1].2 = Some(start_node(&nodes[1].0, &cache, nodes[1].1)?);
    let back_after = killed_at.elapsed();
    let acked = producer
        .join()
        .map_err(|_| anyhow::anyhow!("the device thread panicked"))??;
    assert_eq!(acked.len(), n, "every event was acknowledged by mosquitto");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let (missing, duplicates) = loop {
        let got = arrived.lock().map(|a| a.clone()).unwrap_or_default();
        let (missing, duplicates) = missing_and_duplicates(&acked, &got);
        if missing.is_empty() || std::time::Instant::now() > deadline {
            break (missing, duplicates);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(
        missing.is_empty(),
        "{} acknowledged events never handled, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let shares: Vec<u64> = nodes
        .iter()
        .map(|(_, port, _)| events_in(*port, "relay"))
        .collect();
    // The figures BENCHMARKS.md records (cargo test ... -- --nocapture).
    println!(
        "fleet: 3 nodes, {n} QoS 1 events through mosquitto in {:.1} s; node-1 SIGKILLed after {handled_before_kill} events and serving again {} ms later; handled by node-0 {}, node-1 {} (after its restart), node-2 {}; 0 lost, {duplicates} handled twice",
        killed_at.elapsed().as_secs_f64() + killed_at.duration_since(started).as_secs_f64(),
        back_after.as_millis(),
        shares[0],
        shares[1],
        shares[2]
    );
    assert!(
        shares[0] > 0 && shares[2] > 0,
        "the survivors shared the load: {shares:?}"
    );
    Ok(())
}

/// A `brink up` node with a registry under `home/<name>`, its admin API on
/// loopback with the operator token `operator-secret`; `trusted_keys` is
/// its signature policy. Its URL and a token of its tenant `acme`.
fn registry_node(
    home: &Path,
    name: &str,
    trusted_keys: &str,
) -> anyhow::Result<(NodeProcess, String, String)> {
    registry_node_with(home, name, trusted_keys, "")
}

/// [`registry_node`] with more of the manifest (`[registry.oci]`).
fn registry_node_with(
    home: &Path,
    name: &str,
    trusted_keys: &str,
    more: &str,
) -> anyhow::Result<(NodeProcess, String, String)> {
    let dir = home.join(name);
    std::fs::create_dir_all(&dir)?;
    let (http_port, admin_port) = (free_port()?, free_port()?);
    let manifest = dir.join("brink.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"brink_manifest_version = 1
data_dir = "state"
[node]
id = "{name}"
[http]
listen = "127.0.0.1:{http_port}"
[admin]
listen = "127.0.0.1:{admin_port}"
token = "operator-secret"
[registry]
trusted_keys = [{trusted_keys}]
{more}
"#
        ),
    )?;
    let node = start_node(&manifest, &home.join("cache"), http_port)?;
    let url = format!("http://127.0.0.1:{admin_port}");
    let token = ok(brink_as(
        home,
        &[
            "tenant",
            "create",
            "acme",
            "--url",
            &url,
            "--token",
            "operator-secret",
        ],
    )?)?;
    Ok((node, url, token.trim().to_owned()))
}

/// The version `acme`'s `transform` runs on the node at `url`, if any.
fn active_on(home: &Path, url: &str, token: &str) -> anyhow::Result<Option<String>> {
    let listed = ok(brink_as(
        home,
        &["ls", "--json", "--url", url, "--token", token],
    )?)?;
    let listed: serde_json::Value = serde_json::from_str(&listed)?;
    Ok(listed["functions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["name"] == "transform")
        .and_then(|f| f["active"].as_str().map(str::to_owned)))
}

#[test]
fn a_fleet_deploy_activates_only_where_the_nodes_checks_passed_and_a_fleet_rollback_reports_each_node()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let home = dir.path();
    let key = home.join("release.key");
    let public = ok(brink_as(
        home,
        &["keygen", "--out", &key.display().to_string()],
    )?)?;
    // One node takes unsigned versions; the other requires the release key.
    let (_open, open_url, open_token) = registry_node(home, "open", "")?;
    let (_strict, strict_url, strict_token) =
        registry_node(home, "strict", &format!("{:?}", public.trim()))?;
    let fleet = home.join("fleet.toml");
    std::fs::write(
        &fleet,
        format!(
            "[[node]]\nurl = {open_url:?}\ntoken = {open_token:?}\n\n[[node]]\nurl = {strict_url:?}\ntoken = {strict_token:?}\n"
        ),
    )?;
    let wasm = home.join("transform.wasm");
    std::fs::copy(artifacts::TRANSFORM, &wasm)?;
    let wasm = wasm.display().to_string();
    let fleet_arg = fleet.display().to_string();
    let deploy = |version: &str, extra: &[&str]| {
        let args = [
            &[
                "deploy",
                &wasm,
                "--name",
                "transform",
                "--version",
                version,
                "--fleet",
                &fleet_arg,
            ][..],
            extra,
        ]
        .concat();
        brink_as(home, &args)
    };

    let unsigned = deploy("1.0.0", &[])?;
    // Each node's line on stdout, then one error.
    assert_eq!(unsigned.status.code(), Some(1), "{}", stderr(&unsigned));
    assert!(
        stderr(&unsigned).ends_with("error: 1 of 2 nodes failed; the others run transform@1.0.0\n"),
        "{}",
        stderr(&unsigned)
    );
    let said = String::from_utf8(unsigned.stdout.clone())?;
    let line = |url: &str| {
        said.lines()
            .find(|l| l.starts_with(url))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        line(&open_url).contains("ok   deployed transform@1.0.0, active 1.0.0"),
        "{said}"
    );
    assert!(
        line(&strict_url).contains("FAIL refused, not activated")
            && line(&strict_url).contains("signatures"),
        "{said}"
    );
    assert_eq!(
        active_on(home, &open_url, &open_token)?.as_deref(),
        Some("1.0.0")
    );
    assert_eq!(active_on(home, &strict_url, &strict_token)?, None);

    // Signed, it goes everywhere.
    let signed = ok(deploy(
        "1.1.0",
        &["--sign-with", &key.display().to_string()],
    )?)?;
    assert_eq!(
        signed
            .lines()
            .filter(|l| l.contains(" ok   deployed"))
            .count(),
        2,
        "{signed}"
    );
    assert_eq!(
        active_on(home, &open_url, &open_token)?.as_deref(),
        Some("1.1.0")
    );
    assert_eq!(
        active_on(home, &strict_url, &strict_token)?.as_deref(),
        Some("1.1.0")
    );

    // Rolled back across the fleet: the open node to 1.0.0; the strict one
    // never ran another version, and says so.
    let rolled = brink_as(home, &["rollback", "transform", "--fleet", &fleet_arg])?;
    assert_eq!(rolled.status.code(), Some(1), "{}", stderr(&rolled));
    let said = String::from_utf8(rolled.stdout.clone())?;
    assert!(
        said.lines()
            .any(|l| l.starts_with(&open_url) && l.contains("ok   transform: active 1.0.0")),
        "{said}"
    );
    assert!(
        said.lines()
            .any(|l| l.starts_with(&strict_url) && l.contains("FAIL not rolled back")),
        "{said}"
    );
    assert!(
        stderr(&rolled)
            .ends_with("error: 1 of 2 nodes failed to roll transform back; the others did\n"),
        "{}",
        stderr(&rolled)
    );
    assert_eq!(
        active_on(home, &open_url, &open_token)?.as_deref(),
        Some("1.0.0")
    );
    assert_eq!(
        active_on(home, &strict_url, &strict_token)?.as_deref(),
        Some("1.1.0")
    );

    // A fleet file with a misspelt key, or no nodes, is refused before any upload.
    std::fs::write(&fleet, "[[node]]\nadress = \"http://x\"\n")?;
    assert_clean_failure(
        &deploy("1.2.0", &[])?,
        "fleet.toml, line 2: unknown field `adress`",
    );
    std::fs::write(&fleet, "")?;
    assert_clean_failure(&deploy("1.2.0", &[])?, "missing field `node`");
    Ok(())
}

/// A distribution registry (Debian's `docker-registry`, 2.8) on loopback,
/// with its storage under `dir`; killed when dropped.
struct OciRegistry {
    child: std::process::Child,
    host: String,
    storage: PathBuf,
}

impl Drop for OciRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a registry with `http` (the YAML under `http:` past `addr`) and
/// `auth` sections; `None` where docker-registry is not installed, unless
/// `BRINK_REQUIRE_REGISTRY` says it must be (`scripts/test` sets it).
fn oci_registry(dir: &Path, http: &str, auth: &str) -> anyhow::Result<Option<OciRegistry>> {
    let installed = Command::new("docker-registry")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        anyhow::ensure!(
            std::env::var_os("BRINK_REQUIRE_REGISTRY").is_none(),
            "docker-registry is not installed (apt-get install docker-registry)"
        );
        eprintln!("skipped: docker-registry is not installed");
        return Ok(None);
    }
    let port = free_port()?;
    let storage = dir.join("storage");
    let config = dir.join("registry.yml");
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{http}{auth}",
            storage.display()
        ),
    )?;
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let registry = OciRegistry {
        child,
        host: format!("127.0.0.1:{port}"),
        storage,
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(&registry.host).is_err() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "docker-registry not listening in 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(Some(registry))
}

/// Overwrites one byte of every stored blob of `digest`, as a registry
/// whose disk or operator cannot be trusted would serve it.
fn tamper_blob(storage: &Path, digest: &str) -> anyhow::Result<()> {
    let hex = digest.trim_start_matches("sha256:");
    let path = storage
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let mut bytes = std::fs::read(&path)?;
    bytes[100] ^= 0xff;
    std::fs::write(&path, bytes)?;
    Ok(())
}

#[test]
fn a_component_pushed_to_an_oci_registry_is_pulled_by_digest_checked_and_deployed()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let home = dir.path();
    let Some(registry) = oci_registry(&home.join("registry"), "", "")? else {
        return Ok(());
    };
    let repo = format!("oci://{}/acme/transform", registry.host);
    let key = home.join("release.key");
    let public = ok(brink_as(
        home,
        &["keygen", "--out", &key.display().to_string()],
    )?)?;
    let wasm = home.join("transform.wasm");
    std::fs::copy(artifacts::TRANSFORM, &wasm)?;
    let wasm = wasm.display().to_string();
    let push = |tag: &str, version: &str, extra: &[&str]| {
        let reference = format!("{repo}:{tag}");
        let args = [
            &[
                "push",
                &wasm,
                &reference,
                "--version",
                version,
                "--plain-http",
            ][..],
            extra,
        ]
        .concat();
        brink_as(home, &args)
    };

    // Pushed signed: the answer is the reference pinned to the manifest.
    let pinned = ok(push(
        "1.0.0",
        "1.0.0",
        &["--sign-with", &key.display().to_string()],
    )?)?;
    assert!(
        pinned.trim().starts_with(&format!("{repo}@sha256:")),
        "{pinned}"
    );
    ok(push("unsigned", "1.1.0", &[])?)?;

    // Pulled back: the same bytes, the signature beside them.
    let out = home.join("pulled.wasm");
    ok(brink_as(
        home,
        &[
            "pull",
            pinned.trim(),
            "--plain-http",
            "-o",
            &out.display().to_string(),
        ],
    )?)?;
    assert_eq!(std::fs::read(&out)?, std::fs::read(&wasm)?);
    let sigs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.join("pulled.wasm.sigs.json"))?)?;
    assert_eq!(sigs[0]["key"].as_str(), Some(public.trim()));
    // Without --plain-http the CLI speaks TLS, and says where it failed.
    let tls = brink_as(home, &["pull", pinned.trim(), "-o", "x.wasm"])?;
    assert_clean_failure(&tls, "reading the manifest of");

    // A node that requires the release key and pulls from this registry.
    let oci = format!(
        "[registry.oci]\nregistries = [{host:?}]\nplain_http = [{host:?}]",
        host = registry.host
    );
    let (_strict, url, token) =
        registry_node_with(home, "strict", &format!("{:?}", public.trim()), &oci)?;
    let deploy = |reference: &str, node: (&str, &str)| {
        brink_as(
            home,
            &[
                "deploy",
                reference,
                "--plain-http",
                "--url",
                node.0,
                "--token",
                node.1,
            ],
        )
    };
    // Name and version come from the artifact; the node pulls by digest.
    let took = std::time::Instant::now();
    let deployed = ok(deploy(&format!("{repo}:1.0.0"), (&url, &token))?)?;
    println!(
        "oci: deploy oci:// (manifest read, node pull, checks, compile, activate) {} ms",
        took.elapsed().as_millis()
    );
    assert!(deployed.contains("deployed transform@1.0.0"), "{deployed}");
    assert_eq!(active_on(home, &url, &token)?.as_deref(), Some("1.0.0"));
    let invoked = ok(brink_as(
        home,
        &[
            "invoke",
            "transform",
            "--data",
            r#"{"device": "t-1", "value": 20}"#,
            "--url",
            &url,
            "--token",
            &token,
        ],
    )?)?;
    assert!(invoked.contains("68"), "{invoked}");

    // Unsigned: pulled, then refused by the same policy as an upload.
    let unsigned = deploy(&format!("{repo}:unsigned"), (&url, &token))?;
    assert_clean_failure(&unsigned, "signature");
    assert_eq!(active_on(home, &url, &token)?.as_deref(), Some("1.0.0"));

    // A signed 1.1.0 staged from the registry, run as a canary, promoted.
    let key_arg = key.display().to_string();
    ok(push("1.1.0", "1.1.0", &["--sign-with", &key_arg])?)?;
    let staged = brink_as(
        home,
        &[
            "deploy",
            &format!("{repo}:1.1.0"),
            "--plain-http",
            "--no-activate",
            "--url",
            &url,
            "--token",
            &token,
        ],
    )?;
    assert!(ok(staged)?.contains("staged transform@1.1.0"));
    let remote = ["--url", url.as_str(), "--token", token.as_str()];
    let canary = ok(brink_as(
        home,
        &[
            &["activate", "transform", "1.1.0", "--weight", "20"][..],
            &remote,
        ]
        .concat(),
    )?)?;
    assert_eq!(
        canary.trim(),
        "transform: active 1.0.0, canary 1.1.0 at 20%"
    );
    let zero = brink_as(
        home,
        &[
            &["activate", "transform", "1.1.0", "--weight", "0"][..],
            &remote,
        ]
        .concat(),
    )?;
    assert_eq!(zero.status.code(), Some(2), "{}", stderr(&zero));
    let promoted = ok(brink_as(
        home,
        &[&["promote", "transform"][..], &remote].concat(),
    )?)?;
    assert_eq!(promoted.trim(), "transform: active 1.1.0");
    let again = brink_as(home, &[&["promote", "transform"][..], &remote].concat())?;
    assert_clean_failure(&again, "no canary to promote");

    // A node that lists no registries pulls from none; nor from one it does not list.
    let (_closed, closed_url, closed_token) = registry_node(home, "closed", "")?;
    let closed = deploy(&format!("{repo}:1.0.0"), (&closed_url, &closed_token))?;
    assert_clean_failure(&closed, "pulls from no OCI registry");
    // The same registry by another name is one the node does not list.
    let port = registry.host.rsplit(':').next().unwrap_or_default();
    let elsewhere = deploy(
        &format!("oci://localhost:{port}/acme/transform:1.0.0"),
        (&url, &token),
    )?;
    assert_clean_failure(&elsewhere, &format!("does not pull from localhost:{port}"));

    // The registry's copy of the layer tampered with: refused on pull and on deploy.
    let digest = brink_registry_digest(&std::fs::read(&wasm)?);
    tamper_blob(&registry.storage, &digest)?;
    let pulled = brink_as(
        home,
        &["pull", pinned.trim(), "--plain-http", "-o", "t.wasm"],
    )?;
    assert_clean_failure(&pulled, "damaged or tampered with");
    assert!(!home.join("t.wasm").exists());
    let (_fresh, fresh_url, fresh_token) =
        registry_node_with(home, "fresh", &format!("{:?}", public.trim()), &oci)?;
    let tampered = deploy(pinned.trim(), (&fresh_url, &fresh_token))?;
    assert_clean_failure(&tampered, "damaged or tampered with");
    let listed = ok(brink_as(
        home,
        &["ls", "--json", "--url", &fresh_url, "--token", &fresh_token],
    )?)?;
    assert!(!listed.contains("transform"), "{listed}");
    Ok(())
}

/// `sha256:<hex>` of `bytes`, as the registry and Brink name blobs.
fn brink_registry_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

#[test]
fn a_registry_login_is_checked_then_used_and_tls_trusts_only_the_given_ca() -> anyhow::Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let dir = tempfile::tempdir()?;
    let home = dir.path();
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let cert =
        CertificateParams::new(vec!["127.0.0.1".to_owned()])?.signed_by(&key, &ca, &ca_key)?;
    let pki = home.join("pki");
    std::fs::create_dir_all(&pki)?;
    std::fs::write(pki.join("ca.pem"), ca.pem())?;
    std::fs::write(pki.join("server.pem"), cert.pem())?;
    std::fs::write(pki.join("server.key"), key.serialize_pem())?;
    // bcrypt of "s3cret-pass" at cost 4 (the registry reads only bcrypt).
    std::fs::write(
        pki.join("htpasswd"),
        "ci:$2b$04$hvhaj1yBP3My6YEONDAziOBZBT5dD9sIjEHYXR5P6foCr74.tYWOK\n",
    )?;
    let tls = format!(
        "  tls:\n    certificate: {}\n    key: {}\n",
        pki.join("server.pem").display(),
        pki.join("server.key").display()
    );
    let auth = format!(
        "auth:\n  htpasswd:\n    realm: brink-test\n    path: {}\n",
        pki.join("htpasswd").display()
    );
    let Some(registry) = oci_registry(&home.join("registry"), &tls, &auth)? else {
        return Ok(());
    };
    let ca_file = pki.join("ca.pem").display().to_string();
    let config = home.join("docker").join("config.json");
    let config_arg = config.display().to_string();
    let login = |password: &str| -> anyhow::Result<Output> {
        let mut child = brink_command(
            home,
            &[
                "login",
                &format!("oci://{}", registry.host),
                "--username",
                "ci",
                "--password-stdin",
                "--ca-file",
                &ca_file,
                "--registry-config",
                &config_arg,
            ],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
        use std::io::Write as _;
        child
            .stdin
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdin"))?
            .write_all(format!("{password}\n").as_bytes())?;
        Ok(child.wait_with_output()?)
    };
    let wrong = login("guess")?;
    assert_clean_failure(&wrong, "refused the credentials");
    assert!(!config.exists(), "a refused login was stored");
    ok(login("s3cret-pass")?)?;
    assert!(std::fs::read_to_string(&config)?.contains(&registry.host));

    let reference = format!("oci://{}/acme/transform:1.0.0", registry.host);
    let push = |extra: &[&str]| {
        let args = [
            &[
                "push",
                artifacts::TRANSFORM,
                &reference,
                "--name",
                "transform",
                "--version",
                "1.0.0",
            ][..],
            extra,
        ]
        .concat();
        brink_as(home, &args)
    };
    // The system's CAs do not include the test CA.
    let untrusted = push(&["--registry-config", &config_arg])?;
    assert_clean_failure(&untrusted, "UnknownIssuer");
    // Trusted, but without the stored login: the registry says no.
    let anonymous = push(&[
        "--ca-file",
        &ca_file,
        "--registry-config",
        &home.join("none.json").display().to_string(),
    ])?;
    assert_clean_failure(&anonymous, "refused access; sign in with `brink login");
    ok(push(&[
        "--ca-file",
        &ca_file,
        "--registry-config",
        &config_arg,
    ])?)?;
    ok(brink_as(
        home,
        &[
            "pull",
            &reference,
            "--ca-file",
            &ca_file,
            "--registry-config",
            &config_arg,
            "-o",
            &home.join("p.wasm").display().to_string(),
        ],
    )?)?;
    assert_eq!(
        std::fs::read(home.join("p.wasm"))?,
        std::fs::read(artifacts::TRANSFORM)?
    );
    ok(brink_as(
        home,
        &[
            "logout",
            &format!("oci://{}", registry.host),
            "--registry-config",
            &config_arg,
        ],
    )?)?;
    assert!(!std::fs::read_to_string(&config)?.contains(&registry.host));
    Ok(())
}

/// A `brink up` manifest of a `relay` node in the shared group `fleet` on
/// the mosquitto at `port`, serving HTTP on `http_port`.
fn fleet_manifest(home: &Path, id: &str, port: u16, http_port: u16) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(home)?;
    let manifest = home.join("brink.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"brink_manifest_version = 1
data_dir = "state"
[node]
id = "{id}"
[http]
listen = "127.0.0.1:{http_port}"
[mqtt]
url = "mqtt://127.0.0.1:{port}"
shared_group = "fleet"
[function.relay]
source = {echo:?}
triggers = [{{ mqtt = "in/#" }}]
outputs = [{{ mqtt = "out/{{id}}" }}]
"#,
            echo = artifacts::ECHO,
        ),
    )?;
    Ok(manifest)
}

/// Whether the broker at `port` holds a session for `client_id` (MQTT 5,
/// connecting without clean start).
fn session_present(port: u16, client_id: &str) -> anyhow::Result<bool> {
    use rumqttc::v5::{AsyncClient, Event, Incoming, MqttOptions};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options.set_clean_start(false);
        let (client, mut events) = AsyncClient::new(options, 16);
        let present = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                if let Event::Incoming(Incoming::ConnAck(ack)) = events.poll().await? {
                    return anyhow::Ok(ack.session_present);
                }
            }
        })
        .await??;
        let _ = client.disconnect().await;
        Ok(present)
    })
}

/// Waits until every one of `acked` arrived, or `seconds` passed; the missing.
fn wait_arrived(
    acked: &[String],
    arrived: &std::sync::Mutex<Vec<String>>,
    seconds: u64,
) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        let got = arrived.lock().map(|a| a.clone()).unwrap_or_default();
        let (missing, _) = missing_and_duplicates(acked, &got);
        if missing.is_empty() || std::time::Instant::now() > deadline {
            return missing;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_retired_node_hands_over_what_its_session_held_and_the_broker_queues_nothing_more_for_it()
-> anyhow::Result<()> {
    let broker = Mosquitto::start()?;
    let arrived = mqtt_collector(broker.port, "out/#");
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("cache");
    let (a_port, b_port) = (free_port()?, free_port()?);
    let a = fleet_manifest(&dir.path().join("a"), "node-a", broker.port, a_port)?;
    let b = fleet_manifest(&dir.path().join("b"), "node-b", broker.port, b_port)?;
    let node_a = start_node(&a, &cache, a_port)?;
    let _node_b = start_node(&b, &cache, b_port)?;
    // Node a dies and never comes back: its session stays at the broker,
    // which goes on queueing a's share of the group's messages.
    drop(node_a);
    let first = mqtt_burst_from(broker.port, 0, 2_000)?;
    let held = wait_arrived(&first, &arrived, 5);
    assert!(
        !held.is_empty(),
        "the dead node's session held none of the messages"
    );

    // Retired: a's session is resumed, its messages handled, the session ended.
    let retire = brink(
        &cache,
        &[
            "up",
            &a.display().to_string(),
            "--retire",
            "--quiet-ms",
            "1000",
        ],
    )?;
    let said = String::from_utf8_lossy(&retire.stdout).into_owned();
    assert!(retire.status.success(), "{}", stderr(&retire));
    assert!(
        said.starts_with("retired brink-") && said.contains("session ended"),
        "{said}"
    );
    let missing = wait_arrived(&first, &arrived, 30);
    assert!(
        missing.is_empty(),
        "{} of the held messages were lost",
        missing.len()
    );

    // Nothing more is queued for a: node b takes every new message.
    let second = mqtt_burst_from(broker.port, 2_000, 2_000)?;
    let missing = wait_arrived(&second, &arrived, 30);
    assert!(
        missing.is_empty(),
        "{} messages were queued for the retired node",
        missing.len()
    );
    assert!(events_in(b_port, "relay") as usize >= 4_000 - held.len());

    // And the broker keeps no session for a's client id.
    let id = std::fs::read_to_string(dir.path().join("a/state/node-id"))?;
    assert!(!session_present(
        broker.port,
        &format!("brink-{}", id.trim())
    )?);

    // With the embedded broker there is no session to retire.
    let embedded = dir.path().join("embedded.toml");
    std::fs::write(&embedded, "brink_manifest_version = 1\n")?;
    let refused = brink(&cache, &["up", &embedded.display().to_string(), "--retire"])?;
    assert_clean_failure(&refused, "external broker");
    Ok(())
}
