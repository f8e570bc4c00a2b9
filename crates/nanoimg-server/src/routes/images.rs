//! The OpenAI Images API: `POST /v1/images/generations` (JSON), `/v1/images/edits` and
//! `/v1/images/variations` (multipart). Requests become a [`JobSpec`], run on the shared queue,
//! and come back in OpenAI's response shape — or as an SSE stream of partial and completed
//! images with `stream: true`.

use super::body::{self, Form};
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::jobs::{JobEvent, LiveJob, Output};
use crate::spec::{InitSpec, JobKind, JobSpec, PlanSpec};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Multipart, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use image::{DynamicImage, RgbImage};
use nanoimg_core::{ImageSize, SchedulerName};
use nanoimg_edit::planner::Planned;
use nanoimg_edit::{EditPlan, Op, PlanLimits};
use nanoimg_engine::codec::{self, OutputFormat};
use nanoimg_engine::pipeline::MAX_PROMPT_BYTES;
use nanoimg_store::{NewAsset, Outcome, Scope};
use serde::Deserialize;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Every field the three endpoints accept: OpenAI's, then NanoImg's extras (sent by the SDKs
/// through `extra_body`). Unknown fields are refused by name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImageRequest {
    pub prompt: Option<String>,
    pub model: Option<String>,
    pub n: Option<u32>,
    pub size: Option<String>,
    pub quality: Option<String>,
    pub response_format: Option<String>,
    pub output_format: Option<String>,
    pub output_compression: Option<u8>,
    pub background: Option<String>,
    pub moderation: Option<String>,
    pub user: Option<String>,
    pub stream: Option<bool>,
    pub partial_images: Option<u32>,
    /// DALL·E 3's `vivid` / `natural`: accepted for compatibility, no effect.
    pub style: Option<String>,
    /// gpt-image's `input_fidelity` for edits: accepted for compatibility, no effect.
    pub input_fidelity: Option<String>,
    pub seed: Option<u64>,
    pub negative_prompt: Option<String>,
    pub steps: Option<u32>,
    pub guidance: Option<f64>,
    pub scheduler: Option<String>,
    pub strength: Option<f64>,
    /// A character (`chr_…`) that conditions the images; `character_ids` takes several.
    pub character_id: Option<String>,
    pub character_ids: Option<Vec<String>>,
    /// How strongly the characters' references condition the images (0–1); each character's
    /// own default otherwise.
    pub character_strength: Option<f64>,
    /// Edits: answer with the plan the prompt makes, without running it.
    pub dry_run: Option<bool>,
}

/// Form fields that are numbers or booleans.
const TYPED_FIELDS: &[&str] = &[
    "n",
    "output_compression",
    "stream",
    "partial_images",
    "seed",
    "steps",
    "guidance",
    "strength",
    "dry_run",
    "character_strength",
];

/// How the client wants its images.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub url: bool,
    pub stream: bool,
    pub quality: String,
    pub background: String,
    /// Base for signed links: scheme and host the client used.
    pub base_url: String,
}

fn one_of(param: &str, v: Option<&str>, allowed: &[&str], default: &str) -> ApiResult<String> {
    let v = v.unwrap_or(default);
    if allowed.contains(&v) {
        Ok(v.to_owned())
    } else {
        Err(ApiError::invalid(
            param,
            format!("{v:?} is not one of {}", allowed.join(", ")),
        ))
    }
}

fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the operating system's random source failed");
    // JSON numbers are exact to 2^53; keep seeds inside so every client can echo them back.
    u64::from_le_bytes(b) & ((1 << 53) - 1)
}

/// The size of an edit with `size: auto`: the input's, scaled down to the limits and rounded
/// down to a multiple of 8.
fn auto_size(w: u32, h: u32, limits: &nanoimg_core::Limits) -> ImageSize {
    let (mut w, mut h) = (f64::from(w), f64::from(h));
    let side = f64::from(limits.max_side);
    let s = (side / w.max(h))
        .min((limits.max_pixels as f64 / (w * h)).sqrt())
        .min(1.0);
    w *= s;
    h *= s;
    let fit = |v: f64| ((v as u32) / 8 * 8).max(limits.min_side);
    ImageSize::new(fit(w), fit(h))
}

