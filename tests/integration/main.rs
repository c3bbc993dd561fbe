#![allow(clippy::panic)]
//! End-to-end tests of the host with real components built from `functions/`.

mod audit;
mod canary;
mod dashboard;
mod deploy;
mod edges;
mod functions;
mod kv;
mod languages;
mod limits;
mod listeners;
mod loading;
mod manifests;
mod mqtt;
mod mqtt_delivery;
mod mqtt_link;
mod nn;
mod node;
mod other_hosts;
mod outbox;
mod p3;
mod parking;
mod reuse;
mod service;
mod status;
mod telemetry;
mod tenancy;
mod test_coverage;
