//! What a tenant keeps: counts and bytes, for `GET /v1/me/usage` and the studio's account page;
//! and the model its A1111-API clients chose.

use crate::error::Result;
use crate::Scoped;
use serde::Serialize;
use sqlx::Row;

/// A tenant's stored data, counted now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Stored images of every kind (outputs, uploads, character references).
    pub images: i64,
    /// Their bytes, as encoded (before sealing).
    pub image_bytes: i64,
    pub jobs: i64,
    pub characters: i64,
    pub edit_sessions: i64,
}

impl Scoped<'_> {
    /// The model the tenant's A1111-API clients chose (`sd_model_checkpoint`), if any.
    pub async fn default_model(&self) -> Result<Option<String>> {
        let row = sqlx::query("SELECT default_model FROM tenants WHERE id = $1")
            .bind(self.tenant_id)
            .fetch_one(&self.store.db.pool)
            .await?;
        Ok(row.try_get("default_model")?)
    }

    /// Sets (or, with `None`, clears) the tenant's chosen model.
    pub async fn set_default_model(&self, model: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE tenants SET default_model = $1 WHERE id = $2")
            .bind(model)
            .bind(self.tenant_id)
            .execute(&self.store.db.pool)
            .await?;
        Ok(())
    }

    /// Bytes of the tenant's stored images (the quota's measure): one sum.
    pub async fn stored_bytes(&self) -> Result<i64> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT) AS bytes FROM assets WHERE tenant_id = $1",
        )
        .bind(self.tenant_id)
        .fetch_one(&self.store.db.pool)
        .await?;
        Ok(row.try_get("bytes")?)
    }

    /// Counts the tenant's rows; one query, so the numbers agree with each other.
    pub async fn usage(&self) -> Result<Usage> {
        let row = sqlx::query(
            "SELECT \
             (SELECT COUNT(*) FROM assets WHERE tenant_id = $1) AS images, \
             (SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM assets WHERE tenant_id = $2) \
             AS image_bytes, \
             (SELECT COUNT(*) FROM jobs WHERE tenant_id = $3) AS jobs, \
             (SELECT COUNT(*) FROM characters WHERE tenant_id = $4) AS characters, \
             (SELECT COUNT(*) FROM edit_sessions WHERE tenant_id = $5) AS edit_sessions",
        )
        .bind(self.tenant_id)
        .bind(self.tenant_id)
        .bind(self.tenant_id)
        .bind(self.tenant_id)
        .bind(self.tenant_id)
        .fetch_one(&self.store.db.pool)
        .await?;
        Ok(Usage {
            images: row.try_get("images")?,
            image_bytes: row.try_get("image_bytes")?,
            jobs: row.try_get("jobs")?,
            characters: row.try_get("characters")?,
            edit_sessions: row.try_get("edit_sessions")?,
        })
    }
}
