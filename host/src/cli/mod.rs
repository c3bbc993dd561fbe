//! The CLI, one file per command: `main.rs` parses and hands over.

pub mod audit;
pub mod build;
pub mod client;
pub mod deploy;
pub mod fleet;
pub mod keys;
pub mod kv;
pub mod logging;
pub mod logs;
pub mod new;
pub mod oci;
pub mod outbox;
pub mod run;
pub mod status;
pub mod tenant;

use anyhow::Context as _;

/// The runtime a one-shot command runs its calls on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
