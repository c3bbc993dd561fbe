//! Key-value state through real guests: every interface function, atomics
//! under concurrency, TTL, grants, isolation, limits and durability.

use std::sync::Arc;
use std::time::Duration;

use brink_host::bindings::CloudEvent;
use brink_host::kv::{Kv, KvConfig};
use brink_host::{Function, FunctionSpec};
use brink_tests::{artifacts, json_data, load, reading};
use serde_json::{Value, json};

/// A store in a fresh temporary directory (kept alive by the returned guard).
fn store(config: KvConfig) -> anyhow::Result<(Kv, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    Ok((Kv::open_sled(dir.path(), config)?, dir))
}

/// The kv-ops fixture as function `name`, granted `buckets` of app `app`.
fn ops_function(kv: &Kv, name: &str, app: &str, buckets: &[&str]) -> anyhow::Result<Function> {
    load(
        FunctionSpec::new(name).with_kv(kv.clone(), app, buckets.iter().copied()),
        artifacts::FIXTURE_KV_OPS,
    )
}

fn ops_event(ops: &Value) -> CloudEvent {
    let mut event = reading("ops", "none", 0.0);
    event.data = Some(ops.to_string().into_bytes());
    event
}

/// Runs `ops` in one invocation; the result of each.
async fn run(function: &Function, ops: Value) -> anyhow::Result<Vec<Value>> {
    let out = function.invoke(ops_event(&ops)).await?;
    let results = json_data(out.first().ok_or_else(|| anyhow::anyhow!("no output"))?)?;
    Ok(results.as_array().cloned().unwrap_or_default())
}

/// Runs one op; its `ok` value, or its `err` message as an error.
async fn op(function: &Function, op: Value) -> anyhow::Result<Value> {
    let results = run(function, json!([op])).await?;
    let result = results.into_iter().next().unwrap_or_default();
    match (result.get("ok"), result.get("err")) {
        (Some(ok), _) => Ok(ok.clone()),
        (_, Some(err)) => Err(anyhow::anyhow!("{}", err.as_str().unwrap_or_default())),
        _ => Err(anyhow::anyhow!("no result: {result}")),
    }
}

#[tokio::test]
async fn every_keyvalue_interface_function_works_through_a_guest() -> anyhow::Result<()> {
    let (kv, _dir) = store(KvConfig::default())?;
    let f = ops_function(&kv, "ops", "app", &["default"])?;
    let results = run(
        &f,
        json!([
            { "op": "get", "key": "a" },
            { "op": "set", "key": "a", "value": "1" },
            { "op": "get", "key": "a" },
            { "op": "exists", "key": "a" },
            { "op": "set-many", "keys": ["b/1", "b/2", "c"], "value": "x" },
            { "op": "get-many", "keys": ["a", "b/1", "zz"] },
            { "op": "list-keys" },
            { "op": "list-prefix", "prefix": "b/" },
            { "op": "increment", "key": "n", "delta": 5 },
            { "op": "increment", "key": "n", "delta": -2 },
            { "op": "get", "key": "n" },
            { "op": "cas", "key": "a", "expect": "1", "value": "2" },
            { "op": "cas", "key": "a", "expect": "1", "value": "3" },
            { "op": "get", "key": "a" },
            { "op": "delete-many", "keys": ["b/1", "b/2"] },
            { "op": "delete", "key": "c" },
            { "op": "exists", "key": "c" },
            { "op": "delete", "key": "never-set" },
            { "op": "list-keys" },
            { "op": "set-with-ttl", "key": "t", "value": "v", "ttl_ms": 60000 },
            { "op": "get", "key": "t" },
            { "op": "increment", "key": "a", "delta": 1 },
        ]),
    )
    .await?;
    let ok = |v: Value| json!({ "ok": v });
    let expected = vec![
        ok(Value::Null),
        ok(Value::Null),
        ok(json!("1")),
        ok(json!(true)),
        ok(Value::Null),
        ok(json!([["a", "1"], ["b/1", "x"], ["zz", null]])),
        ok(json!({ "keys": ["a", "b/1", "b/2", "c"], "cursor": null })),
        ok(json!({ "keys": ["b/1", "b/2"], "cursor": null })),
        ok(json!(5)),
        ok(json!(3)),
        ok(json!("3")),
        ok(json!({ "swapped": true })),
        ok(json!({ "swapped": false, "current": "2" })),
        ok(json!("2")),
        ok(Value::Null),
        ok(Value::Null),
        ok(json!(false)),
        ok(Value::Null),
        ok(json!({ "keys": ["a", "n"], "cursor": null })),
        ok(Value::Null),
        ok(json!("v")),
        // "2" is a decimal integer: counters are decimal text.
        ok(json!(3)),
    ];
    for (i, (got, want)) in results.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "op #{i}");
    }
    assert_eq!(results.len(), expected.len());
    Ok(())
}

