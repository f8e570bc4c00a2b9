//! `/v1/admin/*`: tenants, keys and the audit log. Only `admin`-scoped keys of the operator
//! tenant get here; every change is audited before it is answered.

use super::body;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use nanoimg_store::{KeyRecord, NewKey, Outcome, Scope, SecretKey, Tenant, TenantLimits};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewTenant {
    name: String,
}

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

/// `POST /v1/admin/tenants` `{"name"}`.
pub(crate) async fn create_tenant(
    State(state): State<AppState>,
    auth: Auth,
    body: Bytes,
) -> ApiResult<Response> {
    auth.require(&state, Scope::Admin)?;
    let req: NewTenant = body::json(&body)?;
    let t = state.store.create_tenant(&req.name, false).await?;
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
pub(crate) async fn list_tenants(
    State(state): State<AppState>,
    auth: Auth,
) -> ApiResult<Json<serde_json::Value>> {
    auth.require(&state, Scope::Admin)?;
    let t = state.store.tenants().await?;
    Ok(Json(serde_json::json!({"object": "list", "data": t})))
}

/// `GET /v1/admin/tenants/{id}` (id or name).
pub(crate) async fn get_tenant(
    State(state): State<AppState>,
    auth: Auth,
    Path(tenant): Path<String>,
) -> ApiResult<Json<Tenant>> {
    auth.require(&state, Scope::Admin)?;
    Ok(Json(state.store.tenant(&tenant).await?))
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
    auth.require(&state, Scope::Admin)?;
    let t = state.store.tenant(&tenant).await?;
    erase(&state, &auth, &t).await.map(Json)
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
    let e = state.store.erase_tenant(&t.id).await?;
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

/// `PUT /v1/admin/tenants/{id}/limits` `{"requests_per_minute"?, "images_per_minute"?,
/// "concurrent_jobs"?}`: replaces the overrides; a missing or null field means the server's
/// default. Takes effect on the tenant's next request.
pub(crate) async fn set_limits(
    State(state): State<AppState>,
    auth: Auth,
    Path(tenant): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Tenant>> {
    auth.require(&state, Scope::Admin)?;
    let limits: TenantLimits = body::json(&body)?;
    let t = state.store.set_tenant_limits(&tenant, &limits).await?;
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
    auth.require(&state, Scope::Admin)?;
    let req: ModerationSetting = body::json(&body)?;
    let t = state
        .store
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
    auth.require(&state, Scope::Admin)?;
    let req: RetentionSetting = body::json(&body)?;
    let t = state.store.set_tenant_retention(&tenant, req.days).await?;
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewKeyRequest {
    name: String,
    /// Scope names; default: every scope but `admin`.
    scopes: Option<Vec<String>>,
    /// Lifetime in seconds; none = no expiry.
    expires_in: Option<u64>,
}

/// A new key with its secret, shown this once.
fn key_created(rec: &KeyRecord, secret: &SecretKey) -> serde_json::Value {
    let mut v = serde_json::to_value(rec).unwrap_or_default();
    v["key"] = secret.expose().into();
    v
}

/// `POST /v1/admin/tenants/{id}/keys` `{"name", "scopes"?, "expires_in"?}` → the key, once.
pub(crate) async fn create_key(
    State(state): State<AppState>,
    auth: Auth,
    Path(tenant): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    auth.require(&state, Scope::Admin)?;
    let req: NewKeyRequest = body::json(&body)?;
    let tenant = state.store.tenant(&tenant).await?;
    mint_key(&state, &auth, &tenant, req, None).await
}

/// Makes a key for `tenant` and audits it. With a `ceiling` (self-service), the key may carry
/// only scopes the caller has, and by default gets the defaults the caller has.
pub(crate) async fn mint_key(
    state: &AppState,
    auth: &Auth,
    tenant: &Tenant,
    req: NewKeyRequest,
    ceiling: Option<&[Scope]>,
) -> ApiResult<Response> {
    let scopes = match (&req.scopes, ceiling) {
        (None, None) => Scope::defaults(),
        (None, Some(c)) => Scope::defaults().into_iter().filter(|s| c.contains(s)).collect(),
        (Some(list), _) => {
            Scope::parse_list(&list.join(",")).map_err(|e| ApiError::invalid("scopes", e.to_string()))?
        }
    };
    if let Some(c) = ceiling {
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
    let expires_at = match req.expires_in {
        None => None,
        Some(0) => return Err(ApiError::invalid("expires_in", "must be at least 1 second")),
        Some(s) => Some(
            nanoimg_store::ids::now_ms()
                .saturating_add(i64::try_from(s.min(100 * 365 * 86400)).unwrap_or(i64::MAX / 2) * 1000),
        ),
    };
    let (rec, secret) = state
        .store
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

/// `GET /v1/admin/tenants/{id}/keys`.
pub(crate) async fn list_keys(
    State(state): State<AppState>,
    auth: Auth,
    Path(tenant): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    auth.require(&state, Scope::Admin)?;
    let tenant = state.store.tenant(&tenant).await?;
    let keys = state.store.keys(Some(&tenant.id)).await?;
    Ok(Json(serde_json::json!({"object": "list", "data": keys})))
}

/// `DELETE /v1/admin/keys/{id}`: revoke.
pub(crate) async fn revoke_key(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<KeyRecord>> {
    auth.require(&state, Scope::Admin)?;
    let rec = state.store.revoke_key(&id, None).await?;
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
    auth.require(&state, Scope::Admin)?;
    let (rec, secret) = state.store.rotate_key(&id, None).await?;
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
    auth: Auth,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    auth.require(&state, Scope::Admin)?;
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
                .audit_events(tenant, q.after.unwrap_or(0), limit)
                .await?
        }
        "desc" if q.after.is_some() => {
            return Err(ApiError::invalid(
                "after",
                "after pages oldest first: use it with order=asc",
            ))
        }
        "desc" => state.store.audit_events_newest(tenant, q.before, limit).await?,
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
pub(crate) async fn verify_audit(
    State(state): State<AppState>,
    auth: Auth,
) -> ApiResult<Json<serde_json::Value>> {
    auth.require(&state, Scope::Admin)?;
    let witness = match state.config.audit_options().witness {
        Some(path) => tokio::task::spawn_blocking(move || nanoimg_store::read_witness(&path))
            .await
            .map_err(|e| crate::error::ApiError::internal(e.to_string()))??,
        None => Vec::new(),
    };
    let key = state.store.audit_public_key();
    let report = state.store.verify_audit(&key, &witness).await?;
    Ok(Json(serde_json::json!({
        "ok": report.ok(),
        "public_key": key.to_hex(),
        "report": report,
    })))
}
