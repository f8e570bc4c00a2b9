//! The server on shared services instead of its data directory: metadata, jobs and the audit log
//! in a real PostgreSQL server, image bytes in a real S3-compatible bucket (both started on
//! loopback by `scripts/test.sh`). Generation, download, a restart, audit verification and
//! erasure work the same, and nothing lands in the data directory but keys.

use crate::common::*;
use nanoimg_server::config::Secret;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_keeps_its_data_in_postgres_and_s3() {
    let Some(database) = nanoimg_store::testing::fresh_postgres_database().await else {
        return;
    };
    let Some((bucket, root)) = nanoimg_store::testing::s3_bucket() else {
        return;
    };
    let prefix = nanoimg_store::ids::new_id("srv");
    let mut s = start(|c| {
        c.database_url = Some(Secret(database.clone()));
        c.blob_url = Some(format!("{bucket}/{prefix}"));
    })
    .await;
    let (tenant, key) = s.tenant("acme", ALL_SCOPES).await;
    let v: Value = s
        .generate(&key, tiny_request(json!({"n": 2})))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2, "{v}");
    let listed = s.get_json(&key, "/v1/assets").await;
    let ids: Vec<String> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2, "{listed}");
    let first = content(&s, &key, &ids[0]).await;
    assert!(image::load_from_memory(&first).is_ok());

    // The bytes are objects in the bucket, as ciphertext; the data directory has no database
    // and no blobs.
    let objects = files(&root.join(&prefix).join(&tenant));
    assert_eq!(objects.len(), 2, "{objects:?}");
    for o in &objects {
        let stored = std::fs::read(o).unwrap();
        assert!(
            image::load_from_memory(&stored).is_err(),
            "{} is ciphertext",
            o.display()
        );
    }
    assert!(!s.config.data_dir.join("nanoimg.db").exists());
    assert!(files(&s.config.data_dir.join("blobs")).is_empty());

    // Across a restart everything is still there, and the audit chain verifies.
    s.restart().await;
    let again = content(&s, &key, &ids[0]).await;
    assert_eq!(again, first);
    let report = s.get_json(&s.admin_key, "/v1/admin/audit/verify").await;
    assert_eq!(report["ok"], true, "{report}");

    // Erasure empties the tenant's part of the bucket.
    let r = s
        .http
        .delete(s.url(&format!("/v1/admin/tenants/{tenant}")))
        .bearer_auth(&s.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert!(files(&root.join(&prefix).join(&tenant)).is_empty());
    let report = s.get_json(&s.admin_key, "/v1/admin/audit/verify").await;
    assert_eq!(report["ok"], true, "{report}");
}

async fn content(s: &TestServer, key: &str, id: &str) -> Vec<u8> {
    let r = s
        .http
        .get(s.url(&format!("/v1/assets/{id}/content")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap().to_vec()
}
