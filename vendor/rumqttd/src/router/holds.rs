//! Brink patch 5: a device's PUBACK waits until the node has handled the
//! message.
//!
//! A broker that acknowledges a QoS 1 message as soon as it is in memory
//! loses it at a crash, yet the device has already forgotten it. The node
//! subscribes on listeners of its own ([`AckHold::Node`]) with manual acks:
//! it acknowledges a message only once its functions succeeded and their
//! outputs were delivered or stored durably. A QoS 1 message from a device
//! listener ([`AckHold::Device`]) is acknowledged to the device only once
//! every node session subscribed to a matching filter has acknowledged it,
//! so a PUBACK from the embedded broker means what a PUBACK from the node's
//! own subscriber means.
//!
//! PUBACKs go out in the order of the PUBLISHes (MQTT 3.1.1 section 4.6):
//! an ack that needs no wait queues behind held ones. A message the node
//! never received (the log dropped it before the node read it, or the node
//! unsubscribed) gets no PUBACK at all: the device still has it and sends it
//! again when it reconnects.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::FilterIdx;
use crate::ConnectionId;

/// How a listener's connections take part in held acknowledgements.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AckHold {
    /// Acknowledged at once (rumqttd's behaviour).
    #[default]
    None,
    /// A device: its QoS 1 PUBACKs wait for the node's acknowledgements.
    Device,
    /// The node: its QoS 1 subscriptions hold devices' PUBACKs until it
    /// acknowledges the message.
    Node,
}

#[derive(Debug)]
struct Pending {
    /// None once the device disconnected.
    device: Option<ConnectionId>,
    /// Held log entries of this message not yet settled.
    entries: usize,
    /// An entry was dropped unread: the device must not get a PUBACK.
    lost: bool,
}

#[derive(Debug)]
struct Entry {
    token: u64,
    /// Node sessions that still have to acknowledge this entry.
    waiting: Vec<Arc<str>>,
}

/// What a PUBLISH from a device became.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Acknowledge it now.
    AckNow,
    /// Its PUBACK waits (for the node, or behind earlier held ones).
    Queued,
}

#[derive(Debug, Default)]
pub struct Holds {
    /// Node sessions (by client id) subscribed to each filter with QoS ≥ 1.
    holders: HashMap<FilterIdx, Vec<Arc<str>>>,
    /// Held log entries per filter, by absolute offset.
    held: HashMap<FilterIdx, BTreeMap<u64, Entry>>,
    pending: HashMap<u64, Pending>,
    /// Per device connection, its PUBACKs in PUBLISH order: the packet id
    /// and, for a held one, its token.
    queues: HashMap<ConnectionId, VecDeque<(u16, Option<u64>)>>,
    next_token: u64,
}

impl Holds {
    /// A node session subscribed to `filter` with QoS ≥ 1.
    pub fn add_holder(&mut self, filter: FilterIdx, client_id: &str) {
        let holders = self.holders.entry(filter).or_default();
        if !holders.iter().any(|h| &**h == client_id) {
            holders.push(Arc::from(client_id));
        }
    }

    /// A node session left `filter` (unsubscribed, or its clean session
    /// ended). Returns the devices whose queues may move.
    pub fn remove_holder(&mut self, filter: FilterIdx, client_id: &str) -> Vec<ConnectionId> {
        if let Some(holders) = self.holders.get_mut(&filter) {
            holders.retain(|h| &**h != client_id);
        }
        let offsets: Vec<u64> = match self.held.get(&filter) {
            Some(log) => log.keys().copied().collect(),
            None => return Vec::new(),
        };
        let mut moved = Vec::new();
        for offset in offsets {
            // Nobody will acknowledge it now: lost for this holder.
            moved.extend(self.settle(filter, offset, client_id, true));
        }
        moved
    }

    /// Filters `client_id` holds on.
    pub fn filters_of(&self, client_id: &str) -> Vec<FilterIdx> {
        self.holders
            .iter()
            .filter(|(_, hs)| hs.iter().any(|h| &**h == client_id))
            .map(|(f, _)| *f)
            .collect()
    }

    /// A QoS 1 PUBLISH `pkid` from `device`, appended at `appended`
    /// (filter, the offset after the entry, as the commit log returns it).
    pub fn admit(
        &mut self,
        device: ConnectionId,
        pkid: u16,
        appended: &[(FilterIdx, (u64, u64))],
    ) -> Admit {
        let mut token = None;
        for &(filter, (_, next)) in appended {
            let Some(holders) = self.holders.get(&filter).filter(|h| !h.is_empty()) else {
                continue;
            };
            let t = *token.get_or_insert_with(|| {
                self.next_token += 1;
                self.next_token
            });
            let entry = Entry {
                token: t,
                waiting: holders.clone(),
            };
            // The commit log returns the offset after the entry it appended.
            self.held
                .entry(filter)
                .or_default()
                .insert(next.saturating_sub(1), entry);
            self.pending
                .entry(t)
                .or_insert(Pending {
                    device: Some(device),
                    entries: 0,
                    lost: false,
                })
                .entries += 1;
        }
        let queue = self.queues.entry(device).or_default();
        if token.is_none() && queue.is_empty() {
            return Admit::AckNow;
        }
        queue.push_back((pkid, token));
        Admit::Queued
    }

