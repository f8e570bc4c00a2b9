//! The engine's one error type.

use std::path::{Path, PathBuf};

/// Everything that can go wrong loading a model or running a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A request parameter is out of range or malformed.
    #[error(transparent)]
    InvalidParam(#[from] nanoimg_core::InvalidParam),
    /// A model folder lacks a file or component that the pipeline needs.
    #[error("model at {path}: {message}")]
    IncompleteModel { path: PathBuf, message: String },
    /// A single-file checkpoint this engine does not read, or cannot place: a pickle, another
    /// kind of file (a LoRA, a lone VAE), a family not implemented, or a tensor with no place
    /// in the model.
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    /// A model's config asks for something this engine does not implement.
    #[error("model at {path}: unsupported configuration: {reason}")]
    Unsupported { path: PathBuf, reason: ConfigError },
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
    /// A LoRA named that the library does not hold.
    #[error("no LoRA named {name:?}; available: {available}")]
    LoraNotFound { name: String, available: String },
    /// A hub id that is not in the hub cache.
    #[error("{id} is not in the Hugging Face cache ({cache}): `nanoimg models pull {id}` downloads it")]
    NotPulled { id: String, cache: String },
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

/// What a model's config file asks for that this engine cannot build, by the field that asks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The field holds a value this engine does not implement.
    #[error("{field} = {value} is not supported")]
    Unsupported { field: &'static str, value: String },
    /// The field's value is out of range, or disagrees with another field.
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },
}

impl ConfigError {
    /// `field` holds `value` (written as JSON would show it), which is not implemented.
    pub(crate) fn unsupported(field: &'static str, value: impl std::fmt::Debug) -> Self {
        ConfigError::Unsupported {
            field,
            value: format!("{value:?}"),
        }
    }

    /// `field` is wrong as `problem` says.
    pub(crate) fn invalid(field: &'static str, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field,
            problem: problem.into(),
        }
    }

    /// The field the error names.
    pub fn field(&self) -> &'static str {
        match self {
            ConfigError::Unsupported { field, .. } | ConfigError::Invalid { field, .. } => field,
        }
    }
}

impl From<ConfigError> for EngineError {
    /// A config error before the caller knows the file's place; [`EngineError::at`] names it.
    fn from(reason: ConfigError) -> Self {
        EngineError::Unsupported {
            path: PathBuf::new(),
            reason,
        }
    }
}

impl EngineError {
    /// Names the model folder or component that an error from a model constructor came from.
    pub(crate) fn at(self, path: &Path) -> Self {
        match self {
            EngineError::Tensor { source, .. } => EngineError::Tensor {
                context: path.display().to_string(),
                source,
            },
            EngineError::Unsupported { reason, .. } => EngineError::Unsupported {
                path: path.to_owned(),
                reason,
            },
            other => other,
        }
    }
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
