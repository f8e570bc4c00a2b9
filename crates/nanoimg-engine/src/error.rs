//! The engine's one error type.

use std::path::PathBuf;

/// Everything that can go wrong loading a model or running a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A request parameter is out of range or malformed.
    #[error(transparent)]
    InvalidParam(#[from] nanoimg_core::InvalidParam),
    /// A model folder lacks a file or component that the pipeline needs.
    #[error("model at {path}: {message}")]
    IncompleteModel { path: PathBuf, message: String },
    /// A model's config asks for something this engine does not implement.
    #[error("model at {path}: unsupported configuration: {message}")]
    Unsupported { path: PathBuf, message: String },
    /// A tensor could not be loaded (missing, wrong shape, wrong dtype) or computed.
    #[error("{context}: {source}")]
    Tensor {
        context: String,
        #[source]
        source: candle_core::Error,
    },
    /// The model named by the user was not found.
    #[error("no model named {name:?}; installed: {installed}")]
    ModelNotFound { name: String, installed: String },
    /// The caller cancelled the run through its [`crate::CancelToken`].
    #[error("generation cancelled")]
    Cancelled,
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An image could not be encoded (an internal error: encoding into memory has no user input
    /// that can make it fail).
    #[error("cannot encode image: {0}")]
    Encode(String),
    /// A JSON config file did not parse.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Shorthand for results in this crate.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl From<candle_core::Error> for EngineError {
    fn from(source: candle_core::Error) -> Self {
        EngineError::Tensor {
            context: "tensor operation failed".into(),
            source,
        }
    }
}

/// Adds a human context (usually the component being loaded) to candle errors.
pub(crate) trait TensorContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> TensorContext<T> for candle_core::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| EngineError::Tensor {
            context: what(),
            source,
        })
    }
}
