//! The ledger's file format, and the walk that checks it.
//!
//! One record per line, as JSON with its fields in a fixed order:
//!
//! ```text
//! {"seq":7,"time":"…","principal":"operator","action":"function.publish",
//!  "target":"acme/filter@1.0.0","outcome":"ok","tenant":"acme","detail":"…",
//!  "prev":"<sha256 of record 6>","hash":"<sha256 of this record>","sig":"…"}
//! ```
//!
//! `hash` is the sha256 of the line's bytes up to `,"hash"` (closed with
//! `}`), so it covers exactly what was written, never a re-serialisation.
//! `sig` is the node's ed25519 signature over `hash`: every record is a
//! signed checkpoint, so rewriting the chain from any record onwards needs
//! the node's key. The signed head file names the last record written, so
//! records cut off the end are missed too.

use std::fmt;

use base64::Engine as _;
use brink_registry::{PublicKey, SecretKey, Signature};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The kind of statement a record's signature makes (see `sign_statement`).
pub const RECORD_KIND: &str = "brink-audit-record";
/// The kind of statement the head's signature makes.
pub const HEAD_KIND: &str = "brink-audit-head";
const HASH_FIELD: &str = ",\"hash\":\"";

/// What a record says, in the order it is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Body {
    /// 1, 2, 3, …: a gap is a deleted record.
    pub seq: u64,
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    /// `operator`, `tenant:<id>`, `node` or `unauthenticated`.
    pub principal: String,
    /// What was done, e.g. `function.publish`, `tenant.create`, `node.start`.
    pub action: String,
    /// What it was done to, e.g. `acme/filter@1.0.0`.
    pub target: String,
    /// `ok`, or the status and why it was refused or failed.
    pub outcome: String,
    /// The tenant the record concerns: that tenant may read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// The previous record's `hash` ([`GENESIS`] for the first).
    pub prev: String,
}

/// A record as read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    #[serde(flatten)]
    pub body: Body,
    pub hash: String,
    pub sig: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Seal {
    hash: String,
    sig: String,
}

/// A record read from a line, and the hash its bytes really have.
#[derive(Debug)]
pub struct Read {
    pub record: Record,
    pub computed: String,
}

/// The line for `body` (with its newline) and its hash.
pub fn encode(body: &Body, key: &SecretKey) -> anyhow::Result<(String, String)> {
    let json = serde_json::to_string(body)?;
    let hash = hex::encode(Sha256::digest(json.as_bytes()));
    let sig = key.sign_statement(RECORD_KIND, &hash).signature;
    let open = json.strip_suffix('}').unwrap_or(&json);
    Ok((
        format!("{open}{HASH_FIELD}{hash}\",\"sig\":\"{sig}\"}}\n"),
        hash,
    ))
}

/// Reads one line (without its newline); `None` when it is not a record.
pub fn decode(line: &str) -> Option<Read> {
    // Inside a JSON string every `"` is escaped, so the last `,"hash":"`
    // is the seal's.
    let at = line.rfind(HASH_FIELD)?;
    let body_text = format!("{}}}", line.get(..at)?);
    let seal: Seal = serde_json::from_str(&format!("{{{}", line.get(at + 1..)?)).ok()?;
    let body: Body = serde_json::from_str(&body_text).ok()?;
    Some(Read {
        computed: hex::encode(Sha256::digest(body_text.as_bytes())),
        record: Record {
            body,
            hash: seal.hash,
            sig: seal.sig,
        },
    })
}

fn signed_by(key: &PublicKey, kind: &str, statement: &str, sig: &str) -> bool {
    Signature {
        key: key.to_string(),
        signature: sig.to_owned(),
    }
    .verifies_statement(kind, statement)
}

/// The head file: the last record written, signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
    /// `ed25519:<base64>`: the node's key.
    pub key: String,
    pub sig: String,
}

impl Head {
    pub fn new(seq: u64, hash: &str, key: &SecretKey) -> Self {
        let signature = key.sign_statement(HEAD_KIND, &head_statement(seq, hash));
        Self {
            seq,
            hash: hash.to_owned(),
            key: signature.key,
            sig: signature.signature,
        }
    }

