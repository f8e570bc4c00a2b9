//! One job, from its record to its stored images, as async steps:
//!
//! 1. **start** — the record says `running` (a claimed job is running already);
//! 2. **fetch inputs** — the model (loaded once, on a blocking thread), the characters
//!    ([`conditioning`](super::conditioning)), the starting image and mask, with the input's
//!    watermark taken off;
//! 3. **engine** — on a blocking thread, tensors only: one model pass, or an edit plan whose
//!    generative operations are model passes ([`JobPainter`]); progress and previews go out as
//!    events as the steps run;
//! 4. **check** — the image safety layer on every output, before anything is encoded or kept;
//! 5. **seal** — watermark, parameters, encoding and the C2PA manifest
//!    ([`nanoimg_safety::seal`]);
//! 6. **store** — each image as an asset, and for an edit-session instruction, the new version.

use super::conditioning::{self, Conditioned};
use super::shared::ProgressReport;
use super::{Context, JobError, JobEvent, LiveJob, Output};
use crate::spec::{JobSpec, Pass, PlanSpec, SessionTarget};
use nanoimg_core::{ImageSize, Limits};
use nanoimg_edit::exec::{self, Painter};
use nanoimg_engine::codec;
use nanoimg_engine::pipeline::evenly_spaced;
use nanoimg_engine::reference::Reference;
use nanoimg_engine::{
    GeneratedImage, InitImage, PreviewMethod, Progress, ProgressSink, Refiner, StableDiffusion,
};
use nanoimg_safety::nsfw::NsfwClassifier;
use nanoimg_safety::seal::{Encoding, OutputRecord};
use nanoimg_store::{AuditEvent, NewAsset, NewVersion, Outcome};
use std::sync::Arc;

/// Runs a job to its outputs. A panic anywhere in it, in its async steps or on a blocking
/// thread, fails this job and never the worker that runs it.
pub(super) async fn run(ctx: &Arc<Context>, job: &Arc<LiveJob>) -> Result<Vec<Output>, JobError> {
    guarded(steps(ctx, job)).await
}

/// `work`'s result, or a panic in it as the job's internal error.
async fn guarded<T>(work: impl std::future::Future<Output = Result<T, JobError>>) -> Result<T, JobError> {
    use futures_util::FutureExt;
    std::panic::AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .unwrap_or_else(|p| Err(panicked(p.as_ref())))
}

/// A panic's message as the job's error.
fn panicked(payload: &(dyn std::any::Any + Send)) -> JobError {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    JobError::internal(format!("a bug stopped it (a panic: {message})"))
}

