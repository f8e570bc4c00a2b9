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
use nanoimg_safety::nsfw::{ImageVerdict, NsfwClassifier};
use nanoimg_safety::semantic::SemanticLayer;
use nanoimg_safety::watermark::Watermarker;
use nanoimg_safety::{models, PromptModerator, Strictness};
use nanoimg_store::Outcome;
use serde::Serialize;
use std::sync::Arc;

/// Whether one layer is on, and if not, why.
#[derive(Debug, Clone, Serialize)]
pub struct LayerState {
    pub layer: &'static str,
    pub on: bool,
    pub detail: String,
}

/// The loaded layers.
pub struct Safety {
    pub prompt: Arc<PromptModerator>,
    /// The image layer (open_nsfw), when its model is installed.
    pub image: Option<Arc<NsfwClassifier>>,
    /// The invisible watermark every output gets (built in, always on).
    pub watermark: Arc<Watermarker>,
    pub layers: Vec<LayerState>,
}

impl Safety {
    /// Loads every layer whose model is installed. A model that is present but cannot be loaded
    /// stops the start (it would otherwise be skipped unnoticed); a missing one turns its layer
    /// off, unless `safety.require_all_layers` is set.
    pub fn load(config: &Config) -> Result<Self, StartError> {
        let root = config.safety_models_dir();
        let fetch = "run `nanoimg models fetch safety`";
        let mut layers = vec![LayerState {
            layer: "lexicon",
            on: true,
            detail: "word lists built in".into(),
        }];
        let mut prompt = PromptModerator::default();
        prompt.block_characters = config.safety.block_characters;

        let dir = models::MINILM.path(&root);
        if models::MINILM.installed(&root) {
            let layer = SemanticLayer::load(&dir)
                .map_err(|e| StartError(format!("the semantic safety layer cannot load: {e}")))?;
            prompt = prompt.with_semantic(Arc::new(layer));
            layers.push(LayerState {
                layer: "semantic",
                on: true,
                detail: format!("all-MiniLM-L6-v2 from {}", dir.display()),
            });
        } else {
            layers.push(LayerState {
                layer: "semantic",
                on: false,
                detail: format!("no model in {}; {fetch}", dir.display()),
            });
        }

        let file = models::OPEN_NSFW.path(&root).join("open-nsfw.onnx");
        let image = if models::OPEN_NSFW.installed(&root) {
            let mut c = NsfwClassifier::load(&file)
                .map_err(|e| StartError(format!("the image safety layer cannot load: {e}")))?;
            c.threshold = config.safety.nsfw_threshold;
            layers.push(LayerState {
                layer: "image",
                on: true,
                detail: format!("open_nsfw from {}, threshold {}", file.display(), c.threshold),
            });
            Some(Arc::new(c))
        } else {
            layers.push(LayerState {
                layer: "image",
                on: false,
                detail: format!("no model at {}; {fetch}", file.display()),
            });
            None
        };

        layers.push(LayerState {
            layer: "watermark",
            on: true,
            detail: "built in; a 64-bit id per output image".into(),
        });
        let off: Vec<&LayerState> = layers.iter().filter(|l| !l.on).collect();
        if config.safety.require_all_layers && !off.is_empty() {
            let names: Vec<String> = off
                .iter()
                .map(|l| format!("{} ({})", l.layer, l.detail))
                .collect();
            return Err(StartError(format!(
                "safety.require_all_layers is set, but these layers are off: {}",
                names.join("; ")
            )));
        }
        for l in &off {
            tracing::warn!(layer = l.layer, reason = %l.detail, "safety layer off");
        }
        for l in layers.iter().filter(|l| l.on) {
            tracing::info!(layer = l.layer, detail = %l.detail, "safety layer on");
        }
        Ok(Self {
            prompt: Arc::new(prompt),
            image,
            watermark: Arc::new(Watermarker::new()),
            layers,
        })
    }
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
/// gets. The check runs off the async threads (the semantic layer is a transformer).
pub async fn check_prompt(state: &AppState, auth: &Auth, spec: &JobSpec) -> ApiResult<()> {
    let level = strictness(auth, spec.moderation);
    let moderator = state.safety.prompt.clone();
    let texts = [spec.prompt.clone(), spec.negative_prompt.clone()];
    let verdict = tokio::task::spawn_blocking(move || moderator.check(&[&texts[0], &texts[1]], level))
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
            "strictness": level,
            "asked": spec.moderation,
            "categories": categories,
            "flags": verdict.flags.iter().filter(|f| f.blocks).collect::<Vec<_>>(),
        }),
    ));
    Err(blocked("prompt", &categories))
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
