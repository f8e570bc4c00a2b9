//! The door between a parsed request and the queue: a request's characters are looked up in the
//! caller's tenant, every text it carries is moderated, and its images are charged to the key's
//! budget — in that order, so a refused request costs nothing. Edits' prompts are read by the
//! planner here too, and a refused instruction is audited.

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::planner::Provenance;
use crate::spec::JobSpec;
use crate::state::AppState;
use nanoimg_edit::planner::{PlanOptions, Planned};
use nanoimg_edit::{EditError, EditPlan, Op};
use nanoimg_safety::Strictness;
use nanoimg_store::{Outcome, StoreError};
use serde_json::json;

/// The door every validated request passes before it is queued: moderation first (a blocked
/// prompt costs nothing), then the job's cost against the per-job cap, then the tenant's image
/// and compute budgets.
pub(crate) async fn admit(
    state: &AppState,
    auth: &Auth,
    spec: &mut JobSpec,
    character_strength: Option<f64>,
) -> ApiResult<()> {
    vet(state, auth, spec, character_strength).await?;
    let cost = priced(state, auth, spec)?;
    check_storage(state, auth).await?;
    charge_images(state, auth, spec.n)?;
    charge_compute(state, auth, cost)
}

/// Where a limit of the tenant comes from, for messages: its own override `own` (when it has
/// one), else the server's setting `rate.{server}`.
fn source<T>(override_: Option<T>, own: &str, server: &str) -> String {
    match override_ {
        Some(_) => format!("the tenant's {own}"),
        None => format!("rate.{server}"),
    }
}

/// 507 `storage_quota_exceeded` once the tenant keeps its quota of image bytes
/// (`rate.max_stored_bytes_per_tenant`, or its own `max_stored_bytes`): checked once per request
/// that stores (every admitted job here, an asset upload and a character in their routes), so a
/// tenant overshoots by at most what one request adds.
pub(crate) async fn check_storage(state: &AppState, auth: &Auth) -> ApiResult<()> {
    let quota = auth.limits.max_stored_bytes;
    let kept = state.store.scoped(auth.tenant_id()).stored_bytes().await?;
    if u64::try_from(kept).unwrap_or(0) < quota {
        return Ok(());
    }
    auth.rejected(state, "storage_quota", json!({"kept": kept, "quota": quota}));
    Err(ApiError::new(
        axum::http::StatusCode::INSUFFICIENT_STORAGE,
        "insufficient_quota",
        "storage_quota_exceeded",
        format!(
            "this tenant keeps {kept} bytes of images and may keep {quota} ({}); delete images to \
             make room",
            source(
                auth.principal.tenant.limits.max_stored_bytes,
                "max_stored_bytes",
                "max_stored_bytes_per_tenant"
            )
        ),
    ))
}

/// The job's cost in megapixel-steps, or 400 `job_too_costly` naming the cost and the cap.
/// Dry runs are priced too, so a client learns before it asks.
pub(crate) fn priced(state: &AppState, auth: &Auth, spec: &JobSpec) -> ApiResult<u32> {
    // Priced at what the model draws: a model with a largest size draws larger requests within
    // it (and they are resampled), so they cost what it draws.
    let drawn = match state.catalog.pick(Some(&spec.model)) {
        Some(m) => m.info.capped(&state.config.limits).max_pixels,
        None => state.config.limits.max_pixels,
    };
    let cost = crate::cost::megapixel_steps(spec, drawn);
    let cap = auth.limits.max_job_megapixel_steps;
    if cost > f64::from(cap) {
        state.metrics.reject("job_too_costly");
        let from = source(
            auth.principal.tenant.limits.max_job_megapixel_steps,
            "max_job_megapixel_steps",
            "max_job_megapixel_steps",
        );
        return Err(ApiError::bad_request(
            "job_too_costly",
            format!(
                "this job would cost {cost:.1} megapixel-steps (pixels × steps × images × passes); \
                 one job may cost at most {cap} ({from}): ask for fewer or smaller images, fewer \
                 steps or fewer generative edits"
            ),
        ));
    }
    // At least one token, so that every job draws on the budget.
    Ok((cost.ceil() as u32).max(1))
}

