//! `[telemetry]`: traces of every event over OTLP, off by default.

use serde::Deserialize;

use super::error::Invalid;

/// `[telemetry]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    /// `otlp = "http://127.0.0.1:4318"`: an OpenTelemetry collector's
    /// OTLP/HTTP endpoint; spans are posted as protobuf to `<otlp>/v1/traces`.
    /// Absent: no spans are made at all.
    pub otlp: Option<String>,
    /// `sample_percent = 100`: the share of new traces recorded, 0 to 100
    /// (decimals allowed, e.g. `0.5`). A trace a device started is recorded
    /// exactly when its `traceparent` says it is sampled.
    pub sample_percent: Option<Percent>,
    /// `max_queue_spans = 8192`: spans waiting for export; past it new ones
    /// are dropped and counted (`brink_otlp_spans_dropped_total`), so a slow
    /// or absent collector never holds an event up.
    pub max_queue_spans: Option<usize>,
    /// `export_interval_ms = 1000`: the longest a span waits to be sent.
    pub export_interval_ms: Option<u64>,
    /// `headers = { authorization = "Bearer …" }`: sent with every post, for
    /// a collector or vendor endpoint that wants an API key.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

/// A percentage, 0 to 100; never NaN (checked), so it can be `Eq`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Percent(pub f64);

impl Eq for Percent {}

impl TelemetrySection {
    pub(super) fn check(&self) -> Result<(), Invalid> {
        if let Some(url) = &self.otlp {
            let parsed = url::Url::parse(url).map_err(|e| {
                Invalid::at(
                    "telemetry.otlp",
                    format!("`{url}` is not a URL ({e}); write the collector's OTLP/HTTP endpoint, e.g. http://127.0.0.1:4318"),
                )
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(Invalid::at(
                    "telemetry.otlp",
                    format!(
                        "`{url}`: OTLP is exported over http:// or https:// (OTLP/HTTP, port 4318), not {}://",
                        parsed.scheme()
                    ),
                ));
            }
        }
        if let Some(Percent(p)) = self.sample_percent
            && !(0.0..=100.0).contains(&p)
        {
            return Err(Invalid::at(
                "telemetry.sample_percent",
                format!("sample_percent = {p} is not between 0 and 100"),
            ));
        }
        for (name, value) in &self.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || http::HeaderValue::from_str(value).is_err()
            {
                return Err(Invalid::at(
                    "telemetry.headers",
                    format!(
                        "telemetry.headers: {name:?} is not an HTTP header name with a printable value"
                    ),
                ));
            }
        }
        super::error::above_zero(
            "telemetry.",
            &[
                ("max_queue_spans", self.max_queue_spans == Some(0)),
                ("export_interval_ms", self.export_interval_ms == Some(0)),
            ],
        )
    }

    /// Where spans are posted: `<otlp>/v1/traces`, unless `otlp` names it already.
    pub fn traces_url(&self) -> Option<String> {
        let base = self.otlp.as_deref()?.trim_end_matches('/');
        Some(if base.ends_with("/v1/traces") {
            base.to_owned()
        } else {
            format!("{base}/v1/traces")
        })
    }
}
