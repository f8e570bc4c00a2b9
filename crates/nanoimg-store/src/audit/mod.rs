//! The audit log: one append-only table and one writer, [`Store::audit`]. It records who did what
//! and how it ended — never a key, never image bytes.
//!
//! The log is tamper-evident: events form a hash chain ([`chain`]) and the chain's head is
//! signed now and then ([`checkpoint`]); [`Store::verify_audit`] walks it and names the first
//! bad entry.

pub mod chain;
pub mod checkpoint;

use crate::error::{corrupt, Result};
use crate::ids::now_ms;
use crate::System;
use chain::{detail_hash, parse_hash, Link, GENESIS, REDACTED};
use checkpoint::{AuditSigner, Checkpoint, CheckpointKey};
use serde::Serialize;
use sqlx::{AnyConnection, Row};

/// How an audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    /// Refused by a rule (rate limit, scope, validation, moderation).
    Rejected,
    /// Failed while running.
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Rejected => "rejected",
            Outcome::Failure => "failure",
        }
    }
}

/// An event to record.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub request_id: Option<String>,
    pub tenant_id: Option<String>,
    pub key_id: Option<String>,
    /// Dotted name such as `key.create`, `image.generate`, `request.rejected`.
    pub action: &'static str,
    /// The object acted on (an id).
    pub target: Option<String>,
    pub outcome: Outcome,
    /// Anything else worth keeping (reasons, counts, sizes).
    pub detail: serde_json::Value,
}

/// An event as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    pub seq: i64,
    pub at: i64,
    pub request_id: Option<String>,
    pub tenant_id: Option<String>,
    pub key_id: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub outcome: String,
    pub detail: serde_json::Value,
}

/// The audit writer's state: one appender at a time in this process (the database's lock on
/// `audit_chain` orders processes), and the checkpoint signer.
#[derive(Debug)]
pub(crate) struct AuditLog {
    order: tokio::sync::Mutex<()>,
    pub(crate) signer: AuditSigner,
}

impl AuditLog {
    pub(crate) fn new(signer: AuditSigner) -> Self {
        Self {
            order: tokio::sync::Mutex::new(()),
            signer,
        }
    }
}

/// The chain's head (seq 0 and zeros before the first event).
async fn head(conn: &mut AnyConnection) -> Result<(i64, [u8; 32])> {
    let row = sqlx::query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else {
        return Ok((0, GENESIS));
    };
    let seq: i64 = row.try_get("seq")?;
    let hash: Option<String> = row.try_get("hash")?;
    let hash = hash
        .as_deref()
        .and_then(parse_hash)
        .ok_or_else(|| chain::corrupt_hash(seq))?;
    Ok((seq, hash))
}

