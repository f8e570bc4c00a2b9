//! The job system: a bounded queue that is fair between tenants, a pool of worker threads that
//! run the engine, and live event streams for each job.
//!
//! One owner: [`Jobs`] holds the queue, the live jobs and the counters under one lock, so
//! admission (per-tenant cap, global capacity) and dequeuing can never disagree. Job records in
//! the store are written at every transition, so a restart finds every job in a true state.
//!
//! With separate processes (`role = api` / `worker`, [`shared`]) the queue is the database's:
//! an API node records jobs and watches them there; a worker claims them into its own queue.

mod shared;

use crate::audit::Auditor;
use crate::conditioning;
use crate::config::{QueueConfig, Role};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::models::ModelCatalog;
use crate::spec::{JobKind, JobSpec, PlanSpec, SessionTarget};
use nanoimg_core::{ImageSize, Limits};
use nanoimg_edit::exec::{self, Painter};
use nanoimg_edit::EditError;
use nanoimg_engine::codec::{self, DecodeLimits};
use nanoimg_engine::{
    CancelToken, EngineError, GenerateRequest, GeneratedImage, InitImage, Progress, ProgressSink,
    StableDiffusion,
};
use nanoimg_safety::nsfw::NsfwClassifier;
use nanoimg_safety::provenance::{Origin, Provenance};
use nanoimg_safety::watermark::Watermarker;
use nanoimg_store::{Asset, AuditEvent, Job, JobStatus, NewAsset, NewVersion, Outcome, Store};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::broadcast;

/// An image a job produced: its record and its encoded bytes.
#[derive(Debug, Clone)]
pub struct Output {
    pub asset: Asset,
    pub bytes: Arc<Vec<u8>>,
    pub seed: u64,
    /// Tokens in the prompt and negative prompt (for `usage`).
    pub text_tokens: usize,
    /// The edit-session version this image became, for session instructions.
    pub version: Option<String>,
}

/// What a job's watchers hear.
#[derive(Debug, Clone)]
pub enum JobEvent {
    Started,
    Progress {
        image: usize,
        images: usize,
        step: usize,
        steps: usize,
        /// A cheap low-resolution look at the current estimate.
        preview: Option<Arc<image::RgbImage>>,
    },
    Succeeded(Arc<Vec<Output>>),
    Failed {
        code: &'static str,
        message: String,
    },
    Cancelled,
}

/// The kind a job record names.
fn job_kind(kind: &str) -> JobKind {
    match kind {
        "edit" => JobKind::Edit,
        "variation" => JobKind::Variation,
        _ => JobKind::Generation,
    }
}

impl JobEvent {
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            JobEvent::Succeeded(_) | JobEvent::Failed { .. } | JobEvent::Cancelled
        )
    }
}

/// A job the server is holding: queued or running.
pub struct LiveJob {
    pub id: String,
    pub tenant_id: String,
    pub kind: JobKind,
    pub detached: bool,
    pub spec: JobSpec,
    cancel: CancelToken,
    events: broadcast::Sender<JobEvent>,
    /// The input image's stored file and media type, once the worker has read it: the C2PA
    /// parent of every image (and partial image) the job makes.
    input: OnceLock<(Arc<Vec<u8>>, String)>,
    /// The attempt, for a job this worker claimed from the shared queue.
    attempt: Option<i64>,
}

impl LiveJob {
    fn new(id: String, tenant_id: String, kind: JobKind, detached: bool, spec: JobSpec) -> Arc<Self> {
        Arc::new(Self {
            id,
            tenant_id,
            kind,
            detached,
            spec,
            cancel: CancelToken::new(),
            events: broadcast::channel(64).0,
            input: OnceLock::new(),
            attempt: None,
        })
    }

    /// How this job's images came to be, for their C2PA manifest.
    pub fn origin(&self) -> Origin<'_> {
        match self.input.get() {
            Some((bytes, media_type)) => Origin::Edited {
                input: bytes,
                input_media_type: media_type,
            },
            None => Origin::Created,
        }
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.events.subscribe()
    }

    fn emit(&self, e: JobEvent) {
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(e);
    }
}

