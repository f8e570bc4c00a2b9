//! NanoImg's own job API: `POST /v1/jobs` submits and returns at once, `GET /v1/jobs/{id}`
//! reads, `GET /v1/jobs/{id}/events` streams progress as SSE, `DELETE /v1/jobs/{id}` cancels.

use super::body::{self, ListQuery};
use super::sse;
use crate::admission::admit;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::jobs::JobEvent;
use crate::params::{default_strength, ImageRequest};
use crate::spec::{InitSpec, JobKind};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use nanoimg_store::{Job, Outcome, Scope};
use tokio::sync::broadcast;

/// A job request: the generation fields, plus an optional starting image by asset id.
pub(crate) struct JobRequest {
    pub request: ImageRequest,
    /// An uploaded asset to start from (img2img / inpainting).
    pub image: Option<String>,
    /// An uploaded mask asset: white (or transparent) = repaint.
    pub mask: Option<String>,
}

impl JobRequest {
    fn parse(bytes: &Bytes) -> ApiResult<Self> {
        let mut v: serde_json::Value = body::json(bytes)?;
        let obj = v
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("invalid_json", "the body must be a JSON object"))?;
        let mut take = |k: &str| -> ApiResult<Option<String>> {
            match obj.remove(k) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(ApiError::invalid(k, "expected an asset id")),
            }
        };
        let (image, mask) = (take("image")?, take("mask")?);
        let request = body::from_value(v)?;

        Ok(Self { request, image, mask })
    }
}

fn job_json(j: &Job) -> serde_json::Value {
    serde_json::json!({
        "id": j.id,
        "object": "job",
        "kind": j.kind,
        "status": j.status,
        "params": j.params,
        "result": j.result,
        "error": j.error,
        "created_at": j.created_at,
        "started_at": j.started_at,
        "finished_at": j.finished_at,
    })
}

/// `POST /v1/jobs` → 202 with the job.
pub(crate) async fn create(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let req = JobRequest::parse(&body)?;
    if req.request.stream.is_some() || req.request.partial_images.is_some() {
        return Err(ApiError::invalid(
            "stream",
            "jobs stream through GET /v1/jobs/{id}/events; leave stream out",
        ));
    }
    let scoped = state.store.scoped(auth.tenant_id());
    let (kind, init) = match (&req.image, &req.mask) {
        (None, Some(_)) => return Err(ApiError::invalid("mask", "a mask needs an image")),
        (None, None) => (JobKind::Generation, None),
        (Some(image), mask) => {
            auth.require(&state, Scope::ImagesEdit)?;
            let img = scoped
                .asset(image)
                .await
                .map_err(|_| ApiError::invalid("image", format!("no image asset {image:?}")))?;
            if let Some(m) = mask {
                let mk = scoped
                    .asset(m)
                    .await
                    .map_err(|_| ApiError::invalid("mask", format!("no image asset {m:?}")))?;
                if (mk.width, mk.height) != (img.width, img.height) {
                    return Err(ApiError::invalid("mask", "the mask and the image differ in size"));
                }
            }
            let init = InitSpec {
                image: img.id.clone(),
                mask: mask.clone(),
                strength: default_strength(JobKind::Edit, mask.is_some()),
            };
            (JobKind::Edit, Some((init, (img.width as u32, img.height as u32))))
        }
    };
    let mut spec = req.request.build(&state, kind, init, &headers)?.0;
    admit(&state, &auth, &mut spec, req.request.character_strength).await?;
    let job = state
        .jobs
        .submit(auth.job_owner(), kind, spec, true)
        .await?
        .detach();
    state
        .audit
        .record(auth.event(
            "job.create",
            Some(job.id.clone()),
            Outcome::Success,
            serde_json::json!({"kind": kind.as_str()}),
        ))
        .await;
    let rec = scoped.job(&job.id).await?;
    Ok((StatusCode::ACCEPTED, Json(job_json(&rec))).into_response())
}

/// `GET /v1/jobs`: the most recent jobs.
pub(crate) async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let jobs = state
        .store
        .scoped(auth.tenant_id())
        .jobs(q.limit.unwrap_or(20))
        .await?;
    Ok(Json(serde_json::json!({
        "object": "list",
        "data": jobs.iter().map(job_json).collect::<Vec<_>>(),
    })))
}

/// `GET /v1/jobs/{id}`.
pub(crate) async fn get(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let job = state.store.scoped(auth.tenant_id()).job(&id).await?;
    Ok(Json(job_json(&job)))
}

/// `DELETE /v1/jobs/{id}`: cancels a queued or running job.
pub(crate) async fn cancel(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let scoped = state.store.scoped(auth.tenant_id());
    let before = scoped.job(&id).await?;
    if !state.jobs.cancel(auth.tenant_id(), &id).await? {
        return Err(ApiError::conflict(
            "job_finished",
            format!("the job is already {}", before.status),
        ));
    }
    state
        .audit
        .record(auth.event(
            "job.cancel",
            Some(id.clone()),
            Outcome::Success,
            serde_json::json!({}),
        ))
        .await;
    // A waiting job is cancelled already; a running one stops at its next step (watch its
    // events or read it again).
    Ok(Json(job_json(&scoped.job(&id).await?)))
}

fn event_json(e: &JobEvent) -> (&'static str, serde_json::Value) {
    match e {
        JobEvent::Started => ("started", serde_json::json!({"status": "running"})),
        JobEvent::Progress {
            image,
            images,
            step,
            steps,
            preview,
        } => {
            let preview = preview.as_ref().and_then(|p| {
                nanoimg_engine::codec::encode(p, nanoimg_engine::codec::OutputFormat::Png, None, &[])
                    .ok()
                    .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
            });
            (
                "progress",
                serde_json::json!({
                    "image": image, "images": images, "step": step, "steps": steps,
                    "preview_png_b64": preview,
                }),
            )
        }
        JobEvent::Succeeded(outs) => (
            "succeeded",
            serde_json::json!({
                "status": "succeeded",
                "images": outs.iter().map(|o| serde_json::json!({"id": o.asset.id, "seed": o.seed})).collect::<Vec<_>>(),
            }),
        ),
        JobEvent::Failed(e) => (
            "failed",
            serde_json::json!({"status": "failed", "code": e.code(), "error": e.to_string()}),
        ),
        JobEvent::Cancelled => ("cancelled", serde_json::json!({"status": "cancelled"})),
    }
}

/// `GET /v1/jobs/{id}/events`: `status` first (the job as it is now), then `started`,
/// `progress` (with a small preview PNG), and one final `succeeded` / `failed` / `cancelled`.
pub(crate) async fn events(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    // Subscribe before reading the record, so nothing falls between the two.
    let live = state.jobs.watch(auth.tenant_id(), &id).await;
    let rx = live.as_ref().map(|j| j.subscribe());
    let rec = state.store.scoped(auth.tenant_id()).job(&id).await?;
    let s = sse::channel(move |tx| async move {
        let first = Event::default().event("status").data(job_json(&rec).to_string());
        if tx.send(first).await.is_err() || rec.status.is_final() {
            return;
        }
        let Some(mut rx) = rx else { return };
        loop {
            match rx.recv().await {
                Ok(e) => {
                    let (name, data) = event_json(&e);
                    if tx
                        .send(Event::default().event(name).data(data.to_string()))
                        .await
                        .is_err()
                        || e.is_final()
                    {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Ok(Sse::new(s).keep_alive(KeepAlive::default()).into_response())
}