/// Takes the chain's lock for the rest of the transaction.
async fn lock_chain(conn: &mut AnyConnection) -> Result<()> {
    sqlx::query("UPDATE audit_chain SET appends = appends + 1 WHERE id = 1")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Signs and stores a checkpoint of the head if the newest one is older than it (`every`
/// events, or any when `every` is 1).
async fn checkpoint_if_due(
    conn: &mut AnyConnection,
    signer: &AuditSigner,
    seq: i64,
    hash: &[u8; 32],
    every: i64,
) -> Result<Option<Checkpoint>> {
    let last: i64 = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS s FROM audit_checkpoints")
        .fetch_one(&mut *conn)
        .await?
        .try_get("s")?;
    if seq == 0 || seq - last < every {
        return Ok(None);
    }
    let c = signer.sign(seq, hash, now_ms());
    sqlx::query(
        "INSERT INTO audit_checkpoints (seq, hash, at, public_key, signature) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(c.seq)
    .bind(&c.hash)
    .bind(c.at)
    .bind(&c.public_key)
    .bind(&c.signature)
    .execute(&mut *conn)
    .await?;
    Ok(Some(c))
}

impl System<'_> {
    /// Appends an event, chained to the one before it. The only place that writes the audit
    /// table. Every `checkpoint_every` events the head is signed.
    pub async fn audit(&self, e: AuditEvent) -> Result<()> {
        let detail = e.detail.to_string();
        let dh = detail_hash(&detail);
        let log = &self.store.audit_log;
        let _order = log.order.lock().await;
        let mut tx = self.store.db.pool.begin().await?;
        lock_chain(&mut tx).await?;
        let (prev_seq, prev) = head(&mut tx).await?;
        let link = Link {
            seq: prev_seq + 1,
            at: now_ms(),
            request_id: e.request_id.as_deref(),
            tenant_id: e.tenant_id.as_deref(),
            key_id: e.key_id.as_deref(),
            action: e.action,
            target: e.target.as_deref(),
            outcome: e.outcome.as_str(),
            detail_hash: dh,
        };
        let hash = link.hash(&prev);
        sqlx::query(
            "INSERT INTO audit_events (seq, at, request_id, tenant_id, key_id, action, target, \
             outcome, detail, detail_hash, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(link.seq)
        .bind(link.at)
        .bind(link.request_id)
        .bind(link.tenant_id)
        .bind(link.key_id)
        .bind(link.action)
        .bind(link.target)
        .bind(link.outcome)
        .bind(&detail)
        .bind(hex::encode(dh))
        .bind(hex::encode(prev))
        .bind(hex::encode(hash))
        .execute(&mut *tx)
        .await?;
        let checkpoint = checkpoint_if_due(&mut tx, &log.signer, link.seq, &hash, log.signer.every).await?;
        tx.commit().await?;
        if let Some(c) = checkpoint {
            log.signer.witness(&c)?;
        }
        Ok(())
    }

    /// Signs the chain's head now, unless the newest checkpoint already covers it (the server
    /// calls this on a timer and at shutdown). Returns the new checkpoint.
    pub async fn audit_checkpoint(&self) -> Result<Option<Checkpoint>> {
        let log = &self.store.audit_log;
        let _order = log.order.lock().await;
        let mut tx = self.store.db.pool.begin().await?;
        lock_chain(&mut tx).await?;
        let (seq, hash) = head(&mut tx).await?;
        let checkpoint = checkpoint_if_due(&mut tx, &log.signer, seq, &hash, 1).await?;
        tx.commit().await?;
        if let Some(c) = &checkpoint {
            log.signer.witness(c)?;
        }
        Ok(checkpoint)
    }

    /// The public key this store signs checkpoints with.
    pub fn audit_public_key(&self) -> CheckpointKey {
        self.store.audit_log.signer.public()
    }

    /// Walks the whole chain and every checkpoint (the database's and `witness`'s), checking
    /// signatures against `key`. Reports the first bad entry.
    pub async fn verify_audit(
        &self,
        key: &CheckpointKey,
        witness: &[Checkpoint],
    ) -> Result<chain::ChainReport> {
        let mut conn = self.store.db.pool.acquire().await?;
        chain::verify(&mut conn, key, witness).await
    }

    /// Replaces the detail of every event of `tenant_id`, or about it, with
    /// `{"redacted":true}` (erasure). Who did what and when stays, and the chain still
    /// verifies once the erasure's marker lists them ([`chain::ERASED`], appended by
    /// `erase_tenant`). Returns the events changed.
    pub(crate) async fn redact_audit(&self, tenant_id: &str) -> Result<Vec<i64>> {
        // Events by the tenant, about it, and the operator's that name it in their detail
        // (making its keys, changing its limits).
        let named = format!(
            "%\"{}\"%",
            tenant_id
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let rows = sqlx::query(
            "UPDATE audit_events SET detail = $1 \
             WHERE (tenant_id = $2 OR target = $3 OR detail LIKE $4 ESCAPE '\\') AND detail <> $5 \
             RETURNING seq",
        )
        .bind(REDACTED)
        .bind(tenant_id)
        .bind(tenant_id)
        .bind(named)
        .bind(REDACTED)
        .fetch_all(&self.store.db.pool)
        .await?;
        let mut seqs = rows
            .iter()
            .map(|r| r.try_get::<i64, _>("seq"))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        seqs.sort_unstable();
        Ok(seqs)
    }

    /// Events after `after_seq`, oldest first, of one tenant or all.
    pub async fn audit_events(
        &self,
        tenant_id: Option<&str>,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>> {
        self.audit_page(tenant_id, ("seq > $1", "seq"), after_seq, limit)
            .await
    }

    /// Events before `before_seq` (all of them when `None`), newest first, of one tenant or
    /// all: the end of the log, and pages back from it.
    pub async fn audit_events_newest(
        &self,
        tenant_id: Option<&str>,
        before_seq: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>> {
        let before = before_seq.unwrap_or(i64::MAX);
        self.audit_page(tenant_id, ("seq < $1", "seq DESC"), before, limit)
            .await
    }

    /// One page: `(filter, order)` on `seq` are the two callers' constants, `$1` the cursor.
    async fn audit_page(
        &self,
        tenant_id: Option<&str>,
        (filter, order): (&'static str, &'static str),
        seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>> {
        let sql = format!(
            "SELECT seq, at, request_id, tenant_id, key_id, action, target, outcome, detail \
             FROM audit_events WHERE {filter} AND ($2 IS NULL OR tenant_id = $3) \
             ORDER BY {order} LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(seq)
            .bind(tenant_id)
            .bind(tenant_id)
            .bind(i64::from(limit.clamp(1, 1000)))
            .fetch_all(&self.store.db.pool)
            .await?;
        rows.iter().map(audit_record).collect()
    }
}

fn audit_record(r: &sqlx::any::AnyRow) -> Result<AuditRecord> {
    let detail: String = r.try_get("detail")?;
    Ok(AuditRecord {
        seq: r.try_get("seq")?,
        at: r.try_get("at")?,
        request_id: r.try_get("request_id")?,
        tenant_id: r.try_get("tenant_id")?,
        key_id: r.try_get("key_id")?,
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        outcome: r.try_get("outcome")?,
        detail: serde_json::from_str(&detail).map_err(|e| corrupt(format!("audit detail: {e}")))?,
    })
}

#[cfg(test)]
mod tests {
    use crate::db::{sqlite_url, Db};
    use crate::{AuditOptions, Store};

    /// A database from before the chain: its events are chained once, by the migration.
    #[tokio::test]
    async fn events_written_before_the_chain_are_chained_by_the_migration() {
        let d = tempfile::tempdir().unwrap();
        let db = Db::connect(&sqlite_url(&d.path().join(crate::SQLITE_FILE)))
            .await
            .unwrap();
        db.migrate_to(crate::db::AUDIT_CHAIN - 1).await.unwrap();
        for i in 0..3 {
            sqlx::query(
                "INSERT INTO audit_events (at, action, outcome, detail) VALUES ($1, 'old', 'success', $2)",
            )
            .bind(1000 + i)
            .bind(format!("{{\"i\":{i}}}"))
            .execute(&db.pool)
            .await
            .unwrap();
        }
        db.pool.close().await;
        let s = Store::open(d.path()).await.unwrap();
        s.system()
            .audit(crate::AuditEvent {
                request_id: None,
                tenant_id: None,
                key_id: None,
                action: "new",
                target: None,
                outcome: crate::Outcome::Success,
                detail: serde_json::json!({}),
            })
            .await
            .unwrap();
        let r = s
            .system()
            .verify_audit(&s.system().audit_public_key(), &[])
            .await
            .unwrap();
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.events, 4);
    }

    /// Someone who rewrites the chain consistently from an event on (every hash recomputed) is
    /// caught by the first signed checkpoint after it.
    #[tokio::test]
    async fn a_consistently_rewritten_chain_fails_at_the_next_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        let opts = crate::StoreOptions {
            audit: AuditOptions {
                checkpoint_every: 4,
                ..AuditOptions::in_data_dir(d.path())
            },
            ..crate::StoreOptions::in_data_dir(d.path()).unwrap()
        };
        let s = Store::open_in(d.path(), opts).await.unwrap();
        for i in 1..=10 {
            s.system()
                .audit(crate::AuditEvent {
                    request_id: None,
                    tenant_id: None,
                    key_id: None,
                    action: "image.generate",
                    target: None,
                    outcome: crate::Outcome::Success,
                    detail: serde_json::json!({ "i": i }),
                })
                .await
                .unwrap();
        }
        let mut conn = s.db.pool.acquire().await.unwrap();
        for q in [
            "DROP TRIGGER audit_events_no_update",
            "UPDATE audit_events SET outcome = 'failure', detail = '{}' WHERE seq = 6",
        ] {
            sqlx::query(q).execute(&mut *conn).await.unwrap();
        }
        super::chain::chain_existing(&mut conn).await.unwrap();
        drop(conn);
        let r = s
            .system()
            .verify_audit(&s.system().audit_public_key(), &[])
            .await
            .unwrap();
        let b = r.first_break.expect("caught");
        assert_eq!(
            (b.seq, b.problem),
            (8, super::chain::Problem::BadCheckpoint),
            "{}",
            b.message
        );
        assert_eq!(r.checkpoints_verified, 1, "the checkpoint at 4 still holds");
    }
}
