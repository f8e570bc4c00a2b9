//! The job system across processes, on the shared queue in the database
//! (`nanoimg_store::queue`):
//! - an **API node** (`role = api`) admits jobs against the database's counts, records them and
//!   watches them there: a poller per watched job turns status and progress into the same
//!   [`JobEvent`]s a local job emits, so handlers and event streams work unchanged (previews
//!   excepted: they stay on the worker);
//! - a **worker** (`role = worker`) claims jobs into its own queue while it has a free thread,
//!   heartbeats, reports progress, hears cancellations at each heartbeat, and finishes each job
//!   fenced by its claim; a job it no longer holds (presumed dead and handed on) keeps none of
//!   its outputs;
//! - both run the reaper, which hands a silent worker's jobs on or fails them with the reason.

use super::*;
use nanoimg_store::{StoreError, WORKER_LOST};

/// Failure codes a worker may record, so an API node can answer with the same one.
const CODES: &[&str] = &[
    "invalid_value",
    "invalid_image",
    "input_unavailable",
    "moderation_blocked",
    "model_unavailable",
    "shutting_down",
    "internal_error",
];

/// Starts what the role needs besides the HTTP routes.
pub(super) fn start(jobs: &Arc<Jobs>) {
    spawn_reaper(jobs.clone());
    if jobs.settings.role == Role::Worker {
        jobs.spawn_workers();
        spawn_feeder(jobs.clone());
        spawn_heartbeat(jobs.clone());
    }
}

