//! Job records: what was asked, where it stands, what came out. The queue itself lives in the
//! server's memory; these rows are what survives a restart.

use crate::error::{corrupt, Result, StoreError};
use crate::ids::{looks_like_id, new_id, now_ms};
use crate::keys_at_rest::FieldKey;
use crate::{Scoped, System};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;
use std::fmt;
use std::str::FromStr;

/// Where a job stands. `Succeeded`, `Failed` and `Cancelled` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the job can change no more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self> {
        [
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Succeeded,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
        .ok_or_else(|| corrupt(format!("job status {s:?}")))
    }
}

/// A job record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    pub id: String,
    #[serde(skip)]
    pub tenant_id: String,
    #[serde(skip)]
    pub key_id: Option<String>,
    /// `generation`, `edit`, `variation`.
    pub kind: String,
    /// Submitted through `POST /v1/jobs` (it outlives the request that made it) rather than by a
    /// request that waits for the result.
    pub detached: bool,
    pub status: JobStatus,
    pub params: serde_json::Value,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// What [`Store::recover_jobs`] found after a restart.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Detached jobs that were waiting: still wanted, to be queued again.
    pub requeue: Vec<Job>,
    /// Jobs marked failed: those that were running, and those whose client has gone.
    pub failed: u64,
}

pub(crate) const COLUMNS: &str = "id, tenant_id, key_id, kind, detached, status, params, result, error, \
                       created_at, started_at, finished_at";

const PARAMS: &str = "jobs.params";
const RESULT: &str = "jobs.result";

