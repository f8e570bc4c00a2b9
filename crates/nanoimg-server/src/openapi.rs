//! The OpenAPI 3.1 document at `/openapi.json`, built from [`ROUTES`] — the same table the
//! route test walks, so the document lists exactly what the server serves — and from
//! [`IMAGE_FIELDS`], which a test checks against the request type.

use serde_json::{json, Value};

/// One operation: method, path, the scope it needs (`None` = no key), and what it does.
pub struct RouteDoc {
    pub method: &'static str,
    pub path: &'static str,
    pub scope: Option<&'static str>,
    pub summary: &'static str,
    /// `json`, `multipart` or `none`.
    pub body: &'static str,
}

const fn r(
    method: &'static str,
    path: &'static str,
    scope: Option<&'static str>,
    body: &'static str,
    summary: &'static str,
) -> RouteDoc {
    RouteDoc {
        method,
        path,
        scope,
        summary,
        body,
    }
}

/// Every route. `key` = any valid key, no particular scope.
pub const ROUTES: &[RouteDoc] = &[
    r("get", "/healthz", None, "none", "The process is up"),
    r(
        "get",
        "/readyz",
        None,
        "none",
        "The database answers, the queue has room and the server is not shutting down",
    ),
    r("get", "/metrics", None, "none", "Prometheus metrics"),
    r("get", "/openapi.json", None, "none", "This document"),
    r(
        "get",
        "/v1/models",
        Some("key"),
        "none",
        "Models this server runs",
    ),
    r(
        "get",
        "/v1/me",
        Some("key"),
        "none",
        "The caller's tenant, key, scopes and limits",
    ),
    r(
        "get",
        "/v1/me/export",
        Some("assets:read"),
        "none",
        "Everything the caller's tenant has, as a zip: records (JSON), images and LoRA files",
    ),
    r(
        "delete",
        "/v1/me",
        Some("account"),
        "json",
        "Erase everything the caller's tenant has; {\"confirm\": tenant name}",
    ),
    r(
        "get",
        "/v1/me/usage",
        Some("key"),
        "none",
        "What is left of the key's per-minute budgets, running jobs and stored data",
    ),
    r(
        "get",
        "/v1/me/keys",
        Some("account"),
        "none",
        "The tenant's own keys",
    ),
    r(
        "post",
        "/v1/me/keys",
        Some("account"),
        "json",
        "Create a key with at most the caller's scopes (its secret is shown once)",
    ),
    r(
        "delete",
        "/v1/me/keys/{id}",
        Some("account"),
        "none",
        "Revoke one of the tenant's keys",
    ),
    r(
        "post",
        "/v1/images/generations",
        Some("images:generate"),
        "json",
        "Create images from a prompt (OpenAI-compatible)",
    ),
    r(
        "post",
        "/v1/images/edits",
        Some("images:edit"),
        "multipart",
        "Edit an image with a prompt and optional mask (OpenAI-compatible)",
    ),
    r(
        "post",
        "/v1/images/variations",
        Some("images:edit"),
        "multipart",
        "Variations of an image (OpenAI-compatible)",
    ),
    r(
        "post",
        "/v1/jobs",
        Some("images:generate"),
        "json",
        "Submit a generation job; returns at once (202)",
    ),
    r("get", "/v1/jobs", Some("assets:read"), "none", "Recent jobs"),
    r("get", "/v1/jobs/{id}", Some("assets:read"), "none", "A job"),
    r(
        "delete",
        "/v1/jobs/{id}",
        Some("images:generate"),
        "none",
        "Cancel a queued or running job",
    ),
    r(
        "get",
        "/v1/jobs/{id}/events",
        Some("assets:read"),
        "none",
        "Server-sent events: status, progress with previews, result",
    ),
    r(
        "post",
        "/v1/assets",
        Some("assets:write"),
        "multipart",
        "Upload an image (field `file`)",
    ),
    r(
        "get",
        "/v1/assets",
        Some("assets:read"),
        "none",
        "List images, newest first",
    ),
    r(
        "get",
        "/v1/assets/{id}",
        Some("assets:read"),
        "none",
        "An image's record",
    ),
    r(
        "delete",
        "/v1/assets/{id}",
        Some("assets:write"),
        "none",
        "Delete an image",
    ),
    r(
        "get",
        "/v1/assets/{id}/content",
        Some("assets:read"),
        "none",
        "An image's bytes",
    ),
    r(
        "get",
        "/v1/files/{id}",
        None,
        "none",
        "A signed, expiring image link (from response_format=url)",
    ),
    r(
        "post",
        "/v1/provenance/verify",
        Some("key"),
        "multipart",
        "Check an image's C2PA manifest and invisible watermark (one file named `image`)",
    ),
    r(
        "post",
        "/v1/edit-sessions",
        Some("images:edit"),
        "json",
        "Start an edit session on one of your images ({\"image_id\": …})",
    ),
    r(
        "get",
        "/v1/edit-sessions",
        Some("assets:read"),
        "none",
        "Edit sessions, most recently changed first",
    ),
    r(
        "get",
        "/v1/edit-sessions/{id}",
        Some("assets:read"),
        "none",
        "An edit session: its versions (a tree by parent_id) and head",
    ),
    r(
        "delete",
        "/v1/edit-sessions/{id}",
        Some("images:edit"),
        "none",
        "Delete an edit session and the images its instructions made",
    ),
    r(
        "post",
        "/v1/edit-sessions/{id}/instructions",
        Some("images:edit"),
        "json",
        "Apply a plain-language instruction (or a plan) to the head or from_version; \
         dry_run returns the plan",
    ),
    r(
        "post",
        "/v1/edit-sessions/{id}/undo",
        Some("images:edit"),
        "none",
        "Move the head back to its parent",
    ),
    r(
        "post",
        "/v1/edit-sessions/{id}/redo",
        Some("images:edit"),
        "none",
        "Move the head forward again after an undo",
    ),
    r(
        "post",
        "/v1/edit-sessions/{id}/checkout",
        Some("images:edit"),
        "json",
        "Make any version the head ({\"version\": …}); the next instruction branches from it",
    ),
    r(
        "post",
        "/v1/characters",
        Some("characters"),
        "multipart",
        "Create a character: name, description, strength, seed, consent, 1-8 `reference` \
         images and an optional `lora` (.safetensors)",
    ),
    r(
        "get",
        "/v1/characters",
        Some("characters"),
        "none",
        "Your characters, newest first",
    ),
    r(
        "get",
        "/v1/characters/{id}",
        Some("characters"),
        "none",
        "A character and its reference images",
    ),
    r(
        "delete",
        "/v1/characters/{id}",
        Some("characters"),
        "none",
        "Delete a character, its reference images, its LoRA and every bank computed from them",
    ),
    r(
        "post",
        "/v1/admin/tenants",
        Some("admin"),
        "json",
        "Create a tenant",
    ),
    r("get", "/v1/admin/tenants", Some("admin"), "none", "List tenants"),
    r(
        "get",
        "/v1/admin/tenants/{id}",
        Some("admin"),
        "none",
        "One tenant, by id or name, with its limit overrides",
    ),
    r(
        "put",
        "/v1/admin/tenants/{id}/retention",
        Some("admin"),
        "json",
        "Set a tenant's retention in days (days: 1-3650, or null to keep everything)",
    ),
    r(
        "delete",
        "/v1/admin/tenants/{id}",
        Some("admin"),
        "none",
        "Erase a tenant: its key destroyed first, then its rows, blobs and audit details",
    ),
    r(
        "put",
        "/v1/admin/tenants/{id}/limits",
        Some("admin"),
        "json",
        "Replace a tenant's limit overrides \
         (requests_per_minute, images_per_minute, concurrent_jobs; null = server default)",
    ),
    r(
        "put",
        "/v1/admin/tenants/{id}/moderation",
        Some("admin"),
        "json",
        "Whether the tenant's requests may use moderation: low ({\"allow_low\": bool})",
    ),
    r(
        "post",
        "/v1/admin/tenants/{id}/keys",
        Some("admin"),
        "json",
        "Create an API key (shown once)",
    ),
    r(
        "get",
        "/v1/admin/tenants/{id}/keys",
        Some("admin"),
        "none",
        "List a tenant's keys",
    ),
    r(
        "delete",
        "/v1/admin/keys/{id}",
        Some("admin"),
        "none",
        "Revoke a key",
    ),
    r(
        "post",
        "/v1/admin/keys/{id}/rotate",
        Some("admin"),
        "none",
        "Replace a key with a new one",
    ),
    r("get", "/v1/admin/audit", Some("admin"), "none", "Audit events"),
    r(
        "get",
        "/v1/admin/audit/verify",
        Some("admin"),
        "none",
        "Walk the audit hash chain and its signed checkpoints; the first bad entry if any",
    ),
];

