//! NanoImg's storage: tenants, API keys, assets, characters, jobs, edit sessions and the audit log in a SQL database (an
//! embedded SQLite file by default), image bytes in a blob store (files on disk by default).
//!
//! Tenant isolation lives here, not in the handlers: everything a tenant owns is reached through
//! [`Store::scoped`], whose every query carries `tenant_id`, so another tenant's object is simply
//! not found. Ids are 128-bit random. The audit log has one writer, [`Store::audit`], and is a
//! hash chain with signed checkpoints ([`Store::verify_audit`]).

pub mod assets;
pub mod audit;
pub mod blobs;
pub mod characters;
pub mod crypto;
mod db;
pub mod erasure;
pub mod error;
pub mod export;
pub mod ids;
pub mod jobs;
pub mod keys;
mod keys_at_rest;
pub mod queue;
pub mod retention;
pub mod sessions;
pub mod tenants;
#[doc(hidden)]
pub mod testing;
pub mod usage;

pub use assets::{Asset, NewAsset};
pub use audit::chain::{ChainBreak, ChainReport, Problem};
pub use audit::checkpoint::{read_witness, AuditOptions, Checkpoint, CheckpointKey};
pub use audit::{AuditEvent, AuditRecord, Outcome};
pub use characters::{Character, CharacterReference, NewCharacter, NewReference};
pub use crypto::MasterKey;
pub use db::Backend;
pub use erasure::Erasure;
pub use error::{Result, StoreError};
pub use export::ExportRecords;
pub use jobs::{Job, JobStatus, Recovery, Refusal};
pub use keys::{Scope, SecretKey};
pub use queue::{Claimed, Reaped, WORKER_LOST};
pub use retention::Retained;
pub use sessions::{EditSession, EditVersion, NewVersion};
pub use tenants::{AuthFailure, KeyRecord, NewKey, Principal, Tenant, TenantLimits};
pub use usage::Usage;

use audit::checkpoint::AuditSigner;
use audit::AuditLog;
use blobs::BlobStore;
use db::Db;
use keys_at_rest::Keyring;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Handle to the database and the blob store. Cheap to clone; share one per process.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    blobs: BlobStore,
    audit_log: Arc<AuditLog>,
    keys: Arc<Keyring>,
}

/// How to open a store: where the metadata lives, the audit log's key and witness, and the
/// master key.
#[derive(Debug)]
pub struct StoreOptions {
    /// The metadata database: `sqlite://PATH` or `postgres://…`. `None` is the SQLite file
    /// `nanoimg.db` in the data directory.
    pub database_url: Option<String>,
    /// Where blobs go: `s3://BUCKET[/PREFIX]` (endpoint and credentials from the `AWS_*`
    /// environment variables) or a directory. `None` is `blobs/` in the data directory.
    pub blob_url: Option<String>,
    pub audit: AuditOptions,
    /// Wraps every tenant's data key (encryption at rest).
    pub master_key: MasterKey,
    /// The master key before a rotation: tenant keys it wrapped are re-wrapped under
    /// `master_key` when the store opens.
    pub previous_master_key: Option<MasterKey>,
}

impl StoreOptions {
    /// The defaults for a data directory: the audit files in `audit/`, and the master key in
    /// `secrets/master.key` (made when missing). Keep that key off the data's backups, or give
    /// the server one from elsewhere (docs/data-protection.md).
    pub fn in_data_dir(dir: &Path) -> Result<Self> {
        Ok(Self {
            database_url: None,
            blob_url: None,
            audit: AuditOptions::in_data_dir(dir),
            master_key: MasterKey::load_or_create(&dir.join("secrets").join("master.key"))?,
            previous_master_key: None,
        })
    }
}

/// The SQLite file inside a data directory.
pub const SQLITE_FILE: &str = "nanoimg.db";

impl Store {
    /// Opens (creating if needed) the default store in `data_dir`: `nanoimg.db`, `blobs/` and
    /// the audit signing key and witness in `audit/`. The directory is made private to the
    /// user (0700).
    pub async fn open(data_dir: &Path) -> Result<Self> {
        blobs::create_private_dir(data_dir)?;
        Self::open_in(data_dir, StoreOptions::in_data_dir(data_dir)?).await
    }

    /// Like [`Store::open`], with the database, keys and files `options` name.
    pub async fn open_in(data_dir: &Path, options: StoreOptions) -> Result<Self> {
        blobs::create_private_dir(data_dir)?;
        Self::open_with(data_dir.join("blobs"), options).await
    }

    /// Opens a store from the options and a blob directory (used when the options name no
    /// blob URL; the SQLite file, when they name no database, is beside it). Re-wraps tenant keys if the master key was rotated, and
    /// encrypts any blob or field written before encryption existed.
    pub async fn open_with(blob_dir: PathBuf, options: StoreOptions) -> Result<Self> {
        let signer = AuditSigner::load(&options.audit)?;
        let url = match &options.database_url {
            Some(url) => url.clone(),
            None => {
                let parent = blob_dir.parent().unwrap_or(Path::new("."));
                db::sqlite_url(&parent.join(SQLITE_FILE))
            }
        };
        let db = Db::connect(&url).await?;
        db.migrate().await?;
        let store = Self {
            db,
            blobs: match &options.blob_url {
                Some(url) => BlobStore::from_url(url)?,
                None => BlobStore::new(blob_dir)?,
            },
            audit_log: Arc::new(AuditLog::new(signer)),
            keys: Arc::new(Keyring::new(options.master_key)),
        };
        if let Some(old) = &options.previous_master_key {
            store.rewrap_keys(old).await?;
        }
        store.encrypt_legacy_blobs().await?;
        store.encrypt_legacy_fields().await?;
        Ok(store)
    }

    /// Everything owned by one tenant. Every query made through it is limited to that tenant.
    pub fn scoped<'a>(&'a self, tenant_id: &'a str) -> Scoped<'a> {
        Scoped {
            store: self,
            tenant_id,
        }
    }

    /// The cross-tenant operations; see [`System`].
    pub fn system(&self) -> System<'_> {
        System { store: self }
    }

    /// Closes the connection pool, waiting for queries in flight.
    pub async fn close(&self) {
        self.db.pool.close().await;
    }

    /// Which database holds the metadata.
    pub fn backend(&self) -> Backend {
        self.db.backend
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.db.pool).await.is_ok()
    }
}

/// The store's operations that are not one tenant's: the shared job queue (claims, heartbeats,
/// progress, reaping), tenants and their keys, the audit log, erasure and retention. It is
/// reached only through [`Store::system`], so every place that works across tenants says so
/// where it calls; everything a request does for its tenant goes through [`Scoped`].
#[derive(Clone, Copy)]
pub struct System<'a> {
    store: &'a Store,
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
