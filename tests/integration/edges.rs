//! Exact at the edges: CloudEvents come out as they went in, and input that
//! breaks CloudEvents 1.0 is refused as the sender's fault (400 over HTTP,
//! a dead letter naming the attribute over MQTT), never blamed on the
//! function.

use std::time::Duration;

use brink_tests::artifacts;
use brink_tests::assert_problem;
use brink_tests::mqtt::{Client5, free_port};
use reqwest::StatusCode;

const STRUCTURED: &str = "application/cloudevents+json";
const BATCH: &str = "application/cloudevents-batch+json";

/// `echo` on the HTTP listener (`/echo` and `POST /functions/echo`) with a
/// small body limit.
async fn echo_node() -> anyhow::Result<(brink_host::node::Node, String)> {
    let text = format!(
        "brink_manifest_version = 1\n[http]\nlisten = \"127.0.0.1:0\"\nmax_body_kb = 4\n\n[function.echo]\nsource = {:?}\ntriggers = [{{ http = \"/echo\" }}]\n",
        artifacts::ECHO
    );
    let node = brink_tests::start_node(&text).await?;
    let base = format!("http://{}", node.http_addr());
    Ok((node, base))
}

fn structured(members: &str) -> String {
    format!(r#"{{"specversion":"1.0",{members}}}"#)
}

#[tokio::test]
async fn events_that_break_cloudevents_are_refused_with_400_naming_the_attribute_on_both_routes()
-> anyhow::Result<()> {
    let (node, base) = echo_node().await?;
    let client = brink_tests::http();
    let bad = [
        (
            structured(r#""id":"","source":"/s","type":"t""#),
            "attribute `id` is empty",
        ),
        (
            structured(r#""id":"1","source":"","type":"t""#),
            "attribute `source` is empty",
        ),
        (
            structured(r#""id":"1","source":"/s","type":"""#),
            "attribute `type` is empty",
        ),
        (
            structured(r#""id":"1","source":"/s","type":"t","Bad_Name":"x""#),
            "`Bad_Name`",
        ),
        (
            r#"{"specversion":"0.3","id":"1","source":"/s","type":"t"}"#.to_owned(),
            "reads CloudEvents \"1.0\" only",
        ),
        (
            structured(r#""id":"1","source":"/s","type":"t","time":"yesterday""#),
            "attribute `time`",
        ),
    ];
    for path in ["/events/echo", "/functions/echo"] {
        for (body, needle) in &bad {
            let response = client
                .post(format!("{base}{path}"))
                .header("content-type", STRUCTURED)
                .body(body.clone())
                .send()
                .await?;
            assert_problem(response, StatusCode::BAD_REQUEST, needle).await?;
            // Batched mode, on the route that takes batches.
            if path == "/events/echo" {
                let response = client
                    .post(format!("{base}{path}"))
                    .header("content-type", BATCH)
                    .body(format!("[{body}]"))
                    .send()
                    .await?;
                assert_problem(response, StatusCode::BAD_REQUEST, needle).await?;
            }
        }
        for (header, value, needle) in [
            ("ce-id", "", "header `ce-id` is empty"),
            ("ce-source", "", "header `ce-source` is empty"),
            ("ce-type", "", "header `ce-type` is empty"),
            ("ce-specversion", "0.3", "reads CloudEvents \"1.0\" only"),
            ("ce-time", "noon", "header `ce-time`"),
        ] {
            let mut request = client
                .post(format!("{base}{path}"))
                .header("content-type", "application/json")
                .body("{}");
            for (name, default) in [
                ("ce-specversion", "1.0"),
                ("ce-id", "b-1"),
                ("ce-source", "/s"),
                ("ce-type", "t"),
            ] {
                if name != header {
                    request = request.header(name, default);
                }
            }
            let response = request.header(header, value).send().await?;
            assert_problem(response, StatusCode::BAD_REQUEST, needle).await?;
        }
    }
    // Refused events are the sender's fault: the function's error count stays zero.
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        !metrics.contains("brink_errors_total{function=\"echo\""),
        "{metrics}"
    );
    node.shutdown().await
}

#[tokio::test]
async fn an_echo_gives_back_json_data_byte_for_byte_and_the_schema_as_sent() -> anyhow::Result<()> {
    let (node, base) = echo_node().await?;
    let client = brink_tests::http();
    let data = r#"{"z": 123456789012345678901234567890, "a": [1.50, 2e3], "m": {"y": 1, "b": 2}}"#;
    let response = client
        .post(format!("{base}/functions/echo"))
        .header("content-type", STRUCTURED)
        .body(structured(&format!(
            r#""id":"x-1","source":"/s","type":"t","dataschema":"https://Example.COM","data":{data}"#
        )))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    // No datacontenttype: the JSON format implies JSON, and binary mode says so.
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["ce-dataschema"], "https://Example.COM");
    assert_eq!(response.text().await?, data);
    node.shutdown().await
}

#[tokio::test]
async fn an_output_without_data_has_no_body_and_no_content_type() -> anyhow::Result<()> {
    let (node, base) = echo_node().await?;
    let response = brink_tests::http()
        .post(format!("{base}/functions/echo"))
        .header("content-type", STRUCTURED)
        .body(structured(r#""id":"x-2","source":"/s","type":"t""#))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["ce-id"], "x-2");
    assert!(
        response.headers().get("content-type").is_none(),
        "{:?}",
        response.headers()
    );
    assert!(response.bytes().await?.is_empty());
    node.shutdown().await
}

#[tokio::test]
async fn unknown_routes_oversized_bodies_and_other_formats_get_problems_that_say_why()
-> anyhow::Result<()> {
    let (node, base) = echo_node().await?;
    let client = brink_tests::http();
    let missing = client.get(format!("{base}/nowhere")).send().await?;
    assert_problem(missing, StatusCode::NOT_FOUND, "/nowhere").await?;
    let wrong_method = client.get(format!("{base}/events/echo")).send().await?;
    assert_problem(wrong_method, StatusCode::METHOD_NOT_ALLOWED, "GET").await?;
    let too_big = client
        .post(format!("{base}/events/echo"))
        .header("content-type", STRUCTURED)
        .body(vec![b' '; 8 * 1024])
        .send()
        .await?;
    assert_problem(
        too_big,
        StatusCode::PAYLOAD_TOO_LARGE,
        "[http] max_body_kb = 4",
    )
    .await?;
    let xml = client
        .post(format!("{base}/events/echo"))
        .header("content-type", "application/cloudevents+xml")
        .body("<event/>")
        .send()
        .await?;
    assert_problem(
        xml,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "application/cloudevents+json",
    )
    .await?;
    node.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_keeps_typed_extensions_and_raw_data_and_dead_letters_invalid_events_naming_why()
-> anyhow::Result<()> {
    let (v4, v5) = (free_port()?, free_port()?);
    let text = format!(
        "brink_manifest_version = 1\n[http]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nlisten = \"127.0.0.1:{v4}\"\nlisten_v5 = \"127.0.0.1:{v5}\"\nprotocol = \"v5\"\noutput_mode = \"structured\"\n\n[function.echo]\nsource = {:?}\ntriggers = [{{ mqtt = \"in/#\" }}]\noutputs = [{{ mqtt = \"out/{{id}}\" }}]\n",
        artifacts::ECHO
    );
    let node = brink_tests::start_node(&text).await?;
    let mut out = Client5::connect(v5, &["out/#"]).await?;
    let mut dead = Client5::connect(v5, &["brink/dead-letter/#"]).await?;
    let device = Client5::connect(v5, &[]).await?;
    let data = r#"{"n": 123456789012345678901234567890, "b": 1, "a": 2}"#;
    device
        .publish(
            "in/1",
            structured(&format!(
                r#""id":"t-1","source":"/s","type":"t","exint":42,"exbool":true,"exstr":"42","data":{data}"#
            )),
            Some(STRUCTURED),
            &[],
        )
        .await?;
    let echoed = out.next(20).await?;
    let payload = String::from_utf8(echoed.payload.clone())?;
    assert!(payload.contains(r#""exint":42"#), "{payload}");
    assert!(payload.contains(r#""exbool":true"#), "{payload}");
    assert!(payload.contains(r#""exstr":"42""#), "{payload}");
    assert!(payload.contains(&format!(r#""data":{data}"#)), "{payload}");

    device
        .publish(
            "in/2",
            structured(r#""id":"t-2","source":"","type":"t""#),
            Some(STRUCTURED),
            &[],
        )
        .await?;
    let letter = dead.next(20).await?;
    assert_eq!(letter.topic, "brink/dead-letter/echo");
    let error = letter.json()?["brinkerror"].as_str().map(str::to_owned);
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("attribute `source` is empty")),
        "{error:?}"
    );
    assert!(out.quiet_for(300).await.is_none());
    tokio::time::timeout(Duration::from_secs(30), node.shutdown()).await?
}
