//! The safety layers at the server's doors: prompts are checked before anything is queued,
//! uploads before they are stored, and outputs (in the worker) before they are stored or sent.
//! Every refusal is counted and audited with the layer, the categories and the scores (never key
//! material). A layer whose model is missing is off, and says so in the log and `/readyz`.

use crate::auth::Auth;
use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::spec::JobSpec;
use crate::state::AppState;
use crate::StartError;
use image::DynamicImage;
use nanoimg_safety::nsfw::ImageVerdict;
use nanoimg_safety::setup::{CredentialSource, Options};
use nanoimg_safety::{Safety, Strictness};
use nanoimg_store::Outcome;

/// The layers as the server's configuration asks for them.
pub fn load(config: &Config) -> Result<Safety, StartError> {
    let p = &config.provenance;
    let credentials = match (&p.cert_chain, &p.private_key) {
        (Some(chain), Some(key)) => CredentialSource::Files {
            chain: chain.clone(),
            key: key.clone(),
        },
        _ => CredentialSource::Local(config.provenance_dir()),
    };
    let safety = Safety::load(&Options {
        models_dir: config.safety_models_dir(),
        require_all_layers: config.safety.require_all_layers,
        nsfw_threshold: config.safety.nsfw_threshold,
        block_characters: config.safety.block_characters,
        credentials,
        trust_anchors: p.trust_anchors.clone(),
    })
    .map_err(|e| StartError(e.to_string()))?;
    for l in &safety.layers {
        if l.on {
            tracing::info!(layer = l.layer, detail = %l.detail, "safety layer on");
        } else {
            tracing::warn!(layer = l.layer, reason = %l.detail, "safety layer off");
        }
    }
    Ok(safety)
}

/// The strictness a request gets: what it asked for, but `low` only where the operator has
/// allowed it for the tenant (otherwise `auto`, as OpenAI would still moderate).
pub fn strictness(auth: &Auth, asked: Strictness) -> Strictness {
    match asked {
        Strictness::Low if auth.principal.tenant.allow_low_moderation => Strictness::Low,
        _ => Strictness::Auto,
    }
}

/// The 400 every moderation refusal answers, in OpenAI's shape.
pub fn blocked(param: &str, categories: &[&str]) -> ApiError {
    ApiError::bad_request(
        "moderation_blocked",
        format!(
            "this request was rejected by NanoImg's safety system ({}); change it and try again",
            categories.join(", ")
        ),
    )
    .with_param(param)
    .with_extra("categories", serde_json::json!(categories))
}

/// Refuses `spec` with 400 `moderation_blocked` if its texts are blocked at the strictness it
/// gets. The prompt, a plan's instruction and prompts and the characters' descriptions say what
/// the image shows, and are checked together so that rules about combinations (a child and
/// anything sexual; a public figure and a framing) see all of them; the negative prompt is read
/// for what avoiding it asks for (`PromptModerator::check_request`).
pub async fn check_prompt(state: &AppState, auth: &Auth, spec: &JobSpec) -> ApiResult<()> {
    let mut texts = vec![spec.prompt.clone()];
    if let Some(p) = &spec.plan {
        texts.push(p.instruction.clone());
        texts.extend(p.plan.prompts().into_iter().map(str::to_owned));
    }
    texts.extend(spec.characters.iter().map(|c| c.description.clone()));
    // A LoRA's trigger words say what it was trained to draw.
    texts.extend(
        spec.loras
            .iter()
            .filter(|l| !l.trigger_words.is_empty())
            .map(|l| l.trigger_words.join(", ")),
    );
    let negative = vec![spec.negative_prompt.clone()];
    check_texts(state, auth, (texts, negative), spec.moderation, "prompt").await
}

/// Refuses `(positive, negative)` texts with 400 `moderation_blocked` naming `param` if they
/// are blocked at the strictness the caller gets. The check runs off the async threads (the
/// semantic layer is a transformer).
pub async fn check_texts(
    state: &AppState,
    auth: &Auth,
    (positive, negative): (Vec<String>, Vec<String>),
    asked: Strictness,
    param: &str,
) -> ApiResult<()> {
    let level = strictness(auth, asked);
    let moderator = state.safety.prompt.clone();
    let verdict = tokio::task::spawn_blocking(move || {
        let positive: Vec<&str> = positive.iter().map(String::as_str).collect();
        let negative: Vec<&str> = negative.iter().map(String::as_str).collect();
        moderator.check_request(&positive, &negative, level)
    })
    .await
    .map_err(ApiError::internal)?
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
            "input": param,
            "strictness": level,
            "asked": asked,
            "categories": categories,
            "flags": verdict.flags.iter().filter(|f| f.blocks).collect::<Vec<_>>(),
        }),
    ));
    Err(blocked(param, &categories))
}

/// Runs the image layer on an uploaded image (off the async threads); refuses it with 400
/// `moderation_blocked` naming `param` if it scores at or above the threshold.
pub async fn check_upload(state: &AppState, auth: &Auth, img: &DynamicImage, param: &str) -> ApiResult<()> {
    let Some(classifier) = state.safety.image.clone() else {
        return Ok(());
    };
    let img = img.clone();
    let verdict: ImageVerdict = tokio::task::spawn_blocking(move || classifier.check(&img))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::internal(format!("image moderation failed, so the upload is refused: {e}")))?;
    if !verdict.blocked {
        return Ok(());
    }
    state.metrics.reject("moderation");
    state.audit.record_later(auth.event(
        "moderation.blocked",
        None,
        Outcome::Rejected,
        serde_json::json!({
            "layer": "image", "input": param, "categories": ["sexual"],
            "score": verdict.score, "threshold": verdict.threshold,
        }),
    ));
    Err(blocked(param, &["sexual"]))
}
