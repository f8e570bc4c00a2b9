//! Erasing a tenant for real: its data key first (crypto-shredding: every blob and sealed field
//! of the tenant, wherever a copy of it lies, becomes unreadable), then its rows and blobs, then
//! the detail of its audit events (who did what and when stays, and the chain still verifies).
//! SQLite overwrites freed pages (`secure_delete`) and the write-ahead log is emptied after;
//! PostgreSQL vacuums the tables the tenant had rows in.

use crate::error::{Result, StoreError};
use crate::System;
use serde::Serialize;

/// What an erasure removed.
#[derive(Debug, Clone, Serialize)]
pub struct Erasure {
    pub tenant_id: String,
    pub tenant_name: String,
    /// Rows deleted, in all tables.
    pub rows: u64,
    /// Blob files deleted.
    pub blobs: u64,
    /// Audit events whose detail was redacted.
    pub audit_redacted: u64,
}

/// The tenant's tables, children first.
const TABLES: &[&str] = &[
    "character_references",
    "characters",
    "edit_versions",
    "edit_sessions",
    "assets",
    "jobs",
    "api_keys",
];

impl System<'_> {
    /// Erases the tenant `id_or_name` and everything it owns. The operator's tenant cannot be
    /// erased. Callers stop the tenant's running work first (the server cancels its jobs).
    pub async fn erase_tenant(&self, id_or_name: &str) -> Result<Erasure> {
        let tenant = self.tenant(id_or_name).await?;
        if tenant.is_admin {
            return Err(StoreError::Conflict(format!(
                "{} is the operator's tenant and cannot be erased",
                tenant.name
            )));
        }
        let id = tenant.id.as_str();
        // 1. The key, so that nothing of the tenant's can be read from here on, backups
        //    included.
        sqlx::query("DELETE FROM tenant_keys WHERE tenant_id = $1")
            .bind(id)
            .execute(&self.store.db.pool)
            .await?;
        self.store.keys.forget(id);
        // 2. The rows, in one transaction.
        let mut rows = 0;
        let mut tx = self.store.db.pool.begin().await?;
        for table in TABLES {
            rows += sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1"))
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        rows += sqlx::query("DELETE FROM tenants WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        // 3. The blobs.
        let blobs = self.store.blobs.delete_tenant(id).await?;
        // 4. What the audit log said of it, and the chained marker that lists what was redacted:
        //    `audit verify` takes a missing detail for erasure only where a marker for a
        //    tenant that is gone lists it.
        let redacted = self.redact_audit(id).await?;
        let audit_redacted = redacted.len() as u64;
        self.audit(crate::AuditEvent {
            request_id: None,
            tenant_id: None,
            key_id: None,
            action: crate::audit::chain::ERASED,
            target: Some(tenant.id.clone()),
            outcome: crate::Outcome::Success,
            detail: serde_json::json!({"redacted_events": redacted}),
        })
        .await?;
        // 5. Freed pages were overwritten (SQLite's secure_delete); empty the write-ahead log
        //    too, or vacuum (PostgreSQL).
        let mut vacuum = TABLES.to_vec();
        vacuum.extend(["tenants", "tenant_keys", "audit_events"]);
        self.store.db.compact_log(&vacuum).await?;
        Ok(Erasure {
            tenant_id: tenant.id,
            tenant_name: tenant.name,
            rows,
            blobs,
            audit_redacted,
        })
    }
}
