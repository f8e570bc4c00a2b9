//! The OpenAI Images API: `POST /v1/images/generations` (JSON), `/v1/images/edits` and
//! `/v1/images/variations` (multipart). Requests become a [`JobSpec`] ([`crate::params`]), pass
//! the door ([`crate::admission`]), run as a job, and come back in OpenAI's response shape — or
//! as an SSE stream of partial and completed images with `stream: true`.

use super::body::{self, Form};
use super::{outcome, sse};
use crate::admission::{admit, plan_prompt, priced, vet};
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::jobs::{JobEvent, Output, Submitted};
use crate::params::{default_strength, lenient, Delivery, ImageRequest, IGNORED_HEADER, TYPED_FIELDS};
use crate::spec::{InitSpec, JobKind, JobSpec, PlanSpec};
use crate::state::AppState;
use crate::uploads;
use axum::body::Bytes;
use axum::extract::{Multipart, State};
use axum::http::HeaderMap;
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use image::DynamicImage;
use nanoimg_core::ImageSize;
use nanoimg_edit::{EditPlan, Op};
use nanoimg_engine::reference::MAX_REFERENCES;

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
    let mut run = outcome::submit(&state, &auth, kind, spec.clone()).await?;
    let created = nanoimg_store::ids::now_ms() / 1000;
    if delivery.stream {
        return Ok(stream(state, auth, kind, run, spec, delivery, created).into_response());
    }
    let end = run.outcome().await;
    outcome::audit_end(
        &state,
        &auth,
        (kind, &run.job.id),
        &spec,
        &end_user(&delivery),
        &end,
    )
    .await;
    let outputs = end?;
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
        "job_id": run.job.id,
        "plan": spec.plan.as_ref().map(|p| &p.plan),
    }))
    .into_response())
}

/// The end user the client named, for the audit log.
fn end_user(delivery: &Delivery) -> Vec<(&'static str, serde_json::Value)> {
    delivery
        .end_user
        .iter()
        .map(|u| ("end_user", u.clone().into()))
        .collect()
}

