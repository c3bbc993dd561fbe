//! The parking queue: events an uplink refused for good.
//!
//! An event the uplink will never take (a 4xx, over the broker's packet
//! size, unencodable) would block every event behind it if it stayed at the
//! head of the queue, so the forwarder moves it here with the reason and
//! the time, and goes on with the rest in order. Nothing is lost: the
//! operator lists what is parked (`brink outbox parked`), moves it back
//! (`retry`, after fixing the uplink) or drops it (`purge --parked`).
//!
//! Each uplink has its own parked tree, keyed like the queue (so a retried
//! event goes back to its old place in the drain order). A value is a
//! header (version 1, the time it was parked, the reason) followed by the
//! stored value exactly as it was in the queue, owner included: a parked
//! event still counts against its owner's quota, since it still takes disk.
//!
//! Parking writes the parked copy before removing the queued one; a crash
//! between the two leaves both, and opening the outbox drops the parked
//! copy, so the event is sent again rather than lost.

use std::sync::atomic::Ordering;

use super::{Entry, Outbox, OutboxError, Queue, decode, now_ms, owner_and_body, saturating_sub};

/// Stored (key, value) pairs.
type Raw = Vec<(Vec<u8>, Vec<u8>)>;

/// Version, time parked, reason length.
const PARKED_HEADER: usize = 1 + 8 + 2;
/// Reasons are kept to this many bytes.
const MAX_REASON: usize = 1024;

/// One parked event.
#[derive(Debug, Clone)]
pub struct ParkedEntry {
    pub entry: Entry,
    /// When it was parked, in ms since the Unix epoch.
    pub parked_ms: u64,
    /// Why the uplink refused it.
    pub reason: String,
}

/// A parked event as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ParkedView {
    pub seq: u64,
    pub id: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub source: String,
    pub priority: u8,
    pub bytes: u64,
    pub owner: Option<String>,
    pub enqueued_ms: u64,
    pub parked_ms: u64,
    pub reason: String,
}

impl ParkedEntry {
    /// What the admin API shows of it.
    pub fn view(&self) -> ParkedView {
        let json: serde_json::Value = serde_json::from_slice(&self.entry.json).unwrap_or_default();
        let attribute = |name: &str| {
            json.get(name)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        ParkedView {
            seq: self.entry.seq,
            id: attribute("id"),
            type_: attribute("type"),
            source: attribute("source"),
            priority: self.entry.priority,
            bytes: self.entry.json.len() as u64,
            owner: self.entry.owner.clone(),
            enqueued_ms: self.entry.enqueued_ms,
            parked_ms: self.parked_ms,
            reason: self.reason.clone(),
        }
    }
}

pub(crate) fn encode_parked(parked_ms: u64, reason: &str, stored: &[u8]) -> Vec<u8> {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    let mut v = Vec::with_capacity(PARKED_HEADER + reason.len() + stored.len());
    v.push(1);
    v.extend_from_slice(&parked_ms.to_be_bytes());
    v.extend_from_slice(&(reason.len() as u16).to_be_bytes());
    v.extend_from_slice(reason);
    v.extend_from_slice(stored);
    v
}

/// The time, the reason and the stored value; none when it is not one we wrote.
pub(crate) fn split_parked(v: &[u8]) -> Option<(u64, &str, &[u8])> {
    if *v.first()? != 1 {
        return None;
    }
    let parked_ms = u64::from_be_bytes(v.get(1..9)?.try_into().ok()?);
    let len = usize::from(u16::from_be_bytes(v.get(9..11)?.try_into().ok()?));
    let reason = std::str::from_utf8(v.get(PARKED_HEADER..PARKED_HEADER + len)?).ok()?;
    Some((parked_ms, reason, v.get(PARKED_HEADER + len..)?))
}

/// Which parked events an operation takes: all, or those sequence numbers.
fn selected(seqs: Option<&[u64]>, seq: u64) -> bool {
    seqs.is_none_or(|s| s.contains(&seq))
}

impl Outbox {
    /// Moves `entry` from `uplink`'s queue to its parking queue with
    /// `reason`; done once that is on disk. An entry no longer queued
    /// (purged meanwhile) is left alone.
    pub async fn park(&self, uplink: &str, entry: &Entry, reason: &str) -> Result<(), OutboxError> {
        let queue = self.queue(uplink)?;
        let Some(stored) = queue.tree.get(&entry.key)? else {
            return Ok(());
        };
        queue
            .parked
            .insert(&entry.key, &encode_parked(now_ms(), reason, &stored))?;
        if queue.tree.remove(&entry.key)?.is_some() {
            let size = (entry.key.len() + stored.len()) as u64;
            saturating_sub(&queue.stats.backlog_events, 1);
            saturating_sub(&queue.stats.backlog_bytes, size);
        }
        queue.stats.parked_events.fetch_add(1, Ordering::Relaxed);
        queue.stats.parked_total.fetch_add(1, Ordering::Relaxed);
        self.sync().await
    }

