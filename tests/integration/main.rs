#![allow(clippy::panic)]
//! End-to-end tests of the host with real components built from `functions/`.

mod deploy;
mod functions;
mod kv;
mod limits;
mod loading;
mod manifests;
mod mqtt;
mod nn;
mod node;
mod outbox;
mod reuse;
mod test_coverage;
