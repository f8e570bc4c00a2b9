//! The shared job queue on SQLite and PostgreSQL: admission is one decision however many API
//! nodes ask at once, concurrent workers each claim a job once,
//! a silent worker's job is reaped and handed on (and the silent worker can no longer finish it),
//! the attempts run out into a failure with a reason, and cancellation reaches queued and
//! running jobs.

mod common;
use common::TestDb;
use nanoimg_store::{JobStatus, Refusal, Store, WORKER_LOST};
use std::collections::HashSet;
use std::time::Duration;

async fn with_jobs(db: &TestDb, n: usize) -> (Store, String, Vec<String>) {
    let s = db.open().await;
    let t = s.system().create_tenant("acme", false).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        let job = s
            .scoped(&t.id)
            .insert_job(
                "generation",
                true,
                None,
                serde_json::json!({"prompt": "a fox", "i": i}),
            )
            .await
            .unwrap();
        ids.push(job.id);
        // The queue is first in, first out to the millisecond (same-millisecond jobs go in id
        // order); these tests name which job comes first.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    (s, t.id, ids)
}

async fn concurrent_workers_claim_each_job_once(db: TestDb) {
    let (s, _, ids) = with_jobs(&db, 24).await;
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                let me = format!("worker-{w}");
                let mut got = Vec::new();
                while let Some(c) = s.system().claim_job(&me).await.unwrap() {
                    assert_eq!((c.attempt, c.job.status), (1, JobStatus::Running));
                    assert_eq!(c.job.params["prompt"], "a fox", "params are opened");
                    assert!(s
                        .system()
                        .finish_claimed(
                            &me,
                            c.attempt,
                            &c.job.tenant_id,
                            &c.job.id,
                            JobStatus::Succeeded,
                            None,
                            None
                        )
                        .await
                        .unwrap());
                    got.push(c.job.id);
                }
                got
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), ids.len(), "every job claimed once: {all:?}");
    assert_eq!(unique.len(), ids.len());
    for id in &ids {
        assert_eq!(
            s.system().job_any_tenant(id).await.unwrap().status,
            JobStatus::Succeeded
        );
    }
    // Oldest first: a new job after these is claimed after any older one still waiting.
    assert!(s.system().claim_job("late").await.unwrap().is_none());
}

async fn a_silent_workers_job_is_handed_on_and_its_late_finish_refused(db: TestDb) {
    let (s, tenant, ids) = with_jobs(&db, 2).await;
    let a = s.system().claim_job("a").await.unwrap().unwrap();
    let b = s.system().claim_job("b").await.unwrap().unwrap();
    assert_eq!(
        (a.job.id.as_str(), b.job.id.as_str()),
        (ids[0].as_str(), ids[1].as_str())
    );
    assert!(s
        .system()
        .report_progress("a", &a.job.id, &serde_json::json!({"step": 3, "steps": 20}))
        .await
        .unwrap());
    assert_eq!(
        s.system()
            .job_progress(&tenant, &a.job.id)
            .await
            .unwrap()
            .unwrap()["step"],
        3
    );
    // Worker b keeps beating; worker a falls silent.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(s.system().heartbeat("b").await.unwrap().is_empty());
    let reaped = s.system().reap_jobs(200, 2).await.unwrap();
    assert_eq!(reaped.requeued, vec![a.job.id.clone()]);
    assert!(reaped.failed.is_empty());
    assert_eq!(
        s.system().job_any_tenant(&a.job.id).await.unwrap().status,
        JobStatus::Queued
    );
    assert!(s
        .system()
        .job_progress(&tenant, &a.job.id)
        .await
        .unwrap()
        .is_none());

    // b takes it up as attempt 2; a, waking up, can neither report nor finish it.
    let again = s.system().claim_job("b").await.unwrap().unwrap();
    assert_eq!((again.job.id.as_str(), again.attempt), (a.job.id.as_str(), 2));
    assert!(!s
        .system()
        .report_progress("a", &a.job.id, &serde_json::json!({"step": 4}))
        .await
        .unwrap());
    let late = serde_json::json!(["img_from_a"]);
    assert!(!s
        .system()
        .finish_claimed(
            "a",
            a.attempt,
            &a.job.tenant_id,
            &a.job.id,
            JobStatus::Succeeded,
            Some(&late),
            None
        )
        .await
        .unwrap());
    let done = serde_json::json!(["img_from_b"]);
    assert!(s
        .system()
        .finish_claimed(
            "b",
            again.attempt,
            &again.job.tenant_id,
            &again.job.id,
            JobStatus::Succeeded,
            Some(&done),
            None
        )
        .await
        .unwrap());
    let j = s.system().job_any_tenant(&a.job.id).await.unwrap();
    assert_eq!((j.status, j.result), (JobStatus::Succeeded, Some(done)));
    // Finished is final, for the worker that held it too.
    assert!(!s
        .system()
        .finish_claimed(
            "b",
            again.attempt,
            &again.job.tenant_id,
            &again.job.id,
            JobStatus::Failed,
            None,
            Some("x")
        )
        .await
        .unwrap());

    // b's other job: b falls silent too, and with no attempts left it fails with the reason.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let reaped = s.system().reap_jobs(200, 1).await.unwrap();
    assert_eq!(reaped.failed, vec![b.job.id.clone()]);
    let j = s.system().job_any_tenant(&b.job.id).await.unwrap();
    assert_eq!(j.status, JobStatus::Failed);
    assert!(j.error.as_deref().unwrap().contains(WORKER_LOST), "{j:?}");
    assert!(
        s.system().reap_jobs(200, 1).await.unwrap() == Default::default(),
        "each job is moved once"
    );
}