/// A job row; `key` is its tenant's (params and result are sealed with it).
fn job_from(row: &AnyRow, key: &FieldKey) -> Result<Job> {
    let id: String = row.try_get("id")?;
    let params = key.open(PARAMS, &id, &row.try_get::<String, _>("params")?)?;
    let result = key.open_opt(RESULT, &id, row.try_get("result")?)?;
    let status: String = row.try_get("status")?;
    let json = |s: &str| serde_json::from_str(s).map_err(|e| corrupt(format!("job json: {e}")));
    Ok(Job {
        id,
        tenant_id: row.try_get("tenant_id")?,
        key_id: row.try_get("key_id")?,
        kind: row.try_get("kind")?,
        detached: row.try_get::<i64, _>("detached")? != 0,
        status: status.parse()?,
        params: json(&params)?,
        result: result.as_deref().map(json).transpose()?,
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

/// Inserts a queued job's row (`sealed` is its parameters, sealed).
async fn insert(conn: &mut sqlx::AnyConnection, job: &Job, sealed: String) -> Result<()> {
    sqlx::query(
        "INSERT INTO jobs (id, tenant_id, key_id, kind, detached, status, params, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&job.id)
    .bind(&job.tenant_id)
    .bind(&job.key_id)
    .bind(&job.kind)
    .bind(i64::from(job.detached))
    .bind(job.status.as_str())
    .bind(sealed)
    .bind(job.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Why the shared queue did not take a job ([`Scoped::admit_job`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The tenant already has this many jobs queued or running.
    TenantCap { active: usize },
    /// The queue already holds this many queued jobs.
    QueueFull { queued: usize },
}

impl Scoped<'_> {
    /// Records a new queued job.
    pub async fn insert_job(
        &self,
        kind: &str,
        detached: bool,
        key_id: Option<&str>,
        params: serde_json::Value,
    ) -> Result<Job> {
        let job = self.queued_job(kind, detached, key_id, params);
        let sealed = self.sealed_params(&job).await?;
        let mut conn = self.store.db.pool.acquire().await?;
        insert(&mut conn, &job, sealed).await?;
        Ok(job)
    }

    /// Records a new queued job if the tenant has fewer than `max_active` jobs queued or
    /// running and the queue fewer than `capacity` queued ones. The counts and the insert are
    /// one decision: every admission takes the admission lock first, whichever process asks, so
    /// concurrent submissions never overshoot either cap.
    pub async fn admit_job(
        &self,
        kind: &str,
        detached: bool,
        key_id: Option<&str>,
        params: serde_json::Value,
        (max_active, capacity): (usize, usize),
    ) -> Result<std::result::Result<Job, Refusal>> {
        let job = self.queued_job(kind, detached, key_id, params);
        // The tenant's key before the transaction: making one writes.
        let sealed = self.sealed_params(&job).await?;
        let mut tx = self.store.db.pool.begin().await?;
        sqlx::query("UPDATE admission_lock SET admitted = admitted + 1 WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        let count = |n: i64| usize::try_from(n).unwrap_or(usize::MAX);
        let active: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM jobs WHERE tenant_id = $1 AND status IN ('queued', 'running')",
        )
        .bind(self.tenant_id)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        if count(active) >= max_active {
            return Ok(Err(Refusal::TenantCap {
                active: count(active),
            }));
        }
        let queued: i64 = sqlx::query("SELECT COUNT(*) AS n FROM jobs WHERE status = 'queued'")
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if count(queued) >= capacity {
            return Ok(Err(Refusal::QueueFull {
                queued: count(queued),
            }));
        }
        insert(&mut tx, &job, sealed).await?;
        tx.commit().await?;
        Ok(Ok(job))
    }

    fn queued_job(&self, kind: &str, detached: bool, key_id: Option<&str>, params: serde_json::Value) -> Job {
        Job {
            id: new_id("job"),
            tenant_id: self.tenant_id.to_owned(),
            key_id: key_id.map(str::to_owned),
            kind: kind.to_owned(),
            detached,
            status: JobStatus::Queued,
            params,
            result: None,
            error: None,
            created_at: now_ms(),
            started_at: None,
            finished_at: None,
        }
    }

    /// The job's parameters sealed with the tenant's field key.
    async fn sealed_params(&self, job: &Job) -> Result<String> {
        self.store
            .field_key(self.tenant_id)
            .await?
            .seal(PARAMS, &job.id, &job.params.to_string())
    }

    /// One job.
    pub async fn job(&self, id: &str) -> Result<Job> {
        if !looks_like_id(id, "job") {
            return Err(StoreError::NotFound("job"));
        }
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE id = $1 AND tenant_id = $2"
        ))
        .bind(id)
        .bind(self.tenant_id)
        .fetch_optional(&self.store.db.pool)
        .await?;
        let key = self.store.field_key(self.tenant_id).await?;
        row.as_ref()
            .map(|r| job_from(r, &key))
            .transpose()?
            .ok_or(StoreError::NotFound("job"))
    }

    /// The tenant's most recent jobs, newest first.
    pub async fn jobs(&self, limit: u32) -> Result<Vec<Job>> {
        let key = self.store.field_key(self.tenant_id).await?;
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE tenant_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2"
        ))
        .bind(self.tenant_id)
        .bind(i64::from(limit.clamp(1, 100)))
        .fetch_all(&self.store.db.pool)
        .await?
        .iter()
        .map(|r| job_from(r, &key))
        .collect()
    }
}

impl System<'_> {
    /// Marks a queued job running. Returns false if it is no longer queued (cancelled meanwhile).
    pub async fn job_started(&self, id: &str) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE jobs SET status = 'running', started_at = $1 WHERE id = $2 AND status = 'queued'",
        )
        .bind(now_ms())
        .bind(id)
        .execute(&self.store.db.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Ends a job of `tenant_id` that is not final yet. Returns false if it already was (or is
    /// not that tenant's). The result is sealed with the tenant's key.
    pub async fn job_finished(
        &self,
        tenant_id: &str,
        id: &str,
        status: JobStatus,
        result: Option<&serde_json::Value>,
        error: Option<&str>,
    ) -> Result<bool> {
        self.finish_job(tenant_id, id, status, result, error, None).await
    }

    /// Ends a job that is not final yet, and with `claim` only while that worker holds it in
    /// that attempt (the shared queue's fencing).
    pub(crate) async fn finish_job(
        &self,
        tenant_id: &str,
        id: &str,
        status: JobStatus,
        result: Option<&serde_json::Value>,
        error: Option<&str>,
        claim: Option<(&str, i64)>,
    ) -> Result<bool> {
        debug_assert!(status.is_final());
        let result = match result {
            Some(r) => Some(
                self.store
                    .field_key(tenant_id)
                    .await?
                    .seal(RESULT, id, &r.to_string())?,
            ),
            None => None,
        };
        let fence = match claim {
            Some(_) => "AND status = 'running' AND worker_id = $7 AND attempts = $8",
            None => "AND status IN ('queued', 'running')",
        };
        let query = format!(
            "UPDATE jobs SET status = $1, result = $2, error = $3, finished_at = $4 \
             WHERE id = $5 AND tenant_id = $6 {fence}"
        );
        let mut q = sqlx::query(&query)
            .bind(status.as_str())
            .bind(result)
            .bind(error)
            .bind(now_ms())
            .bind(id)
            .bind(tenant_id);
        if let Some((worker, attempt)) = claim {
            q = q.bind(worker).bind(attempt);
        }
        Ok(q.execute(&self.store.db.pool).await?.rows_affected() == 1)
    }

    /// After a restart: jobs that were running failed (their work is lost); waiting jobs whose
    /// client was waiting on the connection failed too (the client is gone); waiting detached
    /// jobs are returned to be queued again, oldest first.
    pub async fn recover_jobs(&self) -> Result<Recovery> {
        let now = now_ms();
        let running = sqlx::query(
            "UPDATE jobs SET status = 'failed', finished_at = $1, \
             error = 'interrupted: the server stopped while this job was running; submit it again' \
             WHERE status = 'running'",
        )
        .bind(now)
        .execute(&self.store.db.pool)
        .await?;
        let orphaned = sqlx::query(
            "UPDATE jobs SET status = 'failed', finished_at = $1, \
             error = 'interrupted: the server stopped before this job started and its request has ended' \
             WHERE status = 'queued' AND detached = 0",
        )
        .bind(now)
        .execute(&self.store.db.pool)
        .await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE status = 'queued' ORDER BY created_at, id"
        ))
        .fetch_all(&self.store.db.pool)
        .await?;
        let mut requeue = Vec::with_capacity(rows.len());
        for r in &rows {
            requeue.push(self.job_any_tenant_from(r).await?);
        }
        Ok(Recovery {
            requeue,
            failed: running.rows_affected() + orphaned.rows_affected(),
        })
    }

    /// Any tenant's job by id (for the worker, which has no tenant context of its own).
    pub async fn job_any_tenant(&self, id: &str) -> Result<Job> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.store.db.pool)
            .await?;
        match &row {
            Some(r) => self.job_any_tenant_from(r).await,
            None => Err(StoreError::NotFound("job")),
        }
    }

    pub(crate) async fn job_any_tenant_from(&self, row: &AnyRow) -> Result<Job> {
        let tenant: String = row.try_get("tenant_id")?;
        job_from(row, &self.store.field_key(&tenant).await?)
    }
}
