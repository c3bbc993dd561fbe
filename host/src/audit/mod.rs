//! The audit ledger: who changed what on this node, in a file nobody can
//! quietly rewrite.
//!
//! One record per system event (node start and stop, deploys, tenants and
//! tokens, signature and sign-in failures, outbox purges, registry GC) is
//! appended to `data_dir/audit/ledger.jsonl` and synced before the call that
//! made it is answered. Each record holds the sha256 of the one before and
//! the node's ed25519 signature ([`chain`]); `data_dir/audit/head.json` names
//! the last one, signed. The node's key is `data_dir/node.key`, readable
//! only by the node's user; `brink audit verify --key` checks a copy of the
//! ledger against the public key alone.
//!
//! At start the node walks the ledger. A torn last record (the node stopped
//! mid-write) is cut off and kept, as text, in a `ledger.torn` record; any
//! other break is logged and noted in a `ledger.broken` record, which
//! `brink audit verify` reports for ever after.

pub mod chain;

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use brink_registry::{PublicKey, SecretKey};

use chain::{Body, Break, Head, Record};

/// One system event, before it is sealed into a record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    pub principal: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub tenant: Option<String>,
    pub detail: String,
}

impl Entry {
    /// An event the node itself caused, that went well.
    pub fn node(action: &str, target: &str, detail: String) -> Self {
        Self {
            principal: "node".into(),
            action: action.into(),
            target: target.into(),
            outcome: "ok".into(),
            tenant: None,
            detail,
        }
    }
}

/// How often a refused sign-in is recorded: a flood of bad tokens must not
/// fill the disk with records, so the rest within the window are counted
/// into the next one.
const AUTH_FAILURE_WINDOW: Duration = Duration::from_secs(10);
/// How much of a torn record's bytes its `ledger.torn` record keeps.
const TORN_EXCERPT: usize = 4096;

/// The ledger, shared by everything that records.
#[derive(Clone)]
pub struct Audit {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

struct Inner {
    dir: PathBuf,
    key: SecretKey,
    writer: Mutex<Writer>,
    refused: Mutex<Refused>,
}

struct Writer {
    file: File,
    seq: u64,
    hash: String,
}

#[derive(Default)]
struct Refused {
    last_recorded: Option<Instant>,
    unrecorded: u64,
}

/// The ledger's file, its head and the node's key, under `data_dir`.
pub fn ledger_path(data_dir: &Path) -> PathBuf {
    data_dir.join("audit").join("ledger.jsonl")
}

pub fn head_path(data_dir: &Path) -> PathBuf {
    data_dir.join("audit").join("head.json")
}

pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("node.key")
}

