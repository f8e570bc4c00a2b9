//! The job of a route that answers when its images are done (the OpenAI routes, the A1111 API):
//! submitted, with a refusal audited as `request.rejected`, and its end audited as
//! `image.generate`, `image.edit` or `image.variation` with what was asked.

use crate::auth::Auth;
use crate::error::ApiResult;
use crate::jobs::{JobError, Output, Submitted};
use crate::spec::{JobKind, JobSpec};
use crate::state::AppState;
use nanoimg_store::Outcome;
use serde_json::Value;
use std::sync::Arc;

/// Submits the job, auditing a refusal.
pub(super) async fn submit(
    state: &AppState,
    auth: &Auth,
    kind: JobKind,
    spec: JobSpec,
) -> ApiResult<Submitted> {
    Ok(state
        .jobs
        .submit(auth.job_owner(), kind, spec, false)
        .await
        .inspect_err(|e| {
            state.audit.record_later(auth.event(
                "request.rejected",
                None,
                Outcome::Rejected,
                serde_json::json!({"reason": e.code()}),
            ))
        })?)
}

/// Audits how the job ended: its images or its error code, the model, size, steps and count,
/// and `extra` (the end user, the API it came through).
pub(super) async fn audit_end(
    state: &AppState,
    auth: &Auth,
    (kind, job): (JobKind, &str),
    spec: &JobSpec,
    extra: &[(&str, Value)],
    end: &Result<Arc<Vec<Output>>, JobError>,
) {
    let (outcome, mut detail) = match end {
        Ok(o) => (Outcome::Success, serde_json::json!({"images": o.len()})),
        Err(JobError::Cancelled) => (Outcome::Failure, serde_json::json!({"code": "cancelled"})),
        Err(e) => (Outcome::Failure, serde_json::json!({"code": e.code()})),
    };
    detail["model"] = spec.model.clone().into();
    detail["size"] = spec.size.to_string().into();
    detail["steps"] = spec.steps.into();
    detail["n"] = spec.n.into();
    for (k, v) in extra {
        detail[*k] = v.clone();
    }
    let action = match kind {
        JobKind::Generation => "image.generate",
        JobKind::Edit => "image.edit",
        JobKind::Variation => "image.variation",
    };
    state
        .audit
        .record(auth.event(action, Some(job.to_owned()), outcome, detail))
        .await;
}
