//! The connection pool and schema migrations.

use crate::error::{corrupt, Result};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Connection, Executor, Row};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// Migrations in order: (version, SQL). Never edit one that has shipped; add the next.
const SQLITE_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../migrations/sqlite/0002_tenant_limits.sql")),
    (3, include_str!("../migrations/sqlite/0003_tenant_moderation.sql")),
    (4, include_str!("../migrations/sqlite/0004_edit_sessions.sql")),
    (5, include_str!("../migrations/sqlite/0005_characters.sql")),
    (6, include_str!("../migrations/sqlite/0006_audit_chain.sql")),
    (7, include_str!("../migrations/sqlite/0007_encryption.sql")),
    (8, include_str!("../migrations/sqlite/0008_retention.sql")),
];

/// The migration that adds the audit chain; the events before it are chained in its
/// transaction.
pub(crate) const AUDIT_CHAIN: i64 = 6;

#[derive(Clone, Debug)]
pub(crate) struct Db {
    pub(crate) pool: AnyPool,
}

/// The URL of a SQLite file, created if missing.
pub(crate) fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

impl Db {
    pub(crate) async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        if !url.starts_with("sqlite:") {
            return Err(crate::StoreError::Invalid(format!(
                "unsupported database URL {:?}: this build stores metadata in SQLite (sqlite://PATH)",
                url.split(':').next().unwrap_or_default()
            )));
        }
        let opts = AnyConnectOptions::from_str(url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // Writers wait for each other instead of failing; WAL lets readers go on
                    // while one writes.
                    conn.execute(
                        "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; \
                         PRAGMA synchronous = NORMAL; PRAGMA secure_delete = ON;",
                    )
                    .await?;
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        sqlx::query("PRAGMA journal_mode = WAL").execute(&pool).await?;
        Ok(Self { pool })
    }

    /// Copies the write-ahead log into the database file and empties it, so that nothing
    /// deleted lingers in the log.
    pub(crate) async fn compact_log(&self) -> Result<()> {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(crate) async fn migrate(&self) -> Result<()> {
        self.migrate_to(SQLITE_MIGRATIONS.last().map_or(0, |m| m.0)).await
    }

    /// Applies the migrations up to `last` (tests build older databases with it).
    pub(crate) async fn migrate_to(&self, last: i64) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        conn.execute(
            "CREATE TABLE IF NOT EXISTS nanoimg_migrations \
             (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
        )
        .await?;
        let have: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM nanoimg_migrations")
            .fetch_one(&mut *conn)
            .await?
            .try_get("v")?;
        let newest = SQLITE_MIGRATIONS.last().map_or(0, |m| m.0);
        if have > newest {
            return Err(corrupt(format!(
                "the database is at schema version {have}, newer than this build's {newest}; \
                 upgrade NanoImg"
            )));
        }
        for (version, sql) in SQLITE_MIGRATIONS.iter().filter(|m| m.0 > have && m.0 <= last) {
            let mut tx = conn.begin().await?;
            tx.execute(sqlx::raw_sql(sql)).await?;
            if *version == AUDIT_CHAIN {
                crate::audit::chain::chain_existing(&mut tx).await?;
            }
            sqlx::query("INSERT INTO nanoimg_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(*version)
                .bind(crate::ids::now_ms())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(())
    }
}