impl Audit {
    /// Opens (or starts) the ledger under `data_dir`, repairing a torn tail
    /// and noting any break it finds in the ledger itself.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        let dir = data_dir.join("audit");
        create_private_dir(&dir)?;
        let key = node_key(data_dir)?;
        let path = ledger_path(data_dir);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let head = read_head(data_dir);
        let report = chain::verify(
            &bytes,
            head.as_ref().ok().and_then(Option::as_ref),
            &key.public(),
        );
        let torn = bytes
            .get(report.complete_bytes..)
            .unwrap_or_default()
            .to_vec();
        let file = open_append(&path, report.complete_bytes)?;
        let (seq, hash) = report
            .last
            .clone()
            .unwrap_or((0, chain::GENESIS.to_owned()));
        let audit = Self {
            inner: Arc::new(Inner {
                dir,
                key,
                writer: Mutex::new(Writer { file, seq, hash }),
                refused: Mutex::new(Refused::default()),
            }),
        };
        audit.note_breaks(&report, head.err(), &torn)?;
        Ok(audit)
    }

    fn note_breaks(
        &self,
        report: &chain::Report,
        head_error: Option<anyhow::Error>,
        torn: &[u8],
    ) -> anyhow::Result<()> {
        if !torn.is_empty() {
            tracing::warn!(
                bytes = torn.len(),
                "audit: the ledger's last record was torn (the node stopped while writing it); kept in a ledger.torn record"
            );
            let detail = format!(
                "{} bytes cut short at line {}: {}",
                torn.len(),
                report.records + 1,
                chain::excerpt(torn, TORN_EXCERPT)
            );
            self.record(Entry::node("ledger.torn", "ledger", detail))?;
        }
        let found = match (&report.first_break, head_error) {
            (Some(Break::Torn { .. }) | Some(Break::Noted { .. }) | None, None) => None,
            (_, Some(e)) => Some(format!("the head file is unreadable: {e:#}")),
            (Some(other), None) => Some(other.to_string()),
        };
        if let Some(found) = found {
            tracing::error!(
                found,
                "audit: the ledger was tampered with or damaged; noted in a ledger.broken record (`brink audit verify` names it)"
            );
            self.record(Entry::node(chain::NOTED_BREAK, "ledger", found))?;
        }
        Ok(())
    }

    /// Appends `entry`, synced to disk, and moves the signed head to it.
    /// Blocking: call it from a blocking thread on the async paths.
    pub fn record(&self, entry: Entry) -> anyhow::Result<u64> {
        let inner = &self.inner;
        let mut writer = inner.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let body = Body {
            seq: writer.seq + 1,
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            principal: entry.principal,
            action: entry.action,
            target: entry.target,
            outcome: entry.outcome,
            tenant: entry.tenant,
            detail: entry.detail,
            prev: writer.hash.clone(),
        };
        let (line, hash) = chain::encode(&body, &inner.key)?;
        writer
            .file
            .write_all(line.as_bytes())
            .and_then(|()| writer.file.sync_data())
            .context("appending to the audit ledger")?;
        writer.seq = body.seq;
        writer.hash.clone_from(&hash);
        write_head(&inner.dir, &Head::new(body.seq, &hash, &inner.key))?;
        Ok(body.seq)
    }

    /// Records `entry` from async code; a failure to record is logged, as
    /// the action it records has already happened.
    pub async fn record_async(&self, entry: Entry) {
        let audit = self.clone();
        let action = entry.action.clone();
        match tokio::task::spawn_blocking(move || audit.record(entry)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(action, "audit: could not record: {e:#}"),
            Err(e) => tracing::error!(action, "audit: could not record: {e}"),
        }
    }

    /// A refused sign-in to record, or `None` when one was recorded within
    /// the window (it is counted into the next).
    pub fn refused_sign_in(&self, mut entry: Entry) -> Option<Entry> {
        let mut refused = self
            .inner
            .refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if refused
            .last_recorded
            .is_some_and(|t| now.duration_since(t) < AUTH_FAILURE_WINDOW)
        {
            refused.unrecorded += 1;
            return None;
        }
        refused.last_recorded = Some(now);
        let more = std::mem::take(&mut refused.unrecorded);
        if more > 0 {
            entry.detail = format!(
                "{} ({more} more refused since the last such record)",
                entry.detail
            );
        }
        Some(entry)
    }

    /// Sign-ins refused since the last one recorded, now counted as recorded.
    pub fn take_unrecorded_refusals(&self) -> u64 {
        let mut refused = self
            .inner
            .refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut refused.unrecorded)
    }

    /// Records after `after`, at most `limit`, those of `tenant` only when given.
    pub fn read(
        &self,
        after: u64,
        limit: usize,
        tenant: Option<&str>,
    ) -> anyhow::Result<Vec<Record>> {
        let path = self.inner.dir.join("ledger.jsonl");
        // Under the writer's lock, so no half-written line is read.
        let text = {
            let _writer = self
                .inner
                .writer
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?
        };
        Ok(text
            .lines()
            .filter_map(chain::decode)
            .map(|read| read.record)
            .filter(|r| r.body.seq > after)
            .filter(|r| tenant.is_none_or(|t| r.body.tenant.as_deref() == Some(t)))
            .take(limit)
            .collect())
    }

    /// The node's public key, which verifies every record.
    pub fn public_key(&self) -> PublicKey {
        self.inner.key.public()
    }
}

/// The head file, if any.
pub fn read_head(data_dir: &Path) -> anyhow::Result<Option<Head>> {
    let path = head_path(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => {
            Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!("{} is not a ledger head", path.display())
            })?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Replaces the head through a synced temporary file and a rename, so a
/// crash leaves the old head or the new one, never half of one.
fn write_head(dir: &Path, head: &Head) -> anyhow::Result<()> {
    let path = dir.join("head.json");
    let temp = dir.join("head.json.tmp");
    let bytes = serde_json::to_vec(head)?;
    let mut file = private_file(&temp, true)?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&temp, &path))
        .and_then(|()| File::open(dir)?.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// The ledger for appending, cut back to its last complete line.
fn open_append(path: &Path, complete_bytes: usize) -> anyhow::Result<File> {
    let file = private_file(path, false)?;
    let len = file.metadata()?.len();
    let keep = complete_bytes as u64;
    if len > keep {
        file.set_len(keep)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cutting the torn record off {}", path.display()))?;
    }
    Ok(file)
}

fn private_file(path: &Path, truncate: bool) -> anyhow::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true);
    if truncate {
        options.write(true).truncate(true);
    } else {
        options.append(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// The node's own ed25519 key: made at first start, kept readable only by
/// the node's user, read back at every later start.
pub fn node_key(data_dir: &Path) -> anyhow::Result<SecretKey> {
    let path = key_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            return SecretKey::parse(&text).with_context(|| {
                format!(
                    "{} is not the node's key; move it away to make a new one (records signed with the old key then fail `brink audit verify`)",
                    path.display()
                )
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let key = SecretKey::generate()?;
    let mut file = private_file(&path, true)?;
    file.write_all(key.to_file_text().as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(path = %path.display(), key = %key.public(), "made the node's signing key");
    Ok(key)
}

#[cfg(test)]
mod tests;