    fn signed_by(&self, key: &PublicKey) -> bool {
        signed_by(
            key,
            HEAD_KIND,
            &head_statement(self.seq, &self.hash),
            &self.sig,
        )
    }
}

fn head_statement(seq: u64, hash: &str) -> String {
    format!("{seq} {hash}")
}

/// The first thing wrong with a ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Break {
    /// A line that is not a record at all.
    Unreadable { line: usize },
    /// A record whose bytes no longer match its hash.
    Edited { seq: u64, line: usize },
    /// A record whose hash was recomputed, but not signed by the node's key.
    Forged { seq: u64, line: usize },
    /// Records `from..=to` are gone.
    Deleted { from: u64, to: u64, line: usize },
    /// Record `seq` stands where record `expected` belongs.
    Reordered {
        seq: u64,
        expected: u64,
        line: usize,
    },
    /// Record `seq` does not follow the record before it: that one was replaced.
    Relinked { seq: u64, line: usize },
    /// The file ends at record `last`; the signed head names record `head`.
    Truncated { last: u64, head: u64 },
    /// The head names a record whose hash is not the one in the file.
    HeadMismatch { seq: u64 },
    /// The head file is not signed by the node's key, or unreadable.
    HeadForged,
    /// More than one record, and no head file: it was removed, perhaps to
    /// hide records cut off the end. (After the first record alone, a
    /// crash before its head was written leaves this state legitimately.)
    HeadMissing { last: u64 },
    /// The last line stops mid-record: the node stopped while writing it.
    Torn { line: usize, bytes: usize },
    /// A record in which the node itself noted a break it found at start.
    Noted { seq: u64, detail: String },
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreadable { line } => write!(f, "edited: line {line} is not a ledger record"),
            Self::Edited { seq, line } => write!(
                f,
                "edited: record {seq} (line {line}) does not match its hash"
            ),
            Self::Forged { seq, line } => write!(
                f,
                "rewritten: record {seq} (line {line}) has a hash that matches but no signature by the node's key"
            ),
            Self::Deleted { from, to, line } if from == to => {
                write!(f, "deleted: record {from} is missing before line {line}")
            }
            Self::Deleted { from, to, line } => {
                write!(
                    f,
                    "deleted: records {from} to {to} are missing before line {line}"
                )
            }
            Self::Reordered {
                seq,
                expected,
                line,
            } => write!(
                f,
                "reordered: line {line} holds record {seq} where record {expected} belongs"
            ),
            Self::Relinked { seq, line } => write!(
                f,
                "replaced: record {seq} (line {line}) does not follow the record before it"
            ),
            Self::Truncated { last, head } if *last == 0 => write!(
                f,
                "truncated: the ledger is empty, but the signed head names record {head}"
            ),
            Self::Truncated { last, head } => write!(
                f,
                "truncated: the ledger ends at record {last}, but the signed head names record {head}: records {} to {head} were cut off",
                last + 1
            ),
            Self::HeadMismatch { seq } => write!(
                f,
                "replaced: record {seq} is not the record the signed head names"
            ),
            Self::HeadForged => write!(
                f,
                "the head file is unreadable or not signed by the node's key"
            ),
            Self::HeadMissing { last } => write!(
                f,
                "the head file is missing, though the ledger holds {last} records: records may have been cut off the end"
            ),
            Self::Torn { line, bytes } => write!(
                f,
                "torn: line {line} ({bytes} bytes) stops mid-record, as when the node stops while writing it; the node keeps it in a `ledger.torn` record at its next start"
            ),
            Self::Noted { seq, detail } => {
                write!(
                    f,
                    "record {seq}: the node found the ledger broken at start: {detail}"
                )
            }
        }
    }
}

/// What a walk of the ledger found.
#[derive(Debug, Default)]
pub struct Report {
    /// Complete records read.
    pub records: u64,
    /// The last complete record's seq and hash (where the next one links).
    pub last: Option<(u64, String)>,
    /// The head's seq, if there is a head.
    pub head: Option<u64>,
    /// The first break found, if any.
    pub first_break: Option<Break>,
    /// Where the complete lines end (a torn tail starts here).
    pub complete_bytes: usize,
}

