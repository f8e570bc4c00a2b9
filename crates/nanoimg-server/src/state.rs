//! What every handler shares. One owner per piece: the store owns records, [`Jobs`] owns the
//! queue, the limiters own their buckets.

use crate::audit::Auditor;
use crate::config::Config;
use crate::jobs::Jobs;
use crate::limits::RateLimiter;
use crate::metrics::Metrics;
use crate::models::ModelCatalog;
use crate::signing::UrlSigner;
use nanoimg_store::{Store, Tenant};
use serde::Serialize;
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
    pub safety: nanoimg_safety::Safety,
    pub planner: crate::planner::Planner,
    pub request_limiter: RateLimiter,
    pub image_limiter: RateLimiter,
    /// Megapixel-steps per tenant (`crate::cost`).
    pub compute_limiter: RateLimiter,
    /// How many failed authentications are audited a minute (`auth.failed`).
    pub failure_audit_limiter: RateLimiter,
}

/// The rates, budgets and quotas that apply to one tenant: its overrides, else the server's
/// defaults (`[rate]`).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RateLimits {
    pub requests_per_minute: u32,
    pub images_per_minute: u32,
    pub concurrent_jobs: usize,
    pub megapixel_steps_per_minute: u32,
    pub max_job_megapixel_steps: u32,
    pub max_stored_bytes: u64,
    pub max_keys: u32,
}

impl Shared {
    pub fn limits_for(&self, tenant: &Tenant) -> RateLimits {
        let (own, rate) = (&tenant.limits, &self.config.rate);
        RateLimits {
            requests_per_minute: own.requests_per_minute.unwrap_or(rate.requests_per_minute),
            images_per_minute: own.images_per_minute.unwrap_or(rate.images_per_minute),
            concurrent_jobs: own
                .concurrent_jobs
                .map_or(rate.concurrent_jobs_per_tenant, |c| c as usize),
            megapixel_steps_per_minute: own
                .megapixel_steps_per_minute
                .unwrap_or(rate.megapixel_steps_per_minute),
            max_job_megapixel_steps: own
                .max_job_megapixel_steps
                .unwrap_or(rate.max_job_megapixel_steps),
            max_stored_bytes: own.max_stored_bytes.unwrap_or(rate.max_stored_bytes_per_tenant),
            max_keys: own.max_keys.unwrap_or(rate.keys_per_tenant),
        }
    }

    /// What an edit plan may do to an image of `size`: never make it larger than the server's
    /// output caps (`limits.max_side`, `limits.max_pixels`) at any step. An image already larger
    /// (an upload) may be edited, never enlarged.
    pub fn plan_limits(&self, (w, h): (u32, u32)) -> nanoimg_edit::PlanLimits {
        let l = &self.config.limits;
        nanoimg_edit::PlanLimits {
            max_side: l.max_side.max(w.max(h)),
            max_pixels: l.max_pixels.max(u64::from(w) * u64::from(h)),
            ..nanoimg_edit::PlanLimits::default()
        }
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}
