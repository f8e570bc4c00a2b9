//! One store test, two databases: each test in these files is an `async fn(TestDb)` and
//! `on_both_backends!` runs it once against a SQLite file and once against a fresh database on
//! the PostgreSQL server that `scripts/test.sh` starts (its admin URL in
//! `NANOIMG_TEST_POSTGRES_URL`). Without that variable the PostgreSQL half says it was skipped,
//! except under CI (`CI` set), where a missing server is a failure.

#![allow(dead_code)]

use nanoimg_store::{Backend, Store, StoreOptions};
use std::path::Path;

/// A store's database and data directory (blobs, keys, witness) for one test.
pub struct TestDb {
    pub dir: tempfile::TempDir,
    pub backend: Backend,
    /// The PostgreSQL database's URL; `None` for the SQLite file in `dir`.
    pub url: Option<String>,
}

impl TestDb {
    pub async fn sqlite() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            backend: Backend::Sqlite,
            url: None,
        }
    }

    /// A new, empty database on the test server, or `None` (skipped) when there is none.
    pub async fn postgres() -> Option<Self> {
        let url = nanoimg_store::testing::fresh_postgres_database().await?;
        Some(Self {
            dir: tempfile::tempdir().unwrap(),
            backend: Backend::Postgres,
            url: Some(url),
        })
    }

    /// Another new database of the same kind.
    pub async fn fresh(&self) -> Self {
        match self.backend {
            Backend::Sqlite => Self::sqlite().await,
            Backend::Postgres => Self::postgres().await.expect("the server was there a moment ago"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The options of a store in `dir` (the data directory) on this database.
    pub fn options_in(&self, dir: &Path) -> StoreOptions {
        StoreOptions {
            database_url: self.url.clone(),
            ..StoreOptions::in_data_dir(dir).unwrap()
        }
    }

    pub fn options(&self) -> StoreOptions {
        self.options_in(self.path())
    }

    pub async fn open(&self) -> Store {
        Store::open_in(self.path(), self.options()).await.unwrap()
    }

    /// A direct connection to the database, as someone with its password (or the SQLite
    /// file) would have: the store's rules do not apply to it.
    pub async fn raw(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        let url = match &self.url {
            Some(u) => u.clone(),
            None => format!("sqlite://{}", self.path().join("nanoimg.db").display()),
        };
        sqlx::AnyPool::connect(&url).await.unwrap()
    }

    /// `raw` with the append-only triggers on the audit tables dropped.
    pub async fn raw_without_guards(&self) -> sqlx::AnyPool {
        let pool = self.raw().await;
        for (trigger, table) in [
            ("audit_events_no_update", "audit_events"),
            ("audit_events_no_delete", "audit_events"),
            ("audit_checkpoints_no_update", "audit_checkpoints"),
            ("audit_checkpoints_no_delete", "audit_checkpoints"),
        ] {
            let sql = match self.backend {
                Backend::Sqlite => format!("DROP TRIGGER {trigger}"),
                Backend::Postgres => format!("DROP TRIGGER {trigger} ON {table}"),
            };
            sqlx::query(&sql).execute(&pool).await.unwrap();
        }
        pool
    }
}

#[allow(unused_imports)]
pub use nanoimg_store::testing::files;

/// Runs each named `async fn(TestDb)` against SQLite (`sqlite::name`) and PostgreSQL
/// (`postgres::name`).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::common::TestDb::sqlite().await).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(db) = super::common::TestDb::postgres().await {
                        super::$name(db).await
                    }
                }
            )*
        }
    };
}
