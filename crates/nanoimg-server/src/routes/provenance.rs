//! `POST /v1/provenance/verify`: what an image carries — its C2PA manifest (valid, trusted,
//! tampered, what it claims) and NanoImg's invisible watermark (present, payload). The
//! detector's confidence is not told: a score to climb down is what an attack on the mark
//! needs. Checking costs compute, charged to the tenant ([`VERIFY_STEPS_PER_MEGAPIXEL`]).
//! Nothing is stored; the file is read as sent, since a re-encode would strip its manifest.

use super::body::Form;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::uploads;
use axum::extract::{Multipart, State};
use axum::Json;
use nanoimg_safety::SafetyError;

/// What checking one megapixel costs, in megapixel-steps: the watermark detector's transforms
/// take about a tenth of a second per megapixel here.
pub(crate) const VERIFY_STEPS_PER_MEGAPIXEL: f64 = 4.0;

/// Multipart with one file named `image`; any valid key may ask, within its tenant's compute
/// budget.
pub(crate) async fn verify(
    State(state): State<AppState>,
    auth: Auth,
    multipart: Multipart,
) -> ApiResult<Json<serde_json::Value>> {
    let form = Form::read(multipart).await?;
    if let Some((name, _)) = form.fields.first() {
        return Err(ApiError::invalid(
            name.clone(),
            "unexpected field; send one file named `image`",
        ));
    }
    let file = match form.files.as_slice() {
        [(name, bytes)] if name == "image" => bytes.clone(),
        _ => return Err(ApiError::invalid("image", "send exactly one file, named `image`")),
    };
    // Decoded with the upload limits: a bomb is refused before the watermark detector sees it.
    let pixels = uploads::decode(&state, &file, "image").await?.to_rgb8();
    let megapixels = f64::from(pixels.width()) * f64::from(pixels.height()) / 1e6;
    crate::admission::charge_compute(
        &state,
        &auth,
        (megapixels * VERIFY_STEPS_PER_MEGAPIXEL).ceil().max(1.0) as u32,
    )?;
    let (provenance, watermark) = (state.safety.provenance.clone(), state.safety.watermark.clone());
    let report = tokio::task::spawn_blocking(move || {
        nanoimg_safety::verify::verify(&provenance, &watermark, &file, &pixels)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| match e {
        SafetyError::Provenance(m) => ApiError::bad_request("invalid_image", m).with_param("image"),
        e => ApiError::internal(e),
    })?;
    let mut body = serde_json::to_value(&report).map_err(ApiError::internal)?;
    if let Some(w) = body["watermark"].as_object_mut() {
        w.remove("confidence");
    }
    body["object"] = "provenance.verification".into();
    body["summary"] = report.summary().into();
    Ok(Json(body))
}