/// The image request fields: (name, JSON type, description).
pub const IMAGE_FIELDS: &[(&str, &str, &str)] = &[
    (
        "prompt",
        "string",
        "What to draw (edits: what to change). Not for variations.",
    ),
    (
        "model",
        "string",
        "A model id from /v1/models; OpenAI names (dall-e-*, gpt-image-*) mean the default",
    ),
    ("n", "integer", "How many images"),
    ("size", "string", "WIDTHxHEIGHT, multiples of 8, or auto"),
    (
        "quality",
        "string",
        "auto | low | medium | high | standard | hd: fewer or more denoising steps",
    ),
    (
        "response_format",
        "string",
        "b64_json (default) or url (a signed link that expires)",
    ),
    (
        "output_format",
        "string",
        "png (default) | jpeg | webp (lossless)",
    ),
    ("output_compression", "integer", "JPEG quality 0-100"),
    ("background", "string", "auto | opaque (transparent is refused)"),
    ("moderation", "string", "auto | low"),
    ("user", "string", "Your end user's id, recorded in the audit log"),
    ("stream", "boolean", "Answer as server-sent events"),
    ("partial_images", "integer", "0-3 partial images while streaming"),
    ("style", "string", "vivid | natural: accepted, no effect"),
    ("input_fidelity", "string", "low | high: accepted, no effect"),
    (
        "seed",
        "integer",
        "NanoImg: seed of the first image (image i uses seed + i)",
    ),
    ("negative_prompt", "string", "NanoImg: what to avoid"),
    ("steps", "integer", "NanoImg: denoising steps (overrides quality)"),
    ("guidance", "number", "NanoImg: classifier-free guidance scale"),
    ("scheduler", "string", "NanoImg: euler | euler_a | ddim | dpm++2m"),
    ("strength", "number", "NanoImg, edits: how much to change, 0-1"),
    (
        "character_id",
        "string",
        "NanoImg: a character (chr_…) to keep consistent",
    ),
    (
        "character_ids",
        "array",
        "NanoImg: up to 4 characters (JSON bodies only)",
    ),
    (
        "character_strength",
        "number",
        "NanoImg: how strongly the characters' references condition the images, 0-1",
    ),
    (
        "dry_run",
        "boolean",
        "NanoImg, edits: answer with the plan the prompt makes, without running it",
    ),
];