async fn steps(ctx: &Arc<Context>, job: &Arc<LiveJob>) -> Result<Vec<Output>, JobError> {
    // A claimed job is running already (the claim said so).
    if job.attempt.is_none()
        && !ctx
            .store
            .system()
            .job_started(&job.id)
            .await
            .map_err(JobError::internal)?
    {
        return Err(JobError::Cancelled);
    }
    job.emit(JobEvent::Started);
    let spec = &job.spec;
    let catalog = ctx.catalog.clone();
    let name = spec.model.clone();
    let refiner_spec = spec.refiner.clone();
    let (base, refiner) = blocking(move || {
        let load = |name: &str| {
            catalog
                .load(name)
                .map_err(|e| JobError::ModelUnavailable(e.to_string()))
        };
        let refiner = refiner_spec
            .map(|r| -> Result<_, JobError> {
                Ok(Refiner {
                    model: load(&r.model)?.model,
                    switch_at: r.switch_at,
                })
            })
            .transpose()?;
        Ok((load(&name)?, refiner))
    })
    .await?;
    let Conditioned { model, reference } = conditioning::prepare(ctx, &job.tenant_id, spec, base).await?;
    let (init, replaced_mark) = read_init(ctx, job).await?;
    let engine = Engine {
        model: model.clone(),
        job: job.clone(),
        limits: ctx.settings.limits.clone(),
        reference,
        refiner,
        check: ctx.settings.image_check.clone(),
        report: job.attempt.map(|_| ProgressReport::start(ctx, job)),
    };
    let images = until_cancelled(job, blocking(move || engine.run(init))).await?;
    let images = check_outputs(ctx, job, images).await?;
    let text_tokens = model.prompt_tokens(&spec.prompt) + model.prompt_tokens(&spec.negative_prompt);
    let mut outputs = Vec::with_capacity(images.len());
    for (i, img) in images.into_iter().enumerate() {
        let (seed, (w, h)) = (img.seed, img.image.dimensions());
        let sealed = seal(ctx, job, img, i, replaced_mark, model.vae_used(spec.vae)).await?;
        let asset = ctx
            .store
            .scoped(&job.tenant_id)
            .put_asset(
                NewAsset {
                    kind: "output",
                    media_type: spec.output_format.media_type().into(),
                    width: w,
                    height: h,
                    job_id: Some(job.id.clone()),
                    metadata: sealed.metadata,
                },
                &sealed.bytes,
            )
            .await
            .map_err(JobError::internal)?;
        let version = match spec
            .plan
            .as_ref()
            .and_then(|p| p.session.as_ref().map(|t| (p, t)))
        {
            Some((p, target)) => Some(add_version(ctx, job, p, target, &asset.id).await?),
            None => None,
        };
        outputs.push(Output {
            asset,
            bytes: Arc::new(sealed.bytes),
            seed,
            text_tokens,
            version,
        });
    }
    Ok(outputs)
}

/// Runs `f` on a blocking thread; a panic there fails the job, not the worker.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, JobError> + Send + 'static,
) -> Result<T, JobError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(out) => out,
        Err(e) if e.is_panic() => Err(panicked(e.into_panic().as_ref())),
        Err(e) => Err(JobError::internal(format!(
            "its blocking thread was stopped: {e}"
        ))),
    }
}

/// How often a waiting job looks at its cancel token.
const CANCEL_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// `work`, or `Cancelled` as soon as the job is cancelled (or stopped by its time limit): the
/// engine stops at its next step and a plan before its next operation, but the job ends now,
/// its slot freed, whatever one operation in hand still takes on its blocking thread.
async fn until_cancelled<T>(
    job: &LiveJob,
    work: impl std::future::Future<Output = Result<T, JobError>>,
) -> Result<T, JobError> {
    let cancelled = async {
        while !job.cancel.is_cancelled() {
            tokio::time::sleep(CANCEL_POLL).await;
        }
    };
    tokio::select! {
        out = work => out,
        () = cancelled => Err(JobError::Cancelled),
    }
}

/// The job's starting image (and mask), read and decoded with the upload limits; the mark an
/// edit's input carried is taken off first, so the output carries one mark (its own), not a new
/// one over what survives of the old. The input file becomes the outputs' C2PA parent.
async fn read_init(ctx: &Context, job: &LiveJob) -> Result<(Option<InitImage>, Option<u64>), JobError> {
    let Some(init) = &job.spec.init else {
        return Ok((None, None));
    };
    let scoped = ctx.store.scoped(&job.tenant_id);
    let read = |id: String, param: &'static str| {
        let scoped = &scoped;
        async move {
            scoped
                .asset_bytes(&id)
                .await
                .map_err(|e| JobError::InputUnavailable(format!("{param}: {e}")))
        }
    };
    let (asset, bytes) = read(init.image.clone(), "image").await?;
    let mask = match &init.mask {
        Some(m) => Some(read(m.clone(), "mask").await?.1),
        None => None,
    };
    let bytes = Arc::new(bytes);
    let _ = job.input.set((bytes.clone(), asset.media_type));
    let (limits, watermark, strength) = (
        ctx.settings.upload_limits,
        ctx.settings.sealer.watermark.clone(),
        init.strength,
    );
    blocking(move || {
        let decode = |b: &[u8], param| {
            codec::decode(b, &limits, param).map_err(|e| JobError::InvalidImage(e.to_string()))
        };
        let mut image = decode(&bytes, "image")?.to_rgb8();
        let replaced = watermark.unmark(&mut image);
        let mask = match mask {
            Some(m) => Some(codec::mask_from(&decode(&m, "mask")?)),
            None => None,
        };
        Ok((
            Some(InitImage {
                image,
                strength,
                mask,
            }),
            replaced,
        ))
    })
    .await
}

