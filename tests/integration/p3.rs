//! WASI 0.3 components: run on the concurrent engine, beside WASI 0.2 ones
//! on the slim engine, with every limit and refusal their P2 counterparts get.

use std::time::Duration;

use brink_host::bindings::CloudEvent;
use brink_host::engine::Flavour;
use brink_host::error::InvokeError;
use brink_host::{Function, FunctionSpec, Limits};
use brink_tests::{artifacts, load, reading};

fn limited(name: &str, limits: Limits) -> FunctionSpec {
    FunctionSpec {
        limits,
        ..FunctionSpec::new(name)
    }
}

fn typed(id: &str, type_: &str) -> CloudEvent {
    CloudEvent {
        type_: type_.to_owned(),
        ..reading(id, "t-1", 1.0)
    }
}

fn extension<'a>(event: &'a CloudEvent, name: &str) -> Option<&'a str> {
    event
        .extensions
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The error of one invocation of `function` on an event of `type_`.
async fn failure(function: &Function, type_: &str) -> anyhow::Result<InvokeError> {
    match function.invoke(typed("x", type_)).await {
        Err(e) => Ok(e),
        Ok(out) => anyhow::bail!("expected a failure, got {out:?}"),
    }
}

#[tokio::test]
async fn a_wasi_03_component_runs_on_the_concurrent_engine_and_wasi_02_ones_stay_slim()
-> anyhow::Result<()> {
    let p3 = load(FunctionSpec::new("p3"), artifacts::FIXTURE_P3)?;
    let echo = load(FunctionSpec::new("echo"), artifacts::ECHO)?;
    assert_eq!(p3.flavour(), Flavour::Concurrent);
    assert_eq!(echo.flavour(), Flavour::Slim);

    let out = p3.invoke(reading("r-1", "t-1", 1.0)).await?;
    let [event] = out.as_slice() else {
        anyhow::bail!("one output expected, got {out:?}");
    };
    assert_eq!(event.type_, "com.example.reading.p3");
    assert_eq!(extension(event, "p3clock"), Some("true"));
    assert_eq!(extension(event, "p3random"), Some("16"));
    assert_eq!(
        extension(event, "p3env"),
        Some("0"),
        "no environment is granted"
    );
    let input = reading("r-2", "t-1", 2.0);
    assert_eq!(echo.invoke(input.clone()).await?, vec![input]);
    Ok(())
}

#[tokio::test]
async fn a_spinning_p3_guest_gets_the_p2_timeout_and_its_neighbour_is_served_meanwhile()
-> anyhow::Result<()> {
    let short = Limits {
        timeout: Duration::from_millis(100),
        ..Limits::default()
    };
    let p3 = load(limited("spin", short.clone()), artifacts::FIXTURE_P3)?;
    let p2 = load(limited("spin", short), artifacts::FIXTURE_SPIN_LOOP)?;
    let (p3_error, p2_error) = (failure(&p3, "spin").await?, failure(&p2, "spin").await?);
    assert!(
        matches!(p3_error, InvokeError::Timeout { .. }),
        "{p3_error:?}"
    );
    assert_eq!(p3_error.to_string(), p2_error.to_string());
    assert_eq!(
        p3_error.to_string(),
        "function `spin` exceeded its time limit of 100 ms"
    );

    // On this one-thread runtime the echo only finishes if the spinning
    // P3 guest yields at its epoch ticks, as a P2 one does.
    let long = load(
        limited(
            "long-spin",
            Limits {
                timeout: Duration::from_secs(5),
                ..Limits::default()
            },
        ),
        artifacts::FIXTURE_P3,
    )?;
    let echo = load(FunctionSpec::new("echo"), artifacts::ECHO)?;
    let spinning = tokio::spawn(async move { long.invoke(typed("s", "spin")).await });
    tokio::task::yield_now().await;
    for i in 0..5 {
        let input = reading(&format!("e-{i}"), "t-2", 2.0);
        assert_eq!(echo.invoke(input.clone()).await?, vec![input]);
    }
    assert!(
        !spinning.is_finished(),
        "the spinner ended before its deadline"
    );
    spinning.abort();
    Ok(())
}

#[tokio::test]
async fn a_p3_memory_bomb_is_stopped_at_its_cap_like_a_p2_one() -> anyhow::Result<()> {
    let capped = Limits {
        memory_bytes: 16 << 20,
        timeout: Duration::from_secs(5),
        ..Limits::default()
    };
    let p3 = load(limited("bomb", capped.clone()), artifacts::FIXTURE_P3)?;
    let p2 = load(limited("bomb", capped), artifacts::FIXTURE_MEMORY_BOMB)?;
    let (p3_error, p2_error) = (failure(&p3, "grow").await?, failure(&p2, "grow").await?);
    match &p3_error {
        InvokeError::MemoryLimit {
            limit, requested, ..
        } => {
            assert_eq!(*limit, 16 << 20);
            assert!(requested > limit);
        }
        other => anyhow::bail!("expected the memory limit, got {other:?}"),
    }
    assert_eq!(p3_error.kind(), p2_error.kind());
    let after = p3.invoke(reading("after", "t-1", 1.0)).await?;
    assert_eq!(after.len(), 1, "the next event gets a fresh instance");
    Ok(())
}

