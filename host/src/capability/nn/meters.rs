//! The inference capability's metrics: each model's requests, runs, rows,
//! failures, refusals and busy time, read from its queue at scrape.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::capability::{Meters, catch_up, families};
use crate::nn::Models;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    pub model: String,
    pub device: String,
}

const COUNTERS: [(&str, &str); 6] = [
    ("nn_requests", "Inferences answered, by model"),
    (
        "nn_runs",
        "Runs of the model; fewer than requests where batching joined them",
    ),
    ("nn_rows", "Rows (samples) run, by model"),
    ("nn_failed", "Inferences whose run failed"),
    (
        "nn_rejected",
        "Inferences refused because the model's queue was full",
    ),
    ("nn_busy_microseconds", "Time spent running the model"),
];

#[derive(Debug)]
struct NnMeters {
    models: Models,
    counters: [Family<ModelLabel, Counter>; 6],
}

/// The metrics hook: registers the families in `registry`.
pub fn meters(registry: &mut Registry, models: Models) -> Box<dyn Meters> {
    Box::new(NnMeters {
        models,
        counters: families(registry, COUNTERS),
    })
}

impl Meters for NnMeters {
    fn collect(&self) {
        for model in self.models.iter() {
            let label = ModelLabel {
                model: model.name().to_owned(),
                device: model.graph().device().to_owned(),
            };
            let s = model.stats();
            let values = [
                s.requests(),
                s.batches(),
                s.rows(),
                s.failed(),
                s.rejected(),
                s.busy_us(),
            ];
            for (family, value) in self.counters.iter().zip(values) {
                catch_up(&family.get_or_create(&label), value);
            }
        }
    }
}
