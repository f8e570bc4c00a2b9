//! The job system across processes, on the shared queue in the database
//! (`nanoimg_store::queue`):
//! - an **API node** (`role = api`, [`ApiNode`]) admits jobs against the database's counts in one
//!   decision under the admission lock (`Scoped::admit_job`),
//!   records them and watches them there: a poller per watched job turns status and progress
//!   into the same [`JobEvent`]s a local job emits, so handlers and event streams work unchanged
//!   (previews excepted: they stay on the worker);
//! - a **worker** (`role = worker`) claims jobs into its local queue while it has a free worker
//!   ([`spawn_feeder`]), heartbeats and hears cancellations ([`spawn_heartbeat`]), reports
//!   progress ([`ProgressReport`]) and finishes each job fenced by its claim
//!   ([`finish_claimed`]); a job it no longer holds (presumed dead and handed on) keeps none of
//!   its outputs;
//! - both run the reaper, which hands a silent worker's jobs on or fails them with the reason.

use super::queue::{live_from, refusal_reason, shutting_down, JobQueue, LocalQueue};
use super::{Context, JobError, JobEvent, JobOwner, LiveJob, Output};
use crate::spec::{JobKind, JobSpec};
use nanoimg_store::{Job, JobStatus, Refusal, StoreError, WORKER_LOST};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};

/// Runs the reaper until the queue stops.
pub(super) fn spawn_reaper(queue: JobQueue) {
    tokio::spawn(async move {
        let ctx = queue.ctx().clone();
        let q = &ctx.settings.queue;
        let every = Duration::from_secs(q.heartbeat_secs.max(1));
        let timeout_ms = i64::try_from(q.worker_timeout_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        while !queue.stopping() {
            match ctx
                .store
                .system()
                .reap_jobs(timeout_ms, i64::from(q.max_attempts.max(1)))
                .await
            {
                Ok(r) if r.requeued.is_empty() && r.failed.is_empty() => {}
                Ok(r) => tracing::warn!(
                    requeued = ?r.requeued,
                    failed = ?r.failed,
                    "jobs of a worker that stopped responding were handed on or ended"
                ),
                Err(e) => tracing::warn!(error = %e, "the reaper could not read the queue"),
            }
            tokio::time::sleep(every).await;
        }
    });
}

/// Claims jobs into the local queue while a worker is free.
pub(super) fn spawn_feeder(q: Arc<LocalQueue>) {
    tokio::spawn(async move {
        let idle = Duration::from_millis(q.ctx.settings.queue.poll_ms.max(10));
        let queue = JobQueue::Local(q.clone());
        loop {
            if queue.stopping() {
                return;
            }
            if !q.has_room() {
                tokio::time::sleep(idle).await;
                continue;
            }
            match q.ctx.store.system().claim_job(q.ctx.worker_id()).await {
                Ok(Some(c)) => take_claim(&q, queue.stopping(), c).await,
                Ok(None) => tokio::time::sleep(idle).await,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming a job failed");
                    tokio::time::sleep(idle * 4).await;
                }
            }
        }
    });
}

/// Queues a claimed job here; one that cannot be read fails, and one claimed as shutdown began
/// goes back.
async fn take_claim(q: &LocalQueue, stopping: bool, c: nanoimg_store::Claimed) {
    let (rec, attempt) = (c.job, c.attempt);
    let store = &q.ctx.store;
    let me = q.ctx.worker_id();
    let spec = match serde_json::from_value::<JobSpec>(rec.params.clone()) {
        Ok(spec) => spec,
        Err(e) => {
            let msg = format!("this worker cannot run the job: {e}");
            let code = serde_json::json!({"code": "internal_error"});
            let _ = store
                .system()
                .finish_claimed(
                    me,
                    attempt,
                    &rec.tenant_id,
                    &rec.id,
                    JobStatus::Failed,
                    Some(&code),
                    Some(&msg),
                )
                .await;
            return;
        }
    };
    if stopping {
        let _ = store.system().release_claim(me, attempt, &rec.id).await;
        return;
    }
    tracing::info!(job = %rec.id, attempt, "claimed");
    let detached = rec.detached;
    let mut job = live_from(rec, detached, spec);
    job.attempt = Some(attempt);
    q.enqueue(job);
}

