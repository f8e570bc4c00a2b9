//! Domain types shared by every NanoImg crate.
//!
//! This crate holds the vocabulary of the product — image sizes, sampler names, the caps a request
//! must respect, and the validation error that names the offending parameter — so that the CLI,
//! the engine and the server agree on them. It has no heavy dependencies and does no I/O.

pub mod limits;
pub mod params;

pub use limits::Limits;
pub use params::{ImageSize, SchedulerName};

/// A request parameter that failed validation: which one, and why, in words a user can act on.
///
/// The server maps this to HTTP 400 with `param` set; the CLI prints it as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{param}`: {message}")]
pub struct InvalidParam {
    /// The parameter's wire name (`size`, `steps`, `n`, …).
    pub param: &'static str,
    /// What is wrong and what would be accepted.
    pub message: String,
}

impl InvalidParam {
    /// Builds the error for `param` with a message.
    pub fn new(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            param,
            message: message.into(),
        }
    }
}
