//! The hash chain over audit events and the walk that checks it.
//!
//! Each event's `hash` is SHA-256 over a domain tag, the previous event's hash (zeros for the
//! first), and the event's fields with lengths and presence written out, so no two different
//! events encode alike. The detail enters as its own SHA-256 (`detail_hash`): erasure can replace
//! a detail with [`REDACTED`] and the chain still holds, while any other change to it shows.

use super::checkpoint::{Checkpoint, CheckpointKey};
use crate::error::{corrupt, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use std::collections::BTreeMap;

/// The previous hash of the first event.
pub(crate) const GENESIS: [u8; 32] = [0; 32];
const DOMAIN: &[u8] = b"nanoimg.audit.event.v1";
/// What erasure leaves of an event's detail.
pub const REDACTED: &str = r#"{"redacted":true}"#;

/// The action of the marker erasure appends after redacting: its target is the tenant, its
/// detail `{"redacted_events": [seq, …]}`.
pub const ERASED: &str = "tenant.erased";

/// The operator's record of an erasure, which older erasures left without a marker: it stands
/// for the events of its target tenant.
const ERASE_RECORD: &str = "tenant.erase";

pub(crate) fn detail_hash(detail: &str) -> [u8; 32] {
    Sha256::digest(detail.as_bytes()).into()
}

pub(crate) fn parse_hash(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// The fields of an event that its hash covers.
pub(crate) struct Link<'a> {
    pub seq: i64,
    pub at: i64,
    pub request_id: Option<&'a str>,
    pub tenant_id: Option<&'a str>,
    pub key_id: Option<&'a str>,
    pub action: &'a str,
    pub target: Option<&'a str>,
    pub outcome: &'a str,
    pub detail_hash: [u8; 32],
}

impl Link<'_> {
    pub(crate) fn hash(&self, prev: &[u8; 32]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(DOMAIN);
        h.update(prev);
        h.update(self.seq.to_be_bytes());
        h.update(self.at.to_be_bytes());
        let fields = [
            self.request_id,
            self.tenant_id,
            self.key_id,
            Some(self.action),
            self.target,
            Some(self.outcome),
        ];
        for f in fields {
            match f {
                None => h.update([0u8]),
                Some(s) => {
                    h.update([1u8]);
                    h.update((s.len() as u64).to_be_bytes());
                    h.update(s.as_bytes());
                }
            }
        }
        h.update(self.detail_hash);
        h.finalize().into()
    }
}

/// An event row as the walk reads it.
struct Row_ {
    seq: i64,
    at: i64,
    request_id: Option<String>,
    tenant_id: Option<String>,
    key_id: Option<String>,
    action: String,
    target: Option<String>,
    outcome: String,
    detail: String,
    detail_hash: Option<String>,
    prev_hash: Option<String>,
    hash: Option<String>,
}

pub(crate) const ROW_COLUMNS: &str = "seq, at, request_id, tenant_id, key_id, action, target, \
                                      outcome, detail, detail_hash, prev_hash, hash";

impl Row_ {
    fn read(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            seq: r.try_get("seq")?,
            at: r.try_get("at")?,
            request_id: r.try_get("request_id")?,
            tenant_id: r.try_get("tenant_id")?,
            key_id: r.try_get("key_id")?,
            action: r.try_get("action")?,
            target: r.try_get("target")?,
            outcome: r.try_get("outcome")?,
            detail: r.try_get("detail")?,
            detail_hash: r.try_get("detail_hash")?,
            prev_hash: r.try_get("prev_hash")?,
            hash: r.try_get("hash")?,
        })
    }

    fn link(&self, detail_hash: [u8; 32]) -> Link<'_> {
        Link {
            seq: self.seq,
            at: self.at,
            request_id: self.request_id.as_deref(),
            tenant_id: self.tenant_id.as_deref(),
            key_id: self.key_id.as_deref(),
            action: &self.action,
            target: self.target.as_deref(),
            outcome: &self.outcome,
            detail_hash,
        }
    }
}

