//! `/v1/admin/*`: tenants, keys and the audit log. Only `admin`-scoped keys of the operator
//! tenant get here; every change is audited before it is answered.

use super::body;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::tenancy::{admin_done, erase, key_created, mint_key, NewKeyRequest};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use nanoimg_store::{KeyRecord, Tenant, TenantLimits};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewTenant {
    name: String,
}

/// `POST /v1/admin/tenants` `{"name"}`.
pub(crate) async fn create_tenant(
    State(state): State<AppState>,
    auth: Auth,
    body: Bytes,
) -> ApiResult<Response> {
    let req: NewTenant = body::json(&body)?;
    let t = state.store.system().create_tenant(&req.name, false).await?;
    admin_done(
        &state,
        &auth,
        "tenant.create",
        t.id.clone(),
        serde_json::json!({"name": t.name}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(t)).into_response())
}

/// `GET /v1/admin/tenants`.
pub(crate) async fn list_tenants(State(state): State<AppState>) -> ApiResult<Json<serde_json::Value>> {
    let t = state.store.system().tenants().await?;
    Ok(Json(serde_json::json!({"object": "list", "data": t})))
}

/// `GET /v1/admin/tenants/{id}` (id or name).
pub(crate) async fn get_tenant(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> ApiResult<Json<Tenant>> {
    Ok(Json(state.store.system().tenant(&tenant).await?))
}

/// `DELETE /v1/admin/tenants/{id}` (id or name): erases the tenant for real
/// (docs/data-protection.md). Its jobs are cancelled and its characters' cached banks and
/// merged models dropped; then the store destroys its data key, its rows and blobs, and the
/// detail of its audit events. The erasure itself is audited, without the erased content.
pub(crate) async fn erase_tenant(
    State(state): State<AppState>,
    auth: Auth,
    Path(tenant): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let t = state.store.system().tenant(&tenant).await?;
    erase(&state, &auth, &t).await.map(Json)
}

/// `PUT /v1/admin/tenants/{id}/limits` `{"requests_per_minute"?, "images_per_minute"?,
/// "concurrent_jobs"?, "megapixel_steps_per_minute"?, "max_job_megapixel_steps"?,
/// "max_stored_bytes"?, "max_keys"?}`: replaces the overrides; a missing or null field means the
/// server's default. Takes effect on the tenant's next request.
pub(crate) async fn set_limits(
    State(state): State<AppState>,
    auth: Auth,
    Path(tenant): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Tenant>> {
    let limits: TenantLimits = body::json(&body)?;
    let t = state.store.system().set_tenant_limits(&tenant, &limits).await?;
    admin_done(
        &state,
        &auth,
        "tenant.limits",
        t.id.clone(),
        serde_json::to_value(limits).unwrap_or_default(),
    )
    .await;
    Ok(Json(t))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModerationSetting {
    allow_low: bool,
}

/// `PUT /v1/admin/tenants/{id}/moderation` `{"allow_low": bool}`: whether the tenant's requests
/// may use `moderation: low` (otherwise they are moderated at `auto`).
pub(crate) async fn set_moderation(
    State(state): State<AppState>,
    auth: Auth,
    Path(tenant): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Tenant>> {
    let req: ModerationSetting = body::json(&body)?;
    let t = state
        .store
        .system()
        .set_tenant_low_moderation(&tenant, req.allow_low)
        .await?;
    admin_done(
        &state,
        &auth,
        "tenant.moderation",
        t.id.clone(),
        serde_json::json!({"allow_low": req.allow_low}),
    )
    .await;
    Ok(Json(t))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetentionSetting {
    /// Days, 1 to 3650; null keeps everything.
    days: Option<u32>,
}

/// `PUT /v1/admin/tenants/{id}/retention` `{"days": N | null}`: outputs, uploads, finished
/// jobs (with their prompts) and edit sessions older than N days are deleted, hourly.
pub(crate) async fn set_retention(
    State(state): State<AppState>,
    auth: Auth,
    Path(tenant): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Tenant>> {
    let req: RetentionSetting = body::json(&body)?;
    let t = state
        .store
        .system()
        .set_tenant_retention(&tenant, req.days)
        .await?;
    admin_done(
        &state,
        &auth,
        "tenant.retention",
        t.id.clone(),
        serde_json::json!({"days": req.days}),
    )
    .await;
    Ok(Json(t))
}

/// `POST /v1/admin/tenants/{id}/keys` `{"name", "scopes"?, "expires_in"?}` → the key, once.
pub(crate) async fn create_key(
    State(state): State<AppState>,
    auth: Auth,
    Path(tenant): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: NewKeyRequest = body::json(&body)?;
    let tenant = state.store.system().tenant(&tenant).await?;
    mint_key(&state, &auth, &tenant, req, None).await
}

/// `GET /v1/admin/tenants/{id}/keys`.
pub(crate) async fn list_keys(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let tenant = state.store.system().tenant(&tenant).await?;
    let keys = state.store.system().keys(Some(&tenant.id)).await?;
    Ok(Json(serde_json::json!({"object": "list", "data": keys})))
}

/// `DELETE /v1/admin/keys/{id}`: revoke.
pub(crate) async fn revoke_key(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<KeyRecord>> {
    let rec = state.store.system().revoke_key(&id, None).await?;
    admin_done(
        &state,
        &auth,
        "key.revoke",
        rec.id.clone(),
        serde_json::json!({"tenant": rec.tenant_id}),
    )
    .await;
    Ok(Json(rec))
}

/// `POST /v1/admin/keys/{id}/rotate`: a new key with the same scopes; the old one is revoked.
pub(crate) async fn rotate_key(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (rec, secret) = state.store.system().rotate_key(&id, None).await?;
    admin_done(
        &state,
        &auth,
        "key.rotate",
        rec.id.clone(),
        serde_json::json!({"tenant": rec.tenant_id, "replaces": id}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(key_created(&rec, &secret))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    tenant: Option<String>,
    after: Option<i64>,
    before: Option<i64>,
    order: Option<String>,
    limit: Option<u32>,
}

/// `GET /v1/admin/audit?tenant=&limit=` and either `order=asc&after=SEQ` (the default: oldest
/// first, forward from a cursor) or `order=desc&before=SEQ` (newest first, back from a cursor).
pub(crate) async fn audit(
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let (tenant, limit) = (q.tenant.as_deref(), q.limit.unwrap_or(100));
    let ev = match q.order.as_deref().unwrap_or("asc") {
        "asc" if q.before.is_some() => {
            return Err(ApiError::invalid(
                "before",
                "before pages newest first: use it with order=desc",
            ))
        }
        "asc" => {
            state
                .store
                .system()
                .audit_events(tenant, q.after.unwrap_or(0), limit)
                .await?
        }
        "desc" if q.after.is_some() => {
            return Err(ApiError::invalid(
                "after",
                "after pages oldest first: use it with order=asc",
            ))
        }
        "desc" => {
            state
                .store
                .system()
                .audit_events_newest(tenant, q.before, limit)
                .await?
        }
        other => {
            return Err(ApiError::invalid(
                "order",
                format!("order {other:?}: use asc or desc"),
            ))
        }
    };
    Ok(Json(serde_json::json!({"object": "list", "data": ev})))
}

/// `GET /v1/admin/audit/verify`: walks the chain and checks every checkpoint (the database's and
/// the witness file's) under this server's key. 200 with `ok: false` and the first bad entry
/// when it does not verify.
pub(crate) async fn verify_audit(State(state): State<AppState>) -> ApiResult<Json<serde_json::Value>> {
    let witness = match state.config.audit_options().witness {
        Some(path) => tokio::task::spawn_blocking(move || nanoimg_store::read_witness(&path))
            .await
            .map_err(|e| crate::error::ApiError::internal(e.to_string()))??,
        None => Vec::new(),
    };
    let key = state.store.system().audit_public_key();
    let report = state.store.system().verify_audit(&key, &witness).await?;
    Ok(Json(serde_json::json!({
        "ok": report.ok(),
        "public_key": key.to_hex(),
        "report": report,
    })))
}
