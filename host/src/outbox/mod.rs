//! The outbox: durable store-and-forward queues, one per uplink.
//!
//! An event sent to an uplink is written to that uplink's tree and synced
//! (group commit, [`Committer`]) before `send` returns, so it survives a
//! crash or power cut from then on. The forwarder drains each queue in
//! priority order (9 first), and in send order within a priority, and
//! removes events only once the uplink acknowledged them: delivery is
//! at least once, with the event's own id stable for deduplication.
//!
//! Keys are `[9 - priority][sequence, big-endian]`, so the tree's order is
//! the drain order. Values are a header and the event in the CloudEvents
//! JSON format. Header version 1 is the enqueue time and expiry; version 2
//! adds the owner (the tenant whose function sent it), so a tenant's queued
//! bytes can be counted across uplinks and held to its quota. Events
//! without an owner are still written as version 1, and both are read.
//!
//! Every removal (acknowledged, discarded, expired, dropped, purged) goes
//! through one place, which reads the owner back from the removed value, so
//! an owner's count cannot drift from what is stored.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

pub(crate) mod parking;
mod stored;

pub use parking::{ParkedEntry, ParkedView};
use stored::owner_and_body;
pub(crate) use stored::{decode, encode, key};

use crate::bindings::CloudEvent;
use crate::event::{self, ExtTypes};
use crate::store::{Backend, Committer, Tree};

/// The highest priority.
pub const MAX_PRIORITY: u8 = 9;

/// What to do with a new event when the outbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Refuse the new event with an error the sender sees.
    #[default]
    Reject,
    /// Make room by dropping the oldest events of the lowest priority.
    DropOldest,
}

/// Limits and policy of one uplink's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// Bytes the queue may hold (events as stored).
    pub max_bytes: u64,
    /// Events the queue may hold.
    pub max_events: u64,
    pub when_full: WhenFull,
    /// The largest event accepted, in bytes as stored.
    pub max_event_bytes: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_bytes: 256 << 20,
            max_events: 1_000_000,
            when_full: WhenFull::Reject,
            max_event_bytes: 1 << 20,
        }
    }
}

/// Why an event was not stored.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("no uplink named `{0}`")]
    UnknownUplink(String),
    #[error("priority {0} is out of range (0 to 9)")]
    BadPriority(u8),
    #[error("the event is not valid: {0}")]
    BadEvent(String),
    #[error("an event of {size} bytes is over the limit of {limit} bytes for uplink `{uplink}`")]
    TooLarge {
        uplink: String,
        size: usize,
        limit: usize,
    },
    #[error(
        "the outbox of uplink `{uplink}` is full ({events} events, {bytes} bytes) and refuses new events"
    )]
    Full {
        uplink: String,
        events: u64,
        bytes: u64,
    },
    #[error(
        "tenant `{owner}` has {used} bytes queued in the outbox; an event of {size} bytes would exceed its quota of {quota} bytes (room frees as uplinks drain)"
    )]
    OwnerQuota {
        owner: String,
        used: u64,
        size: u64,
        quota: u64,
    },
    #[error("the outbox failed: {0:#}")]
    Store(#[from] anyhow::Error),
}

/// One stored event.
#[derive(Debug, Clone)]
pub struct Entry {
    key: Vec<u8>,
    pub seq: u64,
    pub priority: u8,
    /// When it was sent, in ms since the Unix epoch.
    pub enqueued_ms: u64,
    /// The tenant whose function sent it; none for the manifest's functions.
    pub owner: Option<String>,
    /// The event, in the CloudEvents JSON format.
    pub json: Vec<u8>,
}

impl Entry {
    /// The event as the contract's record.
    pub fn event(&self) -> anyhow::Result<CloudEvent> {
        Ok(self.typed_event()?.0)
    }

    /// The event, and the JSON types its extensions were stored with.
    pub fn typed_event(&self) -> anyhow::Result<(CloudEvent, ExtTypes)> {
        event::json::parse_one(&self.json).context("a stored event does not parse")
    }
}

