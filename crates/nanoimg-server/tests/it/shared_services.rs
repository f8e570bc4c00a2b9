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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simultaneous_submits_to_two_api_nodes_never_exceed_the_tenants_cap() {
    let Some(database) = nanoimg_store::testing::fresh_postgres_database().await else {
        return;
    };
    // Two API nodes on one database (no worker: the admitted jobs stay queued), sharing the
    // master key as every node of one deployment does.
    let keys = tempfile::tempdir().unwrap();
    let master = keys.path().join("master.key");
    nanoimg_store::MasterKey::load_or_create(&master).unwrap();
    let node = |database: String, master: std::path::PathBuf| {
        move |c: &mut nanoimg_server::Config| {
            c.role = nanoimg_server::config::Role::Api;
            c.database_url = Some(Secret(database));
            c.encryption.master_key_file = Some(master);
            c.rate.concurrent_jobs_per_tenant = 2;
            c.rate.requests_per_minute = 1000;
            c.rate.images_per_minute = 1000;
        }
    };
    let a = start(node(database.clone(), master.clone())).await;
    let b = start(node(database, master)).await;
    let (_, key) = a.tenant("racer", ALL_SCOPES).await;
    let submits: Vec<_> = (0..40)
        .map(|i| {
            let s = if i % 2 == 0 { &a } else { &b };
            s.http
                .post(s.url("/v1/jobs"))
                .bearer_auth(&key)
                .json(&tiny_request(json!({"prompt": format!("race {i}")})))
                .send()
        })
        .collect();
    let answers = futures_util::future::join_all(submits).await;
    let mut statuses: Vec<u16> = answers
        .iter()
        .map(|r| r.as_ref().unwrap().status().as_u16())
        .collect();
    statuses.sort_unstable();
    let admitted = statuses.iter().filter(|s| **s == 202).count();
    assert_eq!(admitted, 2, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 202 || *s == 429), "{statuses:?}");
    let jobs = a.get_json(&key, "/v1/jobs").await;
    assert_eq!(jobs["data"].as_array().unwrap().len(), 2, "{jobs}");
}
