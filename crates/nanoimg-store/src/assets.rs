//! Images a tenant uploaded or generated: metadata in the database, bytes in the blob store.

use crate::error::{Result, StoreError};
use crate::ids::{looks_like_id, new_id, now_ms};
use crate::keys_at_rest::FieldKey;
use crate::Scoped;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::Row;

/// An image and what is known about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Asset {
    pub id: String,
    #[serde(skip)]
    pub tenant_id: String,
    /// `upload` or `output`.
    pub kind: String,
    pub media_type: String,
    pub bytes: i64,
    pub width: i64,
    pub height: i64,
    pub sha256: String,
    /// The job that generated it, for outputs.
    pub job_id: Option<String>,
    /// Generation parameters and the like.
    pub metadata: serde_json::Value,
    pub created_at: i64,
}

/// What to record about a new asset.
#[derive(Debug, Clone)]
pub struct NewAsset {
    pub kind: &'static str,
    pub media_type: String,
    pub width: u32,
    pub height: u32,
    pub job_id: Option<String>,
    pub metadata: serde_json::Value,
}

const COLUMNS: &str =
    "id, tenant_id, kind, media_type, bytes, width, height, sha256, job_id, metadata, created_at";

const METADATA: &str = "assets.metadata";

/// An asset row; `key` is its tenant's (the metadata is sealed with it).
fn asset_from(row: &AnyRow, key: &FieldKey) -> Result<Asset> {
    let id: String = row.try_get("id")?;
    let metadata = key.open(METADATA, &id, &row.try_get::<String, _>("metadata")?)?;
    Ok(Asset {
        id,
        tenant_id: row.try_get("tenant_id")?,
        kind: row.try_get("kind")?,
        media_type: row.try_get("media_type")?,
        bytes: row.try_get("bytes")?,
        width: row.try_get("width")?,
        height: row.try_get("height")?,
        sha256: row.try_get("sha256")?,
        job_id: row.try_get("job_id")?,
        metadata: serde_json::from_str(&metadata)
            .map_err(|e| crate::error::corrupt(format!("asset metadata: {e}")))?,
        created_at: row.try_get("created_at")?,
    })
}

impl Scoped<'_> {
    /// Stores an image: the bytes first, then the row, so a listed asset always has its bytes;
    /// if the row cannot be written the bytes are removed again.
    pub async fn put_asset(&self, new: NewAsset, bytes: &[u8]) -> Result<Asset> {
        let asset = Asset {
            id: new_id("img"),
            tenant_id: self.tenant_id.to_owned(),
            kind: new.kind.to_owned(),
            media_type: new.media_type,
            bytes: bytes.len() as i64,
            width: new.width.into(),
            height: new.height.into(),
            sha256: hex::encode(Sha256::digest(bytes)),
            job_id: new.job_id,
            metadata: new.metadata,
            created_at: now_ms(),
        };
        self.put_blob(&asset.id, bytes).await?;
        let r = sqlx::query(&format!(
            "INSERT INTO assets ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(&asset.id)
        .bind(&asset.tenant_id)
        .bind(&asset.kind)
        .bind(&asset.media_type)
        .bind(asset.bytes)
        .bind(asset.width)
        .bind(asset.height)
        .bind(&asset.sha256)
        .bind(&asset.job_id)
        .bind(self.store.field_key(self.tenant_id).await?.seal(
            METADATA,
            &asset.id,
            &asset.metadata.to_string(),
        )?)
        .bind(asset.created_at)
        .execute(&self.store.db.pool)
        .await;
        if let Err(e) = r {
            let _ = self.store.blobs.delete(&asset.tenant_id, &asset.id).await;
            return Err(e.into());
        }
        Ok(asset)
    }

    /// One asset's record.
    pub async fn asset(&self, id: &str) -> Result<Asset> {
        if !looks_like_id(id, "img") {
            return Err(StoreError::NotFound("image"));
        }
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM assets WHERE id = $1 AND tenant_id = $2"
        ))
        .bind(id)
        .bind(self.tenant_id)
        .fetch_optional(&self.store.db.pool)
        .await?;
        let key = self.store.field_key(self.tenant_id).await?;
        row.as_ref()
            .map(|r| asset_from(r, &key))
            .transpose()?
            .ok_or(StoreError::NotFound("image"))
    }

    /// One asset's record and bytes.
    pub async fn asset_bytes(&self, id: &str) -> Result<(Asset, Vec<u8>)> {
        let asset = self.asset(id).await?;
        let bytes = self.get_blob(&asset.id).await?;
        Ok((asset, bytes))
    }

    /// The tenant's assets, newest first; `before` (an asset id) pages backwards.
    pub async fn assets(&self, limit: u32, before: Option<&str>) -> Result<Vec<Asset>> {
        let limit = i64::from(limit.clamp(1, 100));
        let rows = match before {
            Some(before) => {
                let b = self.asset(before).await?;
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM assets WHERE tenant_id = $1 AND \
                     (created_at < $2 OR (created_at = $3 AND id < $4)) \
                     ORDER BY created_at DESC, id DESC LIMIT $5"
                ))
                .bind(self.tenant_id)
                .bind(b.created_at)
                .bind(b.created_at)
                .bind(&b.id)
                .bind(limit)
                .fetch_all(&self.store.db.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM assets WHERE tenant_id = $1 \
                     ORDER BY created_at DESC, id DESC LIMIT $2"
                ))
                .bind(self.tenant_id)
                .bind(limit)
                .fetch_all(&self.store.db.pool)
                .await?
            }
        };
        let key = self.store.field_key(self.tenant_id).await?;
        rows.iter().map(|r| asset_from(r, &key)).collect()
    }

    /// Deletes an asset: the row, then the bytes. A character's reference image is deleted with
    /// its character, not alone.
    pub async fn delete_asset(&self, id: &str) -> Result<()> {
        let asset = self.asset(id).await?;
        if asset.kind == "reference" {
            return Err(StoreError::Conflict(format!(
                "image {id} is a reference image of character {}; delete the character instead",
                asset.metadata["character_id"].as_str().unwrap_or("?")
            )));
        }
        self.delete_asset_unchecked(id).await
    }

    /// Deletes any asset of the tenant's, reference images included.
    pub(crate) async fn delete_asset_unchecked(&self, id: &str) -> Result<()> {
        let asset = self.asset(id).await?;
        sqlx::query("DELETE FROM assets WHERE id = $1 AND tenant_id = $2")
            .bind(&asset.id)
            .bind(self.tenant_id)
            .execute(&self.store.db.pool)
            .await?;
        self.store.blobs.delete(&asset.tenant_id, &asset.id).await
    }
}
