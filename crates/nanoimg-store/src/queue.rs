//! The shared job queue, for worker processes separate from the API (`nanoimg worker`): a
//! worker claims the oldest queued job (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so two workers
//! never take the same one and never wait for each other; SQLite has one writer at a time, which
//! gives the same), says it is alive while it runs it, and finishes it, fenced by its id and the
//! attempt: a worker presumed dead whose job was handed to another cannot finish it any more. A
//! reaper puts a job whose worker fell silent back in the queue, or fails it with the reason
//! once it has been tried `max_attempts` times.

use crate::db::Backend;
use crate::error::Result;
use crate::ids::now_ms;
use crate::jobs::{Job, JobStatus, COLUMNS};
use crate::System;
use sqlx::Row;

/// A job a worker has claimed, and which attempt this is (1 for the first).
#[derive(Debug, Clone)]
pub struct Claimed {
    pub job: Job,
    pub attempt: i64,
}

/// What one pass of the reaper did: jobs given back to the queue, and jobs failed (or
/// cancelled, when that was asked) because their worker stopped responding.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reaped {
    pub requeued: Vec<String>,
    pub failed: Vec<String>,
}

/// The message a job gets when its last attempt's worker stopped responding.
pub const WORKER_LOST: &str = "the worker running this job stopped responding";

