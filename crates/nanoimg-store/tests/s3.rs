//! Blobs in a real S3-compatible server (s3s-fs on loopback, started by `scripts/test.sh`; its
//! bucket in `NANOIMG_TEST_S3_URL`, its folder on disk in `NANOIMG_TEST_S3_ROOT`), with the
//! metadata in SQLite and in PostgreSQL: the round trip, only ciphertext reaching the server, a
//! changed object refused, and deletes and erasure removing the objects.

mod common;
use common::{files, TestDb};
use nanoimg_store::{NewAsset, Store, StoreError, StoreOptions};

const MARKER: &[u8] = b"S3-PLAINTEXT-MARKER the pixels of a private photo";

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

async fn blobs_round_trip_through_s3_as_ciphertext_and_go_on_delete_and_erasure(d: TestDb) {
    let Some((bucket, root)) = nanoimg_store::testing::s3_bucket() else {
        return;
    };
    // Each test its own prefix in the shared bucket.
    let prefix = format!(
        "t{}",
        d.path().file_name().unwrap().to_string_lossy().replace('.', "")
    );
    let options = StoreOptions {
        blob_url: Some(format!("{bucket}/{prefix}")),
        ..d.options()
    };
    let s = Store::open_in(d.path(), options).await.unwrap();
    let t = s.system().create_tenant("acme", false).await.unwrap();
    let keep = s.system().create_tenant("keeper", false).await.unwrap();
    let sc = s.scoped(&t.id);
    let a = sc.put_asset(asset(), MARKER).await.unwrap();
    let kept = s.scoped(&keep.id).put_asset(asset(), b"kept").await.unwrap();
    assert_eq!(sc.asset_bytes(&a.id).await.unwrap().1, MARKER);
    // Nothing went to the local blob folder; the object is in the bucket, as ciphertext.
    assert!(files(&d.path().join("blobs")).is_empty());
    let ours = root.join(&prefix);
    let object = ours.join(&t.id).join(&a.id);
    let stored = std::fs::read(&object).unwrap_or_else(|e| panic!("{}: {e}", object.display()));
    assert!(!stored.windows(MARKER.len()).any(|w| w == MARKER));
    assert!(stored.len() > MARKER.len(), "nonce and tag are stored with it");

    // A changed object is an error, not garbage.
    let mut bad = stored.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(&object, &bad).unwrap();
    let e = sc.asset_bytes(&a.id).await.unwrap_err();
    assert!(e.to_string().contains("authentication"), "{e}");
    std::fs::write(&object, &stored).unwrap();
    assert_eq!(sc.asset_bytes(&a.id).await.unwrap().1, MARKER);

    // A character's references and LoRA are objects too, and go with it.
    let c = sc
        .create_character(nanoimg_store::NewCharacter {
            name: "Ada".into(),
            description: "a red robot".into(),
            strength: 0.8,
            seed: 1,
            references: vec![nanoimg_store::NewReference {
                png: MARKER.to_vec(),
                width: 1,
                height: 1,
                faces: None,
                consent: true,
            }],
            lora: Some(b"lora weights".to_vec()),
        })
        .await
        .unwrap();
    assert_eq!(files(&ours.join(&t.id)).len(), 3);
    assert_eq!(sc.character_lora(&c).await.unwrap().unwrap(), b"lora weights");
    sc.delete_character(&c.id).await.unwrap();
    assert_eq!(files(&ours.join(&t.id)), vec![object.clone()]);
    sc.delete_asset(&a.id).await.unwrap();
    assert!(files(&ours.join(&t.id)).is_empty());
    assert!(matches!(sc.asset(&a.id).await, Err(StoreError::NotFound(_))));

    // Erasure removes every object of the tenant and no other.
    for i in 0..3u8 {
        sc.put_asset(asset(), &[i; 32]).await.unwrap();
    }
    let e = s.system().erase_tenant("acme").await.unwrap();
    assert_eq!(e.blobs, 3, "{e:?}");
    assert!(files(&ours.join(&t.id)).is_empty());
    assert_eq!(s.scoped(&keep.id).asset_bytes(&kept.id).await.unwrap().1, b"kept");
    // An object gone behind the store's back is an error naming it.
    let lost = s.scoped(&keep.id).put_asset(asset(), b"lost").await.unwrap();
    std::fs::remove_file(ours.join(&keep.id).join(&lost.id)).unwrap();
    let e = s.scoped(&keep.id).asset_bytes(&lost.id).await.unwrap_err();
    let place = format!("{bucket}/{prefix}/{}/{}", keep.id, lost.id);
    assert!(e.to_string().contains(&place), "{e}");
}

#[tokio::test]
async fn blob_urls_that_are_not_s3_or_a_folder_are_refused() {
    let d = TestDb::sqlite().await;
    for (url, says) in [
        ("gs://bucket/x", "unsupported blob store URL"),
        ("s3://", "names no bucket"),
    ] {
        let options = StoreOptions {
            blob_url: Some(url.into()),
            ..d.options()
        };
        let e = Store::open_in(d.path(), options).await.unwrap_err();
        assert!(e.to_string().contains(says), "{url}: {e}");
    }
}

on_both_backends!(blobs_round_trip_through_s3_as_ciphertext_and_go_on_delete_and_erasure);
