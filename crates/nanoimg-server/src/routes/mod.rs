//! The route table. [`ROUTES`] is the one list of what the server serves: each route's method,
//! path, who may call it, its body and its handler. The router is built from it, the key and
//! scope are checked for every route by one layer ([`crate::auth::authorize`]) from the route's
//! [`Access`], and `/openapi.json` is written from it. Each module is one resource; handlers
//! parse and delegate. No route module calls into another: what two share lives outside
//! `routes/` (`params`, `admission`, `uploads`, `tenancy`), or in the helpers `body` and `sse`.

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
mod sse;
pub mod studio;
mod system;

use crate::state::AppState;
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::Router;
use nanoimg_store::Scope;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: health, metrics, the document, the studio's files, signed links.
    Public,
    /// Any valid key, whatever its scopes.
    AnyKey,
    /// A key with this scope.
    Scope(Scope),
}

/// One operation.
pub struct Route {
    /// Lower case: `get`, `post`, `put`, `delete`.
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    /// `json`, `multipart` or `none`.
    pub body: &'static str,
    pub summary: &'static str,
    /// Also served by a worker process (health and metrics).
    pub worker: bool,
    handler: fn() -> MethodRouter<AppState>,
}

impl Route {
    /// The scope's name, `key` for any key, `None` for public routes.
    pub fn scope(&self) -> Option<&'static str> {
        match self.access {
            Access::Public => None,
            Access::AnyKey => Some("key"),
            Access::Scope(s) => Some(s.as_str()),
        }
    }
}

const PUBLIC: Access = Access::Public;
const KEY: Access = Access::AnyKey;
const GENERATE: Access = Access::Scope(Scope::ImagesGenerate);
const EDIT: Access = Access::Scope(Scope::ImagesEdit);
const READ: Access = Access::Scope(Scope::AssetsRead);
const WRITE: Access = Access::Scope(Scope::AssetsWrite);
const CHARACTERS: Access = Access::Scope(Scope::Characters);
const ACCOUNT: Access = Access::Scope(Scope::Account);
const ADMIN: Access = Access::Scope(Scope::Admin);

macro_rules! route {
    ($method:ident $path:literal, $access:expr, $body:literal, $handler:path, $summary:expr) => {
        route!($method $path, $access, $body, $handler, $summary, false)
    };
    ($method:ident $path:literal, $access:expr, $body:literal, $handler:path, $summary:expr, $worker:expr) => {
        Route {
            method: stringify!($method),
            path: $path,
            access: $access,
            body: $body,
            summary: $summary,
            worker: $worker,
            handler: || $method($handler),
        }
    };
}