    /// What `uplink` has parked, oldest first by drain order.
    pub fn parked(&self, uplink: &str) -> Result<Vec<ParkedEntry>, OutboxError> {
        let queue = self.queue(uplink)?;
        let mut out = Vec::new();
        queue.parked.for_each(&mut |k, v| {
            match split_parked(v).and_then(|(t, reason, stored)| {
                decode(k.to_vec(), stored).map(|(entry, _)| (t, reason, entry))
            }) {
                Some((parked_ms, reason, entry)) => out.push(ParkedEntry {
                    entry,
                    parked_ms,
                    reason: reason.to_owned(),
                }),
                None => tracing::warn!(uplink, "outbox: skipped an unreadable parked entry"),
            }
            true
        })?;
        Ok(out)
    }

    /// Moves parked events (all, or those in `seqs`) back into `uplink`'s
    /// queue, at their old place in the drain order; how many.
    pub async fn retry_parked(
        &self,
        uplink: &str,
        seqs: Option<&[u64]>,
    ) -> Result<u64, OutboxError> {
        let queue = self.queue(uplink)?;
        let mut moved = 0;
        for (key, value) in self.parked_raw(queue, seqs)? {
            let Some((_, _, stored)) = split_parked(&value) else {
                continue;
            };
            queue.tree.insert(&key, stored)?;
            if queue.parked.remove(&key)?.is_some() {
                saturating_sub(&queue.stats.parked_events, 1);
            }
            queue.stats.backlog_events.fetch_add(1, Ordering::Relaxed);
            queue
                .stats
                .backlog_bytes
                .fetch_add((key.len() + stored.len()) as u64, Ordering::Relaxed);
            moved += 1;
        }
        self.sync().await?;
        if moved > 0 {
            tracing::info!(
                uplink,
                moved,
                "outbox: parked events moved back to the queue"
            );
            queue.arrived.notify_one();
        }
        Ok(moved)
    }

    /// Drops parked events (all, or those in `seqs`), counted as dropped; how many.
    pub async fn purge_parked(
        &self,
        uplink: &str,
        seqs: Option<&[u64]>,
    ) -> Result<u64, OutboxError> {
        let queue = self.queue(uplink)?;
        let mut purged = 0;
        for (key, value) in self.parked_raw(queue, seqs)? {
            if queue.parked.remove(&key)?.is_none() {
                continue;
            }
            saturating_sub(&queue.stats.parked_events, 1);
            if let Some((_, _, stored)) = split_parked(&value)
                && let Some((Some(owner), _)) = owner_and_body(stored)
            {
                self.release(owner, (key.len() + stored.len()) as u64);
            }
            purged += 1;
        }
        queue.stats.dropped.fetch_add(purged, Ordering::Relaxed);
        self.sync().await?;
        tracing::warn!(uplink, purged, "outbox: parked events purged");
        Ok(purged)
    }

    /// The parked (key, value) pairs `seqs` selects.
    fn parked_raw(&self, queue: &Queue, seqs: Option<&[u64]>) -> Result<Raw, OutboxError> {
        let mut out = Vec::new();
        queue.parked.for_each(&mut |k, v| {
            let seq = k
                .get(1..9)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_be_bytes);
            if seq.is_some_and(|seq| selected(seqs, seq)) {
                out.push((k.to_vec(), v.to_vec()));
            }
            true
        })?;
        Ok(out)
    }

