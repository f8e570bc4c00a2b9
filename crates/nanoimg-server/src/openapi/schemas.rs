//! What the routes answer: the document's `components/schemas`, written next to the handlers'
//! JSON. The test suite's proxy (`tests/it/contract.rs`) checks every answer the tests get against
//! these, so a field added, renamed or dropped on one side alone fails a test. Objects are closed
//! (`additionalProperties: false`) and list every field they always carry as required.

use nanoimg_store::Scope;
use serde_json::{json, Map, Value};

/// The edit plan's own JSON Schema (the one the LLM planner is given), whose `$defs` become
/// components named `EditPlan.<def>`.
const PLAN: &str = "EditPlan";

/// Every schema, by name.
pub fn all() -> Map<String, Value> {
    let mut s = Map::new();
    let mut put = |name: &str, schema: Value| {
        s.insert(name.to_owned(), schema);
    };
    put("Error", error());
    put("Health", object(&[("status", konst("ok"))]));
    put("Readiness", readiness());
    put(
        "Document",
        described(json!({"type": "object"}), "This OpenAPI document"),
    );
    put("ModelList", list("Model"));
    put("Model", model());
    put("Me", me());
    put("Usage", usage());
    put("Tenant", tenant());
    put("TenantList", list("Tenant"));
    put("Key", object(&key_fields()));
    put("NewKey", new_key());
    put("KeyList", list("Key"));
    put("Erasure", erasure());
    put("Images", images());
    put("ImageData", image_data());
    put("EditDryRun", edit_dry_run());
    put(
        "EditAnswer",
        json!({"oneOf": [refer("Images"), refer("EditDryRun")]}),
    );
    put("Job", job());
    put("JobList", list("Job"));
    put("Asset", asset());
    put("AssetList", asset_list());
    put("Deleted", deleted(&[]));
    put("Verification", verification());
    put("EditSession", edit_session());
    put("EditSessionList", list("EditSession"));
    put("EditVersion", object(&version_fields()));
    put("EditTurn", edit_turn());
    put("InstructionAnswer", instruction_answer());
    put("Character", character());
    put("CharacterList", list("Character"));
    put(
        "CharacterDeleted",
        deleted(&[("banks_dropped", t("integer")), ("models_dropped", t("integer"))]),
    );
    put("AuditList", list("AuditEvent"));
    put("AuditEvent", audit_event());
    put("AuditVerification", audit_verification());
    put(
        "Null",
        described(t("null"), "JSON null (as the A1111 API answers)"),
    );
    put("A1111Images", a1111_images());
    put("A1111Models", array(a1111_model()));
    put("A1111Samplers", array(a1111_sampler()));
    put("A1111Progress", a1111_progress());
    put(
        "A1111Loras",
        array(object(&[
            ("name", t("string")),
            ("alias", t("string")),
            ("path", t("string")),
            ("metadata", t("object")),
        ])),
    );
    put(
        "A1111Options",
        object(&[
            ("sd_model_checkpoint", or_null("string")),
            ("samples_format", konst("png")),
        ]),
    );
    for (name, schema) in edit_plan() {
        put(&name, schema);
    }
    s
}

// The vocabulary.

/// A closed object: every field required except those whose name ends in `?`.
fn object(fields: &[(&str, Value)]) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for (name, schema) in fields {
        let name = name.strip_suffix('?').unwrap_or_else(|| {
            required.push(*name);
            name
        });
        props.insert(name.to_owned(), schema.clone());
    }
    json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
}

fn t(ty: &str) -> Value {
    json!({"type": ty})
}

/// `ty` or null.
fn or_null(ty: &str) -> Value {
    json!({"type": [ty, "null"]})
}

fn konst(v: impl Into<Value>) -> Value {
    json!({"const": v.into()})
}

fn one_of(values: &[&str]) -> Value {
    json!({"type": "string", "enum": values})
}

