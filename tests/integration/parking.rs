//! An uplink that refuses one event for good: the event is parked with its
//! reason, and the queue behind it goes on, in order. Transient failures
//! (5xx, 429) are still retried, never parked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use brink_host::node::Node;
use brink_tests::reading;
use serde_json::Value;

/// An HTTP sink that refuses events of type `poison` with `refusal` (while
/// `refusing`), answers 503 to the first `flaky` attempts at events of type
/// `flaky`, and keeps the ids of everything it accepted, in order.
#[derive(Clone)]
struct Picky {
    refusal: StatusCode,
    refusing: Arc<std::sync::atomic::AtomicBool>,
    /// Answers 500 to everything while set: an uplink that is failing.
    failing: Arc<std::sync::atomic::AtomicBool>,
    flaky: Arc<AtomicU64>,
    attempts: Arc<AtomicU64>,
    accepted: Arc<Mutex<Vec<String>>>,
}

impl Picky {
    fn new(refusal: StatusCode) -> Self {
        Self {
            refusal,
            refusing: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            failing: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            flaky: Arc::new(AtomicU64::new(2)),
            attempts: Arc::new(AtomicU64::new(0)),
            accepted: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn accepted(&self) -> Vec<String> {
        self.accepted.lock().map(|a| a.clone()).unwrap_or_default()
    }
}

async fn start_picky(sink: Picky) -> anyhow::Result<String> {
    async fn ingest(
        axum::extract::State(sink): axum::extract::State<Picky>,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        sink.attempts.fetch_add(1, Ordering::Relaxed);
        // Binary mode carries one event in headers; batched mode a JSON array.
        let events: Vec<(String, String)> = match headers.get("ce-id") {
            Some(id) => vec![(
                String::from_utf8_lossy(id.as_bytes()).into_owned(),
                headers
                    .get("ce-type")
                    .map(|t| String::from_utf8_lossy(t.as_bytes()).into_owned())
                    .unwrap_or_default(),
            )],
            None => match serde_json::from_slice::<Value>(&body) {
                Ok(Value::Array(events)) => events
                    .iter()
                    .map(|e| {
                        let text = |f: &str| e[f].as_str().unwrap_or_default().to_owned();
                        (text("id"), text("type"))
                    })
                    .collect(),
                _ => return StatusCode::UNSUPPORTED_MEDIA_TYPE,
            },
        };
        if sink.failing.load(Ordering::Relaxed) {
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
        if sink.refusing.load(Ordering::Relaxed) && events.iter().any(|(_, t)| t == "poison") {
            return sink.refusal;
        }
        if events.iter().any(|(_, t)| t == "flaky")
            && sink
                .flaky
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
        {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        if let Ok(mut accepted) = sink.accepted.lock() {
            accepted.extend(events.into_iter().map(|(id, _)| id));
        }
        StatusCode::ACCEPTED
    }
    let app = axum::Router::new()
        .route("/ingest", axum::routing::post(ingest))
        .with_state(sink);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/ingest", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// A node whose uplink `cloud` posts to a [`Picky`] sink (`settings` added
/// to the uplink), with `ids` queued: each of the type before its `-`.
async fn picky_node(
    refusal: StatusCode,
    settings: &str,
    ids: &[&str],
) -> anyhow::Result<(Picky, Node, brink_host::outbox::Outbox, tempfile::TempDir)> {
    let sink = Picky::new(refusal);
    let url = start_picky(sink.clone()).await?;
    let dir = tempfile::tempdir()?;
    let (node, outbox) = crate::outbox::uplink_node(
        dir.path(),
        &format!("http = {url:?}\nmax_delay_ms = 100\n{settings}"),
    )
    .await?;
    for id in ids {
        let ty = id.split('-').next().unwrap_or(id);
        outbox.send("cloud", &event(id, ty), 5, None).await?;
    }
    Ok((sink, node, outbox, dir))
}

fn event(id: &str, ty: &str) -> brink_host::bindings::CloudEvent {
    let mut e = reading(id, "d", 1.0);
    e.type_ = ty.to_owned();
    e
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn admin(node: &Node, method: reqwest::Method, path: &str) -> anyhow::Result<Value> {
    let addr = node
        .admin_addr()
        .ok_or_else(|| anyhow::anyhow!("no admin"))?;
    let response = brink_tests::http()
        .request(method, format!("http://{addr}{path}"))
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    Ok(serde_json::from_slice(&response.bytes().await?)?)
}

#[tokio::test]
async fn an_event_the_http_uplink_refuses_is_parked_and_every_later_event_arrives_in_order()
-> anyhow::Result<()> {
    // Binary mode pinpoints the event; batched mode bisects the batch to find it.
    for (settings, refusal) in [
        ("", StatusCode::BAD_REQUEST),
        (
            "batched = true\nmax_batch = 8",
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ] {
        let ids = ["a", "b", "poison-1", "c", "flaky-1", "d", "e", "f"];
        let (sink, node, outbox, _dir) = picky_node(refusal, settings, &ids).await?;
        wait_for("the good events", || sink.accepted().len() >= 7).await?;
        let good: Vec<&str> = ids.into_iter().filter(|id| *id != "poison-1").collect();
        assert_eq!(sink.accepted(), good, "{settings}");
        let status = &outbox.status()[0];
        assert_eq!(
            (
                status.backlog_events,
                status.parked_events,
                status.parked_total
            ),
            (0, 1, 1),
            "{settings}"
        );
        assert!(status.connected);
        // 503 is transient: the flaky event was retried, not parked.
        assert!(status.retried >= 1, "{status:?}");

        // The parked event, its reason and when, through the admin API and /metrics.
        let parked = admin(&node, reqwest::Method::GET, "/v1/outbox/cloud/parked").await?;
        let list = parked["parked"].as_array().cloned().unwrap_or_default();
        assert_eq!(list.len(), 1, "{parked}");
        assert_eq!(list[0]["id"], "poison-1");
        let reason = list[0]["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(refusal.as_str()), "{reason}");
        assert!(list[0]["parked_ms"].as_u64().unwrap_or(0) > 0);
        let metrics = brink_tests::http()
            .get(format!("http://{}/metrics", node.http_addr()))
            .send()
            .await?
            .text()
            .await?;
        assert!(
            metrics.contains("brink_outbox_parked_total{uplink=\"cloud\"} 1"),
            "{metrics}"
        );

        // Once the uplink takes it, `retry` sends it; it was not lost.
        sink.refusing.store(false, Ordering::Relaxed);
        let moved = admin(
            &node,
            reqwest::Method::POST,
            "/v1/outbox/cloud/parked/retry",
        )
        .await?;
        assert_eq!(moved["moved"], 1);
        wait_for("the retried event", || sink.accepted().len() == 8).await?;
        assert_eq!(sink.accepted().last().map(String::as_str), Some("poison-1"));
        assert_eq!(outbox.status()[0].parked_events, 0);
        node.shutdown().await?;
    }
    Ok(())
}

#[tokio::test]
async fn parked_events_survive_a_restart_and_purge_drops_them() -> anyhow::Result<()> {
    let sink = Picky::new(StatusCode::UNPROCESSABLE_ENTITY);
    let url = start_picky(sink.clone()).await?;
    let dir = tempfile::tempdir()?;
    let settings = format!("http = {url:?}\nmax_delay_ms = 10");
    {
        let (node, outbox) = crate::outbox::uplink_node(dir.path(), &settings).await?;
        outbox.send("cloud", &event("p", "poison"), 5, None).await?;
        outbox.send("cloud", &event("ok", "fine"), 5, None).await?;
        wait_for("the good event", || sink.accepted().len() == 1).await?;
        wait_for("parking", || outbox.status()[0].parked_events == 1).await?;
        node.shutdown().await?;
    }
    let (node, outbox) = crate::outbox::uplink_node(dir.path(), &settings).await?;
    assert_eq!(outbox.status()[0].parked_events, 1);
    let parked = outbox.parked("cloud")?;
    assert_eq!(parked.len(), 1);
    assert!(parked[0].reason.contains("422"), "{}", parked[0].reason);
    // A bad action or an unknown uplink is the caller's error, not the node's.
    let addr = node
        .admin_addr()
        .ok_or_else(|| anyhow::anyhow!("no admin"))?;
    for (path, code) in [
        ("/v1/outbox/cloud/parked/explode", 404),
        ("/v1/outbox/nowhere/parked/retry", 404),
    ] {
        let status = brink_tests::http()
            .post(format!("http://{addr}{path}"))
            .send()
            .await?
            .status();
        assert_eq!(status.as_u16(), code, "{path}");
    }
    let bad = brink_tests::http()
        .post(format!("http://{addr}/v1/outbox/cloud/parked/purge"))
        .body("{\"seqs\": \"all\"}")
        .send()
        .await?;
    assert_eq!(bad.status().as_u16(), 400);
    assert_eq!(
        outbox.status()[0].parked_events,
        1,
        "a bad request drops nothing"
    );
    let purged = admin(
        &node,
        reqwest::Method::POST,
        "/v1/outbox/cloud/parked/purge",
    )
    .await?;
    assert_eq!(purged["purged"], 1);
    assert!(outbox.parked("cloud")?.is_empty());
    node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn events_over_the_mqtt_uplinks_limits_are_parked_and_the_rest_arrive_in_order()
-> anyhow::Result<()> {
    // The broker says in its CONNACK that it takes packets of 8 kB at most.
    let broker = brink_tests::mqtt::Mosquitto::start_with("max_packet_size 8192\n")?;
    let mut cloud = brink_tests::mqtt::Client5::connect(broker.port, &["edge/#"]).await?;
    let dir = tempfile::tempdir()?;
    let (node, outbox) = crate::outbox::uplink_node(
        dir.path(),
        &format!(
            "mqtt = \"mqtt://127.0.0.1:{}\"\ntopic = \"edge/{{type}}\"\nmax_event_kb = 96\nmax_delay_ms = 10",
            broker.port
        ),
    )
    .await?;
    let with_data = |id: &str, bytes: usize| {
        let mut e = event(id, "fine");
        e.data = Some(format!("{{\"v\":\"{}\"}}", "x".repeat(bytes)).into_bytes());
        e
    };
    let events = [
        event("a", "fine"),
        // A 70 kB type makes a topic longer than MQTT can carry.
        event("long-topic", &"t".repeat(70_000)),
        event("b", "fine"),
        // Over the uplink's own max_event_kb.
        with_data("over-kb", 100_000),
        // Under max_event_kb, but over the broker's maximum packet size.
        with_data("over-packet", 10_000),
        event("c", "fine"),
        event("d", "fine"),
        event("e", "fine"),
    ];
    for e in &events {
        outbox.send("cloud", e, 5, None).await?;
    }
    let got = cloud.collect(5, 30).await;
    let ids: Vec<String> = got
        .iter()
        .map(|m| Ok(m.json()?["id"].as_str().unwrap_or_default().to_owned()))
        .collect::<anyhow::Result<_>>()?;
    assert_eq!(ids, ["a", "b", "c", "d", "e"]);
    // The subscriber may have the last events before the node has their
    // PUBACKs and removes them from the queue.
    wait_for("parking and the acks", || {
        let status = &outbox.status()[0];
        status.parked_events == 3 && status.backlog_events == 0
    })
    .await?;
    let status = &outbox.status()[0];
    assert!(
        status.connected,
        "refused events do not take the uplink down"
    );
    let reasons: Vec<(String, String)> = outbox
        .parked("cloud")?
        .iter()
        .map(|p| Ok((p.entry.event()?.id, p.reason.clone())))
        .collect::<anyhow::Result<_>>()?;
    let expected = [
        ("long-topic", "over MQTT's limit of 65535"),
        ("over-kb", "max_event_kb"),
        ("over-packet", "maximum packet size of 8192"),
    ];
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    for ((id, reason), (want_id, want)) in reasons.iter().zip(expected) {
        assert!(id == want_id && reason.contains(want), "{reasons:?}");
    }
    // Nothing more arrives: the refused events were never half-sent.
    assert!(cloud.quiet_for(300).await.is_none());
    node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn an_event_the_uplink_fails_again_and_again_is_parked_but_a_failing_uplink_parks_nothing()
-> anyhow::Result<()> {
    // The sink answers 500 to any request with the poisoned event in it,
    // and takes the rest: in binary mode, and in batches it must bisect.
    // Attempts until the forwarder has probed once: 3 failures of the first
    // event and the probe; batched, 3 of the batch and 1 of its half first.
    for (settings, to_probe) in [("", 4), ("batched = true\nmax_batch = 8", 8)] {
        let ids = ["a", "b", "poison-1", "c", "d", "e"];
        let (sink, node, outbox, _dir) =
            picky_node(StatusCode::INTERNAL_SERVER_ERROR, settings, &ids).await?;
        wait_for("the poisoned event parked", || {
            let status = &outbox.status()[0];
            status.parked_events == 1 && status.backlog_events == 0
        })
        .await?;
        assert_eq!(sink.accepted(), ["a", "b", "c", "d", "e"], "{settings}");
        let parked = outbox.parked("cloud")?;
        assert_eq!(parked.len(), 1);
        assert!(
            parked[0].reason.contains("500"),
            "{settings}: {}",
            parked[0].reason
        );

        // An uplink that fails everything parks nothing: the events wait.
        sink.failing.store(true, Ordering::Relaxed);
        for id in ["f", "g", "h", "i"] {
            outbox.send("cloud", &event(id, "fine"), 5, None).await?;
        }
        let before = sink.attempts.load(Ordering::Relaxed);
        wait_for("enough failed attempts to probe", || {
            sink.attempts.load(Ordering::Relaxed) >= before + to_probe
        })
        .await?;
        let status = &outbox.status()[0];
        assert_eq!(
            (status.parked_events, status.backlog_events),
            (1, 4),
            "{settings}: a failing uplink parked events"
        );
        sink.failing.store(false, Ordering::Relaxed);
        wait_for("the backlog after the recovery", || {
            outbox.status()[0].backlog_events == 0
        })
        .await?;
        assert_eq!(
            sink.accepted(),
            ["a", "b", "c", "d", "e", "f", "g", "h", "i"],
            "{settings}"
        );
        node.shutdown().await?;
    }
    Ok(())
}
