//! Health, readiness, metrics, the OpenAPI document, the model list and `/v1/me`.

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// `GET /healthz`: the process is up.
pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: the database answers, the queue has room and the server is not stopping.
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let db = state.store.ping().await;
    let (queued, running) = state.jobs.depth();
    let room = queued < state.config.queue_capacity;
    let stopping = state.jobs.stopping();
    let status = if db && room && !stopping {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({
            "database": db, "queued": queued, "running": running, "stopping": stopping,
            "queue_capacity": state.config.queue_capacity,
            "safety": state.safety.layers.iter().map(|l| (l.layer.to_owned(), serde_json::json!({
                "on": l.on, "detail": l.detail,
            }))).collect::<serde_json::Map<_, _>>(),
        })),
    )
        .into_response()
}

/// `GET /metrics`: Prometheus text format.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// `GET /openapi.json`.
pub(crate) async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}

/// `GET /v1/models`: OpenAI's list shape, with NanoImg's details.
pub(crate) async fn models(State(state): State<AppState>, _auth: Auth) -> Json<serde_json::Value> {
    let data: Vec<_> = state
        .catalog
        .entries()
        .iter()
        .map(|e| {
            serde_json::json!({
                "id": e.name, "object": "model", "created": e.created, "owned_by": "nanoimg",
                "default": e.name == state.catalog.default_name(),
                "family": e.info.family, "turbo": e.info.turbo, "inpainting": e.info.inpainting,
                "embedded_guidance": e.info.embedded_guidance, "kontext": e.info.kontext,
                "defaults": e.info.defaults, "max_size": e.info.max_size,
                "quantize": e.info.quantize, "description": e.info.description,
            })
        })
        .collect();
    Json(serde_json::json!({"object": "list", "data": data}))
}

/// `GET /v1/me`: who the key belongs to, its scopes and the limits that apply.
pub(crate) async fn me(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<serde_json::Value>> {
    let p = &auth.principal;
    Ok(Json(serde_json::json!({
        "tenant": p.tenant,
        "key": p.key,
        "limits": {
            "requests_per_minute": auth.limits.requests_per_minute,
            "images_per_minute": auth.limits.images_per_minute,
            "concurrent_jobs": auth.limits.concurrent_jobs,
            "megapixel_steps_per_minute": auth.limits.megapixel_steps_per_minute,
            "max_job_megapixel_steps": auth.limits.max_job_megapixel_steps,
            "max_stored_bytes": auth.limits.max_stored_bytes,
            "max_keys": auth.limits.max_keys,
            "request": state.config.limits,
        },
    })))
}

/// Anything else: a 404 in the API's error shape.
pub(crate) async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found_error",
        "unknown_route",
        "no such route",
    )
}