#[derive(Default)]
struct QueueState {
    waiting: HashMap<String, VecDeque<Arc<LiveJob>>>,
    /// Tenants with waiting jobs, in round-robin order.
    turn: VecDeque<String>,
    queued: usize,
    running: usize,
    /// Queued + running, per tenant.
    active: HashMap<String, usize>,
    live: HashMap<String, Arc<LiveJob>>,
    stopping: bool,
    /// Set when the grace period is over: running jobs are being cancelled.
    aborting: bool,
}

impl QueueState {
    fn push(&mut self, job: Arc<LiveJob>) {
        let q = self.waiting.entry(job.tenant_id.clone()).or_default();
        if q.is_empty() {
            self.turn.push_back(job.tenant_id.clone());
        }
        q.push_back(job);
    }

    /// The next job, taking tenants in turn.
    fn pop(&mut self) -> Option<Arc<LiveJob>> {
        let tenant = self.turn.pop_front()?;
        let q = self.waiting.get_mut(&tenant)?;
        let job = q.pop_front();
        if q.is_empty() {
            self.waiting.remove(&tenant);
        } else {
            self.turn.push_back(tenant);
        }
        job
    }

    fn remove_waiting(&mut self, id: &str, tenant: &str) -> Option<Arc<LiveJob>> {
        let q = self.waiting.get_mut(tenant)?;
        let i = q.iter().position(|j| j.id == id)?;
        let job = q.remove(i);
        if q.is_empty() {
            self.waiting.remove(tenant);
            self.turn.retain(|t| t != tenant);
        }
        job
    }

    fn release(&mut self, tenant: &str) {
        if let Some(n) = self.active.get_mut(tenant) {
            *n -= 1;
            if *n == 0 {
                self.active.remove(tenant);
            }
        }
    }
}

/// Who submits a job, and how many jobs their tenant may have queued or running at once.
#[derive(Debug, Clone, Copy)]
pub struct JobOwner<'a> {
    pub tenant_id: &'a str,
    pub key_id: &'a str,
    pub max_concurrent: usize,
}

/// Settings the job system needs.
#[derive(Clone)]
pub struct JobSettings {
    pub workers: usize,
    pub queue_capacity: usize,
    pub limits: Limits,
    pub upload_limits: DecodeLimits,
    /// The image safety layer: every output (and every preview sent) passes it first.
    pub image_check: Option<Arc<NsfwClassifier>>,
    /// For refusals the workers make.
    pub audit: Auditor,
    /// Marks every output before it is encoded.
    pub watermark: Arc<Watermarker>,
    /// Signs every output once it is encoded.
    pub provenance: Arc<Provenance>,
    /// Whether jobs run here, on workers elsewhere, or here from the shared queue.
    pub role: Role,
    /// The shared queue's timing and this worker's name.
    pub queue: QueueConfig,
}

impl JobSettings {
    /// Marks `img` with `mark`, encodes it (with `text` chunks where the format has them) and
    /// signs it with a C2PA manifest. Signing is last: a re-encode would strip the manifest.
    pub fn seal(
        &self,
        img: &mut image::RgbImage,
        spec: &JobSpec,
        mark: u64,
        text: &[(&str, String)],
        origin: Origin<'_>,
    ) -> Result<Vec<u8>, String> {
        self.watermark.embed(img, mark);
        let format = spec.output_format;
        let bytes = codec::encode(img, format, spec.output_compression, text).map_err(|e| e.to_string())?;
        self.provenance
            .sign(&bytes, format.media_type(), origin, &spec.model)
            .map_err(|e| e.to_string())
    }
}

/// Previews per image that are checked and sent when the image layer is on (each check costs
/// one open_nsfw run); unchecked previews are never sent.
const CHECKED_PREVIEWS: usize = 4;

