//! `/v1/assets`: upload, list, read, download and delete images; `/v1/files/{id}` serves the
//! signed links of `response_format: "url"`.

use super::body::Form;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::uploads;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use nanoimg_store::{Asset, Outcome};
use serde::Deserialize;

fn asset_json(a: &Asset) -> serde_json::Value {
    let mut v = serde_json::to_value(a).unwrap_or_default();
    v["object"] = "asset".into();
    v
}

/// `POST /v1/assets` (multipart, one `file`): the image is decoded with limits and re-encoded
/// as PNG; what is kept never contains the client's original bytes or metadata.
pub(crate) async fn upload(
    State(state): State<AppState>,
    auth: Auth,
    multipart: Multipart,
) -> ApiResult<Response> {
    let form = Form::read(multipart).await?;
    if let Some((name, _)) = form.fields.first() {
        return Err(ApiError::invalid(
            name.clone(),
            "unexpected field; send one file named `file`",
        ));
    }
    let file = match form.files.as_slice() {
        [(name, bytes)] if name == "file" => bytes,
        _ => return Err(ApiError::invalid("file", "send exactly one file, named `file`")),
    };
    crate::admission::check_storage(&state, &auth).await?;
    let img = uploads::accept(&state, &auth, file, "file").await?.to_rgb8();
    let id = uploads::store(&state, &auth, &img, "file").await?;
    state
        .audit
        .record(auth.event(
            "asset.upload",
            Some(id.clone()),
            Outcome::Success,
            serde_json::json!({"bytes": file.len()}),
        ))
        .await;
    let asset = state.store.scoped(auth.tenant_id()).asset(&id).await?;
    Ok((StatusCode::CREATED, Json(asset_json(&asset))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    limit: Option<u32>,
    before: Option<String>,
}

/// `GET /v1/assets?limit=&before=`: newest first.
pub(crate) async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let limit = q.limit.unwrap_or(20);
    let assets = state
        .store
        .scoped(auth.tenant_id())
        .assets(limit, q.before.as_deref())
        .await?;
    Ok(Json(serde_json::json!({
        "object": "list",
        "data": assets.iter().map(asset_json).collect::<Vec<_>>(),
        "has_more": assets.len() as u32 == limit.clamp(1, 100),
    })))
}

/// `GET /v1/assets/{id}`.
pub(crate) async fn get(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let a = state.store.scoped(auth.tenant_id()).asset(&id).await?;
    Ok(Json(asset_json(&a)))
}

fn image_response(asset: &Asset, bytes: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, asset.media_type.clone()),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{}.{}\"", asset.id, ext(&asset.media_type)),
            ),
        ],
        bytes,
    )
        .into_response()
}

fn ext(media_type: &str) -> &'static str {
    nanoimg_engine::codec::OutputFormat::from_media_type(media_type).map_or("bin", |f| f.as_str())
}

/// `GET /v1/assets/{id}/content`: the image bytes.
pub(crate) async fn content(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (a, bytes) = state.store.scoped(auth.tenant_id()).asset_bytes(&id).await?;
    Ok(image_response(&a, bytes))
}

/// `DELETE /v1/assets/{id}`.
pub(crate) async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    state.store.scoped(auth.tenant_id()).delete_asset(&id).await?;
    state
        .audit
        .record(auth.event(
            "asset.delete",
            Some(id.clone()),
            Outcome::Success,
            serde_json::json!({}),
        ))
        .await;
    Ok(Json(
        serde_json::json!({"id": id, "object": "asset", "deleted": true}),
    ))
}

#[derive(Debug, Deserialize)]
pub(crate) struct SignedQuery {
    expires: i64,
    sig: String,
    t: String,
}

/// `GET /v1/files/{id}?expires=&sig=&t=`: a signed link, no key needed. Any fault (bad
/// signature, expired, missing) answers the same 404, so links cannot be probed.
pub(crate) async fn signed_file(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<SignedQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Ok(Query(q)) = q else {
        return Err(ApiError::not_found("file"));
    };
    let now = nanoimg_store::ids::now_ms() / 1000;
    if !state.signer.verify(&q.t, &id, q.expires, &q.sig, now) {
        state.metrics.reject("bad_signed_link");
        return Err(ApiError::not_found("file"));
    }
    let (a, bytes) = state
        .store
        .scoped(&q.t)
        .asset_bytes(&id)
        .await
        .map_err(|_| ApiError::not_found("file"))?;
    Ok(image_response(&a, bytes))
}
