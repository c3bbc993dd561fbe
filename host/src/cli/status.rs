//! `brink status`: what a running node is and has, over its admin API.

use std::io::Write as _;

use serde_json::Value;

use super::client::Remote;

pub(crate) async fn status(remote: &Remote) -> anyhow::Result<()> {
    let api = remote.client()?;
    let facts = api
        .call_json(reqwest::Method::GET, "/v1/node", None)
        .await?;
    let mut out = std::io::stdout().lock();
    if remote.json {
        serde_json::to_writer_pretty(&mut out, &facts)?;
        writeln!(out)?;
    } else {
        for (label, text) in lines(&facts) {
            writeln!(out, "{label:<12} {text}")?;
        }
    }
    Ok(())
}

fn bytes(v: &Value) -> String {
    match v.as_u64() {
        #[allow(clippy::cast_precision_loss)] // for show, to one decimal
        Some(n) if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / f64::from(1u32 << 30)),
        #[allow(clippy::cast_precision_loss)]
        Some(n) => format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)),
        None => "?".into(),
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("?")
}

/// ` {site=plant-3, line=2}`, or nothing without labels.
fn node_labels(labels: &Value) -> String {
    let pairs: Vec<String> = labels
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", text(v)))
        .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!(" {{{}}}", pairs.join(", "))
    }
}

/// The facts as labelled lines.
fn lines(f: &Value) -> Vec<(&'static str, String)> {
    let m = &f["machine"];
    let uptime = f["uptime_s"].as_u64().unwrap_or(0);
    let mut lines = vec![
        (
            "node",
            format!(
                "{}{}: brink {} on {} ({} {}), up {}h {:02}m since {}",
                text(&f["node"]["id"]),
                node_labels(&f["node"]["labels"]),
                text(&f["version"]),
                m["hostname"].as_str().unwrap_or("?"),
                text(&m["os"]),
                text(&m["arch"]),
                uptime / 3600,
                uptime % 3600 / 60,
                text(&f["started"])
            ),
        ),
        (
            "machine",
            format!(
                "{} CPUs ({}), memory {} available of {}, this node {}",
                m["cpus"],
                m["cpu_model"].as_str().unwrap_or("model unknown"),
                bytes(&m["memory_available_bytes"]),
                bytes(&m["memory_total_bytes"]),
                bytes(&m["rss_bytes"])
            ),
        ),
        (
            "disk",
            format!(
                "{} free of {} under {}",
                bytes(&f["disk"]["free_bytes"]),
                bytes(&f["disk"]["total_bytes"]),
                text(&f["disk"]["path"])
            ),
        ),
    ];
    lines.extend(accelerators(&f["accelerators"]));
    let models = f["models"].as_array().cloned().unwrap_or_default();
    if models.is_empty() {
        lines.push(("models", "none".into()));
    }
    for p in models {
        let mut line = format!(
            "{} ({}): asked for {}, runs on {}",
            text(&p["model"]),
            text(&p["backend"]),
            text(&p["requested"]),
            text(&p["device"])
        );
        if let Some(why) = p["fallback"].as_str() {
            line.push_str(&format!(" — FALLBACK to the CPU: {why}"));
        }
        lines.push(("model", line));
    }
    if let Some(key) = f["audit_key"].as_str() {
        lines.push(("audit key", key.to_owned()));
    }
    lines
}

fn accelerators(a: &Value) -> Vec<(&'static str, String)> {
    let mut lines = Vec::new();
    let nvidia = &a["nvidia"];
    let gpus = nvidia["gpus"].as_array().cloned().unwrap_or_default();
    if gpus.is_empty() {
        lines.push((
            "gpus",
            format!(
                "none: {}",
                nvidia["unavailable"]
                    .as_str()
                    .unwrap_or("NVML found no GPU")
            ),
        ));
    }
    for g in gpus {
        lines.push((
            "gpu",
            format!(
                "{}: {}, {} used of {}, {}% busy; driver {}, CUDA {}",
                g["index"],
                text(&g["name"]),
                bytes(&g["memory_used_bytes"]),
                bytes(&g["memory_total_bytes"]),
                g["utilization_percent"],
                text(&nvidia["driver_version"]),
                text(&nvidia["cuda_version"])
            ),
        ));
    }
    let ort = &a["onnxruntime"];
    let providers: Vec<&str> = ort["providers"]
        .as_array()
        .map(|p| p.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    lines.push((
        "onnxruntime",
        if ort["loaded"] == true {
            format!("{} ({})", text(&ort["library"]), providers.join(", "))
        } else {
            text(&ort["note"]).to_owned()
        },
    ));
    lines
}
