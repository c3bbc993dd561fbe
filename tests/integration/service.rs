//! Installing Brink as a service: the systemd unit, the container image and
//! the Kubernetes DaemonSet under `packaging/` agree with the manifest they
//! ship, and the operator token comes from a file, never the manifest.

use std::path::{Path, PathBuf};

use reqwest::Method;
use yaml_rust2::{Yaml, YamlLoader};

use crate::deploy::call;

fn packaging(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging")
        .join(file)
}

fn read(file: &str) -> anyhow::Result<String> {
    let path = packaging(file);
    std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The unit's `Key=value` lines, section by section.
fn directives(unit: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.trim_matches(['[', ']']).to_owned();
        } else if let Some((key, value)) = line.split_once('=')
            && !line.starts_with('#')
        {
            out.push((section.clone(), key.to_owned(), value.to_owned()));
        }
    }
    out
}

/// `systemd-analyze verify` on `unit`, with ExecStart pointed at a binary
/// that exists; what it printed (nothing when the unit is clean).
fn verify(unit: &str) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("brink.service");
    let unit = unit.replace("ExecStart=/usr/local/bin/brink", "ExecStart=/bin/true");
    std::fs::write(&path, unit)?;
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

#[test]
fn the_systemd_unit_is_confined_restarts_and_systemd_finds_nothing_wrong() -> anyhow::Result<()> {
    let unit = read("systemd/brink.service")?;
    let found = directives(&unit);
    for (section, key, value) in [
        ("Service", "DynamicUser", "yes"),
        ("Service", "StateDirectory", "brink"),
        ("Service", "ProtectSystem", "strict"),
        ("Service", "ProtectHome", "yes"),
        ("Service", "NoNewPrivileges", "yes"),
        ("Service", "CapabilityBoundingSet", ""),
        ("Service", "Restart", "on-failure"),
        ("Service", "KillSignal", "SIGTERM"),
        (
            "Service",
            "LoadCredential",
            "admin-token:/etc/brink/admin-token",
        ),
        (
            "Service",
            "Environment",
            "BRINK_DATA_DIR=/var/lib/brink BRINK_CACHE_DIR=/var/cache/brink",
        ),
        ("Install", "WantedBy", "multi-user.target"),
    ] {
        assert!(
            found
                .iter()
                .any(|(s, k, v)| s == section && k == key && v == value),
            "[{section}] {key}={value} missing from the unit"
        );
    }
    // wasmtime writes machine code, then runs it.
    assert!(
        !found
            .iter()
            .any(|(_, k, v)| k == "MemoryDenyWriteExecute" && v == "yes"),
        "MemoryDenyWriteExecute=yes would refuse every function"
    );
    let available = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok();
    if !available {
        anyhow::ensure!(
            std::env::var_os("BRINK_REQUIRE_SYSTEMD").is_none(),
            "systemd-analyze not found: install Debian's systemd (scripts/test does)"
        );
        eprintln!("systemd-analyze not found: the unit's directives were checked, not verified");
        return Ok(());
    }
    assert_eq!(verify(&unit)?, "", "systemd-analyze verify found problems");
    // The check is live: a bad value and an unknown key are reported.
    let broken = unit.replace(
        "ProtectSystem=strict",
        "ProtectSystem=sometimes\nProtectAll=yes",
    );
    let said = verify(&broken)?;
    assert!(
        said.contains("sometimes") && said.contains("ProtectAll"),
        "{said}"
    );
    Ok(())
}

fn yaml_str(value: &Yaml) -> &str {
    value.as_str().unwrap_or_default()
}

/// The Kubernetes objects of `packaging/kubernetes/brink.yaml`, by kind.
fn kubernetes() -> anyhow::Result<(Yaml, Yaml)> {
    let docs = YamlLoader::load_from_str(&read("kubernetes/brink.yaml")?)?;
    let of = |kind: &str| {
        docs.iter()
            .find(|d| yaml_str(&d["kind"]) == kind)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no {kind} in brink.yaml"))
    };
    Ok((of("ConfigMap")?, of("DaemonSet")?))
}