/// What runs on the blocking thread: the model passes of one job.
struct Engine {
    model: Arc<StableDiffusion>,
    job: Arc<LiveJob>,
    limits: Limits,
    reference: Option<Arc<Reference>>,
    refiner: Option<Refiner>,
    check: Option<Arc<NsfwClassifier>>,
    report: Option<ProgressReport>,
}

impl Engine {
    fn run(self, init: Option<InitImage>) -> Result<Vec<GeneratedImage>, JobError> {
        let spec = &self.job.spec;
        let sink = EventSink {
            job: &self.job,
            // A claimed job's watchers are on the API node, which previews do not reach.
            previews: self.job.attempt.is_none() && (self.job.detached || spec.partial_images > 0),
            // A stream's partial images are taken at these steps (see `routes::images`).
            decoded: match spec.partial_images {
                0 => DECODED_PREVIEWS,
                p => p as usize,
            },
            check: self.check.as_deref(),
            report: self.report.as_ref(),
        };
        match (&spec.plan, init) {
            (Some(p), Some(init)) => (0..u64::from(spec.n))
                .map(|i| {
                    let seed = spec.seed.wrapping_add(i);
                    let mut painter = JobPainter {
                        engine: &self,
                        sink: &sink,
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
                    Ok(GeneratedImage { image, seed })
                })
                .collect(),
            (Some(_), None) => Err(JobError::internal("an edit plan without an image to edit")),
            (None, init) => {
                let req = spec.request(
                    &spec.prompt,
                    spec.whole(),
                    init,
                    self.reference.clone(),
                    self.refiner.clone(),
                );
                Ok(self.model.generate(&req, &self.limits, &sink, &self.job.cancel)?)
            }
        }
    }
}

/// A plan's generative operations on the job's model and settings: one model pass each, with
/// its own seed, reporting progress and honouring cancellation like any job.
struct JobPainter<'a> {
    engine: &'a Engine,
    sink: &'a EventSink<'a>,
    seed: u64,
    passes: u64,
}

impl Painter for JobPainter<'_> {
    type Error = JobError;

    fn drawable(&self, w: u32, h: u32) -> (u32, u32) {
        // Within the server's limits and what the model draws.
        let e = self.engine;
        e.model.info().capped(&e.limits).fit(w, h)
    }

    fn paint(
        &mut self,
        img: &image::RgbImage,
        prompt: &str,
        strength: f64,
        mask: Option<&image::GrayImage>,
    ) -> Result<image::RgbImage, JobError> {
        let e = self.engine;
        let pass = Pass {
            size: ImageSize::new(img.width(), img.height()),
            seed: self.seed.wrapping_add(self.passes << 32),
            n: 1,
        };
        let init = InitImage {
            image: img.clone(),
            strength,
            mask: mask.cloned(),
        };
        let req = e
            .job
            .spec
            .request(prompt, pass, Some(init), e.reference.clone(), e.refiner.clone());
        self.passes += 1;
        e.model
            .validate(&req, &e.limits)
            .map_err(|p| JobError::InvalidValue(format!("a generative step of the plan: {p}")))?;
        let out = e.model.generate(&req, &e.limits, self.sink, &e.job.cancel)?;
        out.into_iter()
            .next()
            .map(|g| g.image)
            .ok_or_else(|| JobError::internal("the model returned no image"))
    }

    fn follows_instructions(&self) -> bool {
        self.engine.model.info().kontext
    }

    fn cancelled(&self) -> bool {
        self.engine.job.cancel.is_cancelled()
    }
}

