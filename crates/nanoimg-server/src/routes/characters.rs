//! `/v1/characters`: a character is created from 1–8 reference images, a description and an
//! optional LoRA, and then named by `character_id` on generations, edits, jobs and edit-session
//! instructions.
//!
//! Every reference is decoded with the upload limits, checked by the image safety layer and
//! re-encoded; the description passes prompt moderation like a prompt. A reference that shows a
//! real person needs the uploader's consent attestation (`consent=true`), recorded in the audit
//! log. The face detector (MTCNN, `nanoimg models fetch safety`) decides which do; without it
//! every reference may, so every reference needs it.

use super::body::{self, Form};
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::uploads;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use nanoimg_engine::codec::{self, OutputFormat};
use nanoimg_store::characters::{MAX_DESCRIPTION_BYTES, MAX_REFERENCES};
use nanoimg_store::{Character, NewCharacter, NewReference, Outcome, StoreError};
use serde::Deserialize;
use serde_json::{json, Value};

/// Default reference strength of a new character.
const DEFAULT_STRENGTH: f64 = 0.8;

pub(crate) fn character_json(c: &Character) -> Value {
    json!({
        "id": c.id,
        "object": "character",
        "name": c.name,
        "description": c.description,
        "strength": c.strength,
        "seed": c.seed,
        "lora": c.lora_bytes.map(|b| json!({"bytes": b})),
        "references": c.references.iter().map(|r| json!({
            "image_id": r.asset_id, "position": r.position, "faces": r.faces, "consent": r.consent,
        })).collect::<Vec<_>>(),
        "created_at": c.created_at,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateFields {
    name: String,
    #[serde(default)]
    description: String,
    strength: Option<f64>,
    seed: Option<u64>,
    /// The uploader attests that every person shown in the references agreed to this use.
    #[serde(default)]
    consent: bool,
}

/// How many faces the detector finds in a reference; `None` without a detector.
async fn count_faces(state: &AppState, img: &image::RgbImage) -> ApiResult<Option<u32>> {
    let Some(detector) = state.safety.faces.clone() else {
        return Ok(None);
    };
    let img = img.clone();
    let faces = tokio::task::spawn_blocking(move || detector.detect(&img))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Some(u32::try_from(faces.len()).unwrap_or(u32::MAX)))
}

/// Whether a reference needs the consent attestation: when a face was found, or when no face
/// detector could look (`None`).
fn needs_consent(faces: Option<u32>) -> bool {
    faces.is_none_or(|n| n > 0)
}

/// `POST /v1/characters` (multipart): `name`, `description`, `strength` (0–1), `seed`,
/// `consent`, 1–8 files named `reference`, and optionally a `.safetensors` file named `lora`.
/// 201 with the character.
pub(crate) async fn create(
    State(state): State<AppState>,
    auth: Auth,
    multipart: Multipart,
) -> ApiResult<Response> {
    let form = Form::read(multipart).await?;
    let fields: CreateFields =
        body::form_fields(&form, &["reference", "lora"], &["strength", "seed", "consent"])?;
    if fields.description.len() > MAX_DESCRIPTION_BYTES {
        return Err(ApiError::invalid(
            "description",
            format!(
                "{} bytes; the limit is {MAX_DESCRIPTION_BYTES}",
                fields.description.len()
            ),
        ));
    }
    let strength = fields.strength.unwrap_or(DEFAULT_STRENGTH);
    if !(0.0..=1.0).contains(&strength) {
        return Err(ApiError::invalid(
            "strength",
            format!("{strength} is outside 0..=1"),
        ));
    }
    let files = form.files_named("reference");
    if files.is_empty() || files.len() > MAX_REFERENCES {
        return Err(ApiError::invalid(
            "reference",
            format!("send 1 to {MAX_REFERENCES} reference images; got {}", files.len()),
        ));
    }
    let loras = form.files_named("lora");
    if loras.len() > 1 {
        return Err(ApiError::invalid("lora", "send at most one LoRA file"));
    }
    if !loras.is_empty() && !fields.consent {
        // No layer can look inside a LoRA: whoever it was trained on, it draws.
        return Err(ApiError::bad_request(
            "consent_required",
            "a LoRA can carry anyone's likeness and no safety layer can see inside it: it needs \
             consent=true, which attests that everyone it depicts agreed to this use",
        )
        .with_param("consent"));
    }
    crate::admission::check_storage(&state, &auth).await?;
    // The texts first: a refused description costs no decoding.
    let texts = vec![fields.name.clone(), fields.description.clone()];
    crate::moderation::check_texts(
        &state,
        &auth,
        (texts, Vec::new()),
        Default::default(),
        "description",
    )
    .await?;
    let mut references = Vec::with_capacity(files.len());
    for bytes in files {
        let img = uploads::accept(&state, &auth, bytes, "reference")
            .await?
            .to_rgb8();
        let faces = count_faces(&state, &img).await?;
        if needs_consent(faces) && !fields.consent {
            let why = match faces {
                Some(n) => format!("reference {} shows {n} face(s)", references.len() + 1),
                None => {
                    "no face detector is installed on this server, so every reference needs it".to_owned()
                }
            };
            return Err(ApiError::bad_request(
                "consent_required",
                format!(
                    "reference images that show a real person need consent=true: it attests that \
                     everyone shown agreed to this use ({why})"
                ),
            )
            .with_param("consent"));
        }
        let png = codec::encode(&img, OutputFormat::Png, None, &[]).map_err(ApiError::internal)?;
        references.push(NewReference {
            png,
            width: img.width(),
            height: img.height(),
            faces,
            consent: fields.consent,
        });
    }
    let lora = match loras.first() {
        None => None,
        Some(bytes) => {
            let data = bytes.to_vec();
            let checked = tokio::task::spawn_blocking(move || {
                nanoimg_engine::lora::Lora::from_safetensors(&data).map(|l| (l.layers().len(), data))
            })
            .await
            .map_err(ApiError::internal)?;
            match checked {
                Ok((_, data)) => Some(data),
                Err(e) => return Err(ApiError::invalid("lora", e.to_string())),
            }
        }
    };
    let new = NewCharacter {
        name: fields.name.clone(),
        description: fields.description,
        strength,
        seed: fields
            .seed
            .unwrap_or_else(|| getrandom::u64().unwrap_or(0) & ((1 << 53) - 1)),
        references,
        lora,
    };
    let c = state
        .store
        .scoped(auth.tenant_id())
        .create_character(new)
        .await
        .map_err(|e| match e {
            StoreError::Invalid(m) => {
                let param = m.split(':').next().unwrap_or("name").trim().to_owned();
                ApiError::invalid(param, m)
            }
            e => e.into(),
        })?;
    state
        .audit
        .record(auth.event(
            "character.create",
            Some(c.id.clone()),
            Outcome::Success,
            json!({
                "references": c.references.len(),
                "faces": c.references.iter().map(|r| r.faces).collect::<Vec<_>>(),
                "consent_attested": fields.consent,
                "lora_bytes": c.lora_bytes,
            }),
        ))
        .await;
    Ok((StatusCode::CREATED, Json(character_json(&c))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    limit: Option<u32>,
}

/// `GET /v1/characters`: newest first.
pub(crate) async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let cs = state
        .store
        .scoped(auth.tenant_id())
        .characters(q.limit.unwrap_or(20))
        .await?;
    Ok(Json(
        json!({"object": "list", "data": cs.iter().map(character_json).collect::<Vec<_>>()}),
    ))
}

/// `GET /v1/characters/{id}`.
pub(crate) async fn get(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = state.store.scoped(auth.tenant_id()).character(&id).await?;
    Ok(Json(character_json(&c)))
}

/// `DELETE /v1/characters/{id}`: the character, its reference images, its LoRA, and every
/// reference bank and LoRA-merged model computed from them.
pub(crate) async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let c = state.store.scoped(auth.tenant_id()).delete_character(&id).await?;
    let dropped = state.catalog.forget_character(&c.id);
    state
        .audit
        .record(auth.event(
            "character.delete",
            Some(c.id.clone()),
            Outcome::Success,
            json!({"references": c.references.len(), "banks_dropped": dropped.banks, "models_dropped": dropped.models}),
        ))
        .await;
    Ok(Json(json!({
        "id": c.id, "object": "character", "deleted": true,
        "banks_dropped": dropped.banks, "models_dropped": dropped.models,
    }))
    .into_response())
}
