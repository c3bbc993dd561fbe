//! The audit ledger through the real admin API: who changed what, and who
//! may read it.

use brink_host::audit::{self, chain};
use brink_registry::SecretKey;
use brink_tests::artifacts;
use reqwest::Method;
use serde_json::{Value, json};

use crate::deploy::{call, host, transform_spec};

/// The records `token` may read, as `(principal, action, target, outcome)`.
async fn records(admin: &str, token: &str) -> anyhow::Result<Vec<Value>> {
    let (status, body) = call(Method::GET, &format!("{admin}/v1/audit"), Some(token), None).await?;
    assert_eq!(status, 200, "{body}");
    Ok(body["records"].as_array().cloned().unwrap_or_default())
}

fn summary(records: &[Value]) -> Vec<(String, String, String, String)> {
    let field = |r: &Value, name: &str| r[name].as_str().unwrap_or_default().to_owned();
    records
        .iter()
        .map(|r| {
            (
                field(r, "principal"),
                field(r, "action"),
                field(r, "target"),
                field(r, "outcome"),
            )
        })
        .collect()
}

fn has(records: &[Value], principal: &str, action: &str, target: &str, outcome: &str) -> bool {
    summary(records)
        .iter()
        .any(|(p, a, t, o)| p == principal && a == action && t == target && o.starts_with(outcome))
}

#[tokio::test]
async fn every_change_is_recorded_with_who_made_it_and_tenants_read_only_their_own()
-> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let key = SecretKey::generate()?;
    let policy = format!(
        "[registry]\ntrusted_keys = [{:?}]\n",
        key.public().to_string()
    );
    let h = host(&policy, Some(data.path())).await?;
    let acme = h.tenant("acme", json!({}), json!({})).await?;
    let globex = h.tenant("globex", json!({}), json!({})).await?;
    let bytes = std::fs::read(artifacts::TRANSFORM)?;
    let digest = brink_registry::digest(&bytes);
    let spec = transform_spec("acme", "com.acme.f");
    // Unsigned: refused for its signatures; then signed: published.
    let (status, _) = h
        .deploy(
            &acme,
            "transform",
            "1.0.0",
            artifacts::TRANSFORM,
            spec.clone(),
            json!([]),
        )
        .await?;
    assert_eq!(status, 403);
    let signed = json!([key.sign(&digest, "transform", "1.0.0")]);
    let (status, body) = h
        .deploy(
            &acme,
            "transform",
            "1.0.0",
            artifacts::TRANSFORM,
            spec,
            signed,
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    // A forged token, and a tenant reaching for the operator's calls.
    let tokens = format!("{}/v1/tenants/acme/tokens", h.admin);
    let (status, _) = call(Method::POST, &tokens, Some("brink_00000000_forged"), None).await?;
    assert_eq!(status, 401);
    let (status, _) = call(Method::POST, &tokens, Some(&globex), None).await?;
    assert_eq!(status, 403);
    let (status, _) = call(
        Method::DELETE,
        &format!("{}/v1/functions/transform", h.admin),
        Some(&acme),
        None,
    )
    .await?;
    assert_eq!(status, 204);

    let all = records(&h.admin, "operator-secret").await?;
    let s = summary(&all);
    assert_eq!(s[0].1, "node.start", "{s:?}");
    assert!(
        all[0]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("manifest sha256:")
    );
    assert!(
        has(&all, "operator", "tenant.create", "acme", "ok"),
        "{s:?}"
    );
    assert!(
        has(&all, "tenant:acme", "component.upload", &digest, "ok"),
        "{s:?}"
    );
    assert!(
        has(
            &all,
            "tenant:acme",
            "signature.refused",
            "acme/transform",
            "403"
        ),
        "{s:?}"
    );
    assert!(
        has(
            &all,
            "tenant:acme",
            "function.publish",
            "acme/transform@1.0.0",
            "ok"
        ),
        "{s:?}"
    );
    assert!(
        has(
            &all,
            "unauthenticated",
            "auth.refused",
            "POST /v1/tenants/acme/tokens",
            "401"
        ),
        "{s:?}"
    );
    assert!(
        has(&all, "tenant:globex", "token.issue", "acme", "403"),
        "{s:?}"
    );
    assert!(
        has(&all, "tenant:acme", "function.rm", "acme/transform", "ok"),
        "{s:?}"
    );
    // Reads and invocations are not changes.
    assert!(
        s.iter()
            .all(|(_, a, _, _)| !a.contains("list") && !a.contains("invoke")),
        "{s:?}"
    );

    // Each tenant reads only what concerns it; neither sees the refused sign-in.
    let mine = records(&h.admin, &acme).await?;
    assert!(mine.iter().all(|r| r["tenant"] == "acme"), "{mine:?}");
    assert!(has(
        &mine,
        "tenant:acme",
        "function.publish",
        "acme/transform@1.0.0",
        "ok"
    ));
    let theirs = records(&h.admin, &globex).await?;
    assert!(theirs.iter().all(|r| r["tenant"] == "globex"), "{theirs:?}");
    assert!(
        !summary(&theirs)
            .iter()
            .any(|(_, _, t, _)| t.contains("transform"))
    );
    let (status, _) = call(Method::GET, &format!("{}/v1/audit", h.admin), None, None).await?;
    assert_eq!(status, 401, "the ledger is not for anonymous callers");

    // After a clean stop the chain verifies, ends with the stop, and goes
    // on from there at the next start.
    let count = all.len();
    h.node.shutdown().await?;
    let dir = data.path();
    let report = chain::verify(
        &std::fs::read(audit::ledger_path(dir))?,
        audit::read_head(dir)?.as_ref(),
        &audit::node_key(dir)?.public(),
    );
    assert_eq!(report.first_break, None);
    assert!(report.records as usize > count, "no node.stop record");
    let h = host(&policy, Some(dir)).await?;
    let again = records(&h.admin, "operator-secret").await?;
    let s = summary(&again);
    assert_eq!(s[report.records as usize - 1].1, "node.stop", "{s:?}");
    assert_eq!(s[report.records as usize].1, "node.start", "{s:?}");
    h.node.shutdown().await
}

#[tokio::test]
async fn a_flood_of_bad_tokens_is_recorded_once_per_window_and_counted() -> anyhow::Result<()> {
    let h = host("[registry]\n", None).await?;
    for _ in 0..50 {
        let (status, _) = call(
            Method::GET,
            &format!("{}/v1/functions", h.admin),
            Some("nope"),
            None,
        )
        .await?;
        assert_eq!(status, 401);
    }
    let all = records(&h.admin, "operator-secret").await?;
    let refused: Vec<_> = all
        .iter()
        .filter(|r| r["action"] == "auth.refused")
        .collect();
    assert_eq!(refused.len(), 1, "{all:?}");
    assert!(
        refused[0]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("not the operator's")
    );
    h.node.shutdown().await
}
