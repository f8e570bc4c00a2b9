//! Jobs, from admission to the final event. Follow one generation in this order:
//!
//! 1. [`queue`] — [`JobQueue`] (with [`fair`], the round-robin state): admission (the tenant's cap and the queue's capacity, one
//!    decision) and the queue itself, `Local` (fair between tenants, in memory: the `all` and
//!    `worker` roles) or `Shared` (the database's: an API node). No other module branches on
//!    the role.
//! 2. [`worker`] — the worker tasks of a local queue: take the next job, run it, record the end.
//! 3. [`pipeline`] — one job, as async steps: fetch inputs → engine (on a blocking thread, tensors
//!    only) → check outputs → seal → store.
//! 4. [`shared`] — what the roles `api` and `worker` add: an API node's watchers, a worker's
//!    feeder, heartbeat and progress reports, the reaper.
//!
//! Watchers hear [`JobEvent`]s; a failure is a [`JobError`], made into an HTTP error once.

mod conditioning;
mod error;
mod fair;
mod pipeline;
mod queue;
mod shared;
mod worker;

pub use error::JobError;
pub(crate) use pipeline::record as output_record;
pub use queue::JobQueue;

use crate::audit::Auditor;
use crate::config::{QueueConfig, Role};
use crate::metrics::Metrics;
use crate::models::ModelCatalog;
use crate::spec::{JobKind, JobSpec};
use nanoimg_core::Limits;
use nanoimg_engine::codec::DecodeLimits;
use nanoimg_engine::CancelToken;
use nanoimg_safety::nsfw::NsfwClassifier;
use nanoimg_safety::provenance::Origin;
use nanoimg_safety::seal::Sealer;
use nanoimg_store::{Asset, Store};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
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
    Failed(JobError),
    Cancelled,
}

impl JobEvent {
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            JobEvent::Succeeded(_) | JobEvent::Failed(_) | JobEvent::Cancelled
        )
    }

    /// The final outcome this event stands for; `None` before the end.
    pub fn outcome(&self) -> Option<Result<Arc<Vec<Output>>, JobError>> {
        match self {
            JobEvent::Succeeded(o) => Some(Ok(o.clone())),
            JobEvent::Failed(e) => Some(Err(e.clone())),
            JobEvent::Cancelled => Some(Err(JobError::Cancelled)),
            _ => None,
        }
    }
}

/// The kind a job record names.
fn job_kind(kind: &str) -> JobKind {
    match kind {
        "edit" => JobKind::Edit,
        "variation" => JobKind::Variation,
        _ => JobKind::Generation,
    }
}

/// A job the server is holding: queued, running, or (on an API node) watched.
pub struct LiveJob {
    pub id: String,
    pub tenant_id: String,
    pub kind: JobKind,
    pub detached: bool,
    pub spec: JobSpec,
    cancel: CancelToken,
    events: broadcast::Sender<JobEvent>,
    /// The input image's stored file and media type, once the pipeline has read it: the C2PA
    /// parent of every image (and partial image) the job makes.
    input: OnceLock<(Arc<Vec<u8>>, String)>,
    /// The attempt, for a job this worker claimed from the shared queue.
    attempt: Option<i64>,
    /// Set when the job ran past its time limit and was stopped (its cancellation is then a
    /// failure, `job_timeout`).
    timed_out: std::sync::atomic::AtomicBool,
    /// The last progress heard: (image, images, step, steps).
    latest: std::sync::Mutex<Option<(usize, usize, usize, usize)>>,
}

impl LiveJob {
    fn new(id: String, tenant_id: String, kind: JobKind, detached: bool, spec: JobSpec) -> Self {
        Self {
            id,
            tenant_id,
            kind,
            detached,
            spec,
            cancel: CancelToken::new(),
            events: broadcast::channel(64).0,
            input: OnceLock::new(),
            attempt: None,
            timed_out: std::sync::atomic::AtomicBool::new(false),
            latest: std::sync::Mutex::new(None),
        }
    }

