//! The store's one error type.

/// What can go wrong reading or writing NanoImg's data.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed a query.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A blob could not be read or written.
    #[error("blob store: {path}: {source}")]
    Blob {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The object store (S3) refused or failed a request.
    #[error("object store: {path}: {source}")]
    Object {
        path: String,
        #[source]
        source: object_store::Error,
    },
    /// A uniqueness rule was broken (a tenant name already taken, …).
    #[error("{0}")]
    Conflict(String),
    /// The object does not exist (or belongs to another tenant, which looks the same).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A value could not be used (an unknown scope name, a name that is too long, …).
    #[error("{0}")]
    Invalid(String),
    /// The data in the database is not what this version wrote (a corrupt row or a newer schema).
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

/// Shorthand for results in this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}