fn spawn_reaper(jobs: Arc<Jobs>) {
    let q = jobs.settings.queue.clone();
    tokio::spawn(async move {
        let every = Duration::from_secs(q.heartbeat_secs.max(1));
        let timeout_ms = i64::try_from(q.worker_timeout_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        while !jobs.stopping() {
            match jobs
                .store
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

/// Claims jobs while a worker thread is free.
fn spawn_feeder(jobs: Arc<Jobs>) {
    tokio::spawn(async move {
        let idle = Duration::from_millis(jobs.settings.queue.poll_ms.max(10));
        loop {
            if jobs.stopping() {
                return;
            }
            let free = {
                let st = jobs.state.lock().expect("queue lock");
                st.queued + st.running < jobs.settings.workers
            };
            if !free {
                tokio::time::sleep(idle).await;
                continue;
            }
            match jobs.store.claim_job(jobs.worker_id()).await {
                Ok(Some(c)) => jobs.take_claim(c).await,
                Ok(None) => tokio::time::sleep(idle).await,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming a job failed");
                    tokio::time::sleep(idle * 4).await;
                }
            }
        }
    });
}

/// Says this worker is alive, and cancels the jobs whose cancellation was asked for, until the
/// last running job has ended after a shutdown.
fn spawn_heartbeat(jobs: Arc<Jobs>) {
    tokio::spawn(async move {
        let every = Duration::from_secs(jobs.settings.queue.heartbeat_secs.max(1));
        loop {
            match jobs.store.heartbeat(jobs.worker_id()).await {
                Ok(cancel) => {
                    let st = jobs.state.lock().expect("queue lock");
                    for id in cancel {
                        if let Some(job) = st.live.get(&id) {
                            job.cancel.cancel();
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "a heartbeat failed"),
            }
            if jobs.stopping() && jobs.depth() == (0, 0) {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
}

/// Writes a claimed job's progress to the queue for the API node, at most a few times a second
/// (and always its last step).
pub(super) struct ProgressReport<'a> {
    jobs: &'a Jobs,
    last: Mutex<Option<Instant>>,
}

impl<'a> ProgressReport<'a> {
    pub(super) fn new(jobs: &'a Jobs) -> Self {
        Self {
            jobs,
            last: Mutex::new(None),
        }
    }

    pub(super) fn step(&self, job: &LiveJob, p: &Progress<'_>) {
        {
            let mut last = self.last.lock().expect("progress clock");
            let due = last.is_none_or(|t| t.elapsed() >= Duration::from_millis(300));
            if !due && p.step < p.steps {
                return;
            }
            *last = Some(Instant::now());
        }
        let v = serde_json::json!({
            "image": p.image, "images": p.images, "step": p.step, "steps": p.steps,
        });
        let store = &self.jobs.store;
        if let Err(e) = self
            .jobs
            .rt
            .block_on(store.report_progress(self.jobs.worker_id(), &job.id, &v))
        {
            tracing::warn!(job = %job.id, error = %e, "reporting progress failed");
        }
    }
}

impl Jobs {
    /// This worker's name in the queue.
    pub(super) fn worker_id(&self) -> &str {
        self.settings.queue.worker_id.as_deref().unwrap_or("worker")
    }

    /// Queues a claimed job here; one that cannot be read fails, and one claimed as shutdown
    /// began goes back.
    async fn take_claim(&self, c: nanoimg_store::Claimed) {
        let (rec, attempt) = (c.job, c.attempt);
        let spec = match serde_json::from_value::<JobSpec>(rec.params.clone()) {
            Ok(spec) => spec,
            Err(e) => {
                let msg = format!("this worker cannot run the job: {e}");
                let _ = self
                    .store
                    .finish_claimed(
                        self.worker_id(),
                        attempt,
                        &rec.tenant_id,
                        &rec.id,
                        JobStatus::Failed,
                        Some(&serde_json::json!({"code": "internal_error"})),
                        Some(&msg),
                    )
                    .await;
                return;
            }
        };
        if self.stopping() {
            let _ = self.store.release_claim(self.worker_id(), attempt, &rec.id).await;
            return;
        }
        tracing::info!(job = %rec.id, attempt, "claimed");
        let mut job = LiveJob::new(rec.id, rec.tenant_id, job_kind(&rec.kind), rec.detached, spec);
        Arc::get_mut(&mut job).expect("a new job has one owner").attempt = Some(attempt);
        self.enqueue(job);
        self.wake.notify_one();
    }

    /// Records how a claimed job ended, if this worker still holds it. A job handed on
    /// meanwhile keeps none of this attempt's images; one interrupted by this worker's shutdown
    /// goes back to the queue.
    pub(super) fn finish_shared(
        &self,
        job: &LiveJob,
        status: JobStatus,
        event: &JobEvent,
        result: Option<&serde_json::Value>,
        error: Option<&str>,
    ) {
        let attempt = job.attempt.expect("a claimed job");
        let me = self.worker_id();
        if matches!(
            event,
            JobEvent::Failed {
                code: "shutting_down",
                ..
            }
        ) {
            if let Err(e) = self.rt.block_on(self.store.release_claim(me, attempt, &job.id)) {
                tracing::error!(job = %job.id, error = %e, "giving a job back to the queue failed");
            }
            return;
        }
        let recorded = self.rt.block_on(self.store.finish_claimed(
            me,
            attempt,
            &job.tenant_id,
            &job.id,
            status,
            result,
            error,
        ));
        match recorded {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(
                    job = %job.id,
                    attempt,
                    "this worker no longer holds the job (presumed lost and handed on); its images are discarded"
                );
                if let JobEvent::Succeeded(outs) = event {
                    let scoped = self.store.scoped(&job.tenant_id);
                    for o in outs.iter() {
                        let _ = self.rt.block_on(scoped.delete_asset(&o.asset.id));
                    }
                }
            }
            Err(e) => tracing::error!(job = %job.id, error = %e, "recording a finished job failed"),
        }
    }

    /// API node: admits a job against the shared queue's counts and records it for the workers.
    pub(super) async fn submit_shared(
        self: &Arc<Self>,
        owner: JobOwner<'_>,
        kind: JobKind,
        spec: JobSpec,
        detached: bool,
    ) -> Result<(Arc<LiveJob>, broadcast::Receiver<JobEvent>), ApiError> {
        if self.stopping() {
            return Err(self.refuse_shutting_down());
        }
        let active = self.store.active_jobs(owner.tenant_id).await?.len();
        if active >= owner.max_concurrent {
            return Err(self.refuse_concurrent(active, owner.max_concurrent));
        }
        let queued = usize::try_from(self.store.queue_depth().await?.0).unwrap_or(usize::MAX);
        if queued >= self.settings.queue_capacity {
            return Err(self.refuse_queue_full(queued));
        }
        let params = serde_json::to_value(&spec).map_err(ApiError::internal)?;
        let rec = self
            .store
            .scoped(owner.tenant_id)
            .insert_job(kind.as_str(), detached, Some(owner.key_id), params)
            .await?;
        let job = LiveJob::new(rec.id, owner.tenant_id.to_owned(), kind, detached, spec);
        let rx = job.subscribe();
        self.watch_job(job.clone());
        Ok((job, rx))
    }

    /// API node: the job, watched from here on, if it is still queued or running.
    pub(super) async fn watch_shared(self: &Arc<Self>, tenant_id: &str, id: &str) -> Option<Arc<LiveJob>> {
        if let Some(j) = self.live(tenant_id, id) {
            return Some(j);
        }
        let rec = self.store.scoped(tenant_id).job(id).await.ok()?;
        if rec.status.is_final() {
            return None;
        }
        let spec = serde_json::from_value::<JobSpec>(rec.params.clone()).ok()?;
        let job = LiveJob::new(rec.id, rec.tenant_id, job_kind(&rec.kind), rec.detached, spec);
        Some(self.watch_job(job))
    }

    /// Registers a job as live and polls its record until it is final, emitting its events.
    /// Two watchers of one job share the first.
    fn watch_job(self: &Arc<Self>, job: Arc<LiveJob>) -> Arc<LiveJob> {
        {
            let mut st = self.state.lock().expect("queue lock");
            if let Some(existing) = st.live.get(&job.id) {
                return existing.clone();
            }
            st.live.insert(job.id.clone(), job.clone());
        }
        let me = self.clone();
        let watched = job.clone();
        tokio::spawn(async move {
            me.poll_job(&watched).await;
            me.state.lock().expect("queue lock").live.remove(&watched.id);
        });
        job
    }

    async fn poll_job(&self, job: &LiveJob) {
        let every = Duration::from_millis(self.settings.queue.poll_ms.max(10));
        let scoped = self.store.scoped(&job.tenant_id);
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
                let now = self
                    .store
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
        let failed = |code: &'static str, message: String| JobEvent::Failed { code, message };
        match rec.status {
            JobStatus::Succeeded => {
                let scoped = self.store.scoped(&rec.tenant_id);
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
                        Err(e) => return failed("internal_error", format!("reading output {id}: {e}")),
                    }
                }
                JobEvent::Succeeded(Arc::new(outs))
            }
            JobStatus::Cancelled => JobEvent::Cancelled,
            _ => {
                let message = rec.error.clone().unwrap_or_else(|| "the job failed".into());
                let code = if message.starts_with(WORKER_LOST) {
                    "worker_lost"
                } else {
                    let recorded = rec.result.as_ref().and_then(|r| r["code"].as_str());
                    CODES
                        .iter()
                        .find(|c| Some(**c) == recorded)
                        .copied()
                        .unwrap_or("internal_error")
                };
                failed(code, message)
            }
        }
    }

    /// API node: asks for a job to stop. False when it is not queued or running.
    pub(super) async fn cancel_shared(&self, tenant_id: &str, id: &str) -> Result<bool, ApiError> {
        match self.store.scoped(tenant_id).job(id).await {
            Ok(rec) if !rec.status.is_final() => {
                self.store.request_cancel(tenant_id, id).await?;
                Ok(true)
            }
            Ok(_) | Err(StoreError::NotFound(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// API node: cancels every queued or running job of a tenant (erasure) and waits, up to
    /// 30 s, for the workers to stop them.
    pub(super) async fn stop_tenant_shared(&self, tenant_id: &str) -> usize {
        let ids = match self.store.active_jobs(tenant_id).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "listing an erased tenant's jobs failed");
                return 0;
            }
        };
        for id in &ids {
            if let Err(e) = self.store.request_cancel(tenant_id, id).await {
                tracing::warn!(job = %id, error = %e, "cancelling a job of an erased tenant");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline
            && self
                .store
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
