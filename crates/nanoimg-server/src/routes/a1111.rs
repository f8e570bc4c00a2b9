//! The Automatic1111 web UI's API (`/sdapi/v1/*`), for the apps and bots that speak it
//! (`webuiapi`, LibreChat's SD setting, many plugins): a thin layer that turns A1111's request
//! into the same [`GenerationParams`] the OpenAI routes build, so it passes the same door —
//! admission, moderation, limits, audit — and its images carry the same watermark and C2PA
//! manifest. A1111's settings that would change the picture and that NanoImg cannot honour
//! (hires fix, face restoration, tiling, variation seeds, scripts, styles) are refused by name
//! rather than ignored; the many fields that are off by default are read and dropped.
//!
//! `sd_model_checkpoint` (in `POST /options`, or a request's `override_settings`) chooses the
//! model per tenant, never for the whole server.

use super::{body, outcome};
use crate::admission::admit;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::jobs::output_record;
use crate::params::{default_strength, GenerationParams};
use crate::spec::{InitSpec, JobKind, JobSpec};
use crate::state::AppState;
use crate::uploads;
use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use base64::Engine as _;
use image::DynamicImage;
use nanoimg_core::SchedulerName;
use nanoimg_store::Outcome;
use serde::Deserialize;
use serde_json::{json, Value};

/// What A1111's `txt2img` and `img2img` bodies carry that NanoImg reads; everything else in the
/// body is read by [`refuse_unsupported`] or dropped.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct A1111Request {
    prompt: String,
    negative_prompt: String,
    seed: Option<i64>,
    sampler_name: Option<String>,
    sampler_index: Option<String>,
    scheduler: Option<String>,
    batch_size: Option<u32>,
    n_iter: Option<u32>,
    steps: Option<u32>,
    cfg_scale: Option<f64>,
    width: Option<u32>,
    height: Option<u32>,
    override_settings: Option<serde_json::Map<String, Value>>,
    // img2img
    init_images: Vec<String>,
    mask: Option<String>,
    denoising_strength: Option<f64>,
    inpainting_mask_invert: Option<u8>,
    // A1111's refiner: a checkpoint title and the fraction of steps before it takes over.
    refiner_checkpoint: Option<String>,
    refiner_switch_at: Option<f64>,
}

/// Settings that change the picture and that NanoImg does not do, with the value that means
/// "off" and what to say.
fn unsupported() -> Vec<(&'static str, Value, &'static str)> {
    vec![
        (
            "enable_hr",
            json!(false),
            "hires fix is not available; ask for the size you want",
        ),
        ("restore_faces", json!(false), "face restoration is not available"),
        ("tiling", json!(false), "tiling is not available"),
        (
            "subseed_strength",
            json!(0.0),
            "variation seeds are not available",
        ),
        ("script_name", Value::Null, "scripts are not available"),
        (
            "styles",
            json!([]),
            "saved styles are not available; put the words in the prompt",
        ),
        (
            "alwayson_scripts",
            json!({}),
            "extensions (alwayson_scripts) are not available",
        ),
        ("controlnet_units", json!([]), "ControlNet is not available"),
    ]
}

/// 400 for a setting NanoImg would otherwise silently not do.
fn refuse_unsupported(body: &serde_json::Map<String, Value>) -> ApiResult<()> {
    for (field, off, why) in unsupported() {
        let Some(v) = body.get(field) else { continue };
        let is_off = v.is_null()
            || *v == off
            || (off.is_number() && v.as_f64() == off.as_f64())
            || (v.is_string() && v.as_str() == Some(""));
        if !is_off {
            return Err(ApiError::invalid(field, why));
        }
    }
    Ok(())
}

/// A1111's model title (`name.safetensors [hash]`) or name, as the catalog's name.
fn model_name(title: &str) -> String {
    let t = title.trim();
    let t = t.split(" [").next().unwrap_or(t);
    let t = t.rsplit('/').next().unwrap_or(t);
    t.strip_suffix(".safetensors").unwrap_or(t).to_owned()
}

/// A1111's sampler (and schedule type) as ours.
fn sampler(req: &A1111Request) -> ApiResult<Option<String>> {
    let Some(name) = req.sampler_name.as_deref().or(req.sampler_index.as_deref()) else {
        return Ok(None);
    };
    let s: SchedulerName = name.parse().map_err(|_| {
        ApiError::invalid(
            "sampler_name",
            format!("unknown sampler {name:?}; GET /sdapi/v1/samplers lists them"),
        )
    })?;
    let schedule = req
        .scheduler
        .as_deref()
        .unwrap_or("automatic")
        .to_ascii_lowercase();
    let fits = match s.a1111().1 {
        Some(own) => schedule == "automatic" || schedule == own.to_ascii_lowercase(),
        None => schedule == "automatic",
    };
    if !fits {
        return Err(ApiError::invalid(
            "scheduler",
            format!("{name} runs with its own schedule here; send scheduler \"automatic\""),
        ));
    }
    Ok(Some(s.as_str().to_owned()))
}