/// The queue, the workers and the live jobs.
pub struct Jobs {
    state: Mutex<QueueState>,
    wake: Condvar,
    store: Store,
    catalog: Arc<ModelCatalog>,
    metrics: Arc<Metrics>,
    settings: JobSettings,
    rt: Handle,
    workers: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Jobs {
    /// Starts the workers, after putting back the jobs a previous run left waiting.
    pub async fn start(
        store: Store,
        catalog: Arc<ModelCatalog>,
        metrics: Arc<Metrics>,
        settings: JobSettings,
    ) -> Result<Arc<Self>, nanoimg_store::StoreError> {
        let jobs = Arc::new(Self {
            state: Mutex::new(QueueState::default()),
            wake: Condvar::new(),
            store: store.clone(),
            catalog,
            metrics,
            settings,
            rt: Handle::current(),
            workers: Mutex::new(Vec::new()),
        });
        if jobs.settings.role != Role::All {
            shared::start(&jobs);
            return Ok(jobs);
        }
        let recovery = store.recover_jobs().await?;
        if recovery.failed > 0 {
            tracing::warn!(
                jobs = recovery.failed,
                "jobs interrupted by the last shutdown marked failed"
            );
        }
        for rec in recovery.requeue {
            match serde_json::from_value::<JobSpec>(rec.params.clone()) {
                Ok(spec) => jobs.requeue(rec, spec),
                Err(e) => {
                    let msg = format!("cannot resume this job after a restart: {e}");
                    store
                        .job_finished(&rec.tenant_id, &rec.id, JobStatus::Failed, None, Some(&msg))
                        .await?;
                }
            }
        }
        jobs.spawn_workers();
        Ok(jobs)
    }

    /// Starts the worker threads.
    fn spawn_workers(self: &Arc<Self>) {
        let jobs = self;
        let mut handles = jobs.workers.lock().expect("workers lock");
        for i in 0..jobs.settings.workers {
            let me = jobs.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("nanoimg-worker-{i}"))
                    .spawn(move || me.work())
                    .expect("spawning a worker thread"),
            );
        }
    }

    fn requeue(&self, rec: Job, spec: JobSpec) {
        let job = LiveJob::new(rec.id, rec.tenant_id, job_kind(&rec.kind), true, spec);
        self.enqueue(job);
    }

    /// Puts a job this process will run in the local queue.
    fn enqueue(&self, job: Arc<LiveJob>) {
        let mut st = self.state.lock().expect("queue lock");
        *st.active.entry(job.tenant_id.clone()).or_default() += 1;
        st.queued += 1;
        st.live.insert(job.id.clone(), job.clone());
        st.push(job);
        self.metrics.queue_depth.set(st.queued as i64);
    }

    /// Admits a job: checks the tenant's cap and the queue's capacity, records it, queues it.
    /// The returned job can be watched; subscribe before anything can happen to it.
    pub async fn submit(
        self: &Arc<Self>,
        owner: JobOwner<'_>,
        kind: JobKind,
        spec: JobSpec,
        detached: bool,
    ) -> Result<(Arc<LiveJob>, broadcast::Receiver<JobEvent>), ApiError> {
        if self.settings.role == Role::Api {
            return self.submit_shared(owner, kind, spec, detached).await;
        }
        let (tenant_id, key_id) = (owner.tenant_id, owner.key_id);
        {
            let mut st = self.state.lock().expect("queue lock");
            if st.stopping {
                return Err(self.refuse_shutting_down());
            }
            let active = st.active.get(tenant_id).copied().unwrap_or(0);
            if active >= owner.max_concurrent {
                return Err(self.refuse_concurrent(active, owner.max_concurrent));
            }
            if st.queued >= self.settings.queue_capacity {
                return Err(self.refuse_queue_full(st.queued));
            }
            // Reserve the slot before the await, so concurrent admissions cannot overshoot.
            *st.active.entry(tenant_id.to_owned()).or_default() += 1;
            st.queued += 1;
        }
        let params = serde_json::to_value(&spec).map_err(ApiError::internal)?;
        let rec = self
            .store
            .scoped(tenant_id)
            .insert_job(kind.as_str(), detached, Some(key_id), params)
            .await;
        let (job, rx, stopped) = {
            let mut st = self.state.lock().expect("queue lock");
            let rec = match rec {
                Ok(r) => r,
                Err(e) => {
                    st.queued -= 1;
                    st.release(tenant_id);
                    return Err(e.into());
                }
            };
            let job = LiveJob::new(rec.id, tenant_id.to_owned(), kind, detached, spec);
            let rx = job.subscribe();
            if st.stopping {
                // Shutdown began while the job was being recorded: it missed the shutdown's
                // sweep of the queue, and no worker will take it now.
                st.queued -= 1;
                st.release(tenant_id);
            } else {
                st.live.insert(job.id.clone(), job.clone());
                st.push(job.clone());
                self.metrics.queue_depth.set(st.queued as i64);
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
        let msg = "interrupted: the server shut down before this job started";
        let _ = self
            .store
            .job_finished(&job.tenant_id, &job.id, JobStatus::Failed, None, Some(msg))
            .await;
        Err(self.refuse_shutting_down())
    }

    fn refuse_shutting_down(&self) -> ApiError {
        self.metrics.reject("shutting_down");
        ApiError::overloaded(
            "shutting_down",
            "the server is shutting down; try again shortly",
            5,
        )
    }

    fn refuse_concurrent(&self, active: usize, max: usize) -> ApiError {
        self.metrics.reject("concurrent_jobs");
        ApiError::rate_limited(
            "concurrent_jobs_exceeded",
            format!("this account already has {active} jobs queued or running; the limit is {max}"),
            2.0,
        )
    }

    fn refuse_queue_full(&self, queued: usize) -> ApiError {
        self.metrics.reject("queue_full");
        ApiError::overloaded(
            "queue_full",
            format!("the server's queue is full ({queued} jobs waiting); try again shortly"),
            5,
        )
    }

    /// The live job with this id, if it belongs to `tenant_id` and is queued or running.
    pub fn live(&self, tenant_id: &str, id: &str) -> Option<Arc<LiveJob>> {
        let st = self.state.lock().expect("queue lock");
        st.live.get(id).filter(|j| j.tenant_id == tenant_id).cloned()
    }

    /// The live job to stream events of: one this process holds, or on an API node any job
    /// still queued or running in the shared queue (watched from now on).
    pub async fn watch(self: &Arc<Self>, tenant_id: &str, id: &str) -> Option<Arc<LiveJob>> {
        if self.settings.role == Role::Api {
            return self.watch_shared(tenant_id, id).await;
        }
        self.live(tenant_id, id)
    }

    /// Cancels a job: a waiting one is removed at once, a running one stops at its next step.
    /// Returns false if the job is not live (unknown, another tenant's, or already final).
    pub async fn cancel(&self, tenant_id: &str, id: &str) -> Result<bool, ApiError> {
        if self.settings.role == Role::Api {
            return self.cancel_shared(tenant_id, id).await;
        }
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
                    self.metrics.queue_depth.set(st.queued as i64);
                    Some(j)
                }
                None => {
                    job.cancel.cancel();
                    None
                }
            }
        };
        if let Some(job) = removed {
            self.store
                .job_finished(
                    tenant_id,
                    id,
                    JobStatus::Cancelled,
                    None,
                    Some("cancelled by the client"),
                )
                .await?;
            self.count(job.kind, "cancelled");
            job.emit(JobEvent::Cancelled);
        }
        Ok(true)
    }

    /// Cancels every live job of a tenant (erasure) and waits, up to 30 s, for the running ones
    /// to stop, so none writes after. Returns how many were cancelled.
    pub async fn stop_tenant(&self, tenant_id: &str) -> usize {
        if self.settings.role == Role::Api {
            return self.stop_tenant_shared(tenant_id).await;
        }
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
                tracing::warn!(job = %id, error = ?e, "cancelling a job of an erased tenant");
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !live_ids(&self.state.lock().expect("queue lock")).is_empty()
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ids.len()
    }

    /// The settings outputs are sealed with (for partial images, which the handlers send).
    pub fn settings(&self) -> &JobSettings {
        &self.settings
    }

    /// True once shutdown has begun.
    pub fn stopping(&self) -> bool {
        self.state.lock().expect("queue lock").stopping
    }

    /// Jobs waiting and running now.
    pub fn depth(&self) -> (usize, usize) {
        let st = self.state.lock().expect("queue lock");
        (st.queued, st.running)
    }

    /// Stops taking work: waiting jobs whose client waits on the connection fail now (detached
    /// ones stay queued in the store and resume at the next start); running jobs get `grace` to
    /// finish, then are cancelled and recorded as failed. Returns when the workers have stopped.
    pub async fn shutdown(self: &Arc<Self>, grace: Duration) {
        if self.settings.role == Role::Api {
            // The jobs belong to the workers; only this node's watchers stop.
            self.state.lock().expect("queue lock").stopping = true;
            return;
        }
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
            self.metrics.queue_depth.set(0);
            out
        };
        self.wake.notify_all();
        for job in dropped {
            if let Some(attempt) = job.attempt {
                // Back to the shared queue, for another worker.
                let _ = self.store.release_claim(self.worker_id(), attempt, &job.id).await;
                continue;
            }
            if job.detached {
                // Still `queued` in the store: picked up again at the next start.
                continue;
            }
            let msg = "interrupted: the server shut down before this job started";
            let _ = self
                .store
                .job_finished(&job.tenant_id, &job.id, JobStatus::Failed, None, Some(msg))
                .await;
            job.emit(JobEvent::Failed {
                code: "shutting_down",
                message: msg.into(),
            });
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
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }

    fn count(&self, kind: JobKind, outcome: &str) {
        self.metrics
            .jobs
            .get_or_create(&vec![
                ("kind", kind.as_str().to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    }

    /// A worker thread: takes jobs until the server stops.
    fn work(self: Arc<Self>) {
        loop {
            let job = {
                let mut st = self.state.lock().expect("queue lock");
                loop {
                    if st.stopping {
                        return;
                    }
                    if let Some(j) = st.pop() {
                        st.queued -= 1;
                        st.running += 1;
                        self.metrics.queue_depth.set(st.queued as i64);
                        self.metrics.jobs_running.set(st.running as i64);
                        break j;
                    }
                    st = self.wake.wait(st).expect("queue lock");
                }
            };
            let outcome = self.run(&job);
            let (status, event, error) = match outcome {
                Ok(outputs) => (JobStatus::Succeeded, JobEvent::Succeeded(Arc::new(outputs)), None),
                Err(RunError::Cancelled) if self.state.lock().expect("queue lock").aborting => {
                    let msg = "interrupted: the server shut down while this job was running";
                    (
                        JobStatus::Failed,
                        JobEvent::Failed {
                            code: "shutting_down",
                            message: msg.into(),
                        },
                        Some(msg.to_owned()),
                    )
                }
                Err(RunError::Cancelled) => (
                    JobStatus::Cancelled,
                    JobEvent::Cancelled,
                    Some("cancelled by the client".to_owned()),
                ),
                Err(RunError::Failed { code, message }) => (
                    JobStatus::Failed,
                    JobEvent::Failed {
                        code,
                        message: message.clone(),
                    },
                    Some(message),
                ),
            };
            let result = match &event {
                JobEvent::Succeeded(outs) => Some(serde_json::json!({
                    "images": outs.iter().map(|o| {
                        let mut item = serde_json::json!({
                            "id": o.asset.id, "seed": o.seed, "text_tokens": o.text_tokens,
                        });
                        if let Some(v) = &o.version {
                            item["version"] = v.clone().into();
                        }
                        item
                    }).collect::<Vec<_>>(),
                })),
                // The code, for an API node that reads the outcome from the store.
                JobEvent::Failed { code, .. } if job.attempt.is_some() => {
                    Some(serde_json::json!({"code": code}))
                }
                _ => None,
            };
            if job.attempt.is_some() {
                self.finish_shared(&job, status, &event, result.as_ref(), error.as_deref());
            } else if let Err(e) = self.rt.block_on(self.store.job_finished(
                &job.tenant_id,
                &job.id,
                status,
                result.as_ref(),
                error.as_deref(),
            )) {
                tracing::error!(job = %job.id, error = %e, "recording a finished job failed");
            }
            self.count(job.kind, status.as_str());
            {
                let mut st = self.state.lock().expect("queue lock");
                st.running -= 1;
                st.release(&job.tenant_id);
                st.live.remove(&job.id);
                self.metrics.jobs_running.set(st.running as i64);
            }
            job.emit(event);
            if job.attempt.is_some() {
                // A slot is free: the feeder may claim the next job.
                self.wake.notify_all();
            }
        }
    }

    fn run(&self, job: &LiveJob) -> Result<Vec<Output>, RunError> {
        // A claimed job is running already (the claim said so).
        let started = job.attempt.is_some()
            || self
                .rt
                .block_on(self.store.job_started(&job.id))
                .map_err(RunError::internal)?;
        if !started {
            return Err(RunError::Cancelled);
        }
        job.emit(JobEvent::Started);
        let spec = &job.spec;
        let base = self.catalog.load(&spec.model).map_err(|m| RunError::Failed {
            code: "model_unavailable",
            message: m,
        })?;
        let sources = conditioning::Sources {
            store: &self.store,
            rt: &self.rt,
            catalog: &self.catalog,
            upload_limits: &self.settings.upload_limits,
        };
        let conditioning::Conditioned { model, reference } =
            conditioning::prepare(&sources, &job.tenant_id, spec, base)
                .map_err(|(code, message)| RunError::Failed { code, message })?;
        // The mark an edit's input carried, taken out before the edit so the output carries
        // one mark (its own), not a new one over what survives of the old.
        let mut replaced_mark = None;
        let init = match &spec.init {
            None => None,
            Some(init) => {
                type Read = (image::DynamicImage, (Arc<Vec<u8>>, String));
                let read = |id: &str, param: &'static str| -> Result<Read, RunError> {
                    let (asset, bytes) = self
                        .rt
                        .block_on(self.store.scoped(&job.tenant_id).asset_bytes(id))
                        .map_err(|e| RunError::Failed {
                            code: "input_unavailable",
                            message: format!("{param}: {e}"),
                        })?;
                    let img = codec::decode(&bytes, &self.settings.upload_limits, param).map_err(|e| {
                        RunError::Failed {
                            code: "invalid_image",
                            message: e.to_string(),
                        }
                    })?;
                    Ok((img, (Arc::new(bytes), asset.media_type)))
                };
                let (image, input) = read(&init.image, "image")?;
                let _ = job.input.set(input);
                let mut image = image.to_rgb8();
                replaced_mark = self.settings.watermark.unmark(&mut image);
                let mask = match &init.mask {
                    Some(m) => Some(codec::mask_from(&read(m, "mask")?.0)),
                    None => None,
                };
                Some(InitImage {
                    image,
                    strength: init.strength,
                    mask,
                })
            }
        };
        let sink = EventSink {
            job,
            // A claimed job's watchers are on the API node, which previews do not reach.
            previews: job.attempt.is_none() && (job.detached || spec.partial_images > 0),
            check: self.settings.image_check.as_deref(),
            sent: Mutex::new((0, 0)),
            report: job.attempt.map(|_| shared::ProgressReport::new(self)),
        };
        let images = match (&spec.plan, init) {
            (Some(p), Some(init)) => {
                let mut images = Vec::with_capacity(spec.n as usize);
                for i in 0..u64::from(spec.n) {
                    let seed = spec.seed.wrapping_add(i);
                    let mut painter = JobPainter {
                        model: &model,
                        spec,
                        limits: &self.settings.limits,
                        sink: &sink,
                        cancel: &job.cancel,
                        reference: reference.clone(),
                        seed,
                        passes: 0,
                    };
                    let image = exec::run(
                        &p.plan,
                        init.image.clone(),
                        init.mask.as_ref(),
                        &mut painter,
                        |_, _| {},
                    )?;
                    images.push(GeneratedImage { image, seed });
                }
                images
            }
            (Some(_), None) => {
                return Err(RunError::internal("an edit plan without an image to edit"));
            }
            (None, init) => {
                let req = GenerateRequest {
                    prompt: spec.model_prompt(&spec.prompt),
                    negative_prompt: spec.negative_prompt.clone(),
                    size: spec.size,
                    steps: spec.steps,
                    guidance: spec.guidance,
                    scheduler: spec.scheduler,
                    seed: spec.seed,
                    n: spec.n,
                    init,
                    reference: reference.clone(),
                    hooks: None,
                };
                model
                    .generate(&req, &self.settings.limits, &sink, &job.cancel)
                    .map_err(engine_error)?
            }
        };
        self.check_outputs(job, &images)?;
        let text_tokens = model.prompt_tokens(&spec.prompt) + model.prompt_tokens(&spec.negative_prompt);
        let format = spec.output_format;
        let mut outputs = Vec::with_capacity(images.len());
        for (i, mut img) in images.into_iter().enumerate() {
            // The mark's payload is a random id, not derived from the tenant: the asset's
            // metadata keeps it, so the operator can trace a found mark to its generation.
            let mark = getrandom::u64().map_err(RunError::internal)?;
            let mut params = serde_json::json!({
                "model": spec.model, "prompt": spec.prompt, "negative_prompt": spec.negative_prompt,
                "size": format!("{}x{}", img.image.width(), img.image.height()),
                "steps": spec.steps, "guidance": spec.guidance,
                "scheduler": spec.scheduler.to_string(), "seed": img.seed, "index": i,
                "watermark": format!("{mark:016x}"),
                "replaced_watermark": replaced_mark.map(|m| format!("{m:016x}")),
            });
            if let Some(p) = &spec.plan {
                params["instruction"] = p.instruction.clone().into();
                params["plan"] = serde_json::to_value(&p.plan).map_err(RunError::internal)?;
            }
            let bytes = self
                .settings
                .seal(
                    &mut img.image,
                    spec,
                    mark,
                    &[("nanoimg", params.to_string())],
                    job.origin(),
                )
                .map_err(RunError::internal)?;
            let asset = self
                .rt
                .block_on(self.store.scoped(&job.tenant_id).put_asset(
                    NewAsset {
                        kind: "output",
                        media_type: format.media_type().into(),
                        width: img.image.width(),
                        height: img.image.height(),
                        job_id: Some(job.id.clone()),
                        metadata: params,
                    },
                    &bytes,
                ))
                .map_err(RunError::internal)?;
            let version = match spec
                .plan
                .as_ref()
                .and_then(|p| p.session.as_ref().map(|t| (p, t)))
            {
                Some((p, target)) => Some(self.add_version(job, p, target, &asset.id)?),
                None => None,
            };
            outputs.push(Output {
                asset,
                bytes: Arc::new(bytes),
                seed: img.seed,
                text_tokens,
                version,
            });
        }
        Ok(outputs)
    }
}

impl Jobs {
    /// Records an edit-session instruction's result as the session's new head. If the session is
    /// gone (deleted while the job ran), the image is deleted too and the job fails.
    fn add_version(
        &self,
        job: &LiveJob,
        plan: &PlanSpec,
        target: &SessionTarget,
        asset_id: &str,
    ) -> Result<String, RunError> {
        let scoped = self.store.scoped(&job.tenant_id);
        let added = self.rt.block_on(scoped.add_version(
            &target.session_id,
            NewVersion {
                parent_id: target.parent_version.clone(),
                asset_id: asset_id.to_owned(),
                instruction: plan.instruction.clone(),
                plan: serde_json::to_value(&plan.plan).map_err(RunError::internal)?,
                job_id: Some(job.id.clone()),
            },
        ));
        match added {
            Ok(v) => Ok(v.id),
            Err(e) => {
                let _ = self.rt.block_on(scoped.delete_asset(asset_id));
                Err(match e {
                    nanoimg_store::StoreError::NotFound(what) => RunError::Failed {
                        code: "input_unavailable",
                        message: format!("the edit session's {what} was deleted while the edit ran"),
                    },
                    e => RunError::internal(e),
                })
            }
        }
    }

    /// The image layer on every output, before anything is encoded or stored: one refused image
    /// fails the whole job (its siblings came from the same prompt), and nothing is kept.
    fn check_outputs(&self, job: &LiveJob, images: &[GeneratedImage]) -> Result<(), RunError> {
        let Some(c) = &self.settings.image_check else {
            return Ok(());
        };
        for (i, img) in images.iter().enumerate() {
            let v = c
                .check(&image::DynamicImage::ImageRgb8(img.image.clone()))
                .map_err(RunError::internal)?;
            if !v.blocked {
                continue;
            }
            self.metrics.reject("moderation");
            self.settings.audit.record_later(AuditEvent {
                request_id: None,
                tenant_id: Some(job.tenant_id.clone()),
                key_id: None,
                action: "moderation.blocked",
                target: Some(job.id.clone()),
                outcome: Outcome::Rejected,
                detail: serde_json::json!({
                    "layer": "image", "input": "output", "index": i, "categories": ["sexual"],
                    "score": v.score, "threshold": v.threshold,
                }),
            });
            return Err(RunError::Failed {
                code: "moderation_blocked",
                message: format!(
                    "a generated image was refused by NanoImg's safety system (sexual: image layer \
                     score {:.2}, threshold {:.2}); nothing was stored",
                    v.score, v.threshold
                ),
            });
        }
        Ok(())
    }
}

enum RunError {
    Cancelled,
    Failed { code: &'static str, message: String },
}

impl From<EditError> for RunError {
    fn from(e: EditError) -> Self {
        RunError::Failed {
            code: "invalid_value",
            message: e.to_string(),
        }
    }
}

fn engine_error(e: EngineError) -> RunError {
    match e {
        EngineError::Cancelled => RunError::Cancelled,
        EngineError::InvalidParam(p) => RunError::Failed {
            code: "invalid_value",
            message: p.to_string(),
        },
        e => RunError::internal(e),
    }
}

/// A plan's generative operations on the job's model and settings: one model pass each, with
/// its own seed, reporting progress and honouring cancellation like any job.
struct JobPainter<'a> {
    model: &'a StableDiffusion,
    spec: &'a JobSpec,
    limits: &'a Limits,
    sink: &'a EventSink<'a>,
    cancel: &'a CancelToken,
    reference: Option<Arc<nanoimg_engine::reference::Reference>>,
    seed: u64,
    passes: u64,
}

impl Painter for JobPainter<'_> {
    type Error = RunError;

    fn drawable(&self, w: u32, h: u32) -> (u32, u32) {
        let l = self.limits;
        exec::fit_size(w, h, l.min_side, l.max_side, l.max_pixels)
    }

    fn paint(
        &mut self,
        img: &image::RgbImage,
        prompt: &str,
        strength: f64,
        mask: Option<&image::GrayImage>,
    ) -> Result<image::RgbImage, RunError> {
        let req = GenerateRequest {
            prompt: self.spec.model_prompt(prompt),
            negative_prompt: self.spec.negative_prompt.clone(),
            size: ImageSize::new(img.width(), img.height()),
            steps: self.spec.steps,
            guidance: self.spec.guidance,
            scheduler: self.spec.scheduler,
            seed: self.seed.wrapping_add(self.passes << 32),
            n: 1,
            init: Some(InitImage {
                image: img.clone(),
                strength,
                mask: mask.cloned(),
            }),
            reference: self.reference.clone(),
            hooks: None,
        };
        self.passes += 1;
        self.model
            .validate(&req, self.limits)
            .map_err(|p| RunError::Failed {
                code: "invalid_value",
                message: format!("a generative step of the plan: {p}"),
            })?;
        let out = self
            .model
            .generate(&req, self.limits, self.sink, self.cancel)
            .map_err(engine_error)?;
        out.into_iter()
            .next()
            .map(|g| g.image)
            .ok_or_else(|| RunError::internal("the model returned no image"))
    }
}

