//! The `brink` CLI does what its README and its help say: connection flags
//! where the README puts them, files named on the command line must exist,
//! each cause said once, hints that name the flag to pass, suggestions for
//! typos, completions, `up --check`, and `up` listing its routes.

#![allow(clippy::panic)]

use std::io::{BufRead as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use brink_test_artifacts as artifacts;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `brink ARGS` with a private compile cache in `cache`, stdin closed.
fn brink(cache: &Path, args: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_brink"))
        .args(args)
        .env("BRINK_CACHE_DIR", cache)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()?)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[test]
fn a_mistyped_subcommand_gets_a_did_you_mean() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    for (typo, meant) in [("rnu", "'run'"), ("deplyo", "'deploy'"), ("kvv", "'kv'")] {
        let out = brink(cache.path(), &[typo])?;
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("a similar subcommand exists: {meant}")),
            "{err}"
        );
    }
    Ok(())
}

#[test]
fn connection_flags_stand_after_the_subcommand_as_the_readme_writes_them() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    let admin = format!("http://127.0.0.1:{}", free_port()?);
    // Nothing listens there: the flags must parse, and the error be the connection's.
    for args in [
        vec!["kv", "ls", "--admin", &admin],
        vec!["kv", "get", "b", "k", "--admin", &admin, "--token", "t"],
        vec!["outbox", "status", "--json", "--admin", &admin],
        vec!["outbox", "parked", "cloud", "--admin", &admin],
    ] {
        let out = brink(cache.path(), &args)?;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("cannot reach the admin API"),
            "{args:?}: {err}"
        );
    }
    Ok(())
}

#[test]
fn an_error_says_each_cause_once() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    let admin = format!("http://127.0.0.1:{}", free_port()?);
    let out = brink(cache.path(), &["kv", "ls", "--admin", &admin])?;
    let err = stderr(&out);
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
    let out = brink(
        cache.path(),
        &["run", "no-such.wasm", "--event", "no-such.json"],
    )?;
    let err = stderr(&out);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    Ok(())
}

#[test]
fn publish_with_a_manifest_that_cannot_be_read_is_an_error() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    let out = brink(
        cache.path(),
        &["publish", "--manifest", "no-such.toml", "a/b", "x"],
    )?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no-such.toml"), "{err}");
    assert!(!err.contains("publishing to"), "it published anyway: {err}");
    Ok(())
}

#[test]
fn run_hints_the_flag_that_gives_a_missing_config_value_or_model() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    let reading = root().join("examples/events/reading-hot.json");
    let out = brink(
        cache.path(),
        &[
            "run",
            artifacts::FILTER,
            "--event",
            &reading.display().to_string(),
        ],
    )?;
    let err = stderr(&out);
    assert!(
        err.contains("pass it with --config threshold=VALUE"),
        "{err}"
    );
    assert!(!err.contains("Internal"), "{err}");

    let digit = root().join("examples/digits/digit-event.json");
    let out = brink(
        cache.path(),
        &[
            "run",
            artifacts::CLASSIFY_DIGITS,
            "--event",
            &digit.display().to_string(),
        ],
    )?;
    let err = stderr(&out);
    assert!(err.contains("--model NAME=PATH"), "{err}");
    assert!(
        !err.contains("models = ["),
        "it points at a manifest: {err}"
    );
    Ok(())
}

#[test]
fn completions_print_a_script_for_each_shell() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    for (shell, marker) in [
        ("bash", "_brink()"),
        ("zsh", "#compdef brink"),
        ("fish", "complete -c brink"),
    ] {
        let out = brink(cache.path(), &["completions", shell])?;
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = String::from_utf8(out.stdout)?;
        assert!(script.contains(marker), "{shell}: {script:.200}");
        assert!(script.contains("outbox"), "{shell}");
    }
    let out = brink(cache.path(), &["completions", "tcsh"])?;
    assert_eq!(out.status.code(), Some(2));
    Ok(())
}

fn echo_manifest(dir: &Path, http: u16, v4: u16, v5: u16, source: &str) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("brink.toml");
    std::fs::write(
        &manifest,
        format!(
            "brink_manifest_version = 1\n[http]\nlisten = \"127.0.0.1:{http}\"\n[mqtt]\nlisten = \"127.0.0.1:{v4}\"\nlisten_v5 = \"127.0.0.1:{v5}\"\n\n[function.echo]\nsource = {source:?}\ntriggers = [{{ http = \"/echo\" }}, {{ mqtt = \"in/#\" }}]\n"
        ),
    )?;
    Ok(manifest)
}

#[test]
fn up_check_validates_the_manifest_and_its_functions_without_serving() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let http = free_port()?;
    let good = echo_manifest(
        dir.path(),
        http,
        free_port()?,
        free_port()?,
        artifacts::ECHO,
    )?;
    // The port is taken: --check must not bind it.
    let _taken = std::net::TcpListener::bind(("127.0.0.1", http))?;
    let cache = dir.path().join("cache");
    let out = brink(&cache, &["up", &good.display().to_string(), "--check"])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8(out.stdout)?.contains("valid; 1 function(s)"));

    let sub = dir.path().join("bad");
    std::fs::create_dir(&sub)?;
    let bad = echo_manifest(&sub, http, 1, 2, "no-such.wasm")?;
    let out = brink(&cache, &["up", &bad.display().to_string(), "--check"])?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("function `echo`"), "{err}");
    Ok(())
}

