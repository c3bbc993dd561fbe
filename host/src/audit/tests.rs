use super::chain::{Break, verify};
use super::*;

fn entry(i: usize, tenant: Option<&str>) -> Entry {
    Entry {
        principal: tenant.map_or("operator".into(), |t| format!("tenant:{t}")),
        action: "function.publish".into(),
        target: format!("f{i}@1.0.0"),
        outcome: "ok".into(),
        tenant: tenant.map(str::to_owned),
        detail: format!("digest sha256:{i:064}"),
    }
}

/// A ledger of `n` records in a fresh data directory.
fn ledger(n: usize) -> anyhow::Result<(tempfile::TempDir, Audit)> {
    let dir = tempfile::tempdir()?;
    let audit = Audit::open(dir.path())?;
    for i in 0..n {
        audit.record(entry(i, None))?;
    }
    Ok((dir, audit))
}

fn check(dir: &Path) -> anyhow::Result<chain::Report> {
    let bytes = std::fs::read(ledger_path(dir))?;
    let head = read_head(dir)?;
    Ok(verify(&bytes, head.as_ref(), &node_key(dir)?.public()))
}

fn lines(dir: &Path) -> anyhow::Result<Vec<String>> {
    Ok(std::fs::read_to_string(ledger_path(dir))?
        .lines()
        .map(str::to_owned)
        .collect())
}

fn write_lines(dir: &Path, lines: &[String]) -> anyhow::Result<()> {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    Ok(std::fs::write(ledger_path(dir), text)?)
}

#[test]
fn an_untouched_ledger_verifies_and_links_every_record() -> anyhow::Result<()> {
    let (dir, audit) = ledger(5)?;
    let report = check(dir.path())?;
    assert_eq!(report.first_break, None);
    assert_eq!(report.records, 5);
    assert_eq!(report.head, Some(5));
    let records = audit.read(0, 100, None)?;
    assert_eq!(records.len(), 5);
    assert_eq!(records[0].body.prev, chain::GENESIS);
    for pair in records.windows(2) {
        assert_eq!(pair[1].body.prev, pair[0].hash);
    }
    Ok(())
}

#[test]
fn an_edited_record_is_named() -> anyhow::Result<()> {
    let (dir, _audit) = ledger(5)?;
    let mut lines = lines(dir.path())?;
    lines[2] = lines[2].replace("f2@1.0.0", "f9@1.0.0");
    write_lines(dir.path(), &lines)?;
    let found = check(dir.path())?.first_break;
    assert_eq!(found, Some(Break::Edited { seq: 3, line: 3 }));
    assert!(found.is_some_and(|b| b.to_string().starts_with("edited: record 3")));
    Ok(())
}

#[test]
fn an_edited_record_with_its_hash_recomputed_fails_its_signature() -> anyhow::Result<()> {
    let (dir, _audit) = ledger(3)?;
    let mut lines = lines(dir.path())?;
    let read = chain::decode(&lines[1]).ok_or_else(|| anyhow::anyhow!("unreadable"))?;
    let mut body = read.record.body;
    body.outcome = "403 refused".into();
    // Sealed again with some other key: the hash matches, the signature not.
    let (line, _) = chain::encode(&body, &SecretKey::generate()?)?;
    lines[1] = line.trim_end().to_owned();
    write_lines(dir.path(), &lines)?;
    assert_eq!(
        check(dir.path())?.first_break,
        Some(Break::Forged { seq: 2, line: 2 })
    );
    Ok(())
}

#[test]
fn a_deleted_record_is_named() -> anyhow::Result<()> {
    let (dir, _audit) = ledger(5)?;
    let mut lines = lines(dir.path())?;
    lines.remove(1);
    write_lines(dir.path(), &lines)?;
    let found = check(dir.path())?.first_break;
    assert_eq!(
        found,
        Some(Break::Deleted {
            from: 2,
            to: 2,
            line: 2
        })
    );
    assert!(found.is_some_and(|b| b.to_string().starts_with("deleted: record 2")));
    Ok(())
}

#[test]
fn reordered_records_are_named() -> anyhow::Result<()> {
    let (dir, _audit) = ledger(5)?;
    let mut lines = lines(dir.path())?;
    lines.swap(2, 3);
    write_lines(dir.path(), &lines)?;
    let found = check(dir.path())?.first_break;
    assert_eq!(
        found,
        Some(Break::Reordered {
            seq: 4,
            expected: 3,
            line: 3
        })
    );
    assert!(found.is_some_and(|b| b.to_string().starts_with("reordered:")));
    Ok(())
}