/// Takes `cost` megapixel-steps from the tenant's per-minute compute budget.
pub(crate) fn charge_compute(state: &AppState, auth: &Auth, cost: u32) -> ApiResult<()> {
    let per_minute = auth.limits.megapixel_steps_per_minute;
    let d = state.compute_limiter.check(auth.tenant_id(), per_minute, cost);
    if d.allowed {
        return Ok(());
    }
    auth.rejected(
        state,
        "compute_per_minute",
        serde_json::json!({"limit": d.limit, "asked": cost}),
    );
    Err(ApiError::rate_limited(
        "compute_budget_exceeded",
        format!(
            "this job costs {cost} megapixel-steps and the tenant has {} of its {} a minute left \
             ({}); try again in {:.0} s",
            d.remaining,
            d.limit,
            source(
                auth.principal.tenant.limits.megapixel_steps_per_minute,
                "megapixel_steps_per_minute",
                "megapixel_steps_per_minute"
            ),
            d.retry_after.min(60.0).ceil()
        ),
        d.retry_after.min(60.0),
    ))
}

/// The checks a dry run makes too: the characters exist and are the caller's, and every text
/// (prompts, instruction, plan, character descriptions) passes moderation.
pub(crate) async fn vet(
    state: &AppState,
    auth: &Auth,
    spec: &mut JobSpec,
    character_strength: Option<f64>,
) -> ApiResult<()> {
    resolve_characters(state, auth, spec, character_strength).await?;
    resolve_loras(state, spec).await?;
    crate::moderation::check_prompt(state, auth, spec).await
}

