//! Prompt moderation at the door: a blocked request is refused before it is queued, counted,
//! and audited with the layer, categories and evidence (never key material).

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::spec::JobSpec;
use crate::state::AppState;
use nanoimg_safety::Strictness;
use nanoimg_store::Outcome;

/// The strictness a request gets: what it asked for, but `low` only where the operator has
/// allowed it for the tenant (otherwise `auto`, as OpenAI would still moderate).
pub fn strictness(auth: &Auth, asked: Strictness) -> Strictness {
    match asked {
        Strictness::Low if auth.principal.tenant.allow_low_moderation => Strictness::Low,
        _ => Strictness::Auto,
    }
}

/// Refuses `spec` with 400 `moderation_blocked` if its texts are blocked at the strictness it
/// gets.
pub fn check_prompt(state: &AppState, auth: &Auth, spec: &JobSpec) -> ApiResult<()> {
    let level = strictness(auth, spec.moderation);
    let verdict = state
        .moderator
        .check(&[&spec.prompt, &spec.negative_prompt], level)
        .map_err(|e| ApiError::internal(format!("moderation failed, so the request is refused: {e}")))?;
    if !verdict.blocked {
        return Ok(());
    }
    let categories: Vec<&str> = verdict.categories().into_iter().map(|c| c.as_str()).collect();
    state.metrics.reject("moderation");
    state.audit.record_later(auth.event(
        "moderation.blocked",
        None,
        Outcome::Rejected,
        serde_json::json!({
            "strictness": level,
            "asked": spec.moderation,
            "categories": categories,
            "flags": verdict.flags.iter().filter(|f| f.blocks).collect::<Vec<_>>(),
        }),
    ));
    Err(ApiError::bad_request(
        "moderation_blocked",
        format!(
            "this request was rejected by NanoImg's safety system ({}); change the prompt and try again",
            categories.join(", ")
        ),
    )
    .with_param("prompt")
    .with_extra("categories", serde_json::json!(categories)))
}
