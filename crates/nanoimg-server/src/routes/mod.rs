//! The route table. Each module is one resource; handlers parse, authorise, and delegate.

mod account;
mod admin;
mod assets;
mod body;
mod characters;
mod export;
mod images;
mod jobs;
mod provenance;
mod sessions;
pub mod studio;
mod system;

use crate::state::AppState;
use axum::routing::{get, post};
use axum::Router;

/// A worker's routes: health and metrics only (it serves no API).
pub(crate) fn worker_routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/metrics", get(system::metrics))
        .fallback(system::not_found)
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(studio::index))
        .route("/studio/{name}", get(studio::asset))
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/metrics", get(system::metrics))
        .route("/openapi.json", get(system::openapi))
        .route("/v1/models", get(system::models))
        .route("/v1/me", get(system::me).delete(account::erase))
        .route("/v1/me/export", get(export::export))
        .route("/v1/me/usage", get(account::usage))
        .route("/v1/me/keys", post(account::create_key).get(account::list_keys))
        .route("/v1/me/keys/{id}", axum::routing::delete(account::revoke_key))
        .route("/v1/images/generations", post(images::generations))
        .route("/v1/images/edits", post(images::edits))
        .route("/v1/images/variations", post(images::variations))
        .route("/v1/jobs", post(jobs::create).get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::get).delete(jobs::cancel))
        .route("/v1/jobs/{id}/events", get(jobs::events))
        .route("/v1/assets", post(assets::upload).get(assets::list))
        .route("/v1/assets/{id}", get(assets::get).delete(assets::delete))
        .route("/v1/assets/{id}/content", get(assets::content))
        .route("/v1/files/{id}", get(assets::signed_file))
        .route("/v1/provenance/verify", post(provenance::verify))
        .route("/v1/characters", post(characters::create).get(characters::list))
        .route(
            "/v1/characters/{id}",
            get(characters::get).delete(characters::delete),
        )
        .route("/v1/edit-sessions", post(sessions::create).get(sessions::list))
        .route(
            "/v1/edit-sessions/{id}",
            get(sessions::get).delete(sessions::delete),
        )
        .route("/v1/edit-sessions/{id}/instructions", post(sessions::instruct))
        .route("/v1/edit-sessions/{id}/undo", post(sessions::undo))
        .route("/v1/edit-sessions/{id}/redo", post(sessions::redo))
        .route("/v1/edit-sessions/{id}/checkout", post(sessions::checkout))
        .route(
            "/v1/admin/tenants",
            post(admin::create_tenant).get(admin::list_tenants),
        )
        .route(
            "/v1/admin/tenants/{id}",
            get(admin::get_tenant).delete(admin::erase_tenant),
        )
        .route(
            "/v1/admin/tenants/{id}/limits",
            axum::routing::put(admin::set_limits),
        )
        .route(
            "/v1/admin/tenants/{id}/moderation",
            axum::routing::put(admin::set_moderation),
        )
        .route(
            "/v1/admin/tenants/{id}/retention",
            axum::routing::put(admin::set_retention),
        )
        .route(
            "/v1/admin/tenants/{id}/keys",
            post(admin::create_key).get(admin::list_keys),
        )
        .route("/v1/admin/keys/{id}", axum::routing::delete(admin::revoke_key))
        .route("/v1/admin/keys/{id}/rotate", post(admin::rotate_key))
        .route("/v1/admin/audit", get(admin::audit))
        .route("/v1/admin/audit/verify", get(admin::verify_audit))
        .fallback(system::not_found)
}
