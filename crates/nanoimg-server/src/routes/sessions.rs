//! `/v1/edit-sessions`: an image edited turn by turn. Each instruction is planned (the built-in
//! planner, no network), validated, moderated and run as a job on the session's head (or any
//! version, which branches); the result becomes a new version. Undo, redo and checkout move the
//! head. The instruction is data: all it can ever produce is a plan of edits to that one image.

use super::body::{self, ListQuery};
use crate::admission::{admit, check_instruct, plan_instruction, plan_options, priced, refused, vet};
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::jobs::JobError;
use crate::params::GenerationParams;
use crate::spec::{InitSpec, JobKind, PlanSpec, SessionTarget};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use nanoimg_edit::planner::Planned;
use nanoimg_edit::EditPlan;
use nanoimg_store::{EditSession, EditVersion, Outcome};
use serde::Deserialize;
use serde_json::{json, Value};

fn version_json(v: &EditVersion) -> Value {
    json!({
        "id": v.id, "seq": v.seq, "parent_id": v.parent_id, "image_id": v.asset_id,
        "instruction": v.instruction, "plan": v.plan, "job_id": v.job_id,
        "created_at": v.created_at,
    })
}

fn session_json(s: &EditSession) -> Value {
    let versions: Vec<Value> = s.versions.iter().map(version_json).collect();
    json!({
        "id": s.id,
        "object": "edit_session",
        "head": s.head,
        "head_image_id": s.head_version().map(|v| v.asset_id.clone()),
        "can_undo": s.can_undo(),
        "can_redo": !s.redo.is_empty(),
        "created_at": s.created_at,
        "updated_at": s.updated_at,
        "versions": versions,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRequest {
    /// An image of the caller's: an upload (`POST /v1/assets`) or a generated output.
    image_id: String,
}

/// `POST /v1/edit-sessions` `{"image_id": …}` → 201 with the session (one version, the root).
pub(crate) async fn create(State(state): State<AppState>, auth: Auth, body: Bytes) -> ApiResult<Response> {
    let req: CreateRequest = body::json(&body)?;
    let scoped = state.store.scoped(auth.tenant_id());
    let session = scoped.create_session(&req.image_id).await.map_err(|e| match e {
        nanoimg_store::StoreError::NotFound(_) => {
            ApiError::invalid("image_id", format!("no image {:?}", req.image_id))
        }
        e => e.into(),
    })?;
    state
        .audit
        .record(auth.event(
            "edit_session.create",
            Some(session.id.clone()),
            Outcome::Success,
            json!({"image_id": req.image_id}),
        ))
        .await;
    Ok((StatusCode::CREATED, Json(session_json(&session))).into_response())
}

/// `GET /v1/edit-sessions`: most recently changed first.
pub(crate) async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let sessions = state
        .store
        .scoped(auth.tenant_id())
        .sessions(q.limit.unwrap_or(20))
        .await?;
    Ok(Json(json!({
        "object": "list",
        "data": sessions.iter().map(session_json).collect::<Vec<_>>(),
    })))
}

/// `GET /v1/edit-sessions/{id}`: the session, its versions (a tree by `parent_id`) and head.
pub(crate) async fn get(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let s = state.store.scoped(auth.tenant_id()).session(&id).await?;
    Ok(Json(session_json(&s)))
}

/// `DELETE /v1/edit-sessions/{id}`: the session, its versions and the images its instructions
/// made (the image it started from is left alone).
pub(crate) async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let scoped = state.store.scoped(auth.tenant_id());
    let made = scoped.delete_session(&id).await?;
    for asset in &made {
        match scoped.delete_asset(asset).await {
            Ok(()) | Err(nanoimg_store::StoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    state
        .audit
        .record(auth.event(
            "edit_session.delete",
            Some(id),
            Outcome::Success,
            json!({"images_deleted": made.len()}),
        ))
        .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v1/edit-sessions/{id}/undo`: the head goes back to its parent (409 at the root).
pub(crate) async fn undo(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let s = state.store.scoped(auth.tenant_id()).undo(&id).await?;
    Ok(Json(session_json(&s)))
}

/// `POST /v1/edit-sessions/{id}/redo`: forward again after an undo (409 if nothing to redo).
pub(crate) async fn redo(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let s = state.store.scoped(auth.tenant_id()).redo(&id).await?;
    Ok(Json(session_json(&s)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckoutRequest {
    version: String,
}

/// `POST /v1/edit-sessions/{id}/checkout` `{"version": …}`: any version becomes the head; the
/// next instruction branches from it.
pub(crate) async fn checkout(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let req: CheckoutRequest = body::json(&body)?;
    let s = state
        .store
        .scoped(auth.tenant_id())
        .checkout(&id, &req.version)
        .await?;
    Ok(Json(session_json(&s)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InstructionRequest {
    /// What to change, in plain language; "undo" and "redo" work too.
    instruction: Option<String>,
    /// Run this plan instead of planning an instruction (it is validated the same way). With
    /// an instruction too, the plan runs and the instruction is kept as its words: how a
    /// client applies the plan it previewed.
    plan: Option<Value>,
    /// Apply to this version instead of the head: a branch.
    from_version: Option<String>,
    /// Return the plan without running it.
    #[serde(default)]
    dry_run: bool,
    /// An image of the caller's (`POST /v1/assets`) that limits the plan's repainting (restyle
    /// and variation) to its white (or, with alpha, transparent) part: a brush mask. It is
    /// stretched to the image's size.
    mask_id: Option<String>,
    model: Option<String>,
    steps: Option<u32>,
    seed: Option<u64>,
    moderation: Option<String>,
    /// A character whose references condition the instruction's generative steps ("put Ada on
    /// a beach").
    character_id: Option<String>,
    character_strength: Option<f64>,
}

/// `POST /v1/edit-sessions/{id}/instructions`: plan → validate → moderate → run → new version
/// (201 with the session and the version). Undo and redo answer 200 with the session; a dry run
/// answers 200 with the plan. A refused instruction is 400 `instruction_refused` with the
/// reason, and nothing changes.
pub(crate) async fn instruct(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: InstructionRequest = body::json(&body)?;
    let scoped = state.store.scoped(auth.tenant_id());
    let session = scoped.session(&id).await?;
    let base = match &req.from_version {
        Some(v) => session
            .version(v)
            .ok_or_else(|| ApiError::invalid("from_version", format!("no version {v:?} in this session")))?,
        None => session
            .head_version()
            .ok_or_else(|| ApiError::internal("the session's head is not one of its versions"))?,
    };
    let image = scoped.asset(&base.asset_id).await.map_err(|_| {
        ApiError::conflict(
            "input_unavailable",
            format!(
                "version {}'s image was deleted; check out another version",
                base.id
            ),
        )
    })?;
    let size = (image.width as u32, image.height as u32);
    let mask = match &req.mask_id {
        Some(m) => Some(
            scoped
                .asset(m)
                .await
                .map_err(|e| match e {
                    nanoimg_store::StoreError::NotFound(_) => {
                        ApiError::invalid("mask_id", format!("no image {m:?}"))
                    }
                    e => e.into(),
                })?
                .id,
        ),
        None => None,
    };
    let (instruction, plan, planned_by) = match (&req.instruction, &req.plan) {
        (None, None) => return Err(ApiError::invalid("instruction", "say what to change")),
        // A plan as JSON; with an instruction, the words it was planned from (a previewed
        // plan, applied as shown) are kept as the version's, and moderated like any.
        (text, Some(p)) => {
            let plan: EditPlan = body::from_value(p.clone())?;
            let by = crate::planner::Provenance {
                source: "client",
                fallback_reason: None,
            };
            (text.clone().unwrap_or_else(|| "(plan)".to_owned()), plan, by)
        }
        (Some(text), None) => {
            let history = lineage(&session, &base.id);
            let strictness = crate::params::strictness(req.moderation.as_deref())?;
            let opts = plan_options(&state, req.model.as_deref());
            match plan_instruction(
                &state,
                &auth,
                text,
                size,
                &history,
                strictness,
                "instruction",
                opts,
            )
            .await?
            {
                Ok((Planned::Edit(plan), by)) => (text.clone(), plan, by),
                Ok((step, _)) => {
                    if req.from_version.is_some() || mask.is_some() {
                        let param = if mask.is_some() { "mask_id" } else { "from_version" };
                        return Err(ApiError::invalid(
                            param,
                            "undo and redo move the head; they take no version or mask",
                        ));
                    }
                    let undo = step == Planned::Undo;
                    if req.dry_run {
                        let action = if undo { "undo" } else { "redo" };
                        return Ok(Json(json!({"dry_run": true, "action": action})).into_response());
                    }
                    let s = if undo {
                        scoped.undo(&id).await?
                    } else {
                        scoped.redo(&id).await?
                    };
                    return Ok(Json(session_json(&s)).into_response());
                }
                Err(e) => return Err(refused(&state, &auth, &id, &e.to_string())),
            }
        }
    };
    let param = if req.plan.is_some() { "plan" } else { "instruction" };
    check_instruct(&state, req.model.as_deref(), &plan, param)?;
    plan.validate(size, &state.plan_limits(size)).map_err(|e| {
        ApiError::invalid(
            if req.plan.is_some() { "plan" } else { "instruction" },
            e.to_string(),
        )
    })?;
    let params = GenerationParams {
        prompt: Some(instruction.clone()),
        model: req.model.clone(),
        steps: req.steps,
        seed: req.seed,
        moderation: req.moderation.clone(),
        character_id: req.character_id.clone(),
        character_strength: req.character_strength,
        ..GenerationParams::default()
    };
    let masked = mask.is_some();
    let init = InitSpec {
        image: image.id.clone(),
        mask,
        strength: 1.0,
    };
    let mut spec = params.into_spec(&state, JobKind::Edit, Some((init, size)))?;
    spec.plan = Some(PlanSpec {
        plan: plan.clone(),
        instruction: instruction.clone(),
        session: Some(SessionTarget {
            session_id: session.id.clone(),
            parent_version: base.id.clone(),
        }),
    });
    if req.dry_run {
        vet(&state, &auth, &mut spec, req.character_strength).await?;
        let cost = priced(&state, &auth, &spec)?;
        return Ok(Json(json!({
            "dry_run": true, "from_version": base.id, "plan": plan, "planner": planned_by,
            "masked": masked, "megapixel_steps": cost,
        }))
        .into_response());
    }
    admit(&state, &auth, &mut spec, req.character_strength).await?;
    let mut run = state
        .jobs
        .submit(auth.job_owner(), JobKind::Edit, spec, false)
        .await?;
    let end = run.outcome().await;
    let ops: Vec<&str> = plan.ops.iter().map(nanoimg_edit::Op::name).collect();
    let (outcome, code) = match &end {
        Ok(_) => (Outcome::Success, None),
        Err(JobError::Cancelled) => (Outcome::Failure, Some("cancelled")),
        Err(e) => (Outcome::Failure, Some(e.code())),
    };
    state
        .audit
        .record(auth.event(
            "edit_session.instruction",
            Some(id.clone()),
            outcome,
            json!({"job": run.job.id, "ops": ops, "from_version": base.id, "code": code}),
        ))
        .await;
    let version = end?
        .first()
        .and_then(|o| o.version.clone())
        .ok_or_else(|| ApiError::internal("the edit made no version"))?;
    let s = scoped.session(&id).await?;
    let v = s
        .version(&version)
        .ok_or_else(|| ApiError::internal("the new version is not in the session"))?;
    let mut out = session_json(&s);
    out["planner"] = json!(planned_by);
    out["version"] = version_json(v);
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// The instructions that made `version`, oldest first (the planner's history).
fn lineage(s: &EditSession, version: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = s.version(version);
    while let Some(v) = at {
        // Plans sent as JSON have no instruction to read again.
        out.extend(v.instruction.clone().filter(|i| i != "(plan)"));
        at = v.parent_id.as_deref().and_then(|p| s.version(p));
    }
    out.reverse();
    out
}
