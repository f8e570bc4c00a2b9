//! NanoImg's edits. An edit is data: an [`EditPlan`] (a versioned list of typed operations) that
//! is validated against the image and the limits before anything runs, then executed by
//! [`ops::apply`] for pixel operations; the generative ones (restyle, inpaint, outpaint,
//! variation, upscale) go to the engine through [`exec::Painter`].
//!
//! - [`plan`] — the plan format and its validation.
//! - [`ops`] — the pixel operations.
//! - [`exec`] — runs a plan on one image, handing generative operations to a painter.
//! - [`planner`] — the built-in planner: plain language → a plan, no network.

pub mod exec;
pub mod ops;
pub mod plan;
pub mod planner;

pub use plan::{Area, EditPlan, Op, OpError, PlanLimits};

/// The crate's one error type.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EditError {
    /// The plan is malformed or out of bounds; the message names the operation and argument.
    #[error("{0}")]
    InvalidPlan(String),
    /// A generative operation reached the pixel executor.
    #[error("the operation `{0}` runs on the image model, not as a pixel operation")]
    NeedsEngine(&'static str),
    /// An `instruct` operation for a model that does not follow edit instructions.
    #[error(
        "`instruct` needs a model that follows edit instructions (a FLUX.1 Kontext model); \
         use restyle or inpaint with this one"
    )]
    NeedsInstructionModel,
    /// The painter said the run was cancelled ([`exec::Painter::cancelled`]); checked before
    /// every operation.
    #[error("the edit was cancelled")]
    Cancelled,
    #[error("internal error: {0}")]
    Internal(String),
}
