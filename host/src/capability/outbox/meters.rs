//! The outbox capability's metrics: each uplink's queue and counters, and
//! each tenant's queued bytes, read from the outbox at scrape.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::capability::{Meters, TenantLabel, catch_up, families, gauge_value};
use crate::outbox::Outbox;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UplinkLabel {
    pub uplink: String,
}

const GAUGES: [(&str, &str); 4] = [
    (
        "outbox_backlog_events",
        "Events waiting in the outbox for an uplink",
    ),
    (
        "outbox_backlog_bytes",
        "Bytes waiting in the outbox for an uplink",
    ),
    ("outbox_connected", "1 while the uplink accepts deliveries"),
    (
        "outbox_parked_events",
        "Events the uplink refused for good, waiting in its parking queue",
    ),
];

const COUNTERS: [(&str, &str); 6] = [
    ("outbox_sent", "Events the uplink acknowledged"),
    (
        "outbox_retried",
        "Event deliveries that failed and will be retried",
    ),
    (
        "outbox_dropped",
        "Events dropped: outbox full (drop_oldest) or purged",
    ),
    (
        "outbox_expired",
        "Events whose TTL passed before they could be sent",
    ),
    (
        "outbox_rejected",
        "Sends refused because the outbox was full",
    ),
    (
        "outbox_parked",
        "Events moved to the parking queue because the uplink refused them for good",
    ),
];

#[derive(Debug)]
struct OutboxMeters {
    outbox: Outbox,
    gauges: [Family<UplinkLabel, Gauge>; 4],
    counters: [Family<UplinkLabel, Counter>; 6],
    tenant_bytes: Family<TenantLabel, Gauge>,
}

/// The metrics hook: registers the families in `registry`.
pub fn meters(registry: &mut Registry, outbox: Outbox) -> Box<dyn Meters> {
    let gauges = families(registry, GAUGES);
    let counters = families(registry, COUNTERS);
    let tenant_bytes = Family::default();
    registry.register(
        "tenant_outbox_bytes",
        "Bytes a tenant's functions hold queued in the outbox, across uplinks",
        tenant_bytes.clone(),
    );
    Box::new(OutboxMeters {
        outbox,
        gauges,
        counters,
        tenant_bytes,
    })
}

impl Meters for OutboxMeters {
    fn collect(&self) {
        for (tenant, usage) in self.outbox.owners() {
            self.tenant_bytes
                .get_or_create(&TenantLabel { tenant })
                .set(gauge_value(usage.bytes));
        }
        for s in self.outbox.status() {
            let label = UplinkLabel {
                uplink: s.uplink.clone(),
            };
            let gauges = [
                s.backlog_events,
                s.backlog_bytes,
                u64::from(s.connected),
                s.parked_events,
            ];
            for (family, value) in self.gauges.iter().zip(gauges) {
                family.get_or_create(&label).set(gauge_value(value));
            }
            let counters = [
                s.sent,
                s.retried,
                s.dropped,
                s.expired,
                s.rejected,
                s.parked_total,
            ];
            for (family, value) in self.counters.iter().zip(counters) {
                catch_up(&family.get_or_create(&label), value);
            }
        }
    }
}
