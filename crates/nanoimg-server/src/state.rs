//! What every handler shares. One owner per piece: the store owns records, [`Jobs`] owns the
//! queue, the limiters own their buckets.

use crate::audit::Auditor;
use crate::config::Config;
use crate::jobs::Jobs;
use crate::limits::RateLimiter;
use crate::metrics::Metrics;
use crate::models::ModelCatalog;
use crate::signing::UrlSigner;
use nanoimg_store::Store;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState(pub Arc<Shared>);

pub struct Shared {
    pub config: Config,
    pub store: Store,
    pub jobs: Arc<Jobs>,
    pub catalog: Arc<ModelCatalog>,
    pub metrics: Arc<Metrics>,
    pub audit: Auditor,
    pub signer: UrlSigner,
    pub request_limiter: RateLimiter,
    pub image_limiter: RateLimiter,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}
