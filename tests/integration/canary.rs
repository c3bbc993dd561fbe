//! Canary releases: a second version takes a share of a function's events,
//! picked by event id, until it is promoted or rolled back; through the
//! real admin API of an in-process node.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use brink_tests::artifacts;
use serde_json::{Value, json};

use crate::deploy::{Host, call, host, transform_spec};

const POST: reqwest::Method = reqwest::Method::POST;
const GET: reqwest::Method = reqwest::Method::GET;

/// The bucket (0-99) of an event id, written out here from the
/// definition (FNV-1a 64, modulo 100), so a change to the node's hash
/// that moves events between versions fails this test.
fn bucket(id: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash % 100
}

/// Invokes `transform` with the event `id`; the status and the output's type.
async fn send(h: &Host, token: &str, id: &str) -> anyhow::Result<(u16, String)> {
    let event = json!({
        "specversion": "1.0", "id": id, "source": "/test", "type": "com.example.reading",
        "datacontenttype": "application/json", "data": { "device": "t-1", "value": 1.0 },
    });
    let response = brink_tests::http()
        .post(format!("{}/v1/functions/transform/invoke", h.admin))
        .bearer_auth(token)
        .header("content-type", "application/cloudevents+json")
        .body(event.to_string())
        .send()
        .await?;
    let status = response.status().as_u16();
    let ty = response
        .headers()
        .get("ce-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok((status, ty))
}

/// Sends the events `ids` from 8 concurrent clients; each id's answer.
async fn send_all(
    h: &Arc<Host>,
    token: &str,
    ids: Vec<String>,
) -> anyhow::Result<Vec<(String, u16, String)>> {
    let queue = Arc::new(std::sync::Mutex::new(ids));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (h, token, queue) = (h.clone(), token.to_owned(), queue.clone());
        workers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let next = queue.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.pop();
                let Some(id) = next else { break };
                let (status, ty) = send(&h, &token, &id).await?;
                seen.push((id, status, ty));
            }
            anyhow::Ok(seen)
        }));
    }
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await??);
    }
    Ok(all)
}

async fn activate(h: &Host, token: &str, body: Value) -> anyhow::Result<(u16, Value)> {
    call(
        POST,
        &format!("{}/v1/functions/transform/activate", h.admin),
        Some(token),
        Some(body),
    )
    .await
}

/// Publishes `transform@version` with `spec` without activating it.
async fn stage(
    h: &Host,
    token: &str,
    digest: &Value,
    version: &str,
    spec: Value,
) -> anyhow::Result<()> {
    let (status, body) = call(
        POST,
        &format!("{}/v1/functions/transform/versions", h.admin),
        Some(token),
        Some(json!({ "version": version, "digest": digest, "spec": spec, "activate": false })),
    )
    .await?;
    anyhow::ensure!(status == 201, "{status}: {body}");
    Ok(())
}

