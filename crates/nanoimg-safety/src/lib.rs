//! NanoImg's safety layers. This crate decides; the CLI and the server call it.
//!
//! - [`normalize`] — text folded for matching (never for the model).
//! - [`lexicon`] — the word lists and their matcher.
//! - [`prompt`] — prompt moderation: lexicon hits and combination rules → a [`prompt::Verdict`].
//! - [`nsfw`] — the image layer: open_nsfw (ONNX) on tract.
//! - [`semantic`] — the semantic prompt layer: MiniLM sentence embeddings against exemplars.
//! - [`watermark`] — the invisible watermark: embedding and detection.
//! - [`provenance`] — C2PA Content Credentials: signing outputs, reading manifests, the local CA.
//! - [`seal`] — the output policy: watermark, parameters, encoding and C2PA signing, once.
//! - [`verify`] — what an image carries: its C2PA manifest and the watermark.
//! - [`setup`] — loading every layer the same way for the server and the CLI.
//! - [`faces`] — face detection (MTCNN on candle), for the consent gate on character references.
//! - [`eval`] — recall and false-positive rate on a labelled TSV.
//! - [`models`] — the pinned wheels the model-based layers come from, and installing them.

pub mod eval;
pub mod faces;
pub mod lexicon;
pub mod models;
pub mod normalize;
pub mod nsfw;
pub mod prompt;
pub mod provenance;
pub mod seal;
pub mod semantic;
pub mod setup;
#[doc(hidden)]
pub mod testing;
pub mod verify;
pub mod watermark;

pub use lexicon::{Category, Lexicon};
pub use prompt::{Flag, PromptModerator, Strictness, Verdict};
pub use setup::{LayerState, Safety};

/// The crate's one error type.
#[derive(Debug, thiserror::Error)]
pub enum SafetyError {
    #[error("word list: {0}")]
    Lexicon(String),
    #[error("evaluation set: {0}")]
    EvalSet(String),
    #[error("safety model: {0}")]
    Model(String),
    /// A safety model's config asks for what this implementation does not compute.
    #[error("safety model config: {field} = {value} is not supported")]
    UnsupportedConfig { field: &'static str, value: String },
    #[error("provenance: {0}")]
    Provenance(String),
    #[error("encoding an output: {0}")]
    Encode(String),
}
