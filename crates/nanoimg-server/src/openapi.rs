//! The OpenAPI 3.1 document at `/openapi.json`, built from [`ROUTES`] — the table the router is
//! built from, so the document lists exactly what the server serves — and from
//! [`IMAGE_FIELDS`], which a test checks against the request type.

pub use crate::routes::{Access, Route, ROUTES};
use serde_json::{json, Value};

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
        match route.scope() {
            None => op["security"] = json!([]),
            Some(s) => op["x-required-scope"] = json!(s),
        }
        for name in ["id", "name"] {
            if route.path.contains(&format!("{{{name}}}")) {
                op["parameters"] =
                    json!([{"name": name, "in": "path", "required": true, "schema": {"type": "string"}}]);
            }
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