    async fn sync(&self) -> Result<(), OutboxError> {
        self.inner
            .committer
            .synced(self.inner.committer.ticket())
            .await?;
        Ok(())
    }
}

/// At open: counts `queue`'s parked events into its stats and `count_owner`,
/// and drops parked copies of events still queued (a crash mid-park).
pub(super) fn open_parked(
    queue_tree: &dyn crate::store::Tree,
    parked: &dyn crate::store::Tree,
    stats: &super::QueueStats,
    count_owner: &mut dyn FnMut(&str, u64),
) -> anyhow::Result<()> {
    let mut stale = Vec::new();
    parked.for_each(&mut |k, v| {
        match queue_tree.get(k) {
            Ok(Some(_)) => stale.push(k.to_vec()),
            _ => {
                stats.parked_events.fetch_add(1, Ordering::Relaxed);
                if let Some((_, _, stored)) = split_parked(v)
                    && let Some((Some(owner), _)) = owner_and_body(stored)
                {
                    count_owner(owner, (k.len() + stored.len()) as u64);
                }
            }
        }
        true
    })?;
    for key in stale {
        parked.remove(&key)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::tests::event;
    use super::super::{Outbox, QueueConfig};
    use crate::store::Sled;

    fn open(dir: &std::path::Path) -> anyhow::Result<Outbox> {
        Outbox::open(
            Arc::new(Sled::open(dir)?),
            [("cloud".to_owned(), QueueConfig::default())],
        )
    }

    #[tokio::test]
    async fn a_parked_event_keeps_its_owners_bytes_its_place_and_survives_a_crash_mid_park()
    -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        {
            let outbox = open(dir.path())?;
            for id in ["a", "b", "c"] {
                outbox
                    .send_as(Some("acme"), "cloud", &event(id), 1, None)
                    .await?;
            }
            let held = outbox.owner_usage("acme");
            let head = outbox.peek("cloud", 3)?;
            outbox
                .park("cloud", &head[1], "the endpoint refused the event: 400")
                .await?;
            // Parking again (a second forwarder pass) changes nothing.
            outbox.park("cloud", &head[1], "again").await?;
            let ids: Vec<String> = outbox
                .peek("cloud", 10)?
                .iter()
                .map(|e| Ok(e.event()?.id))
                .collect::<anyhow::Result<_>>()?;
            assert_eq!(ids, ["a", "c"]);
            // Still on disk, so still the owner's.
            assert_eq!(outbox.owner_usage("acme"), held);
            let status = &outbox.status()[0];
            assert_eq!((status.backlog_events, status.parked_events), (2, 1));
            // A crash between writing the parked copy and removing the queued
            // one: both exist until the outbox opens again.
            let queue = outbox.queue("cloud")?;
            let stored = queue.tree.get(&head[2].key)?.unwrap_or_default();
            queue
                .parked
                .insert(&head[2].key, &super::encode_parked(1, "crash", &stored))?;
        }
        let outbox = open(dir.path())?;
        let status = &outbox.status()[0];
        assert_eq!((status.backlog_events, status.parked_events), (2, 1));
        let parked = outbox.parked("cloud")?;
        assert_eq!(parked.len(), 1);
        assert_eq!(parked[0].entry.event()?.id, "b");
        assert_eq!(parked[0].reason, "the endpoint refused the event: 400");
        let one = outbox.owner_usage("acme").bytes / 3;
        // Retry puts it back in its old place: first, before c.
        assert_eq!(outbox.retry_parked("cloud", Some(&[u64::MAX])).await?, 0);
        assert_eq!(outbox.retry_parked("cloud", None).await?, 1);
        let head = outbox.peek("cloud", 10)?;
        assert_eq!(head.len(), 3);
        assert_eq!(head[1].event()?.id, "b");
        outbox.park("cloud", &head[1], "again").await?;
        assert_eq!(outbox.purge_parked("cloud", None).await?, 1);
        assert_eq!(outbox.owner_usage("acme").bytes, 2 * one);
        assert_eq!(outbox.status()[0].parked_events, 0);
        Ok(())
    }
}
