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
    let bomb = load(
        limited("bomb", short.clone()),
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
