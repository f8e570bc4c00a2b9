//! What the operator's routes (`/v1/admin/*`) and a tenant's own (`/v1/me/*`) both do: minting
//! keys (never above a ceiling of scopes, for self-service), erasing a tenant, and auditing each
//! change before it is answered.

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use nanoimg_store::{KeyRecord, NewKey, Outcome, Scope, SecretKey, Tenant};
use serde::Deserialize;

/// Records a successful admin action before it is answered.
pub(crate) async fn admin_done(
    state: &AppState,
    auth: &Auth,
    action: &'static str,
    target: String,
    detail: serde_json::Value,
) {
    state
        .audit
        .record(auth.event(action, Some(target), Outcome::Success, detail))
        .await;
}

/// Erases `t` (the operator's tenant refuses) and audits it; shared by the admin route and
/// `DELETE /v1/me`.
pub(crate) async fn erase(state: &AppState, auth: &Auth, t: &Tenant) -> ApiResult<serde_json::Value> {
    if t.is_admin {
        return Err(ApiError::conflict(
            "tenant_protected",
            format!("{} is the operator's tenant and cannot be erased", t.name),
        ));
    }
    let jobs_cancelled = state.jobs.stop_tenant(&t.id).await;
    let mut characters = 0;
    for id in state.store.scoped(&t.id).character_ids().await? {
        state.catalog.forget_character(&id);
        characters += 1;
    }
    let e = state.store.system().erase_tenant(&t.id).await?;
    let detail = serde_json::json!({
        "rows": e.rows,
        "blobs": e.blobs,
        "audit_redacted": e.audit_redacted,
        "jobs_cancelled": jobs_cancelled,
        "characters": characters,
    });
    admin_done(state, auth, "tenant.erase", e.tenant_id.clone(), detail.clone()).await;
    Ok(serde_json::json!({
        "object": "tenant.erasure",
        "id": e.tenant_id,
        "erased": true,
        "removed": detail,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewKeyRequest {
    pub name: String,
    /// Scope names; default: every scope but `admin`.
    pub scopes: Option<Vec<String>>,
    /// Lifetime in seconds; none = no expiry.
    pub expires_in: Option<u64>,
}

/// A new key with its secret, shown this once.
pub(crate) fn key_created(rec: &KeyRecord, secret: &SecretKey) -> serde_json::Value {
    let mut v = serde_json::to_value(rec).unwrap_or_default();
    v["key"] = secret.expose().into();
    v
}

/// What a self-service key may be at most: the minting key's scopes and lifetime, and the
/// tenant's key quota.
pub(crate) struct Ceiling<'a> {
    pub scopes: &'a [Scope],
    /// When the minting key expires; a new key never outlives it.
    pub expires_at: Option<i64>,
    /// Live (unrevoked, unexpired) keys the tenant may hold.
    pub max_keys: u32,
}

/// Makes a key for `tenant` and audits it. With a `ceiling` (self-service), the key may carry
/// only scopes the caller has (by default, the defaults the caller has), expires no later than
/// the caller's key (by default, with it), and only while the tenant is under its key quota.
pub(crate) async fn mint_key(
    state: &AppState,
    auth: &Auth,
    tenant: &Tenant,
    req: NewKeyRequest,
    ceiling: Option<Ceiling<'_>>,
) -> ApiResult<Response> {
    let ceiling_scopes = ceiling.as_ref().map(|c| c.scopes);
    let scopes = match (&req.scopes, ceiling_scopes) {
        (None, None) => Scope::defaults(),
        (None, Some(c)) => Scope::defaults().into_iter().filter(|s| c.contains(s)).collect(),
        (Some(list), _) => {
            Scope::parse_list(&list.join(",")).map_err(|e| ApiError::invalid("scopes", e.to_string()))?
        }
    };
    if let Some(c) = ceiling_scopes {
        let over: Vec<&str> = scopes
            .iter()
            .filter(|s| !c.contains(s))
            .map(|s| s.as_str())
            .collect();
        if !over.is_empty() {
            return Err(ApiError::invalid(
                "scopes",
                format!("a key cannot grant scopes it does not have: {}", over.join(", ")),
            ));
        }
        if scopes.is_empty() {
            return Err(ApiError::invalid("scopes", "name at least one scope"));
        }
    }
    let now = nanoimg_store::ids::now_ms();
    let asked = match req.expires_in {
        None => None,
        Some(0) => return Err(ApiError::invalid("expires_in", "must be at least 1 second")),
        Some(s) => {
            Some(now.saturating_add(i64::try_from(s.min(100 * 365 * 86400)).unwrap_or(i64::MAX / 2) * 1000))
        }
    };
    let expires_at = match (asked, ceiling.as_ref().and_then(|c| c.expires_at)) {
        (Some(a), Some(limit)) if a > limit => {
            return Err(ApiError::invalid(
                "expires_in",
                format!(
                    "a key cannot outlive the key that makes it; this one expires in {} s",
                    (limit - now).max(0) / 1000
                ),
            ))
        }
        (None, Some(limit)) => Some(limit),
        (asked, _) => asked,
    };
    if let Some(c) = &ceiling {
        let live = state
            .store
            .system()
            .keys(Some(&tenant.id))
            .await?
            .iter()
            .filter(|k| k.revoked_at.is_none() && k.expires_at.is_none_or(|e| e > now))
            .count();
        if live >= c.max_keys as usize {
            return Err(ApiError::conflict(
                "key_quota_exceeded",
                format!(
                    "the tenant has {live} live keys and may have {}; revoke one first",
                    c.max_keys
                ),
            ));
        }
    }
    let (rec, secret) = state
        .store
        .system()
        .create_key(
            &tenant.id,
            &NewKey {
                name: req.name,
                scopes,
                expires_at,
            },
        )
        .await?;
    admin_done(
        state,
        auth,
        "key.create",
        rec.id.clone(),
        serde_json::json!({"tenant": tenant.id, "prefix": rec.prefix, "scopes": Scope::join(&rec.scopes)}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(key_created(&rec, &secret))).into_response())
}