    /// The last progress the job reported: (image, images, step, steps).
    pub fn progress(&self) -> Option<(usize, usize, usize, usize)> {
        *self.latest.lock().unwrap_or_else(|p| p.into_inner())
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
        if let JobEvent::Progress {
            image,
            images,
            step,
            steps,
            ..
        } = &e
        {
            *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some((*image, *images, *step, *steps));
        }
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(e);
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
    /// Marks, encodes and signs every output and partial image.
    pub sealer: Sealer,
    /// Whether jobs run here, on workers elsewhere, or here from the shared queue.
    pub role: Role,
    /// The shared queue's timing and this worker's name.
    pub queue: QueueConfig,
    /// How long one job may run before it is stopped.
    pub job_timeout: std::time::Duration,
}

/// What the job system shares between its parts.
pub(crate) struct Context {
    pub store: Store,
    pub catalog: Arc<ModelCatalog>,
    pub metrics: Arc<Metrics>,
    pub settings: JobSettings,
}

impl Context {
    fn count(&self, kind: JobKind, outcome: &str) {
        self.metrics
            .jobs
            .get_or_create(&vec![
                ("kind", kind.as_str().to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    }

    /// This worker's name in the shared queue.
    fn worker_id(&self) -> &str {
        self.settings.queue.worker_id.as_deref().unwrap_or("worker")
    }
}

/// An admitted job and its events, as its submitter holds it. Dropped before the job ends (the
/// client went away), it cancels the job; [`Submitted::detach`] lets it run on.
pub struct Submitted {
    pub job: Arc<LiveJob>,
    events: broadcast::Receiver<JobEvent>,
    queue: JobQueue,
    armed: bool,
}

impl Submitted {
    /// The next event; after the last one (or if the job vanished) a final one from its record.
    pub async fn next_event(&mut self) -> JobEvent {
        loop {
            match self.events.recv().await {
                Ok(e) => {
                    if e.is_final() {
                        self.armed = false;
                    }
                    return e;
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => {
                    self.armed = false;
                    return JobEvent::Failed(self.queue.ended_without_event(&self.job).await);
                }
            }
        }
    }

    /// Waits for the end.
    pub async fn outcome(&mut self) -> Result<Arc<Vec<Output>>, JobError> {
        loop {
            if let Some(o) = self.next_event().await.outcome() {
                return o;
            }
        }
    }

    /// Lets the job run on after this handle is dropped (detached jobs).
    pub fn detach(mut self) -> Arc<LiveJob> {
        self.armed = false;
        self.job.clone()
    }
}

impl Drop for Submitted {
    fn drop(&mut self) {
        if self.armed {
            let (queue, job) = (self.queue.clone(), self.job.clone());
            tokio::spawn(async move {
                let _ = queue.cancel(&job.tenant_id, &job.id).await;
            });
        }
    }
}

/// The job system: a [`JobQueue`] and the settings outputs are sealed with.
pub struct Jobs {
    queue: JobQueue,
    ctx: Arc<Context>,
}

impl Jobs {
    /// Starts the queue the role needs (and its workers), after putting back the jobs a
    /// previous run left waiting.
    pub async fn start(
        store: Store,
        catalog: Arc<ModelCatalog>,
        metrics: Arc<Metrics>,
        settings: JobSettings,
    ) -> Result<Self, nanoimg_store::StoreError> {
        let ctx = Arc::new(Context {
            store,
            catalog,
            metrics,
            settings,
        });
        let queue = JobQueue::start(ctx.clone()).await?;
        Ok(Self { queue, ctx })
    }

    /// Admits a job: the tenant's cap and the queue's capacity, then the record, then the
    /// queue. The returned handle already hears every event.
    pub async fn submit(
        &self,
        owner: JobOwner<'_>,
        kind: JobKind,
        spec: JobSpec,
        detached: bool,
    ) -> Result<Submitted, JobError> {
        self.queue.submit(owner, kind, spec, detached).await
    }

    /// The live job to stream events of, if it is queued or running.
    pub async fn watch(&self, tenant_id: &str, id: &str) -> Option<Arc<LiveJob>> {
        self.queue.watch(tenant_id, id).await
    }

    /// Cancels a job: a waiting one at once, a running one at its next step or operation.
    /// False if the job is not live (unknown, another tenant's, or already final).
    pub async fn cancel(&self, tenant_id: &str, id: &str) -> Result<bool, JobError> {
        self.queue.cancel(tenant_id, id).await
    }

    /// Cancels every live job of a tenant (erasure) and waits, up to 30 s, for them to stop.
    pub async fn stop_tenant(&self, tenant_id: &str) -> usize {
        self.queue.stop_tenant(tenant_id).await
    }

    /// A partial image of `job` (a preview scaled to the job's size), sealed like an output.
    pub async fn seal_partial(
        &self,
        job: &Arc<LiveJob>,
        preview: Arc<image::RgbImage>,
    ) -> Result<Vec<u8>, JobError> {
        let (sealer, job) = (self.ctx.settings.sealer.clone(), job.clone());
        tokio::task::spawn_blocking(move || {
            let spec = &job.spec;
            let mut big = image::imageops::resize(
                preview.as_ref(),
                spec.size.width,
                spec.size.height,
                image::imageops::FilterType::Triangle,
            );
            let record = pipeline::record(spec, spec.seed, 0, spec.vae).with("partial", true);
            sealer
                .seal(&mut big, &record, pipeline::encoding(spec), None, job.origin())
                .map(|s| s.bytes)
                .map_err(JobError::internal)
        })
        .await
        .map_err(JobError::internal)?
    }

    /// This process's name in the shared queue, when it is a worker.
    pub fn worker_id(&self) -> Option<&str> {
        match self.ctx.settings.role {
            Role::Worker => Some(self.ctx.worker_id()),
            _ => None,
        }
    }

    /// True once shutdown has begun.
    pub fn stopping(&self) -> bool {
        self.queue.stopping()
    }

    /// Jobs waiting and running in this process now.
    pub fn depth(&self) -> (usize, usize) {
        self.queue.depth()
    }

    /// Stops taking work; running jobs get `grace`, then are cancelled. Returns when the
    /// workers have stopped.
    pub async fn shutdown(&self, grace: Duration) {
        self.queue.shutdown(grace).await
    }
}
