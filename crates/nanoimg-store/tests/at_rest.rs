//! Encryption at rest against real files: blobs on disk are ciphertext bound to their tenant
//! and name, a flipped byte is an error, and a master key rotation re-wraps tenant keys only
//! (on SQLite and on PostgreSQL). The raw-file scans (the key is not in the database; erasure
//! leaves no plaintext in the database file, its log, the blobs or a backup) read the SQLite
//! file; on PostgreSQL the sealed fields reach the server as ciphertext only, and erasure
//! vacuums (docs/data-protection.md).

mod common;
use common::{files, TestDb};
use nanoimg_store::{AuditOptions, MasterKey, NewAsset, Store, StoreError, StoreOptions};
use std::path::{Path, PathBuf};

const SECRET: &[u8] = b"PLAINTEXT-MARKER the pixels of a private photo";

fn options(dir: &Path, master: [u8; 32], previous: Option<[u8; 32]>) -> StoreOptions {
    StoreOptions {
        database_url: None,
        blob_url: None,
        audit: AuditOptions::in_data_dir(dir),
        master_key: MasterKey::from_bytes(&master),
        previous_master_key: previous.map(|p| MasterKey::from_bytes(&p)),
    }
}

/// `options` on the test's database.
fn options_on(d: &TestDb, master: [u8; 32], previous: Option<[u8; 32]>) -> StoreOptions {
    StoreOptions {
        database_url: d.url.clone(),
        ..options(d.path(), master, previous)
    }
}

fn asset() -> NewAsset {
    NewAsset {
        kind: "upload",
        media_type: "image/png".into(),
        width: 1,
        height: 1,
        job_id: None,
        metadata: serde_json::json!({}),
    }
}