/// Every route.
pub const ROUTES: &[Route] = &[
    route!(get "/", PUBLIC, "none", studio::index, "The studio (HTML)"),
    route!(get "/studio/{name}", PUBLIC, "none", studio::asset, "The studio's scripts and style sheet"),
    route!(get "/healthz", PUBLIC, "none", system::healthz, "The process is up", true),
    route!(get "/readyz", PUBLIC, "none", system::readyz,
        "The database answers, the queue has room and the server is not shutting down", true),
    route!(get "/metrics", PUBLIC, "none", system::metrics, "Prometheus metrics", true),
    route!(get "/openapi.json", PUBLIC, "none", system::openapi, "This document"),
    route!(get "/v1/models", KEY, "none", system::models, "Models this server runs"),
    route!(get "/v1/me", KEY, "none", system::me, "The caller's tenant, key, scopes and limits"),
    route!(get "/v1/me/export", ACCOUNT, "none", export::export,
        "Everything the caller's tenant has, as a zip: records (JSON), images and LoRA files"),
    route!(delete "/v1/me", ACCOUNT, "json", account::erase,
        "Erase everything the caller's tenant has; {\"confirm\": tenant name}"),
    route!(get "/v1/me/usage", KEY, "none", account::usage,
        "What is left of the tenant's per-minute budgets, running jobs and stored data"),
    route!(get "/v1/me/keys", ACCOUNT, "none", account::list_keys, "The tenant's own keys"),
    route!(post "/v1/me/keys", ACCOUNT, "json", account::create_key,
        "Create a key with at most the caller's scopes (its secret is shown once)"),
    route!(delete "/v1/me/keys/{id}", ACCOUNT, "none", account::revoke_key,
        "Revoke one of the tenant's keys"),
    route!(post "/v1/images/generations", GENERATE, "json", images::generations,
        "Create images from a prompt (OpenAI-compatible)"),
    route!(post "/v1/images/edits", EDIT, "multipart", images::edits,
        "Edit an image with a prompt and optional mask (OpenAI-compatible)"),
    route!(post "/v1/images/variations", EDIT, "multipart", images::variations,
        "Variations of an image (OpenAI-compatible)"),
    route!(post "/v1/jobs", GENERATE, "json", jobs::create,
        "Submit a generation job; returns at once (202)"),
    route!(get "/v1/jobs", READ, "none", jobs::list, "Recent jobs"),
    route!(get "/v1/jobs/{id}", READ, "none", jobs::get, "A job"),
    route!(delete "/v1/jobs/{id}", GENERATE, "none", jobs::cancel, "Cancel a queued or running job"),
    route!(get "/v1/jobs/{id}/events", READ, "none", jobs::events,
        "Server-sent events: status, progress with previews, result"),
    route!(post "/v1/assets", WRITE, "multipart", assets::upload, "Upload an image (field `file`)"),
    route!(get "/v1/assets", READ, "none", assets::list, "List images, newest first"),
    route!(get "/v1/assets/{id}", READ, "none", assets::get, "An image's record"),
    route!(delete "/v1/assets/{id}", WRITE, "none", assets::delete, "Delete an image"),
    route!(get "/v1/assets/{id}/content", READ, "none", assets::content, "An image's bytes"),
    route!(get "/v1/files/{id}", PUBLIC, "none", assets::signed_file,
        "A signed, expiring image link (from response_format=url)"),
    route!(post "/v1/provenance/verify", KEY, "multipart", provenance::verify,
        "Check an image's C2PA manifest and invisible watermark (one file named `image`)"),
    route!(post "/v1/edit-sessions", EDIT, "json", sessions::create,
        "Start an edit session on one of your images ({\"image_id\": …})"),
    route!(get "/v1/edit-sessions", READ, "none", sessions::list,
        "Edit sessions, most recently changed first"),
    route!(get "/v1/edit-sessions/{id}", READ, "none", sessions::get,
        "An edit session: its versions (a tree by parent_id) and head"),
    route!(delete "/v1/edit-sessions/{id}", EDIT, "none", sessions::delete,
        "Delete an edit session and the images its instructions made"),
    route!(post "/v1/edit-sessions/{id}/instructions", EDIT, "json", sessions::instruct,
        "Apply a plain-language instruction (or a plan) to the head or from_version; \
         dry_run returns the plan"),
    route!(post "/v1/edit-sessions/{id}/undo", EDIT, "none", sessions::undo,
        "Move the head back to its parent"),
    route!(post "/v1/edit-sessions/{id}/redo", EDIT, "none", sessions::redo,
        "Move the head forward again after an undo"),
    route!(post "/v1/edit-sessions/{id}/checkout", EDIT, "json", sessions::checkout,
        "Make any version the head ({\"version\": …}); the next instruction branches from it"),
    route!(post "/v1/characters", CHARACTERS, "multipart", characters::create,
        "Create a character: name, description, strength, seed, consent, 1-8 `reference` \
         images and an optional `lora` (.safetensors)"),
    route!(get "/v1/characters", CHARACTERS, "none", characters::list, "Your characters, newest first"),
    route!(get "/v1/characters/{id}", CHARACTERS, "none", characters::get,
        "A character and its reference images"),
    route!(delete "/v1/characters/{id}", CHARACTERS, "none", characters::delete,
        "Delete a character, its reference images, its LoRA and every bank computed from them"),
    route!(post "/v1/admin/tenants", ADMIN, "json", admin::create_tenant, "Create a tenant"),
    route!(get "/v1/admin/tenants", ADMIN, "none", admin::list_tenants, "List tenants"),
    route!(get "/v1/admin/tenants/{id}", ADMIN, "none", admin::get_tenant,
        "One tenant, by id or name, with its limit overrides"),
    route!(put "/v1/admin/tenants/{id}/retention", ADMIN, "json", admin::set_retention,
        "Set a tenant's retention in days (days: 1-3650, or null to keep everything)"),
    route!(delete "/v1/admin/tenants/{id}", ADMIN, "none", admin::erase_tenant,
        "Erase a tenant: its key destroyed first, then its rows, blobs and audit details"),
    route!(put "/v1/admin/tenants/{id}/limits", ADMIN, "json", admin::set_limits,
        "Replace a tenant's limit overrides \
         (requests_per_minute, images_per_minute, concurrent_jobs; null = server default)"),
    route!(put "/v1/admin/tenants/{id}/moderation", ADMIN, "json", admin::set_moderation,
        "Whether the tenant's requests may use moderation: low ({\"allow_low\": bool})"),
    route!(post "/v1/admin/tenants/{id}/keys", ADMIN, "json", admin::create_key,
        "Create an API key (shown once)"),
    route!(get "/v1/admin/tenants/{id}/keys", ADMIN, "none", admin::list_keys, "List a tenant's keys"),
    route!(delete "/v1/admin/keys/{id}", ADMIN, "none", admin::revoke_key, "Revoke a key"),
    route!(post "/v1/admin/keys/{id}/rotate", ADMIN, "none", admin::rotate_key,
        "Replace a key with a new one"),
    route!(get "/v1/admin/audit", ADMIN, "none", admin::audit, "Audit events"),
    route!(get "/v1/admin/audit/verify", ADMIN, "none", admin::verify_audit,
        "Walk the audit hash chain and its signed checkpoints; the first bad entry if any"),
];

/// The routes of a process: every one, or (a worker, which serves no API) health and metrics.
pub(crate) fn router(state: &AppState, worker: bool) -> Router<AppState> {
    let mut router = Router::new();
    for r in ROUTES.iter().filter(|r| r.worker || !worker) {
        let mut handler = (r.handler)();
        if r.access != Access::Public {
            handler = handler.route_layer(axum::middleware::from_fn_with_state(
                (state.clone(), r.access),
                crate::auth::authorize,
            ));
        }
        router = router.route(r.path, handler);
    }
    router.fallback(system::not_found)
}