/// Chains the events written before the chain existed, oldest first. Runs once, inside the
/// migration that adds the chain, so it can never re-bless a row changed later.
pub(crate) async fn chain_existing(conn: &mut AnyConnection) -> Result<()> {
    let rows = sqlx::query(&format!("SELECT {ROW_COLUMNS} FROM audit_events ORDER BY seq"))
        .fetch_all(&mut *conn)
        .await?;
    let mut prev = GENESIS;
    for r in &rows {
        let row = Row_::read(r)?;
        let dh = detail_hash(&row.detail);
        let hash = row.link(dh).hash(&prev);
        sqlx::query("UPDATE audit_events SET detail_hash = $1, prev_hash = $2, hash = $3 WHERE seq = $4")
            .bind(hex::encode(dh))
            .bind(hex::encode(prev))
            .bind(hex::encode(hash))
            .bind(row.seq)
            .execute(&mut *conn)
            .await?;
        prev = hash;
    }
    Ok(())
}

/// What the walk found wrong first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// Events are missing before this one (deleted).
    Missing,
    /// The event does not follow the one before it (inserted, moved or reordered).
    OutOfChain,
    /// The event's fields or detail are not what was written.
    Modified,
    /// The newest events are gone: a signed checkpoint covers events past the log's end.
    Truncated,
    /// A checkpoint does not match the chain, or its signature does not verify.
    BadCheckpoint,
}

/// The first bad entry.
#[derive(Debug, Clone, Serialize)]
pub struct ChainBreak {
    /// The event (or, for a checkpoint problem, the checkpoint's event) where it shows.
    pub seq: i64,
    pub problem: Problem,
    pub message: String,
}

/// The result of [`crate::Store::verify_audit`].
#[derive(Debug, Clone, Serialize)]
pub struct ChainReport {
    /// Events read (up to the first bad one, or all).
    pub events: u64,
    /// The last event read.
    pub last_seq: i64,
    /// Its hash: the head of the chain, if it verified.
    pub head: Option<String>,
    /// Events whose detail erasure removed (their place in the chain still checks).
    pub redacted: u64,
    /// Signed checkpoints that matched the chain.
    pub checkpoints_verified: u64,
    /// The newest signed checkpoint: events after it could be removed without a trace here.
    pub last_checkpoint: Option<i64>,
    /// `None` when everything verified.
    pub first_break: Option<ChainBreak>,
}

impl ChainReport {
    pub fn ok(&self) -> bool {
        self.first_break.is_none()
    }
}