fn blob_path(dir: &Path, tenant: &str, id: &str) -> PathBuf {
    dir.join("blobs").join(tenant).join(id)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

async fn blobs_are_ciphertext_bound_to_their_place_and_tampering_is_an_error(d: TestDb) {
    let s = Store::open_in(d.path(), options_on(&d, [1; 32], None))
        .await
        .unwrap();
    let t = s.system().create_tenant("acme", false).await.unwrap();
    let other = s.system().create_tenant("other", false).await.unwrap();
    let a = s.scoped(&t.id).put_asset(asset(), SECRET).await.unwrap();
    let b = s
        .scoped(&t.id)
        .put_asset(asset(), b"another picture")
        .await
        .unwrap();
    assert_eq!(s.scoped(&t.id).asset_bytes(&a.id).await.unwrap().1, SECRET);

    // On disk: no plaintext, and the file is the plaintext plus 32 bytes.
    let raw = std::fs::read(blob_path(d.path(), &t.id, &a.id)).unwrap();
    assert!(!contains(&raw, b"PLAINTEXT-MARKER"));
    assert_eq!(raw.len(), SECRET.len() + nanoimg_store::crypto::OVERHEAD);

    // A flipped byte anywhere is an error, not garbage.
    for i in [0, 5, raw.len() / 2, raw.len() - 1] {
        let mut bad = raw.clone();
        bad[i] ^= 0x40;
        std::fs::write(blob_path(d.path(), &t.id, &a.id), &bad).unwrap();
        let e = s.scoped(&t.id).asset_bytes(&a.id).await.unwrap_err();
        assert!(matches!(e, StoreError::Corrupt(_)), "byte {i}: {e}");
    }
    // Another asset's ciphertext moved under this name, or into another tenant: refused.
    let raw_b = std::fs::read(blob_path(d.path(), &t.id, &b.id)).unwrap();
    std::fs::write(blob_path(d.path(), &t.id, &a.id), &raw_b).unwrap();
    let e = s.scoped(&t.id).asset_bytes(&a.id).await.unwrap_err();
    assert!(e.to_string().contains("authentication failed"), "{e}");
    let o = s.scoped(&other.id).put_asset(asset(), b"x").await.unwrap();
    std::fs::write(blob_path(d.path(), &other.id, &o.id), &raw_b).unwrap();
    assert!(s.scoped(&other.id).asset_bytes(&o.id).await.is_err());
    // Plaintext put in place of a blob is refused too (nothing unencrypted is ever read).
    std::fs::write(blob_path(d.path(), &t.id, &b.id), b"\x89PNG plaintext").unwrap();
    let e = s.scoped(&t.id).asset_bytes(&b.id).await.unwrap_err();
    assert!(e.to_string().contains("not encrypted"), "{e}");
}

async fn rotating_the_master_key_rewraps_tenant_keys_and_leaves_blobs_alone(d: TestDb) {
    let s = Store::open_in(d.path(), options_on(&d, [1; 32], None))
        .await
        .unwrap();
    let t = s.system().create_tenant("acme", false).await.unwrap();
    let a = s.scoped(&t.id).put_asset(asset(), SECRET).await.unwrap();
    let before = std::fs::read(blob_path(d.path(), &t.id, &a.id)).unwrap();
    s.close().await;

    // A server given a new key without the old one cannot read, and says what to do.
    let s = Store::open_in(d.path(), options_on(&d, [2; 32], None))
        .await
        .unwrap();
    let e = s.scoped(&t.id).asset_bytes(&a.id).await.unwrap_err();
    assert!(e.to_string().contains("previous_master_key"), "{e}");
    s.close().await;

    // With the old key as the previous one, the tenant key is re-wrapped at open.
    let s = Store::open_in(d.path(), options_on(&d, [2; 32], Some([1; 32])))
        .await
        .unwrap();
    assert_eq!(s.scoped(&t.id).asset_bytes(&a.id).await.unwrap().1, SECRET);
    s.close().await;
    assert_eq!(
        std::fs::read(blob_path(d.path(), &t.id, &a.id)).unwrap(),
        before,
        "blobs untouched"
    );
    // From now on the new key alone is enough, and the old one is not.
    let s = Store::open_in(d.path(), options_on(&d, [2; 32], None))
        .await
        .unwrap();
    assert_eq!(s.scoped(&t.id).asset_bytes(&a.id).await.unwrap().1, SECRET);
    s.close().await;
    let s = Store::open_in(d.path(), options_on(&d, [1; 32], None))
        .await
        .unwrap();
    assert!(s.scoped(&t.id).asset_bytes(&a.id).await.is_err());
}

#[tokio::test]
async fn the_default_master_key_lives_in_the_data_directory_and_is_never_in_the_database() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).await.unwrap();
    let t = s.system().create_tenant("acme", false).await.unwrap();
    s.scoped(&t.id).put_asset(asset(), SECRET).await.unwrap();
    s.close().await;
    let key_file = d.path().join("secrets").join("master.key");
    let text = std::fs::read_to_string(&key_file).unwrap();
    let key = text.trim();
    assert_eq!(key.len(), 64);
    let db = std::fs::read(d.path().join("nanoimg.db")).unwrap();
    assert!(!contains(&db, key.as_bytes()));
    // Reopening finds the same key: the asset still reads.
    let s = Store::open(d.path()).await.unwrap();
    let listed = s.scoped(&t.id).assets(10, None).await.unwrap();
    assert_eq!(
        s.scoped(&t.id).asset_bytes(&listed[0].id).await.unwrap().1,
        SECRET
    );
}

fn copy_tree(from: &Path, to: &Path) {
    for f in files(from) {
        let dest = to.join(f.strip_prefix(from).unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&f, &dest).unwrap();
    }
}

/// The markers found in any file under `dir` (raw bytes: the database, its WAL, blobs).
fn markers_in(dir: &Path, markers: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for f in files(dir) {
        let bytes = std::fs::read(&f).unwrap();
        for m in markers {
            if contains(&bytes, m.as_bytes()) {
                found.push(format!("{m} in {}", f.display()));
            }
        }
    }
    found
}