async fn params(state: &AppState, auth: &Auth, req: &A1111Request) -> ApiResult<GenerationParams> {
    let chosen = match req
        .override_settings
        .as_ref()
        .and_then(|o| o.get("sd_model_checkpoint"))
    {
        Some(Value::String(t)) => Some(model_name(t)),
        Some(_) => {
            return Err(ApiError::invalid(
                "override_settings",
                "sd_model_checkpoint is a model title",
            ))
        }
        None => state.store.scoped(auth.tenant_id()).default_model().await?,
    };
    let n = req.batch_size.unwrap_or(1).max(1) * req.n_iter.unwrap_or(1).max(1);
    // No refiner is `null`, "" or "None", as A1111's UI sends it.
    let refiner = req
        .refiner_checkpoint
        .as_deref()
        .filter(|t| !t.trim().is_empty() && *t != "None")
        .map(model_name);
    let size = match (req.width, req.height) {
        (None, None) => None,
        (w, h) => Some(format!("{}x{}", w.unwrap_or(512), h.unwrap_or(512))),
    };
    Ok(GenerationParams {
        model: chosen,
        prompt: Some(req.prompt.clone()),
        negative_prompt: Some(req.negative_prompt.clone()),
        n: Some(n),
        size,
        steps: req.steps,
        guidance: req.cfg_scale,
        scheduler: sampler(req)?,
        // A1111 draws a random seed for -1.
        seed: match req.seed {
            Some(s) if s >= 0 => Some(s as u64),
            _ => None,
        },
        // A1111 sends denoising_strength with txt2img too (for hires fix); img2img sets it.
        strength: None,
        output_format: Some("png".into()),
        // A1111 sends refiner_switch_at with or without a refiner (its default is 0.8).
        refiner_switch_at: req.refiner_switch_at.filter(|_| refiner.is_some()),
        refiner,
        ..Default::default()
    })
}

/// A base64 image as A1111 clients send it: bare, or as a `data:` URL.
fn b64_image(field: &'static str, s: &str) -> ApiResult<Vec<u8>> {
    let data = match s.split_once(";base64,") {
        Some((head, data)) if head.starts_with("data:") => data,
        _ => s,
    };
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|_| ApiError::invalid(field, "not base64 image data"))
}

/// Parses a body, refusing what cannot be honoured.
fn read(bytes: &Bytes) -> ApiResult<(A1111Request, serde_json::Map<String, Value>)> {
    let value: Value = body::json(bytes)?;
    let Value::Object(map) = value else {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the body must be a JSON object",
        ));
    };
    refuse_unsupported(&map)?;
    let req: A1111Request = body::from_body_value(Value::Object(map.clone()))?;
    Ok((req, map))
}

/// Runs the job and answers as A1111 does: base64 PNGs, the request echoed as `parameters`,
/// and `info` as a JSON string with the seeds and each image's infotext.
async fn answer(
    state: AppState,
    auth: Auth,
    kind: JobKind,
    spec: JobSpec,
    parameters: serde_json::Map<String, Value>,
) -> ApiResult<Json<Value>> {
    let mut run = outcome::submit(&state, &auth, kind, spec.clone()).await?;
    let end = run.outcome().await;
    let via = [("api", json!("a1111"))];
    outcome::audit_end(&state, &auth, (kind, &run.job.id), &spec, &via, &end).await;
    let outputs = end?;
    let seeds: Vec<u64> = outputs.iter().map(|o| o.seed).collect();
    let (name, _) = spec.scheduler.a1111();
    // Each image's infotext is the `parameters` text its PNG carries.
    let infotexts: Vec<String> = outputs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            output_record(&spec, o.seed, i, spec.vae)
                .parameters((o.asset.width as u32, o.asset.height as u32))
        })
        .collect();
    let info = json!({
        "prompt": spec.prompt, "all_prompts": vec![&spec.prompt; outputs.len()],
        "negative_prompt": spec.negative_prompt, "all_negative_prompts": vec![&spec.negative_prompt; outputs.len()],
        "seed": seeds.first(), "all_seeds": seeds, "subseed": -1, "all_subseeds": vec![-1; outputs.len()],
        "width": spec.size.width, "height": spec.size.height, "sampler_name": name, "cfg_scale": spec.guidance,
        "steps": spec.steps, "batch_size": outputs.len(), "sd_model_name": spec.model, "infotexts": infotexts,
        "job_id": run.job.id, "images": outputs.iter().map(|o| &o.asset.id).collect::<Vec<_>>(),
    });
    let images: Vec<String> = outputs
        .iter()
        .map(|o| base64::engine::general_purpose::STANDARD.encode(o.bytes.as_slice()))
        .collect();
    Ok(Json(json!({
        "images": images,
        "parameters": parameters,
        "info": info.to_string(),
    })))
}