/// The document.
pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    let props: serde_json::Map<String, Value> = IMAGE_FIELDS
        .iter()
        .map(|(n, t, d)| ((*n).to_owned(), json!({"type": t, "description": d})))
        .collect();
    let error = json!({"$ref": "#/components/schemas/Error"});
    for route in ROUTES {
        let item = paths.entry(route.path.to_owned()).or_insert_with(|| json!({}));
        let mut op = json!({
            "summary": route.summary,
            "responses": {
                "200": {"description": "success"},
                "400": {"description": "invalid request", "content": {"application/json": {"schema": error}}},
                "401": {"description": "missing, unknown, revoked or expired key"},
                "403": {"description": "the key lacks the scope"},
                "404": {"description": "no such object (or another tenant's)"},
                "429": {"description": "rate limited; see Retry-After"},
                "503": {"description": "queue full or shutting down; see Retry-After"},
            },
        });
        match route.scope {
            None => op["security"] = json!([]),
            Some(s) => op["x-required-scope"] = json!(s),
        }
        if route.path.contains("{id}") {
            op["parameters"] =
                json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}]);
        }
        if route.path.starts_with("/v1/images/") {
            let mut p = props.clone();
            let ct = if route.body == "multipart" {
                p.insert("image".into(), json!({"type": "string", "format": "binary"}));
                p.insert("mask".into(), json!({"type": "string", "format": "binary", "description": "transparent = area to edit"}));
                "multipart/form-data"
            } else {
                "application/json"
            };
            op["requestBody"] = json!({"required": true, "content": {ct: {"schema": {"type": "object", "properties": p, "additionalProperties": false}}}});
        } else if route.body != "none" {
            let ct = if route.body == "multipart" {
                "multipart/form-data"
            } else {
                "application/json"
            };
            op["requestBody"] = json!({"required": true, "content": {ct: {"schema": {"type": "object"}}}});
        }
        item[route.method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "NanoImg API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "nimg_… API key"}},
            "schemas": {"Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                "message": {"type": "string"}, "type": {"type": "string"},
                "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]},
            }}}}},
        },
    })
}