#[test]
fn records_cut_off_the_end_are_named_by_the_signed_head() -> anyhow::Result<()> {
    let (dir, _audit) = ledger(5)?;
    let lines = lines(dir.path())?;
    write_lines(dir.path(), &lines[..3])?;
    let found = check(dir.path())?.first_break;
    assert_eq!(found, Some(Break::Truncated { last: 3, head: 5 }));
    assert!(found.is_some_and(|b| b.to_string().contains("records 4 to 5 were cut off")));
    // Removing the head as well is named too.
    std::fs::remove_file(head_path(dir.path()))?;
    assert_eq!(
        check(dir.path())?.first_break,
        Some(Break::HeadMissing { last: 3 })
    );
    Ok(())
}

#[test]
fn a_head_signed_by_another_key_is_refused() -> anyhow::Result<()> {
    let (dir, _audit) = ledger(2)?;
    let lines = lines(dir.path())?;
    write_lines(dir.path(), &lines[..1])?;
    let read = chain::decode(&lines[0]).ok_or_else(|| anyhow::anyhow!("unreadable"))?;
    let forged = Head::new(1, &read.record.hash, &SecretKey::generate()?);
    std::fs::write(head_path(dir.path()), serde_json::to_vec(&forged)?)?;
    assert_eq!(check(dir.path())?.first_break, Some(Break::HeadForged));
    Ok(())
}

#[test]
fn a_torn_last_record_is_reported_then_kept_in_a_record_at_the_next_start() -> anyhow::Result<()> {
    let (dir, audit) = ledger(3)?;
    drop(audit);
    let torn = b"{\"seq\":4,\"time\":\"2026-12-04T07:00:00.000Z\",\"principal\":\"oper";
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(ledger_path(dir.path()))?;
    file.write_all(torn)?;
    drop(file);
    assert_eq!(
        check(dir.path())?.first_break,
        Some(Break::Torn {
            line: 4,
            bytes: torn.len()
        })
    );
    let audit = Audit::open(dir.path())?;
    assert_eq!(check(dir.path())?.first_break, None);
    let records = audit.read(0, 100, None)?;
    let kept = records
        .last()
        .ok_or_else(|| anyhow::anyhow!("no records"))?;
    assert_eq!(kept.body.action, "ledger.torn");
    assert!(
        kept.body.detail.contains("\"principal\":\"oper"),
        "{kept:?}"
    );
    assert_eq!(kept.body.seq, 4);
    Ok(())
}

#[test]
fn a_break_found_at_start_is_noted_and_stays_reported() -> anyhow::Result<()> {
    let (dir, audit) = ledger(4)?;
    drop(audit);
    let lines = lines(dir.path())?;
    write_lines(dir.path(), &lines[..2])?;
    let audit = Audit::open(dir.path())?;
    audit.record(entry(9, None))?;
    // The head moved on, but the note of the cut stays in the chain.
    let found = check(dir.path())?.first_break;
    let Some(Break::Noted { seq, detail }) = found else {
        anyhow::bail!("expected the noted truncation, found {found:?}");
    };
    assert_eq!(seq, 3);
    assert!(detail.starts_with("truncated:"), "{detail}");
    Ok(())
}

#[test]
fn a_tenant_reads_only_the_records_that_concern_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let audit = Audit::open(dir.path())?;
    audit.record(entry(0, Some("acme")))?;
    audit.record(entry(1, Some("globex")))?;
    audit.record(entry(2, None))?;
    audit.record(entry(3, Some("acme")))?;
    let acme: Vec<u64> = audit
        .read(0, 100, Some("acme"))?
        .iter()
        .map(|r| r.body.seq)
        .collect();
    assert_eq!(acme, [1, 4]);
    assert_eq!(audit.read(2, 1, None)?[0].body.seq, 3);
    Ok(())
}

#[test]
fn refused_sign_ins_are_recorded_once_per_window_and_counted() -> anyhow::Result<()> {
    let (_dir, audit) = ledger(0)?;
    let refused = || Entry {
        principal: "unauthenticated".into(),
        action: "auth.refused".into(),
        detail: "bad token".into(),
        ..Entry::default()
    };
    assert!(audit.refused_sign_in(refused()).is_some());
    for _ in 0..1000 {
        assert!(audit.refused_sign_in(refused()).is_none());
    }
    assert_eq!(audit.take_unrecorded_refusals(), 1000);
    assert_eq!(audit.take_unrecorded_refusals(), 0);
    Ok(())
}

#[test]
fn the_node_keeps_its_key_across_starts() -> anyhow::Result<()> {
    let (dir, audit) = ledger(1)?;
    let key = audit.public_key();
    drop(audit);
    assert_eq!(Audit::open(dir.path())?.public_key(), key);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(key_path(dir.path()))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key is readable by others: {mode:o}");
    }
    Ok(())
}