#[tokio::test]
async fn listing_a_large_bucket_pages_with_a_cursor() -> anyhow::Result<()> {
    let (kv, _dir) = store(KvConfig::default())?;
    let bucket = kv.bucket("app", "default")?;
    for i in 0..2500 {
        bucket.set(&format!("k{i:05}"), b"v", None)?;
    }
    let f = ops_function(&kv, "ops", "app", &["default"])?;
    let mut cursor = Value::Null;
    let mut seen = 0;
    let mut pages = 0;
    loop {
        let page = op(&f, json!({ "op": "list-keys", "cursor": cursor })).await?;
        seen += page["keys"].as_array().map_or(0, Vec::len);
        pages += 1;
        cursor = page["cursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    assert_eq!((seen, pages), (2500, 3));
    Ok(())
}

/// Runs `n` copies of `op`, at most 32 at a time, alternating between `functions`.
async fn race(functions: &[Function], n: usize, op_json: Value) -> anyhow::Result<Vec<Value>> {
    let gate = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let f = functions[i % functions.len()].clone();
        let gate = gate.clone();
        let op_json = op_json.clone();
        tasks.spawn(async move {
            let _permit = gate.acquire().await?;
            op(&f, op_json).await
        });
    }
    let mut results = Vec::new();
    while let Some(result) = tasks.join_next().await {
        results.push(result??);
    }
    Ok(results)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_increments_end_at_exactly_a_thousand() -> anyhow::Result<()> {
    let (kv, _dir) = store(KvConfig::default())?;
    // Two functions of one app, sharing the bucket.
    let a = ops_function(&kv, "counter-a", "app", &["default"])?;
    let b = ops_function(&kv, "counter-b", "app", &["default"])?;
    let results = race(
        &[a.clone(), b],
        1000,
        json!({ "op": "increment", "key": "hits", "delta": 1 }),
    )
    .await?;
    let mut returned: Vec<i64> = results.iter().filter_map(Value::as_i64).collect();
    returned.sort_unstable();
    // Every increment saw a distinct value: none was lost or applied twice.
    assert_eq!(returned, (1..=1000).collect::<Vec<_>>());
    assert_eq!(
        op(&a, json!({ "op": "get", "key": "hits" })).await?,
        json!("1000")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_compare_and_swap_race_has_exactly_one_winner() -> anyhow::Result<()> {
    let (kv, _dir) = store(KvConfig::default())?;
    let a = ops_function(&kv, "claim-a", "app", &["default"])?;
    let b = ops_function(&kv, "claim-b", "app", &["default"])?;
    // Every contender expects the key absent and claims it.
    let results = race(
        &[a.clone(), b],
        64,
        json!({ "op": "cas", "key": "leader", "value": "me" }),
    )
    .await?;
    let winners = results
        .iter()
        .filter(|r| r["swapped"] == json!(true))
        .count();
    assert_eq!(winners, 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter(|r| r["swapped"] == json!(false))
            .all(|r| r["current"] == json!("me"))
    );
    Ok(())
}

#[tokio::test]
async fn expired_keys_are_never_returned_and_are_swept() -> anyhow::Result<()> {
    let (kv, _dir) = store(KvConfig::default())?;
    let f = ops_function(&kv, "ops", "app", &["default"])?;
    run(
        &f,
        json!([
            { "op": "set-with-ttl", "key": "session/1", "value": "v", "ttl_ms": 150 },
            { "op": "set", "key": "session/2", "value": "kept" },
        ]),
    )
    .await?;
    assert_eq!(
        op(&f, json!({ "op": "get", "key": "session/1" })).await?,
        json!("v")
    );
    let bucket = kv.bucket("app", "default")?;
    let size_before = bucket.size();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let after = run(
        &f,
        json!([
            { "op": "get", "key": "session/1" },
            { "op": "exists", "key": "session/1" },
            { "op": "list-prefix", "prefix": "session/" },
            { "op": "get-many", "keys": ["session/1"] },
            { "op": "cas", "key": "session/1", "value": "new" },
        ]),
    )
    .await?;
    assert_eq!(
        after,
        vec![
            json!({ "ok": null }),
            json!({ "ok": false }),
            json!({ "ok": { "keys": ["session/2"], "cursor": null } }),
            json!({ "ok": [["session/1", null]] }),
            // An expired key counts as absent for a swap too.
            json!({ "ok": { "swapped": true } }),
        ]
    );
    // A fresh TTL key, expired, is removed by the sweeper.
    bucket.set("gone", b"x", Some(Duration::from_millis(10)))?;
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(kv.sweep_expired()?, 1);
    assert!(bucket.size() < size_before + "gone".len() as u64 + 10);
    assert_eq!(kv.sweep_expired()?, 0);
    Ok(())
}

#[tokio::test]
async fn a_rewrite_without_a_ttl_is_not_swept() -> anyhow::Result<()> {
    let (kv, _dir) = store(KvConfig::default())?;
    let bucket = kv.bucket("app", "default")?;
    bucket.set("k", b"temporary", Some(Duration::from_millis(10)))?;
    bucket.set("k", b"permanent", None)?;
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(kv.sweep_expired()?, 0);
    assert_eq!(bucket.get("k")?.as_deref(), Some(&b"permanent"[..]));
    Ok(())
}

#[tokio::test]
async fn ungranted_buckets_are_access_denied() -> anyhow::Result<()> {
    let (kv, _dir) = store(KvConfig::default())?;
    let f = ops_function(&kv, "ops", "app", &["default"])?;
    let results = run(
        &f,
        json!([
            { "op": "open", "bucket": "secrets" },
            { "op": "open", "bucket": "Default" },
            { "op": "open", "bucket": "default" },
        ]),
    )
    .await?;
    assert_eq!(
        results,
        vec![
            json!({ "err": "access-denied" }),
            json!({ "err": "access-denied" }),
            json!({ "ok": null }),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn a_component_importing_keyvalue_without_a_grant_is_refused_naming_the_import()
-> anyhow::Result<()> {
    let err = load(FunctionSpec::new("ops"), artifacts::FIXTURE_KV_OPS)
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(err.contains("`wasi:keyvalue/"), "{err}");
    assert!(
        err.contains(
            "which it is not granted; name the buckets it may open in its spec: kv = [\"default\"]"
        ),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn a_function_sharing_the_code_of_a_granted_one_is_still_refused_without_the_grant()
-> anyhow::Result<()> {
    let (kv, _dir) = store(KvConfig::default())?;
    let granted = ops_function(&kv, "ops", "app-a", &["default"])?;
    let err = load(FunctionSpec::new("ungranted"), artifacts::FIXTURE_KV_OPS)
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(
        err.contains("function `ungranted` imports `wasi:keyvalue/"),
        "{err}"
    );
    op(&granted, json!({ "op": "set", "key": "k", "value": "v" })).await?;
    Ok(())
}

#[tokio::test]
async fn two_apps_default_buckets_never_meet() -> anyhow::Result<()> {
    let (kv, _dir) = store(KvConfig::default())?;
    let a = ops_function(&kv, "ops", "app-a", &["default"])?;
    let b = ops_function(&kv, "ops", "app-b", &["default"])?;
    op(&a, json!({ "op": "set", "key": "owner", "value": "a" })).await?;
    assert_eq!(
        op(&b, json!({ "op": "get", "key": "owner" })).await?,
        Value::Null
    );
    op(&b, json!({ "op": "set", "key": "owner", "value": "b" })).await?;
    assert_eq!(
        op(&a, json!({ "op": "get", "key": "owner" })).await?,
        json!("a")
    );
    assert_eq!(
        op(&a, json!({ "op": "list-keys" })).await?,
        json!({ "keys": ["owner"], "cursor": null })
    );
    assert_eq!(kv.buckets("app-a")?, vec!["default".to_owned()]);
    Ok(())
}

#[tokio::test]
async fn limits_produce_guest_visible_errors_and_the_function_goes_on() -> anyhow::Result<()> {
    let (kv, _dir) = store(KvConfig {
        max_key_bytes: 16,
        max_value_bytes: 1024,
        bucket_quota_bytes: 4096,
        ..KvConfig::default()
    })?;
    let f = ops_function(&kv, "ops", "app", &["default"])?;
    let results = run(
        &f,
        json!([
            { "op": "set", "key": "a-key-that-is-far-too-long", "value": "v" },
            { "op": "set", "key": "", "value": "v" },
            { "op": "set-big", "key": "big", "n": 2 },
            { "op": "set", "key": "word", "value": "hello" },
            { "op": "increment", "key": "word", "delta": 1 },
            { "op": "set-with-ttl", "key": "t", "value": "v", "ttl_ms": 0 },
            { "op": "set-big", "key": "q1", "n": 1 },
            { "op": "set-big", "key": "q2", "n": 1 },
            { "op": "set-big", "key": "q3", "n": 1 },
            { "op": "set-big", "key": "q4", "n": 1 },
            { "op": "set", "key": "small", "value": "fits" },
        ]),
    )
    .await?;
    let errors: Vec<String> = results
        .iter()
        .map(|r| {
            r.get("err")
                .and_then(Value::as_str)
                .unwrap_or("ok")
                .to_owned()
        })
        .collect();
    assert!(
        errors[0].contains("key of 26 bytes is over the limit of 16 bytes"),
        "{errors:?}"
    );
    assert!(errors[1].contains("keys must not be empty"), "{errors:?}");
    assert!(
        errors[2].contains("value of 2048 bytes is over the limit of 1024 bytes"),
        "{errors:?}"
    );
    assert_eq!(errors[3], "ok");
    assert!(
        errors[4].contains("not a decimal 64-bit integer"),
        "{errors:?}"
    );
    assert!(errors[5].contains("TTL must be above 0"), "{errors:?}");
    assert_eq!(&errors[6..9], ["ok", "ok", "ok"]);
    assert!(
        errors[9].contains("over its quota of 4096 bytes"),
        "{errors:?}"
    );
    assert_eq!(errors[10], "ok");
    // The next event runs as usual.
    assert_eq!(
        op(&f, json!({ "op": "get", "key": "small" })).await?,
        json!("fits")
    );
    Ok(())
}

#[tokio::test]
async fn writes_survive_reopening_the_store() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let kv = Kv::open_sled(dir.path(), KvConfig::default())?;
        let f = ops_function(&kv, "ops", "app", &["default"])?;
        run(
            &f,
            json!([
                { "op": "set", "key": "a", "value": "1" },
                { "op": "increment", "key": "n", "delta": 7 },
                { "op": "set-with-ttl", "key": "t", "value": "v", "ttl_ms": 60000 },
            ]),
        )
        .await?;
    }
    let kv = Kv::open_sled(dir.path(), KvConfig::default())?;
    let f = ops_function(&kv, "ops", "app", &["default"])?;
    let results = run(
        &f,
        json!([
            { "op": "get", "key": "a" },
            { "op": "get", "key": "n" },
            { "op": "get", "key": "t" },
        ]),
    )
    .await?;
    assert_eq!(
        results,
        vec![
            json!({ "ok": "1" }),
            json!({ "ok": "7" }),
            json!({ "ok": "v" })
        ]
    );
    Ok(())
}

#[tokio::test]
async fn a_second_host_on_the_same_data_directory_is_refused_clearly() -> anyhow::Result<()> {
    let (_kv, dir) = store(KvConfig::default())?;
    let err = Kv::open_sled(dir.path(), KvConfig::default())
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(err.contains("is another host using it?"), "{err}");
    Ok(())
}

fn device_event(device: &str, value: f64) -> CloudEvent {
    reading(&format!("{device}-{value}"), device, value)
}

#[tokio::test]
async fn downsample_passes_one_event_per_device_per_window() -> anyhow::Result<()> {
    let (kv, _dir) = store(KvConfig::default())?;
    let mut spec = FunctionSpec::new("downsample").with_kv(kv.clone(), "app", ["default"]);
    spec.config.insert("window_ms".into(), "300".into());
    let f = load(spec, artifacts::DOWNSAMPLE)?;
    let mut passed = Vec::new();
    for (device, value) in [
        ("t-1", 1.0),
        ("t-1", 2.0),
        ("t-2", 3.0),
        ("t-1", 4.0),
        ("t-2", 5.0),
    ] {
        for out in f.invoke(device_event(device, value)).await? {
            passed.push(json_data(&out)?["value"].clone());
        }
    }
    assert_eq!(passed, [json!(1.0), json!(3.0)]);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let again = f.invoke(device_event("t-1", 6.0)).await?;
    assert_eq!(again.len(), 1, "the next window lets one through");
    // Concurrent readings of one device in one window: exactly one passes.
    let gate = Arc::new(tokio::sync::Barrier::new(16));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let (f, gate) = (f.clone(), gate.clone());
        tasks.spawn(async move {
            gate.wait().await;
            f.invoke(device_event("t-9", f64::from(i))).await
        });
    }
    let mut total = 0;
    while let Some(out) = tasks.join_next().await {
        total += out??.len();
    }
    assert_eq!(total, 1);
    Ok(())
}

#[tokio::test]
async fn threshold_alert_raises_after_n_readings_above_and_resolves_once() -> anyhow::Result<()> {
    let (kv, _dir) = store(KvConfig::default())?;
    let mut spec = FunctionSpec::new("threshold-alert").with_kv(kv.clone(), "app", ["default"]);
    spec.config.insert("threshold".into(), "30".into());
    spec.config.insert("consecutive".into(), "3".into());
    let f = load(spec, artifacts::THRESHOLD_ALERT)?;
    let mut emitted = Vec::new();
    for value in [31.0, 32.0, 29.0, 31.0, 33.0, 35.0, 36.0, 20.0, 21.0] {
        for out in f.invoke(device_event("press-4", value)).await? {
            emitted.push((out.type_.clone(), json_data(&out)?["value"].clone()));
        }
    }
    // A dip at 29 resets the run; the alert comes with the third in a row.
    assert_eq!(
        emitted,
        [
            ("com.brink.alert.raised".to_owned(), json!(35.0)),
            ("com.brink.alert.resolved".to_owned(), json!(20.0)),
        ]
    );
    // Another device has its own state.
    assert!(f.invoke(device_event("press-5", 40.0)).await?.is_empty());
    let state = kv.bucket("app", "default")?.get("threshold/press-5")?;
    assert_eq!(
        state.as_deref(),
        Some(&br#"{"above":1,"alerting":false}"#[..])
    );
    Ok(())
}

#[tokio::test]
async fn enrich_adds_the_device_metadata_from_the_devices_bucket() -> anyhow::Result<()> {
    let (kv, _dir) = store(KvConfig::default())?;
    kv.bucket("app", "devices")?
        .set("t-1", br#"{"location":"line 3","model":"TMP117"}"#, None)?;
    let f = load(
        FunctionSpec::new("enrich").with_kv(kv.clone(), "app", ["devices"]),
        artifacts::ENRICH,
    )?;
    let out = f.invoke(device_event("t-1", 21.5)).await?;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].type_, "com.example.reading.enriched");
    assert_eq!(
        json_data(&out[0])?,
        json!({ "device": "t-1", "value": 21.5, "meta": { "location": "line 3", "model": "TMP117" } })
    );
    // Unknown devices pass unenriched, marked.
    let out = f.invoke(device_event("t-404", 1.0)).await?;
    assert_eq!(
        out[0].extensions.iter().find(|(k, _)| k == "enrichment"),
        Some(&("enrichment".to_owned(), "missing".to_owned()))
    );
    // ...or are dropped when configured so.
    let mut spec = FunctionSpec::new("enrich-strict").with_kv(kv.clone(), "app", ["devices"]);
    spec.config.insert("missing".into(), "drop".into());
    let strict = load(spec, artifacts::ENRICH)?;
    assert!(strict.invoke(device_event("t-404", 1.0)).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_component_built_against_the_released_0_1_0_contract_still_runs() -> anyhow::Result<()> {
    let f = load(FunctionSpec::new("old"), artifacts::FIXTURE_CONTRACT_0_1_0)?;
    let out = f.invoke(device_event("t-1", 1.0)).await?;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].type_, "com.example.reading.v010");
    Ok(())
}

#[tokio::test]
async fn the_admin_api_needs_the_token_when_one_is_set() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let text = format!(
        r#"brink_manifest_version = 1
data_dir = {data:?}
[http]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
token = "t0ken"

[function.enrich]
source = {enrich:?}
kv = ["devices"]
"#,
        data = dir.path().display().to_string(),
        enrich = artifacts::ENRICH,
    );
    let node = brink_tests::start_node(&text).await?;
    let admin = node
        .admin_addr()
        .ok_or_else(|| anyhow::anyhow!("no admin API"))?;
    let url = format!("http://{admin}/v1/kv/devices/t-1");
    let client = brink_tests::http();
    for token in [None, Some("wrong")] {
        let mut request = client.put(&url).body("{}");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers().get("content-type").map(|v| v.as_bytes()),
            Some(&b"application/problem+json"[..])
        );
    }
    assert_eq!(
        node.kv().map(|kv| kv.buckets("default")).transpose()?,
        Some(vec![])
    );
    let response = client
        .put(&url)
        .bearer_auth("t0ken")
        .body("{}")
        .send()
        .await?;
    assert_eq!(response.status(), 204);
    let response = client
        .get(format!("http://{admin}/v1/kv/devices"))
        .bearer_auth("t0ken")
        .send()
        .await?;
    assert_eq!(
        serde_json::from_slice::<Value>(&response.bytes().await?)?,
        json!({ "keys": ["t-1"], "cursor": null })
    );
    // The bucket's size is in /metrics: "t-1" (3) + header (1) + "{}" (2).
    let metrics = client
        .get(format!("http://{}/metrics", node.http_addr()))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("brink_kv_bucket_bytes{bucket=\"devices\"} 6"),
        "{metrics}"
    );
    node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn the_background_sweeper_removes_expired_keys_by_itself() -> anyhow::Result<()> {
    let (kv, _dir) = store(KvConfig::default())?;
    let bucket = kv.bucket("app", "default")?;
    for i in 0..50 {
        bucket.set(
            &format!("k{i}"),
            b"short-lived",
            Some(Duration::from_millis(20)),
        )?;
    }
    bucket.set("stays", b"v", None)?;
    let sweeper = kv.spawn_sweeper(Duration::from_millis(25));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // Only "stays" is left: 5 bytes of key, 1 of header, 1 of value.
    while bucket.size() != 7 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "size {}",
            bucket.size()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sweeper.abort();
    assert_eq!(bucket.list("", None)?, (vec!["stays".to_owned()], None));
    Ok(())
}

#[tokio::test]
async fn reading_a_bucket_that_does_not_exist_is_a_404_and_creates_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let text = format!(
        "brink_manifest_version = 1\ndata_dir = {:?}\n[http]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"t0ken\"\n\n[function.enrich]\nsource = {:?}\nkv = [\"devices\"]\n",
        dir.path().display().to_string(),
        artifacts::ENRICH,
    );
    let node = brink_tests::start_node(&text).await?;
    let admin = node
        .admin_addr()
        .ok_or_else(|| anyhow::anyhow!("no admin API"))?;
    let client = brink_tests::http();
    let buckets = || node.kv().map(|kv| kv.buckets("default")).transpose();
    let before = buckets()?;
    for i in 0..100 {
        let (method, path) = match i % 3 {
            0 => (reqwest::Method::GET, format!("/v1/kv/made-up-{i}")),
            1 => (reqwest::Method::GET, format!("/v1/kv/made-up-{i}/key")),
            _ => (reqwest::Method::DELETE, format!("/v1/kv/made-up-{i}/key")),
        };
        let response = client
            .request(method.clone(), format!("http://{admin}{path}"))
            .bearer_auth("t0ken")
            .send()
            .await?;
        assert_eq!(response.status(), 404, "{method} {path}");
        let problem: Value = serde_json::from_slice(&response.bytes().await?)?;
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("no bucket `made-up-")),
            "{problem}"
        );
    }
    assert_eq!(buckets()?, before, "reads created buckets");
    // A write creates the bucket; then it reads as any other.
    let url = format!("http://{admin}/v1/kv/made-up-0/k");
    let put = client
        .put(&url)
        .bearer_auth("t0ken")
        .body("v")
        .send()
        .await?;
    assert_eq!(put.status(), 204);
    let got = client.get(&url).bearer_auth("t0ken").send().await?;
    assert_eq!(got.status(), 200);
    assert_eq!(buckets()?.map(|b| b.len()), before.map(|b| b.len() + 1));
    node.shutdown().await?;
    Ok(())
}
