//! The CLI, one file per command: `main.rs` parses and hands over.

pub mod client;
pub mod deploy;
pub mod keys;
pub mod kv;
pub mod logs;
pub mod outbox;
pub mod run;
pub mod tenant;
