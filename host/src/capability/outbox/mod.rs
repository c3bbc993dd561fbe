//! `brink:edge/outbox`: store-and-forward to the uplinks a function is
//! granted (`outbox = ["cloud"]`). `send` returns once the event is synced
//! to disk; waiting for that sync does not block an executor thread.

mod meters;

pub use meters::meters;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasData, Linker};

use crate::bindings::CloudEvent;
use crate::bindings::brink::edge::outbox::{self, SendError, SendOptions};
use crate::outbox::{Outbox, OutboxError};
use crate::state::HostState;

/// The grant that allows this interface; given by `outbox = [...]` in a spec.
pub const GRANT: &str = crate::contract::GRANT_OUTBOX;

/// The interface this capability provides, from contract 0.1.1 on.
pub const INTERFACE: crate::contract::EdgeInterface = crate::contract::EdgeInterface {
    name: "outbox",
    since: "0.1.1",
};

/// The forget hook, on tenant removal: `tenant`'s quota on queued bytes
/// goes. What its functions already queued is still delivered: it was
/// accepted.
pub fn forget(outbox: &Outbox, tenant: &str) {
    outbox.set_owner_quota(tenant, None);
}

/// Which uplinks a function may send to.
#[derive(Debug, Clone)]
pub struct OutboxAccess {
    pub outbox: Outbox,
    pub uplinks: Arc<BTreeSet<String>>,
    /// The tenant whose queued bytes its sends count against.
    pub owner: Option<Arc<str>>,
}

/// A function's outbox context.
#[derive(Debug, Default)]
pub struct OutboxCtx {
    access: Option<OutboxAccess>,
}

impl OutboxCtx {
    /// The context of a function with `access` (none: no uplink granted).
    pub fn new(access: Option<OutboxAccess>) -> Self {
        Self { access }
    }
}

fn to_wit(e: OutboxError) -> SendError {
    match e {
        OutboxError::UnknownUplink(_) => SendError::AccessDenied(e.to_string()),
        OutboxError::Full { .. } | OutboxError::OwnerQuota { .. } => SendError::Full(e.to_string()),
        OutboxError::BadPriority(_) | OutboxError::BadEvent(_) | OutboxError::TooLarge { .. } => {
            SendError::Invalid(e.to_string())
        }
        OutboxError::Store(_) => SendError::Other(e.to_string()),
    }
}

impl outbox::Host for OutboxCtx {
    async fn send(
        &mut self,
        mut event: CloudEvent,
        options: SendOptions,
    ) -> wasmtime::Result<Result<u64, SendError>> {
        let Some(access) = &self.access else {
            return Ok(Err(SendError::AccessDenied(
                "this function is not granted any uplink".to_owned(),
            )));
        };
        if !access.uplinks.contains(&options.uplink) {
            return Ok(Err(SendError::AccessDenied(format!(
                "uplink `{}` is not granted to this function",
                options.uplink
            ))));
        }
        if event.id.is_empty() {
            event.id = uuid::Uuid::new_v4().to_string();
        }
        if event.specversion.is_empty() {
            event.specversion = "1.0".to_owned();
        }
        let ttl = options.ttl_ms.map(Duration::from_millis);
        Ok(access
            .outbox
            .send_as(
                access.owner.as_deref(),
                &options.uplink,
                &event,
                options.priority,
                ttl,
            )
            .await
            .map_err(to_wit))
    }
}

struct OutboxCap;

impl HasData for OutboxCap {
    type Data<'a> = &'a mut OutboxCtx;
}

/// Links `brink:edge/outbox`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    outbox::add_to_linker::<HostState, OutboxCap>(linker, |s| &mut s.outbox)
}
