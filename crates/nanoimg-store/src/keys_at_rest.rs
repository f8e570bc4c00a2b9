//! Tenant data keys: made on first use, stored wrapped by the master key, cached unwrapped in
//! memory, destroyed by erasure. And the tenant's blobs, sealed with its key.

use crate::crypto::{blob_aad, Key, MasterKey};
use crate::error::{Result, StoreError};
use crate::ids::now_ms;
use crate::{Scoped, Store};
use sqlx::Row;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The master key and the data keys unwrapped so far.
#[derive(Debug)]
pub(crate) struct Keyring {
    pub(crate) master: MasterKey,
    cache: Mutex<HashMap<String, Arc<Key>>>,
}

impl Keyring {
    pub(crate) fn new(master: MasterKey) -> Self {
        Self {
            master,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Drops a tenant's unwrapped key from memory (erasure).
    pub(crate) fn forget(&self, tenant: &str) {
        self.cache.lock().expect("key cache").remove(tenant);
    }
}

impl Store {
    /// The tenant's data key, made (and stored wrapped) on first use.
    pub(crate) async fn data_key(&self, tenant: &str) -> Result<Arc<Key>> {
        if let Some(k) = self.keys.cache.lock().expect("key cache").get(tenant) {
            return Ok(k.clone());
        }
        let master = &self.keys.master;
        let mut row = self.wrapped_key(tenant).await?;
        if row.is_none() {
            let (_, wrapped) = master.new_data_key(tenant)?;
            // Two first uses at once: one insert wins and both read it back.
            sqlx::query(
                "INSERT INTO tenant_keys (tenant_id, master_key_id, wrapped, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id) DO NOTHING",
            )
            .bind(tenant)
            .bind(master.id())
            .bind(hex::encode(&wrapped))
            .bind(now_ms())
            .execute(&self.db.pool)
            .await?;
            row = self.wrapped_key(tenant).await?;
        }
        let (master_id, wrapped) = row.ok_or(StoreError::NotFound("tenant key"))?;
        if master_id != master.id() {
            return Err(StoreError::Invalid(format!(
                "the data key of tenant {tenant} is wrapped by master key {master_id}, and this \
                 server has {}: start once with the old key as encryption.previous_master_key \
                 to re-wrap",
                master.id()
            )));
        }
        let key = Arc::new(master.unwrap(tenant, wrapped)?);
        self.keys
            .cache
            .lock()
            .expect("key cache")
            .insert(tenant.to_owned(), key.clone());
        Ok(key)
    }

    async fn wrapped_key(&self, tenant: &str) -> Result<Option<(String, Vec<u8>)>> {
        let row = sqlx::query("SELECT master_key_id, wrapped FROM tenant_keys WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_optional(&self.db.pool)
            .await?;
        row.map(|r| {
            let wrapped: String = r.try_get("wrapped")?;
            Ok((
                r.try_get("master_key_id")?,
                hex::decode(wrapped).map_err(|_| crate::error::corrupt("a wrapped tenant key"))?,
            ))
        })
        .transpose()
    }

    /// Re-wraps every data key wrapped by `old` under the current master key; returns how many.
    pub(crate) async fn rewrap_keys(&self, old: &MasterKey) -> Result<u64> {
        let rows = sqlx::query("SELECT tenant_id, wrapped FROM tenant_keys WHERE master_key_id = $1")
            .bind(old.id())
            .fetch_all(&self.db.pool)
            .await?;
        let mut n = 0;
        for r in &rows {
            let tenant: String = r.try_get("tenant_id")?;
            let wrapped: String = r.try_get("wrapped")?;
            let wrapped = hex::decode(wrapped).map_err(|_| crate::error::corrupt("a wrapped tenant key"))?;
            let new = self.keys.master.rewrap(old, &tenant, wrapped)?;
            n += sqlx::query(
                "UPDATE tenant_keys SET master_key_id = $1, wrapped = $2 \
                 WHERE tenant_id = $3 AND master_key_id = $4",
            )
            .bind(self.keys.master.id())
            .bind(hex::encode(new))
            .bind(&tenant)
            .bind(old.id())
            .execute(&self.db.pool)
            .await?
            .rows_affected();
        }
        Ok(n)
    }
}

fn stopped(e: tokio::task::JoinError) -> StoreError {
    StoreError::Invalid(format!("blob worker stopped: {e}"))
}

impl Scoped<'_> {
    /// Encrypts `bytes` with the tenant's key and stores them as blob `name`.
    pub(crate) async fn put_blob(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let key = self.store.data_key(self.tenant_id).await?;
        let (aad, data) = (blob_aad(self.tenant_id, name), bytes.to_vec());
        let sealed = tokio::task::spawn_blocking(move || key.seal(&aad, &data))
            .await
            .map_err(stopped)??;
        self.store.blobs.put(self.tenant_id, name, sealed).await
    }

    /// Reads and decrypts blob `name`; a changed, moved or truncated blob is an error.
    pub(crate) async fn get_blob(&self, name: &str) -> Result<Vec<u8>> {
        let key = self.store.data_key(self.tenant_id).await?;
        let sealed = self.store.blobs.get(self.tenant_id, name).await?;
        let (aad, what) = (
            blob_aad(self.tenant_id, name),
            format!("blob {}/{name}", self.tenant_id),
        );
        tokio::task::spawn_blocking(move || key.open(&aad, sealed, &what))
            .await
            .map_err(stopped)?
    }
}

impl Store {
    /// Whether the one-off task `name` (a row of `store_tasks`) has still to run.
    async fn task_pending(&self, name: &str) -> Result<bool> {
        Ok(sqlx::query("SELECT done_at FROM store_tasks WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.db.pool)
            .await?
            .map(|r| r.try_get::<Option<i64>, _>("done_at"))
            .transpose()?
            .is_some_and(|done| done.is_none()))
    }

    async fn task_done(&self, name: &str) -> Result<()> {
        sqlx::query("UPDATE store_tasks SET done_at = $1 WHERE name = $2")
            .bind(now_ms())
            .bind(name)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Encrypts, once, the blobs written before encryption at rest existed (plaintext files).
    /// Safe to stop half-way: a blob that already opens with its tenant's key is left alone,
    /// and the task is marked done only at the end.
    pub(crate) async fn encrypt_legacy_blobs(&self) -> Result<u64> {
        if !self.task_pending("encrypt_blobs").await? {
            return Ok(0);
        }
        let mut encrypted = 0;
        for tenant in self.blobs.tenants().await? {
            let known = sqlx::query("SELECT 1 AS one FROM tenants WHERE id = $1")
                .bind(&tenant)
                .fetch_optional(&self.db.pool)
                .await?
                .is_some();
            if !known {
                continue;
            }
            let key = self.data_key(&tenant).await?;
            for name in self.blobs.names(&tenant).await? {
                let bytes = self.blobs.get(&tenant, &name).await?;
                let aad = blob_aad(&tenant, &name);
                if bytes.starts_with(crate::crypto::MAGIC) && key.open(&aad, bytes.clone(), "").is_ok() {
                    continue;
                }
                self.blobs.put(&tenant, &name, key.seal(&aad, &bytes)?).await?;
                encrypted += 1;
            }
        }
        self.task_done("encrypt_blobs").await?;
        Ok(encrypted)
    }
}

/// Marks a sealed text field: `enc1:` and the base64 of the sealed bytes.
const FIELD_PREFIX: &str = "enc1:";

/// The text columns that hold what a tenant wrote or made (prompts, instructions, plans,
/// descriptions, parameters): (table, column). Each is sealed with the tenant's key, bound to
/// its table, column and row.
pub(crate) const SEALED_FIELDS: &[(&str, &str)] = &[
    ("jobs", "params"),
    ("jobs", "result"),
    ("assets", "metadata"),
    ("edit_versions", "instruction"),
    ("edit_versions", "plan"),
    ("characters", "description"),
];

/// A tenant's key, for its text fields.
pub(crate) struct FieldKey {
    key: Arc<Key>,
    tenant: String,
}

fn field_aad(tenant: &str, column: &str, row: &str) -> Vec<u8> {
    [
        b"nanoimg.field.v1\0",
        tenant.as_bytes(),
        b"\0",
        column.as_bytes(),
        b"\0",
        row.as_bytes(),
    ]
    .concat()
}

impl FieldKey {
    /// `column` is `table.column`; `row` the row's id.
    pub(crate) fn seal(&self, column: &str, row: &str, text: &str) -> Result<String> {
        use base64::Engine;
        let sealed = self
            .key
            .seal(&field_aad(&self.tenant, column, row), text.as_bytes())?;
        Ok(format!(
            "{FIELD_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(sealed)
        ))
    }

    pub(crate) fn open(&self, column: &str, row: &str, stored: &str) -> Result<String> {
        use base64::Engine;
        let what = format!("{column} of {row}");
        let sealed = stored
            .strip_prefix(FIELD_PREFIX)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .ok_or_else(|| crate::error::corrupt(format!("{what}: not encrypted by NanoImg")))?;
        let plain = self
            .key
            .open(&field_aad(&self.tenant, column, row), sealed, &what)?;
        String::from_utf8(plain).map_err(|_| crate::error::corrupt(format!("{what}: not UTF-8")))
    }

    pub(crate) fn open_opt(&self, column: &str, row: &str, stored: Option<String>) -> Result<Option<String>> {
        stored.map(|s| self.open(column, row, &s)).transpose()
    }
}

impl Store {
    /// `tenant`'s key for its text fields.
    pub(crate) async fn field_key(&self, tenant: &str) -> Result<FieldKey> {
        Ok(FieldKey {
            key: self.data_key(tenant).await?,
            tenant: tenant.to_owned(),
        })
    }

    /// Seals, once, the text fields written before encryption at rest existed.
    pub(crate) async fn encrypt_legacy_fields(&self) -> Result<u64> {
        if !self.task_pending("encrypt_fields").await? {
            return Ok(0);
        }
        let mut n = 0;
        for (table, column) in SEALED_FIELDS {
            let rows = sqlx::query(&format!(
                "SELECT id, tenant_id, {column} AS v FROM {table} \
                 WHERE {column} IS NOT NULL AND {column} NOT LIKE 'enc1:%'"
            ))
            .fetch_all(&self.db.pool)
            .await?;
            for r in &rows {
                let (id, tenant, v): (String, String, String) =
                    (r.try_get("id")?, r.try_get("tenant_id")?, r.try_get("v")?);
                let sealed = self
                    .field_key(&tenant)
                    .await?
                    .seal(&format!("{table}.{column}"), &id, &v)?;
                sqlx::query(&format!("UPDATE {table} SET {column} = $1 WHERE id = $2"))
                    .bind(sealed)
                    .bind(&id)
                    .execute(&self.db.pool)
                    .await?;
                n += 1;
            }
        }
        self.task_done("encrypt_fields").await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use crate::{NewAsset, Store};

    /// A blob written before encryption existed is encrypted in place when the store opens.
    #[tokio::test]
    async fn blobs_from_before_encryption_are_encrypted_once_at_open() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).await.unwrap();
        let t = s.system().create_tenant("acme", false).await.unwrap();
        let new = NewAsset {
            kind: "upload",
            media_type: "image/png".into(),
            width: 1,
            height: 1,
            job_id: None,
            metadata: serde_json::json!({}),
        };
        let a = s.scoped(&t.id).put_asset(new, b"old").await.unwrap();
        // As an older version left it: plaintext on disk, the task not done.
        s.blobs
            .put(&t.id, &a.id, b"plaintext from before".to_vec())
            .await
            .unwrap();
        sqlx::query("UPDATE store_tasks SET done_at = NULL")
            .execute(&s.db.pool)
            .await
            .unwrap();
        s.close().await;
        let s = Store::open(d.path()).await.unwrap();
        let raw = s.blobs.get(&t.id, &a.id).await.unwrap();
        assert!(raw.starts_with(crate::crypto::MAGIC));
        let (_, bytes) = s.scoped(&t.id).asset_bytes(&a.id).await.unwrap();
        assert_eq!(bytes, b"plaintext from before");
        // Done once: a plaintext file appearing later is refused, not adopted.
        s.blobs.put(&t.id, &a.id, b"planted".to_vec()).await.unwrap();
        s.close().await;
        let s = Store::open(d.path()).await.unwrap();
        assert!(s.scoped(&t.id).asset_bytes(&a.id).await.is_err());
    }
}
