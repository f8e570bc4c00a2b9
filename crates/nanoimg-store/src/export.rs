//! Everything a tenant has, gathered for an export (`GET /v1/me/export`): every record, each
//! readable field decrypted. Blobs are read one at a time by the caller
//! ([`Scoped::asset_bytes`], [`Scoped::character_lora`]), so an export never holds them all.

use crate::error::Result;
use crate::Asset;
use crate::{AuditRecord, Character, EditSession, Job, KeyRecord, Scoped, Tenant};
use serde::Serialize;
use sqlx::Row;

/// A tenant's records.
#[derive(Debug, Serialize)]
pub struct ExportRecords {
    pub tenant: Tenant,
    /// Key records: ids, names, prefixes, scopes, dates. Never a secret (none is stored).
    pub keys: Vec<KeyRecord>,
    pub jobs: Vec<Job>,
    pub assets: Vec<Asset>,
    pub edit_sessions: Vec<EditSession>,
    pub characters: Vec<Character>,
    /// The tenant's audit events.
    pub audit: Vec<AuditRecord>,
}

impl Scoped<'_> {
    /// Every record of the tenant's, oldest first where there is an order.
    pub async fn export_records(&self) -> Result<ExportRecords> {
        let store = self.store;
        let tenant = store.system().tenant(self.tenant_id).await?;
        let keys = store.system().keys(Some(self.tenant_id)).await?;
        let ids = |table: &'static str| async move {
            sqlx::query(&format!(
                "SELECT id FROM {table} WHERE tenant_id = $1 ORDER BY created_at, id"
            ))
            .bind(self.tenant_id)
            .fetch_all(&store.db.pool)
            .await?
            .iter()
            .map(|r| Ok(r.try_get::<String, _>("id")?))
            .collect::<Result<Vec<String>>>()
        };
        let mut jobs = Vec::new();
        for id in ids("jobs").await? {
            jobs.push(self.job(&id).await?);
        }
        let mut assets = Vec::new();
        for id in ids("assets").await? {
            assets.push(self.asset(&id).await?);
        }
        let mut edit_sessions = Vec::new();
        for id in ids("edit_sessions").await? {
            edit_sessions.push(self.session(&id).await?);
        }
        let mut characters = Vec::new();
        for id in ids("characters").await? {
            characters.push(self.character(&id).await?);
        }
        let mut audit = Vec::new();
        let mut after = 0;
        loop {
            let page = store
                .system()
                .audit_events(Some(self.tenant_id), after, 1000)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            audit.extend(page);
        }
        Ok(ExportRecords {
            tenant,
            keys,
            jobs,
            assets,
            edit_sessions,
            characters,
            audit,
        })
    }
}
