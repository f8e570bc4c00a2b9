//! The Hugging Face hub as NanoImg uses it.
//!
//! - [`HubRef`]: `owner/name[@revision]`, checked before it becomes a path or a URL.
//! - [`HubCache`]: the cache every hub client shares (`HF_HUB_CACHE`, else `HF_HOME/hub`, else
//!   `~/.cache/huggingface/hub`), in its own layout — `models--owner--name/{blobs,snapshots,refs}`
//!   — so a model pulled here is found by diffusers and the other way round.
//! - [`select`]: which of a repository's files a model needs: the components `model_index.json`
//!   lists, safetensors only (no pickles), one precision.
//! - With the `download` feature, [`Hub`] (the hub's HTTP API, `HF_ENDPOINT`, `HF_TOKEN`) and
//!   [`pull`]: every file checked against the size and hash the hub lists, partial downloads
//!   resumed, and the snapshot published only when all of it is there.

pub mod cache;
mod error;
pub mod repo;
pub mod select;

#[cfg(feature = "download")]
mod client;
#[cfg(feature = "download")]
pub mod pull;

pub use cache::HubCache;
#[cfg(feature = "download")]
pub use client::{Hub, RepoInfo};
pub use error::{HubError, Result};
#[cfg(feature = "download")]
pub use pull::{pull, Progress, Pulled};
pub use repo::{HubRef, RepoId};
pub use select::{select, Selection, Sibling};
