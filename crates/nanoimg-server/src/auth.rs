//! Authentication and authorisation: `Authorization: Bearer nimg_…` → [`Auth`], the per-tenant
//! request rate, and scope checks, in one layer on every keyed route ([`authorize`], from the
//! route table's [`Access`]). Handlers take `Auth`; a scope that depends on the body (a job
//! with a starting image needs `images:edit` too) is checked with [`Auth::require`].

use crate::error::ApiError;
use crate::jobs::JobOwner;
use crate::routes::Access;
use crate::state::{AppState, RateLimits};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use nanoimg_store::{AuditEvent, Outcome, Principal, Scope};

/// The request id set by the middleware, for audit events.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Auth {
    pub principal: Principal,
    pub request_id: Option<String>,
    /// The limits of the caller's tenant.
    pub limits: RateLimits,
}

impl Auth {
    pub fn tenant_id(&self) -> &str {
        &self.principal.tenant.id
    }

    pub fn key_id(&self) -> &str {
        &self.principal.key.id
    }

    /// Who a job submitted by this caller belongs to, with the tenant's job cap.
    pub fn job_owner(&self) -> JobOwner<'_> {
        JobOwner {
            tenant_id: self.tenant_id(),
            key_id: self.key_id(),
            max_concurrent: self.limits.concurrent_jobs,
        }
    }

    /// 403 unless the key has `scope`.
    pub fn require(&self, state: &AppState, scope: Scope) -> Result<(), ApiError> {
        if self.principal.can(scope) {
            return Ok(());
        }
        self.rejected(
            state,
            "insufficient_scope",
            serde_json::json!({"scope": scope.as_str()}),
        );
        Err(ApiError::forbidden(format!(
            "this API key lacks the {scope} scope; its scopes are {}",
            Scope::join(&self.principal.key.scopes).replace(' ', ", ")
        )))
    }

    /// Counts a refusal of this caller's request under `reason` and audits it
    /// (`request.rejected`, with `reason` added to `detail`).
    pub fn rejected(&self, state: &AppState, reason: &'static str, mut detail: serde_json::Value) {
        state.metrics.reject(reason);
        detail["reason"] = reason.into();
        state
            .audit
            .record_later(self.event("request.rejected", None, Outcome::Rejected, detail));
    }

    /// An audit event attributed to this caller.
    pub fn event(
        &self,
        action: &'static str,
        target: Option<String>,
        outcome: Outcome,
        detail: serde_json::Value,
    ) -> AuditEvent {
        AuditEvent {
            request_id: self.request_id.clone(),
            tenant_id: Some(self.tenant_id().to_owned()),
            key_id: Some(self.key_id().to_owned()),
            action,
            target,
            outcome,
            detail,
        }
    }
}