/// Counters of one uplink's queue (since the host started, except the backlog).
#[derive(Debug, Default)]
pub struct QueueStats {
    pub backlog_events: AtomicU64,
    pub backlog_bytes: AtomicU64,
    pub sent: AtomicU64,
    pub retried: AtomicU64,
    pub dropped: AtomicU64,
    pub expired: AtomicU64,
    pub rejected: AtomicU64,
    /// 1 while the uplink is connected (its last delivery succeeded).
    pub connected: AtomicU64,
    /// Events in the parking queue now: refused for good by the uplink.
    pub parked_events: AtomicU64,
    /// Events parked since the host started.
    pub parked_total: AtomicU64,
}

#[derive(Debug)]
struct Queue {
    tree: Arc<dyn Tree>,
    /// Events the uplink refused for good ([`parking`]).
    parked: Arc<dyn Tree>,
    config: QueueConfig,
    stats: Arc<QueueStats>,
    /// Serialises the capacity check with the write, so a full queue is
    /// never overfilled by concurrent senders.
    admit: Mutex<()>,
    /// Wakes the forwarder when an event arrives.
    arrived: Arc<tokio::sync::Notify>,
}

/// The outbox of a host: cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    backend: Arc<dyn Backend>,
    committer: Committer,
    queues: BTreeMap<String, Queue>,
    /// What each owner has queued across every uplink, and its quota.
    owners: Mutex<HashMap<String, OwnerUsage>>,
}

/// What one owner holds queued, across every uplink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct OwnerUsage {
    pub events: u64,
    pub bytes: u64,
    /// Bytes it may hold; none: only the uplinks' own limits apply.
    pub quota: Option<u64>,
}

/// A snapshot of one uplink's queue.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QueueStatus {
    pub uplink: String,
    pub backlog_events: u64,
    pub backlog_bytes: u64,
    /// Age of the oldest event waiting, in ms.
    pub oldest_age_ms: Option<u64>,
    pub sent: u64,
    pub retried: u64,
    pub dropped: u64,
    pub expired: u64,
    pub rejected: u64,
    pub connected: bool,
    /// Events the uplink refused for good, waiting in the parking queue.
    pub parked_events: u64,
    /// Events parked since the host started.
    pub parked_total: u64,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Counters never wrap below zero, even if an entry was never counted.
fn saturating_sub(counter: &AtomicU64, n: u64) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(n))
    });
}

impl Outbox {
    /// Opens the queues of `uplinks` on `backend`, counting what they hold.
    pub fn open(
        backend: Arc<dyn Backend>,
        uplinks: impl IntoIterator<Item = (String, QueueConfig)>,
    ) -> anyhow::Result<Self> {
        let committer = Committer::new(backend.clone())?;
        let mut queues = BTreeMap::new();
        let mut owners: HashMap<String, OwnerUsage> = HashMap::new();
        for (name, config) in uplinks {
            let tree = backend.tree(&format!("__brink/outbox/{name}"))?;
            let parked = backend.tree(&format!("__brink/outbox-parked/{name}"))?;
            let stats = Arc::new(QueueStats::default());
            parking::open_parked(&*tree, &*parked, &stats, &mut |owner, size| {
                let usage = owners.entry(owner.to_owned()).or_default();
                usage.events += 1;
                usage.bytes += size;
            })?;
            let (mut events, mut bytes) = (0u64, 0u64);
            tree.for_each(&mut |k, v| {
                let size = (k.len() + v.len()) as u64;
                events += 1;
                bytes += size;
                if let Some((Some(owner), _)) = owner_and_body(v) {
                    let usage = owners.entry(owner.to_owned()).or_default();
                    usage.events += 1;
                    usage.bytes += size;
                }
                true
            })?;
            stats.backlog_events.store(events, Ordering::Relaxed);
            stats.backlog_bytes.store(bytes, Ordering::Relaxed);
            queues.insert(
                name,
                Queue {
                    tree,
                    parked,
                    config,
                    stats,
                    admit: Mutex::new(()),
                    arrived: Arc::new(tokio::sync::Notify::new()),
                },
            );
        }
        Ok(Self {
            inner: Arc::new(Inner {
                backend,
                committer,
                queues,
                owners: Mutex::new(owners),
            }),
        })
    }

