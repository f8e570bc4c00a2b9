//! The audit log's tamper evidence, against a real SQLite file and a real PostgreSQL server:
//! someone with write access to the database (the append-only triggers dropped) edits, deletes,
//! reorders and truncates events, and `verify_audit` names the first bad entry each time.

mod common;
use common::TestDb;

use nanoimg_store::{
    read_witness, AuditEvent, AuditOptions, CheckpointKey, Outcome, Problem, Store, StoreOptions,
};
use std::path::Path;

fn options(db: &TestDb, every: u32) -> StoreOptions {
    StoreOptions {
        audit: AuditOptions {
            checkpoint_every: every,
            ..AuditOptions::in_data_dir(db.path())
        },
        ..db.options()
    }
}

fn event(i: usize, tenant: Option<&str>) -> AuditEvent {
    AuditEvent {
        request_id: Some(format!("req-{i}")),
        tenant_id: tenant.map(str::to_string),
        key_id: None,
        action: "image.generate",
        target: Some(format!("job-{i}")),
        outcome: Outcome::Success,
        detail: serde_json::json!({"i": i, "prompt": "a red fox"}),
    }
}

/// A store with `n` events, a checkpoint every `every`.
async fn log_with(d: TestDb, n: usize, every: u32) -> (TestDb, Store) {
    let s = Store::open_in(d.path(), options(&d, every)).await.unwrap();
    for i in 1..=n {
        s.system().audit(event(i, None)).await.unwrap();
    }
    (d, s)
}

/// Changes the database directly, as an attacker with write access to it would, the
/// append-only triggers dropped first.
async fn tamper(db: &TestDb, sql: &[&str]) {
    let pool = db.raw_without_guards().await;
    for q in sql {
        sqlx::query(q).execute(&pool).await.unwrap();
    }
    pool.close().await;
}

async fn verify(s: &Store, dir: &Path) -> nanoimg_store::ChainReport {
    let witness = read_witness(&dir.join("audit").join("checkpoints.jsonl")).unwrap();
    s.system()
        .verify_audit(&s.system().audit_public_key(), &witness)
        .await
        .unwrap()
}

async fn an_untouched_log_verifies_with_its_checkpoints_even_with_concurrent_writers(d: TestDb) {
    let s = Store::open_in(d.path(), options(&d, 5)).await.unwrap();
    // Writers in parallel tasks still form one chain: no two events share a predecessor.
    let tasks: Vec<_> = (1..=12)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.system().audit(event(i, Some("t1"))).await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let r = verify(&s, d.path()).await;
    assert!(r.ok(), "{r:?}");
    assert_eq!((r.events, r.last_seq, r.checkpoints_verified), (12, 12, 2));
    assert_eq!(r.last_checkpoint, Some(10));

    // A checkpoint on demand covers the head; a second one has nothing new to sign.
    let c = s
        .system()
        .audit_checkpoint()
        .await
        .unwrap()
        .expect("a checkpoint of event 12");
    assert_eq!(c.seq, 12);
    assert!(s.system().audit_checkpoint().await.unwrap().is_none());
    let witness = read_witness(&d.path().join("audit").join("checkpoints.jsonl")).unwrap();
    assert_eq!(witness.iter().map(|c| c.seq).collect::<Vec<_>>(), [5, 10, 12]);
    let r = verify(&s, d.path()).await;
    assert!(r.ok() && r.checkpoints_verified == 3, "{r:?}");

    // The key persists across opens, readable only by its owner; another key verifies nothing.
    s.close().await;
    let s = Store::open_in(d.path(), options(&d, 5)).await.unwrap();
    assert_eq!(
        s.system().audit_public_key(),
        CheckpointKey::from_hex(&c.public_key).unwrap()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = d.path().join("audit").join("signing-key.pem");
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the signing key is private");
    }
    let other = d.fresh().await;
    let stranger = other.open().await.system().audit_public_key();
    let r = s.system().verify_audit(&stranger, &[]).await.unwrap();
    let b = r.first_break.expect("checkpoints under another key");
    assert_eq!(b.problem, Problem::BadCheckpoint);
    assert!(b.message.contains("another key"), "{}", b.message);
}