impl System<'_> {
    /// Takes the oldest queued job for `worker`, marking it running and counting the attempt.
    /// `None` when nothing is waiting.
    pub async fn claim_job(&self, worker: &str) -> Result<Option<Claimed>> {
        let lock = match self.store.db.backend {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let now = now_ms();
        let row = sqlx::query(&format!(
            "UPDATE jobs SET status = 'running', worker_id = $1, heartbeat_at = $2, \
             started_at = COALESCE(started_at, $2), attempts = attempts + 1, progress = NULL \
             WHERE status = 'queued' AND id = (SELECT id FROM jobs WHERE status = 'queued' \
             ORDER BY created_at, id LIMIT 1 {lock}) \
             RETURNING {COLUMNS}, attempts"
        ))
        .bind(worker)
        .bind(now)
        .fetch_optional(&self.store.db.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(Claimed {
            attempt: row.try_get("attempts")?,
            job: self.job_any_tenant_from(&row).await?,
        }))
    }

    /// Says `worker` is alive: every job it runs gets a fresh heartbeat. Returns the ids of
    /// those whose cancellation was asked for meanwhile.
    pub async fn heartbeat(&self, worker: &str) -> Result<Vec<String>> {
        sqlx::query("UPDATE jobs SET heartbeat_at = $1 WHERE worker_id = $2 AND status = 'running'")
            .bind(now_ms())
            .bind(worker)
            .execute(&self.store.db.pool)
            .await?;
        let rows = sqlx::query(
            "SELECT id FROM jobs WHERE worker_id = $1 AND status = 'running' AND cancel_requested = 1",
        )
        .bind(worker)
        .fetch_all(&self.store.db.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// Records how far a running job of `worker` has got (a small JSON of numbers, for the API
    /// node's event stream). False if the job is no longer this worker's.
    pub async fn report_progress(
        &self,
        worker: &str,
        id: &str,
        progress: &serde_json::Value,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE jobs SET progress = $1, heartbeat_at = $2 \
             WHERE id = $3 AND worker_id = $4 AND status = 'running'",
        )
        .bind(progress.to_string())
        .bind(now_ms())
        .bind(id)
        .bind(worker)
        .execute(&self.store.db.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// The progress a worker last reported for a job of `tenant_id`.
    pub async fn job_progress(&self, tenant_id: &str, id: &str) -> Result<Option<serde_json::Value>> {
        let row = sqlx::query("SELECT progress FROM jobs WHERE id = $1 AND tenant_id = $2")
            .bind(id)
            .bind(tenant_id)
            .fetch_optional(&self.store.db.pool)
            .await?;
        let text: Option<String> = match row {
            Some(r) => r.try_get("progress")?,
            None => None,
        };
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// Ends a job that `worker` holds in attempt `attempt`. False (and nothing changes) when it
    /// does not hold it any more: the reaper gave it to another worker, or it was finished.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_claimed(
        &self,
        worker: &str,
        attempt: i64,
        tenant_id: &str,
        id: &str,
        status: JobStatus,
        result: Option<&serde_json::Value>,
        error: Option<&str>,
    ) -> Result<bool> {
        self.finish_job(tenant_id, id, status, result, error, Some((worker, attempt)))
            .await
    }

    /// Gives a job that `worker` holds back to the queue (a worker shutting down), without
    /// counting the attempt. False when it does not hold it any more.
    pub async fn release_claim(&self, worker: &str, attempt: i64, id: &str) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE jobs SET status = 'queued', worker_id = NULL, heartbeat_at = NULL, \
             progress = NULL, attempts = attempts - 1 \
             WHERE id = $1 AND status = 'running' AND worker_id = $2 AND attempts = $3",
        )
        .bind(id)
        .bind(worker)
        .bind(attempt)
        .execute(&self.store.db.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// The worker that holds (or last held) a job, and how many times it was started.
    pub async fn job_claim(&self, id: &str) -> Result<(Option<String>, i64)> {
        let row = sqlx::query("SELECT worker_id, attempts FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.store.db.pool)
            .await?
            .ok_or(crate::StoreError::NotFound("job"))?;
        Ok((row.try_get("worker_id")?, row.try_get("attempts")?))
    }

    /// Jobs waiting and running in the shared queue, all tenants.
    pub async fn queue_depth(&self) -> Result<(i64, i64)> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(CASE WHEN status = 'queued' THEN 1 ELSE 0 END), 0) AS queued, \
             COALESCE(SUM(CASE WHEN status = 'running' THEN 1 ELSE 0 END), 0) AS running \
             FROM jobs WHERE status IN ('queued', 'running')",
        )
        .fetch_one(&self.store.db.pool)
        .await?;
        Ok((row.try_get("queued")?, row.try_get("running")?))
    }

    /// The ids of a tenant's jobs that are queued or running.
    pub async fn active_jobs(&self, tenant_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT id FROM jobs WHERE tenant_id = $1 AND status IN ('queued', 'running') \
             ORDER BY created_at, id",
        )
        .bind(tenant_id)
        .fetch_all(&self.store.db.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// Asks for a job of `tenant_id` to stop: a queued one is cancelled at once, a running one
    /// is flagged for its worker (who hears it at its next heartbeat). Returns the status after.
    pub async fn request_cancel(&self, tenant_id: &str, id: &str) -> Result<JobStatus> {
        let now = now_ms();
        sqlx::query(
            "UPDATE jobs SET status = 'cancelled', finished_at = $1 \
             WHERE id = $2 AND tenant_id = $3 AND status = 'queued'",
        )
        .bind(now)
        .bind(id)
        .bind(tenant_id)
        .execute(&self.store.db.pool)
        .await?;
        sqlx::query(
            "UPDATE jobs SET cancel_requested = 1 WHERE id = $1 AND tenant_id = $2 AND status = 'running'",
        )
        .bind(id)
        .bind(tenant_id)
        .execute(&self.store.db.pool)
        .await?;
        Ok(self.store.scoped(tenant_id).job(id).await?.status)
    }

    /// Jobs whose worker has not said it is alive for `timeout_ms` go back to the queue, or fail
    /// with [`WORKER_LOST`] once they have had `max_attempts` (a job whose cancellation was asked
    /// is cancelled instead). Any process may run this; each job is moved once.
    pub async fn reap_jobs(&self, timeout_ms: i64, max_attempts: i64) -> Result<Reaped> {
        let now = now_ms();
        let stale = "status = 'running' AND worker_id IS NOT NULL AND heartbeat_at < $1";
        let ids = |rows: Vec<sqlx::any::AnyRow>| -> Result<Vec<String>> {
            rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
        };
        let mut failed = ids(sqlx::query(&format!(
            "UPDATE jobs SET status = 'cancelled', finished_at = $2 \
             WHERE {stale} AND cancel_requested = 1 RETURNING id"
        ))
        .bind(now - timeout_ms)
        .bind(now)
        .fetch_all(&self.store.db.pool)
        .await?)?;
        failed.extend(ids(sqlx::query(&format!(
            "UPDATE jobs SET status = 'failed', finished_at = $2, \
             error = '{WORKER_LOST} (' || attempts || ' attempts); submit it again' \
             WHERE {stale} AND attempts >= $3 RETURNING id"
        ))
        .bind(now - timeout_ms)
        .bind(now)
        .bind(max_attempts)
        .fetch_all(&self.store.db.pool)
        .await?)?);
        let requeued = ids(sqlx::query(&format!(
            "UPDATE jobs SET status = 'queued', worker_id = NULL, heartbeat_at = NULL, progress = NULL \
             WHERE {stale} AND attempts < $2 RETURNING id"
        ))
        .bind(now - timeout_ms)
        .bind(max_attempts)
        .fetch_all(&self.store.db.pool)
        .await?)?;
        Ok(Reaped { requeued, failed })
    }
}
