//! Each example function doing its edge job through the real host.

use brink_host::FunctionSpec;
use brink_host::bindings::ErrorKind;
use brink_host::error::InvokeError;
use brink_tests::{artifacts, json_data, load, reading};

/// A spec for `name` with `config`.
pub(crate) fn spec(name: &str, config: &[(&str, &str)]) -> FunctionSpec {
    let mut spec = FunctionSpec::new(name);
    spec.config = config
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    spec
}

#[tokio::test]
async fn echo_returns_the_event_unchanged() -> anyhow::Result<()> {
    let echo = load(spec("echo", &[]), artifacts::ECHO)?;
    let input = reading("e-1", "t-1", 20.5);
    let out = echo.invoke(input.clone()).await?;
    assert_eq!(out, vec![input]);
    Ok(())
}

#[tokio::test]
async fn filter_passes_readings_above_the_threshold_and_drops_the_rest() -> anyhow::Result<()> {
    filters_like_the_filter(artifacts::FILTER).await
}

/// What `functions/filter` passes and drops, asserted of the component at
/// `path` (its twins in other languages do the same).
pub(crate) async fn filters_like_the_filter(path: &str) -> anyhow::Result<()> {
    let filter = load(spec("filter", &[("threshold", "30")]), path)?;
    let hot = reading("f-1", "t-1", 31.5);
    assert_eq!(filter.invoke(hot.clone()).await?, vec![hot]);
    assert!(filter.invoke(reading("f-2", "t-2", 29.9)).await?.is_empty());
    assert!(filter.invoke(reading("f-3", "t-3", 30.0)).await?.is_empty());
    let below = load(
        spec("filter", &[("threshold", "5"), ("direction", "below")]),
        path,
    )?;
    assert_eq!(below.invoke(reading("f-4", "t-1", 4.0)).await?.len(), 1);
    assert!(below.invoke(reading("f-5", "t-1", 6.0)).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn filter_with_direction_below_passes_low_readings() -> anyhow::Result<()> {
    let filter = load(
        spec("filter", &[("threshold", "5"), ("direction", "below")]),
        artifacts::FILTER,
    )?;
    assert_eq!(filter.invoke(reading("f-1", "t-1", 4.0)).await?.len(), 1);
    assert!(filter.invoke(reading("f-2", "t-1", 6.0)).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn filter_without_a_threshold_fails_naming_the_missing_config() -> anyhow::Result<()> {
    let filter = load(spec("filter", &[]), artifacts::FILTER)?;
    match filter.invoke(reading("f-1", "t-1", 31.0)).await {
        Err(InvokeError::Handler { kind, message, .. }) => {
            assert_eq!(kind, ErrorKind::Internal);
            assert!(message.contains("`threshold`"), "{message}");
        }
        other => panic!("expected a handler error, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn filter_reports_a_non_reading_payload_as_an_invalid_event() -> anyhow::Result<()> {
    let filter = load(spec("filter", &[("threshold", "30")]), artifacts::FILTER)?;
    let mut event = reading("f-1", "t-1", 0.0);
    event.data = Some(br#"{"temperature": "hot"}"#.to_vec());
    let err = filter.invoke(event).await.err();
    assert!(
        matches!(
            &err,
            Some(InvokeError::Handler {
                kind: ErrorKind::InvalidEvent,
                ..
            })
        ),
        "{err:?}"
    );
    assert!(err.is_some_and(|e| !e.is_retryable()));
    Ok(())
}

#[tokio::test]
async fn transform_converts_celsius_to_fahrenheit_under_a_new_type() -> anyhow::Result<()> {
    converts_like_the_transform(artifacts::TRANSFORM).await
}

/// What `functions/transform` does, asserted of the component at `path`
/// (its twins in other languages do the same).
pub(crate) async fn converts_like_the_transform(path: &str) -> anyhow::Result<()> {
    let transform = load(spec("transform", &[]), path)?;
    let out = transform.invoke(reading("t-1", "t-17", 31.5)).await?;
    assert_eq!(out.len(), 1);
    let e = &out[0];
    assert_eq!(e.type_, "com.brink.temperature.fahrenheit");
    assert_eq!(e.subject.as_deref(), Some("t-17"));
    assert_eq!(e.source, "/factory/line-1/sensors");
    assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
    assert_eq!(
        json_data(e)?,
        serde_json::json!({
            "device_id": "t-17",
            "temperature": { "value": 88.7, "unit": "degF" },
            "observed_at": "2026-11-22T10:00:00Z"
        })
    );
    let custom = load(
        spec("transform", &[("output_type", "com.acme.temp.f")]),
        path,
    )?;
    let a = custom.invoke(reading("same", "t-1", 0.0)).await?;
    let b = custom.invoke(reading("same", "t-1", 0.0)).await?;
    assert_eq!(a[0].type_, "com.acme.temp.f");
    assert_ne!(a[0].id, b[0].id);
    assert_eq!(json_data(&a[0])?["temperature"]["value"], 32.0);
    Ok(())
}

#[tokio::test]
async fn the_host_gives_each_output_event_a_fresh_id() -> anyhow::Result<()> {
    let transform = load(
        spec("transform", &[("output_type", "com.acme.temp.f")]),
        artifacts::TRANSFORM,
    )?;
    let a = transform.invoke(reading("same", "t-1", 0.0)).await?;
    let b = transform.invoke(reading("same", "t-1", 0.0)).await?;
    assert_eq!(a[0].type_, "com.acme.temp.f");
    assert_eq!(a[0].specversion, "1.0");
    assert!(!a[0].id.is_empty());
    assert_ne!(a[0].id, b[0].id);
    assert_eq!(json_data(&a[0])?["temperature"]["value"], 32.0);
    Ok(())
}