/// Walks `ledger` (the file's bytes) against `head` and the node's `key`.
pub fn verify(ledger: &[u8], head: Option<&Head>, key: &PublicKey) -> Report {
    let complete_bytes = ledger
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let text = String::from_utf8_lossy(ledger.get(..complete_bytes).unwrap_or_default());
    let lines: Vec<Option<Read>> = text.lines().map(decode).collect();
    let mut report = Report {
        complete_bytes,
        head: head.map(|h| h.seq),
        ..Report::default()
    };
    let mut hashes = Vec::with_capacity(lines.len());
    report.first_break = walk(&lines, key, &mut hashes, &mut report);
    let torn = ledger.len() - complete_bytes;
    if report.first_break.is_none() && torn > 0 {
        report.first_break = Some(Break::Torn {
            line: lines.len() + 1,
            bytes: torn,
        });
    }
    if report.first_break.is_none() {
        report.first_break = match head {
            Some(head) => check_head(head, key, &hashes),
            None if hashes.len() > 1 => Some(Break::HeadMissing {
                last: hashes.len() as u64,
            }),
            None => None,
        };
    }
    report
}

fn walk(
    lines: &[Option<Read>],
    key: &PublicKey,
    hashes: &mut Vec<String>,
    report: &mut Report,
) -> Option<Break> {
    let mut expected = 1;
    let mut prev = GENESIS.to_owned();
    let mut first = None;
    for (index, read) in lines.iter().enumerate() {
        let line = index + 1;
        let Some(Read { record, computed }) = read else {
            first = first.or(Some(Break::Unreadable { line }));
            continue;
        };
        let seq = record.body.seq;
        report.records += 1;
        report.last = Some((seq, record.hash.clone()));
        if first.is_some() {
            continue;
        }
        first = if *computed != record.hash {
            Some(Break::Edited { seq, line })
        } else if !signed_by(key, RECORD_KIND, &record.hash, &record.sig) {
            Some(Break::Forged { seq, line })
        } else if seq != expected {
            Some(out_of_place(lines, seq, expected, line))
        } else if record.body.prev != prev {
            Some(Break::Relinked { seq, line })
        } else if record.body.action == NOTED_BREAK {
            Some(Break::Noted {
                seq,
                detail: record.body.detail.clone(),
            })
        } else {
            None
        };
        prev.clone_from(&record.hash);
        hashes.push(record.hash.clone());
        expected += 1;
    }
    first
}

/// The action of a record in which the node notes a break it found at start.
pub const NOTED_BREAK: &str = "ledger.broken";

/// Record `seq` stands where `expected` belongs: moved, or the ones between gone.
fn out_of_place(lines: &[Option<Read>], seq: u64, expected: u64, line: usize) -> Break {
    let present = lines
        .iter()
        .flatten()
        .any(|r| r.record.body.seq == expected);
    if seq < expected || present {
        Break::Reordered {
            seq,
            expected,
            line,
        }
    } else {
        Break::Deleted {
            from: expected,
            to: seq - 1,
            line,
        }
    }
}

fn check_head(head: &Head, key: &PublicKey, hashes: &[String]) -> Option<Break> {
    if head.key != key.to_string() || !head.signed_by(key) {
        return Some(Break::HeadForged);
    }
    let last = hashes.len() as u64;
    if head.seq > last {
        return Some(Break::Truncated {
            last,
            head: head.seq,
        });
    }
    let named = usize::try_from(head.seq)
        .ok()
        .and_then(|seq| seq.checked_sub(1))
        .and_then(|i| hashes.get(i));
    match named {
        Some(hash) if *hash == head.hash => None,
        None if head.seq == 0 => None,
        _ => Some(Break::HeadMismatch { seq: head.seq }),
    }
}

/// `bytes` as text fit for a record's detail: at most `max` bytes, lossy.
pub fn excerpt(bytes: &[u8], max: usize) -> String {
    let cut = bytes.get(..max.min(bytes.len())).unwrap_or_default();
    match std::str::from_utf8(cut) {
        Ok(text) => text.to_owned(),
        Err(_) => format!(
            "base64:{}",
            base64::engine::general_purpose::STANDARD.encode(cut)
        ),
    }
}