/// Turns a request into a job spec, checking every field against the model and the limits.
pub(crate) fn build_spec(
    state: &AppState,
    req: &ImageRequest,
    kind: JobKind,
    init: Option<(InitSpec, (u32, u32))>,
    headers: &HeaderMap,
) -> ApiResult<(JobSpec, Delivery)> {
    let limits = &state.config.limits;
    let entry = state.catalog.pick(req.model.as_deref()).ok_or_else(|| {
        let names: Vec<_> = state.catalog.entries().iter().map(|e| e.name.as_str()).collect();
        ApiError::invalid(
            "model",
            format!(
                "no model named {:?}; available: {}",
                req.model.as_deref().unwrap_or_default(),
                names.join(", ")
            ),
        )
    })?;
    let defaults = &entry.info.defaults;
    let prompt = match (kind, &req.prompt) {
        (JobKind::Variation, Some(_)) => {
            return Err(ApiError::invalid("prompt", "variations take no prompt"))
        }
        (JobKind::Variation, None) => String::new(),
        (_, None) => return Err(ApiError::invalid("prompt", "a prompt is required")),
        (_, Some(p)) if p.trim().is_empty() => {
            return Err(ApiError::invalid("prompt", "the prompt is empty"))
        }
        (_, Some(p)) => p.clone(),
    };
    let negative_prompt = req.negative_prompt.clone().unwrap_or_default();
    for (param, text) in [("prompt", &prompt), ("negative_prompt", &negative_prompt)] {
        if text.len() > MAX_PROMPT_BYTES {
            return Err(ApiError::invalid(
                param,
                format!("{} bytes; the limit is {MAX_PROMPT_BYTES}", text.len()),
            ));
        }
    }
    let n = req.n.unwrap_or(1);
    limits.check_images(n)?;
    let size = match (req.size.as_deref(), &init) {
        (None | Some("auto"), Some((_, (w, h)))) => auto_size(*w, *h, limits),
        (None | Some("auto"), None) => defaults.size,
        (Some(s), _) => s.parse::<ImageSize>()?,
    };
    limits.check_size(size)?;
    let quality = one_of(
        "quality",
        req.quality.as_deref(),
        &["auto", "low", "medium", "high", "standard", "hd"],
        "auto",
    )?;
    let steps = match req.steps {
        Some(s) => s,
        None => match quality.as_str() {
            "low" => (defaults.steps / 2).max(1),
            "high" | "hd" => (defaults.steps * 3 / 2).min(limits.max_steps),
            _ => defaults.steps,
        },
    };
    limits.check_steps(steps)?;
    let guidance = req.guidance.unwrap_or(defaults.guidance);
    limits.check_guidance(guidance)?;
    let scheduler = match &req.scheduler {
        Some(s) => s.parse::<SchedulerName>()?,
        None => defaults.scheduler,
    };
    let output_format: OutputFormat = req.output_format.as_deref().unwrap_or("png").parse()?;
    if let Some(c) = req.output_compression {
        if c > 100 {
            return Err(ApiError::invalid("output_compression", "must be 0 to 100"));
        }
    }
    let response_format = one_of(
        "response_format",
        req.response_format.as_deref(),
        &["b64_json", "url"],
        "b64_json",
    )?;
    let background = one_of(
        "background",
        req.background.as_deref(),
        &["auto", "opaque", "transparent"],
        "auto",
    )?;
    if background == "transparent" {
        return Err(ApiError::invalid(
            "background",
            "NanoImg's models paint opaque images; use \"opaque\" or \"auto\"",
        ));
    }
    let moderation: nanoimg_safety::Strictness = req
        .moderation
        .as_deref()
        .unwrap_or("auto")
        .parse()
        .map_err(|e: String| ApiError::invalid("moderation", e))?;
    one_of("style", req.style.as_deref(), &["vivid", "natural"], "vivid")?;
    one_of(
        "input_fidelity",
        req.input_fidelity.as_deref(),
        &["low", "high"],
        "low",
    )?;
    if req.user.as_deref().is_some_and(|u| u.len() > 256) {
        return Err(ApiError::invalid("user", "at most 256 bytes"));
    }
    let stream = req.stream.unwrap_or(false);
    let partial_images = req.partial_images.unwrap_or(0);
    if partial_images > 3 {
        return Err(ApiError::invalid("partial_images", "must be 0 to 3"));
    }
    if partial_images > 0 && !stream {
        return Err(ApiError::invalid(
            "partial_images",
            "partial images need stream: true",
        ));
    }
    if stream && response_format == "url" {
        return Err(ApiError::invalid(
            "response_format",
            "streamed images come as b64_json",
        ));
    }
    if req.dry_run.is_some() && kind != JobKind::Edit {
        return Err(ApiError::invalid("dry_run", "dry_run applies to edits"));
    }
    let characters = super::characters::requested(req)?;
    let init = match (init, req.strength) {
        (Some((mut i, _)), s) => {
            if let Some(s) = s {
                limits.check_strength(s)?;
                i.strength = s;
            }
            Some(i)
        }
        (None, Some(_)) => {
            return Err(ApiError::invalid(
                "strength",
                "strength applies to edits and variations",
            ))
        }
        (None, None) => None,
    };
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| state.config.bind.to_string());
    Ok((
        JobSpec {
            model: entry.name.clone(),
            prompt,
            negative_prompt,
            size,
            steps,
            guidance,
            scheduler,
            seed: req.seed.unwrap_or_else(random_seed),
            n,
            output_format,
            output_compression: req.output_compression,
            init,
            partial_images,
            moderation,
            plan: None,
            characters,
        },
        Delivery {
            url: response_format == "url",
            stream,
            quality,
            background,
            base_url: format!("http://{host}"),
        },
    ))
}