/// Walks every event in order and checks each checkpoint (from the database and from
/// `witness`) against the chain and `key`.
pub(crate) async fn verify(
    conn: &mut AnyConnection,
    key: &CheckpointKey,
    witness: &[Checkpoint],
) -> Result<ChainReport> {
    let mut report = ChainReport {
        events: 0,
        last_seq: 0,
        head: None,
        redacted: 0,
        checkpoints_verified: 0,
        last_checkpoint: None,
        first_break: None,
    };
    fn broken(seq: i64, problem: Problem, message: String) -> Option<ChainBreak> {
        Some(ChainBreak {
            seq,
            problem,
            message,
        })
    }

    // Every checkpoint, by the event it covers; the database's and the witness's must agree.
    let stored = sqlx::query("SELECT seq, hash, at, public_key, signature FROM audit_checkpoints")
        .fetch_all(&mut *conn)
        .await?;
    let mut checkpoints: BTreeMap<i64, Checkpoint> = BTreeMap::new();
    for r in &stored {
        let c = Checkpoint::read(r)?;
        checkpoints.insert(c.seq, c);
    }
    for c in witness {
        if let Some(other) = checkpoints.get(&c.seq) {
            if other.hash != c.hash {
                report.first_break = broken(
                    c.seq,
                    Problem::BadCheckpoint,
                    format!(
                        "the checkpoint of event {} in the database differs from the witness file's",
                        c.seq
                    ),
                );
                return Ok(report);
            }
        } else {
            checkpoints.insert(c.seq, c.clone());
        }
    }
    for c in checkpoints.values() {
        if let Err(why) = key.verify(c) {
            report.first_break = broken(
                c.seq,
                Problem::BadCheckpoint,
                format!("the checkpoint of event {}: {why}", c.seq),
            );
            return Ok(report);
        }
    }
    report.last_checkpoint = checkpoints.keys().next_back().copied();

    let mut prev = GENESIS;
    let mut after = 0i64;
    // Redacted events (with their own tenant), the erasure markers' lists, and the tenants the
    // operator's records say were erased (for redactions from before the markers).
    let mut redactions: Vec<(i64, Option<String>)> = Vec::new();
    let mut erased_events: std::collections::HashMap<i64, String> = std::collections::HashMap::new();
    let mut erase_records: std::collections::HashSet<String> = std::collections::HashSet::new();
    'walk: loop {
        let rows = sqlx::query(&format!(
            "SELECT {ROW_COLUMNS} FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT 1000"
        ))
        .bind(after)
        .fetch_all(&mut *conn)
        .await?;
        if rows.is_empty() {
            break;
        }
        for r in &rows {
            let row = Row_::read(r)?;
            after = row.seq;
            let expected = report.last_seq + 1;
            if row.seq != expected {
                let gap = if row.seq == expected + 1 {
                    format!("event {expected} is missing")
                } else {
                    format!("events {expected} to {} are missing", row.seq - 1)
                };
                report.first_break = broken(row.seq, Problem::Missing, format!("{gap} (deleted)"));
                break 'walk;
            }
            let stored_prev = row.prev_hash.as_deref().and_then(parse_hash);
            if stored_prev != Some(prev) {
                report.first_break = broken(
                    row.seq,
                    Problem::OutOfChain,
                    format!(
                        "event {} does not follow event {}: events were inserted, moved or \
                         reordered",
                        row.seq, report.last_seq
                    ),
                );
                break 'walk;
            }
            let Some(dh) = row.detail_hash.as_deref().and_then(parse_hash) else {
                report.first_break = broken(
                    row.seq,
                    Problem::Modified,
                    format!("event {} has no detail hash", row.seq),
                );
                break 'walk;
            };
            if row.detail == REDACTED {
                report.redacted += 1;
                redactions.push((row.seq, row.tenant_id.clone()));
            } else if detail_hash(&row.detail) != dh {
                report.first_break = broken(
                    row.seq,
                    Problem::Modified,
                    format!("event {}'s detail was changed", row.seq),
                );
                break 'walk;
            }
            let hash = row.link(dh).hash(&prev);
            if row.hash.as_deref().and_then(parse_hash) != Some(hash) {
                report.first_break = broken(
                    row.seq,
                    Problem::Modified,
                    format!("event {} was changed: its fields do not match its hash", row.seq),
                );
                break 'walk;
            }
            match (row.action.as_str(), &row.target) {
                (ERASED, Some(t)) => {
                    let listed: Vec<i64> = serde_json::from_str::<serde_json::Value>(&row.detail)
                        .ok()
                        .and_then(|d| serde_json::from_value(d["redacted_events"].clone()).ok())
                        .unwrap_or_default();
                    for seq in listed {
                        erased_events.insert(seq, t.clone());
                    }
                }
                (ERASE_RECORD, Some(t)) => {
                    erase_records.insert(t.clone());
                }
                _ => {}
            }
            if let Some(c) = checkpoints.get(&row.seq) {
                if c.hash != hex::encode(hash) {
                    report.first_break = broken(
                        row.seq,
                        Problem::BadCheckpoint,
                        format!("the chain up to event {} is not the one that was signed", row.seq),
                    );
                    break 'walk;
                }
                report.checkpoints_verified += 1;
            }
            prev = hash;
            report.events += 1;
            report.last_seq = row.seq;
        }
    }
    if report.first_break.is_some() {
        return Ok(report);
    }
    // A missing detail is erasure's only where the chain says so, for a tenant that is gone;
    // anywhere else someone wiped it.
    for (seq, own) in redactions {
        let tenant = erased_events
            .get(&seq)
            .cloned()
            .or_else(|| own.filter(|t| erase_records.contains(t)));
        let proven = match &tenant {
            Some(t) => sqlx::query("SELECT id FROM tenants WHERE id = $1")
                .bind(t)
                .fetch_optional(&mut *conn)
                .await?
                .is_none(),
            None => false,
        };
        if !proven {
            report.first_break = broken(
                seq,
                Problem::Modified,
                format!(
                    "event {seq}'s detail was removed, but no erasure of its tenant is recorded: \
                     it was wiped, not redacted"
                ),
            );
            return Ok(report);
        }
    }
    report.head = (report.events > 0).then(|| hex::encode(prev));
    if let Some(c) = checkpoints
        .range(report.last_seq + 1..)
        .next_back()
        .map(|(_, c)| c)
    {
        report.first_break = broken(
            c.seq,
            Problem::Truncated,
            format!(
                "the log ends at event {} but a checkpoint signed at {} ms covers event {}: the \
                 newest events were removed",
                report.last_seq, c.at, c.seq
            ),
        );
    }
    Ok(report)
}

pub(crate) fn corrupt_hash(seq: i64) -> crate::StoreError {
    corrupt(format!(
        "audit event {seq} has no valid hash; run `nanoimg audit verify`"
    ))
}
