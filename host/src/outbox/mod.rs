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
//! the drain order. Values are a header (enqueue time, expiry) and the event
//! in the CloudEvents JSON format.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

pub mod forward;

use crate::bindings::CloudEvent;
use crate::event;
use crate::store::{Backend, Committer, Tree};

/// The highest priority.
pub const MAX_PRIORITY: u8 = 9;
const HEADER: usize = 17;

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
    /// The event, in the CloudEvents JSON format.
    pub json: Vec<u8>,
}

impl Entry {
    /// The event as the contract's record.
    pub fn event(&self) -> anyhow::Result<CloudEvent> {
        let parsed = event::parse_json(&self.json).context("a stored event does not parse")?;
        parsed
            .first()
            .map(event::to_wit)
            .context("a stored event is empty")
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
}

#[derive(Debug)]
struct Queue {
    tree: Arc<dyn Tree>,
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
}

fn now_ms() -> u64 {
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

fn key(priority: u8, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(MAX_PRIORITY - priority);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn encode(enqueued_ms: u64, expires_ms: Option<u64>, json: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER + json.len());
    v.push(1);
    v.extend_from_slice(&enqueued_ms.to_be_bytes());
    v.extend_from_slice(&expires_ms.unwrap_or(0).to_be_bytes());
    v.extend_from_slice(json);
    v
}

/// Splits a stored entry; none when it is not one (never written by us).
fn decode(k: Vec<u8>, v: &[u8]) -> Option<(Entry, Option<u64>)> {
    let priority = MAX_PRIORITY.checked_sub(*k.first()?)?;
    let seq = u64::from_be_bytes(k.get(1..9)?.try_into().ok()?);
    if v.first() != Some(&1) {
        return None;
    }
    let enqueued_ms = u64::from_be_bytes(v.get(1..9)?.try_into().ok()?);
    let expires = u64::from_be_bytes(v.get(9..17)?.try_into().ok()?);
    Some((
        Entry {
            key: k,
            seq,
            priority,
            enqueued_ms,
            json: v.get(HEADER..)?.to_vec(),
        },
        (expires != 0).then_some(expires),
    ))
}

impl Outbox {
    /// Opens the queues of `uplinks` on `backend`, counting what they hold.
    pub fn open(
        backend: Arc<dyn Backend>,
        uplinks: impl IntoIterator<Item = (String, QueueConfig)>,
    ) -> anyhow::Result<Self> {
        let committer = Committer::new(backend.clone())?;
        let mut queues = BTreeMap::new();
        for (name, config) in uplinks {
            let tree = backend.tree(&format!("__brink/outbox/{name}"))?;
            let stats = Arc::new(QueueStats::default());
            let (mut events, mut bytes) = (0u64, 0u64);
            tree.for_each(&mut |k, v| {
                events += 1;
                bytes += (k.len() + v.len()) as u64;
                true
            })?;
            stats.backlog_events.store(events, Ordering::Relaxed);
            stats.backlog_bytes.store(bytes, Ordering::Relaxed);
            queues.insert(
                name,
                Queue {
                    tree,
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
        let seq = self.append(uplink, event, priority, ttl)?;
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
        let queue = self.queue(uplink)?;
        if priority > MAX_PRIORITY {
            return Err(OutboxError::BadPriority(priority));
        }
        let json = event::from_wit(event)
            .and_then(|e| serde_json::to_vec(&e).map_err(event::EventError::Json))
            .map_err(|e| OutboxError::BadEvent(e.to_string()))?;
        let size = 9 + HEADER + json.len();
        if size > queue.config.max_event_bytes {
            return Err(OutboxError::TooLarge {
                uplink: uplink.to_owned(),
                size,
                limit: queue.config.max_event_bytes,
            });
        }
        let now = now_ms();
        let expires = ttl.map(|t| now.saturating_add(t.as_millis() as u64));
        let _admit = queue.admit.lock().unwrap_or_else(PoisonError::into_inner);
        self.make_room(uplink, queue, size as u64)?;
        let seq = self.inner.backend.next_id()?;
        let k = key(priority, seq);
        queue.tree.insert(&k, &encode(now, expires, &json))?;
        queue.stats.backlog_events.fetch_add(1, Ordering::Relaxed);
        queue
            .stats
            .backlog_bytes
            .fetch_add(size as u64, Ordering::Relaxed);
        Ok(seq)
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
            saturating_sub(&queue.stats.backlog_events, 1);
            saturating_sub(
                &queue.stats.backlog_bytes,
                (entry.key.len() + old.len()) as u64,
            );
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
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Sled;

    fn event(id: &str) -> CloudEvent {
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
        queue
            .tree
            .insert(&key(1, u64::MAX), &encode(now_ms(), None, b"not json"))?;
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
}