/// `POST /sdapi/v1/txt2img`.
pub(crate) async fn txt2img(
    State(state): State<AppState>,
    auth: Auth,
    bytes: Bytes,
) -> ApiResult<Json<Value>> {
    let (req, parameters) = read(&bytes)?;
    if !req.init_images.is_empty() {
        return Err(ApiError::invalid(
            "init_images",
            "txt2img takes no image; use /sdapi/v1/img2img",
        ));
    }
    let p = params(&state, &auth, &req).await?;
    let mut spec = p.into_spec(&state, JobKind::Generation, None)?;
    admit(&state, &auth, &mut spec, None).await?;
    answer(state, auth, JobKind::Generation, spec, parameters).await
}

/// `POST /sdapi/v1/img2img` (with `mask` for inpainting).
pub(crate) async fn img2img(
    State(state): State<AppState>,
    auth: Auth,
    bytes: Bytes,
) -> ApiResult<Json<Value>> {
    let (req, parameters) = read(&bytes)?;
    let first = match req.init_images.as_slice() {
        [] => {
            return Err(ApiError::invalid(
                "init_images",
                "img2img needs one image in init_images",
            ))
        }
        [one] => one,
        _ => {
            return Err(ApiError::invalid(
                "init_images",
                "NanoImg edits one image at a time",
            ))
        }
    };
    let mask = match req.mask.as_deref().filter(|m| !m.is_empty()) {
        None => None,
        Some(m) => {
            let mut mask = uploads::accept_mask(&state, &auth, &b64_image("mask", m)?).await?;
            if req.inpainting_mask_invert == Some(1) {
                image::imageops::invert(&mut mask);
            }
            Some(mask)
        }
    };
    let image = uploads::accept(&state, &auth, &b64_image("init_images", first)?, "init_images")
        .await?
        .to_rgb8();
    if let Some(m) = &mask {
        if m.dimensions() != image.dimensions() {
            return Err(ApiError::invalid(
                "mask",
                "the mask and the image must be the same size",
            ));
        }
    }
    let mut p = params(&state, &auth, &req).await?;
    p.strength = Some(req.denoising_strength.unwrap_or(0.75));
    let init = InitSpec {
        image: String::new(),
        mask: None,
        strength: default_strength(JobKind::Edit, mask.is_some()),
    };
    let mut spec = p.into_spec(&state, JobKind::Edit, Some((init, image.dimensions())))?;
    admit(&state, &auth, &mut spec, None).await?;
    let init = spec.init.as_mut().expect("img2img has a starting image");
    init.image = uploads::store(&state, &auth, &image, "image").await?;
    if let Some(m) = mask {
        init.mask =
            Some(uploads::store(&state, &auth, &DynamicImage::ImageLuma8(m).to_rgb8(), "mask").await?);
    }
    answer(state, auth, JobKind::Edit, spec, parameters).await
}

/// `GET /sdapi/v1/sd-models`: the models, as A1111 lists checkpoints.
pub(crate) async fn sd_models(State(state): State<AppState>, _auth: Auth) -> Json<Value> {
    let models: Vec<Value> = state
        .catalog
        .entries()
        .iter()
        .map(|e| {
            json!({
                "title": e.name, "model_name": e.name, "hash": null, "sha256": null,
                "filename": e.info.path.file_name().map(|f| f.to_string_lossy().into_owned()),
                "config": null,
            })
        })
        .collect();
    Json(Value::Array(models))
}

/// `GET /sdapi/v1/samplers`.
pub(crate) async fn samplers(_auth: Auth) -> Json<Value> {
    let list: Vec<Value> = SchedulerName::ALL
        .iter()
        .map(|s| {
            let (name, schedule) = s.a1111();
            json!({"name": name, "aliases": [s.as_str()], "options": schedule.map_or(json!({}), |t| json!({"scheduler": t.to_ascii_lowercase()}))})
        })
        .collect();
    Json(Value::Array(list))
}

