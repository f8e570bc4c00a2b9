//! The queue behind one interface. [`JobQueue::Local`] is the in-memory queue, fair between
//! tenants, that this process's workers take from (role `all`, and role `worker`, whose feeder
//! fills it from the shared queue); [`JobQueue::Shared`] is an API node's view of the database's
//! queue (role `api`). This is the one place that knows the roles.
//!
//! Locally, admission is one decision under one lock: the tenant's cap and the queue's capacity
//! are checked and the slot reserved together, so concurrent requests cannot overshoot.

use super::fair::QueueState;
use super::shared::{self, ApiNode};
use super::{job_kind, worker, Context, JobError, JobEvent, JobOwner, LiveJob, Submitted};
use crate::config::Role;
use crate::spec::{JobKind, JobSpec};
use nanoimg_store::{Job, JobStatus, StoreError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The job queue of this process's role.
#[derive(Clone)]
pub enum JobQueue {
    /// Jobs run here: admitted here (role `all`) or claimed from the shared queue (`worker`).
    Local(Arc<LocalQueue>),
    /// Jobs run on workers elsewhere; this API node records and watches them.
    Shared(Arc<ApiNode>),
}

impl JobQueue {
    /// The queue for `ctx`'s role, with its workers and background tasks running.
    pub(super) async fn start(ctx: Arc<Context>) -> Result<Self, StoreError> {
        let queue = match ctx.settings.role {
            Role::All => {
                let q = LocalQueue::new(ctx);
                q.recover().await?;
                worker::spawn(&q);
                JobQueue::Local(q)
            }
            Role::Worker => {
                let q = LocalQueue::new(ctx);
                worker::spawn(&q);
                shared::spawn_feeder(q.clone());
                shared::spawn_heartbeat(q.clone());
                JobQueue::Local(q)
            }
            Role::Api => JobQueue::Shared(ApiNode::new(ctx)),
        };
        if queue.ctx().settings.role != Role::All {
            shared::spawn_reaper(queue.clone());
        }
        Ok(queue)
    }

    pub(super) fn ctx(&self) -> &Arc<Context> {
        match self {
            JobQueue::Local(q) => &q.ctx,
            JobQueue::Shared(n) => &n.ctx,
        }
    }

    pub(super) async fn submit(
        &self,
        owner: JobOwner<'_>,
        kind: JobKind,
        spec: JobSpec,
        detached: bool,
    ) -> Result<Submitted, JobError> {
        let job = match self {
            JobQueue::Local(q) => q.submit(owner, kind, spec, detached).await?,
            JobQueue::Shared(n) => n.submit(owner, kind, spec, detached).await?,
        };
        Ok(Submitted {
            events: job.1,
            job: job.0,
            queue: self.clone(),
            armed: !detached,
        })
    }

    pub(super) async fn watch(&self, tenant_id: &str, id: &str) -> Option<Arc<LiveJob>> {
        match self {
            JobQueue::Local(q) => q.live(tenant_id, id),
            JobQueue::Shared(n) => n.watch(tenant_id, id).await,
        }
    }

    pub(super) async fn cancel(&self, tenant_id: &str, id: &str) -> Result<bool, JobError> {
        match self {
            JobQueue::Local(q) => q.cancel(tenant_id, id).await,
            JobQueue::Shared(n) => n.cancel(tenant_id, id).await,
        }
    }

    pub(super) async fn stop_tenant(&self, tenant_id: &str) -> usize {
        match self {
            JobQueue::Local(q) => q.stop_tenant(tenant_id).await,
            JobQueue::Shared(n) => n.stop_tenant(tenant_id).await,
        }
    }

    pub(super) fn stopping(&self) -> bool {
        match self {
            JobQueue::Local(q) => q.state.lock().expect("queue lock").stopping,
            JobQueue::Shared(n) => n.stopping(),
        }
    }

    pub(super) fn depth(&self) -> (usize, usize) {
        match self {
            JobQueue::Local(q) => q.depth(),
            JobQueue::Shared(_) => (0, 0),
        }
    }

    pub(super) async fn shutdown(&self, grace: Duration) {
        match self {
            JobQueue::Local(q) => q.shutdown(grace).await,
            // The jobs belong to the workers; only this node's watchers stop.
            JobQueue::Shared(n) => n.shutdown(),
        }
    }

    /// The failure a job's watcher reports when its events ended without a final one.
    pub(super) async fn ended_without_event(&self, job: &LiveJob) -> JobError {
        let rec = self.ctx().store.scoped(&job.tenant_id).job(&job.id).await;
        JobError::Internal(
            rec.ok()
                .and_then(|j| j.error)
                .unwrap_or_else(|| "the job ended without a result".into()),
        )
    }
}

/// The in-memory queue, its live jobs and its workers.
pub struct LocalQueue {
    pub(super) ctx: Arc<Context>,
    state: Mutex<QueueState>,
    wake: Notify,
    pub(super) workers: Mutex<Vec<JoinHandle<()>>>,
}

impl LocalQueue {
    fn new(ctx: Arc<Context>) -> Arc<Self> {
        Arc::new(Self {
            ctx,
            state: Mutex::new(QueueState::default()),
            wake: Notify::new(),
            workers: Mutex::new(Vec::new()),
        })
    }

    /// Puts back the detached jobs a previous run left waiting (single process only).
    async fn recover(&self) -> Result<(), StoreError> {
        let store = &self.ctx.store;
        let recovery = store.system().recover_jobs().await?;
        if recovery.failed > 0 {
            tracing::warn!(
                jobs = recovery.failed,
                "jobs interrupted by the last shutdown marked failed"
            );
        }
        for rec in recovery.requeue {
            match serde_json::from_value::<JobSpec>(rec.params.clone()) {
                Ok(spec) => self.enqueue(live_from(rec, true, spec)),
                Err(e) => {
                    let msg = format!("cannot resume this job after a restart: {e}");
                    store
                        .system()
                        .job_finished(&rec.tenant_id, &rec.id, JobStatus::Failed, None, Some(&msg))
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Puts a job this process will run in the queue (a recovered or claimed one).
    pub(super) fn enqueue(&self, job: LiveJob) {
        let job = Arc::new(job);
        let mut st = self.state.lock().expect("queue lock");
        *st.active.entry(job.tenant_id.clone()).or_default() += 1;
        st.queued += 1;
        st.live.insert(job.id.clone(), job.clone());
        st.push(job);
        self.ctx.metrics.queue_depth.set(st.queued as i64);
        drop(st);
        self.wake.notify_one();
    }

    /// Whether a worker is free to take another job (the feeder claims only then).
    pub(super) fn has_room(&self) -> bool {
        let st = self.state.lock().expect("queue lock");
        st.queued + st.running < self.ctx.settings.workers
    }

    async fn submit(
        &self,
        owner: JobOwner<'_>,
        kind: JobKind,
        spec: JobSpec,
        detached: bool,
    ) -> Result<(Arc<LiveJob>, tokio::sync::broadcast::Receiver<JobEvent>), JobError> {
        let tenant_id = owner.tenant_id;
        {
            let mut st = self.state.lock().expect("queue lock");
            let active = st.active.get(tenant_id).copied().unwrap_or(0);
            let refusal = if st.stopping {
                Some(shutting_down())
            } else if active >= owner.max_concurrent {
                Some(JobError::TooManyJobs {
                    active,
                    max: owner.max_concurrent,
                })
            } else if st.queued >= self.ctx.settings.queue_capacity {
                Some(JobError::QueueFull(st.queued))
            } else {
                None
            };
            if let Some(e) = refusal {
                self.ctx.metrics.reject(refusal_reason(&e));
                return Err(e);
            }
            // Reserve the slot before the await, so concurrent admissions cannot overshoot.
            *st.active.entry(tenant_id.to_owned()).or_default() += 1;
            st.queued += 1;
        }
        let params = serde_json::to_value(&spec).map_err(JobError::internal)?;
        let rec = self
            .ctx
            .store
            .scoped(tenant_id)
            .insert_job(kind.as_str(), detached, Some(owner.key_id), params)
            .await;
        let (job, rx, stopped) = {
            let mut st = self.state.lock().expect("queue lock");
            let rec = match rec {
                Ok(r) => r,
                Err(e) => {
                    st.queued -= 1;
                    st.release(tenant_id);
                    return Err(JobError::internal(e));
                }
            };
            let job = Arc::new(LiveJob::new(rec.id, tenant_id.to_owned(), kind, detached, spec));
            let rx = job.subscribe();
            if st.stopping {
                // Shutdown began while the job was being recorded: it missed the shutdown's
                // sweep of the queue, and no worker will take it now.
                st.queued -= 1;
                st.release(tenant_id);
            } else {
                st.live.insert(job.id.clone(), job.clone());
                st.push(job.clone());
                self.ctx.metrics.queue_depth.set(st.queued as i64);
            }
            (job, rx, st.stopping)
        };
        if !stopped {
            self.wake.notify_one();
            return Ok((job, rx));
        }
        // A detached job stays queued in the store and runs after the restart; a waiting
        // client is told to retry.
        if detached {
            return Ok((job, rx));
        }
        let e = shutting_down();
        self.interrupted_before_start(&job).await;
        self.ctx.metrics.reject(refusal_reason(&e));
        Err(e)
    }

    /// Records a job the shutdown stopped before it ran as failed, with the reason.
    async fn interrupted_before_start(&self, job: &LiveJob) {
        let _ = self
            .ctx
            .store
            .system()
            .job_finished(
                &job.tenant_id,
                &job.id,
                JobStatus::Failed,
                None,
                Some(INTERRUPTED_WAITING),
            )
            .await;
    }

    /// The next job to run, taking tenants in turn; `None` once the queue stops.
    pub(super) async fn next(&self) -> Option<Arc<LiveJob>> {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.state.lock().expect("queue lock");
                if st.stopping {
                    return None;
                }
                if let Some(j) = st.pop() {
                    st.queued -= 1;
                    st.running += 1;
                    self.ctx.metrics.queue_depth.set(st.queued as i64);
                    self.ctx.metrics.jobs_running.set(st.running as i64);
                    return Some(j);
                }
            }
            notified.await;
        }
    }

    /// Whether running jobs are being cancelled because the grace period ran out.
    pub(super) fn aborting(&self) -> bool {
        self.state.lock().expect("queue lock").aborting
    }

    /// A job has ended: its slot is free again.
    pub(super) fn release(&self, job: &LiveJob) {
        let mut st = self.state.lock().expect("queue lock");
        st.running -= 1;
        st.release(&job.tenant_id);
        st.live.remove(&job.id);
        self.ctx.metrics.jobs_running.set(st.running as i64);
    }

    /// The live job with this id, if it belongs to `tenant_id`.
    pub(super) fn live(&self, tenant_id: &str, id: &str) -> Option<Arc<LiveJob>> {
        let st = self.state.lock().expect("queue lock");
        st.live.get(id).filter(|j| j.tenant_id == tenant_id).cloned()
    }

    /// Cancels the live job with this id, wherever it is (the shared queue's cancellations).
    pub(super) fn cancel_running(&self, id: &str) {
        if let Some(job) = self.state.lock().expect("queue lock").live.get(id) {
            job.cancel.cancel();
        }
    }

    async fn cancel(&self, tenant_id: &str, id: &str) -> Result<bool, JobError> {
        let removed = {
            let mut st = self.state.lock().expect("queue lock");
            let Some(job) = st.live.get(id).filter(|j| j.tenant_id == tenant_id).cloned() else {
                return Ok(false);
            };
            match st.remove_waiting(id, tenant_id) {
                Some(j) => {
                    st.queued -= 1;
                    st.release(tenant_id);
                    st.live.remove(id);
                    self.ctx.metrics.queue_depth.set(st.queued as i64);
                    Some(j)
                }
                None => {
                    job.cancel.cancel();
                    None
                }
            }
        };
        if let Some(job) = removed {
            self.ctx
                .store
                .system()
                .job_finished(
                    tenant_id,
                    id,
                    JobStatus::Cancelled,
                    None,
                    Some(&JobError::Cancelled.record_message()),
                )
                .await?;
            self.ctx.count(job.kind, "cancelled");
            job.emit(JobEvent::Cancelled);
        }
        Ok(true)
    }

    async fn stop_tenant(&self, tenant_id: &str) -> usize {
        let live_ids = |st: &QueueState| -> Vec<String> {
            st.live
                .values()
                .filter(|j| j.tenant_id == tenant_id)
                .map(|j| j.id.clone())
                .collect()
        };
        let ids = live_ids(&self.state.lock().expect("queue lock"));
        for id in &ids {
            if let Err(e) = self.cancel(tenant_id, id).await {
                tracing::warn!(job = %id, error = %e, "cancelling a job of an erased tenant");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !live_ids(&self.state.lock().expect("queue lock")).is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ids.len()
    }

    fn depth(&self) -> (usize, usize) {
        let st = self.state.lock().expect("queue lock");
        (st.queued, st.running)
    }

    /// Waiting jobs whose client waits on the connection fail now (detached ones stay queued in
    /// the store and resume at the next start; claimed ones go back to the shared queue);
    /// running jobs get `grace` to finish, then are cancelled and recorded as interrupted.
    async fn shutdown(&self, grace: Duration) {
        let dropped: Vec<Arc<LiveJob>> = {
            let mut st = self.state.lock().expect("queue lock");
            st.stopping = true;
            let mut out = Vec::new();
            while let Some(j) = st.pop() {
                st.queued -= 1;
                st.release(&j.tenant_id);
                st.live.remove(&j.id);
                out.push(j);
            }
            self.ctx.metrics.queue_depth.set(0);
            out
        };
        self.wake.notify_waiters();
        let store = &self.ctx.store;
        for job in dropped {
            if let Some(attempt) = job.attempt {
                // Back to the shared queue, for another worker.
                let _ = store
                    .system()
                    .release_claim(self.ctx.worker_id(), attempt, &job.id)
                    .await;
                continue;
            }
            if job.detached {
                // Still `queued` in the store: picked up again at the next start.
                continue;
            }
            self.interrupted_before_start(&job).await;
            job.emit(JobEvent::Failed(JobError::ShuttingDown(
                INTERRUPTED_WAITING.into(),
            )));
        }
        let deadline = Instant::now() + grace;
        while self.depth().1 > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        {
            let mut st = self.state.lock().expect("queue lock");
            st.aborting = true;
            for job in st.live.values() {
                job.cancel.cancel();
            }
        }
        let handles: Vec<_> = self.workers.lock().expect("workers lock").drain(..).collect();
        for h in handles {
            let _ = h.await;
        }
    }
}

/// A job record as a live job (recovered, claimed or watched).
pub(super) fn live_from(rec: Job, detached: bool, spec: JobSpec) -> LiveJob {
    LiveJob::new(rec.id, rec.tenant_id, job_kind(&rec.kind), detached, spec)
}

const INTERRUPTED_WAITING: &str = "interrupted: the server shut down before this job started";

/// What a waiting client hears when the server stops before its job runs.
pub(super) fn shutting_down() -> JobError {
    JobError::ShuttingDown("the server is shutting down; try again shortly".into())
}

/// The metrics label of an admission refusal.
pub(super) fn refusal_reason(e: &JobError) -> &'static str {
    match e {
        JobError::TooManyJobs { .. } => "concurrent_jobs",
        JobError::QueueFull(_) => "queue_full",
        _ => "shutting_down",
    }
}
