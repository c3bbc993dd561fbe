//! Components built for other hosts: `wasi:keyvalue@0.2.0-draft` (wasmtime's
//! keyvalue host, wasmCloud) and `wasi:config/store@0.2.0-draft-2024-09-27`
//! (Spin, wasmCloud), through a guest built with wit-bindgen alone.

use brink_host::bindings::CloudEvent;
use brink_host::kv::{Kv, KvConfig};
use brink_host::{Function, FunctionSpec};
use brink_tests::{artifacts, json_data, load, reading};
use serde_json::{Value, json};

fn draft_function(kv: &Kv, app: &str, buckets: &[&str]) -> anyhow::Result<Function> {
    load(
        FunctionSpec::new("draft").with_kv(kv.clone(), app, buckets.iter().copied()),
        artifacts::FIXTURE_OTHER_HOSTS,
    )
}

/// Runs `ops` in one invocation of `function`; the result of each.
async fn run(function: &Function, ops: Value) -> anyhow::Result<Vec<Value>> {
    let mut event: CloudEvent = reading("ops", "none", 0.0);
    event.data = Some(ops.to_string().into_bytes());
    let out = function.invoke(event).await?;
    let results = json_data(out.first().ok_or_else(|| anyhow::anyhow!("no output"))?)?;
    Ok(results.as_array().cloned().unwrap_or_default())
}

fn err_of(result: &Value) -> &str {
    result
        .get("err")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

#[tokio::test]
async fn a_keyvalue_draft_component_shares_its_buckets_with_draft2_ones() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let kv = Kv::open_sled(dir.path(), KvConfig::default())?;
    let draft = draft_function(&kv, "app", &["default"])?;
    let results = run(
        &draft,
        json!([
            { "op": "get", "key": "a" },
            { "op": "set", "key": "a", "value": "1" },
            { "op": "get", "key": "a" },
            { "op": "exists", "key": "a" },
            { "op": "increment", "key": "n", "delta": 5 },
            { "op": "set-many", "keys": ["b/1", "b/2"], "value": "x" },
            { "op": "get-many", "keys": ["a", "zz", "b/2"] },
            { "op": "delete-many", "keys": ["b/1"] },
            { "op": "delete", "key": "b/2" },
            { "op": "list-keys" },
        ]),
    )
    .await?;
    assert_eq!(
        results,
        vec![
            json!({ "ok": null }),
            json!({ "ok": null }),
            json!({ "ok": "1" }),
            json!({ "ok": true }),
            json!({ "ok": 5 }),
            json!({ "ok": null }),
            json!({ "ok": [["a", "1"], null, ["b/2", "x"]] }),
            json!({ "ok": null }),
            json!({ "ok": null }),
            json!({ "ok": { "keys": ["a", "n"], "cursor": null } }),
        ]
    );

    // The same bucket, as a draft2 component and the host see it.
    let draft2 = load(
        FunctionSpec::new("ops").with_kv(kv.clone(), "app", ["default"]),
        artifacts::FIXTURE_KV_OPS,
    )?;
    let seen = brink_tests::json_data(
        draft2
            .invoke({
                let mut e = reading("ops", "none", 0.0);
                e.data = Some(
                    json!([{ "op": "get", "key": "a" }, { "op": "increment", "key": "n", "delta": -10 }])
                        .to_string()
                        .into_bytes(),
                );
                e
            })
            .await?
            .first()
            .ok_or_else(|| anyhow::anyhow!("no output"))?,
    )?;
    assert_eq!(seen, json!([{ "ok": "1" }, { "ok": -5 }]));
    Ok(())
}

