//! The tenancy promise at its edges: no tenant reaches or impersonates
//! another, whatever it leaves out of its calls.

use reqwest::Method;
use serde_json::json;

use crate::deploy::call;

/// A registry node with no `[admin] token` and no `[admin.jwt]`, its data in `dir`.
async fn tokenless_registry(
    dir: &std::path::Path,
) -> anyhow::Result<(brink_host::node::Node, String)> {
    let text = format!(
        "brink_manifest_version = 1\ndata_dir = {:?}\n[http]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[registry]\n",
        dir.display().to_string()
    );
    let node = brink_tests::start_node(&text).await?;
    let admin = format!(
        "http://{}",
        node.admin_addr()
            .ok_or_else(|| anyhow::anyhow!("no admin API"))?
    );
    Ok((node, admin))
}

#[tokio::test]
async fn on_a_registry_node_without_an_operator_token_an_anonymous_caller_is_nobody()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (node, admin) = tokenless_registry(dir.path()).await?;
    // Loopback is no credential: without a token, nothing is allowed.
    for (method, path) in [
        (Method::POST, "/v1/tenants"),
        (Method::GET, "/v1/tenants"),
        (Method::POST, "/v1/tenants/b/tokens"),
        (Method::GET, "/v1/outbox"),
        (Method::GET, "/v1/kv"),
    ] {
        let (status, body) = call(
            method.clone(),
            &format!("{admin}{path}"),
            None,
            Some(json!({ "id": "a" })),
        )
        .await?;
        assert_eq!(status, 401, "{method} {path}: {body}");
    }
    // The node made an operator token, readable only by its own user.
    let file = dir.path().join("operator-token");
    let operator = std::fs::read_to_string(&file)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&file)?.permissions().mode() & 0o777,
            0o600
        );
    }
    let mut tokens = Vec::new();
    for id in ["a", "b"] {
        let (status, body) = call(
            Method::POST,
            &format!("{admin}/v1/tenants"),
            Some(&operator),
            Some(json!({ "id": id })),
        )
        .await?;
        assert_eq!(status, 201, "{body}");
        tokens.push(body["token"].as_str().unwrap_or_default().to_owned());
    }
    // A tenant that omits its token cannot mint one for another; with its
    // own token it is refused as itself.
    let mint = format!("{admin}/v1/tenants/b/tokens");
    let (status, _) = call(Method::POST, &mint, None, None).await?;
    assert_eq!(status, 401);
    let (status, _) = call(Method::POST, &mint, Some(&tokens[0]), None).await?;
    assert_eq!(status, 403);
    node.shutdown().await?;

    // The same token after a restart: it is kept, not made anew.
    let (node, admin) = tokenless_registry(dir.path()).await?;
    assert_eq!(std::fs::read_to_string(&file)?, operator);
    let (status, body) = call(
        Method::GET,
        &format!("{admin}/v1/tenants"),
        Some(&operator),
        None,
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_tenant_cannot_create_more_buckets_than_its_quota_and_its_neighbour_is_unaffected()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (node, admin) = tokenless_registry(dir.path()).await?;
    let operator = std::fs::read_to_string(dir.path().join("operator-token"))?;
    let mut tokens = Vec::new();
    for (id, quota) in [("a", json!({ "max_buckets": 2 })), ("b", json!({}))] {
        let (status, body) = call(
            Method::POST,
            &format!("{admin}/v1/tenants"),
            Some(&operator),
            Some(json!({ "id": id, "quota": quota })),
        )
        .await?;
        assert_eq!(status, 201, "{body}");
        tokens.push(body["token"].as_str().unwrap_or_default().to_owned());
    }
    let put = |token: String, bucket: &str, key: &str| {
        let url = format!("{admin}/v1/kv/{bucket}/{key}");
        async move { call(Method::PUT, &url, Some(&token), Some(json!(1))).await }
    };
    for bucket in ["one", "two"] {
        let (status, body) = put(tokens[0].clone(), bucket, "k").await?;
        assert_eq!(status, 204, "{bucket}: {body}");
    }
    // A third bucket is one too many, and says what to do.
    let (status, body) = put(tokens[0].clone(), "three", "k").await?;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("max_buckets")),
        "{body}"
    );
    let (status, _) = call(
        Method::GET,
        &format!("{admin}/v1/kv/three/k"),
        Some(&tokens[0]),
        None,
    )
    .await?;
    assert_eq!(status, 404, "the refused bucket was created");
    // Its existing buckets still take writes, and its neighbour's quota is its own.
    let (status, _) = put(tokens[0].clone(), "one", "k2").await?;
    assert_eq!(status, 204);
    for bucket in ["one", "two", "three"] {
        let (status, body) = put(tokens[1].clone(), bucket, "k").await?;
        assert_eq!(status, 204, "b/{bucket}: {body}");
    }
    node.shutdown().await?;
    Ok(())
}
