//! NanoImg's storage: tenants, API keys, assets, characters, jobs, edit sessions and the audit log in a SQL database (an
//! embedded SQLite file by default), image bytes in a blob store (files on disk by default).
//!
//! Tenant isolation lives here, not in the handlers: everything a tenant owns is reached through
//! [`Store::scoped`], whose every query carries `tenant_id`, so another tenant's object is simply
//! not found. Ids are 128-bit random. The audit log has one writer, [`Store::audit`].

pub mod assets;
pub mod audit;
pub mod blobs;
pub mod characters;
mod db;
pub mod error;
pub mod ids;
pub mod jobs;
pub mod keys;
pub mod sessions;
pub mod tenants;

pub use assets::{Asset, NewAsset};
pub use audit::{AuditEvent, AuditRecord, Outcome};
pub use characters::{Character, CharacterReference, NewCharacter, NewReference};
pub use error::{Result, StoreError};
pub use jobs::{Job, JobStatus, Recovery};
pub use keys::{Scope, SecretKey};
pub use sessions::{EditSession, EditVersion, NewVersion};
pub use tenants::{AuthFailure, KeyRecord, NewKey, Principal, Tenant, TenantLimits};

use blobs::BlobStore;
use db::Db;
use std::path::{Path, PathBuf};

/// Handle to the database and the blob store. Cheap to clone; share one per process.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    blobs: BlobStore,
}

/// The SQLite file inside a data directory.
pub const SQLITE_FILE: &str = "nanoimg.db";

impl Store {
    /// Opens (creating if needed) the default store in `data_dir`: `nanoimg.db` and `blobs/`.
    /// The directory is made private to the user (0700).
    pub async fn open(data_dir: &Path) -> Result<Self> {
        blobs::create_private_dir(data_dir)?;
        let db_path = data_dir.join(SQLITE_FILE);
        Self::open_with(&db::sqlite_url(&db_path), data_dir.join("blobs")).await
    }

    /// Opens a store from a database URL (`sqlite://…`) and a blob directory.
    pub async fn open_with(database_url: &str, blob_dir: PathBuf) -> Result<Self> {
        let db = Db::connect(database_url).await?;
        db.migrate().await?;
        Ok(Self {
            db,
            blobs: BlobStore::new(blob_dir)?,
        })
    }

    /// Everything owned by one tenant. Every query made through it is limited to that tenant.
    pub fn scoped<'a>(&'a self, tenant_id: &'a str) -> Scoped<'a> {
        Scoped {
            store: self,
            tenant_id,
        }
    }

    /// Closes the connection pool, waiting for queries in flight.
    pub async fn close(&self) {
        self.db.pool.close().await;
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.db.pool).await.is_ok()
    }
}

/// A tenant's view of the store; see [`Store::scoped`].
#[derive(Clone, Copy)]
pub struct Scoped<'a> {
    store: &'a Store,
    tenant_id: &'a str,
}

impl Scoped<'_> {
    /// The tenant this view is limited to.
    pub fn tenant_id(&self) -> &str {
        self.tenant_id
    }
}