/// The key from `Authorization: Bearer …`, or `x-api-key` (which some clients send), or the
/// password of `Authorization: Basic` (for clients that can only send Basic auth, such as
/// `webuiapi`'s `set_auth` and A1111's `--api-auth`; the user name is not read).
fn presented_key(headers: &axum::http::HeaderMap) -> Result<String, ApiError> {
    if let Some(v) = headers.get(axum::http::header::AUTHORIZATION) {
        let v = v
            .to_str()
            .map_err(|_| ApiError::unauthorized("invalid_api_key", "the Authorization header is not text"))?;
        let (scheme, key) = v.split_once(' ').unwrap_or((v, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            use base64::Engine as _;
            let pair = base64::engine::general_purpose::STANDARD
                .decode(key.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            return match pair.as_deref().and_then(|p| p.split_once(':')) {
                Some((_, password)) if !password.trim().is_empty() => Ok(password.trim().to_owned()),
                _ => Err(ApiError::unauthorized(
                    "invalid_api_key",
                    "Basic auth carries the API key as its password",
                )),
            };
        }
        if !scheme.eq_ignore_ascii_case("bearer") || key.trim().is_empty() {
            return Err(ApiError::unauthorized(
                "invalid_api_key",
                "use Authorization: Bearer <API key>",
            ));
        }
        return Ok(key.trim().to_owned());
    }
    if let Some(v) = headers.get("x-api-key") {
        return v
            .to_str()
            .map(|k| k.trim().to_owned())
            .map_err(|_| ApiError::unauthorized("invalid_api_key", "the x-api-key header is not text"));
    }
    Err(ApiError::unauthorized(
        "missing_api_key",
        "no API key: send Authorization: Bearer <API key>",
    ))
}

/// The layer every keyed route passes ([`crate::routes::ROUTES`] says which): the key is
/// authenticated, its request budget charged and the route's scope checked, in that order;
/// the caller then reaches the handler as [`Auth`].
pub(crate) async fn authorize(
    State((state, access)): State<(AppState, Access)>,
    mut req: Request,
    next: Next,
) -> Response {
    let auth = match authenticate(&state, req.extensions(), req.headers()).await {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    if let Access::Scope(scope) = access {
        if let Err(e) = auth.require(&state, scope) {
            return e.into_response();
        }
    }
    req.extensions_mut().insert(auth);
    next.run(req).await
}

/// Failed authentications audited a minute at most; the rest are counted in the metrics only,
/// so a flood of bad keys cannot flood the audit log.
const AUDITED_FAILURES_PER_MINUTE: u32 = 60;

/// Audits a refused key (`auth.failed`): the reason, and for a well-formed key its display
/// prefix, never the key.
fn audit_failure(
    state: &AppState,
    request_id: Option<String>,
    key: &str,
    failure: nanoimg_store::AuthFailure,
) {
    let budget = state
        .failure_audit_limiter
        .check("auth.failed", AUDITED_FAILURES_PER_MINUTE, 1);
    if !budget.allowed {
        return;
    }
    let mut detail = serde_json::json!({"reason": failure.reason()});
    if failure != nanoimg_store::AuthFailure::Malformed {
        detail["prefix"] = nanoimg_store::keys::display_prefix(key).into();
    }
    state.audit.record_later(AuditEvent {
        request_id,
        tenant_id: None,
        key_id: None,
        action: "auth.failed",
        target: None,
        outcome: Outcome::Rejected,
        detail,
    });
}

/// The key → the caller, with its tenant's limits, its request budget charged.
async fn authenticate(
    state: &AppState,
    extensions: &axum::http::Extensions,
    headers: &axum::http::HeaderMap,
) -> Result<Auth, ApiError> {
    let request_id = extensions.get::<RequestId>().map(|r| r.0.clone());
    let key = match presented_key(headers) {
        Ok(k) => k,
        Err(e) => {
            state.metrics.reject(e.code);
            return Err(e);
        }
    };
    let principal = match state.store.system().authenticate(&key).await? {
        Ok(p) => p,
        Err(failure) => {
            state.metrics.reject(failure.reason());
            audit_failure(state, request_id, &key, failure);
            return Err(ApiError::unauthorized("invalid_api_key", failure.message()));
        }
    };
    let auth = Auth {
        limits: state.limits_for(&principal.tenant),
        principal,
        request_id,
    };
    let d = state
        .request_limiter
        .check(auth.tenant_id(), auth.limits.requests_per_minute, 1);
    if !d.allowed {
        auth.rejected(
            state,
            "requests_per_minute",
            serde_json::json!({"limit": d.limit}),
        );
        return Err(ApiError::rate_limited(
            "rate_limit_exceeded",
            format!(
                "this tenant's keys may make {} requests a minute together; try again in {:.0} s",
                d.limit,
                d.retry_after.ceil()
            ),
            d.retry_after,
        )
        .with_header("x-ratelimit-limit-requests", &d.limit.to_string())
        .with_header("x-ratelimit-remaining-requests", &d.remaining.to_string())
        .with_header("x-ratelimit-reset-requests", &format!("{:.0}s", d.reset.ceil())));
    }
    if let Some(slot) = extensions.get::<crate::RateSlot>() {
        *slot.0.lock().expect("rate slot") = Some(RateHeaders {
            limit: d.limit,
            remaining: d.remaining,
            reset: d.reset,
        });
    }
    Ok(auth)
}

/// A handler's caller, as the [`authorize`] layer left it.
impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Auth>()
            .cloned()
            .ok_or_else(|| ApiError::internal("a keyed handler on a route without the key layer"))
    }
}

/// The request-rate state of the key, added to successful responses by the middleware.
#[derive(Debug, Clone, Copy)]
pub struct RateHeaders {
    pub limit: u32,
    pub remaining: u32,
    pub reset: f64,
}
