//! The node's link to the embedded broker: in-process by default, loopback
//! TCP with `[mqtt] link = "tcp"` (ADR 0003). Every other test that uses
//! the embedded broker runs over the in-process link too; these cover what
//! only a link can get wrong.

use brink_tests::mqtt::Client5;

use super::mqtt::{echo_app, embedded, metrics, numbers, publish_numbered};

/// How many events `function` handled from MQTT, by its metrics.
async fn handled(node: &brink_host::node::Node, function: &str) -> anyhow::Result<u64> {
    let text = metrics(node).await?;
    let prefix = format!(r#"brink_events_in_total{{function="{function}",trigger="mqtt"}}"#);
    Ok(text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0))
}

#[tokio::test]
async fn the_embedded_broker_over_loopback_tcp_absorbs_a_burst_with_nothing_lost()
-> anyhow::Result<()> {
    let (mqtt, _, v5) = embedded()?;
    let node = brink_tests::start_node(&echo_app(&format!("{mqtt}\nlink = \"tcp\""), 2)).await?;
    let mut out = Client5::connect(v5, &["out/#"]).await?;
    let mut producer = Client5::connect(v5, &[]).await?;
    // Beyond the router's 100 unacknowledged messages per connection.
    let n = 1000;
    publish_numbered(&mut producer, n).await?;
    let received = out.collect(n, 60).await;
    assert_eq!(numbers(&received).len(), n, "lost events over the TCP link");
    assert_eq!(handled(&node, "echo").await?, n as u64);
    node.shutdown().await
}

#[tokio::test]
async fn a_link_setting_beside_an_external_broker_is_refused_by_name() -> anyhow::Result<()> {
    let text = echo_app("url = \"mqtt://127.0.0.1:1\"\nlink = \"in-process\"", 1);
    let Err(e) = brink_host::manifest::Manifest::parse(&text, "brink.toml") else {
        anyhow::bail!("a link for an external broker was accepted");
    };
    assert!(format!("{e:#}").contains("mqtt.link"), "{e:#}");
    Ok(())
}

#[tokio::test]
async fn a_shared_subscription_splits_between_the_in_process_link_and_a_node_over_tcp()
-> anyhow::Result<()> {
    // The first node owns the embedded broker and is linked in-process; the
    // second joins it as a client on its MQTT 5 port. Both in one group.
    let (mqtt, _, v5) = embedded()?;
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let node = |dir: &tempfile::TempDir, mqtt: &str| {
        format!(
            "data_dir = {:?}\n{}",
            dir.path().display().to_string(),
            echo_app(&format!("{mqtt}\nshared_group = \"line-1\""), 8)
        )
    };
    let first = brink_tests::start_node(&node(&dirs[0], &mqtt)).await?;
    let joined = format!("url = \"mqtt://127.0.0.1:{v5}\"");
    let second = brink_tests::start_node(&node(&dirs[1], &joined)).await?;
    let mut out = Client5::connect(v5, &["out/#"]).await?;
    let mut producer = Client5::connect(v5, &[]).await?;
    let n = 400;
    publish_numbered(&mut producer, n).await?;
    let received = out.collect(n, 30).await;
    assert_eq!(numbers(&received).len(), n, "lost events");
    assert_eq!(received.len(), n, "a shared subscription delivered twice");
    let shares = [
        handled(&first, "echo").await?,
        handled(&second, "echo").await?,
    ];
    assert!(
        shares.iter().all(|&s| s > 0),
        "one node got nothing: {shares:?}"
    );
    assert_eq!(shares[0] + shares[1], n as u64);
    second.shutdown().await?;
    first.shutdown().await
}