fn refer(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn refer_or_null(name: &str) -> Value {
    json!({"oneOf": [refer(name), {"type": "null"}]})
}

fn array(items: Value) -> Value {
    json!({"type": "array", "items": items})
}

fn described(mut schema: Value, what: &str) -> Value {
    schema["description"] = what.into();
    schema
}

/// Milliseconds since the Unix epoch.
fn time() -> Value {
    described(t("integer"), "milliseconds since the Unix epoch")
}

fn time_or_null() -> Value {
    described(or_null("integer"), "milliseconds since the Unix epoch")
}

/// `{"object": "list", "data": [item]}`.
fn list(item: &str) -> Value {
    object(&[("object", konst("list")), ("data", array(refer(item)))])
}

/// Any JSON object, described.
fn free(what: &str) -> Value {
    described(t("object"), what)
}

// The shapes.

fn error() -> Value {
    object(&[(
        "error",
        object(&[
            ("message", t("string")),
            ("type", t("string")),
            ("param", or_null("string")),
            ("code", or_null("string")),
            ("categories?", array(t("string"))),
        ]),
    )])
}

fn readiness() -> Value {
    let layer = object(&[("on", t("boolean")), ("detail", t("string"))]);
    object(&[
        ("database", t("boolean")),
        ("queued", t("integer")),
        ("running", t("integer")),
        ("stopping", t("boolean")),
        ("queue_capacity", t("integer")),
        (
            "safety",
            described(
                json!({"type": "object", "additionalProperties": layer}),
                "each safety layer by name: whether it is on, and why not",
            ),
        ),
    ])
}

fn model() -> Value {
    let size = object(&[("width", t("integer")), ("height", t("integer"))]);
    let defaults = object(&[
        ("steps", t("integer")),
        ("guidance", t("number")),
        ("scheduler", t("string")),
        ("size", size.clone()),
    ]);
    object(&[
        ("id", t("string")),
        ("object", konst("model")),
        (
            "created",
            described(
                t("integer"),
                "when the model's files were written, in seconds since the Unix epoch",
            ),
        ),
        ("owned_by", t("string")),
        ("default", t("boolean")),
        (
            "family",
            described(
                one_of(&["sd1", "sd2", "sdxl", "sdxl_refiner", "flux"]),
                "the architecture: the UNet family (SD 1.x, 2.x, SDXL and its refiner) or FLUX.1",
            ),
        ),
        ("turbo", t("boolean")),
        ("inpainting", t("boolean")),
        (
            "embedded_guidance",
            described(
                t("boolean"),
                "the model takes the guidance scale as an embedding (an LCM-distilled UNet, FLUX.1 \
                 dev and Kontext): no negative prompt, and for LCM one pass per step",
            ),
        ),
        (
            "kontext",
            described(
                t("boolean"),
                "a FLUX.1 Kontext model: it edits the image it is given in context (an edit's words \
                 reach it as an instruction) and reads a character's reference images",
            ),
        ),
        ("defaults", defaults),
        (
            "max_size",
            described(
                json!({"oneOf": [size, {"type": "null"}]}),
                "the largest picture the model draws; larger requests are drawn within it and \
                 resampled to the size asked (null: only the server's limits)",
            ),
        ),
        (
            "quantize",
            described(
                one_of(&["none", "int8"]),
                "how the model's UNet weights are held (`quantize` in its nanoimg.json): int8 \
                 runs its linear layers and convolutions on int8 weights",
            ),
        ),
        ("description", or_null("string")),
    ])
}

fn me() -> Value {
    let request = object(&[
        ("max_side", t("integer")),
        ("min_side", t("integer")),
        ("max_pixels", t("integer")),
        ("max_steps", t("integer")),
        ("max_images", t("integer")),
        ("max_guidance", t("number")),
    ]);
    object(&[
        ("tenant", refer("Tenant")),
        ("key", refer("Key")),
        (
            "limits",
            described(
                object(&[
                    ("requests_per_minute", t("integer")),
                    ("images_per_minute", t("integer")),
                    ("concurrent_jobs", t("integer")),
                    ("megapixel_steps_per_minute", t("integer")),
                    ("max_job_megapixel_steps", t("integer")),
                    ("max_stored_bytes", t("integer")),
                    ("max_keys", t("integer")),
                    ("request", request),
                ]),
                "what applies to the tenant: its own limits, else the server's; `request` caps \
                 every request",
            ),
        ),
    ])
}

fn usage() -> Value {
    let budget = object(&[("limit", t("integer")), ("remaining", t("integer"))]);
    object(&[
        ("object", konst("usage")),
        ("requests_per_minute", budget.clone()),
        ("images_per_minute", budget.clone()),
        ("megapixel_steps_per_minute", budget),
        (
            "concurrent_jobs",
            object(&[("limit", t("integer")), ("active", t("integer"))]),
        ),
        (
            "stored",
            object(&[
                ("images", t("integer")),
                ("image_bytes", t("integer")),
                ("jobs", t("integer")),
                ("characters", t("integer")),
                ("edit_sessions", t("integer")),
            ]),
        ),
        (
            "stored_bytes",
            object(&[("limit", t("integer")), ("used", t("integer"))]),
        ),
        ("retention_days", or_null("integer")),
    ])
}

fn tenant() -> Value {
    let limits = described(
        object(&[
            ("requests_per_minute", or_null("integer")),
            ("images_per_minute", or_null("integer")),
            ("concurrent_jobs", or_null("integer")),
            ("megapixel_steps_per_minute", or_null("integer")),
            ("max_job_megapixel_steps", or_null("integer")),
            ("max_stored_bytes", or_null("integer")),
            ("max_keys", or_null("integer")),
        ]),
        "the tenant's overrides of the server's limits; null = the server's default",
    );
    object(&[
        ("id", t("string")),
        ("name", t("string")),
        ("is_admin", t("boolean")),
        ("created_at", time()),
        ("limits", limits),
        ("allow_low_moderation", t("boolean")),
        ("retention_days", or_null("integer")),
    ])
}

fn key_fields() -> Vec<(&'static str, Value)> {
    let scopes: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
    vec![
        ("id", t("string")),
        ("tenant_id", t("string")),
        ("name", t("string")),
        (
            "prefix",
            described(t("string"), "`nimg_` and the key's first characters"),
        ),
        ("scopes", array(one_of(&scopes))),
        ("created_at", time()),
        ("expires_at", time_or_null()),
        ("revoked_at", time_or_null()),
        ("last_used_at", time_or_null()),
        ("rotated_from", or_null("string")),
    ]
}

fn new_key() -> Value {
    let mut fields = key_fields();
    fields.push(("key", described(t("string"), "the secret, shown this once")));
    object(&fields)
}

fn erasure() -> Value {
    object(&[
        ("object", konst("tenant.erasure")),
        ("id", t("string")),
        ("erased", konst(true)),
        (
            "removed",
            object(&[
                ("rows", t("integer")),
                ("blobs", t("integer")),
                ("audit_redacted", t("integer")),
                ("jobs_cancelled", t("integer")),
                ("characters", t("integer")),
            ]),
        ),
    ])
}

fn images() -> Value {
    let usage = object(&[
        ("input_tokens", t("integer")),
        (
            "input_tokens_details",
            object(&[("text_tokens", t("integer")), ("image_tokens", t("integer"))]),
        ),
        ("output_tokens", t("integer")),
        ("total_tokens", t("integer")),
    ]);
    object(&[
        ("created", described(t("integer"), "seconds since the Unix epoch")),
        ("data", array(refer("ImageData"))),
        ("background", t("string")),
        ("output_format", one_of(&["png", "jpeg", "webp"])),
        ("quality", t("string")),
        ("size", described(t("string"), "WIDTHxHEIGHT of the images")),
        ("usage", usage),
        ("job_id", t("string")),
        ("plan", refer_or_null(PLAN)),
    ])
}

fn image_data() -> Value {
    described(
        object(&[
            (
                "b64_json?",
                described(t("string"), "the image (response_format b64_json)"),
            ),
            (
                "url?",
                described(t("string"), "a signed link that expires (response_format url)"),
            ),
            ("revised_prompt", t("null")),
            ("id", described(t("string"), "the stored image (an asset id)")),
            ("seed", t("integer")),
        ]),
        "one image: b64_json or url",
    )
}

fn edit_dry_run() -> Value {
    object(&[
        ("dry_run", konst(true)),
        ("plan", refer(PLAN)),
        ("masked", t("boolean")),
        (
            "megapixel_steps",
            described(t("integer"), "what running it would cost"),
        ),
    ])
}

fn job() -> Value {
    object(&[
        ("id", t("string")),
        ("object", konst("job")),
        ("kind", one_of(&["generation", "edit", "variation"])),
        (
            "status",
            one_of(&["queued", "running", "succeeded", "failed", "cancelled"]),
        ),
        ("params", free("the request as the server read it")),
        ("result", json!({"description": "the images, once it succeeded"})),
        ("error", or_null("string")),
        ("created_at", time()),
        ("started_at", time_or_null()),
        ("finished_at", time_or_null()),
    ])
}

fn asset_fields() -> Vec<(&'static str, Value)> {
    vec![
        ("id", t("string")),
        ("object", konst("asset")),
        ("kind", t("string")),
        ("media_type", t("string")),
        ("bytes", t("integer")),
        ("width", t("integer")),
        ("height", t("integer")),
        ("sha256", t("string")),
        ("job_id", or_null("string")),
        (
            "metadata",
            json!({"description": "generation parameters and the like"}),
        ),
        ("created_at", time()),
    ]
}

fn asset() -> Value {
    object(&asset_fields())
}

fn asset_list() -> Value {
    object(&[
        ("object", konst("list")),
        ("data", array(refer("Asset"))),
        ("has_more", t("boolean")),
    ])
}

/// `{"id", "object", "deleted": true}` and `more`.
fn deleted(more: &[(&'static str, Value)]) -> Value {
    let mut fields = vec![
        ("id", t("string")),
        ("object", t("string")),
        ("deleted", konst(true)),
    ];
    fields.extend(more.iter().cloned());
    object(&fields)
}

fn verification() -> Value {
    let action = object(&[
        ("action", t("string")),
        ("digital_source_type?", t("string")),
        ("software_agent?", t("string")),
    ]);
    let c2pa = object(&[
        ("media_type", t("string")),
        ("present", t("boolean")),
        ("valid", t("boolean")),
        ("trusted", t("boolean")),
        ("tampered", t("boolean")),
        (
            "state",
            json!({"type": ["string", "null"], "enum": ["trusted", "valid", "invalid", null]}),
        ),
        (
            "failures",
            array(object(&[
                ("code", t("string")),
                ("explanation", or_null("string")),
            ])),
        ),
        ("claim_generator", or_null("string")),
        ("title", or_null("string")),
        ("signer", or_null("string")),
        ("issuer", or_null("string")),
        ("signed_at", or_null("string")),
        ("actions", array(action)),
        ("ingredients", array(t("string"))),
    ]);
    let watermark = object(&[
        ("present", t("boolean")),
        (
            "payload",
            described(
                or_null("string"),
                "the generation id the mark carries (16 hex digits)",
            ),
        ),
    ]);
    object(&[
        ("object", konst("provenance.verification")),
        ("c2pa", c2pa),
        ("watermark", watermark),
        ("summary", t("string")),
    ])
}

fn version_fields() -> Vec<(&'static str, Value)> {
    vec![
        ("id", t("string")),
        ("seq", t("integer")),
        ("parent_id", or_null("string")),
        ("image_id", t("string")),
        ("instruction", or_null("string")),
        ("plan", refer_or_null(PLAN)),
        ("job_id", or_null("string")),
        ("created_at", time()),
    ]
}

fn session_fields() -> Vec<(&'static str, Value)> {
    vec![
        ("id", t("string")),
        ("object", konst("edit_session")),
        ("head", described(t("string"), "the current version's id")),
        ("head_image_id", or_null("string")),
        ("can_undo", t("boolean")),
        ("can_redo", t("boolean")),
        ("created_at", time()),
        ("updated_at", time()),
        (
            "versions",
            described(array(refer("EditVersion")), "a tree by parent_id"),
        ),
    ]
}

fn edit_session() -> Value {
    object(&session_fields())
}

fn planner() -> Value {
    object(&[
        ("source", one_of(&["builtin", "llm", "client"])),
        ("fallback_reason?", t("string")),
    ])
}

/// 201: the session after an instruction, with the version it made and who planned it.
fn edit_turn() -> Value {
    let mut fields = session_fields();
    fields.push(("planner", planner()));
    fields.push(("version", refer("EditVersion")));
    object(&fields)
}

/// 200: a dry run's plan, or the session after an instruction that was an undo or a redo.
fn instruction_answer() -> Value {
    let dry = object(&[
        ("dry_run", konst(true)),
        ("from_version", t("string")),
        ("plan", refer(PLAN)),
        ("planner", planner()),
        ("masked", t("boolean")),
        ("megapixel_steps", t("integer")),
    ]);
    let moved = object(&[("dry_run", konst(true)), ("action", one_of(&["undo", "redo"]))]);
    json!({"oneOf": [dry, moved, refer("EditSession")]})
}

fn character() -> Value {
    let reference = object(&[
        ("image_id", t("string")),
        ("position", t("integer")),
        (
            "faces",
            described(or_null("integer"), "faces found, when the face check ran"),
        ),
        ("consent", t("boolean")),
    ]);
    object(&[
        ("id", t("string")),
        ("object", konst("character")),
        ("name", t("string")),
        ("description", t("string")),
        ("strength", t("number")),
        ("seed", t("integer")),
        (
            "lora",
            json!({"oneOf": [object(&[("bytes", t("integer"))]), {"type": "null"}]}),
        ),
        ("references", array(reference)),
        ("created_at", time()),
    ])
}

fn audit_event() -> Value {
    object(&[
        ("seq", t("integer")),
        ("at", time()),
        ("request_id", or_null("string")),
        ("tenant_id", or_null("string")),
        ("key_id", or_null("string")),
        ("action", t("string")),
        ("target", or_null("string")),
        ("outcome", t("string")),
        (
            "detail",
            json!({"description": "reasons, counts, sizes; null once redacted"}),
        ),
    ])
}

fn audit_verification() -> Value {
    let problem = one_of(&[
        "missing",
        "out_of_chain",
        "modified",
        "truncated",
        "bad_checkpoint",
    ]);
    let chain_break = object(&[
        ("seq", t("integer")),
        ("problem", problem),
        ("message", t("string")),
    ]);
    let report = object(&[
        ("events", t("integer")),
        ("last_seq", t("integer")),
        ("head", or_null("string")),
        ("redacted", t("integer")),
        ("checkpoints_verified", t("integer")),
        ("last_checkpoint", or_null("integer")),
        ("first_break", json!({"oneOf": [chain_break, {"type": "null"}]})),
    ]);
    object(&[
        ("ok", t("boolean")),
        ("public_key", t("string")),
        ("report", report),
    ])
}

/// The edit plan's schema as components: its `$defs` hoisted beside it and its references
/// pointed at them.
fn edit_plan() -> Vec<(String, Value)> {
    let mut root: Value =
        serde_json::from_str(nanoimg_edit::plan::SCHEMA).expect("the edit plan schema is JSON");
    let defs = root
        .as_object_mut()
        .and_then(|o| {
            o.remove("$schema");
            o.remove("$id");
            o.remove("$defs")
        })
        .and_then(|d| d.as_object().cloned())
        .unwrap_or_default();
    let mut out = vec![(PLAN.to_owned(), root)];
    out.extend(defs.into_iter().map(|(k, v)| (format!("{PLAN}.{k}"), v)));
    for (_, schema) in &mut out {
        repoint(schema);
    }
    out
}

/// `#/$defs/x` → `#/components/schemas/EditPlan.x`, everywhere in `v`.
fn repoint(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, child) in o.iter_mut() {
                match (
                    k.as_str(),
                    child.as_str().and_then(|r| r.strip_prefix("#/$defs/")),
                ) {
                    ("$ref", Some(def)) => *child = format!("#/components/schemas/{PLAN}.{def}").into(),
                    _ => repoint(child),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(repoint),
        _ => {}
    }
}

// The Automatic1111 API's answers (`/sdapi/v1/*`), as A1111 shapes them.

fn a1111_images() -> Value {
    object(&[
        ("images", array(described(t("string"), "base64 PNG"))),
        (
            "parameters",
            described(t("object"), "the request's fields, echoed"),
        ),
        (
            "info",
            described(
                t("string"),
                "JSON text: prompt, seeds, sampler, steps, size, model, infotexts (A1111's PNG parameters), job_id, images (asset ids)",
            ),
        ),
    ])
}

fn a1111_model() -> Value {
    object(&[
        ("title", t("string")),
        ("model_name", t("string")),
        ("hash", or_null("string")),
        ("sha256", or_null("string")),
        ("filename", or_null("string")),
        ("config", or_null("string")),
    ])
}

fn a1111_sampler() -> Value {
    object(&[
        ("name", t("string")),
        ("aliases", array(t("string"))),
        ("options", t("object")),
    ])
}

fn a1111_progress() -> Value {
    object(&[
        ("progress", t("number")),
        ("eta_relative", t("number")),
        (
            "state",
            object(&[
                ("skipped", t("boolean")),
                ("interrupted", t("boolean")),
                ("job", t("string")),
                ("job_count", t("integer")),
                ("job_timestamp", t("string")),
                ("job_no", t("integer")),
                ("sampling_step", t("integer")),
                ("sampling_steps", t("integer")),
            ]),
        ),
        ("current_image", t("null")),
        ("textinfo", t("null")),
    ])
}
