//! `GET /v1/node` and `brink_node_info`: what the node is and has, and
//! where its models run, a GPU→CPU fallback never silent.

use reqwest::Method;

use crate::deploy::call;

#[tokio::test]
async fn the_node_reports_its_machine_accelerators_and_a_gpu_model_fallen_back_to_the_cpu()
-> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let model =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/digits/digits.onnx");
    let text = format!(
        r#"brink_manifest_version = 1
data_dir = {data:?}
[node]
id = "gw-plant3-07"
labels = {{ site = "plant-3", line = "2" }}
[http]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
token = "operator-secret"
[registry]
[model.digits]
path = {model:?}
backend = "tract"
target = "gpu"
fallback = "cpu"
"#,
        data = data.path().display().to_string(),
        model = model.display().to_string(),
    );
    let node = brink_tests::start_node(&text).await?;
    let admin = format!(
        "http://{}",
        node.admin_addr()
            .ok_or_else(|| anyhow::anyhow!("no admin API"))?
    );
    let (status, _) = call(Method::GET, &format!("{admin}/v1/node"), None, None).await?;
    assert_eq!(status, 401, "the node's facts need a token");
    let (status, facts) = call(
        Method::GET,
        &format!("{admin}/v1/node"),
        Some("operator-secret"),
        None,
    )
    .await?;
    assert_eq!(status, 200, "{facts}");
    assert_eq!(facts["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(facts["node"]["id"], "gw-plant3-07");
    assert_eq!(facts["node"]["labels"]["site"], "plant-3");
    assert_eq!(facts["machine"]["arch"], std::env::consts::ARCH);
    assert!(facts["machine"]["cpus"].as_u64() >= Some(1), "{facts}");
    assert!(facts["disk"]["free_bytes"].as_u64() > Some(0), "{facts}");
    if cfg!(target_os = "linux") {
        assert!(
            facts["machine"]["memory_total_bytes"].as_u64() > Some(0),
            "{facts}"
        );
        assert!(facts["machine"]["rss_bytes"].as_u64() > Some(0), "{facts}");
    }
    // GPUs are listed, or why none could be looked for is said.
    let nvidia = &facts["accelerators"]["nvidia"];
    let gpus = nvidia["gpus"].as_array().map_or(0, Vec::len);
    assert!(
        gpus > 0
            || nvidia["unavailable"]
                .as_str()
                .is_some_and(|w| w.contains("NVML")),
        "{nvidia}"
    );
    assert!(
        facts["accelerators"]["onnxruntime"]["note"].is_string()
            || facts["accelerators"]["onnxruntime"]["loaded"] == true
    );
    // The gpu model runs on the CPU, and the node says so and why.
    let placement = &facts["models"][0];
    assert_eq!(placement["model"], "digits");
    assert_eq!(placement["requested"], "gpu");
    assert_eq!(placement["device"], "cpu");
    assert!(
        placement["fallback"]
            .as_str()
            .is_some_and(|why| why.contains("CPU only")),
        "{placement}"
    );
    assert!(
        facts["audit_key"]
            .as_str()
            .is_some_and(|k| k.starts_with("ed25519:"))
    );

    // The same facts as metric labels on the public /metrics.
    let metrics = brink_tests::http()
        .get(format!("http://{}/metrics", node.http_addr()))
        .send()
        .await?
        .text()
        .await?;
    let line = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .map(str::to_owned)
    };
    let info = line("brink_node_info{").unwrap_or_default();
    assert!(
        info.contains(&format!("arch=\"{}\"", std::env::consts::ARCH)),
        "{metrics}"
    );
    assert!(info.contains(&format!("gpus=\"{gpus}\"")), "{info}");
    for label in ["node=\"gw-plant3-07\"", "site=\"plant-3\"", "line=\"2\""] {
        assert!(info.contains(label), "{label} missing: {info}");
    }
    assert!(info.ends_with(" 1"), "{info}");
    let placed = line("brink_model_placement{").unwrap_or_default();
    assert!(
        placed.contains("requested=\"gpu\"") && placed.contains("device=\"cpu\""),
        "{placed}"
    );
    assert!(placed.contains("fallback=\"true\""), "{placed}");
    assert!(line("brink_node_disk_free_bytes ").is_some(), "{metrics}");
    node.shutdown().await?;
    Ok(())
}