/// `transform` 1.0.0 (output type `v1`) active and 1.1.0 (`v2`) staged,
/// from one upload; its digest.
async fn two_versions(h: &Host, token: &str) -> anyhow::Result<Value> {
    let (status, body) = h
        .deploy(
            token,
            "transform",
            "1.0.0",
            artifacts::TRANSFORM,
            transform_spec("acme", "v1"),
            json!([]),
        )
        .await?;
    anyhow::ensure!(status == 201, "{body}");
    let digest = body["versions"][0]["digest"].clone();
    stage(h, token, &digest, "1.1.0", transform_spec("acme", "v2")).await?;
    Ok(digest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_takes_its_share_by_event_id_and_promote_loses_and_repeats_nothing()
-> anyhow::Result<()> {
    let h = Arc::new(host("[registry]\n", None).await?);
    let token = h
        .tenant("acme", json!({ "max_invocations_per_s": 0 }), json!({}))
        .await?;
    let digest = two_versions(&h, &token).await?;
    let mut other = transform_spec("acme", "v3");
    other["triggers"] = json!([{ "http": "/t/acme/elsewhere" }]);
    stage(&h, &token, &digest, "1.2.0", other).await?;

    // Refused: a weight out of range, a version with other triggers, the
    // active version itself, a promote with no canary.
    for (body, status, needle) in [
        (json!({ "version": "1.1.0", "weight": 0 }), 409, "1 to 99"),
        (json!({ "version": "1.1.0", "weight": 100 }), 409, "1 to 99"),
        (json!({ "version": "1.1.0", "weight": 1000 }), 400, ""),
        (
            json!({ "version": "1.2.0", "weight": 10 }),
            422,
            "other triggers",
        ),
        (
            json!({ "version": "1.0.0", "weight": 10 }),
            409,
            "already the active",
        ),
    ] {
        let (got, answer) = activate(&h, &token, body.clone()).await?;
        assert_eq!(got, status, "{body}: {answer}");
        assert!(
            answer["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(needle),
            "{answer}"
        );
    }
    let promote = format!("{}/v1/functions/transform/promote", h.admin);
    let (status, answer) = call(POST, &promote, Some(&token), None).await?;
    assert_eq!(status, 409, "{answer}");

    let (status, view) = activate(&h, &token, json!({ "version": "1.1.0", "weight": 10 })).await?;
    assert_eq!(status, 200, "{view}");
    assert_eq!(
        (view["active"].as_str(), &view["canary"]),
        (Some("1.0.0"), &json!({"version": "1.1.0", "weight": 10}))
    );

    // 5,000 events: each lands on the version its id's bucket names.
    let first: Vec<String> = (0..5_000).map(|i| format!("reading-{i}")).collect();
    let answers = send_all(&h, &token, first.clone()).await?;
    assert_eq!(answers.len(), 5_000);
    let mut canary = 0;
    for (id, status, ty) in &answers {
        assert_eq!(*status, 200, "{id}");
        let expected = if bucket(id) < 10 { "v2" } else { "v1" };
        assert_eq!(ty, expected, "{id} (bucket {})", bucket(id));
        canary += usize::from(ty == "v2");
    }
    // About 10%: 500 expected, a binomial spread of about ±21.
    assert!(
        (400..=600).contains(&canary),
        "{canary} of 5000 on the canary"
    );
    // The figure BENCHMARKS.md records (cargo test ... -- --nocapture).
    println!("canary: {canary} of 5000 events on the 10% canary");
    // Retried, each event runs on the version it ran on before.
    let retried = send_all(&h, &token, first[..200].to_vec()).await?;
    for (id, _, ty) in &retried {
        let before = answers.iter().find(|(i, ..)| i == id).map(|(_, _, t)| t);
        assert_eq!(Some(ty), before, "{id}");
    }

    // 5,000 more, with the promote in the middle of them.
    let second: Vec<String> = (5_000..10_000).map(|i| format!("reading-{i}")).collect();
    let promoted = Arc::new(AtomicBool::new(false));
    let promoter = {
        let (token, promoted, promote) = (token.clone(), promoted.clone(), promote.clone());
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let answer = call(POST, &promote, Some(&token), None).await;
            promoted.store(true, Ordering::SeqCst);
            answer
        })
    };
    let during = send_all(&h, &token, second).await?;
    let (status, view) = promoter.await??;
    assert!(promoted.load(Ordering::SeqCst));
    assert_eq!(status, 200, "{view}");
    assert_eq!(
        (view["active"].as_str(), &view["canary"]),
        (Some("1.1.0"), &Value::Null)
    );
    assert_eq!(during.len(), 5_000);
    let mut ids: Vec<&str> = during.iter().map(|(id, ..)| id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 5_000, "an event was answered twice");
    for (id, status, ty) in &during {
        assert_eq!(*status, 200, "{id} failed across the promote");
        assert!(ty == "v1" || ty == "v2", "{id}: {ty}");
    }
    // After the promote, every event runs on 1.1.0.
    for (id, _, ty) in
        send_all(&h, &token, (0..300).map(|i| format!("after-{i}")).collect()).await?
    {
        assert_eq!(ty, "v2", "{id}");
    }

    // Every invocation was counted once, and split by version.
    let total = (5_000 + 200 + 5_000 + 300) as u64;
    let (_, usage) = call(GET, &format!("{}/v1/usage", h.admin), Some(&token), None).await?;
    assert_eq!(
        usage["usage"][0]["invocations"].as_u64(),
        Some(total),
        "{usage}"
    );
    let (_, view) = call(
        GET,
        &format!("{}/v1/functions/transform", h.admin),
        Some(&token),
        None,
    )
    .await?;
    let by_version = |v: &str| {
        view["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["version"] == v)
            .and_then(|x| x["invocations"].as_u64())
            .unwrap_or(0)
    };
    assert_eq!(by_version("1.0.0") + by_version("1.1.0"), total, "{view}");
    assert!(by_version("1.1.0") >= 300 + canary as u64, "{view}");
    let text = brink_tests::http()
        .get(format!("{}/v1/metrics", h.admin))
        .bearer_auth("operator-secret")
        .send()
        .await?
        .text()
        .await?;
    assert!(
        text.contains(&format!(
            "brink_function_version_invocations_total{{function=\"acme/transform\",version=\"1.0.0\"}} {}",
            by_version("1.0.0")
        )),
        "{text}"
    );

    // A canary rolled back ends; the active version keeps every event.
    let (status, view) = activate(&h, &token, json!({ "version": "1.0.0", "weight": 50 })).await?;
    assert_eq!(status, 200, "{view}");
    let rollback = format!("{}/v1/functions/transform/rollback", h.admin);
    let (status, view) = call(POST, &rollback, Some(&token), None).await?;
    assert_eq!(status, 200, "{view}");
    assert_eq!(
        (view["active"].as_str(), &view["canary"]),
        (Some("1.1.0"), &Value::Null)
    );
    for (id, _, ty) in send_all(&h, &token, (0..200).map(|i| format!("back-{i}")).collect()).await?
    {
        assert_eq!(ty, "v2", "{id}");
    }
    Ok(())
}

#[tokio::test]
async fn a_canary_survives_a_restart_on_the_same_events() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let h = host("[registry]\n", Some(data.path())).await?;
    let token = h.tenant("acme", json!({}), json!({})).await?;
    two_versions(&h, &token).await?;
    let (status, view) = activate(&h, &token, json!({ "version": "1.1.0", "weight": 30 })).await?;
    assert_eq!(status, 200, "{view}");
    let ids: Vec<String> = (0..100).map(|i| format!("restart-{i}")).collect();
    let mut before = Vec::new();
    for id in &ids {
        before.push(send(&h, &token, id).await?.1);
    }
    h.node.shutdown().await?;

    let h = host("[registry]\n", Some(data.path())).await?;
    for (id, ty) in ids.iter().zip(&before) {
        let expected = if bucket(id) < 30 { "v2" } else { "v1" };
        assert_eq!(ty, expected, "{id}");
        assert_eq!(
            &send(&h, &token, id).await?.1,
            ty,
            "{id} moved after the restart"
        );
    }
    h.node.shutdown().await
}