#[tokio::test]
async fn a_p3_component_importing_sockets_is_refused_like_a_p2_one() -> anyhow::Result<()> {
    let error = |path: &str| {
        load(FunctionSpec::new("net"), path)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default()
    };
    let (p3, p2) = (
        error(artifacts::FIXTURE_P3_SOCKETS),
        error(artifacts::FIXTURE_SOCKETS),
    );
    assert_eq!(
        p3,
        "function `net` imports `wasi:sockets/types@0.3.0`, which it is not granted; \
         no capability of this host provides it"
    );
    assert_eq!(
        p3.replace("types@0.3.0", "*"),
        p2.replace("network@0.2.6", "*")
    );
    Ok(())
}

#[tokio::test]
async fn p3_outputs_are_capped_like_p2_ones() -> anyhow::Result<()> {
    let f = load(
        limited(
            "flood",
            Limits {
                max_outputs: 10,
                max_output_bytes: 4096,
                ..Limits::default()
            },
        ),
        artifacts::FIXTURE_P3,
    )?;
    let mut ten = typed("f-1", "flood");
    ten.data = Some(b"10".to_vec());
    assert_eq!(f.invoke(ten.clone()).await?.len(), 10);
    let mut eleven = ten.clone();
    eleven.data = Some(b"11".to_vec());
    match f.invoke(eleven).await {
        Err(InvokeError::TooManyOutputs { count, limit, .. }) => {
            assert_eq!((count, limit), (11, 10));
        }
        other => anyhow::bail!("expected too many outputs, got {other:?}"),
    }
    let mut big = ten;
    big.data = Some(format!("10{}", " ".repeat(1000)).into_bytes());
    match f.invoke(big).await {
        Err(InvokeError::OutputTooLarge { size, limit, .. }) => {
            assert!(size > limit && limit == 4096, "{size} {limit}");
        }
        other => anyhow::bail!("expected the output cap, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn a_p3_function_reuses_warm_instances_only_as_its_spec_allows() -> anyhow::Result<()> {
    let count = |out: Vec<CloudEvent>| {
        out.first()
            .and_then(|e| extension(e, "p3count").map(str::to_owned))
            .unwrap_or_default()
    };
    let fresh = load(FunctionSpec::new("fresh"), artifacts::FIXTURE_P3)?;
    let warm = load(
        FunctionSpec {
            instance_reuse: 3,
            ..FunctionSpec::new("warm")
        },
        artifacts::FIXTURE_P3,
    )?;
    let mut fresh_counts = Vec::new();
    let mut warm_counts = Vec::new();
    for i in 0..4 {
        fresh_counts.push(count(
            fresh.invoke(reading(&format!("f-{i}"), "t", 1.0)).await?,
        ));
        warm_counts.push(count(
            warm.invoke(reading(&format!("w-{i}"), "t", 1.0)).await?,
        ));
    }
    assert_eq!(fresh_counts, ["1", "1", "1", "1"]);
    assert_eq!(
        warm_counts,
        ["1", "2", "3", "1"],
        "three events per instance"
    );
    Ok(())
}

#[tokio::test]
async fn an_async_handler_awaits_two_host_calls_at_once() -> anyhow::Result<()> {
    let f = load(FunctionSpec::new("async"), artifacts::FIXTURE_P3_ASYNC)?;
    assert_eq!(f.flavour(), Flavour::Concurrent);
    let out = f.invoke(reading("a-1", "t-1", 1.0)).await?;
    let [event] = out.as_slice() else {
        anyhow::bail!("one output expected, got {out:?}");
    };
    assert_eq!(event.type_, "com.example.reading.async");
    assert_eq!(
        extension(event, "p3order"),
        Some("fast,slow"),
        "the 1 ms wait, started second, finished first: the calls overlapped"
    );
    Ok(())
}

#[tokio::test]
async fn an_async_handler_is_ended_at_its_deadline_waiting_or_spinning_and_serves_again()
-> anyhow::Result<()> {
    let short = Limits {
        timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let f = load(limited("async", short.clone()), artifacts::FIXTURE_P3_ASYNC)?;
    let p2_sleeper = load(limited("async", short), artifacts::FIXTURE_SLEEP)?;
    let p2_error = p2_sleeper
        .invoke(reading("s", "t-1", 1.0))
        .await
        .err()
        .map(|e| e.to_string());
    for type_ in ["sleep", "spin"] {
        let error = failure(&f, type_).await?;
        assert!(
            matches!(error, InvokeError::Timeout { .. }),
            "{type_}: {error:?}"
        );
        assert_eq!(Some(error.to_string()), p2_error, "{type_}");
    }
    let out = f.invoke(typed("after", "echo")).await?;
    assert_eq!(out.len(), 1, "a fresh instance serves the next event");
    Ok(())
}
