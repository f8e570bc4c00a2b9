//! Encryption at rest against real files: blobs on disk are ciphertext bound to their tenant
//! and name, a flipped byte is an error, and a master key rotation re-wraps tenant keys only.

use nanoimg_store::{AuditOptions, MasterKey, NewAsset, Store, StoreError, StoreOptions};
use std::path::{Path, PathBuf};

const SECRET: &[u8] = b"PLAINTEXT-MARKER the pixels of a private photo";

fn options(dir: &Path, master: [u8; 32], previous: Option<[u8; 32]>) -> StoreOptions {
    StoreOptions {
        audit: AuditOptions::in_data_dir(dir),
        master_key: MasterKey::from_bytes(&master),
        previous_master_key: previous.map(|p| MasterKey::from_bytes(&p)),
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

#[tokio::test]
async fn blobs_are_ciphertext_bound_to_their_place_and_tampering_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open_in(d.path(), options(d.path(), [1; 32], None))
        .await
        .unwrap();
    let t = s.create_tenant("acme", false).await.unwrap();
    let other = s.create_tenant("other", false).await.unwrap();
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

#[tokio::test]
async fn rotating_the_master_key_rewraps_tenant_keys_and_leaves_blobs_alone() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open_in(d.path(), options(d.path(), [1; 32], None))
        .await
        .unwrap();
    let t = s.create_tenant("acme", false).await.unwrap();
    let a = s.scoped(&t.id).put_asset(asset(), SECRET).await.unwrap();
    let before = std::fs::read(blob_path(d.path(), &t.id, &a.id)).unwrap();
    s.close().await;

    // A server given a new key without the old one cannot read, and says what to do.
    let s = Store::open_in(d.path(), options(d.path(), [2; 32], None))
        .await
        .unwrap();
    let e = s.scoped(&t.id).asset_bytes(&a.id).await.unwrap_err();
    assert!(e.to_string().contains("previous_master_key"), "{e}");
    s.close().await;

    // With the old key as the previous one, the tenant key is re-wrapped at open.
    let s = Store::open_in(d.path(), options(d.path(), [2; 32], Some([1; 32])))
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
    let s = Store::open_in(d.path(), options(d.path(), [2; 32], None))
        .await
        .unwrap();
    assert_eq!(s.scoped(&t.id).asset_bytes(&a.id).await.unwrap().1, SECRET);
    s.close().await;
    let s = Store::open_in(d.path(), options(d.path(), [1; 32], None))
        .await
        .unwrap();
    assert!(s.scoped(&t.id).asset_bytes(&a.id).await.is_err());
}

#[tokio::test]
async fn the_default_master_key_lives_in_the_data_directory_and_is_never_in_the_database() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).await.unwrap();
    let t = s.create_tenant("acme", false).await.unwrap();
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