/// Says this worker is alive, and cancels the jobs whose cancellation was asked for, until the
/// last running job has ended after a shutdown.
pub(super) fn spawn_heartbeat(q: Arc<LocalQueue>) {
    tokio::spawn(async move {
        let every = Duration::from_secs(q.ctx.settings.queue.heartbeat_secs.max(1));
        let queue = JobQueue::Local(q.clone());
        loop {
            match q.ctx.store.system().heartbeat(q.ctx.worker_id()).await {
                Ok(cancel) => {
                    for id in cancel {
                        q.cancel_running(&id);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "a heartbeat failed"),
            }
            if queue.stopping() && queue.depth() == (0, 0) {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
}

/// Writes a claimed job's progress to the queue for the API node, at most a few times a second
/// and always its last state. The engine's thread only sets the latest step; an async task
/// writes it.
pub(super) struct ProgressReport {
    latest: watch::Sender<Option<serde_json::Value>>,
}

impl ProgressReport {
    /// Starts the writer for `job`; it ends when the report is dropped.
    pub(super) fn start(ctx: &Arc<Context>, job: &LiveJob) -> Self {
        let (tx, mut rx) = watch::channel(None::<serde_json::Value>);
        let (ctx, id) = (ctx.clone(), job.id.clone());
        tokio::spawn(async move {
            loop {
                let changed = rx.changed().await;
                let v = rx.borrow_and_update().clone();
                if let Some(v) = v {
                    if let Err(e) = ctx.store.system().report_progress(ctx.worker_id(), &id, &v).await {
                        tracing::warn!(job = %id, error = %e, "reporting progress failed");
                    }
                }
                if changed.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        Self { latest: tx }
    }

    /// The step just done (called on the engine's thread).
    pub(super) fn step(&self, image: usize, images: usize, step: usize, steps: usize) {
        let v = serde_json::json!({"image": image, "images": images, "step": step, "steps": steps});
        self.latest.send_replace(Some(v));
    }
}

/// Records how a claimed job ended, if this worker still holds it. A job handed on meanwhile
/// keeps none of this attempt's images; one interrupted by this worker's shutdown goes back to
/// the queue.
pub(super) async fn finish_claimed(
    ctx: &Context,
    job: &LiveJob,
    status: JobStatus,
    event: &JobEvent,
    result: Option<&serde_json::Value>,
    error: Option<&str>,
) {
    let attempt = job.attempt.expect("a claimed job");
    let me = ctx.worker_id();
    if matches!(event, JobEvent::Failed(JobError::ShuttingDown(_))) {
        if let Err(e) = ctx.store.system().release_claim(me, attempt, &job.id).await {
            tracing::error!(job = %job.id, error = %e, "giving a job back to the queue failed");
        }
        return;
    }
    let recorded = ctx
        .store
        .system()
        .finish_claimed(me, attempt, &job.tenant_id, &job.id, status, result, error)
        .await;
    match recorded {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(
                job = %job.id,
                attempt,
                "this worker no longer holds the job (presumed lost and handed on); its images are discarded"
            );
            if let JobEvent::Succeeded(outs) = event {
                let scoped = ctx.store.scoped(&job.tenant_id);
                for o in outs.iter() {
                    let _ = scoped.delete_asset(&o.asset.id).await;
                }
            }
        }
        Err(e) => tracing::error!(job = %job.id, error = %e, "recording a finished job failed"),
    }
}

/// An API node: admission against the shared queue, and watchers of the jobs it streams or
/// waits on.
pub struct ApiNode {
    pub(super) ctx: Arc<Context>,
    live: Mutex<HashMap<String, Arc<LiveJob>>>,
    stopping: AtomicBool,
}

impl ApiNode {
    pub(super) fn new(ctx: Arc<Context>) -> Arc<Self> {
        Arc::new(Self {
            ctx,
            live: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
        })
    }

    pub(super) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    pub(super) fn shutdown(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Admits a job against the shared queue's counts and records it for the workers.
    pub(super) async fn submit(
        self: &Arc<Self>,
        owner: JobOwner<'_>,
        kind: JobKind,
        spec: JobSpec,
        detached: bool,
    ) -> Result<(Arc<LiveJob>, broadcast::Receiver<JobEvent>), JobError> {
        if self.stopping() {
            let e = shutting_down();
            self.ctx.metrics.reject(refusal_reason(&e));
            return Err(e);
        }
        let params = serde_json::to_value(&spec).map_err(JobError::internal)?;
        // One decision under the database's admission lock, whichever API node asks.
        let caps = (owner.max_concurrent, self.ctx.settings.queue_capacity);
        let admitted = self
            .ctx
            .store
            .scoped(owner.tenant_id)
            .admit_job(kind.as_str(), detached, Some(owner.key_id), params, caps)
            .await?;
        let rec = match admitted {
            Ok(rec) => rec,
            Err(refusal) => {
                let e = match refusal {
                    Refusal::TenantCap { active } => JobError::TooManyJobs {
                        active,
                        max: owner.max_concurrent,
                    },
                    Refusal::QueueFull { queued } => JobError::QueueFull(queued),
                };
                self.ctx.metrics.reject(refusal_reason(&e));
                return Err(e);
            }
        };
        let job = Arc::new(live_from(rec, detached, spec));
        let rx = job.subscribe();
        let job = self.watch_job(job);
        Ok((job, rx))
    }

    /// The job, watched from here on, if it is still queued or running.
    pub(super) async fn watch(self: &Arc<Self>, tenant_id: &str, id: &str) -> Option<Arc<LiveJob>> {
        if let Some(j) = self
            .live
            .lock()
            .expect("watchers lock")
            .get(id)
            .filter(|j| j.tenant_id == tenant_id)
        {
            return Some(j.clone());
        }
        let rec = self.ctx.store.scoped(tenant_id).job(id).await.ok()?;
        if rec.status.is_final() {
            return None;
        }
        let spec = serde_json::from_value::<JobSpec>(rec.params.clone()).ok()?;
        let detached = rec.detached;
        Some(self.watch_job(Arc::new(live_from(rec, detached, spec))))
    }

    /// Registers a job as watched and polls its record until it is final, emitting its events.
    /// Two watchers of one job share the first.
    fn watch_job(self: &Arc<Self>, job: Arc<LiveJob>) -> Arc<LiveJob> {
        {
            let mut live = self.live.lock().expect("watchers lock");
            if let Some(existing) = live.get(&job.id) {
                return existing.clone();
            }
            live.insert(job.id.clone(), job.clone());
        }
        let me = self.clone();
        let watched = job.clone();
        tokio::spawn(async move {
            me.poll(&watched).await;
            me.live.lock().expect("watchers lock").remove(&watched.id);
        });
        job
    }

    async fn poll(&self, job: &LiveJob) {
        let every = Duration::from_millis(self.ctx.settings.queue.poll_ms.max(10));
        let store = &self.ctx.store;
        let scoped = store.scoped(&job.tenant_id);
        let (mut started, mut last) = (false, None);
        while !self.stopping() {
            let rec = match scoped.job(&job.id).await {
                Ok(r) => r,
                Err(StoreError::NotFound(_)) => {
                    // Erased with its tenant.
                    job.emit(JobEvent::Cancelled);
                    return;
                }
                Err(e) => {
                    tracing::warn!(job = %job.id, error = %e, "reading a watched job failed");
                    tokio::time::sleep(every * 4).await;
                    continue;
                }
            };
            if rec.status != JobStatus::Queued && rec.status != JobStatus::Cancelled && !started {
                started = true;
                job.emit(JobEvent::Started);
            }
            if rec.status == JobStatus::Running {
                let now = store
                    .system()
                    .job_progress(&job.tenant_id, &job.id)
                    .await
                    .ok()
                    .flatten();
                if now.is_some() && now != last {
                    if let Some(e) = now.as_ref().and_then(progress_event) {
                        job.emit(e);
                    }
                    last = now;
                }
            }
            if rec.status.is_final() {
                job.emit(self.final_event(&rec).await);
                return;
            }
            tokio::time::sleep(every).await;
        }
    }

    /// The event a final record stands for, with the images read back from the store.
    async fn final_event(&self, rec: &Job) -> JobEvent {
        match rec.status {
            JobStatus::Succeeded => {
                let scoped = self.ctx.store.scoped(&rec.tenant_id);
                let items = rec
                    .result
                    .as_ref()
                    .and_then(|r| r["images"].as_array().cloned())
                    .unwrap_or_default();
                let mut outs = Vec::with_capacity(items.len());
                for item in items {
                    let id = item["id"].as_str().unwrap_or_default();
                    match scoped.asset_bytes(id).await {
                        Ok((asset, bytes)) => outs.push(Output {
                            asset,
                            bytes: Arc::new(bytes),
                            seed: item["seed"].as_u64().unwrap_or_default(),
                            text_tokens: item["text_tokens"].as_u64().unwrap_or_default() as usize,
                            version: item["version"].as_str().map(str::to_owned),
                        }),
                        Err(e) => {
                            return JobEvent::Failed(JobError::Internal(format!("reading output {id}: {e}")))
                        }
                    }
                }
                JobEvent::Succeeded(Arc::new(outs))
            }
            JobStatus::Cancelled => JobEvent::Cancelled,
            _ => {
                let message = rec.error.clone().unwrap_or_else(|| "the job failed".into());
                let code = if message.starts_with(WORKER_LOST) {
                    Some("worker_lost")
                } else {
                    rec.result.as_ref().and_then(|r| r["code"].as_str())
                };
                JobEvent::Failed(JobError::from_record(code, message))
            }
        }
    }

    /// Asks for a job to stop. False when it is not queued or running.
    pub(super) async fn cancel(&self, tenant_id: &str, id: &str) -> Result<bool, JobError> {
        let store = &self.ctx.store;
        match store.scoped(tenant_id).job(id).await {
            Ok(rec) if !rec.status.is_final() => {
                store.system().request_cancel(tenant_id, id).await?;
                Ok(true)
            }
            Ok(_) | Err(StoreError::NotFound(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Cancels every queued or running job of a tenant (erasure) and waits, up to 30 s, for the
    /// workers to stop them.
    pub(super) async fn stop_tenant(&self, tenant_id: &str) -> usize {
        let store = &self.ctx.store;
        let ids = match store.system().active_jobs(tenant_id).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "listing an erased tenant's jobs failed");
                return 0;
            }
        };
        for id in &ids {
            if let Err(e) = store.system().request_cancel(tenant_id, id).await {
                tracing::warn!(job = %id, error = %e, "cancelling a job of an erased tenant");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline
            && store
                .system()
                .active_jobs(tenant_id)
                .await
                .map(|a| !a.is_empty())
                .unwrap_or(false)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ids.len()
    }
}

fn progress_event(p: &serde_json::Value) -> Option<JobEvent> {
    let n = |k: &str| p[k].as_u64().map(|v| v as usize);
    Some(JobEvent::Progress {
        image: n("image")?,
        images: n("images")?,
        step: n("step")?,
        steps: n("steps")?,
        preview: None,
    })
}