    /// `client_id` acknowledged the entry at `offset` of `filter`. Entries
    /// before it that it never acknowledged were dropped unread. Returns the
    /// devices whose queues may move.
    pub fn acked(&mut self, filter: FilterIdx, offset: u64, client_id: &str) -> Vec<ConnectionId> {
        let skipped: Vec<u64> = match self.held.get(&filter) {
            Some(log) => log.range(..offset).map(|(o, _)| *o).collect(),
            None => return Vec::new(),
        };
        let mut moved = Vec::new();
        for o in skipped {
            moved.extend(self.settle(filter, o, client_id, true));
        }
        moved.extend(self.settle(filter, offset, client_id, false));
        moved
    }

    fn settle(
        &mut self,
        filter: FilterIdx,
        offset: u64,
        client_id: &str,
        lost: bool,
    ) -> Option<ConnectionId> {
        let log = self.held.get_mut(&filter)?;
        let entry = log.get_mut(&offset)?;
        let before = entry.waiting.len();
        entry.waiting.retain(|h| &**h != client_id);
        if entry.waiting.len() == before {
            return None;
        }
        let token = entry.token;
        let done = entry.waiting.is_empty();
        if done {
            log.remove(&offset);
        }
        let pending = self.pending.get_mut(&token)?;
        pending.lost |= lost;
        if done {
            pending.entries = pending.entries.saturating_sub(1);
        }
        match pending.device {
            Some(device) => Some(device),
            None => {
                // Its device left: nothing to send, so forget it once settled.
                if pending.entries == 0 {
                    self.pending.remove(&token);
                }
                None
            }
        }
    }

    /// The PUBACKs `device` may get now, in order: the front of its queue
    /// up to the first message still held. Lost ones are dropped unsent.
    pub fn ready(&mut self, device: ConnectionId) -> Vec<u16> {
        let mut out = Vec::new();
        let Some(queue) = self.queues.get_mut(&device) else {
            return out;
        };
        while let Some(&(pkid, token)) = queue.front() {
            match token {
                None => out.push(pkid),
                Some(t) => match self.pending.get(&t) {
                    Some(p) if p.entries > 0 => break,
                    Some(p) => {
                        if !p.lost {
                            out.push(pkid);
                        }
                        self.pending.remove(&t);
                    }
                    // Settled while the device was away: not ours to ack.
                    None => {}
                },
            }
            queue.pop_front();
        }
        out
    }

    /// `device` disconnected: its queued PUBACKs go nowhere. A persistent
    /// device resends what it had no PUBACK for.
    pub fn forget_device(&mut self, device: ConnectionId) {
        if let Some(queue) = self.queues.remove(&device) {
            for (_, token) in queue {
                let Some(t) = token else { continue };
                match self.pending.get_mut(&t) {
                    // Settled but not yet sent: nothing more to wait for.
                    Some(p) if p.entries == 0 => {
                        self.pending.remove(&t);
                    }
                    // The log entries stay until the node acks them; a
                    // connection that reuses the id is not acked for them.
                    Some(p) => p.device = None,
                    None => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_puback_waits_for_the_node_and_keeps_publish_order() {
        let mut holds = Holds::default();
        holds.add_holder(0, "node");
        // pkid 1 held on filter 0 (entry offset 0), pkid 2 matches nothing.
        assert_eq!(holds.admit(7, 1, &[(0, (0, 1))]), Admit::Queued);
        assert_eq!(holds.admit(7, 2, &[(1, (0, 1))]), Admit::Queued);
        assert!(holds.ready(7).is_empty());
        assert_eq!(holds.acked(0, 0, "node"), vec![7]);
        assert_eq!(holds.ready(7), vec![1, 2]);
        assert_eq!(holds.admit(7, 3, &[(1, (0, 2))]), Admit::AckNow);
    }

    #[test]
    fn an_entry_the_node_skipped_gets_no_puback() {
        let mut holds = Holds::default();
        holds.add_holder(0, "node");
        holds.admit(7, 1, &[(0, (0, 1))]);
        holds.admit(7, 2, &[(0, (0, 2))]);
        // The node's first ack is for offset 1: offset 0 was dropped unread.
        holds.acked(0, 1, "node");
        assert_eq!(holds.ready(7), vec![2]);
    }

    #[test]
    fn every_holder_and_every_filter_must_ack() {
        let mut holds = Holds::default();
        holds.add_holder(0, "a");
        holds.add_holder(0, "b");
        holds.add_holder(1, "a");
        holds.admit(7, 1, &[(0, (0, 1)), (1, (0, 1))]);
        holds.acked(0, 0, "a");
        holds.acked(0, 0, "a"); // a retransmission acked twice
        holds.acked(1, 0, "a");
        assert!(holds.ready(7).is_empty());
        holds.acked(0, 0, "b");
        assert_eq!(holds.ready(7), vec![1]);
    }

    #[test]
    fn a_holder_that_leaves_releases_nothing_as_acknowledged() {
        let mut holds = Holds::default();
        holds.add_holder(0, "node");
        holds.admit(7, 1, &[(0, (0, 1))]);
        assert_eq!(holds.remove_holder(0, "node"), vec![7]);
        assert!(holds.ready(7).is_empty());
        assert_eq!(holds.admit(7, 2, &[(0, (0, 2))]), Admit::AckNow);
    }

    #[test]
    fn a_device_that_left_is_never_acked_on_a_reused_id() {
        let mut holds = Holds::default();
        holds.add_holder(0, "node");
        holds.admit(7, 1, &[(0, (0, 1))]);
        holds.forget_device(7);
        holds.acked(0, 0, "node");
        assert!(holds.ready(7).is_empty());
    }
}
