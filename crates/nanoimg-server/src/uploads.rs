//! Uploaded pictures: decoded with the upload limits off the async threads, checked by the image
//! safety layer, and kept as our own PNG re-encoding, never as sent.

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use image::{DynamicImage, RgbImage};
use nanoimg_engine::codec::{self, OutputFormat};
use nanoimg_store::NewAsset;

/// Decodes an uploaded image with the server's upload limits, off the async threads.
pub(crate) async fn decode(state: &AppState, bytes: &[u8], param: &'static str) -> ApiResult<DynamicImage> {
    let limits = crate::upload_limits(&state.config);
    let data = bytes.to_vec();
    Ok(
        tokio::task::spawn_blocking(move || codec::decode(&data, &limits, param))
            .await
            .map_err(ApiError::internal)??,
    )
}

/// Decodes an uploaded picture (not a mask) and runs the image safety layer on it.
pub(crate) async fn accept(
    state: &AppState,
    auth: &Auth,
    bytes: &[u8],
    param: &'static str,
) -> ApiResult<DynamicImage> {
    let img = decode(state, bytes, param).await?;
    crate::moderation::check_upload(state, auth, &img, param).await?;
    Ok(img)
}

/// Decodes an uploaded mask into the mask it stands for (white = repaint) and runs the image
/// safety layer on that mask, as it will be stored: a mask is kept as an asset the tenant can
/// read, so a picture sent as a mask is judged like any picture.
pub(crate) async fn accept_mask(state: &AppState, auth: &Auth, bytes: &[u8]) -> ApiResult<image::GrayImage> {
    let mask = codec::mask_from(&decode(state, bytes, "mask").await?);
    let judged = DynamicImage::ImageLuma8(mask);
    crate::moderation::check_upload(state, auth, &judged, "mask").await?;
    match judged {
        DynamicImage::ImageLuma8(m) => Ok(m),
        other => Ok(other.to_luma8()),
    }
}

/// Stores a decoded upload, re-encoded as PNG: what we keep is pixels we decoded, never the
/// client's file or its metadata. Returns the asset id.
pub(crate) async fn store(
    state: &AppState,
    auth: &Auth,
    img: &RgbImage,
    param: &'static str,
) -> ApiResult<String> {
    let png = codec::encode(img, OutputFormat::Png, None, &[]).map_err(ApiError::internal)?;
    let asset = state
        .store
        .scoped(auth.tenant_id())
        .put_asset(
            NewAsset {
                kind: "upload",
                media_type: OutputFormat::Png.media_type().into(),
                width: img.width(),
                height: img.height(),
                job_id: None,
                metadata: serde_json::json!({"field": param}),
            },
            &png,
        )
        .await?;
    Ok(asset.id)
}
