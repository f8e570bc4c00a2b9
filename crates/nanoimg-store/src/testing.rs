//! Helpers for test suites (this crate's and the server's) that run against the services
//! `scripts/test.sh` starts on loopback. Not for production use.

/// A new, empty database on the PostgreSQL server named by `NANOIMG_TEST_POSTGRES_URL` (an
/// admin URL), as a URL. `None` when the variable is not set, which is a failure under CI
/// (`CI` set): there the suite must run on PostgreSQL too.
pub async fn fresh_postgres_database() -> Option<String> {
    let Ok(admin) = std::env::var("NANOIMG_TEST_POSTGRES_URL") else {
        skip_or_fail("NANOIMG_TEST_POSTGRES_URL", "PostgreSQL");
        return None;
    };
    sqlx::any::install_default_drivers();
    let name = format!("nanoimg_test_{}", crate::ids::new_id("db"));
    let pool = sqlx::AnyPool::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("the test PostgreSQL server at {admin}: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    pool.close().await;
    let base = admin.rsplit_once('/').expect("an admin URL with a database").0;
    Some(format!("{base}/{name}"))
}

/// The test S3 bucket's URL (`s3://bucket`) and its folder on disk, or `None` when
/// `NANOIMG_TEST_S3_URL` is not set (a failure under CI).
pub fn s3_bucket() -> Option<(String, std::path::PathBuf)> {
    let Ok(url) = std::env::var("NANOIMG_TEST_S3_URL") else {
        skip_or_fail("NANOIMG_TEST_S3_URL", "s3s-fs");
        return None;
    };
    let root = std::env::var("NANOIMG_TEST_S3_ROOT").expect("NANOIMG_TEST_S3_ROOT with NANOIMG_TEST_S3_URL");
    Some((url, root.into()))
}

fn skip_or_fail(var: &str, what: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{var} is not set: run the suite with scripts/test.sh, which starts {what}"
    );
    eprintln!("skipped: {var} is not set (scripts/test.sh starts {what})");
}

/// Every file under `dir`, recursively (none when it does not exist).
pub fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}
