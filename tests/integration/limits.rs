//! Hostile guests hit their limits with clear errors, and the host keeps serving.

use std::time::Duration;

use brink_host::error::InvokeError;
use brink_host::{FunctionSpec, Limits};
use brink_tests::{artifacts, load, reading};

fn limited(name: &str, limits: Limits) -> FunctionSpec {
    FunctionSpec {
        limits,
        ..FunctionSpec::new(name)
    }
}

/// The host still runs an ordinary function correctly.
async fn host_still_serves() -> anyhow::Result<()> {
    let echo = load(FunctionSpec::new("echo"), artifacts::ECHO)?;
    let input = reading("after", "t-1", 1.0);
    assert_eq!(echo.invoke(input.clone()).await?, vec![input]);
    Ok(())
}

#[tokio::test]
async fn an_infinite_loop_is_ended_at_its_deadline_and_the_host_keeps_serving() -> anyhow::Result<()>
{
    let spin = load(
        limited(
            "spin",
            Limits {
                timeout: Duration::from_millis(100),
                ..Limits::default()
            },
        ),
        artifacts::FIXTURE_SPIN_LOOP,
    )?;
    for i in 0..3 {
        match spin.invoke(reading(&format!("s-{i}"), "t-1", 1.0)).await {
            Err(e @ InvokeError::Timeout { .. }) => {
                assert_eq!(
                    e.to_string(),
                    "function `spin` exceeded its time limit of 100 ms"
                );
                assert_eq!(e.kind(), "timeout");
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
    }
    host_still_serves().await
}

#[tokio::test]
async fn a_guest_sleeping_inside_a_host_call_is_ended_at_its_deadline() -> anyhow::Result<()> {
    let sleeper = load(
        limited(
            "sleeper",
            Limits {
                timeout: Duration::from_millis(100),
                ..Limits::default()
            },
        ),
        artifacts::FIXTURE_SLEEP,
    )?;
    let err = sleeper.invoke(reading("z-1", "t-1", 1.0)).await.err();
    assert!(matches!(err, Some(InvokeError::Timeout { .. })), "{err:?}");
    host_still_serves().await
}

#[tokio::test(flavor = "current_thread")]
async fn a_looping_guest_does_not_starve_other_events_on_its_thread() -> anyhow::Result<()> {
    let spin = load(
        limited(
            "spin",
            Limits {
                timeout: Duration::from_secs(5),
                ..Limits::default()
            },
        ),
        artifacts::FIXTURE_SPIN_LOOP,
    )?;
    let echo = load(FunctionSpec::new("echo"), artifacts::ECHO)?;
    // One thread: the echo can only finish if the spinning guest yields.
    let spinning = tokio::spawn(async move { spin.invoke(reading("s", "t-1", 1.0)).await });
    tokio::task::yield_now().await;
    for i in 0..5 {
        assert_eq!(
            echo.invoke(reading(&format!("e-{i}"), "t-2", 2.0))
                .await?
                .len(),
            1
        );
    }
    assert!(
        !spinning.is_finished(),
        "the spinning guest ended before its 5 s deadline"
    );
    spinning.abort();
    Ok(())
}

#[tokio::test]
async fn a_memory_bomb_is_stopped_at_its_memory_cap() -> anyhow::Result<()> {
    let bomb = load(
        limited(
            "bomb",
            Limits {
                memory_bytes: 16 << 20,
                ..Limits::default()
            },
        ),
        artifacts::FIXTURE_MEMORY_BOMB,
    )?;
    match bomb.invoke(reading("m-1", "t-1", 1.0)).await {
        Err(InvokeError::MemoryLimit {
            limit, requested, ..
        }) => {
            assert_eq!(limit, 16 << 20);
            assert!(requested > limit);
        }
        other => panic!("expected the memory limit, got {other:?}"),
    }
    host_still_serves().await
}

#[tokio::test]
async fn a_memory_limit_below_the_guests_initial_memory_fails_at_instantiation()
-> anyhow::Result<()> {
    let echo = load(
        limited(
            "tiny",
            Limits {
                memory_bytes: 1 << 20,
                ..Limits::default()
            },
        ),
        artifacts::ECHO,
    )?;
    let err = echo.invoke(reading("x", "t-1", 1.0)).await.err();
    assert!(
        matches!(err, Some(InvokeError::MemoryLimit { .. })),
        "{err:?}"
    );
    host_still_serves().await
}

#[tokio::test]
async fn a_guest_panic_is_reported_as_a_trap_with_its_message() -> anyhow::Result<()> {
    let trap = load(FunctionSpec::new("trap"), artifacts::FIXTURE_TRAP)?;
    match trap.invoke(reading("p-1", "t-1", 1.0)).await {
        Err(e @ InvokeError::Trap { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("unreachable"), "{msg}");
            assert!(
                msg.contains("calibration table for /factory/line-1/sensors is missing"),
                "{msg}"
            );
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    host_still_serves().await
}

#[tokio::test]
async fn output_over_the_limit_is_refused() -> anyhow::Result<()> {
    let echo = load(
        limited(
            "echo",
            Limits {
                max_output_bytes: 1024,
                ..Limits::default()
            },
        ),
        artifacts::ECHO,
    )?;
    let mut big = reading("big", "t-1", 1.0);
    big.datacontenttype = Some("application/octet-stream".into());
    big.data = Some(vec![7; 4096]);
    match echo.invoke(big).await {
        Err(InvokeError::OutputTooLarge { size, limit, .. }) => {
            assert_eq!(limit, 1024);
            assert!(size > 4096);
        }
        other => panic!("expected the output limit, got {other:?}"),
    }
    host_still_serves().await
}

#[tokio::test]
async fn an_invalid_output_event_is_refused_with_the_reason() -> anyhow::Result<()> {
    let echo = load(FunctionSpec::new("echo"), artifacts::ECHO)?;
    let mut bad = reading("bad", "t-1", 1.0);
    bad.extensions = vec![("Not-Valid".into(), "x".into())];
    match echo.invoke(bad).await {
        Err(InvokeError::InvalidOutput { index, reason, .. }) => {
            assert_eq!(index, 0);
            assert!(reason.contains("Not-Valid"), "{reason}");
        }
        other => panic!("expected an invalid output, got {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_and_healthy_invocations_run_side_by_side() -> anyhow::Result<()> {
    let short = Limits {
        timeout: Duration::from_millis(200),
        memory_bytes: 16 << 20,
        ..Limits::default()
    };
    let spin = load(limited("spin", short.clone()), artifacts::FIXTURE_SPIN_LOOP)?;
    // The bomb must reach its memory cap before its deadline, whatever else
    // the machine runs meanwhile: its CPU is shared fairly with the spinners
    // (and with other tests' guests), so it gets a deadline of its own.
    let bomb = load(
        limited(
            "bomb",
            Limits {
                timeout: Duration::from_secs(5),
                ..short.clone()
            },
        ),
        artifacts::FIXTURE_MEMORY_BOMB,
    )?;
    let trap = load(limited("trap", short), artifacts::FIXTURE_TRAP)?;
    let echo = load(FunctionSpec::new("echo"), artifacts::ECHO)?;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (spin, bomb, trap, echo) = (spin.clone(), bomb.clone(), trap.clone(), echo.clone());
        tasks.push(tokio::spawn(async move {
            let ev = reading(&format!("x-{i}"), "t-1", 1.0);
            (
                spin.invoke(ev.clone()).await.err().map(|e| e.kind()),
                bomb.invoke(ev.clone()).await.err().map(|e| e.kind()),
                trap.invoke(ev.clone()).await.err().map(|e| e.kind()),
                echo.invoke(ev.clone()).await.map(|o| o == vec![ev]).ok(),
            )
        }));
    }
    for task in tasks {
        assert_eq!(
            task.await?,
            (
                Some("timeout"),
                Some("memory_limit"),
                Some("trap"),
                Some(true)
            )
        );
    }
    Ok(())
}

fn flood_event(id: &str, flood: serde_json::Value) -> brink_host::bindings::CloudEvent {
    let mut event = reading(id, "t-1", 1.0);
    event.data = Some(flood.to_string().into_bytes());
    event
}

#[tokio::test]
async fn a_flood_of_tiny_outputs_is_held_to_the_output_count_and_its_size_as_it_travels()
-> anyhow::Result<()> {
    let flood = load(
        limited(
            "flood",
            Limits {
                max_output_bytes: 64 * 1024,
                ..Limits::default()
            },
        ),
        artifacts::FIXTURE_FLOOD,
    )?;
    // Over the count: refused whatever their size.
    let err = flood
        .invoke(flood_event("many", serde_json::json!({ "outputs": 5000 })))
        .await
        .err();
    match &err {
        Some(e @ InvokeError::TooManyOutputs { count, limit, .. }) => {
            assert_eq!((*count, *limit), (5000, 1000));
            assert_eq!(e.kind(), "too_many_outputs");
            assert!(e.to_string().contains("limits.max_outputs"), "{e}");
        }
        other => panic!("expected too many outputs, got {other:?}"),
    }
    // 900 empty events are 4.5 kB of attributes but over 64 KiB as they
    // travel (each gets an envelope and a generated id).
    let err = flood
        .invoke(flood_event("big", serde_json::json!({ "outputs": 900 })))
        .await
        .err();
    assert!(
        matches!(err, Some(InvokeError::OutputTooLarge { size, .. }) if size > 64 * 1024),
        "{err:?}"
    );
    // Within both limits, the outputs come back with ids.
    let out = flood
        .invoke(flood_event("few", serde_json::json!({ "outputs": 100 })))
        .await?;
    assert_eq!(out.len(), 100);
    assert!(out.iter().all(|e| e.id.len() == 36));
    host_still_serves().await
}

#[tokio::test]
async fn a_log_flood_is_cut_per_invocation_and_per_second_and_counted() -> anyhow::Result<()> {
    use brink_host::capability::log::{LogTap, MAX_RECORDS_PER_INVOCATION, MAX_RECORDS_PER_SECOND};
    let tap = LogTap::new();
    let mut spec = FunctionSpec::new("flood");
    spec.logs = Some(tap.clone());
    let flood = load(spec, artifacts::FIXTURE_FLOOD)?;
    let (_, mut feed) = tap.follow();
    let started = std::time::Instant::now();
    // 5 invocations each try 20,000 records of 1 kB (100 MB in all).
    for i in 0..5 {
        let attempt = serde_json::json!({ "logs": 20_000, "log_bytes": 1000 });
        let out = flood
            .invoke(flood_event(&format!("log-{i}"), attempt))
            .await?;
        assert!(out.is_empty(), "the function itself is not failed");
    }
    let elapsed = started.elapsed();
    let mut per_event = std::collections::BTreeMap::<String, u32>::new();
    while let Ok(record) = feed.try_recv() {
        if record.source == "log" {
            *per_event.entry(record.event_id).or_default() += 1;
        }
    }
    let written: u32 = per_event.values().sum();
    assert!(
        per_event.values().all(|n| *n <= MAX_RECORDS_PER_INVOCATION),
        "{per_event:?}"
    );
    // One second's budget, plus one more for each second the loop took.
    let windows = u32::try_from(elapsed.as_secs()).unwrap_or(u32::MAX) + 1;
    assert!(
        written <= MAX_RECORDS_PER_SECOND.saturating_mul(windows),
        "{written} records in {elapsed:?}"
    );
    assert!(written >= MAX_RECORDS_PER_INVOCATION, "{per_event:?}");
    assert_eq!(flood.log_records_dropped(), 100_000 - u64::from(written));
    // What `brink_log_dropped_total` is told: each drop once.
    assert_eq!(flood.take_log_drops(), flood.log_records_dropped());
    assert_eq!(flood.take_log_drops(), 0);
    host_still_serves().await
}