    /// The uplinks this outbox has queues for.
    pub fn uplinks(&self) -> impl Iterator<Item = &str> {
        self.inner.queues.keys().map(String::as_str)
    }

    fn queue(&self, uplink: &str) -> Result<&Queue, OutboxError> {
        self.inner
            .queues
            .get(uplink)
            .ok_or_else(|| OutboxError::UnknownUplink(uplink.to_owned()))
    }

    /// The counters of `uplink`'s queue.
    pub fn stats(&self, uplink: &str) -> Result<Arc<QueueStats>, OutboxError> {
        Ok(self.queue(uplink)?.stats.clone())
    }

    /// What wakes `uplink`'s forwarder.
    pub fn arrivals(&self, uplink: &str) -> Result<Arc<tokio::sync::Notify>, OutboxError> {
        Ok(self.queue(uplink)?.arrived.clone())
    }

    /// Stores `event` for `uplink` and returns its sequence number once it
    /// is on disk.
    pub async fn send(
        &self,
        uplink: &str,
        event: &CloudEvent,
        priority: u8,
        ttl: Option<Duration>,
    ) -> Result<u64, OutboxError> {
        self.send_as(None, uplink, event, priority, ttl).await
    }

    /// [`Outbox::send`] on behalf of `owner`, counted against its quota.
    pub async fn send_as(
        &self,
        owner: Option<&str>,
        uplink: &str,
        event: &CloudEvent,
        priority: u8,
        ttl: Option<Duration>,
    ) -> Result<u64, OutboxError> {
        let types = ExtTypes::default();
        self.send_typed(owner, uplink, (event, &types), priority, ttl)
            .await
    }

    /// [`Outbox::send_as`], storing the extensions `types` names as those
    /// JSON types (what the event that led to this one carried).
    pub async fn send_typed(
        &self,
        owner: Option<&str>,
        uplink: &str,
        event: (&CloudEvent, &ExtTypes),
        priority: u8,
        ttl: Option<Duration>,
    ) -> Result<u64, OutboxError> {
        let seq = self.append_typed(owner, uplink, event, priority, ttl)?;
        let ticket = self.inner.committer.ticket();
        self.inner.committer.synced(ticket).await?;
        if let Ok(queue) = self.queue(uplink) {
            queue.arrived.notify_one();
        }
        Ok(seq)
    }

    /// Writes `event` to `uplink`'s queue (not yet synced); its sequence number.
    pub fn append(
        &self,
        uplink: &str,
        event: &CloudEvent,
        priority: u8,
        ttl: Option<Duration>,
    ) -> Result<u64, OutboxError> {
        self.append_as(None, uplink, event, priority, ttl)
    }

    /// [`Outbox::append`] on behalf of `owner`.
    pub fn append_as(
        &self,
        owner: Option<&str>,
        uplink: &str,
        event: &CloudEvent,
        priority: u8,
        ttl: Option<Duration>,
    ) -> Result<u64, OutboxError> {
        let types = ExtTypes::default();
        self.append_typed(owner, uplink, (event, &types), priority, ttl)
    }