/// Each kind of tampering, on its own copy of a 10-event log with checkpoints at 4 and 8.
async fn edits_deletions_reordering_and_truncation_are_each_found(d: TestDb) {
    let cases: &[(&str, &[&str], i64, Problem)] = &[
        (
            "a field edited",
            &["UPDATE audit_events SET outcome = 'failure' WHERE seq = 3"],
            3,
            Problem::Modified,
        ),
        (
            "a detail edited",
            &[r#"UPDATE audit_events SET detail = '{"i":6,"prompt":"something else"}' WHERE seq = 6"#],
            6,
            Problem::Modified,
        ),
        (
            "a detail edited and marked redacted",
            &[r#"UPDATE audit_events SET detail = '{"redacted":true}', action = 'x' WHERE seq = 6"#],
            6,
            Problem::Modified,
        ),
        (
            "an event deleted",
            &["DELETE FROM audit_events WHERE seq = 5"],
            6,
            Problem::Missing,
        ),
        (
            "the first events deleted",
            &["DELETE FROM audit_events WHERE seq <= 2"],
            3,
            Problem::Missing,
        ),
        (
            "two events swapped",
            &[
                "UPDATE audit_events SET seq = -1 WHERE seq = 3",
                "UPDATE audit_events SET seq = 3 WHERE seq = 4",
                "UPDATE audit_events SET seq = 4 WHERE seq = -1",
            ],
            3,
            Problem::OutOfChain,
        ),
        (
            "an event inserted",
            &[
                "INSERT INTO audit_events (seq, at, action, outcome, detail, detail_hash, prev_hash, hash) \
               SELECT 11, at, action, outcome, detail, detail_hash, prev_hash, hash \
               FROM audit_events WHERE seq = 10",
            ],
            11,
            Problem::OutOfChain,
        ),
        (
            "the newest events removed",
            &["DELETE FROM audit_events WHERE seq > 6"],
            8,
            Problem::Truncated,
        ),
        (
            "the newest events and their checkpoints removed (the witness file remembers)",
            &[
                "DELETE FROM audit_events WHERE seq > 6",
                "DELETE FROM audit_checkpoints WHERE seq > 6",
            ],
            8,
            Problem::Truncated,
        ),
        (
            "a checkpoint forged",
            &["UPDATE audit_checkpoints SET at = at + 1 WHERE seq = 4"],
            4,
            Problem::BadCheckpoint,
        ),
    ];
    for (what, sql, seq, problem) in cases {
        let (d, s) = log_with(d.fresh().await, 10, 4).await;
        assert!(verify(&s, d.path()).await.ok(), "{what}: clean before");
        s.close().await;
        tamper(&d, sql).await;
        let s = Store::open_in(d.path(), options(&d, 4)).await.unwrap();
        let r = verify(&s, d.path()).await;
        let b = r.first_break.unwrap_or_else(|| panic!("{what}: not detected"));
        assert_eq!((b.seq, &b.problem), (*seq, problem), "{what}: {}", b.message);
        s.close().await;
    }
}

async fn erasure_redacts_details_and_the_chain_still_verifies(d: TestDb) {
    let s = Store::open_in(d.path(), options(&d, 3)).await.unwrap();
    let gone = s.system().create_tenant("gone", false).await.unwrap().id;
    let stays = s.system().create_tenant("stays", false).await.unwrap().id;
    for i in 1..=6 {
        let tenant = if i % 2 == 0 { &gone } else { &stays };
        s.system().audit(event(i, Some(tenant))).await.unwrap();
    }
    let e = s.system().erase_tenant(&gone).await.unwrap();
    assert_eq!(e.audit_redacted, 3);
    let r = verify(&s, d.path()).await;
    assert!(r.ok(), "{r:?}");
    // Six events and the erasure's marker, which lists what it redacted.
    assert_eq!((r.events, r.redacted, r.checkpoints_verified), (7, 3, 2));
    let events = s.system().audit_events(None, 0, 10).await.unwrap();
    for e in events.iter().filter(|e| e.action == "image.generate") {
        let redacted = e.detail == serde_json::json!({"redacted": true});
        assert_eq!(redacted, e.tenant_id.as_deref() == Some(gone.as_str()), "{e:?}");
    }
    let marker = events.iter().find(|e| e.action == "tenant.erased").unwrap();
    assert_eq!(marker.target.as_deref(), Some(gone.as_str()));
    assert_eq!(marker.detail["redacted_events"], serde_json::json!([2, 4, 6]));
    s.close().await;

    // A detail wiped the same way for a tenant that still exists is not erasure: found.
    let pool = d.raw().await;
    sqlx::query(r#"UPDATE audit_events SET detail = '{"redacted":true}' WHERE seq = 1"#)
        .execute(&pool)
        .await
        .unwrap();
    let s = Store::open_in(d.path(), options(&d, 3)).await.unwrap();
    let r = verify(&s, d.path()).await;
    let b = r.first_break.expect("a wiped detail passed as erasure");
    assert_eq!((b.seq, &b.problem), (1, &Problem::Modified), "{}", b.message);
    assert!(b.message.contains("wiped"), "{}", b.message);
    s.close().await;
    // The database still refuses any other change, redaction of another field included.
    for q in [
        r#"UPDATE audit_events SET detail = '{"i":1}' WHERE seq = 1"#,
        r#"UPDATE audit_events SET detail = '{"redacted":true}', target = NULL WHERE seq = 1"#,
        "DELETE FROM audit_checkpoints",
    ] {
        let e = sqlx::query(q).execute(&pool).await.unwrap_err();
        assert!(e.to_string().contains("append-only"), "{q}: {e}");
    }
}

on_both_backends!(
    an_untouched_log_verifies_with_its_checkpoints_even_with_concurrent_writers,
    edits_deletions_reordering_and_truncation_are_each_found,
    erasure_redacts_details_and_the_chain_still_verifies,
);