/// Takes `n` images from the tenant's per-minute image budget (one budget for all its keys, so
/// minting keys gains nothing).
fn charge_images(state: &AppState, auth: &Auth, n: u32) -> ApiResult<()> {
    let d = state
        .image_limiter
        .check(auth.tenant_id(), auth.limits.images_per_minute, n);
    if d.allowed {
        return Ok(());
    }
    auth.rejected(
        state,
        "images_per_minute",
        serde_json::json!({"limit": d.limit, "asked": n}),
    );
    let msg = if d.retry_after.is_infinite() {
        format!(
            "this tenant's keys may make {} images a minute together; ask for fewer",
            d.limit
        )
    } else {
        format!(
            "this tenant's keys may make {} images a minute together; {} left; try again in {:.0} s",
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

/// Looks up the spec's characters in the caller's tenant and fixes their description, strength
/// and seed; an unknown id (or another tenant's) is a 400 naming it.
async fn resolve_characters(
    state: &AppState,
    auth: &Auth,
    spec: &mut JobSpec,
    strength: Option<f64>,
) -> ApiResult<()> {
    let param = if spec.characters.len() > 1 {
        "character_ids"
    } else {
        "character_id"
    };
    let scoped = state.store.scoped(auth.tenant_id());
    for use_ in &mut spec.characters {
        let c = scoped.character(&use_.id).await.map_err(|e| match e {
            StoreError::NotFound(_) => ApiError::invalid(param, format!("no character {:?}", use_.id)),
            e => e.into(),
        })?;
        use_.name = c.name;
        use_.description = c.description;
        use_.strength = strength.unwrap_or(c.strength);
        use_.seed = c.seed;
    }
    Ok(())
}

/// Looks up the spec's LoRAs in the server's library and reads their trigger words (for
/// moderation); an unknown name is a 400 listing the library.
async fn resolve_loras(state: &AppState, spec: &mut JobSpec) -> ApiResult<()> {
    if spec.loras.is_empty() {
        return Ok(());
    }
    let (library, names) = (state.catalog.loras().clone(), spec.loras.clone());
    let found = tokio::task::spawn_blocking(move || {
        names
            .iter()
            .map(|l| library.find(&l.name))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::invalid("loras", e.to_string()))?;
    for (l, entry) in spec.loras.iter_mut().zip(found) {
        l.trigger_words = entry.trigger_words();
    }
    Ok(())
}

/// What an edit's prompt asks for, read by the planner. `None` when the prompt describes a
/// picture rather than changes to make (the planner would only restyle with it): that is the
/// classic OpenAI edit, one model pass with the whole prompt, the mask and `strength`. A plan
/// (crop, brighten, "make the sky a sunset", …) runs on the image, the mask limiting what the
/// model repaints. A prompt the planner refuses is refused here.
pub(crate) async fn plan_prompt(
    state: &AppState,
    auth: &Auth,
    prompt: &str,
    size: (u32, u32),
    strictness: Strictness,
    model: Option<&str>,
) -> ApiResult<Option<EditPlan>> {
    let opts = plan_options(state, model);
    let planned = plan_instruction(state, auth, prompt, size, &[], strictness, "prompt", opts).await?;
    let limits = state.plan_limits(size);
    match planned.map(|(p, _)| p) {
        // A Kontext model reads the whole prompt as the instruction, with the image, in one pass.
        Ok(Planned::Edit(p)) if matches!(p.ops.as_slice(), [Op::Restyle { .. } | Op::Instruct { .. }]) => {
            Ok(None)
        }
        Ok(Planned::Edit(p)) => {
            p.validate(size, &limits)
                .map_err(|e| ApiError::invalid("prompt", e.to_string()))?;
            Ok(Some(p))
        }
        Ok(Planned::Undo | Planned::Redo) => Err(ApiError::invalid(
            "prompt",
            "undo and redo need an edit session's history (POST /v1/edit-sessions)",
        )),
        Err(e) => Err(refused(state, auth, "/v1/images/edits", &e.to_string()).with_param("prompt")),
    }
}

/// Plans `instruction` (with the session's `history`), moderating its words first: a blocked
/// instruction never reaches the planner, which may send it to an LLM endpoint — another party.
/// The outer error is the moderation refusal; the inner one the planner's.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn plan_instruction(
    state: &AppState,
    auth: &Auth,
    instruction: &str,
    size: (u32, u32),
    history: &[String],
    strictness: Strictness,
    param: &str,
    opts: PlanOptions,
) -> ApiResult<Result<(Planned, Provenance), EditError>> {
    let texts = (vec![instruction.to_owned()], Vec::new());
    crate::moderation::check_texts(state, auth, texts, strictness, param).await?;
    Ok(state
        .planner
        .plan(instruction, size, history, &state.plan_limits(size), opts)
        .await)
}

/// How the planner hands generative changes to `model` (the catalog's default when `None`): in
/// the user's words to a model that follows edit instructions (FLUX.1 Kontext).
pub(crate) fn plan_options(state: &AppState, model: Option<&str>) -> PlanOptions {
    PlanOptions {
        instruct: state.catalog.pick(model).is_some_and(|e| e.info.kontext),
    }
}

/// A plan with `instruct` for a model that does not follow instructions is refused before it
/// runs (`param` names the request field the plan came from).
pub(crate) fn check_instruct(
    state: &AppState,
    model: Option<&str>,
    plan: &EditPlan,
    param: &str,
) -> ApiResult<()> {
    let instructs = plan.ops.iter().any(|o| matches!(o, Op::Instruct { .. }));
    if instructs && !plan_options(state, model).instruct {
        return Err(ApiError::invalid(
            param,
            nanoimg_edit::EditError::NeedsInstructionModel.to_string(),
        ));
    }
    Ok(())
}

/// An instruction the planner refused: 400 with the reason, and an audit event with it.
pub(crate) fn refused(state: &AppState, auth: &Auth, target: &str, reason: &str) -> ApiError {
    state.audit.record_later(auth.event(
        "edit.refused",
        Some(target.to_owned()),
        Outcome::Rejected,
        json!({"reason": reason}),
    ));
    ApiError::bad_request(
        "instruction_refused",
        format!("this instruction cannot be carried out: {reason}"),
    )
    .with_param("instruction")
}