/// Evenly spaced steps per image whose previews are decoded by the tiny autoencoder (where the
/// model has one) and, with the image layer on, the only previews made, checked and sent (each
/// check costs one open_nsfw run; unchecked previews are never sent).
const DECODED_PREVIEWS: usize = 4;

/// The engine's progress as job events (and, for a claimed job, reports to the shared queue).
struct EventSink<'a> {
    job: &'a LiveJob,
    previews: bool,
    /// How many evenly spaced steps per image get a decoded (and, with the image layer on,
    /// checked) preview.
    decoded: usize,
    /// With the image layer on, only previews it passed are sent.
    check: Option<&'a NsfwClassifier>,
    report: Option<&'a ProgressReport>,
}

impl EventSink<'_> {
    /// The preview to send with this step: with the image layer on, only one it passed.
    fn preview(&self, p: &Progress<'_>) -> Option<Arc<image::RgbImage>> {
        let img = p.preview?;
        let Some(c) = self.check else {
            return Some(Arc::new(img.clone()));
        };
        let dynamic = image::DynamicImage::ImageRgb8(img.clone());
        match c.check(&dynamic) {
            Ok(v) if !v.blocked => Some(Arc::new(dynamic.into_rgb8())),
            _ => None,
        }
    }
}

impl ProgressSink for EventSink<'_> {
    fn on_step(&self, p: &Progress<'_>) {
        if let Some(r) = self.report {
            r.step(p.image, p.images, p.step, p.steps);
        }
        self.job.emit(JobEvent::Progress {
            image: p.image,
            images: p.images,
            step: p.step,
            steps: p.steps,
            preview: self.preview(p),
        });
    }

    /// The tiny autoencoder's pictures at [`EventSink::decoded`] evenly spaced steps; the latent
    /// projection at the others, unless the image layer is on (it would check every one).
    fn preview_at(&self, _image: usize, step: usize, steps: usize) -> Option<PreviewMethod> {
        if !self.previews {
            None
        } else if evenly_spaced(step, steps, self.decoded) {
            Some(PreviewMethod::Tiny)
        } else if self.check.is_none() {
            Some(PreviewMethod::Latent)
        } else {
            None
        }
    }
}

