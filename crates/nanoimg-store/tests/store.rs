//! The store against a real SQLite file and a real PostgreSQL server (each test runs on both):
//! tenants and keys, tenant isolation, assets, jobs across a restart, edit sessions,
//! characters, retention, and the append-only audit table.

mod common;
use common::TestDb;

use nanoimg_store::{
    AuditEvent, AuthFailure, JobStatus, NewAsset, NewKey, NewVersion, Outcome, Scope, Store, StoreError,
    TenantLimits,
};

async fn open(db: TestDb) -> (TestDb, Store) {
    let s = db.open().await;
    (db, s)
}

fn key(name: &str, scopes: &[Scope]) -> NewKey {
    NewKey {
        name: name.into(),
        scopes: scopes.to_vec(),
        expires_at: None,
    }
}

fn png_asset() -> NewAsset {
    NewAsset {
        kind: "upload",
        media_type: "image/png".into(),
        width: 2,
        height: 2,
        job_id: None,
        metadata: serde_json::json!({"note": "x"}),
    }
}

async fn keys_authenticate_until_revoked_or_expired(db: TestDb) {
    let (_d, s) = open(db).await;
    let t = s.system().create_tenant("acme", false).await.unwrap();
    let (rec, secret) = s
        .system()
        .create_key(&t.id, &key("ci", &Scope::defaults()))
        .await
        .unwrap();
    let p = s.system().authenticate(secret.expose()).await.unwrap().unwrap();
    assert_eq!(p.tenant.id, t.id);
    assert_eq!(p.key.id, rec.id);
    assert!(p.can(Scope::ImagesGenerate) && !p.can(Scope::Admin));

    // Only the hash is stored.
    let listed = s.system().keys(Some(&t.id)).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(secret.expose().starts_with(&listed[0].prefix));

    // A well-formed stranger, a typo, revocation.
    let other = nanoimg_store::SecretKey::generate();
    assert_eq!(
        s.system()
            .authenticate(other.expose())
            .await
            .unwrap()
            .unwrap_err(),
        AuthFailure::Unknown
    );
    let typo = secret.expose().replacen('_', "-", 1);
    assert_eq!(
        s.system().authenticate(&typo).await.unwrap().unwrap_err(),
        AuthFailure::Malformed
    );
    s.system().revoke_key(&rec.id, Some(&t.id)).await.unwrap();
    assert_eq!(
        s.system()
            .authenticate(secret.expose())
            .await
            .unwrap()
            .unwrap_err(),
        AuthFailure::Revoked
    );

    // Expiry in the past is refused at creation; a key that lapses is refused at use.
    let past = NewKey {
        expires_at: Some(nanoimg_store::ids::now_ms() - 1),
        ..key("old", &[Scope::AssetsRead])
    };
    assert!(matches!(
        s.system().create_key(&t.id, &past).await,
        Err(StoreError::Invalid(_))
    ));
    let soon = NewKey {
        expires_at: Some(nanoimg_store::ids::now_ms() + 200),
        ..key("soon", &[Scope::AssetsRead])
    };
    let (_, short) = s.system().create_key(&t.id, &soon).await.unwrap();
    assert!(s.system().authenticate(short.expose()).await.unwrap().is_ok());
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    assert_eq!(
        s.system()
            .authenticate(short.expose())
            .await
            .unwrap()
            .unwrap_err(),
        AuthFailure::Expired
    );
}