    /// [`Outbox::append_as`] with the extensions' JSON types.
    pub fn append_typed(
        &self,
        owner: Option<&str>,
        uplink: &str,
        (event, types): (&CloudEvent, &ExtTypes),
        priority: u8,
        ttl: Option<Duration>,
    ) -> Result<u64, OutboxError> {
        let queue = self.queue(uplink)?;
        if priority > MAX_PRIORITY {
            return Err(OutboxError::BadPriority(priority));
        }
        let json =
            event::json::write(event, types).map_err(|e| OutboxError::BadEvent(e.to_string()))?;
        let now = now_ms();
        let expires = ttl.map(|t| now.saturating_add(t.as_millis() as u64));
        let value = encode(now, expires, owner, &json);
        let size = 9 + value.len();
        if size > queue.config.max_event_bytes {
            return Err(OutboxError::TooLarge {
                uplink: uplink.to_owned(),
                size,
                limit: queue.config.max_event_bytes,
            });
        }
        let size = size as u64;
        let _admit = queue.admit.lock().unwrap_or_else(PoisonError::into_inner);
        // The owner's room is taken before the queue's: a tenant over its
        // quota must not make the queue drop other tenants' events.
        if let Some(owner) = owner {
            self.reserve(owner, size)?;
        }
        let stored = self.make_room(uplink, queue, size).and_then(|()| {
            let seq = self.inner.backend.next_id()?;
            queue.tree.insert(&key(priority, seq), &value)?;
            Ok(seq)
        });
        let seq = match stored {
            Ok(seq) => seq,
            Err(e) => {
                if let Some(owner) = owner {
                    self.release(owner, size);
                }
                return Err(e);
            }
        };
        queue.stats.backlog_events.fetch_add(1, Ordering::Relaxed);
        queue.stats.backlog_bytes.fetch_add(size, Ordering::Relaxed);
        Ok(seq)
    }

    /// Takes `size` bytes of `owner`'s quota, or says why not.
    fn reserve(&self, owner: &str, size: u64) -> Result<(), OutboxError> {
        let mut owners = self
            .inner
            .owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let usage = owners.entry(owner.to_owned()).or_default();
        if let Some(quota) = usage.quota
            && usage.bytes.saturating_add(size) > quota
        {
            tracing::warn!(
                owner,
                used = usage.bytes,
                quota,
                "outbox: over the tenant's quota"
            );
            return Err(OutboxError::OwnerQuota {
                owner: owner.to_owned(),
                used: usage.bytes,
                size,
                quota,
            });
        }
        usage.events += 1;
        usage.bytes += size;
        Ok(())
    }

    /// Gives back what one event of `owner`'s held.
    fn release(&self, owner: &str, size: u64) {
        let mut owners = self
            .inner
            .owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(usage) = owners.get_mut(owner) {
            usage.events = usage.events.saturating_sub(1);
            usage.bytes = usage.bytes.saturating_sub(size);
        }
    }

    /// Holds `owner` to `quota` bytes across every uplink (none: no quota).
    /// What it already has queued stays; new events wait for room.
    pub fn set_owner_quota(&self, owner: &str, quota: Option<u64>) {
        self.inner
            .owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(owner.to_owned())
            .or_default()
            .quota = quota;
    }

    /// What `owner` has queued across every uplink.
    pub fn owner_usage(&self, owner: &str) -> OwnerUsage {
        self.inner
            .owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(owner)
            .copied()
            .unwrap_or_default()
    }

    /// Every owner's usage, by owner.
    pub fn owners(&self) -> BTreeMap<String, OwnerUsage> {
        self.inner
            .owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Refuses, or drops the oldest lowest-priority events, until an event
    /// of `size` bytes fits.
    fn make_room(&self, uplink: &str, queue: &Queue, size: u64) -> Result<(), OutboxError> {
        let stats = &queue.stats;
        let fits = || {
            stats.backlog_events.load(Ordering::Relaxed) < queue.config.max_events
                && stats.backlog_bytes.load(Ordering::Relaxed) + size <= queue.config.max_bytes
        };
        if fits() {
            return Ok(());
        }
        if queue.config.when_full == WhenFull::Reject {
            stats.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(uplink, "outbox full: refused a new event");
            return Err(OutboxError::Full {
                uplink: uplink.to_owned(),
                events: stats.backlog_events.load(Ordering::Relaxed),
                bytes: stats.backlog_bytes.load(Ordering::Relaxed),
            });
        }
        // The lowest priority sorts last; its oldest is the first of its run.
        while !fits() {
            let Some(victim) = self.oldest_of_lowest_priority(queue)? else {
                break;
            };
            if self.remove(queue, &victim)? {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    uplink,
                    seq = victim.seq,
                    priority = victim.priority,
                    "outbox full: dropped the oldest event"
                );
            }
        }
        Ok(())
    }

