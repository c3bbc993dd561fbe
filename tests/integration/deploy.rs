//! Deploying to a running node: tenants, tokens, signatures, namespaces,
//! quotas, hot activation and rollback, through the real admin API.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use brink_host::node::Node;
use brink_registry::SecretKey;
use brink_tests::artifacts;
use serde_json::{Value, json};

/// A node with `[registry]` (`extra` added to the manifest), its admin URL.
pub(crate) struct Host {
    pub(crate) node: Node,
    pub(crate) admin: String,
    events: String,
    _data: Option<tempfile::TempDir>,
}

pub(crate) async fn host(extra: &str, data: Option<&std::path::Path>) -> anyhow::Result<Host> {
    let owned = match data {
        Some(_) => None,
        None => Some(tempfile::tempdir()?),
    };
    let dir = data.map_or_else(
        || {
            owned
                .as_ref()
                .map(|d| d.path().to_owned())
                .unwrap_or_default()
        },
        std::path::Path::to_owned,
    );
    let text = format!(
        r#"brink_manifest_version = 1
data_dir = {data:?}
[http]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
token = "operator-secret"
{extra}
"#,
        data = dir.display().to_string(),
    );
    let node = brink_tests::start_node(&text).await?;
    let admin = format!(
        "http://{}",
        node.admin_addr()
            .ok_or_else(|| anyhow::anyhow!("no admin API"))?
    );
    let events = format!("http://{}/events", node.http_addr());
    Ok(Host {
        node,
        admin,
        events,
        _data: owned,
    })
}

/// A call's status and JSON body (null when empty or not JSON).
pub(crate) async fn call(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut request = brink_tests::http().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await?;
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

impl Host {
    pub(crate) async fn tenant(
        &self,
        id: &str,
        quota: Value,
        grants: Value,
    ) -> anyhow::Result<String> {
        let (status, body) = call(
            reqwest::Method::POST,
            &format!("{}/v1/tenants", self.admin),
            Some("operator-secret"),
            Some(json!({ "id": id, "quota": quota, "grants": grants })),
        )
        .await?;
        assert_eq!(status, 201, "{body}");
        Ok(body["token"].as_str().unwrap_or_default().to_owned())
    }

    async fn upload(&self, token: &str, bytes: Vec<u8>) -> anyhow::Result<(u16, Value)> {
        let response = brink_tests::http()
            .post(format!("{}/v1/uploads", self.admin))
            .bearer_auth(token)
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, serde_json::from_slice(&response.bytes().await?)?))
    }

    /// Uploads `path` and publishes it as `name@version` with `spec`.
    pub(crate) async fn deploy(
        &self,
        token: &str,
        name: &str,
        version: &str,
        path: &str,
        spec: Value,
        signatures: Value,
    ) -> anyhow::Result<(u16, Value)> {
        let (status, up) = self.upload(token, std::fs::read(path)?).await?;
        assert_eq!(status, 201, "{up}");
        call(
            reqwest::Method::POST,
            &format!("{}/v1/functions/{name}/versions", self.admin),
            Some(token),
            Some(json!({
                "version": version,
                "digest": up["digest"],
                "spec": spec,
                "signatures": signatures,
            })),
        )
        .await
    }

    pub(crate) async fn invoke(
        &self,
        token: &str,
        name: &str,
        value: f64,
    ) -> anyhow::Result<(u16, Value)> {
        let event = json!({
            "specversion": "1.0", "id": uuid(), "source": "/test", "type": "com.example.reading",
            "subject": "t-1", "datacontenttype": "application/json",
            "data": { "device": "t-1", "value": value },
        });
        let response = brink_tests::http()
            .post(format!("{}/v1/functions/{name}/invoke", self.admin))
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
            .map(str::to_owned);
        let body = response.bytes().await?;
        let data: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok((status, json!({ "type": ty, "data": data })))
    }
}

fn uuid() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("e-{}", NEXT.fetch_add(1, Ordering::SeqCst))
}

pub(crate) fn transform_spec(tenant: &str, output_type: &str) -> Value {
    json!({
        "triggers": [{ "http": format!("/t/{tenant}/readings") }],
        "config": { "output_type": output_type },
    })
}

const POST: reqwest::Method = reqwest::Method::POST;
const GET: reqwest::Method = reqwest::Method::GET;
const DELETE: reqwest::Method = reqwest::Method::DELETE;

#[tokio::test]
async fn deploys_need_the_signatures_the_trust_policy_asks_for() -> anyhow::Result<()> {
    let keys: Vec<SecretKey> = (0..3)
        .map(|_| SecretKey::generate())
        .collect::<Result<_, _>>()?;
    let h = host(
        &format!(
            "[registry]\ntrusted_keys = [{:?}, {:?}]\nrequired_signatures = 2\n",
            keys[0].public().to_string(),
            keys[1].public().to_string()
        ),
        None,
    )
    .await?;
    let token = h.tenant("acme", json!({}), json!({})).await?;
    let bytes = std::fs::read(artifacts::TRANSFORM)?;
    let digest = brink_registry::digest(&bytes);
    let other = brink_registry::digest(b"something else");
    let sign =
        |k: &SecretKey, digest: &str| serde_json::to_value(k.sign(digest, "transform", "1.0.0"));
    let spec = transform_spec("acme", "com.acme.f");
    for (signatures, says) in [
        (json!([]), "has 0"),
        (json!([sign(&keys[0], &digest)?]), "has 1"),
        (
            json!([sign(&keys[0], &digest)?, sign(&keys[2], &digest)?]),
            "does not trust",
        ),
        (
            json!([sign(&keys[0], &digest)?, sign(&keys[1], &other)?]),
            "do not verify",
        ),
    ] {
        let (status, body) = h
            .deploy(
                &token,
                "transform",
                "1.0.0",
                artifacts::TRANSFORM,
                spec.clone(),
                signatures,
            )
            .await?;
        assert_eq!(status, 403, "{body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(says), "{detail}");
        assert!(detail.contains("needs valid signatures from 2"), "{detail}");
    }
    let (status, _) = h.invoke(&token, "transform", 20.0).await?;
    assert_eq!(status, 404, "a refused deploy runs nothing");

    let both = json!([sign(&keys[0], &digest)?, sign(&keys[1], &digest)?]);
    let (status, body) = h
        .deploy(
            &token,
            "transform",
            "1.0.0",
            artifacts::TRANSFORM,
            spec,
            both,
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["active"], "1.0.0");
    assert_eq!(
        body["versions"][0]["signed_by"].as_array().map(Vec::len),
        Some(2)
    );
    let (status, out) = h.invoke(&token, "transform", 100.0).await?;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["type"], "com.acme.f");
    assert_eq!(out["data"]["temperature"]["value"], 212.0);
    h.node.shutdown().await
}