/// The OpenAI streaming shape: `image_generation.partial_image` events at evenly spaced steps,
/// then one `image_generation.completed` per image (`image_edit.*` for edits).
fn stream(
    state: AppState,
    auth: Auth,
    kind: JobKind,
    mut run: Submitted,
    spec: JobSpec,
    delivery: Delivery,
    created: i64,
) -> Sse<impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>> {
    let prefix = if kind == JobKind::Edit {
        "image_edit"
    } else {
        "image_generation"
    };
    let s = sse::channel(move |tx| async move {
        let mut sent_partials = 0u32;
        let base = serde_json::json!({
            "created_at": created, "size": spec.size.to_string(), "quality": delivery.quality,
            "background": delivery.background, "output_format": spec.output_format,
        });
        loop {
            let ev = run.next_event().await;
            if let JobEvent::Progress {
                image: 0,
                step,
                steps,
                preview: Some(p),
                ..
            } = &ev
            {
                let due = sent_partials < spec.partial_images
                    && *step * (spec.partial_images as usize + 1) >= *steps * (sent_partials as usize + 1);
                if !due {
                    continue;
                }
                if let Ok(bytes) = state.jobs.seal_partial(&run.job, p.clone()).await {
                    let mut data = base.clone();
                    data["type"] = format!("{prefix}.partial_image").into();
                    data["b64_json"] = base64::engine::general_purpose::STANDARD.encode(bytes).into();
                    data["partial_image_index"] = sent_partials.into();
                    sent_partials += 1;
                    if tx
                        .send(sse::event(&format!("{prefix}.partial_image"), &data))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                continue;
            }
            let Some(end) = ev.outcome() else { continue };
            outcome::audit_end(
                &state,
                &auth,
                (kind, &run.job.id),
                &spec,
                &end_user(&delivery),
                &end,
            )
            .await;
            match end {
                Ok(outputs) => {
                    for o in outputs.iter() {
                        let mut data = base.clone();
                        data["type"] = format!("{prefix}.completed").into();
                        data["b64_json"] = base64::engine::general_purpose::STANDARD
                            .encode(o.bytes.as_slice())
                            .into();
                        data["usage"] = usage(&spec, &outputs);
                        let _ = tx.send(sse::event(&format!("{prefix}.completed"), &data)).await;
                    }
                }
                Err(e) => {
                    let mut body = ApiError::from(e).body();
                    body["type"] = "error".into();
                    let _ = tx.send(sse::event("error", &body)).await;
                }
            }
            return;
        }
    });
    Sse::new(s).keep_alive(KeepAlive::default())
}

/// `POST /v1/images/generations`.
pub(crate) async fn generations(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let (fields, ignored) = lenient(body::json(&body)?)?;
    let req: ImageRequest = body::from_body_value(fields)?;
    let (mut spec, delivery) = req.build(&state, JobKind::Generation, None, &headers)?;
    admit(&state, &auth, &mut spec, req.character_strength).await?;
    let answer = run(state, auth, JobKind::Generation, spec, delivery).await?;
    Ok(naming_ignored(answer, &ignored))
}

/// The answer, with the fields the request sent that changed nothing named in a header.
fn naming_ignored(mut answer: Response, ignored: &[String]) -> Response {
    if ignored.is_empty() {
        return answer;
    }
    // Field names came from a parsed JSON body, so they may hold bytes a header cannot.
    if let Ok(v) = axum::http::HeaderValue::from_str(&ignored.join(", ")) {
        answer.headers_mut().insert(IGNORED_HEADER, v);
    }
    answer
}

async fn edit_like(
    state: AppState,
    auth: Auth,
    headers: HeaderMap,
    multipart: Multipart,
    kind: JobKind,
) -> ApiResult<Response> {
    let form = Form::read(multipart).await?;
    let files: &[&str] = if kind == JobKind::Edit {
        &["image", "mask"]
    } else {
        &["image"]
    };
    let (fields, ignored) = lenient(body::form_value(&form, files, TYPED_FIELDS)?)?;
    let req: ImageRequest = body::from_value(fields)?;
    // The mask first (it is small work): it is judged as it will be kept.
    let mask = match form.files_named("mask").as_slice() {
        [] => None,
        [one] => Some(uploads::accept_mask(&state, &auth, one).await?),
        _ => return Err(ApiError::invalid("mask", "send at most one mask")),
    };
    let images = form.files_named("image");
    let (image, references) = match (images.as_slice(), kind) {
        ([], _) => return Err(ApiError::invalid("image", "an image file is required")),
        ([_, _, ..], JobKind::Variation) => {
            return Err(ApiError::invalid("image", "a variation takes one image"))
        }
        ([first, rest @ ..], _) => {
            check_reference_count(rest.len(), &req)?;
            let image = uploads::accept(&state, &auth, first, "image").await?.to_rgb8();
            let mut references = Vec::with_capacity(rest.len());
            for r in rest {
                references.push(uploads::accept(&state, &auth, r, "image").await?.to_rgb8());
            }
            (image, references)
        }
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
    let (mut spec, delivery) = req.build(&state, kind, Some((init, image.dimensions())), &headers)?;
    // Marks the spec as conditioned (for pricing) before admission; the ids come once stored.
    spec.references = vec![String::new(); references.len()];
    if kind == JobKind::Edit {
        let model = Some(spec.model.as_str());
        spec.plan = plan_prompt(
            &state,
            &auth,
            &spec.prompt,
            image.dimensions(),
            spec.moderation,
            model,
        )
        .await?
        .map(|plan| PlanSpec {
            plan,
            instruction: spec.prompt.clone(),
            session: None,
        });
    }
    if req.dry_run == Some(true) {
        vet(&state, &auth, &mut spec, req.character_strength).await?;
        let strength = spec.init.as_ref().map_or(1.0, |i| i.strength);
        let plan = match &spec.plan {
            Some(p) => p.plan.clone(),
            None => EditPlan::new(vec![Op::Restyle {
                prompt: spec.prompt.clone(),
                strength: strength as f32,
            }]),
        };
        let cost = priced(&state, &auth, &spec)?;
        let answer = Json(serde_json::json!({
            "dry_run": true, "plan": plan, "masked": mask.is_some(), "megapixel_steps": cost,
        }));
        return Ok(naming_ignored(answer.into_response(), &ignored));
    }
    admit(&state, &auth, &mut spec, req.character_strength).await?;
    for (slot, r) in spec.references.iter_mut().zip(&references) {
        *slot = uploads::store(&state, &auth, r, "image").await?;
    }
    let init = spec.init.as_mut().expect("edits have a starting image");
    init.image = uploads::store(&state, &auth, &image, "image").await?;
    if let Some(m) = mask {
        let m = DynamicImage::ImageLuma8(m).to_rgb8();
        init.mask = Some(uploads::store(&state, &auth, &m, "mask").await?);
    }
    let answer = run(state, auth, kind, spec, delivery).await?;
    Ok(naming_ignored(answer, &ignored))
}

/// Most images one edit takes (OpenAI's limit): the first is edited, the rest are references.
pub(crate) const MAX_EDIT_IMAGES: usize = 16;

/// Refuses more references than the engine conditions on (with the characters named, which
/// take at least one each): dropping some would change the result silently.
fn check_reference_count(references: usize, req: &ImageRequest) -> ApiResult<()> {
    if references + 1 > MAX_EDIT_IMAGES {
        return Err(ApiError::invalid(
            "image",
            format!("at most {MAX_EDIT_IMAGES} images per edit"),
        ));
    }
    let characters = usize::from(req.character_id.is_some()) + req.character_ids.as_ref().map_or(0, Vec::len);
    let room = MAX_REFERENCES.saturating_sub(characters);
    if references > room {
        return Err(ApiError::invalid(
            "image",
            format!(
                "{references} reference images (after the one edited); NanoImg conditions an edit on at most \
                 {MAX_REFERENCES} reference images, one at least for each character named, so at most {room} here"
            ),
        ));
    }
    Ok(())
}

/// `POST /v1/images/edits` (multipart: `image` or `image[]` — the first is edited, the rest
/// condition it as references — optional `mask`, `prompt`, …).
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
