//! Instance reuse: fresh instances by default, warm ones only where a
//! function's spec allows, and never an instance that failed.

use brink_host::FunctionSpec;
use brink_host::bindings::CloudEvent;
use brink_host::error::InvokeError;
use brink_tests::{artifacts, json_data, load, reading};

fn counter(instance_reuse: u32) -> anyhow::Result<brink_host::Function> {
    load(
        FunctionSpec {
            instance_reuse,
            ..FunctionSpec::new("counter")
        },
        artifacts::FIXTURE_COUNTER,
    )
}

/// The number of events the instance that handled `event` has seen.
async fn calls(function: &brink_host::Function, event: CloudEvent) -> anyhow::Result<u64> {
    let out = function.invoke(event).await?;
    anyhow::ensure!(out.len() == 1, "one output expected, got {out:?}");
    json_data(&out[0])?["calls"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no `calls` in {out:?}"))
}

#[tokio::test]
async fn by_default_every_event_gets_a_fresh_instance() -> anyhow::Result<()> {
    let counter = counter(1)?;
    for i in 0..4 {
        assert_eq!(
            calls(&counter, reading(&format!("c-{i}"), "t-1", 1.0)).await?,
            1
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_function_allowed_reuse_keeps_warm_instances_up_to_its_limit() -> anyhow::Result<()> {
    let counter = counter(3)?;
    let mut seen = Vec::new();
    for i in 0..7 {
        seen.push(calls(&counter, reading(&format!("c-{i}"), "t-1", 1.0)).await?);
    }
    // Three events per instance, then a fresh one.
    assert_eq!(seen, [1, 2, 3, 1, 2, 3, 1]);
    Ok(())
}

#[tokio::test]
async fn an_instance_that_trapped_is_never_reused() -> anyhow::Result<()> {
    let counter = counter(100)?;
    assert_eq!(calls(&counter, reading("c-1", "t-1", 1.0)).await?, 1);
    assert_eq!(calls(&counter, reading("c-2", "t-1", 1.0)).await?, 2);
    let mut bad = reading("c-3", "t-1", 1.0);
    bad.type_ = "com.example.trap".into();
    match counter.invoke(bad).await {
        Err(InvokeError::Trap { panic, .. }) => {
            assert_eq!(panic.as_deref(), Some("asked to trap on call 3"));
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    // The next event starts over on a fresh instance.
    assert_eq!(calls(&counter, reading("c-4", "t-1", 1.0)).await?, 1);
    assert_eq!(calls(&counter, reading("c-5", "t-1", 1.0)).await?, 2);
    Ok(())
}

#[tokio::test]
async fn concurrent_events_on_a_reusing_function_each_get_their_own_instance() -> anyhow::Result<()>
{
    let counter = counter(1_000)?;
    let handles: Vec<_> = (0..64)
        .map(|i| {
            let counter = counter.clone();
            tokio::spawn(
                async move { calls(&counter, reading(&format!("c-{i}"), "t-1", 1.0)).await },
            )
        })
        .collect();
    let mut per_count = std::collections::BTreeMap::<u64, usize>::new();
    for handle in handles {
        *per_count.entry(handle.await??).or_default() += 1;
    }
    // Each instance handled its events one after another, counting 1, 2, …
    // so no count is seen more often than the one below it.
    let counts: Vec<usize> = per_count.values().copied().collect();
    assert_eq!(per_count.keys().next(), Some(&1), "{per_count:?}");
    assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{per_count:?}");
    assert_eq!(counts.iter().sum::<usize>(), 64);
    // And a warm instance is reused afterwards.
    assert!(calls(&counter, reading("c-last", "t-1", 1.0)).await? > 1);
    Ok(())
}