/// A `brink up` child, killed when dropped; its stderr lines (the route
/// listing and the log) come back through a channel.
struct Up {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn up(manifest: &Path, cache: &Path) -> anyhow::Result<Up> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_brink"))
        .arg("up")
        .arg(manifest)
        .env("BRINK_CACHE_DIR", cache)
        .env("BRINK_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(Up { child, lines })
}

#[test]
fn up_lists_each_functions_routes_and_topics_once_ready() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (http, v4, v5) = (free_port()?, free_port()?, free_port()?);
    let manifest = echo_manifest(dir.path(), http, v4, v5, artifacts::ECHO)?;
    let node = up(&manifest, &dir.path().join("cache"))?;
    let mut listed = Vec::new();
    while let Ok(line) = node.lines.recv_timeout(Duration::from_secs(60)) {
        let done = line.contains("MQTT in/#");
        listed.push(line);
        if done {
            break;
        }
    }
    let listed = listed.join("\n");
    for want in [
        "Functions:".to_owned(),
        format!("POST http://127.0.0.1:{http}/functions/echo"),
        format!("POST http://127.0.0.1:{http}/events/echo"),
        "MQTT in/# on 127.0.0.1:".to_owned(),
    ] {
        assert!(listed.contains(&want), "{want:?} not in:\n{listed}");
    }
    Ok(())
}

/// An MQTT 3.1.1 CONNECT with `keep_alive` seconds and a fixed client id.
fn connect_packet(client_id: &str, keep_alive: u16) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02];
    body.extend(keep_alive.to_be_bytes());
    body.extend((client_id.len() as u16).to_be_bytes());
    body.extend(client_id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

#[test]
fn a_device_that_drops_without_disconnect_is_not_logged_as_an_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (http, v4, v5) = (free_port()?, free_port()?, free_port()?);
    let manifest = echo_manifest(dir.path(), http, v4, v5, artifacts::ECHO)?;
    let mut node = up(&manifest, &dir.path().join("cache"))?;
    let mut log = Vec::new();
    while let Ok(line) = node.lines.recv_timeout(Duration::from_secs(60)) {
        let ready = line.contains("MQTT in/#");
        log.push(line);
        if ready {
            break;
        }
    }
    // One device's power goes: its socket is reset with the CONNACK unread.
    let mut reset = std::net::TcpStream::connect(("127.0.0.1", v4))?;
    reset.write_all(&connect_packet("dev-reset", 30))?;
    std::thread::sleep(Duration::from_millis(300));
    drop(reset);
    // Another goes quiet: the broker ends it when its keep-alive runs out.
    let mut quiet = std::net::TcpStream::connect(("127.0.0.1", v4))?;
    quiet.write_all(&connect_packet("dev-quiet", 1))?;
    let mut connack = [0u8; 4];
    quiet.read_exact(&mut connack)?;
    assert_eq!(connack[0], 0x20);
    std::thread::sleep(Duration::from_millis(2500));
    let status = Command::new("kill")
        .args(["-TERM", &node.child.id().to_string()])
        .status()?;
    assert!(status.success());
    node.child.wait()?;
    // The reader thread ends with the pipe, so this takes every line.
    log.extend(node.lines.iter());
    let log = log.join("\n");
    assert!(
        log.contains("disconnected"),
        "the drops were not seen:\n{log}"
    );
    assert!(!log.contains("ERROR"), "{log}");
    Ok(())
}

#[test]
fn the_help_says_what_brink_is_for() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    let out = brink(cache.path(), &["--help"])?;
    let help = String::from_utf8(out.stdout)?;
    let first = help.lines().next().unwrap_or_default();
    assert!(
        first.contains("WebAssembly functions on an edge node"),
        "{first}"
    );
    assert!(help.contains("brink up"), "{help}");
    Ok(())
}

#[test]
fn run_at_a_terminal_without_an_event_says_it_reads_standard_input() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    // `script` gives the command a terminal; what we write reaches it as typing.
    let command = format!("{} run {}", env!("CARGO_BIN_EXE_brink"), artifacts::ECHO);
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("BRINK_CACHE_DIR", cache.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
    std::thread::sleep(Duration::from_millis(500));
    stdin.write_all(
        b"{\"specversion\":\"1.0\",\"id\":\"tty-1\",\"source\":\"/s\",\"type\":\"t\"}\n\x04",
    )?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("brink run did not end at end of input");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(stdin);
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_string(&mut out)?;
    }
    assert!(
        out.contains("reading the event from standard input"),
        "{out}"
    );
    assert!(out.contains("\"id\":\"tty-1\""), "{out}");
    Ok(())
}