    fn oldest_of_lowest_priority(&self, queue: &Queue) -> anyhow::Result<Option<Entry>> {
        for rank in (0..=MAX_PRIORITY).rev() {
            if let Some((k, v)) = queue.tree.scan(&[rank], None, 1)?.into_iter().next() {
                return Ok(decode(k, &v).map(|(e, _)| e));
            }
        }
        Ok(None)
    }

    /// Removes `entry` if it is still there; whether it was.
    fn remove(&self, queue: &Queue, entry: &Entry) -> anyhow::Result<bool> {
        let removed = queue.tree.remove(&entry.key)?;
        if let Some(old) = &removed {
            let size = (entry.key.len() + old.len()) as u64;
            saturating_sub(&queue.stats.backlog_events, 1);
            saturating_sub(&queue.stats.backlog_bytes, size);
            if let Some((Some(owner), _)) = owner_and_body(old) {
                self.release(owner, size);
            }
        }
        Ok(removed.is_some())
    }

    /// Up to `max` events at the head of `uplink`'s queue, in drain order;
    /// expired ones on the way are removed and counted.
    pub fn peek(&self, uplink: &str, max: usize) -> Result<Vec<Entry>, OutboxError> {
        let queue = self.queue(uplink)?;
        let now = now_ms();
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        while out.len() < max {
            let page = queue.tree.scan(&[], after.as_deref(), max - out.len())?;
            if page.is_empty() {
                break;
            }
            for (k, v) in page {
                after = Some(k.clone());
                match decode(k, &v) {
                    Some((entry, Some(expires))) if expires <= now => {
                        if self.remove(queue, &entry)? {
                            queue.stats.expired.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(
                                uplink,
                                seq = entry.seq,
                                "outbox: an event expired before it could be sent"
                            );
                        }
                    }
                    Some((entry, _)) => out.push(entry),
                    None => tracing::warn!(uplink, "outbox: skipped an unreadable entry"),
                }
            }
        }
        Ok(out)
    }

    /// Removes `entries`, which `uplink` acknowledged.
    pub fn ack(&self, uplink: &str, entries: &[Entry]) -> Result<(), OutboxError> {
        self.remove_counting(uplink, entries, |s| &s.sent)
    }

    /// Removes `entries` without sending them, counted as dropped.
    pub fn discard(&self, uplink: &str, entries: &[Entry]) -> Result<(), OutboxError> {
        self.remove_counting(uplink, entries, |s| &s.dropped)
    }

