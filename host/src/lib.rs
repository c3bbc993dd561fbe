//! The Brink edge-function host.
//!
//! One event's path: a CloudEvent arrives ([`event`]), the [`engine`]
//! instantiates the function's component from its cached `InstancePre` in a
//! fresh, limited store, links only the [`capability`] modules its spec grants,
//! calls its handler, checks the outputs, and drops the instance.

pub mod audit;
pub mod bindings;
pub mod builder;
pub mod cache;
pub mod capability;
pub mod contract;
pub mod delivery;
pub mod engine;
pub mod error;
pub mod event;
pub mod heap;
pub mod kv;
pub mod languages;
pub mod manifest;
pub mod nn;
pub mod node;
pub mod oci;
pub mod outbox;
pub mod plan;
pub mod sched;
mod state;
pub mod store;
#[doc(hidden)]
pub mod surface;
pub mod telemetry;
pub mod tenancy;

pub use engine::{Engine, EngineConfig, Function, FunctionSpec, Instance, Limits, PoolTuning};
pub use error::{InvokeError, LoadError};
pub use state::HostState;
