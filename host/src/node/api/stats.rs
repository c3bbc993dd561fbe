//! `GET /v1/stats`: each function's and model's figures as JSON, for the
//! dashboard: the operator sees every function, a tenant its own; models
//! are the node's and everyone's. Read from the same exposition `/metrics`
//! serves, so the two never disagree.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde::Serialize;

use super::auth::{Principal, principal};
use super::{Answer, json};
use crate::node::metrics::Metrics;
use crate::node::problem::Problem;

#[derive(Debug, Default, Serialize)]
pub(crate) struct FunctionStats {
    pub(crate) function: String,
    /// Invocations, failed ones included.
    pub(crate) invocations: u64,
    pub(crate) errors: u64,
    pub(crate) events_out: u64,
    /// The 99th percentile of invocation time, from the histogram's buckets
    /// (the upper bound of the bucket it falls in), in milliseconds.
    pub(crate) p99_ms: Option<f64>,
    pub(crate) queue_depth: i64,
    #[serde(skip)]
    buckets: Vec<(f64, u64)>,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct ModelStats {
    pub(crate) model: String,
    pub(crate) requests: u64,
    pub(crate) failed: u64,
    pub(crate) rejected: u64,
}

/// One sample line: `name{labels} value`.
fn sample(line: &str) -> Option<(&str, BTreeMap<&str, &str>, f64)> {
    if line.starts_with('#') {
        return None;
    }
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        Some((name, rest)) => (name, rest.strip_suffix('}')?),
        None => (head, ""),
    };
    let labels = labels
        .split("\",")
        .filter_map(|pair| {
            let (k, v) = pair.split_once("=\"")?;
            Some((k.trim_start_matches(','), v.trim_end_matches('"')))
        })
        .collect();
    Some((name, labels, value))
}

/// The figures in `exposition`, of the functions `visible` lets through.
pub(crate) fn read(
    exposition: &str,
    visible: impl Fn(&str) -> bool,
) -> (Vec<FunctionStats>, Vec<ModelStats>) {
    let mut functions: BTreeMap<String, FunctionStats> = BTreeMap::new();
    let mut models: BTreeMap<String, ModelStats> = BTreeMap::new();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let count = |v: f64| v.max(0.0) as u64;
    for (name, labels, value) in exposition.lines().filter_map(sample) {
        if let Some(model) = labels.get("model")
            && name.starts_with("brink_nn_")
        {
            let m = models.entry((*model).to_owned()).or_default();
            m.model = (*model).to_owned();
            match name {
                "brink_nn_requests_total" => m.requests = count(value),
                "brink_nn_failed_total" => m.failed = count(value),
                "brink_nn_rejected_total" => m.rejected = count(value),
                _ => {}
            }
            continue;
        }
        let Some(function) = labels.get("function").filter(|f| visible(f)) else {
            continue;
        };
        let f = functions.entry((*function).to_owned()).or_default();
        f.function = (*function).to_owned();
        match name {
            "brink_invocation_duration_seconds_count" => f.invocations = count(value),
            "brink_invocation_duration_seconds_bucket" => {
                let le = labels.get("le").and_then(|le| le.parse().ok());
                f.buckets.push((le.unwrap_or(f64::INFINITY), count(value)));
            }
            "brink_errors_total" => f.errors += count(value),
            "brink_events_out_total" => f.events_out = count(value),
            #[allow(clippy::cast_possible_truncation)]
            "brink_queue_depth" => f.queue_depth = value as i64,
            _ => {}
        }
    }
    let functions = functions
        .into_values()
        .map(|mut f| {
            f.p99_ms = p99(&mut f.buckets, f.invocations);
            f
        })
        .collect();
    (functions, models.into_values().collect())
}

/// The smallest bucket bound with 99% of the calls at or under it.
fn p99(buckets: &mut [(f64, u64)], total: u64) -> Option<f64> {
    if total == 0 {
        return None;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let wanted = total - total / 100;
    buckets
        .iter()
        .find(|(_, cumulative)| *cumulative >= wanted)
        .map(|(le, _)| le * 1000.0)
        .filter(|ms| ms.is_finite())
}

/// `GET /v1/stats`.
pub(crate) async fn stats(
    metrics: std::sync::Arc<Metrics>,
    extensions: &axum::http::Extensions,
) -> Answer {
    let own = match principal(extensions)? {
        Principal::Operator => None,
        Principal::Tenant(id) => Some(format!("{id}/")),
    };
    let text = tokio::task::spawn_blocking(move || metrics.encode())
        .await
        .map_err(Problem::internal)?
        .map_err(Problem::internal)?;
    let (functions, models) = read(&text, |f| own.as_ref().is_none_or(|p| f.starts_with(p)));
    json(
        StatusCode::OK,
        &serde_json::json!({ "functions": functions, "models": models }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_reads_its_own_functions_figures_and_the_p99_from_the_buckets() {
        let text = "\
# TYPE brink_invocation_duration_seconds histogram
brink_invocation_duration_seconds_bucket{function=\"acme/t\",le=\"0.001\"} 90
brink_invocation_duration_seconds_bucket{function=\"acme/t\",le=\"0.002\"} 99
brink_invocation_duration_seconds_bucket{function=\"acme/t\",le=\"0.004\"} 100
brink_invocation_duration_seconds_bucket{function=\"acme/t\",le=\"+Inf\"} 100
brink_invocation_duration_seconds_count{function=\"acme/t\"} 100
brink_errors_total{function=\"acme/t\",kind=\"trap\"} 2
brink_errors_total{function=\"acme/t\",kind=\"timeout\"} 1
brink_events_in_total{function=\"bolt/x\",trigger=\"http\"} 7
brink_invocation_duration_seconds_count{function=\"bolt/x\"} 7
brink_nn_requests_total{model=\"digits\",backend=\"tract\",device=\"cpu\"} 12
";
        let (functions, models) = read(text, |f| f.starts_with("acme/"));
        assert_eq!(functions.len(), 1, "{functions:?}");
        let t = &functions[0];
        assert_eq!((t.invocations, t.errors), (100, 3));
        assert_eq!(t.p99_ms, Some(2.0));
        assert_eq!(models.len(), 1);
        assert_eq!(models[0].requests, 12);
    }
}