#[tokio::test]
async fn missing_wrong_and_revoked_tokens_are_refused() -> anyhow::Result<()> {
    let h = host("[registry]\n", None).await?;
    let token = h.tenant("acme", json!({}), json!({})).await?;
    let url = format!("{}/v1/functions", h.admin);
    for bad in [
        None,
        Some("wrong"),
        Some("brink_0000_0000"),
        Some("operator-secretX"),
    ] {
        let (status, body) = call(GET, &url, bad, None).await?;
        assert_eq!(status, 401, "{bad:?}: {body}");
        assert_eq!(body["status"], 401);
    }
    let (status, _) = call(GET, &url, Some(&token), None).await?;
    assert_eq!(status, 200);
    let (_, tenant) = call(
        GET,
        &format!("{}/v1/tenants/acme", h.admin),
        Some(&token),
        None,
    )
    .await?;
    let token_id = tenant["tokens"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (status, second) = call(
        POST,
        &format!("{}/v1/tenants/acme/tokens", h.admin),
        Some("operator-secret"),
        None,
    )
    .await?;
    assert_eq!(status, 201);
    let (status, _) = call(
        DELETE,
        &format!("{}/v1/tenants/acme/tokens/{token_id}", h.admin),
        Some("operator-secret"),
        None,
    )
    .await?;
    assert_eq!(status, 204);
    let (status, _) = call(GET, &url, Some(&token), None).await?;
    assert_eq!(status, 401, "a revoked token authenticates nothing");
    let (status, _) = call(GET, &url, second["token"].as_str(), None).await?;
    assert_eq!(status, 200, "the tenant's other token still works");
    h.node.shutdown().await
}

#[tokio::test]
async fn bad_uploads_are_refused_with_a_reason() -> anyhow::Result<()> {
    let h = host("[registry]\n", None).await?;
    let token = h.tenant("acme", json!({}), json!({})).await?;
    for (bytes, says) in [
        (b"hello, not wasm".to_vec(), "not WebAssembly"),
        (b"\0asm\x01\0\0\0".to_vec(), "core WebAssembly module"),
    ] {
        let (status, body) = h.upload(&token, bytes).await?;
        assert_eq!(status, 422, "{body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(says), "{detail}");
    }
    let limit = brink_tests::engine()?.config().max_component_bytes;
    let mut huge = std::fs::read(artifacts::ECHO)?;
    huge.resize(limit + 1, 0);
    let (status, _) = h.upload(&token, huge).await?;
    assert_eq!(status, 413);

    let (status, body) = h
        .deploy(
            &token,
            "nohandler",
            "1.0.0",
            artifacts::FIXTURE_NO_HANDLER,
            json!({}),
            json!([]),
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("handle"),
        "{body}"
    );
    // kv-ops imports key-value state, which this spec does not grant.
    let (status, body) = h
        .deploy(
            &token,
            "kvops",
            "1.0.0",
            artifacts::FIXTURE_KV_OPS,
            json!({}),
            json!([]),
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("keyvalue"),
        "{body}"
    );
    let (_, list) = call(
        GET,
        &format!("{}/v1/functions", h.admin),
        Some(&token),
        None,
    )
    .await?;
    assert_eq!(list["functions"], json!([]), "nothing refused was recorded");
    let (status, body) = call(
        POST,
        &format!("{}/v1/functions/echo/versions", h.admin),
        Some(&token),
        Some(json!({ "version": "one", "digest": "sha256:00" })),
    )
    .await?;
    assert_eq!(status, 422, "{body}");
    h.node.shutdown().await
}

#[tokio::test]
async fn tenants_cannot_reach_each_others_functions_state_or_namespaces() -> anyhow::Result<()> {
    let h = host("[registry]\n", None).await?;
    let a = h.tenant("acme", json!({}), json!({})).await?;
    let b = h.tenant("bolt", json!({}), json!({})).await?;
    let enrich = |tenant: &str| {
        json!({ "triggers": [{ "event_type": "com.example.*" }], "kv": ["devices"], "config": { "missing": "pass" }, "outputs": [] })
            .as_object()
            .map(|o| {
                let mut o = o.clone();
                o.insert("triggers".into(), json!([{ "http": format!("/t/{tenant}/in") }]));
                Value::Object(o)
            })
            .unwrap_or_default()
    };
    let (status, body) = h
        .deploy(
            &a,
            "enrich",
            "1.0.0",
            artifacts::ENRICH,
            enrich("acme"),
            json!([]),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    let (status, body) = h
        .deploy(
            &b,
            "benrich",
            "1.0.0",
            artifacts::ENRICH,
            enrich("bolt"),
            json!([]),
        )
        .await?;
    assert_eq!(status, 201, "{body}");

    // Key-value state: acme's metadata is acme's alone.
    let kv = h.node.kv().ok_or_else(|| anyhow::anyhow!("no kv"))?;
    kv.bucket("tenant:acme", "devices")?
        .set("t-1", br#"{"location":"acme line"}"#, None)?;
    let (status, out) = h.invoke(&a, "enrich", 1.0).await?;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["data"]["meta"]["location"], "acme line");
    let (_, out) = h.invoke(&b, "benrich", 1.0).await?;
    assert_eq!(
        out["data"]["meta"],
        Value::Null,
        "bolt sees none of acme's state: {out}"
    );

    // Functions: bolt can neither see nor touch acme's.
    let base = &h.admin;
    let bolt = Some(b.as_str());
    let (_, list) = call(GET, &format!("{base}/v1/functions"), bolt, None).await?;
    assert_eq!(list["functions"].as_array().map(Vec::len), Some(1));
    for (method, path, body) in [
        (POST, "/v1/functions/enrich/rollback", None),
        (GET, "/v1/functions/enrich", None),
        (DELETE, "/v1/functions/enrich", None),
        (POST, "/v1/functions/enrich/invoke", None),
        (
            POST,
            "/v1/functions/enrich/activate",
            Some(json!({"version": "1.0.0"})),
        ),
    ] {
        let (status, body) = call(method, &format!("{base}{path}"), bolt, body).await?;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let (status, _) = h.upload(&a, std::fs::read(artifacts::ECHO)?).await?;
    assert_eq!(status, 201);
    let echo = brink_registry::digest(&std::fs::read(artifacts::ECHO)?);
    let (status, body) = call(
        POST,
        &format!("{base}/v1/functions/echo/versions"),
        bolt,
        Some(json!({ "version": "1.0.0", "digest": echo })),
    )
    .await?;
    assert_eq!(status, 422, "bolt may not publish acme's upload: {body}");
    // Namespaces: paths, topics, models, uplinks and webhooks.
    for (spec, says) in [
        (
            json!({ "triggers": [{ "http": "/t/acme/in" }] }),
            "outside tenant `bolt`",
        ),
        (
            json!({ "triggers": [{ "http": "/readings" }] }),
            "outside tenant `bolt`",
        ),
        (
            json!({ "outputs": [{ "mqtt": "t/acme/x" }] }),
            "outside tenant `bolt`",
        ),
        (json!({ "models": ["digits"] }), "not granted this model"),
        (json!({ "outbox": ["cloud"] }), "not granted this uplink"),
        (
            json!({ "outputs": [{ "uplink": "cloud" }] }),
            "not granted this uplink",
        ),
        (
            json!({ "outputs": [{ "webhook": "http://127.0.0.1:1/" }] }),
            "not granted webhooks",
        ),
    ] {
        let (status, body) = h
            .deploy(
                &b,
                "echo",
                "1.0.0",
                artifacts::ECHO,
                spec.clone(),
                json!([]),
            )
            .await?;
        assert_eq!(status, 403, "{spec}: {body}");
        assert!(
            body["detail"].as_str().unwrap_or_default().contains(says),
            "{body}"
        );
    }
    // Operator routes, and other tenants' records.
    for (method, path) in [
        (GET, "/v1/tenants"),
        (POST, "/v1/tenants/acme/tokens"),
        (POST, "/v1/gc"),
        (GET, "/v1/tenants/acme"),
    ] {
        let (status, body) = call(method, &format!("{base}{path}"), bolt, None).await?;
        assert_eq!(status, 403, "{path}: {body}");
    }
    // The key-value views: each tenant sees its own buckets, never another's.
    let (status, body) = call(GET, &format!("{base}/v1/kv"), bolt, None).await?;
    assert_eq!(status, 200, "{body}");
    let acme = Some(a.as_str());
    let (_, body) = call(GET, &format!("{base}/v1/kv"), acme, None).await?;
    assert_eq!(body["buckets"], json!(["devices"]));
    let (status, body) = call(GET, &format!("{base}/v1/kv/devices"), acme, None).await?;
    assert_eq!((status, &body["keys"]), (200, &json!(["t-1"])), "{body}");
    for (method, path) in [
        (GET, "/v1/kv/devices/t-1"),
        (GET, "/v1/kv/devices"),
        (DELETE, "/v1/kv/devices/t-1"),
    ] {
        let (status, body) = call(method.clone(), &format!("{base}{path}"), bolt, None).await?;
        assert!(
            matches!(status, 200 | 204 | 404) && body["keys"].as_array().is_none_or(Vec::is_empty),
            "{path}: {status} {body}"
        );
        let (status, body) = call(method, &format!("{base}{path}?tenant=acme"), bolt, None).await?;
        assert_eq!(status, 403, "{path}?tenant=acme: {body}");
    }
    let (status, body) = call(
        GET,
        &format!("{base}/v1/kv/devices/t-1?tenant=acme"),
        Some("operator-secret"),
        None,
    )
    .await?;
    assert_eq!(status, 200, "the operator reads a tenant's state: {body}");
    assert!(kv.bucket("tenant:acme", "devices")?.get("t-1")?.is_some());
    let (status, _) = call(POST, &format!("{base}/v1/outbox/cloud/purge"), bolt, None).await?;
    assert!(matches!(status, 403 | 404), "{status}");
    // Events: posted under acme's prefix, they reach acme's function only.
    let client = brink_tests::http();
    let event = |path: &str| {
        client
            .post(format!("{}{path}", h.events))
            .header("ce-specversion", "1.0")
            .header("ce-id", uuid())
            .header("ce-source", "/test")
            .header("ce-type", "com.example.reading")
            .header("content-type", "application/json")
            .body(r#"{"device":"t-1","value":1}"#)
            .send()
    };
    assert_eq!(event("/t/acme/in").await?.status(), 202);
    assert_eq!(event("/t/bolt/in").await?.status(), 202);
    assert_eq!(event("/t/carl/in").await?.status(), 404);
    let (_, usage) = call(GET, &format!("{base}/v1/usage"), Some(&a), None).await?;
    assert_eq!(usage["usage"][0]["tenant"], "acme");
    assert_eq!(usage["usage"][0]["invocations"], 2, "{usage}");
    assert_eq!(
        usage["usage"].as_array().map(Vec::len),
        Some(1),
        "a tenant sees its own usage only"
    );
    // The node's public invoke route does not reach tenants' functions.
    let response = client
        .post(format!(
            "http://{}/functions/acme%2Fenrich",
            h.node.http_addr()
        ))
        .header("content-type", "application/cloudevents+json")
        .body(json!({"specversion":"1.0","id":"x","source":"/t","type":"t"}).to_string())
        .send()
        .await?;
    assert_eq!(response.status(), 404);
    h.node.shutdown().await
}

#[tokio::test]
async fn quota_exhaustion_is_a_clear_error_that_spares_other_tenants() -> anyhow::Result<()> {
    let h = host("[registry]\n", None).await?;
    let small = h
        .tenant(
            "small",
            json!({ "max_functions": 1, "max_memory_mb": 16, "max_invocations_per_s": 5 }),
            json!({}),
        )
        .await?;
    let big = h.tenant("big", json!({}), json!({})).await?;
    let spec = transform_spec("small", "com.small.f");
    let (status, body) = h
        .deploy(
            &small,
            "transform",
            "1.0.0",
            artifacts::TRANSFORM,
            spec.clone(),
            json!([]),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    let (status, body) = h
        .deploy(
            &small,
            "other",
            "1.0.0",
            artifacts::TRANSFORM,
            spec.clone(),
            json!([]),
        )
        .await?;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("quota"),
        "{body}"
    );
    let mut greedy = spec.clone();
    greedy["limits"] = json!({ "memory_mb": 32 });
    let (status, body) = h
        .deploy(
            &small,
            "transform",
            "1.1.0",
            artifacts::TRANSFORM,
            greedy,
            json!([]),
        )
        .await?;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("memory_mb 32"),
        "{body}"
    );
    let (status, body) = h
        .deploy(
            &big,
            "transform",
            "1.0.0",
            artifacts::TRANSFORM,
            transform_spec("big", "com.big.f"),
            json!([]),
        )
        .await?;
    assert_eq!(status, 201, "{body}");

    let mut limited = 0;
    for _ in 0..20 {
        let (status, body) = h.invoke(&small, "transform", 1.0).await?;
        match status {
            200 => {}
            429 => {
                limited += 1;
                assert!(
                    body["data"]["detail"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("invocations per second"),
                    "{body}"
                );
            }
            other => anyhow::bail!("unexpected {other}: {body}"),
        }
        let (status, body) = h.invoke(&big, "transform", 1.0).await?;
        assert_eq!(status, 200, "the other tenant is unaffected: {body}");
    }
    assert!(limited >= 10, "only {limited} of 20 were limited");
    h.node.shutdown().await
}

#[tokio::test]
async fn a_new_version_goes_live_under_load_without_losing_or_repeating_events()
-> anyhow::Result<()> {
    let h = Arc::new(host("[registry]\n", None).await?);
    let token = h
        .tenant("acme", json!({ "max_invocations_per_s": 0 }), json!({}))
        .await?;
    let (status, body) = h
        .deploy(
            &token,
            "transform",
            "1.0.0",
            artifacts::TRANSFORM,
            transform_spec("acme", "v1"),
            json!([]),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (h, token, stop) = (h.clone(), token.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let (status, out) = h.invoke(&token, "transform", 1.0).await?;
                anyhow::ensure!(status == 200, "{status}: {out}");
                seen.push(out["type"].as_str().unwrap_or_default().to_owned());
            }
            anyhow::Ok(seen)
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (status, body) = h
        .deploy(
            &token,
            "transform",
            "2.0.0",
            artifacts::TRANSFORM,
            transform_spec("acme", "v2"),
            json!([]),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (status, body) = call(
        POST,
        &format!("{}/v1/functions/transform/rollback", h.admin),
        Some(&token),
        None,
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active"], "1.0.0");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for worker in workers {
        let seen = worker.await??;
        // Each worker's answers run v1, then v2, then v1 again: never back
        // and forth within a phase, so the switch is one atomic step.
        let mut phases = seen.clone();
        phases.dedup();
        assert!(
            phases.len() <= 3 && phases.first().map(String::as_str) == Some("v1"),
            "{phases:?}"
        );
        assert!(seen.iter().all(|t| t == "v1" || t == "v2"));
        total += seen.len();
    }
    let (_, usage) = call(GET, &format!("{}/v1/usage", h.admin), Some(&token), None).await?;
    assert_eq!(
        usage["usage"][0]["invocations"].as_u64(),
        Some(total as u64),
        "every request ran exactly once"
    );
    assert!(total > 50, "only {total} requests ran");
    Ok(())
}

#[tokio::test]
async fn a_key_removed_from_trusted_keys_no_longer_activates_rolls_back_or_restores_what_it_signed()
-> anyhow::Result<()> {
    let (k1, k2) = (SecretKey::generate()?, SecretKey::generate()?);
    let trusting = |keys: &[&SecretKey]| {
        let list: Vec<String> = keys
            .iter()
            .map(|k| format!("{:?}", k.public().to_string()))
            .collect();
        format!("[registry]\ntrusted_keys = [{}]\n", list.join(", "))
    };
    let data = tempfile::tempdir()?;
    let digest = brink_registry::digest(&std::fs::read(artifacts::TRANSFORM)?);
    let signed = |k: &SecretKey, version: &str| -> anyhow::Result<Value> {
        Ok(json!([serde_json::to_value(k.sign(
            &digest,
            "transform",
            version
        ))?]))
    };
    let h = host(&trusting(&[&k1, &k2]), Some(data.path())).await?;
    let token = h.tenant("acme", json!({}), json!({})).await?;
    for (version, key) in [("1.0.0", &k1), ("2.0.0", &k2), ("3.0.0", &k1)] {
        let (status, body) = h
            .deploy(
                &token,
                "transform",
                version,
                artifacts::TRANSFORM,
                transform_spec("acme", &format!("v{version}")),
                signed(key, version)?,
            )
            .await?;
        assert_eq!(status, 201, "{body}");
    }
    h.node.shutdown().await?;

    // The operator stops trusting k1; the active 3.0.0 was signed by k1.
    let h = host(&trusting(&[&k2]), Some(data.path())).await?;
    let (status, _) = h.invoke(&token, "transform", 1.0).await?;
    assert_eq!(status, 404, "a version the policy refuses is not restored");
    let function = format!("{}/v1/functions/transform", h.admin);
    let (_, view) = call(GET, &function, Some(&token), None).await?;
    let why = view["not_loaded"].as_str().unwrap_or_default();
    assert!(
        why.contains("3.0.0") && why.contains("does not trust"),
        "{view}"
    );
    // Activating k1's 1.0.0 is refused with the reason.
    let (status, body) = call(
        POST,
        &format!("{function}/activate"),
        Some(&token),
        Some(json!({ "version": "1.0.0" })),
    )
    .await?;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("signature policy")),
        "{body}"
    );
    // k2's 2.0.0 still activates, and the node serves it.
    let (status, body) = call(
        POST,
        &format!("{function}/activate"),
        Some(&token),
        Some(json!({ "version": "2.0.0" })),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("not_loaded").is_none(), "{body}");
    let (status, out) = h.invoke(&token, "transform", 1.0).await?;
    assert_eq!(
        (status, out["type"].as_str()),
        (200, Some("v2.0.0")),
        "{out}"
    );
    // Rolling back to k1's 3.0.0 is refused, and 2.0.0 keeps running.
    let (status, body) = call(POST, &format!("{function}/rollback"), Some(&token), None).await?;
    assert_eq!(status, 403, "{body}");
    let (status, out) = h.invoke(&token, "transform", 1.0).await?;
    assert_eq!(
        (status, out["type"].as_str()),
        (200, Some("v2.0.0")),
        "{out}"
    );
    h.node.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_exhaust_the_pool_or_outlast_its_time_quota_and_its_neighbour_keeps_working()
-> anyhow::Result<()> {
    let h = host("[registry]\n", None).await?;
    let a = h
        .tenant(
            "acme",
            json!({ "max_concurrency": 4, "max_timeout_ms": 1500, "max_invocations_per_s": 0 }),
            json!({}),
        )
        .await?;
    let b = h.tenant("bolt", json!({}), json!({})).await?;
    let spinner =
        |limits: Value| json!({ "triggers": [{ "http": "/t/acme/spin" }], "limits": limits });
    // A deploy may not ask for more than the quota.
    for (limits, says) in [
        (
            json!({ "concurrency": 400 }),
            "quota of 4 invocations at once",
        ),
        (json!({ "timeout_ms": 15000 }), "quota of 1500 ms"),
    ] {
        let (status, body) = h
            .deploy(
                &a,
                "spin",
                "1.0.0",
                artifacts::FIXTURE_SPIN_LOOP,
                spinner(limits),
                json!([]),
            )
            .await?;
        assert_eq!(status, 403, "{body}");
        assert!(
            body["detail"].as_str().is_some_and(|d| d.contains(says)),
            "{body}"
        );
    }
    // Two functions of 4 each: together still only the tenant's 4 at once.
    for name in ["spin", "spin2"] {
        let (status, body) = h
            .deploy(
                &a,
                name,
                "1.0.0",
                artifacts::FIXTURE_SPIN_LOOP,
                json!({ "limits": { "concurrency": 4, "timeout_ms": 1000 } }),
                json!([]),
            )
            .await?;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = h
        .deploy(
            &b,
            "transform",
            "1.0.0",
            artifacts::TRANSFORM,
            transform_spec("bolt", "b"),
            json!([]),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    // acme floods both spinners; every call ends by its deadline, waits in
    // acme's queue or is refused as busy: none is a 502 about the pool.
    let flood: Vec<_> = (0..24)
        .map(|i| {
            let h = h.admin.clone();
            let a = a.clone();
            tokio::spawn(async move {
                let name = if i % 2 == 0 { "spin" } else { "spin2" };
                let response = brink_tests::http()
                    .post(format!("{h}/v1/functions/{name}/invoke"))
                    .bearer_auth(&a)
                    .header("content-type", "application/cloudevents+json")
                    .body(json!({"specversion": "1.0", "id": format!("s{i}"), "source": "/t", "type": "t"}).to_string())
                    .send()
                    .await?;
                let status = response.status().as_u16();
                let body = response.text().await?;
                anyhow::Ok((status, body))
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Meanwhile bolt's calls all go through.
    for _ in 0..10 {
        let (status, out) = h.invoke(&b, "transform", 1.0).await?;
        assert_eq!(status, 200, "{out}");
    }
    for call in flood {
        let (status, body) = call.await??;
        assert!(
            !body.contains("concurrent limit") && status != 200,
            "{status}: {body}"
        );
    }
    h.node.shutdown().await
}

#[tokio::test]
async fn deployments_and_tenants_survive_a_node_restart() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let h = host("[registry]\n", Some(data.path())).await?;
    let token = h.tenant("acme", json!({}), json!({})).await?;
    let (status, body) = h
        .deploy(
            &token,
            "transform",
            "1.0.0",
            artifacts::TRANSFORM,
            transform_spec("acme", "v1"),
            json!([]),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    let (status, body) = h
        .deploy(
            &token,
            "transform",
            "1.1.0",
            artifacts::TRANSFORM,
            transform_spec("acme", "v1.1"),
            json!([]),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    h.node.shutdown().await?;

    let h = host("[registry]\n", Some(data.path())).await?;
    let (status, out) = h.invoke(&token, "transform", 1.0).await?;
    assert_eq!((status, out["type"].as_str()), (200, Some("v1.1")), "{out}");
    let (status, body) = call(
        POST,
        &format!("{}/v1/functions/transform/rollback", h.admin),
        Some(&token),
        None,
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let (_, out) = h.invoke(&token, "transform", 1.0).await?;
    assert_eq!(out["type"], "v1");
    let (status, body) = call(
        POST,
        &format!("{}/v1/functions/transform/rollback", h.admin),
        Some(&token),
        None,
    )
    .await?;
    assert_eq!(status, 409, "{body}");
    let (status, _) = call(
        DELETE,
        &format!("{}/v1/functions/transform", h.admin),
        Some(&token),
        None,
    )
    .await?;
    assert_eq!(status, 204);
    let (status, _) = h.invoke(&token, "transform", 1.0).await?;
    assert_eq!(status, 404);
    h.node.shutdown().await
}

#[tokio::test]
async fn every_admin_route_is_in_the_openapi_document() -> anyhow::Result<()> {
    let h = host(
        &format!(
            "[registry]\n[function.echo]\nsource = {:?}\nkv = [\"default\"]\n",
            artifacts::ECHO
        ),
        None,
    )
    .await?;
    let (status, doc) = call(GET, &format!("{}/v1/openapi.json", h.admin), None, None).await?;
    assert_eq!(status, 200);
    let paths = doc["paths"]
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("no paths"))?;
    // Every route the admin routers declare is documented, with its methods.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/src/node");
    let mut declared = 0;
    for file in ["api/state.rs", "api/mod.rs", "api/audit.rs", "api/node.rs"] {
        let source = std::fs::read_to_string(root.join(file))?;
        for chunk in source.split(".route(").skip(1) {
            let Some(path) = chunk.split('"').nth(1) else {
                continue;
            };
            let path = path.replace("{*key}", "{key}");
            let handlers = chunk.split(')').take(4).collect::<String>();
            let entry = paths
                .get(&path)
                .ok_or_else(|| anyhow::anyhow!("{path} is not documented"))?;
            for method in ["get", "post", "put", "delete", "patch"] {
                if handlers.contains(&format!("{method}(")) {
                    assert!(
                        entry.get(method).is_some(),
                        "{method} {path} is not documented"
                    );
                    declared += 1;
                }
            }
        }
    }
    assert!(
        declared >= 20,
        "only {declared} routes found in the sources"
    );
    // And every documented operation is served (answers something other than the router's 404/405).
    for (path, ops) in paths {
        let url = format!(
            "{}{}",
            h.admin,
            path.replace("{name}", "x")
                .replace("{id}", "x")
                .replace("{token}", "x")
                .replace("{bucket}", "default")
                .replace("{key}", "k")
                .replace("{uplink}", "x")
        );
        for method in ops
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes())?;
            let response = brink_tests::http()
                .request(method.clone(), &url)
                .bearer_auth("operator-secret")
                .send()
                .await?;
            let status = response.status().as_u16();
            let problem = response
                .headers()
                .get("content-type")
                .is_some_and(|v| v.as_bytes().starts_with(b"application/"));
            assert!(
                status != 405 && (status != 404 || problem),
                "{method} {path}: {status}"
            );
        }
    }
    h.node.shutdown().await
}

/// Reads server-sent events from `response` until `want` of them arrived
/// (each as (id, event, data)), or the stream ends.
async fn sse_events(
    response: &mut reqwest::Response,
    want: usize,
) -> anyhow::Result<Vec<(String, String, Value)>> {
    let mut text = String::new();
    let mut events = Vec::new();
    while events.len() < want {
        let chunk =
            tokio::time::timeout(std::time::Duration::from_secs(10), response.chunk()).await??;
        let Some(chunk) = chunk else { break };
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let (mut id, mut kind, mut data) = (String::new(), String::new(), Value::Null);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.to_owned();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    kind = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v)?;
                }
            }
            if !kind.is_empty() {
                events.push((id, kind, data));
            }
        }
    }
    Ok(events)
}

async fn follow(
    h: &Host,
    token: &str,
    name: &str,
    last_event_id: Option<&str>,
) -> anyhow::Result<reqwest::Response> {
    let mut request = brink_tests::http()
        .get(format!("{}/v1/functions/{name}/logs?follow=true", h.admin))
        .bearer_auth(token);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    Ok(request.send().await?)
}

#[tokio::test]
async fn a_tenant_tails_its_functions_log_live_and_no_one_else_can() -> anyhow::Result<()> {
    let h = host("[registry]\n", None).await?;
    let a = h.tenant("acme", json!({}), json!({})).await?;
    let b = h.tenant("bolt", json!({}), json!({})).await?;
    let spec = json!({ "config": { "threshold": "10", "direction": "above" } });
    let (status, body) = h
        .deploy(&a, "filter", "1.0.0", artifacts::FILTER, spec, json!([]))
        .await?;
    assert_eq!(status, 201, "{body}");
    let (status, _) = h.invoke(&a, "filter", 42.0).await?;
    assert_eq!(status, 200);

    // The recent records, as JSON.
    let url = format!("{}/v1/functions/filter/logs", h.admin);
    let (status, body) = call(GET, &url, Some(&a), None).await?;
    assert_eq!(status, 200, "{body}");
    let records = body["records"].as_array().cloned().unwrap_or_default();
    assert_eq!(records.len(), 1, "{body}");
    assert_eq!(records[0]["level"], "debug");
    assert_eq!(records[0]["source"], "log");
    assert!(
        records[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("t-1 = 42") && m.ends_with("pass")),
        "{body}"
    );

    // Following: the history first, then each new record as it is logged,
    // through a hot deploy of a new version.
    let mut tail = follow(&h, &a, "filter", None).await?;
    assert_eq!(tail.status(), 200);
    assert!(
        tail.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"))
    );
    let first = sse_events(&mut tail, 1).await?;
    assert_eq!(first[0].1, "log");
    assert_eq!(first[0].2["seq"].to_string(), first[0].0);
    h.invoke(&a, "filter", 3.0).await?;
    let spec = json!({ "config": { "threshold": "100", "direction": "above" } });
    let (status, body) = h
        .deploy(&a, "filter", "1.1.0", artifacts::FILTER, spec, json!([]))
        .await?;
    assert_eq!(status, 201, "{body}");
    h.invoke(&a, "filter", 50.0).await?;
    let live = sse_events(&mut tail, 2).await?;
    let messages: Vec<&str> = live
        .iter()
        .filter_map(|(_, _, d)| d["message"].as_str())
        .collect();
    assert_eq!(messages.len(), 2, "{live:?}");
    assert!(messages[0].contains("t-1 = 3 ") && messages[0].ends_with("drop"));
    assert!(messages[1].contains("threshold 100") && messages[1].ends_with("drop"));

    // A follower that reconnects with Last-Event-ID gets only what it missed.
    let mut resumed = follow(&h, &a, "filter", Some(&live[0].0)).await?;
    let again = sse_events(&mut resumed, 1).await?;
    assert_eq!(again[0].0, live[1].0);
    drop(resumed);

    // A trapping function: its panic on stderr and the host's word on the failure.
    let (status, body) = h
        .deploy(
            &a,
            "trap",
            "1.0.0",
            artifacts::FIXTURE_TRAP,
            json!({}),
            json!([]),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    let (status, _) = h.invoke(&a, "trap", 1.0).await?;
    assert!(status >= 500, "{status}");
    let (_, body) = call(
        GET,
        &format!("{}/v1/functions/trap/logs", h.admin),
        Some(&a),
        None,
    )
    .await?;
    let records = body["records"].as_array().cloned().unwrap_or_default();
    assert!(
        records.iter().any(|r| r["source"] == "stderr"
            && r["message"]
                .as_str()
                .is_some_and(|m| m.contains("panicked"))),
        "{body}"
    );
    assert!(
        records.iter().any(|r| r["source"] == "host"
            && r["level"] == "error"
            && r["message"]
                .as_str()
                .is_some_and(|m| m.contains("calibration table"))),
        "{body}"
    );

    // Another tenant, the operator and no one at all are refused, live or not.
    for token in [
        Some(b.as_str()),
        Some("operator-secret"),
        Some("brink_0000_bogus"),
        None,
    ] {
        let (status, body) = call(GET, &url, token, None).await?;
        assert!(
            matches!(status, 401 | 403 | 404),
            "{token:?}: {status} {body}"
        );
        let mut request = brink_tests::http().get(format!("{url}?follow=true"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        assert!(
            matches!(response.status().as_u16(), 401 | 403 | 404),
            "{token:?}: {}",
            response.status()
        );
    }
    let (status, _) = call(GET, &format!("{url}?follow=maybe"), Some(&a), None).await?;
    assert_eq!(status, 422);

    // Removing the function ends its followers' streams.
    let (status, _) = call(
        DELETE,
        &format!("{}/v1/functions/filter", h.admin),
        Some(&a),
        None,
    )
    .await?;
    assert_eq!(status, 204);
    let rest = sse_events(&mut tail, usize::MAX).await?;
    assert!(rest.is_empty(), "{rest:?}");
    let (status, _) = call(GET, &url, Some(&a), None).await?;
    assert_eq!(status, 404);
    h.node.shutdown().await
}

/// An identity server's signing key, as a test makes one: ed25519 (EdDSA),
/// published in a JWKS document under `kid`.
struct IdentityKey {
    kid: String,
    key: ed25519_dalek::SigningKey,
}

impl IdentityKey {
    fn generate(kid: &str) -> anyhow::Result<Self> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed)?;
        Ok(Self {
            kid: kid.to_owned(),
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        })
    }

    fn jwk(&self) -> Value {
        use base64::Engine as _;
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(self.key.verifying_key().as_bytes());
        json!({ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.kid, "use": "sig", "alg": "EdDSA" })
    }

    /// A compact JWT of `claims`, signed with `alg` in its header.
    fn sign(&self, alg: &str, claims: &Value) -> String {
        use base64::Engine as _;
        use ed25519_dalek::Signer as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = json!({ "alg": alg, "typ": "JWT", "kid": self.kid });
        let input = format!(
            "{}.{}",
            b64.encode(header.to_string()),
            b64.encode(claims.to_string())
        );
        let signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", b64.encode(signature.to_bytes()))
    }
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[tokio::test]
async fn jwts_from_the_identity_server_act_as_the_operator_or_a_tenant() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let jwks = dir.path().join("jwks.json");
    let current = IdentityKey::generate("2026-11")?;
    let impostor = IdentityKey::generate("2026-11")?;
    std::fs::write(&jwks, json!({ "keys": [current.jwk()] }).to_string())?;
    let issuer = "https://id.example.test/realms/edge";
    let h = host(
        &format!(
            "[admin.jwt]\njwks_file = {:?}\nissuer = {issuer:?}\naudience = \"brink\"\n[registry]\n",
            jwks.display().to_string()
        ),
        None,
    )
    .await?;
    let claims = |extra: Value| {
        let mut c =
            json!({ "iss": issuer, "aud": "brink", "exp": now_s() + 300, "sub": "someone" });
        if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(extra.clone());
        }
        c
    };
    let base = &h.admin;

    // Keycloak puts realm roles under realm_access.roles: the operator role there.
    let operator = current.sign(
        "EdDSA",
        &claims(json!({ "realm_access": { "roles": ["offline_access", "brink-operator"] } })),
    );
    let (status, body) = call(
        POST,
        &format!("{base}/v1/tenants"),
        Some(&operator),
        Some(json!({ "id": "acme" })),
    )
    .await?;
    assert_eq!(status, 201, "{body}");

    // A tenant's JWT: its functions, no one else's, no operator routes.
    let acme = current.sign("EdDSA", &claims(json!({ "brink_tenant": "acme" })));
    let (status, body) = h
        .deploy(
            &acme,
            "transform",
            "1.0.0",
            artifacts::TRANSFORM,
            transform_spec("acme", "com.acme.v1"),
            json!([]),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    let (status, out) = h.invoke(&acme, "transform", 20.0).await?;
    assert_eq!(
        (status, &out["type"]),
        (200, &json!("com.acme.v1")),
        "{out}"
    );
    let (status, _) = call(GET, &format!("{base}/v1/tenants"), Some(&acme), None).await?;
    assert_eq!(status, 403);

    // Refused, each with the reason in the problem's detail.
    let expired = claims(json!({ "brink_tenant": "acme", "exp": now_s() - 3600 }));
    let not_yet_valid = claims(json!({ "brink_tenant": "acme", "nbf": now_s() + 3600 }));
    let other_issuer = claims(json!({ "brink_tenant": "acme", "iss": "https://evil.test" }));
    let other_audience = claims(json!({ "brink_tenant": "acme", "aud": "grafana" }));
    let unknown_tenant = claims(json!({ "brink_tenant": "nobody" }));
    let no_role_or_tenant = claims(json!({}));
    let mut no_exp = claims(json!({ "brink_tenant": "acme" }));
    if let Some(c) = no_exp.as_object_mut() {
        c.remove("exp");
    }
    let tampered = {
        let token = current.sign("EdDSA", &claims(json!({ "brink_tenant": "acme" })));
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        use base64::Engine as _;
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
            claims(
                json!({ "brink_tenant": "acme", "realm_access": { "roles": ["brink-operator"] } }),
            )
            .to_string(),
        );
        parts.join(".")
    };
    for (token, says) in [
        (current.sign("EdDSA", &expired), "ExpiredSignature"),
        (current.sign("EdDSA", &not_yet_valid), "ImmatureSignature"),
        (current.sign("EdDSA", &other_issuer), "InvalidIssuer"),
        (current.sign("EdDSA", &other_audience), "InvalidAudience"),
        (
            current.sign("EdDSA", &unknown_tenant),
            "`nobody` does not exist",
        ),
        (
            current.sign("EdDSA", &no_role_or_tenant),
            "neither the role",
        ),
        (current.sign("EdDSA", &no_exp), "exp"),
        (
            impostor.sign("EdDSA", &claims(json!({ "brink_tenant": "acme" }))),
            "InvalidSignature",
        ),
        (tampered, "InvalidSignature"),
        (
            current.sign("HS256", &claims(json!({ "brink_tenant": "acme" }))),
            "shared secret",
        ),
        (
            current.sign("none", &claims(json!({ "brink_tenant": "acme" }))),
            "not a valid JWT",
        ),
        ("a.b.c".to_owned(), "not a valid JWT"),
    ] {
        let (status, body) = call(GET, &format!("{base}/v1/functions"), Some(&token), None).await?;
        assert_eq!(status, 401, "{says}: {body}");
        assert!(
            body["detail"].as_str().is_some_and(|d| d.contains(says)),
            "{says}: {body}"
        );
    }

    // Key rotation: a token signed by a key the file gained later is
    // accepted once the node reads the file again.
    let next = IdentityKey::generate("2026-12")?;
    std::fs::write(
        &jwks,
        json!({ "keys": [current.jwk(), next.jwk()] }).to_string(),
    )?;
    let rotated = next.sign("EdDSA", &claims(json!({ "brink_tenant": "acme" })));
    let mut accepted = false;
    for _ in 0..40 {
        let (status, _) = call(GET, &format!("{base}/v1/functions"), Some(&rotated), None).await?;
        if status == 200 {
            accepted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(accepted, "a key added to the JWKS file is picked up");
    // Opaque tokens still work beside JWTs.
    let (status, body) = call(
        POST,
        &format!("{base}/v1/tenants/acme/tokens"),
        Some(&operator),
        None,
    )
    .await?;
    assert_eq!(status, 201, "{body}");
    let opaque = body["token"].as_str().unwrap_or_default().to_owned();
    let (status, _) = call(GET, &format!("{base}/v1/functions"), Some(&opaque), None).await?;
    assert_eq!(status, 200);
    h.node.shutdown().await
}

#[tokio::test]
async fn key_value_bytes_and_inference_time_are_held_to_quota_and_metered_per_tenant()
-> anyhow::Result<()> {
    let model =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/digits/digits.onnx");
    let h = host(
        &format!(
            "[registry]\n[model.digits]\npath = {:?}\nbackend = \"tract\"\n",
            model.display().to_string()
        ),
        None,
    )
    .await?;
    let a = h
        .tenant(
            "acme",
            json!({ "max_kv_mb": 1 }),
            json!({ "models": ["digits"] }),
        )
        .await?;
    let b = h.tenant("bolt", json!({}), json!({})).await?;
    let put = |token: &str, path: &str, bytes: usize| {
        brink_tests::http()
            .put(format!("{}/v1/kv/{path}", h.admin))
            .bearer_auth(token)
            .body(vec![7u8; bytes])
            .send()
    };
    assert_eq!(put(&a, "frames/f1", 700 << 10).await?.status(), 204);
    let over = put(&a, "models/m1", 700 << 10).await?;
    assert_eq!(over.status(), 507);
    let detail = serde_json::from_slice::<Value>(&over.bytes().await?)?["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        detail.contains("namespace `tenant:acme`") && detail.contains("quota of 1048576 bytes"),
        "{detail}"
    );
    assert_eq!(
        put(&b, "frames/f1", 700 << 10).await?.status(),
        204,
        "bolt is not held to acme's quota"
    );
    assert_eq!(put(&b, "models/m1", 700 << 10).await?.status(), 204);
    let (status, _) = call(
        DELETE,
        &format!("{}/v1/kv/frames/f1", h.admin),
        Some(&a),
        None,
    )
    .await?;
    assert_eq!(status, 204);
    assert_eq!(
        put(&a, "models/m1", 700 << 10).await?.status(),
        204,
        "a delete made room"
    );

    // Inference time is billed to the tenant whose function ran the model.
    let (status, body) = h
        .deploy(
            &a,
            "classify",
            "1.0.0",
            artifacts::CLASSIFY_DIGITS,
            json!({ "models": ["digits"] }),
            json!([]),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    let frame = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/digits/digit-event.json"),
    )?;
    for _ in 0..3 {
        let response = brink_tests::http()
            .post(format!("{}/v1/functions/classify/invoke", h.admin))
            .bearer_auth(&a)
            .header("content-type", "application/cloudevents+json")
            .body(frame.clone())
            .send()
            .await?;
        assert_eq!(response.status(), 200, "{}", response.text().await?);
    }
    let (_, usage) = call(
        GET,
        &format!("{}/v1/usage", h.admin),
        Some("operator-secret"),
        None,
    )
    .await?;
    let of = |id: &str| {
        usage["usage"]
            .as_array()
            .and_then(|u| u.iter().find(|t| t["tenant"] == id).cloned())
            .unwrap_or_default()
    };
    let (acme, bolt) = (of("acme"), of("bolt"));
    let kv_bytes = acme["kv_bytes"].as_u64().unwrap_or_default();
    assert!((700 << 10..800 << 10).contains(&kv_bytes), "{usage}");
    assert!(
        bolt["kv_bytes"].as_u64().unwrap_or_default() > 1400 << 10,
        "{usage}"
    );
    let inference = acme["inference_seconds"].as_f64().unwrap_or_default();
    let execution = acme["execution_seconds"].as_f64().unwrap_or_default();
    assert!(inference > 0.0 && inference < execution, "{usage}");
    assert_eq!(bolt["inference_seconds"], 0.0, "{usage}");
    // Tenants' figures are the operator's to read, on the admin listener;
    // the public /metrics, which needs no token, names no tenant.
    let metrics = brink_tests::http()
        .get(format!("{}/v1/metrics", h.admin))
        .bearer_auth("operator-secret")
        .send()
        .await?
        .text()
        .await?;
    for line in [
        "brink_tenant_kv_bytes{tenant=\"acme\"}",
        "brink_tenant_inference_seconds_total{tenant=\"acme\"}",
        "brink_events_in_total{function=\"acme/",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    let public = brink_tests::http()
        .get(format!("http://{}/metrics", h.node.http_addr()))
        .send()
        .await?
        .text()
        .await?;
    for tenant in ["acme", "bolt"] {
        assert!(
            !public.contains(tenant),
            "{tenant} named publicly:\n{public}"
        );
    }
    assert!(public.contains("brink_mqtt_connected"), "{public}");
    let (status, _) = call(GET, &format!("{}/v1/metrics", h.admin), Some(&a), None).await?;
    assert_eq!(status, 403, "a tenant reads no one's metrics");
    h.node.shutdown().await
}

/// A filter that passes readings over 30 from `trigger` to `output`.
fn mqtt_filter_spec(trigger: &str, output: &str) -> Value {
    json!({
        "triggers": [{ "mqtt": trigger }],
        "outputs": [{ "mqtt": output }],
        "config": { "threshold": "30" },
    })
}

#[tokio::test]
async fn deployed_functions_take_mqtt_triggers_only_from_their_tenants_topics() -> anyhow::Result<()>
{
    use brink_tests::mqtt::{Client5, free_port};
    let v5 = free_port()?;
    let h = host(
        &format!(
            "[registry]\nmqtt = true\n[mqtt]\nlisten = \"127.0.0.1:{}\"\nlisten_v5 = \"127.0.0.1:{v5}\"\n",
            free_port()?
        ),
        None,
    )
    .await?;
    let a = h.tenant("acme", json!({}), json!({})).await?;
    let b = h.tenant("bolt", json!({}), json!({})).await?;
    let mut watcher = Client5::connect(
        v5,
        &["t/+/alerts/#", "t/+/dead-letter/#", "plant1/line3/alerts/#"],
    )
    .await?;
    let device = Client5::connect(v5, &[]).await?;
    let publish = |topic: &'static str, value: f64| {
        let payload = json!({ "device": "t-1", "value": value }).to_string();
        let device = &device;
        async move { device.publish(topic, payload, None, &[]).await }
    };

    let (status, body) = h
        .deploy(
            &a,
            "filter",
            "1.0.0",
            artifacts::FILTER,
            mqtt_filter_spec("t/acme/sensors/+/temperature", "t/acme/alerts/t-1"),
            json!([]),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    publish("t/acme/sensors/t-1/temperature", 31.5).await?;
    let alert = watcher.next(10).await?;
    assert_eq!(alert.topic, "t/acme/alerts/t-1");

    // Another tenant's filters, wildcards over every tenant, and malformed
    // filters are refused at deploy, each with its reason.
    for (trigger, status, says) in [
        ("t/acme/sensors/#", 403, "outside tenant `bolt`'s topics"),
        ("#", 403, "outside tenant `bolt`'s topics"),
        ("+/bolt/sensors/#", 403, "outside tenant `bolt`'s topics"),
        ("t/+/sensors/#", 403, "outside tenant `bolt`'s topics"),
        ("plant1/line3/#", 403, "outside tenant `bolt`'s topics"),
        ("t/bolt/a#", 422, "'#' only as the whole last level"),
    ] {
        let (got, body) = h
            .deploy(
                &b,
                "filter",
                "1.0.0",
                artifacts::FILTER,
                mqtt_filter_spec(trigger, "t/bolt/alerts/t-1"),
                json!([]),
            )
            .await?;
        assert_eq!(got, status, "{trigger}: {body}");
        assert!(
            body["detail"].as_str().unwrap_or_default().contains(says),
            "{trigger}: {body}"
        );
    }
    // Granted a plant's topics, bolt may use them; acme still may not.
    let (status, body) = call(
        reqwest::Method::PATCH,
        &format!("{}/v1/tenants/bolt", h.admin),
        Some("operator-secret"),
        Some(json!({ "grants": { "topics": ["#"] } })),
    )
    .await?;
    assert_eq!(status, 422, "a wildcard grant: {body}");
    let (status, body) = call(
        reqwest::Method::PATCH,
        &format!("{}/v1/tenants/bolt", h.admin),
        Some("operator-secret"),
        Some(json!({ "grants": { "topics": ["plant1/line3/"] } })),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let (status, body) = h
        .deploy(
            &b,
            "filter",
            "1.0.0",
            artifacts::FILTER,
            mqtt_filter_spec("plant1/line3/+/temperature", "plant1/line3/alerts/t-1"),
            json!([]),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    let (status, body) = h
        .deploy(
            &a,
            "plant",
            "1.0.0",
            artifacts::FILTER,
            mqtt_filter_spec("plant1/line3/+/temperature", "t/acme/alerts/t-1"),
            json!([]),
        )
        .await?;
    assert_eq!(status, 403, "{body}");

    // Each reading reaches only the function of the tenant whose topic it is on.
    publish("plant1/line3/t-1/temperature", 40.0).await?;
    assert_eq!(watcher.next(10).await?.topic, "plant1/line3/alerts/t-1");
    publish("t/acme/sensors/t-1/temperature", 41.0).await?;
    assert_eq!(watcher.next(10).await?.topic, "t/acme/alerts/t-1");
    assert!(watcher.quiet_for(300).await.is_none());

    // A malformed event is dead-lettered inside the tenant's own topics.
    device
        .publish(
            "t/acme/sensors/t-1/temperature",
            "{not json",
            Some("application/cloudevents+json"),
            &[],
        )
        .await?;
    let dead = watcher.next(10).await?;
    assert_eq!(dead.topic, "t/acme/dead-letter/filter");
    assert_eq!(dead.property("brinkerrorkind"), Some("invalid_event"));

    // A new version's triggers replace the old ones at once.
    let (status, body) = h
        .deploy(
            &a,
            "filter",
            "2.0.0",
            artifacts::FILTER,
            mqtt_filter_spec("t/acme/v2/+/temperature", "t/acme/alerts/t-1"),
            json!([]),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    publish("t/acme/sensors/t-1/temperature", 42.0).await?;
    assert!(
        watcher.quiet_for(300).await.is_none(),
        "the old trigger still fired"
    );
    publish("t/acme/v2/t-1/temperature", 43.0).await?;
    assert_eq!(watcher.next(10).await?.topic, "t/acme/alerts/t-1");
    // Rolled back, the first filter is back; removed, nothing fires.
    let (status, body) = call(
        POST,
        &format!("{}/v1/functions/filter/rollback", h.admin),
        Some(&a),
        None,
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    publish("t/acme/sensors/t-1/temperature", 44.0).await?;
    assert_eq!(watcher.next(10).await?.topic, "t/acme/alerts/t-1");
    let (status, _) = call(
        DELETE,
        &format!("{}/v1/functions/filter", h.admin),
        Some(&a),
        None,
    )
    .await?;
    assert_eq!(status, 204);
    publish("t/acme/sensors/t-1/temperature", 45.0).await?;
    publish("t/acme/v2/t-1/temperature", 46.0).await?;
    assert!(watcher.quiet_for(300).await.is_none());
    // bolt's function was never disturbed.
    publish("plant1/line3/t-2/temperature", 47.0).await?;
    assert_eq!(watcher.next(10).await?.topic, "plant1/line3/alerts/t-1");
    h.node.shutdown().await
}

#[tokio::test]
async fn a_tenants_queued_outbox_bytes_are_held_to_its_quota_and_metered() -> anyhow::Result<()> {
    // An uplink that is down: what tenants send stays queued.
    let dead = brink_tests::mqtt::free_port()?;
    let h = host(
        &format!("[registry]\n[uplink.cloud]\nhttp = \"http://127.0.0.1:{dead}/ingest\"\n"),
        None,
    )
    .await?;
    let grants = json!({ "uplinks": ["cloud"] });
    let a = h
        .tenant("acme", json!({ "max_outbox_mb": 1 }), grants.clone())
        .await?;
    let b = h.tenant("bolt", json!({}), grants).await?;
    let spec = json!({ "outputs": [{ "uplink": "cloud" }] });
    for token in [&a, &b] {
        let (status, body) = h
            .deploy(
                token,
                "echo",
                "1.0.0",
                artifacts::ECHO,
                spec.clone(),
                json!([]),
            )
            .await?;
        assert_eq!(status, 201, "{body}");
    }
    let send = |token: &str| {
        let event = json!({
            "specversion": "1.0", "id": uuid(), "source": "/test", "type": "com.example.frame",
            "datacontenttype": "application/json", "data": { "frame": "x".repeat(300 << 10) },
        });
        brink_tests::http()
            .post(format!("{}/v1/functions/echo/invoke", h.admin))
            .bearer_auth(token)
            .header("content-type", "application/cloudevents+json")
            .body(event.to_string())
            .send()
    };
    for _ in 0..3 {
        let response = send(&a).await?;
        assert_eq!(response.status(), 200, "{}", response.text().await?);
    }
    let over = send(&a).await?;
    assert_eq!(over.status(), 502);
    let detail = serde_json::from_slice::<Value>(&over.bytes().await?)?["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        detail.contains("tenant `acme` has") && detail.contains("quota of 1048576 bytes"),
        "{detail}"
    );
    for _ in 0..4 {
        let response = send(&b).await?;
        assert_eq!(
            response.status(),
            200,
            "bolt is not held to acme's quota: {}",
            response.text().await?
        );
    }
    let url = format!("{}/v1/usage", h.admin);
    let usage = |token: String| {
        let url = url.clone();
        async move {
            let (_, body) = call(GET, &url, Some(&token), None).await?;
            anyhow::Ok(
                body["usage"][0]["outbox_bytes"]
                    .as_u64()
                    .unwrap_or_default(),
            )
        }
    };
    let acme = usage(a.clone()).await?;
    assert!((900 << 10..=1 << 20).contains(&acme), "{acme}");
    assert!(usage(b.clone()).await? > 1200 << 10);
    let metrics = brink_tests::http()
        .get(format!("{}/v1/metrics", h.admin))
        .bearer_auth("operator-secret")
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains(&format!(
            "brink_tenant_outbox_bytes{{tenant=\"acme\"}} {acme}"
        )),
        "{metrics}"
    );
    // Purged by the operator, the queue frees acme's room.
    let (status, body) = call(
        POST,
        &format!("{}/v1/outbox/cloud/purge", h.admin),
        Some("operator-secret"),
        None,
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(usage(a.clone()).await?, 0);
    let response = send(&a).await?;
    assert_eq!(response.status(), 200, "{}", response.text().await?);
    h.node.shutdown().await
}

#[tokio::test]
async fn deleting_a_tenant_removes_its_tokens_functions_and_state_and_spares_the_others()
-> anyhow::Result<()> {
    let h = host("[registry]\n", None).await?;
    let a = h.tenant("acme", json!({}), json!({})).await?;
    let b = h.tenant("bolt", json!({}), json!({})).await?;
    for (token, tenant) in [(&a, "acme"), (&b, "bolt")] {
        let (status, body) = h
            .deploy(
                token,
                "transform",
                "1.0.0",
                artifacts::TRANSFORM,
                transform_spec(tenant, "com.example.f"),
                json!([]),
            )
            .await?;
        assert_eq!(status, 201, "{body}");
        let put = brink_tests::http()
            .put(format!("{}/v1/kv/frames/f1", h.admin))
            .bearer_auth(token)
            .body("frame")
            .send()
            .await?;
        assert_eq!(put.status(), 204);
    }
    let post = |tenant: &'static str| {
        brink_tests::http()
            .post(format!("{}/t/{tenant}/readings", h.events))
            .header("content-type", "application/cloudevents+json")
            .body(
                json!({
                    "specversion": "1.0", "id": uuid(), "source": "/test",
                    "type": "com.example.reading", "subject": "t-1",
                    "datacontenttype": "application/json",
                    "data": { "device": "t-1", "value": 20.0 },
                })
                .to_string(),
            )
            .send()
    };
    assert!(post("acme").await?.status().is_success());
    let tenant_url = format!("{}/v1/tenants/acme", h.admin);
    let (status, _) = call(DELETE, &tenant_url, Some(&b), None).await?;
    assert_eq!(status, 403, "a tenant cannot delete another");
    let (status, body) = call(DELETE, &tenant_url, Some("operator-secret"), None).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["functions"], &body["kv_buckets"]),
        (&json!(["transform"]), &json!(["frames"]))
    );
    // Its tokens, events and record are gone; deleting again finds nothing.
    let (status, _) = call(GET, &format!("{}/v1/functions", h.admin), Some(&a), None).await?;
    assert_eq!(status, 401);
    assert_eq!(post("acme").await?.status(), 404);
    for method in [GET, DELETE] {
        let (status, _) = call(method, &tenant_url, Some("operator-secret"), None).await?;
        assert_eq!(status, 404);
    }
    // The other tenant runs on, its state intact.
    assert!(post("bolt").await?.status().is_success());
    let (status, body) = call(GET, &format!("{}/v1/kv/frames", h.admin), Some(&b), None).await?;
    assert_eq!((status, &body["keys"]), (200, &json!(["f1"])), "{body}");
    // A new tenant of the same name starts empty.
    let a = h.tenant("acme", json!({}), json!({})).await?;
    let (_, body) = call(GET, &format!("{}/v1/kv", h.admin), Some(&a), None).await?;
    assert_eq!(body["buckets"], json!([]), "{body}");
    let (_, body) = call(GET, &format!("{}/v1/functions", h.admin), Some(&a), None).await?;
    assert_eq!(body["functions"], json!([]), "{body}");
    h.node.shutdown().await
}

#[tokio::test]
async fn a_deploy_spec_cannot_name_a_source_raw_grants_or_model_loading() -> anyhow::Result<()> {
    let h = host("[registry]\n", None).await?;
    let a = h.tenant("acme", json!({}), json!({})).await?;
    let base = json!({ "triggers": [{ "http": "/t/acme/in" }] });
    let with = |key: &str, value: Value| {
        let mut spec = base.clone();
        spec[key] = value;
        spec
    };
    for (spec, status, expected) in [
        // The manifest's `source` has no place here: the component was uploaded.
        (with("source", json!("/etc/passwd")), 400, "no `source`"),
        // Raw grants would pass the tenant's own grants by.
        (with("grants", json!(["nn"])), 403, "grants"),
        (with("grants", json!(["kv"])), 403, "grants"),
        (with("load_models", json!(true)), 403, "load_models"),
        (
            with("teleport", json!(true)),
            400,
            "unknown field `teleport`",
        ),
    ] {
        let (got, body) = h
            .deploy(
                &a,
                "echo",
                "1.0.0",
                artifacts::ECHO,
                spec.clone(),
                json!([]),
            )
            .await?;
        assert_eq!(got, status, "{spec}: {body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(expected),
            "{spec}: {body}"
        );
    }
    // Nothing was deployed; a plain spec still is, and reads back as sent.
    let (status, body) = h
        .deploy(
            &a,
            "echo",
            "1.0.0",
            artifacts::ECHO,
            base.clone(),
            json!([]),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    let (status, body) = call(
        reqwest::Method::GET,
        &format!("{}/v1/functions/echo", h.admin),
        Some(&a),
        None,
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let spec = &body["versions"][0]["spec"];
    for key in ["source", "grants", "load_models"] {
        assert!(spec.get(key).is_none(), "{key} in {spec}");
    }
    assert_eq!(spec["triggers"], base["triggers"]);
    Ok(())
}
