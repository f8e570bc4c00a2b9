//! Retention: per tenant, what is older than `retention_days` is deleted — finished jobs (and
//! with them their prompts and parameters), edit sessions last changed before the cutoff, and
//! images (outputs and uploads) no surviving session still uses. A character's reference images
//! stay with the character: it is a resource the tenant keeps, not an output.

use crate::error::{Result, StoreError};
use crate::{System, Tenant};
use serde::Serialize;
use sqlx::Row;

/// The longest retention that can be set, in days (ten years).
pub const MAX_RETENTION_DAYS: u32 = 3650;

/// What one retention pass deleted, for one tenant.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Retained {
    pub tenant_id: String,
    pub jobs: u64,
    pub sessions: u64,
    pub assets: u64,
}

impl System<'_> {
    /// Sets (or, with `None`, clears) a tenant's retention in days; returns the tenant.
    pub async fn set_tenant_retention(&self, id_or_name: &str, days: Option<u32>) -> Result<Tenant> {
        if let Some(d) = days {
            if !(1..=MAX_RETENTION_DAYS).contains(&d) {
                return Err(StoreError::Invalid(format!(
                    "retention is 1 to {MAX_RETENTION_DAYS} days (or none), not {d}"
                )));
            }
        }
        let t = self.tenant(id_or_name).await?;
        sqlx::query("UPDATE tenants SET retention_days = $1 WHERE id = $2")
            .bind(days.map(i64::from))
            .bind(&t.id)
            .execute(&self.store.db.pool)
            .await?;
        self.tenant(&t.id).await
    }

    /// Deletes, for every tenant with a retention setting, what is older than it at `now_ms`.
    /// Returns a record per tenant that lost anything.
    pub async fn apply_retention(&self, now_ms: i64) -> Result<Vec<Retained>> {
        let rows = sqlx::query("SELECT id, retention_days FROM tenants WHERE retention_days IS NOT NULL")
            .fetch_all(&self.store.db.pool)
            .await?;
        let mut out = Vec::new();
        for r in &rows {
            let tenant: String = r.try_get("id")?;
            let days: i64 = r.try_get("retention_days")?;
            let cutoff = now_ms - days * 86_400_000;
            let done = self.retain(&tenant, cutoff).await?;
            if done.jobs + done.sessions + done.assets > 0 {
                out.push(done);
            }
        }
        Ok(out)
    }

    async fn retain(&self, tenant: &str, cutoff: i64) -> Result<Retained> {
        let sc = self.store.scoped(tenant);
        let mut done = Retained {
            tenant_id: tenant.to_owned(),
            ..Retained::default()
        };
        done.jobs = sqlx::query(
            "DELETE FROM jobs WHERE tenant_id = $1 AND finished_at IS NOT NULL AND finished_at < $2",
        )
        .bind(tenant)
        .bind(cutoff)
        .execute(&self.store.db.pool)
        .await?
        .rows_affected();
        let sessions = sqlx::query("SELECT id FROM edit_sessions WHERE tenant_id = $1 AND updated_at < $2")
            .bind(tenant)
            .bind(cutoff)
            .fetch_all(&self.store.db.pool)
            .await?;
        for s in &sessions {
            sc.delete_session(&s.try_get::<String, _>("id")?).await?;
            done.sessions += 1;
        }
        let assets = sqlx::query(
            "SELECT id FROM assets WHERE tenant_id = $1 AND created_at < $2 AND kind <> 'reference' \
             AND id NOT IN (SELECT asset_id FROM edit_versions WHERE tenant_id = $3)",
        )
        .bind(tenant)
        .bind(cutoff)
        .bind(tenant)
        .fetch_all(&self.store.db.pool)
        .await?;
        for a in &assets {
            sc.delete_asset_unchecked(&a.try_get::<String, _>("id")?).await?;
            done.assets += 1;
        }
        Ok(done)
    }
}
