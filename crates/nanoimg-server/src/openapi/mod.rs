//! The OpenAPI 3.1 document at `/openapi.json`, built from [`ROUTES`] — the table the router is
//! built from, so the document lists exactly what the server serves, each route with the scope
//! it needs and what it answers — from [`IMAGE_FIELDS`], which a test checks against the request
//! type, and from the answers' shapes in [`schemas`], which the test suite checks every answer
//! it gets against.

mod schemas;

pub use crate::routes::{Access, Answer, Route, ROUTES};
use serde_json::{json, Map, Value};

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
    (
        "safety_identifier",
        "string",
        "OpenAI's newer name for an end user's id (a hash of it)",
    ),
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
    (
        "scheduler",
        "string",
        "NanoImg: euler | euler_a | ddim | dpm++2m_karras | lcm | tcd",
    ),
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
    (
        "loras",
        "array",
        "NanoImg: up to 8 LoRAs from the server's library, [{\"name\", \"weight\"}] or [\"name:weight\"] \
         (in forms the string \"name:weight,other\"); <lora:name:weight> in the prompt does the same",
    ),
    (
        "refiner",
        "string",
        "NanoImg: a model that draws the last steps, as SDXL's refiner after its base",
    ),
    (
        "refiner_switch_at",
        "number",
        "NanoImg: the fraction of the schedule drawn before the refiner takes over, 0-1 (default 0.8)",
    ),
    (
        "vae",
        "string",
        "NanoImg: full (the model's VAE, default) or tiny (its tiny autoencoder: faster, less detail)",
    ),
];

/// The errors every route may answer, in the `Error` shape; keyed routes add 401 and 403.
const ERRORS: &[(u16, &str)] = &[
    (400, "invalid request"),
    (404, "no such object (or another tenant's)"),
    (429, "rate limited or over a budget; see Retry-After"),
    (503, "queue full or shutting down; see Retry-After"),
];

const KEY_ERRORS: &[(u16, &str)] = &[
    (401, "missing, unknown, revoked or expired key"),
    (403, "the key lacks the scope"),
];

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn json_content(schema: &str) -> Value {
    json!({"application/json": {"schema": schema_ref(schema)}})
}

/// What a route answers: its successes from its [`Answer`], then the errors.
fn responses(route: &Route) -> Value {
    let mut r = Map::new();
    let events = json!({"schema": {"type": "string"}});
    match route.answer {
        Answer::Json(answers) => {
            for (status, schema) in answers {
                let what = if *status < 300 { "success" } else { "see the body" };
                r.insert(
                    status.to_string(),
                    json!({"description": what, "content": json_content(schema)}),
                );
            }
        }
        Answer::JsonOrEvents(schema) => {
            let mut content = json_content(schema);
            content["text/event-stream"] = events;
            r.insert(
                "200".into(),
                json!({
                    "description": "success; server-sent events when the request asks `stream: true`",
                    "content": content,
                }),
            );
        }
        Answer::Events => {
            r.insert(
                "200".into(),
                json!({"description": "server-sent events", "content": {"text/event-stream": events}}),
            );
        }
        Answer::NoContent => {
            r.insert("204".into(), json!({"description": "done; no body"}));
        }
        Answer::Bytes(media) => {
            r.insert(
                "200".into(),
                json!({"description": "success", "content": {media: {"schema": {}}}}),
            );
        }
    }
    let keyed = route.access != Access::Public;
    for (status, what) in ERRORS.iter().chain(KEY_ERRORS.iter().filter(|_| keyed)) {
        r.entry(status.to_string())
            .or_insert_with(|| json!({"description": what, "content": json_content("Error")}));
    }
    r.insert(
        "default".into(),
        json!({"description": "any other error", "content": json_content("Error")}),
    );
    Value::Object(r)
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    let props: Map<String, Value> = IMAGE_FIELDS
        .iter()
        .map(|(n, t, d)| ((*n).to_owned(), json!({"type": t, "description": d})))
        .collect();
    for route in ROUTES {
        let item = paths.entry(route.path.to_owned()).or_insert_with(|| json!({}));
        let mut op = json!({"summary": route.summary, "responses": responses(route)});
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
            "schemas": schemas::all(),
        },
    })
}