#[test]
fn the_packaged_manifest_is_valid_and_the_image_and_daemonset_serve_it() -> anyhow::Result<()> {
    let text = read("brink.toml")?;
    let manifest = brink_host::manifest::Manifest::parse(&text, "packaging/brink.toml")?;
    let token_dir = manifest
        .admin
        .token_file
        .as_deref()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow::anyhow!("the packaged manifest must read its token from a file"))?;
    assert!(
        manifest.admin.token.is_none(),
        "no secret in a shipped file"
    );
    let http_port = i64::from(manifest.http.listen.port());

    let (config, daemon) = kubernetes()?;
    assert_eq!(
        yaml_str(&config["data"]["brink.toml"]),
        text,
        "the ConfigMap's brink.toml differs from packaging/brink.toml"
    );
    let pod = &daemon["spec"]["template"];
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(yaml_str(&annotations["prometheus.io/scrape"]), "true");
    assert_eq!(
        yaml_str(&annotations["prometheus.io/port"]),
        http_port.to_string()
    );
    assert_eq!(yaml_str(&annotations["prometheus.io/path"]), "/metrics");
    assert_eq!(
        pod["spec"]["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true)
    );
    let container = &pod["spec"]["containers"][0];
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    let port_named = |name: &str| {
        container["ports"]
            .as_vec()
            .into_iter()
            .flatten()
            .find(|p| yaml_str(&p["name"]) == name)
            .and_then(|p| p["containerPort"].as_i64())
    };
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        let get = &container[probe]["httpGet"];
        assert_eq!(yaml_str(&get["path"]), "/healthz", "{probe}");
        assert_eq!(
            port_named(yaml_str(&get["port"])),
            Some(http_port),
            "{probe}"
        );
    }
    assert_eq!(
        port_named("admin"),
        Some(i64::from(manifest.admin.listen.port()))
    );
    let mounted = |path: &Path| {
        container["volumeMounts"]
            .as_vec()
            .into_iter()
            .flatten()
            .any(|m| Path::new(yaml_str(&m["mountPath"])) == path)
    };
    let env = |name: &str| {
        container["env"]
            .as_vec()
            .into_iter()
            .flatten()
            .find(|e| yaml_str(&e["name"]) == name)
            .map(|e| yaml_str(&e["value"]).to_owned())
    };
    let data_dir = env("BRINK_DATA_DIR").unwrap_or_default();
    assert!(
        mounted(Path::new(&data_dir)),
        "the data dir {data_dir:?} is not a volume"
    );
    assert!(mounted(token_dir), "the token's directory is not mounted");
    assert!(
        mounted(Path::new("/etc/brink")),
        "the ConfigMap is not mounted"
    );

    let image = read("container/Containerfile")?;
    for line in [
        "COPY packaging/brink.toml /etc/brink/brink.toml",
        "VOLUME [\"/var/lib/brink\"]",
        "USER 65532:65532",
        "ENV BRINK_DATA_DIR=/var/lib/brink",
        "CMD [\"up\", \"/etc/brink/brink.toml\"]",
    ] {
        assert!(image.lines().any(|l| l.starts_with(line)), "{line} missing");
    }
    assert_eq!(data_dir, "/var/lib/brink");
    Ok(())
}

fn token_manifest(data: &Path, token_file: &Path) -> String {
    format!(
        r#"brink_manifest_version = 1
data_dir = {data:?}
[http]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
token_file = {token_file:?}
[registry]
"#,
        data = data.display().to_string(),
        token_file = token_file.display().to_string(),
    )
}

#[tokio::test]
async fn the_operator_token_comes_from_its_file_and_a_missing_or_empty_one_stops_the_start()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("admin-token");

    let missing =
        brink_tests::start_node(&token_manifest(&dir.path().join("a"), &token_file)).await;
    let error = missing.err().map(|e| format!("{e:#}")).unwrap_or_default();
    assert!(error.contains("admin.token_file"), "{error}");
    std::fs::write(&token_file, " \n")?;
    let empty = brink_tests::start_node(&token_manifest(&dir.path().join("b"), &token_file)).await;
    let error = empty.err().map(|e| format!("{e:#}")).unwrap_or_default();
    assert!(error.contains("is empty"), "{error}");

    std::fs::write(&token_file, "operator-from-a-file\n")?;
    let node = brink_tests::start_node(&token_manifest(&dir.path().join("c"), &token_file)).await?;
    let admin = format!(
        "http://{}",
        node.admin_addr()
            .ok_or_else(|| anyhow::anyhow!("no admin API"))?
    );
    let url = format!("{admin}/v1/tenants");
    let (status, _) = call(Method::GET, &url, None, None).await?;
    assert_eq!(status, 401);
    let (status, body) = call(Method::GET, &url, Some("operator-from-a-file"), None).await?;
    assert_eq!(status, 200, "{body}");
    assert!(
        !dir.path().join("c/operator-token").exists(),
        "no token is generated beside one given"
    );
    node.shutdown().await?;
    Ok(())
}