async fn cancellation_reaches_queued_and_running_jobs(db: TestDb) {
    let (s, tenant, ids) = with_jobs(&db, 3).await;
    let running = s.system().claim_job("w").await.unwrap().unwrap();
    assert_eq!(running.job.id, ids[0]);
    // A queued job is cancelled at once and never claimed.
    assert_eq!(
        s.system().request_cancel(&tenant, &ids[1]).await.unwrap(),
        JobStatus::Cancelled
    );
    // A running one is flagged; its worker hears it at the next heartbeat.
    assert_eq!(
        s.system().request_cancel(&tenant, &ids[0]).await.unwrap(),
        JobStatus::Running
    );
    assert_eq!(s.system().heartbeat("w").await.unwrap(), vec![ids[0].clone()]);
    assert!(s
        .system()
        .finish_claimed(
            "w",
            running.attempt,
            &running.job.tenant_id,
            &running.job.id,
            JobStatus::Cancelled,
            None,
            None
        )
        .await
        .unwrap());
    let next = s.system().claim_job("w").await.unwrap().unwrap();
    assert_eq!(next.job.id, ids[2], "the cancelled job was skipped");
    // Another tenant cannot cancel it.
    let other = s.system().create_tenant("other", false).await.unwrap();
    assert!(s.system().request_cancel(&other.id, &ids[2]).await.is_err());
    // A flagged job whose worker died is cancelled, not retried.
    s.system().request_cancel(&tenant, &ids[2]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let reaped = s.system().reap_jobs(200, 5).await.unwrap();
    assert_eq!((reaped.failed, reaped.requeued.len()), (vec![ids[2].clone()], 0));
    assert_eq!(
        s.system().job_any_tenant(&ids[2]).await.unwrap().status,
        JobStatus::Cancelled
    );
}

async fn admission_is_one_decision_however_many_ask_at_once(db: TestDb) {
    // Two stores on one database, as two API nodes are.
    let (a, b) = (db.open().await, db.open().await);
    let t = a.system().create_tenant("acme", false).await.unwrap();
    let race = |tenant: String, caps: (usize, usize)| {
        let tries: Vec<_> = (0..40)
            .map(|i| {
                let s = if i % 2 == 0 { a.clone() } else { b.clone() };
                let tenant = tenant.clone();
                tokio::spawn(async move {
                    s.scoped(&tenant)
                        .admit_job("generation", true, None, serde_json::json!({"i": i}), caps)
                        .await
                        .unwrap()
                })
            })
            .collect();
        async move {
            let mut out = Vec::new();
            for t in tries {
                out.push(t.await.unwrap());
            }
            out
        }
    };
    // The tenant's cap: two of forty.
    let results = race(t.id.clone(), (2, 1000)).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 2);
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(*r, Refusal::TenantCap { active: 2 });
    }
    // The queue's capacity: three queued in all, whoever asks.
    let other = a.system().create_tenant("other", false).await.unwrap();
    let results = race(other.id.clone(), (1000, 3)).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .all(|r| *r == Refusal::QueueFull { queued: 3 }));
    assert_eq!(a.system().queue_depth().await.unwrap().0, 3);
}

on_both_backends!(
    admission_is_one_decision_however_many_ask_at_once,
    concurrent_workers_claim_each_job_once,
    a_silent_workers_job_is_handed_on_and_its_late_finish_refused,
    cancellation_reaches_queued_and_running_jobs,
);