/// The door every validated request passes before it is queued: moderation first (a blocked
/// prompt costs nothing), then the key's image budget.
pub(crate) async fn admit(
    state: &AppState,
    auth: &Auth,
    spec: &mut JobSpec,
    req: &ImageRequest,
) -> ApiResult<()> {
    vet(state, auth, spec, req).await?;
    charge_images(state, auth, spec.n)
}

/// The checks a dry run makes too: the characters exist and are the caller's, and every text
/// (prompts, instruction, plan, character descriptions) passes moderation.
pub(crate) async fn vet(
    state: &AppState,
    auth: &Auth,
    spec: &mut JobSpec,
    req: &ImageRequest,
) -> ApiResult<()> {
    super::characters::resolve(state, auth, spec, req.character_strength).await?;
    crate::moderation::check_prompt(state, auth, spec).await
}

/// Takes `n` images from the key's per-minute image budget.
fn charge_images(state: &AppState, auth: &Auth, n: u32) -> ApiResult<()> {
    let d = state
        .image_limiter
        .check(auth.key_id(), auth.limits.images_per_minute, n);
    if d.allowed {
        return Ok(());
    }
    state.metrics.reject("images_per_minute");
    state.audit.record_later(auth.event(
        "request.rejected",
        None,
        Outcome::Rejected,
        serde_json::json!({"reason": "images_per_minute", "limit": d.limit, "asked": n}),
    ));
    let msg = if d.retry_after.is_infinite() {
        format!("this API key may make {} images a minute; ask for fewer", d.limit)
    } else {
        format!(
            "this API key may make {} images a minute; {} left; try again in {:.0} s",
            d.limit,
            d.remaining,
            d.retry_after.ceil()
        )
    };
    Err(
        ApiError::rate_limited("rate_limit_exceeded", msg, d.retry_after.min(60.0))
            .with_header("x-ratelimit-limit-images", &d.limit.to_string())
            .with_header("x-ratelimit-remaining-images", &d.remaining.to_string()),
    )
}

/// Cancels the job if the request ends before it does (the client went away).
pub(crate) struct CancelOnDrop {
    pub state: AppState,
    pub tenant: String,
    pub job: String,
    pub armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            let (state, tenant, job) = (self.state.clone(), self.tenant.clone(), self.job.clone());
            tokio::spawn(async move {
                let _ = state.jobs.cancel(&tenant, &job).await;
            });
        }
    }
}