/// The image layer on every output, before anything is encoded or stored: one refused image
/// fails the whole job (its siblings came from the same prompt), and nothing is kept.
/// The images move to the checking thread and back.
async fn check_outputs(
    ctx: &Context,
    job: &LiveJob,
    images: Vec<GeneratedImage>,
) -> Result<Vec<GeneratedImage>, JobError> {
    let Some(c) = ctx.settings.image_check.clone() else {
        return Ok(images);
    };
    let (images, refused) = blocking(move || {
        let mut refused = None;
        for (i, g) in images.iter().enumerate() {
            let v = c
                .check(&image::DynamicImage::ImageRgb8(g.image.clone()))
                .map_err(JobError::internal)?;
            if v.blocked {
                refused = Some((i, v));
                break;
            }
        }
        Ok((images, refused))
    })
    .await?;
    let Some((i, v)) = refused else {
        return Ok(images);
    };
    ctx.metrics.reject("moderation");
    ctx.settings.audit.record_later(AuditEvent {
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
    Err(JobError::ModerationBlocked {
        message: format!(
            "a generated image was refused by NanoImg's safety system (sexual: image layer \
             score {:.2}, threshold {:.2}); nothing was stored",
            v.score, v.threshold
        ),
        categories: vec!["sexual".into()],
    })
}

/// What the job's outputs carry: the spec's parameters (and its plan), per image, with the
/// autoencoder that decoded them (`vae`: a model whose only one is tiny uses it whatever was
/// asked).
pub(crate) fn record(
    spec: &JobSpec,
    seed: u64,
    index: usize,
    vae: nanoimg_engine::VaeChoice,
) -> OutputRecord {
    // The LoRAs as tags at the end of the prompt, as A1111 writes (and reads back) them.
    let tags = spec.loras.iter().map(|l| format!(" {}", l.tag()));
    let mut r = OutputRecord {
        model: spec.model.clone(),
        prompt: std::iter::once(spec.prompt.clone()).chain(tags).collect(),
        negative_prompt: spec.negative_prompt.clone(),
        steps: Some(spec.steps),
        guidance: Some(spec.guidance),
        scheduler: Some(spec.scheduler.to_string()),
        seed: Some(seed),
        extra: Default::default(),
    }
    .with("index", index);
    if vae != nanoimg_engine::VaeChoice::Full {
        r = r.with("vae", vae.to_string());
    }
    if let Some(refiner) = &spec.refiner {
        r = r.with(
            "refiner",
            serde_json::json!({"model": refiner.model, "switch_at": refiner.switch_at}),
        );
    }
    if let Some(p) = &spec.plan {
        r = r
            .with("instruction", p.instruction.clone())
            .with("plan", serde_json::to_value(&p.plan).unwrap_or_default());
    }
    r
}

/// How the spec asks its images to be written.
pub(crate) fn encoding(spec: &JobSpec) -> Encoding {
    Encoding {
        format: spec.output_format,
        quality: spec.output_compression,
    }
}

/// Seals one output (on a blocking thread: marking, encoding and signing are CPU work).
async fn seal(
    ctx: &Context,
    job: &Arc<LiveJob>,
    img: GeneratedImage,
    index: usize,
    replaced: Option<u64>,
    vae: nanoimg_engine::VaeChoice,
) -> Result<nanoimg_safety::seal::Sealed, JobError> {
    let (sealer, job) = (ctx.settings.sealer.clone(), job.clone());
    blocking(move || {
        let mut image = img.image;
        let record = record(&job.spec, img.seed, index, vae);
        sealer
            .seal(&mut image, &record, encoding(&job.spec), replaced, job.origin())
            .map_err(JobError::internal)
    })
    .await
}

/// Records an edit-session instruction's result as the session's new head. If the session is
/// gone (deleted while the job ran), the image is deleted too and the job fails.
async fn add_version(
    ctx: &Context,
    job: &LiveJob,
    plan: &PlanSpec,
    target: &SessionTarget,
    asset_id: &str,
) -> Result<String, JobError> {
    let scoped = ctx.store.scoped(&job.tenant_id);
    let added = scoped
        .add_version(
            &target.session_id,
            NewVersion {
                parent_id: target.parent_version.clone(),
                asset_id: asset_id.to_owned(),
                instruction: plan.instruction.clone(),
                plan: serde_json::to_value(&plan.plan).map_err(JobError::internal)?,
                job_id: Some(job.id.clone()),
            },
        )
        .await;
    match added {
        Ok(v) => Ok(v.id),
        Err(e) => {
            let _ = scoped.delete_asset(asset_id).await;
            Err(match e {
                nanoimg_store::StoreError::NotFound(what) => JobError::InputUnavailable(format!(
                    "the edit session's {what} was deleted while the edit ran"
                )),
                e => JobError::internal(e),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_fails_the_job_and_the_worker_goes_on() {
        // On the engine's blocking thread.
        let e = blocking(|| -> Result<(), JobError> { panic!("a shape mismatch") })
            .await
            .unwrap_err();
        assert!(
            matches!(&e, JobError::Internal(m) if m.contains("a shape mismatch")),
            "{e:?}"
        );
        // In an async step (sealing, storing): the worker's task survives it.
        let bug = true;
        let e = guarded(async move {
            if bug {
                panic!("{}", String::from("an index out of range"));
            }
            Ok(())
        })
        .await
        .unwrap_err();
        assert!(
            matches!(&e, JobError::Internal(m) if m.contains("an index out of range")),
            "{e:?}"
        );
        // And the next job runs.
        assert_eq!(guarded(async { Ok::<_, JobError>(7) }).await.unwrap(), 7);
    }
}
