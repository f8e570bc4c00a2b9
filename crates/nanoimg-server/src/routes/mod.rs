//! The route table. [`ROUTES`] is the one list of what the server serves: each route's method,
//! path, who may call it, its body, what it answers and its handler. The router is built from it,
//! the key and scope are checked for every route by one layer ([`crate::auth::authorize`]) from
//! the route's [`Access`], and `/openapi.json` is written from it. Each module is one resource; handlers
//! parse and delegate. No route module calls into another: what two share lives outside
//! `routes/` (`params`, `admission`, `uploads`, `tenancy`), or in the helpers `body` and `sse`.

mod a1111;
mod account;
mod admin;
mod assets;
mod body;
mod characters;
mod export;
mod images;
mod jobs;
mod outcome;
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

/// What a route answers when it succeeds; its errors are the `Error` shape unless listed here.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// JSON: each status with the name of its schema in the document's `components/schemas`.
    Json(&'static [(u16, &'static str)]),
    /// 200 with JSON in this schema, or server-sent events when the request asks `stream: true`.
    JsonOrEvents(&'static str),
    /// Server-sent events.
    Events,
    /// 204, no body.
    NoContent,
    /// Bytes of this media type (a range such as `image/*` where it varies).
    Bytes(&'static str),
}

/// One operation.
pub struct Route {
    /// Lower case: `get`, `post`, `put`, `delete`.
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    /// `json`, `multipart` or `none`.
    pub body: &'static str,
    pub answer: Answer,
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
    ($method:ident $path:literal, $access:expr, $body:literal => $answer:expr, $handler:path, $summary:expr) => {
        route!($method $path, $access, $body => $answer, $handler, $summary, false)
    };
    ($method:ident $path:literal, $access:expr, $body:literal => $answer:expr, $handler:path, $summary:expr, $worker:expr) => {
        Route {
            method: stringify!($method),
            path: $path,
            access: $access,
            body: $body,
            answer: $answer,
            summary: $summary,
            worker: $worker,
            handler: || $method($handler),
        }
    };
}

use Answer::{Bytes, Events, Json, JsonOrEvents, NoContent};

/// Every route: method and path, who may call it, its body `=>` what it answers, its handler and
/// what it does.
pub const ROUTES: &[Route] = &[
    route!(get "/", PUBLIC, "none" => Bytes("text/html"), studio::index, "The studio (HTML)"),
    route!(get "/studio/{name}", PUBLIC, "none" => Bytes("text/*"), studio::asset, "The studio's scripts and style sheet"),
    route!(get "/healthz", PUBLIC, "none" => Json(&[(200, "Health")]), system::healthz, "The process is up", true),
    route!(get "/readyz", PUBLIC, "none" => Json(&[(200, "Readiness"), (503, "Readiness")]), system::readyz,
        "The database answers, the queue has room and the server is not shutting down", true),
    route!(get "/metrics", PUBLIC, "none" => Bytes("application/openmetrics-text"), system::metrics, "Prometheus metrics", true),
    route!(get "/openapi.json", PUBLIC, "none" => Json(&[(200, "Document")]), system::openapi, "This document"),
    route!(get "/v1/models", KEY, "none" => Json(&[(200, "ModelList")]), system::models, "Models this server runs"),
    route!(get "/v1/me", KEY, "none" => Json(&[(200, "Me")]), system::me, "The caller's tenant, key, scopes and limits"),
    route!(get "/v1/me/export", ACCOUNT, "none" => Bytes("application/zip"), export::export,
        "Everything the caller's tenant has, as a zip: records (JSON), images and LoRA files"),
    route!(delete "/v1/me", ACCOUNT, "json" => Json(&[(200, "Erasure")]), account::erase,
        "Erase everything the caller's tenant has; {\"confirm\": tenant name}"),
    route!(get "/v1/me/usage", KEY, "none" => Json(&[(200, "Usage")]), account::usage,
        "What is left of the tenant's per-minute budgets, running jobs and stored data"),
    route!(get "/v1/me/keys", ACCOUNT, "none" => Json(&[(200, "KeyList")]), account::list_keys, "The tenant's own keys"),
    route!(post "/v1/me/keys", ACCOUNT, "json" => Json(&[(201, "NewKey")]), account::create_key,
        "Create a key with at most the caller's scopes (its secret is shown once)"),
    route!(delete "/v1/me/keys/{id}", ACCOUNT, "none" => Json(&[(200, "Key")]), account::revoke_key,
        "Revoke one of the tenant's keys"),
    route!(post "/v1/images/generations", GENERATE, "json" => JsonOrEvents("Images"), images::generations,
        "Create images from a prompt (OpenAI-compatible)"),
    route!(post "/v1/images/edits", EDIT, "multipart" => JsonOrEvents("EditAnswer"), images::edits,
        "Edit an image with a prompt and optional mask (OpenAI-compatible)"),
    route!(post "/v1/images/variations", EDIT, "multipart" => JsonOrEvents("EditAnswer"), images::variations,
        "Variations of an image (OpenAI-compatible)"),
    route!(post "/v1/jobs", GENERATE, "json" => Json(&[(202, "Job")]), jobs::create,
        "Submit a generation job; returns at once (202)"),
    route!(get "/v1/jobs", READ, "none" => Json(&[(200, "JobList")]), jobs::list, "Recent jobs"),
    route!(get "/v1/jobs/{id}", READ, "none" => Json(&[(200, "Job")]), jobs::get, "A job"),
    route!(delete "/v1/jobs/{id}", GENERATE, "none" => Json(&[(200, "Job")]), jobs::cancel, "Cancel a queued or running job"),
    route!(get "/v1/jobs/{id}/events", READ, "none" => Events, jobs::events,
        "Server-sent events: status, progress with previews, result"),
    route!(post "/v1/assets", WRITE, "multipart" => Json(&[(201, "Asset")]), assets::upload, "Upload an image (field `file`)"),
    route!(get "/v1/assets", READ, "none" => Json(&[(200, "AssetList")]), assets::list, "List images, newest first"),
    route!(get "/v1/assets/{id}", READ, "none" => Json(&[(200, "Asset")]), assets::get, "An image's record"),
    route!(delete "/v1/assets/{id}", WRITE, "none" => Json(&[(200, "Deleted")]), assets::delete, "Delete an image"),
    route!(get "/v1/assets/{id}/content", READ, "none" => Bytes("image/*"), assets::content, "An image's bytes"),
    route!(get "/v1/files/{id}", PUBLIC, "none" => Bytes("image/*"), assets::signed_file,
        "A signed, expiring image link (from response_format=url)"),
    route!(post "/v1/provenance/verify", KEY, "multipart" => Json(&[(200, "Verification")]), provenance::verify,
        "Check an image's C2PA manifest and invisible watermark (one file named `image`)"),
    route!(post "/v1/edit-sessions", EDIT, "json" => Json(&[(201, "EditSession")]), sessions::create,
        "Start an edit session on one of your images ({\"image_id\": …})"),
    route!(get "/v1/edit-sessions", READ, "none" => Json(&[(200, "EditSessionList")]), sessions::list,
        "Edit sessions, most recently changed first"),
    route!(get "/v1/edit-sessions/{id}", READ, "none" => Json(&[(200, "EditSession")]), sessions::get,
        "An edit session: its versions (a tree by parent_id) and head"),
    route!(delete "/v1/edit-sessions/{id}", EDIT, "none" => NoContent, sessions::delete,
        "Delete an edit session and the images its instructions made"),
    route!(post "/v1/edit-sessions/{id}/instructions", EDIT, "json" => Json(&[(201, "EditTurn"), (200, "InstructionAnswer")]), sessions::instruct,
        "Apply a plain-language instruction (or a plan) to the head or from_version; \
         dry_run returns the plan"),
    route!(post "/v1/edit-sessions/{id}/undo", EDIT, "none" => Json(&[(200, "EditSession")]), sessions::undo,
        "Move the head back to its parent"),
    route!(post "/v1/edit-sessions/{id}/redo", EDIT, "none" => Json(&[(200, "EditSession")]), sessions::redo,
        "Move the head forward again after an undo"),
    route!(post "/v1/edit-sessions/{id}/checkout", EDIT, "json" => Json(&[(200, "EditSession")]), sessions::checkout,
        "Make any version the head ({\"version\": …}); the next instruction branches from it"),
    route!(post "/v1/characters", CHARACTERS, "multipart" => Json(&[(201, "Character")]), characters::create,
        "Create a character: name, description, strength, seed, consent, 1-8 `reference` \
         images and an optional `lora` (.safetensors)"),
    route!(get "/v1/characters", CHARACTERS, "none" => Json(&[(200, "CharacterList")]), characters::list, "Your characters, newest first"),
    route!(get "/v1/characters/{id}", CHARACTERS, "none" => Json(&[(200, "Character")]), characters::get,
        "A character and its reference images"),
    route!(delete "/v1/characters/{id}", CHARACTERS, "none" => Json(&[(200, "CharacterDeleted")]), characters::delete,
        "Delete a character, its reference images, its LoRA and every bank computed from them"),
    route!(post "/sdapi/v1/txt2img", GENERATE, "json" => Json(&[(200, "A1111Images")]), a1111::txt2img,
        "Automatic1111 API: images from a prompt (A1111's fields; unsupported settings refused by name)"),
    route!(post "/sdapi/v1/img2img", EDIT, "json" => Json(&[(200, "A1111Images")]), a1111::img2img,
        "Automatic1111 API: change an image (init_images, denoising_strength; mask for inpainting)"),
    route!(get "/sdapi/v1/sd-models", KEY, "none" => Json(&[(200, "A1111Models")]), a1111::sd_models,
        "Automatic1111 API: the models"),
    route!(get "/sdapi/v1/samplers", KEY, "none" => Json(&[(200, "A1111Samplers")]), a1111::samplers,
        "Automatic1111 API: the samplers, by A1111's names"),
    route!(get "/sdapi/v1/loras", KEY, "none" => Json(&[(200, "A1111Loras")]), a1111::loras,
        "Automatic1111 API: the LoRA library, by the names `<lora:name:weight>` takes"),
    route!(get "/sdapi/v1/progress", KEY, "none" => Json(&[(200, "A1111Progress")]), a1111::progress,
        "Automatic1111 API: the tenant's queued and running jobs and the running one's step"),
    route!(get "/sdapi/v1/options", KEY, "none" => Json(&[(200, "A1111Options")]), a1111::get_options,
        "Automatic1111 API: the tenant's model (sd_model_checkpoint)"),
    route!(post "/sdapi/v1/interrupt", GENERATE, "none" => Json(&[(200, "Null")]), a1111::interrupt,
        "Automatic1111 API: stop the tenant's queued and running jobs (its Stop button)"),
    route!(post "/sdapi/v1/options", GENERATE, "json" => Json(&[(200, "Null")]), a1111::set_options,
        "Automatic1111 API: set the tenant's model (sd_model_checkpoint; per tenant, not server-wide)"),
    route!(post "/v1/admin/tenants", ADMIN, "json" => Json(&[(201, "Tenant")]), admin::create_tenant, "Create a tenant"),
    route!(get "/v1/admin/tenants", ADMIN, "none" => Json(&[(200, "TenantList")]), admin::list_tenants, "List tenants"),
    route!(get "/v1/admin/tenants/{id}", ADMIN, "none" => Json(&[(200, "Tenant")]), admin::get_tenant,
        "One tenant, by id or name, with its limit overrides"),
    route!(put "/v1/admin/tenants/{id}/retention", ADMIN, "json" => Json(&[(200, "Tenant")]), admin::set_retention,
        "Set a tenant's retention in days (days: 1-3650, or null to keep everything)"),
    route!(delete "/v1/admin/tenants/{id}", ADMIN, "none" => Json(&[(200, "Erasure")]), admin::erase_tenant,
        "Erase a tenant: its key destroyed first, then its rows, blobs and audit details"),
    route!(put "/v1/admin/tenants/{id}/limits", ADMIN, "json" => Json(&[(200, "Tenant")]), admin::set_limits,
        "Replace a tenant's limit overrides (requests_per_minute, images_per_minute, \
         concurrent_jobs, megapixel_steps_per_minute, max_job_megapixel_steps, max_stored_bytes, \
         max_keys; missing or null = the server's default)"),
    route!(put "/v1/admin/tenants/{id}/moderation", ADMIN, "json" => Json(&[(200, "Tenant")]), admin::set_moderation,
        "Whether the tenant's requests may use moderation: low ({\"allow_low\": bool})"),
    route!(post "/v1/admin/tenants/{id}/keys", ADMIN, "json" => Json(&[(201, "NewKey")]), admin::create_key,
        "Create an API key (shown once)"),
    route!(get "/v1/admin/tenants/{id}/keys", ADMIN, "none" => Json(&[(200, "KeyList")]), admin::list_keys, "List a tenant's keys"),
    route!(delete "/v1/admin/keys/{id}", ADMIN, "none" => Json(&[(200, "Key")]), admin::revoke_key, "Revoke a key"),
    route!(post "/v1/admin/keys/{id}/rotate", ADMIN, "none" => Json(&[(201, "NewKey")]), admin::rotate_key,
        "Replace a key with a new one"),
    route!(get "/v1/admin/audit", ADMIN, "none" => Json(&[(200, "AuditList")]), admin::audit, "Audit events"),
    route!(get "/v1/admin/audit/verify", ADMIN, "none" => Json(&[(200, "AuditVerification")]), admin::verify_audit,
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