impl RunError {
    fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "job failed");
        RunError::Failed {
            code: "internal_error",
            message: format!("the job failed: {e}"),
        }
    }
}

struct EventSink<'a> {
    job: &'a LiveJob,
    previews: bool,
    /// With the image layer on, only previews it passed are sent.
    check: Option<&'a NsfwClassifier>,
    /// (image, previews checked for it).
    sent: Mutex<(usize, usize)>,
    /// For a claimed job: progress written to the shared queue, for the API node.
    report: Option<shared::ProgressReport<'a>>,
}

impl EventSink<'_> {
    /// The preview to send with this step, if any: every one without the image layer; with it,
    /// [`CHECKED_PREVIEWS`] evenly spaced ones that pass.
    fn preview(&self, p: &Progress<'_>) -> Option<Arc<image::RgbImage>> {
        let img = p.preview?;
        let Some(c) = self.check else {
            return Some(Arc::new(img.clone()));
        };
        {
            let mut sent = self.sent.lock().expect("preview count");
            if sent.0 != p.image {
                *sent = (p.image, 0);
            }
            if p.step * CHECKED_PREVIEWS < p.steps * (sent.1 + 1) {
                return None;
            }
            sent.1 += 1;
        }
        let dynamic = image::DynamicImage::ImageRgb8(img.clone());
        match c.check(&dynamic) {
            Ok(v) if !v.blocked => Some(Arc::new(dynamic.into_rgb8())),
            _ => None,
        }
    }
}

impl ProgressSink for EventSink<'_> {
    fn on_step(&self, p: &Progress<'_>) {
        if let Some(r) = &self.report {
            r.step(self.job, p);
        }
        self.job.emit(JobEvent::Progress {
            image: p.image,
            images: p.images,
            step: p.step,
            steps: p.steps,
            preview: self.preview(p),
        });
    }

    fn wants_preview(&self) -> bool {
        self.previews
    }
}