    /// Removes `entries`, adding those still there to `counter`.
    fn remove_counting(
        &self,
        uplink: &str,
        entries: &[Entry],
        counter: fn(&QueueStats) -> &AtomicU64,
    ) -> Result<(), OutboxError> {
        let queue = self.queue(uplink)?;
        for entry in entries {
            if self.remove(queue, entry)? {
                counter(&queue.stats).fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Removes every event waiting for `uplink`; how many.
    pub async fn purge(&self, uplink: &str) -> Result<u64, OutboxError> {
        let queue = self.queue(uplink)?;
        let mut purged = 0;
        loop {
            let page = queue.tree.scan(&[], None, 1000)?;
            if page.is_empty() {
                break;
            }
            for (k, v) in page {
                if let Some((entry, _)) = decode(k.clone(), &v) {
                    if self.remove(queue, &entry)? {
                        purged += 1;
                    }
                } else {
                    queue.tree.remove(&k)?;
                }
            }
        }
        queue.stats.dropped.fetch_add(purged, Ordering::Relaxed);
        tracing::warn!(uplink, purged, "outbox purged");
        self.inner
            .committer
            .synced(self.inner.committer.ticket())
            .await?;
        Ok(purged)
    }

    /// A snapshot of every queue.
    pub fn status(&self) -> Vec<QueueStatus> {
        let now = now_ms();
        self.inner
            .queues
            .iter()
            .map(|(name, q)| {
                let s = &q.stats;
                // Sequence numbers grow with time: the oldest event is the
                // first of some priority's run.
                let oldest = (0..=MAX_PRIORITY)
                    .filter_map(|rank| q.tree.scan(&[rank], None, 1).ok()?.into_iter().next())
                    .filter_map(|(k, v)| decode(k, &v).map(|(e, _)| e.enqueued_ms))
                    .min();
                QueueStatus {
                    uplink: name.clone(),
                    backlog_events: s.backlog_events.load(Ordering::Relaxed),
                    backlog_bytes: s.backlog_bytes.load(Ordering::Relaxed),
                    oldest_age_ms: oldest.map(|t| now.saturating_sub(t)),
                    sent: s.sent.load(Ordering::Relaxed),
                    retried: s.retried.load(Ordering::Relaxed),
                    dropped: s.dropped.load(Ordering::Relaxed),
                    expired: s.expired.load(Ordering::Relaxed),
                    rejected: s.rejected.load(Ordering::Relaxed),
                    connected: s.connected.load(Ordering::Relaxed) == 1,
                    parked_events: s.parked_events.load(Ordering::Relaxed),
                    parked_total: s.parked_total.load(Ordering::Relaxed),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Sled;

    #[test]
    fn an_owner_past_255_bytes_is_cut_at_a_character_boundary_so_the_entry_still_reads() {
        // 127 two-byte characters and one more: byte 255 falls inside it.
        let owner = "é".repeat(128);
        let stored = encode(1, None, Some(&owner), b"{}");
        let read = decode(key(0, 7), &stored).map(|(entry, _)| entry.owner);
        assert_eq!(read, Some(Some("é".repeat(127))));
    }

    pub(super) fn event(id: &str) -> CloudEvent {
        CloudEvent {
            id: id.into(),
            source: "/test".into(),
            type_: "com.example.reading".into(),
            specversion: "1.0".into(),
            subject: None,
            time: None,
            datacontenttype: Some("application/json".into()),
            dataschema: None,
            extensions: vec![],
            data: Some(br#"{"value":1}"#.to_vec()),
        }
    }

    fn open(dir: &std::path::Path, config: QueueConfig) -> anyhow::Result<Outbox> {
        Outbox::open(Arc::new(Sled::open(dir)?), [("cloud".to_owned(), config)])
    }

    fn ids(entries: &[Entry]) -> anyhow::Result<Vec<String>> {
        entries.iter().map(|e| Ok(e.event()?.id)).collect()
    }

    #[tokio::test]
    async fn events_drain_by_priority_then_in_send_order_and_survive_reopening()
    -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        {
            let outbox = open(dir.path(), QueueConfig::default())?;
            for (id, priority) in [("a", 1), ("b", 9), ("c", 1), ("d", 5), ("e", 9)] {
                outbox.send("cloud", &event(id), priority, None).await?;
            }
            assert_eq!(ids(&outbox.peek("cloud", 10)?)?, ["b", "e", "d", "a", "c"]);
            let head = outbox.peek("cloud", 2)?;
            outbox.ack("cloud", &head)?;
            assert_eq!(outbox.status()[0].sent, 2);
        }
        let outbox = open(dir.path(), QueueConfig::default())?;
        assert_eq!(ids(&outbox.peek("cloud", 10)?)?, ["d", "a", "c"]);
        let status = &outbox.status()[0];
        assert_eq!(status.backlog_events, 3);
        assert!(status.oldest_age_ms.is_some());
        Ok(())
    }

    #[tokio::test]
    async fn a_full_outbox_rejects_or_drops_the_oldest_lowest_priority_event() -> anyhow::Result<()>
    {
        let dir = tempfile::tempdir()?;
        let outbox = open(
            dir.path(),
            QueueConfig {
                max_events: 3,
                ..QueueConfig::default()
            },
        )?;
        for id in ["a", "b", "c"] {
            outbox.send("cloud", &event(id), 1, None).await?;
        }
        let full = outbox.send("cloud", &event("d"), 1, None).await;
        assert!(matches!(full, Err(OutboxError::Full { .. })), "{full:?}");
        assert_eq!(outbox.status()[0].rejected, 1);

        let dir = tempfile::tempdir()?;
        let outbox = open(
            dir.path(),
            QueueConfig {
                max_events: 3,
                when_full: WhenFull::DropOldest,
                ..QueueConfig::default()
            },
        )?;
        for (id, priority) in [("low-1", 0), ("high", 9), ("low-2", 0), ("new", 5)] {
            outbox.send("cloud", &event(id), priority, None).await?;
        }
        assert_eq!(ids(&outbox.peek("cloud", 10)?)?, ["high", "new", "low-2"]);
        assert_eq!(outbox.status()[0].dropped, 1);
        Ok(())
    }

    #[tokio::test]
    async fn expired_events_are_removed_and_counted_never_sent() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let outbox = open(dir.path(), QueueConfig::default())?;
        outbox
            .send("cloud", &event("short"), 5, Some(Duration::from_millis(10)))
            .await?;
        outbox.send("cloud", &event("kept"), 5, None).await?;
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(ids(&outbox.peek("cloud", 10)?)?, ["kept"]);
        let status = &outbox.status()[0];
        assert_eq!((status.expired, status.backlog_events), (1, 1));
        Ok(())
    }

    #[tokio::test]
    async fn bad_sends_are_refused_with_their_reason() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let outbox = open(
            dir.path(),
            QueueConfig {
                max_event_bytes: 200,
                ..QueueConfig::default()
            },
        )?;
        assert!(matches!(
            outbox.send("nowhere", &event("a"), 1, None).await,
            Err(OutboxError::UnknownUplink(_))
        ));
        assert!(matches!(
            outbox.send("cloud", &event("a"), 10, None).await,
            Err(OutboxError::BadPriority(10))
        ));
        let mut big = event("big");
        big.datacontenttype = Some("application/octet-stream".into());
        big.data = Some(vec![b'x'; 500]);
        assert!(matches!(
            outbox.send("cloud", &big, 1, None).await,
            Err(OutboxError::TooLarge { .. })
        ));
        let mut bad = event("bad");
        bad.source = String::new();
        assert!(matches!(
            outbox.send("cloud", &bad, 1, None).await,
            Err(OutboxError::BadEvent(_))
        ));
        assert_eq!(outbox.status()[0].backlog_events, 0);
        Ok(())
    }

    #[tokio::test]
    async fn an_unreadable_entry_is_skipped_then_discarded_as_dropped() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let outbox = open(dir.path(), QueueConfig::default())?;
        outbox.send("cloud", &event("good"), 1, None).await?;
        let queue = outbox.queue("cloud")?;
        queue.tree.insert(
            &key(1, u64::MAX),
            &encode(now_ms(), None, None, b"not json"),
        )?;
        let head = outbox.peek("cloud", 10)?;
        assert_eq!(head.len(), 2);
        assert!(head[1].event().is_err());
        outbox.discard("cloud", &head[1..])?;
        assert_eq!(ids(&outbox.peek("cloud", 10)?)?, ["good"]);
        assert_eq!(outbox.status()[0].dropped, 1);
        Ok(())
    }

    #[tokio::test]
    async fn purge_empties_the_queue_and_counts_it_as_dropped() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let outbox = open(dir.path(), QueueConfig::default())?;
        for i in 0..1500 {
            outbox.append("cloud", &event(&format!("e{i}")), 3, None)?;
        }
        assert_eq!(outbox.purge("cloud").await?, 1500);
        let status = &outbox.status()[0];
        assert_eq!(
            (status.backlog_events, status.backlog_bytes, status.dropped),
            (0, 0, 1500)
        );
        Ok(())
    }

    #[tokio::test]
    async fn an_owners_quota_holds_across_uplinks_frees_as_they_drain_and_survives_a_reopen()
    -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let uplinks = || {
            [
                ("cloud".to_owned(), QueueConfig::default()),
                (
                    "backup".to_owned(),
                    QueueConfig {
                        max_events: 4,
                        when_full: WhenFull::DropOldest,
                        ..QueueConfig::default()
                    },
                ),
            ]
        };
        let one = {
            let outbox = Outbox::open(Arc::new(Sled::open(dir.path())?), uplinks())?;
            outbox
                .send_as(Some("test"), "cloud", &event("x"), 1, None)
                .await?;
            let size = outbox.owner_usage("test").bytes;
            outbox.purge("cloud").await?;
            assert_eq!(outbox.owner_usage("test"), OwnerUsage::default());
            size
        };
        {
            let outbox = Outbox::open(Arc::new(Sled::open(dir.path())?), uplinks())?;
            outbox.set_owner_quota("acme", Some(3 * one));
            outbox
                .send_as(Some("acme"), "cloud", &event("a"), 1, None)
                .await?;
            outbox
                .send_as(Some("acme"), "backup", &event("b"), 1, None)
                .await?;
            outbox
                .send_as(Some("bolt"), "backup", &event("c"), 1, None)
                .await?;
            outbox.send("backup", &event("d"), 1, None).await?;
            outbox
                .send_as(Some("acme"), "cloud", &event("e"), 1, None)
                .await?;
            // Over its quota: refused with the numbers, and the full backup
            // queue dropped nobody's event to make room for it.
            let over = outbox
                .send_as(Some("acme"), "backup", &event("f"), 1, None)
                .await;
            let refused = match &over {
                Err(OutboxError::OwnerQuota {
                    owner, used, quota, ..
                }) => Some((owner.as_str(), *used, *quota)),
                _ => None,
            };
            assert_eq!(refused, Some(("acme", 3 * one, 3 * one)), "{over:?}");
            assert_eq!(ids(&outbox.peek("backup", 10)?)?, ["b", "c", "d"]);
            assert_eq!(outbox.owner_usage("acme").events, 3);
            // Others are not held to acme's quota.
            outbox
                .send_as(Some("bolt"), "cloud", &event("g"), 1, None)
                .await?;
            // An acknowledged event frees its owner's room.
            let head = outbox.peek("cloud", 1)?;
            assert_eq!(head[0].owner.as_deref(), Some("acme"));
            outbox.ack("cloud", &head)?;
            outbox
                .send_as(Some("acme"), "backup", &event("h"), 1, None)
                .await?;
        }
        // Counted again from what is stored, version 1 entries beside version 2.
        let outbox = Outbox::open(Arc::new(Sled::open(dir.path())?), uplinks())?;
        assert_eq!(outbox.owner_usage("acme").bytes, 3 * one);
        assert_eq!(outbox.owner_usage("bolt").events, 2);
        let backup = outbox.peek("backup", 10)?;
        let owners: Vec<Option<&str>> = backup.iter().map(|e| e.owner.as_deref()).collect();
        assert_eq!(owners, [Some("acme"), Some("bolt"), None, Some("acme")]);
        outbox.discard("backup", &backup[..1])?;
        assert_eq!(outbox.owner_usage("acme").bytes, 2 * one);
        outbox.purge("cloud").await?;
        outbox.purge("backup").await?;
        assert_eq!(outbox.owners().values().map(|u| u.bytes).sum::<u64>(), 0);
        Ok(())
    }
}
