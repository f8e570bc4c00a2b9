//! `/v1/me/*`: a tenant looks after itself. Its usage against its limits (any key), and, with the
//! `account` scope, its own keys (a key never grants more than its caller has) and the erasure of
//! all its data. The operator's routes for the same things are in `admin`.

use super::body;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::tenancy::{self, NewKeyRequest};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use nanoimg_store::{KeyRecord, Scope};
use serde::Deserialize;
use serde_json::{json, Value};

/// `GET /v1/me/usage`: what is left of the tenant's per-minute budgets (requests, images,
/// compute), its running jobs against its cap, and what it stores against its quota.
pub(crate) async fn usage(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    // A check that costs nothing reads the bucket without taking from it.
    let requests = state
        .request_limiter
        .check(auth.tenant_id(), auth.limits.requests_per_minute, 0);
    let images = state
        .image_limiter
        .check(auth.tenant_id(), auth.limits.images_per_minute, 0);
    let compute = state
        .compute_limiter
        .check(auth.tenant_id(), auth.limits.megapixel_steps_per_minute, 0);
    let active = state.store.system().active_jobs(auth.tenant_id()).await?.len();
    let stored = state.store.scoped(auth.tenant_id()).usage().await?;
    Ok(Json(json!({
        "object": "usage",
        "requests_per_minute": {"limit": requests.limit, "remaining": requests.remaining},
        "images_per_minute": {"limit": images.limit, "remaining": images.remaining},
        "megapixel_steps_per_minute": {"limit": compute.limit, "remaining": compute.remaining},
        "concurrent_jobs": {"limit": auth.limits.concurrent_jobs, "active": active},
        "stored": stored,
        "stored_bytes": {"limit": auth.limits.max_stored_bytes, "used": stored.image_bytes},
        "retention_days": auth.principal.tenant.retention_days,
    })))
}

/// `GET /v1/me/keys`: the tenant's keys, revoked ones too, never their secrets.
pub(crate) async fn list_keys(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    let keys = state.store.system().keys(Some(auth.tenant_id())).await?;
    Ok(Json(json!({"object": "list", "data": keys})))
}

/// `POST /v1/me/keys` `{"name", "scopes"?, "expires_in"?}` → 201 with the key, shown once. The
/// scopes must be ones the calling key has (by default, the caller's non-`account` defaults); it
/// expires no later than the calling key; the tenant keeps under its key quota
/// (`rate.keys_per_tenant`, or its own `max_keys`).
pub(crate) async fn create_key(
    State(state): State<AppState>,
    auth: Auth,
    body: Bytes,
) -> ApiResult<Response> {
    let req: NewKeyRequest = body::json(&body)?;
    let own: Vec<Scope> = Scope::ALL
        .into_iter()
        .filter(|s| auth.principal.can(*s))
        .collect();
    let ceiling = tenancy::Ceiling {
        scopes: &own,
        expires_at: auth.principal.key.expires_at,
        max_keys: auth.limits.max_keys,
    };
    tenancy::mint_key(&state, &auth, &auth.principal.tenant, req, Some(ceiling)).await
}

/// `DELETE /v1/me/keys/{id}`: revokes one of the tenant's keys (the calling one too, which then
/// stops working); another tenant's key is not found.
pub(crate) async fn revoke_key(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<KeyRecord>> {
    let rec = state
        .store
        .system()
        .revoke_key(&id, Some(auth.tenant_id()))
        .await?;
    tenancy::admin_done(
        &state,
        &auth,
        "key.revoke",
        rec.id.clone(),
        json!({"tenant": rec.tenant_id}),
    )
    .await;
    Ok(Json(rec))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EraseRequest {
    /// The tenant's name, typed again: erasure cannot be undone.
    confirm: String,
}

/// `DELETE /v1/me` `{"confirm": "<tenant name>"}`: erases everything the tenant has, its keys
/// included (docs/data-protection.md). The operator's tenant cannot erase itself.
pub(crate) async fn erase(State(state): State<AppState>, auth: Auth, body: Bytes) -> ApiResult<Json<Value>> {
    let req: EraseRequest = body::json(&body)?;
    let tenant = auth.principal.tenant.clone();
    if req.confirm != tenant.name {
        return Err(ApiError::invalid(
            "confirm",
            "type the account's name exactly to confirm erasure; nothing was erased",
        ));
    }
    tenancy::erase(&state, &auth, &tenant).await.map(Json)
}
