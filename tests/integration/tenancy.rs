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