/// `POST /sdapi/v1/interrupt`: A1111's Stop. A1111 has one queue per user, so Stop means every
/// job this tenant has queued or running: waiting ones end at once, running ones at their next
/// step (their requests answer with the cancellation). Other tenants' jobs are not touched.
pub(crate) async fn interrupt(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    let active = state.store.system().active_jobs(auth.tenant_id()).await?;
    for id in active {
        if state.jobs.cancel(auth.tenant_id(), &id).await? {
            state
                .audit
                .record(auth.event(
                    "job.cancel",
                    Some(id),
                    Outcome::Success,
                    json!({"via": "/sdapi/v1/interrupt"}),
                ))
                .await;
        }
    }
    Ok(Json(Value::Null))
}

/// `GET /sdapi/v1/loras`: the library's LoRAs, each with its trigger words (A1111's
/// "activation text"). The path is the file's name only: the server's folders stay its own.
pub(crate) async fn loras(State(state): State<AppState>, _auth: Auth) -> ApiResult<Json<Value>> {
    let library = state.catalog.loras().clone();
    let list = tokio::task::spawn_blocking(move || library.list())
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(Value::Array(
        list.into_iter()
            .map(|e| {
                json!({
                    "name": e.name, "alias": e.name, "path": format!("{}.safetensors", e.name),
                    "metadata": {"activation text": e.trigger_words().join(", "), "size": e.size},
                })
            })
            .collect(),
    )))
}

/// `GET /sdapi/v1/options`: the settings a client reads — the tenant's model.
pub(crate) async fn get_options(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    let chosen = state.store.scoped(auth.tenant_id()).default_model().await?;
    let model = state
        .catalog
        .pick(chosen.as_deref())
        .or_else(|| state.catalog.pick(None))
        .map(|e| e.name.clone());
    Ok(Json(
        json!({"sd_model_checkpoint": model, "samples_format": "png"}),
    ))
}

/// `POST /sdapi/v1/options`: `sd_model_checkpoint` sets the tenant's model; other settings are
/// server-side in NanoImg and are refused by name.
pub(crate) async fn set_options(
    State(state): State<AppState>,
    auth: Auth,
    bytes: Bytes,
) -> ApiResult<Json<Value>> {
    let Value::Object(map) = body::json::<Value>(&bytes)? else {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the body must be a JSON object",
        ));
    };
    let mut model = None;
    for (k, v) in &map {
        match (k.as_str(), v) {
            ("sd_model_checkpoint", Value::String(t)) => {
                let name = model_name(t);
                if !state.catalog.entries().iter().any(|e| e.name == name) {
                    return Err(ApiError::invalid(
                        "sd_model_checkpoint",
                        format!("no model named {name:?}; GET /sdapi/v1/sd-models lists them"),
                    ));
                }
                model = Some(name);
            }
            ("samples_format", Value::String(f)) if f == "png" => {}
            (other, _) => {
                return Err(ApiError::invalid(
                    other.to_owned(),
                    "NanoImg's settings are the server's; only sd_model_checkpoint can be set here",
                ))
            }
        }
    }
    if let Some(m) = &model {
        state
            .store
            .scoped(auth.tenant_id())
            .set_default_model(Some(m))
            .await?;
        state
            .audit
            .record(auth.event("tenant.model_set", None, Outcome::Success, json!({"model": m})))
            .await;
    }
    Ok(Json(Value::Null))
}

/// `GET /sdapi/v1/progress`: the tenant's jobs — how many are queued or running, and how far
/// the running one is.
pub(crate) async fn progress(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    let active = state.store.system().active_jobs(auth.tenant_id()).await?;
    let mut done = 0.0;
    let (mut step, mut steps, mut job) = (0, 0, String::new());
    for id in &active {
        if let Some(p) = state
            .jobs
            .watch(auth.tenant_id(), id)
            .await
            .and_then(|l| l.progress())
        {
            let (image, images, s, ss) = p;
            (step, steps, job) = (s, ss, id.clone());
            done = (image as f64 + s as f64 / ss.max(1) as f64) / images.max(1) as f64;
            break;
        }
    }
    Ok(Json(json!({
        "progress": done,
        "eta_relative": 0.0,
        "state": {
            "skipped": false, "interrupted": false, "job": job, "job_count": active.len(),
            "job_timestamp": "0", "job_no": 0, "sampling_step": step, "sampling_steps": steps,
        },
        "current_image": null,
        "textinfo": null,
    })))
}
