//! The audit log: one append-only table and one writer, [`Store::audit`]. It records who did what
//! and how it ended — never a key, never image bytes.

use crate::error::{corrupt, Result};
use crate::ids::now_ms;
use crate::Store;
use serde::Serialize;
use sqlx::Row;

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

impl Store {
    /// Appends an event. The only place that writes the audit table.
    pub async fn audit(&self, e: AuditEvent) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_events (at, request_id, tenant_id, key_id, action, target, outcome, \
             detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(now_ms())
        .bind(e.request_id)
        .bind(e.tenant_id)
        .bind(e.key_id)
        .bind(e.action)
        .bind(e.target)
        .bind(e.outcome.as_str())
        .bind(e.detail.to_string())
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Events after `after_seq`, oldest first, of one tenant or all.
    pub async fn audit_events(
        &self,
        tenant_id: Option<&str>,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT seq, at, request_id, tenant_id, key_id, action, target, outcome, detail \
             FROM audit_events WHERE seq > $1 AND ($2 IS NULL OR tenant_id = $3) \
             ORDER BY seq LIMIT $4",
        )
        .bind(after_seq)
        .bind(tenant_id)
        .bind(tenant_id)
        .bind(i64::from(limit.clamp(1, 1000)))
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|r| {
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
                    detail: serde_json::from_str(&detail)
                        .map_err(|e| corrupt(format!("audit detail: {e}")))?,
                })
            })
            .collect()
    }
}