/// Waits for a job's final event.
pub(crate) async fn finish(
    state: &AppState,
    job: &LiveJob,
    rx: &mut broadcast::Receiver<JobEvent>,
) -> JobEvent {
    loop {
        match rx.recv().await {
            Ok(e) if e.is_final() => return e,
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => {
                let rec = state.store.scoped(&job.tenant_id).job(&job.id).await;
                return JobEvent::Failed {
                    code: "internal_error",
                    message: rec
                        .ok()
                        .and_then(|j| j.error)
                        .unwrap_or_else(|| "the job ended without a result".into()),
                };
            }
        }
    }
}

/// The error a failed job answers with.
pub(crate) fn job_error(code: &'static str, message: String) -> ApiError {
    match code {
        "invalid_value" | "invalid_image" | "input_unavailable" => ApiError::bad_request(code, message),
        "moderation_blocked" => ApiError::bad_request(code, message)
            .with_param("prompt")
            .with_extra("categories", serde_json::json!(["sexual"])),
        "shutting_down" => ApiError::overloaded(code, message, 5),
        "cancelled" => ApiError::conflict("job_cancelled", message),
        _ => ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            code,
            message,
        ),
    }
}

fn usage(spec: &JobSpec, outputs: &[Output]) -> serde_json::Value {
    // Tokens are the model's units: CLIP tokens of the prompts, and one "image token" per latent
    // position (8×8 pixels) of every input and output image.
    let latent = |s: ImageSize| u64::from(s.width / 8) * u64::from(s.height / 8);
    let text = outputs.first().map_or(0, |o| o.text_tokens) as u64;
    let image_in = if spec.init.is_some() { latent(spec.size) } else { 0 };
    let out = latent(spec.size) * outputs.len() as u64;
    serde_json::json!({
        "input_tokens": text + image_in,
        "input_tokens_details": {"text_tokens": text, "image_tokens": image_in},
        "output_tokens": out,
        "total_tokens": text + image_in + out,
    })
}

fn image_item(state: &AppState, tenant: &str, d: &Delivery, o: &Output) -> serde_json::Value {
    if d.url {
        let expires = nanoimg_store::ids::now_ms() / 1000 + state.config.url_ttl_secs as i64;
        let q = state.signer.sign(tenant, &o.asset.id, expires);
        serde_json::json!({
            "url": format!("{}/v1/files/{}?{q}", d.base_url, o.asset.id),
            "revised_prompt": null, "id": o.asset.id, "seed": o.seed,
        })
    } else {
        serde_json::json!({
            "b64_json": base64::engine::general_purpose::STANDARD.encode(o.bytes.as_slice()),
            "revised_prompt": null, "id": o.asset.id, "seed": o.seed,
        })
    }
}

/// Runs a validated request and answers it (JSON or SSE).
async fn run(
    state: AppState,
    auth: Auth,
    kind: JobKind,
    spec: JobSpec,
    delivery: Delivery,
) -> ApiResult<Response> {
    let (job, mut rx) = state
        .jobs
        .submit(auth.job_owner(), kind, spec.clone(), false)
        .await
        .inspect_err(|e| {
            state.audit.record_later(auth.event(
                "request.rejected",
                None,
                Outcome::Rejected,
                serde_json::json!({"reason": e.code}),
            ))
        })?;
    let mut guard = CancelOnDrop {
        state: state.clone(),
        tenant: auth.tenant_id().to_owned(),
        job: job.id.clone(),
        armed: true,
    };
    let created = nanoimg_store::ids::now_ms() / 1000;
    if delivery.stream {
        return Ok(stream(state, auth, kind, job, rx, spec, delivery, guard, created).into_response());
    }
    let end = finish(&state, &job, &mut rx).await;
    guard.armed = false;
    audit_end(&state, &auth, kind, &job.id, &spec, &end).await;
    match end {
        JobEvent::Succeeded(outputs) => {
            let data: Vec<_> = outputs
                .iter()
                .map(|o| image_item(&state, auth.tenant_id(), &delivery, o))
                .collect();
            Ok(Json(serde_json::json!({
                "created": created,
                "data": data,
                "background": delivery.background,
                "output_format": spec.output_format,
                "quality": delivery.quality,
                "size": outputs
                    .first()
                    .map_or(spec.size.to_string(), |o| format!("{}x{}", o.asset.width, o.asset.height)),
                "usage": usage(&spec, &outputs),
                "job_id": job.id,
                "plan": spec.plan.as_ref().map(|p| &p.plan),
            }))
            .into_response())
        }
        JobEvent::Failed { code, message } => Err(job_error(code, message)),
        _ => Err(job_error("cancelled", "the job was cancelled".into())),
    }
}