async fn tenant_limits_are_stored_checked_and_reach_the_principal(db: TestDb) {
    let (d, s) = open(db).await;
    let t = s.system().create_tenant("acme", false).await.unwrap();
    assert_eq!(t.limits, TenantLimits::default());
    let (_, secret) = s
        .system()
        .create_key(&t.id, &key("ci", &Scope::defaults()))
        .await
        .unwrap();
    let limits = TenantLimits {
        requests_per_minute: Some(5000),
        images_per_minute: None,
        concurrent_jobs: Some(8),
        megapixel_steps_per_minute: Some(12_000),
        max_job_megapixel_steps: None,
        // Past what 32 bits hold.
        max_stored_bytes: Some(5 << 40),
        max_keys: Some(3),
    };
    let updated = s.system().set_tenant_limits("acme", &limits).await.unwrap();
    assert_eq!(updated.limits, limits);
    let p = s.system().authenticate(secret.expose()).await.unwrap().unwrap();
    assert_eq!(p.tenant, updated);
    for bad in [
        TenantLimits {
            requests_per_minute: Some(0),
            ..limits
        },
        TenantLimits {
            concurrent_jobs: Some(TenantLimits::MAX_CONCURRENT + 1),
            ..limits
        },
        TenantLimits {
            megapixel_steps_per_minute: Some(0),
            ..limits
        },
        TenantLimits {
            max_stored_bytes: Some(TenantLimits::MAX_STORED_BYTES + 1),
            ..limits
        },
        TenantLimits {
            max_keys: Some(0),
            ..limits
        },
    ] {
        let e = s.system().set_tenant_limits(&t.id, &bad).await.unwrap_err();
        assert!(matches!(e, StoreError::Invalid(_)), "{e}");
    }
    assert!(matches!(
        s.system().set_tenant_limits("nobody", &limits).await.unwrap_err(),
        StoreError::NotFound("tenant")
    ));
    // Low moderation is off until the operator allows it.
    assert!(!updated.allow_low_moderation);
    assert!(
        s.system()
            .set_tenant_low_moderation("acme", true)
            .await
            .unwrap()
            .allow_low_moderation
    );
    // Unchanged by the refused updates, and kept across a reopen.
    s.close().await;
    let s = d.open().await;
    let t = s.system().tenant(&t.id).await.unwrap();
    assert_eq!(t.limits, limits);
    assert!(t.allow_low_moderation);
}

