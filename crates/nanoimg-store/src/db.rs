//! The connection pool and schema migrations.

use crate::error::{corrupt, Result};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Connection, Executor, Row};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// Migrations in order: (version, SQL). Never edit one that has shipped; add the next, to both
/// lists: the two backends' schemas are the same tables and columns at every version.
const SQLITE_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../migrations/sqlite/0002_tenant_limits.sql")),
    (3, include_str!("../migrations/sqlite/0003_tenant_moderation.sql")),
    (4, include_str!("../migrations/sqlite/0004_edit_sessions.sql")),
    (5, include_str!("../migrations/sqlite/0005_characters.sql")),
    (6, include_str!("../migrations/sqlite/0006_audit_chain.sql")),
    (7, include_str!("../migrations/sqlite/0007_encryption.sql")),
    (8, include_str!("../migrations/sqlite/0008_retention.sql")),
    (9, include_str!("../migrations/sqlite/0009_shared_queue.sql")),
    (10, include_str!("../migrations/sqlite/0010_admission_lock.sql")),
    (11, include_str!("../migrations/sqlite/0011_tenant_budgets.sql")),
    (
        12,
        include_str!("../migrations/sqlite/0012_tenant_default_model.sql"),
    ),
];

const POSTGRES_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_init.sql")),
    (2, include_str!("../migrations/postgres/0002_tenant_limits.sql")),
    (
        3,
        include_str!("../migrations/postgres/0003_tenant_moderation.sql"),
    ),
    (4, include_str!("../migrations/postgres/0004_edit_sessions.sql")),
    (5, include_str!("../migrations/postgres/0005_characters.sql")),
    (6, include_str!("../migrations/postgres/0006_audit_chain.sql")),
    (7, include_str!("../migrations/postgres/0007_encryption.sql")),
    (8, include_str!("../migrations/postgres/0008_retention.sql")),
    (9, include_str!("../migrations/postgres/0009_shared_queue.sql")),
    (10, include_str!("../migrations/postgres/0010_admission_lock.sql")),
    (11, include_str!("../migrations/postgres/0011_tenant_budgets.sql")),
    (
        12,
        include_str!("../migrations/postgres/0012_tenant_default_model.sql"),
    ),
];

/// The migration that adds the audit chain; the events before it are chained in its
/// transaction.
pub(crate) const AUDIT_CHAIN: i64 = 6;

/// Which SQL database holds the metadata. The queries are the same for both (`$n`
/// placeholders, standard SQL); the schema, the connection settings and the log compaction differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file (`sqlite://PATH`), the default.
    Sqlite,
    /// A PostgreSQL server (`postgres://…`), for several processes on several machines.
    Postgres,
}

impl Backend {
    /// The backend a database URL names.
    pub fn of_url(url: &str) -> Result<Self> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            _ => Err(crate::StoreError::Invalid(format!(
                "unsupported database URL scheme {scheme:?}: use sqlite://PATH or postgres://USER@HOST/DB"
            ))),
        }
    }

    fn migrations(self) -> &'static [(i64, &'static str)] {
        match self {
            Self::Sqlite => SQLITE_MIGRATIONS,
            Self::Postgres => POSTGRES_MIGRATIONS,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Db {
    pub(crate) pool: AnyPool,
    pub(crate) backend: Backend,
}

/// The URL of a SQLite file, created if missing.
pub(crate) fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

impl Db {
    pub(crate) async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        match Backend::of_url(url)? {
            Backend::Sqlite => Self::connect_sqlite(url).await,
            Backend::Postgres => Self::connect_postgres(url).await,
        }
    }

    async fn connect_postgres(url: &str) -> Result<Self> {
        let opts = AnyConnectOptions::from_str(url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        Ok(Self {
            pool,
            backend: Backend::Postgres,
        })
    }

    async fn connect_sqlite(url: &str) -> Result<Self> {
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
        Ok(Self {
            pool,
            backend: Backend::Sqlite,
        })
    }

    /// Makes deleted rows go from the files, as far as the backend allows. SQLite (with
    /// `secure_delete`) zeroes them in place; this copies the write-ahead log into the file and
    /// empties it. PostgreSQL keeps dead rows until VACUUM: this vacuums `tables`, so their
    /// space is reclaimed and reused (docs/data-protection.md says what that leaves).
    pub(crate) async fn compact_log(&self, tables: &[&str]) -> Result<()> {
        match self.backend {
            Backend::Sqlite => {
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(&self.pool)
                    .await?;
            }
            Backend::Postgres => {
                let mut conn = self.pool.acquire().await?;
                for t in tables {
                    conn.execute(sqlx::raw_sql(&format!("VACUUM {t}"))).await?;
                }
            }
        }
        Ok(())
    }

    pub(crate) async fn migrate(&self) -> Result<()> {
        self.migrate_to(self.backend.migrations().last().map_or(0, |m| m.0))
            .await
    }

    /// Applies the migrations up to `last` (tests build older databases with it). On
    /// PostgreSQL, processes that start together (an API node and its workers) take turns on an
    /// advisory lock, so each migration runs once.
    pub(crate) async fn migrate_to(&self, last: i64) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        if self.backend == Backend::Postgres {
            conn.execute(sqlx::raw_sql("SELECT pg_advisory_lock(7361726979)"))
                .await?;
        }
        let applied = self.apply_migrations(&mut conn, last).await;
        if self.backend == Backend::Postgres {
            conn.execute(sqlx::raw_sql("SELECT pg_advisory_unlock(7361726979)"))
                .await?;
        }
        applied
    }

    async fn apply_migrations(&self, conn: &mut sqlx::AnyConnection, last: i64) -> Result<()> {
        let int = match self.backend {
            Backend::Sqlite => "INTEGER",
            Backend::Postgres => "BIGINT",
        };
        conn.execute(sqlx::raw_sql(&format!(
            "CREATE TABLE IF NOT EXISTS nanoimg_migrations \
             (version {int} PRIMARY KEY, applied_at {int} NOT NULL)"
        )))
        .await?;
        let have: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM nanoimg_migrations")
            .fetch_one(&mut *conn)
            .await?
            .try_get("v")?;
        let migrations = self.backend.migrations();
        let newest = migrations.last().map_or(0, |m| m.0);
        if have > newest {
            return Err(corrupt(format!(
                "the database is at schema version {have}, newer than this build's {newest}; \
                 upgrade NanoImg"
            )));
        }
        for (version, sql) in migrations.iter().filter(|m| m.0 > have && m.0 <= last) {
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