#[tokio::test]
async fn the_draft_cursor_pages_through_a_large_bucket_and_a_hostile_one_reads_nothing()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let kv = Kv::open_sled(dir.path(), KvConfig::default())?;
    let draft = draft_function(&kv, "app", &["default"])?;
    let keys: Vec<String> = (0..1500).map(|i| format!("k{i:05}")).collect();
    run(
        &draft,
        json!([{ "op": "set-many", "keys": keys, "value": "v" }]),
    )
    .await?;

    let mut listed = Vec::new();
    let mut cursor = Value::Null;
    let mut pages = 0;
    loop {
        let results = run(&draft, json!([{ "op": "list-keys", "cursor": cursor }])).await?;
        let page = results.first().and_then(|r| r.get("ok")).cloned();
        let page = page.ok_or_else(|| anyhow::anyhow!("list-keys failed: {results:?}"))?;
        listed.extend(
            page["keys"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| k.as_str().map(str::to_owned)),
        );
        pages += 1;
        cursor = page["cursor"].clone();
        if cursor.is_null() || pages > 10 {
            break;
        }
    }
    assert_eq!(pages, 2, "1,500 keys in pages of 1,000");
    assert_eq!(listed, keys, "every key once, in order");

    let past = run(
        &draft,
        json!([{ "op": "list-keys", "cursor": u64::MAX }, { "op": "list-keys", "cursor": 1499 }]),
    )
    .await?;
    assert_eq!(
        past,
        vec![
            json!({ "ok": { "keys": [], "cursor": null } }),
            json!({ "ok": { "keys": ["k01499"], "cursor": null } }),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn unsigned_draft_counters_refuse_what_they_cannot_hold() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let kv = Kv::open_sled(dir.path(), KvConfig::default())?;
    let draft = draft_function(&kv, "app", &["default"])?;
    let results = run(
        &draft,
        json!([
            { "op": "increment", "key": "n", "delta": u64::MAX },
            { "op": "set", "key": "neg", "value": "-3" },
            { "op": "increment", "key": "neg", "delta": 0 },
            { "op": "increment", "key": "n", "delta": 2 },
            { "op": "set", "key": "words", "value": "not a number" },
            { "op": "increment", "key": "words", "delta": 1 },
        ]),
    )
    .await?;
    assert!(
        err_of(&results[0]).contains("over the largest a counter holds"),
        "{results:?}"
    );
    assert!(err_of(&results[2]).contains("below zero"), "{results:?}");
    assert!(
        err_of(&results[2]).contains("wasi:keyvalue@0.2.0-draft2"),
        "{results:?}"
    );
    assert_eq!(
        results[3],
        json!({ "ok": 2 }),
        "the refused delta left the counter alone"
    );
    assert!(err_of(&results[5]).starts_with("other: "), "{results:?}");
    Ok(())
}

#[tokio::test]
async fn a_draft_component_opens_only_its_granted_buckets_and_within_the_limits()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = KvConfig {
        max_value_bytes: 1024,
        ..KvConfig::default()
    };
    let kv = Kv::open_sled(dir.path(), config)?;
    let draft = draft_function(&kv, "app", &["default"])?;
    let big = "x".repeat(2048);
    let results = run(
        &draft,
        json!([
            { "op": "set", "bucket": "secrets", "key": "k", "value": "v" },
            { "op": "set", "key": "big", "value": big },
            { "op": "exists", "key": "big" },
        ]),
    )
    .await?;
    assert_eq!(err_of(&results[0]), "access-denied", "{results:?}");
    assert!(err_of(&results[1]).starts_with("other: "), "{results:?}");
    assert_eq!(
        results[2],
        json!({ "ok": false }),
        "nothing of the refused value was kept"
    );

    let err = load(
        FunctionSpec::new("ungranted"),
        artifacts::FIXTURE_OTHER_HOSTS,
    )
    .err()
    .map(|e| format!("{e:#}"))
    .unwrap_or_default();
    assert!(
        err.contains("imports `wasi:keyvalue/") && err.contains("@0.2.0-draft`"),
        "{err}"
    );
    assert!(err.contains("kv = [\"default\"]"), "{err}");
    Ok(())
}

#[tokio::test]
async fn wasi_config_store_reads_the_values_of_the_functions_spec() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let kv = Kv::open_sled(dir.path(), KvConfig::default())?;
    let mut spec = FunctionSpec::new("configured").with_kv(kv, "app", ["default"]);
    spec.config.insert("zone".into(), "line-3".into());
    spec.config.insert("greeting".into(), "hello".into());
    let function = load(spec, artifacts::FIXTURE_OTHER_HOSTS)?;
    let results = run(
        &function,
        json!([
            { "op": "config-get", "key": "zone" },
            { "op": "config-get", "key": "missing" },
            { "op": "config-get-all" },
        ]),
    )
    .await?;
    assert_eq!(
        results,
        vec![
            json!({ "ok": "line-3" }),
            json!({ "ok": null }),
            json!({ "ok": [["greeting", "hello"], ["zone", "line-3"]] }),
        ]
    );
    Ok(())
}