async fn rotation_replaces_a_key_and_admin_scope_is_for_the_operator_only(db: TestDb) {
    let (_d, s) = open(db).await;
    let ops = s.system().create_tenant("ops", true).await.unwrap();
    let t = s.system().create_tenant("acme", false).await.unwrap();
    let e = s
        .system()
        .create_key(&t.id, &key("x", &[Scope::Admin]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("admin"), "{e}");
    let (old, old_secret) = s
        .system()
        .create_key(&ops.id, &key("root", &[Scope::Admin]))
        .await
        .unwrap();
    let (new, new_secret) = s.system().rotate_key(&old.id, None).await.unwrap();
    assert_eq!(new.rotated_from.as_deref(), Some(old.id.as_str()));
    assert_eq!(new.scopes, vec![Scope::Admin]);
    assert!(s
        .system()
        .authenticate(old_secret.expose())
        .await
        .unwrap()
        .is_err());
    assert!(s
        .system()
        .authenticate(new_secret.expose())
        .await
        .unwrap()
        .unwrap()
        .can(Scope::Admin));
    // A tenant cannot reach another tenant's key.
    assert!(matches!(
        s.system().revoke_key(&new.id, Some(&t.id)).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.system().create_tenant("acme", false).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(s.system().create_tenant("", false).await.is_err());
}

async fn another_tenants_assets_and_jobs_are_not_found(db: TestDb) {
    let (_d, s) = open(db).await;
    let a = s.system().create_tenant("a", false).await.unwrap();
    let b = s.system().create_tenant("b", false).await.unwrap();
    let asset = s
        .scoped(&a.id)
        .put_asset(png_asset(), b"bytes-of-a")
        .await
        .unwrap();
    let (rec, bytes) = s.scoped(&a.id).asset_bytes(&asset.id).await.unwrap();
    assert_eq!((rec.bytes, bytes.as_slice()), (10, &b"bytes-of-a"[..]));

    let sb = s.scoped(&b.id);
    assert!(matches!(sb.asset(&asset.id).await, Err(StoreError::NotFound(_))));
    assert!(matches!(
        sb.asset_bytes(&asset.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        sb.delete_asset(&asset.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(sb.assets(10, None).await.unwrap().is_empty());
    let job = s
        .scoped(&a.id)
        .insert_job("generation", true, None, serde_json::json!({}))
        .await
        .unwrap();
    assert!(matches!(sb.job(&job.id).await, Err(StoreError::NotFound(_))));
    assert!(sb.jobs(10).await.unwrap().is_empty());

    // The owner still has both, and can delete the asset (bytes gone too).
    assert_eq!(s.scoped(&a.id).assets(10, None).await.unwrap().len(), 1);
    s.scoped(&a.id).delete_asset(&asset.id).await.unwrap();
    assert!(s.scoped(&a.id).asset(&asset.id).await.is_err());
    // Ids that are not ids never reach the database.
    assert!(s.scoped(&a.id).asset("../../etc/passwd").await.is_err());
}

async fn asset_listing_pages_newest_first(db: TestDb) {
    let (_d, s) = open(db).await;
    let t = s.system().create_tenant("t", false).await.unwrap();
    let sc = s.scoped(&t.id);
    let mut ids = vec![];
    for i in 0..5 {
        ids.push(sc.put_asset(png_asset(), &[i]).await.unwrap().id);
    }
    let page1 = sc.assets(2, None).await.unwrap();
    let page2 = sc.assets(2, Some(&page1[1].id)).await.unwrap();
    let page3 = sc.assets(2, Some(&page2[1].id)).await.unwrap();
    let got: Vec<_> = [page1, page2, page3].concat().into_iter().map(|a| a.id).collect();
    ids.reverse();
    let mut want = ids.clone();
    // Same-millisecond assets order by id; compare as sets of order-insensitive pages.
    want.sort();
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(sorted, want);
    assert_eq!(got.len(), 5);
}

async fn jobs_survive_a_restart_as_failed_or_requeued(db: TestDb) {
    let d = db;
    let (running, waiting_sync, waiting_detached, done);
    {
        let s = d.open().await;
        let t = s.system().create_tenant("t", false).await.unwrap();
        let sc = s.scoped(&t.id);
        let p = serde_json::json!({"prompt": "x"});
        running = sc
            .insert_job("generation", true, None, p.clone())
            .await
            .unwrap()
            .id;
        waiting_sync = sc
            .insert_job("generation", false, None, p.clone())
            .await
            .unwrap()
            .id;
        waiting_detached = sc
            .insert_job("generation", true, None, p.clone())
            .await
            .unwrap()
            .id;
        done = sc.insert_job("generation", true, None, p).await.unwrap().id;
        assert!(s.system().job_started(&running).await.unwrap());
        assert!(s.system().job_started(&done).await.unwrap());
        assert!(s
            .system()
            .job_finished(
                sc.tenant_id(),
                &done,
                JobStatus::Succeeded,
                Some(&serde_json::json!(["img"])),
                None
            )
            .await
            .unwrap());
        // Final is final.
        assert!(!s
            .system()
            .job_finished(sc.tenant_id(), &done, JobStatus::Failed, None, Some("late"))
            .await
            .unwrap());
        s.close().await;
    }
    let s = d.open().await;
    let r = s.system().recover_jobs().await.unwrap();
    assert_eq!(r.failed, 2);
    assert_eq!(
        r.requeue.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        [waiting_detached.as_str()]
    );
    let j = s.system().job_any_tenant(&running).await.unwrap();
    assert_eq!(j.status, JobStatus::Failed);
    assert!(j
        .error
        .unwrap()
        .contains("server stopped while this job was running"));
    assert_eq!(
        s.system().job_any_tenant(&waiting_sync).await.unwrap().status,
        JobStatus::Failed
    );
    assert_eq!(
        s.system().job_any_tenant(&done).await.unwrap().status,
        JobStatus::Succeeded
    );
}

async fn the_audit_table_is_append_only(db: TestDb) {
    let (d, s) = open(db).await;
    for i in 0..3 {
        s.system()
            .audit(AuditEvent {
                request_id: Some(format!("req-{i}")),
                tenant_id: None,
                key_id: None,
                action: "tenant.create",
                target: None,
                outcome: Outcome::Success,
                detail: serde_json::json!({"i": i}),
            })
            .await
            .unwrap();
    }
    let ev = s.system().audit_events(None, 0, 100).await.unwrap();
    assert_eq!(ev.len(), 3);
    assert_eq!(
        s.system().audit_events(None, ev[0].seq, 100).await.unwrap().len(),
        2
    );
    // From the end, newest first, and paging back from a cursor.
    let seqs = |v: Vec<nanoimg_store::AuditRecord>| v.iter().map(|e| e.seq).collect::<Vec<_>>();
    let newest = seqs(s.system().audit_events_newest(None, None, 2).await.unwrap());
    assert_eq!(newest, vec![ev[2].seq, ev[1].seq]);
    let older = seqs(
        s.system()
            .audit_events_newest(None, Some(ev[1].seq), 2)
            .await
            .unwrap(),
    );
    assert_eq!(older, vec![ev[0].seq]);
    assert!(s
        .system()
        .audit_events_newest(Some("no-such-tenant"), None, 10)
        .await
        .unwrap()
        .is_empty());
    s.close().await;
    // Even a direct connection to the database cannot change or remove events.
    let pool = d.raw().await;
    let e = sqlx::query("UPDATE audit_events SET outcome = 'x'")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("append-only"), "{e}");
    let e = sqlx::query("DELETE FROM audit_events")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("append-only"), "{e}");
}

fn version(parent: &str, asset: &str) -> NewVersion {
    NewVersion {
        parent_id: parent.into(),
        asset_id: asset.into(),
        instruction: "make it brighter".into(),
        plan: serde_json::json!({"version": 1, "ops": [{"op": "brightness", "amount": 0.2}]}),
        job_id: None,
    }
}

async fn edit_sessions_keep_a_tree_an_undo_stack_and_their_tenant(db: TestDb) {
    let (_d, s) = open(db).await;
    let a = s.system().create_tenant("a", false).await.unwrap();
    let b = s.system().create_tenant("b", false).await.unwrap();
    let (sa, sb) = (s.scoped(&a.id), s.scoped(&b.id));
    let img = sa.put_asset(png_asset(), b"x").await.unwrap();
    let made = sa.put_asset(png_asset(), b"y").await.unwrap();
    let sess = sa.create_session(&img.id).await.unwrap();
    let root = sess.head.clone();
    assert!(!sess.can_undo());

    let v1 = sa.add_version(&sess.id, version(&root, &made.id)).await.unwrap();
    let v2 = sa.add_version(&sess.id, version(&v1.id, &made.id)).await.unwrap();
    assert_eq!((v1.seq, v2.seq), (1, 2));
    assert_eq!(v2.plan.as_ref().unwrap()["ops"][0]["op"], "brightness");

    let u = sa.undo(&sess.id).await.unwrap();
    assert_eq!(
        (u.head.as_str(), u.redo.clone()),
        (v1.id.as_str(), vec![v2.id.clone()])
    );
    let r = sa.redo(&sess.id).await.unwrap();
    assert_eq!((r.head.as_str(), r.redo.len()), (v2.id.as_str(), 0));
    assert!(matches!(sa.redo(&sess.id).await, Err(StoreError::Conflict(_))));
    let c = sa.checkout(&sess.id, &root).await.unwrap();
    assert_eq!(c.head, root);
    assert!(matches!(sa.undo(&sess.id).await, Err(StoreError::Conflict(_))));
    // A new version after an undo is a branch and clears redo.
    sa.checkout(&sess.id, &v2.id).await.unwrap();
    sa.undo(&sess.id).await.unwrap();
    let branch = sa.add_version(&sess.id, version(&v1.id, &made.id)).await.unwrap();
    let now = sa.session(&sess.id).await.unwrap();
    assert_eq!(
        (now.head.as_str(), now.redo.len(), branch.seq),
        (branch.id.as_str(), 0, 3)
    );
    assert_eq!(now.versions.len(), 4);

    // Another tenant finds nothing, and cannot add to it or move it.
    assert!(matches!(sb.session(&sess.id).await, Err(StoreError::NotFound(_))));
    assert!(matches!(
        sb.add_version(&sess.id, version(&root, &made.id)).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(sb.undo(&sess.id).await, Err(StoreError::NotFound(_))));
    assert!(matches!(
        sb.delete_session(&sess.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(sb.sessions(10).await.unwrap().is_empty());
    // A parent from another session, or another tenant's image, is refused and changes nothing.
    let other = sa.create_session(&img.id).await.unwrap();
    assert!(matches!(
        sa.add_version(&other.id, version(&v1.id, &made.id)).await,
        Err(StoreError::NotFound("version"))
    ));
    let theirs = sb.put_asset(png_asset(), b"z").await.unwrap();
    assert!(matches!(
        sa.add_version(&sess.id, version(&root, &theirs.id)).await,
        Err(StoreError::NotFound("image"))
    ));
    assert_eq!(sa.session(&sess.id).await.unwrap(), now);
    assert_eq!(sa.session(&other.id).await.unwrap().versions.len(), 1);

    // Deleting returns the images the versions made, not the one the session started from.
    let images = sa.delete_session(&sess.id).await.unwrap();
    assert_eq!(images.len(), 3);
    assert!(!images.contains(&img.id));
    assert!(matches!(sa.session(&sess.id).await, Err(StoreError::NotFound(_))));
    assert_eq!(sa.sessions(10).await.unwrap().len(), 1);
}

fn character(name: &str, refs: usize, lora: Option<Vec<u8>>) -> nanoimg_store::NewCharacter {
    nanoimg_store::NewCharacter {
        name: name.into(),
        description: "a small red robot with round eyes".into(),
        strength: 0.7,
        seed: u64::MAX - 3,
        references: (0..refs)
            .map(|i| nanoimg_store::NewReference {
                png: vec![i as u8; 10 + i],
                width: 4,
                height: 4,
                faces: (i == 0).then_some(0),
                consent: i == 1,
            })
            .collect(),
        lora,
    }
}

/// Every file under the blob directory.
fn blob_files(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().unwrap().is_dir() {
                out.extend(blob_files(&e.path()));
            } else {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    out
}

async fn characters_keep_their_references_and_lora_and_go_with_them(db: TestDb) {
    let (d, s) = open(db).await;
    let t = s.system().create_tenant("acme", false).await.unwrap();
    let other = s.system().create_tenant("other", false).await.unwrap();
    let scoped = s.scoped(&t.id);
    let c = scoped
        .create_character(character("Robo", 3, Some(b"lora-bytes".to_vec())))
        .await
        .unwrap();
    assert_eq!(c.references.len(), 3);
    assert_eq!(c.seed, u64::MAX - 3, "u64 seeds survive the i64 column");
    assert_eq!(c.lora_bytes, Some(10));
    assert_eq!(c.references[0].faces, Some(0));
    assert_eq!(c.references[2].faces, None);
    assert!(c.references[1].consent && !c.references[0].consent);
    for (i, r) in c.references.iter().enumerate() {
        let (a, bytes) = scoped.asset_bytes(&r.asset_id).await.unwrap();
        assert_eq!(a.kind, "reference");
        assert_eq!(bytes, vec![i as u8; 10 + i]);
    }
    assert_eq!(scoped.character_lora(&c).await.unwrap().unwrap(), b"lora-bytes");
    assert_eq!(scoped.characters(10).await.unwrap(), vec![c.clone()]);

    // A reference image cannot be deleted alone.
    let e = scoped.delete_asset(&c.references[0].asset_id).await.unwrap_err();
    assert!(
        matches!(e, StoreError::Conflict(ref m) if m.contains(&c.id)),
        "{e}"
    );
    // Names are unique per tenant, not across tenants.
    let e = scoped
        .create_character(character("Robo", 1, None))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e}");
    s.scoped(&other.id)
        .create_character(character("Robo", 1, None))
        .await
        .unwrap();
    // The other tenant sees none of it.
    assert!(matches!(
        s.scoped(&other.id).character(&c.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.scoped(&other.id).delete_character(&c.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.scoped(&other.id).asset(&c.references[0].asset_id).await,
        Err(StoreError::NotFound(_))
    ));

    // A failed create leaves no files: the duplicate above wrote a reference and removed it.
    let before = blob_files(&d.path().join("blobs"));
    assert_eq!(before.len(), 3 + 1 + 1, "{before:?}");
    // Invalid input is refused before anything is written.
    for bad in [
        character("", 1, None),
        character("x", 0, None),
        character("y", 9, None),
    ] {
        assert!(matches!(
            scoped.create_character(bad).await,
            Err(StoreError::Invalid(_))
        ));
    }
    let mut weird = character("z", 1, None);
    weird.strength = 1.5;
    assert!(matches!(
        scoped.create_character(weird).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(blob_files(&d.path().join("blobs")), before);

    // Deleting removes rows, reference images and the LoRA.
    let gone = scoped.delete_character(&c.id).await.unwrap();
    assert_eq!(gone.id, c.id);
    assert!(matches!(
        scoped.character(&c.id).await,
        Err(StoreError::NotFound(_))
    ));
    for r in &c.references {
        assert!(matches!(
            scoped.asset(&r.asset_id).await,
            Err(StoreError::NotFound(_))
        ));
    }
    assert_eq!(
        blob_files(&d.path().join("blobs")).len(),
        1,
        "only the other tenant's reference is left"
    );
    assert!(scoped.characters(10).await.unwrap().is_empty());
}

async fn retention_deletes_what_is_older_than_the_tenants_setting_and_nothing_else(db: TestDb) {
    let (d, s) = open(db).await;
    let t = s.system().create_tenant("short", false).await.unwrap();
    let forever = s.system().create_tenant("forever", false).await.unwrap();
    let sc = s.scoped(&t.id);
    let old = sc.put_asset(png_asset(), b"old").await.unwrap();
    let new = sc.put_asset(png_asset(), b"new").await.unwrap();
    let root = sc.put_asset(png_asset(), b"session root").await.unwrap();
    let session = sc.create_session(&root.id).await.unwrap();
    let done = sc
        .insert_job("generate", true, None, serde_json::json!({"prompt": "old"}))
        .await
        .unwrap();
    s.system()
        .job_finished(&t.id, &done.id, JobStatus::Succeeded, None, None)
        .await
        .unwrap();
    let waiting = sc
        .insert_job("generate", true, None, serde_json::json!({"prompt": "w"}))
        .await
        .unwrap();
    let theirs = s
        .scoped(&forever.id)
        .put_asset(png_asset(), b"theirs")
        .await
        .unwrap();

    // Forty days pass for some of them.
    let raw = d.raw().await;
    let age = |sql: String| {
        let raw = raw.clone();
        async move { sqlx::query(&sql).execute(&raw).await.unwrap() }
    };
    let days40 = 40 * 86_400_000i64;
    for id in [&old.id, &root.id, &theirs.id] {
        age(format!(
            "UPDATE assets SET created_at = created_at - {days40} WHERE id = '{id}'"
        ))
        .await;
    }
    for id in [&done.id, &waiting.id] {
        age(format!(
            "UPDATE jobs SET created_at = created_at - {days40}, \
             finished_at = finished_at - {days40} WHERE id = '{id}'"
        ))
        .await;
    }

    for bad in [0, 3651] {
        assert!(matches!(
            s.system().set_tenant_retention("short", Some(bad)).await,
            Err(StoreError::Invalid(_))
        ));
    }
    assert_eq!(
        s.system()
            .set_tenant_retention("short", Some(30))
            .await
            .unwrap()
            .retention_days,
        Some(30)
    );
    let now = nanoimg_store::ids::now_ms();
    let r = s.system().apply_retention(now).await.unwrap();
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!((r[0].jobs, r[0].sessions, r[0].assets), (1, 0, 1), "{r:?}");
    // Gone: the old image (row and file) and the finished job with its prompt.
    assert!(matches!(sc.asset(&old.id).await, Err(StoreError::NotFound(_))));
    assert!(!d.path().join("blobs").join(&t.id).join(&old.id).exists());
    assert!(matches!(sc.job(&done.id).await, Err(StoreError::NotFound(_))));
    // Kept: new images, a job not finished, an old image a live session uses, other tenants.
    sc.asset(&new.id).await.unwrap();
    sc.job(&waiting.id).await.unwrap();
    sc.asset(&root.id).await.unwrap();
    s.scoped(&forever.id).asset(&theirs.id).await.unwrap();
    // Once the session itself is old, it goes, and its image with it.
    age(format!(
        "UPDATE edit_sessions SET updated_at = updated_at - {days40} WHERE id = '{}'",
        session.id
    ))
    .await;
    let r = s.system().apply_retention(now).await.unwrap();
    assert_eq!((r[0].jobs, r[0].sessions, r[0].assets), (0, 1, 1), "{r:?}");
    assert!(matches!(sc.asset(&root.id).await, Err(StoreError::NotFound(_))));
    // Cleared: nothing more is deleted.
    s.system().set_tenant_retention("short", None).await.unwrap();
    assert!(s
        .system()
        .apply_retention(now + days40 * 10)
        .await
        .unwrap()
        .is_empty());
}

on_both_backends!(
    keys_authenticate_until_revoked_or_expired,
    tenant_limits_are_stored_checked_and_reach_the_principal,
    rotation_replaces_a_key_and_admin_scope_is_for_the_operator_only,
    another_tenants_assets_and_jobs_are_not_found,
    asset_listing_pages_newest_first,
    jobs_survive_a_restart_as_failed_or_requeued,
    the_audit_table_is_append_only,
    edit_sessions_keep_a_tree_an_undo_stack_and_their_tenant,
    characters_keep_their_references_and_lora_and_go_with_them,
    retention_deletes_what_is_older_than_the_tenants_setting_and_nothing_else,
);