#[tokio::test]
async fn erasure_leaves_no_plaintext_in_the_database_its_log_the_blobs_or_a_backup() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    // The master key lives outside the data directory (and so outside its backups).
    let s = Store::open_in(&data, options(&data, [1; 32], None))
        .await
        .unwrap();
    let t = s.system().create_tenant("erased-co", false).await.unwrap();
    let keep = s.system().create_tenant("keeper", false).await.unwrap();
    let markers = [
        "PLAINTEXT-MARKER",
        "MARKER-PROMPT",
        "MARKER-META",
        "MARKER-DESC",
        "MARKER-INSTRUCTION",
        "MARKER-LORA",
    ];
    // Everything a tenant can leave behind, each with a marker.
    let sc = s.scoped(&t.id);
    let a = sc
        .put_asset(
            NewAsset {
                metadata: serde_json::json!({"prompt": "MARKER-META a fox"}),
                ..asset()
            },
            SECRET,
        )
        .await
        .unwrap();
    let job = sc
        .insert_job(
            "generate",
            true,
            None,
            serde_json::json!({"prompt": "MARKER-PROMPT a fox"}),
        )
        .await
        .unwrap();
    s.system()
        .job_finished(
            &t.id,
            &job.id,
            nanoimg_store::JobStatus::Succeeded,
            Some(&serde_json::json!({"revised_prompt": "MARKER-PROMPT"})),
            None,
        )
        .await
        .unwrap();
    let session = sc.create_session(&a.id).await.unwrap();
    sc.add_version(
        &session.id,
        nanoimg_store::NewVersion {
            parent_id: session.head.clone(),
            asset_id: a.id.clone(),
            instruction: "MARKER-INSTRUCTION make it brighter".into(),
            plan: serde_json::json!({"ops": []}),
            job_id: None,
        },
    )
    .await
    .unwrap();
    sc.create_character(nanoimg_store::NewCharacter {
        name: "Ada".into(),
        description: "MARKER-DESC a red robot".into(),
        strength: 0.8,
        seed: 1,
        references: vec![nanoimg_store::NewReference {
            png: SECRET.to_vec(),
            width: 1,
            height: 1,
            faces: None,
            consent: true,
        }],
        lora: Some(b"MARKER-LORA weights".to_vec()),
    })
    .await
    .unwrap();
    s.system()
        .audit(nanoimg_store::AuditEvent {
            request_id: None,
            tenant_id: Some(t.id.clone()),
            key_id: None,
            action: "image.generate",
            target: Some(job.id.clone()),
            outcome: nanoimg_store::Outcome::Success,
            detail: serde_json::json!({"n": 1}),
        })
        .await
        .unwrap();
    let kept = s
        .scoped(&keep.id)
        .put_asset(asset(), b"kept bytes")
        .await
        .unwrap();
    // Encrypted at rest already: no marker anywhere, before erasure too.
    assert_eq!(markers_in(&data, &markers), Vec::<String>::new());
    // A backup: the files as they are now, the write-ahead log included.
    let backup = d.path().join("backup");
    copy_tree(&data, &backup);

    let e = s.system().erase_tenant("erased-co").await.unwrap();
    assert!(e.rows >= 8 && e.blobs >= 3 && e.audit_redacted >= 1, "{e:?}");
    assert_eq!(markers_in(&data, &markers), Vec::<String>::new());
    assert_eq!(markers_in(&backup, &markers), Vec::<String>::new());
    // Gone from the store; the other tenant untouched; the audit chain still whole.
    assert!(matches!(
        s.system().tenant(&t.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(!data.join("blobs").join(&t.id).exists());
    assert_eq!(
        s.scoped(&keep.id).asset_bytes(&kept.id).await.unwrap().1,
        b"kept bytes"
    );
    let r = s
        .system()
        .verify_audit(&s.system().audit_public_key(), &[])
        .await
        .unwrap();
    assert!(r.ok() && r.redacted >= 1, "{r:?}");
    // The backup still holds the tenant's wrapped key: with the master key it could be
    // restored. Rotating the master key after an erasure (and destroying the old one) puts
    // every backup made before it out of reach; the live data reads on.
    s.close().await;
    let s = Store::open_in(&data, options(&data, [2; 32], Some([1; 32])))
        .await
        .unwrap();
    assert_eq!(
        s.scoped(&keep.id).asset_bytes(&kept.id).await.unwrap().1,
        b"kept bytes"
    );
    s.close().await;
    let restored = Store::open_in(&backup, options(&backup, [2; 32], None))
        .await
        .unwrap();
    assert!(restored.scoped(&t.id).asset_bytes(&a.id).await.is_err());
    restored.close().await;
    let s = Store::open_in(&data, options(&data, [2; 32], None))
        .await
        .unwrap();
    // The operator's tenant is refused.
    let admin = s.system().create_tenant("operator", true).await.unwrap();
    let err = s.system().erase_tenant(&admin.id).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
}

on_both_backends!(
    blobs_are_ciphertext_bound_to_their_place_and_tampering_is_an_error,
    rotating_the_master_key_rewraps_tenant_keys_and_leaves_blobs_alone,
);