async fn audit_end(state: &AppState, auth: &Auth, kind: JobKind, job: &str, spec: &JobSpec, end: &JobEvent) {
    let (outcome, detail) = match end {
        JobEvent::Succeeded(o) => (Outcome::Success, serde_json::json!({"images": o.len()})),
        JobEvent::Failed { code, .. } => (Outcome::Failure, serde_json::json!({"code": code})),
        _ => (Outcome::Failure, serde_json::json!({"code": "cancelled"})),
    };
    let mut detail = detail;
    detail["model"] = spec.model.clone().into();
    detail["size"] = spec.size.to_string().into();
    detail["steps"] = spec.steps.into();
    detail["n"] = spec.n.into();
    let action = match kind {
        JobKind::Generation => "image.generate",
        JobKind::Edit => "image.edit",
        JobKind::Variation => "image.variation",
    };
    state
        .audit
        .record(auth.event(action, Some(job.to_owned()), outcome, detail))
        .await;
}

/// The OpenAI streaming shape: `image_generation.partial_image` events at evenly spaced steps,
/// then one `image_generation.completed` per image (`image_edit.*` for edits).
#[allow(clippy::too_many_arguments)]
fn stream(
    state: AppState,
    auth: Auth,
    kind: JobKind,
    job: Arc<LiveJob>,
    mut rx: broadcast::Receiver<JobEvent>,
    spec: JobSpec,
    delivery: Delivery,
    guard: CancelOnDrop,
    created: i64,
) -> Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>> {
    let prefix = if kind == JobKind::Edit {
        "image_edit"
    } else {
        "image_generation"
    };
    let s = async_stream(move |tx| async move {
        let mut guard = guard;
        let mut sent_partials = 0u32;
        let base = serde_json::json!({
            "created_at": created, "size": spec.size.to_string(), "quality": delivery.quality,
            "background": delivery.background, "output_format": spec.output_format,
        });
        loop {
            let ev = match rx.recv().await {
                Ok(e) => e,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => finish(&state, &job, &mut rx).await,
            };
            match &ev {
                JobEvent::Progress {
                    image: 0,
                    step,
                    steps,
                    preview: Some(p),
                    ..
                } if sent_partials < spec.partial_images
                    && *step * (spec.partial_images as usize + 1)
                        >= *steps * (sent_partials as usize + 1) =>
                {
                    let (preview, jobs, job2, spec2) =
                        (p.clone(), state.jobs.clone(), job.clone(), spec.clone());
                    // Marking, encoding and signing are CPU work: off the async threads.
                    let sealed = tokio::task::spawn_blocking(move || {
                        let mut big = image::imageops::resize(
                            preview.as_ref(),
                            spec2.size.width,
                            spec2.size.height,
                            image::imageops::FilterType::Triangle,
                        );
                        let mark = getrandom::u64().map_err(|e| e.to_string())?;
                        jobs.settings().seal(&mut big, &spec2, mark, &[], job2.origin())
                    })
                    .await;
                    if let Ok(Ok(bytes)) = sealed {
                        let mut data = base.clone();
                        data["type"] = format!("{prefix}.partial_image").into();
                        data["b64_json"] = base64::engine::general_purpose::STANDARD.encode(bytes).into();
                        data["partial_image_index"] = sent_partials.into();
                        sent_partials += 1;
                        if tx
                            .send(sse(&format!("{prefix}.partial_image"), &data))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
                e if e.is_final() => {
                    guard.armed = false;
                    audit_end(&state, &auth, kind, &job.id, &spec, e).await;
                    match e {
                        JobEvent::Succeeded(outputs) => {
                            for o in outputs.iter() {
                                let mut data = base.clone();
                                data["type"] = format!("{prefix}.completed").into();
                                data["b64_json"] = base64::engine::general_purpose::STANDARD
                                    .encode(o.bytes.as_slice())
                                    .into();
                                data["usage"] = usage(&spec, outputs);
                                let _ = tx.send(sse(&format!("{prefix}.completed"), &data)).await;
                            }
                        }
                        JobEvent::Failed { code, message } => {
                            let err = job_error(code, message.clone());
                            let mut body = err.body();
                            body["type"] = "error".into();
                            let _ = tx.send(sse("error", &body)).await;
                        }
                        _ => {
                            let body = job_error("cancelled", "the job was cancelled".into()).body();
                            let _ = tx.send(sse("error", &body)).await;
                        }
                    }
                    return;
                }
                _ => {}
            }
        }
    });
    Sse::new(s).keep_alive(KeepAlive::default())
}

fn sse(name: &str, data: &serde_json::Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

/// A stream fed by a task through a channel; the task stops when the client goes away.
pub(crate) fn async_stream<F, Fut>(
    f: F,
) -> impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    futures_util::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok)
}

/// `POST /v1/images/generations`.
pub(crate) async fn generations(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    auth.require(&state, Scope::ImagesGenerate)?;
    let req: ImageRequest = body::json(&body)?;
    let (mut spec, delivery) = build_spec(&state, &req, JobKind::Generation, None, &headers)?;
    admit(&state, &auth, &mut spec, &req).await?;
    run(state, auth, JobKind::Generation, spec, delivery).await
}

/// Decodes an uploaded image with the server's upload limits, off the async threads.
pub(crate) async fn decode_upload(
    state: &AppState,
    bytes: &[u8],
    param: &'static str,
) -> ApiResult<DynamicImage> {
    let limits = crate::upload_limits(&state.config);
    let data = bytes.to_vec();
    Ok(
        tokio::task::spawn_blocking(move || codec::decode(&data, &limits, param))
            .await
            .map_err(ApiError::internal)??,
    )
}

/// Decodes an uploaded picture (not a mask) and runs the image safety layer on it.
pub(crate) async fn accept_upload(
    state: &AppState,
    auth: &Auth,
    bytes: &[u8],
    param: &'static str,
) -> ApiResult<DynamicImage> {
    let img = decode_upload(state, bytes, param).await?;
    crate::moderation::check_upload(state, auth, &img, param).await?;
    Ok(img)
}

/// Stores a decoded upload, re-encoded as PNG: what we keep is pixels we decoded, never the
/// client's file or its metadata. Returns the asset id.
pub(crate) async fn store_upload(
    state: &AppState,
    auth: &Auth,
    img: &RgbImage,
    param: &'static str,
) -> ApiResult<String> {
    let png = codec::encode(img, OutputFormat::Png, None, &[]).map_err(ApiError::internal)?;
    let asset = state
        .store
        .scoped(auth.tenant_id())
        .put_asset(
            NewAsset {
                kind: "upload",
                media_type: OutputFormat::Png.media_type().into(),
                width: img.width(),
                height: img.height(),
                job_id: None,
                metadata: serde_json::json!({"field": param}),
            },
            &png,
        )
        .await?;
    Ok(asset.id)
}

/// How much an edit changes when the request does not say: a masked area is repainted fully,
/// an unmasked edit keeps the composition, a variation stays close to its source.
pub(crate) fn default_strength(kind: JobKind, masked: bool) -> f64 {
    match (kind, masked) {
        (JobKind::Variation, _) => 0.5,
        (_, true) => 1.0,
        (_, false) => 0.6,
    }
}

async fn edit_like(
    state: AppState,
    auth: Auth,
    headers: HeaderMap,
    multipart: Multipart,
    kind: JobKind,
) -> ApiResult<Response> {
    auth.require(&state, Scope::ImagesEdit)?;
    let form = Form::read(multipart).await?;
    let files: &[&str] = if kind == JobKind::Edit {
        &["image", "mask"]
    } else {
        &["image"]
    };
    let req: ImageRequest = body::form_fields(&form, files, TYPED_FIELDS)?;
    let image = match form.files_named("image").as_slice() {
        [] => return Err(ApiError::invalid("image", "an image file is required")),
        [one] => accept_upload(&state, &auth, one, "image").await?.to_rgb8(),
        _ => {
            return Err(ApiError::invalid(
                "image",
                "NanoImg edits one image at a time (reference images belong to characters)",
            ))
        }
    };
    let mask = match form.files_named("mask").as_slice() {
        [] => None,
        [one] => Some(codec::mask_from(&decode_upload(&state, one, "mask").await?)),
        _ => return Err(ApiError::invalid("mask", "send at most one mask")),
    };
    if let Some(m) = &mask {
        if m.dimensions() != image.dimensions() {
            let ((mw, mh), (w, h)) = (m.dimensions(), image.dimensions());
            return Err(ApiError::invalid(
                "mask",
                format!("the mask is {mw}x{mh} but the image is {w}x{h}; they must match"),
            ));
        }
    }
    // Everything is checked before anything is stored; the ids are filled in below.
    let init = InitSpec {
        image: String::new(),
        mask: None,
        strength: default_strength(kind, mask.is_some()),
    };
    let (mut spec, delivery) = build_spec(&state, &req, kind, Some((init, image.dimensions())), &headers)?;
    if kind == JobKind::Edit {
        spec.plan = plan_prompt(&state, &auth, &spec.prompt, image.dimensions())
            .await?
            .map(|plan| PlanSpec {
                plan,
                instruction: spec.prompt.clone(),
                session: None,
            });
    }
    if req.dry_run == Some(true) {
        vet(&state, &auth, &mut spec, &req).await?;
        let strength = spec.init.as_ref().map_or(1.0, |i| i.strength);
        let plan = match &spec.plan {
            Some(p) => p.plan.clone(),
            None => EditPlan::new(vec![Op::Restyle {
                prompt: spec.prompt.clone(),
                strength: strength as f32,
            }]),
        };
        return Ok(Json(serde_json::json!({
            "dry_run": true, "plan": plan, "masked": mask.is_some(),
        }))
        .into_response());
    }
    admit(&state, &auth, &mut spec, &req).await?;
    let init = spec.init.as_mut().expect("edits have a starting image");
    init.image = store_upload(&state, &auth, &image, "image").await?;
    if let Some(m) = mask {
        let m = DynamicImage::ImageLuma8(m).to_rgb8();
        init.mask = Some(store_upload(&state, &auth, &m, "mask").await?);
    }
    run(state, auth, kind, spec, delivery).await
}

/// What an edit's prompt asks for, read by the planner. `None` when the prompt describes a
/// picture rather than changes to make (the planner would only restyle with it): that is the
/// classic OpenAI edit, one model pass with the whole prompt, the mask and `strength`. A plan
/// (crop, brighten, "make the sky a sunset", …) runs on the image, the mask limiting what the
/// model repaints. A prompt the planner refuses is refused here.
async fn plan_prompt(
    state: &AppState,
    auth: &Auth,
    prompt: &str,
    size: (u32, u32),
) -> ApiResult<Option<EditPlan>> {
    match state.planner.plan(prompt, size, &[]).await.map(|(p, _)| p) {
        Ok(Planned::Edit(p)) if matches!(p.ops.as_slice(), [Op::Restyle { .. }]) => Ok(None),
        Ok(Planned::Edit(p)) => {
            p.validate(size, &PlanLimits::default())
                .map_err(|e| ApiError::invalid("prompt", e.to_string()))?;
            Ok(Some(p))
        }
        Ok(Planned::Undo | Planned::Redo) => Err(ApiError::invalid(
            "prompt",
            "undo and redo need an edit session's history (POST /v1/edit-sessions)",
        )),
        Err(e) => Err(
            super::sessions::refused(state, auth, "/v1/images/edits", &e.to_string()).with_param("prompt"),
        ),
    }
}

/// `POST /v1/images/edits` (multipart: `image` or `image[]`, optional `mask`, `prompt`, …).
pub(crate) async fn edits(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    multipart: Multipart,
) -> ApiResult<Response> {
    edit_like(state, auth, headers, multipart, JobKind::Edit).await
}

/// `POST /v1/images/variations` (multipart: `image`, `n`, `size`, …).
pub(crate) async fn variations(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    multipart: Multipart,
) -> ApiResult<Response> {
    edit_like(state, auth, headers, multipart, JobKind::Variation).await
}
