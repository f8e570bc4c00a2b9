//! The crate's one error type.

use std::path::PathBuf;

pub type Result<T, E = HubError> = std::result::Result<T, E>;

/// Everything that can go wrong naming, finding or pulling a model on the hub.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// `owner/name[@revision]` that is not one.
    #[error("{input:?} is not a hub model id (owner/name[@revision]): {reason}")]
    BadRef { input: String, reason: String },
    /// `HF_HUB_OFFLINE` is set, and pulling needs the network.
    #[error(
        "HF_HUB_OFFLINE is set: pulling needs the hub (models already in the cache are used without it)"
    )]
    Offline,
    /// The hub could not be reached, or the connection broke.
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    /// The hub has no such repository, revision or file.
    #[error("{what} not found on the hub ({url})")]
    NotFound { what: String, url: String },
    /// The repository is private or gated, and the token (if any) is not allowed in.
    #[error("{repo} is private or gated and {reason}: accept its terms on the hub and set HF_TOKEN (or log in, which writes $HF_HOME/token)")]
    Unauthorized { repo: String, reason: String },
    /// Any other answer the hub should not give.
    #[error("{url}: the hub answered {status}{message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    /// The hub's listing cannot be used safely: a file without a hash, a path that leaves the
    /// repository.
    #[error("the hub's listing of {repo}: {message}")]
    Listing { repo: String, message: String },
    /// The repository does not hold a model NanoImg can pull as asked.
    #[error("{repo}: {message}")]
    Selection { repo: String, message: String },
    /// A downloaded file is not the one the hub lists: tampered with, or truncated.
    #[error("{file}: the downloaded file does not match the hub's listing (expected {expected}, got {actual}); nothing was kept")]
    Mismatch {
        file: String,
        expected: String,
        actual: String,
    },
    /// Reading or writing the cache failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl HubError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
