//! `GET /v1/me/export`: everything the caller's tenant has, as one zip (data portability).
//!
//! The zip holds `manifest.json`, one JSON file per kind of record (`tenant.json`, `keys.json` —
//! never a secret, none is stored —, `jobs.json` with the prompts, `assets.json`,
//! `edit_sessions.json`, `characters.json`, `audit.json`), every image under `assets/` and every
//! character's LoRA under `characters/`. It is built in a private temporary file, one blob at a
//! time, then sent.

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use nanoimg_store::Outcome;
use std::io::{Seek, Write};
use zip::write::SimpleFileOptions;

fn extension(media_type: &str) -> &'static str {
    match media_type {
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/webp" => "webp",
        _ => "bin",
    }
}

fn zip_err(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("building the export: {e}"))
}

fn put<W: Write + Seek>(
    zip: &mut zip::ZipWriter<W>,
    name: &str,
    bytes: &[u8],
    compress: bool,
) -> ApiResult<()> {
    let method = if compress {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    zip.start_file(name, SimpleFileOptions::default().compression_method(method))
        .map_err(zip_err)?;
    zip.write_all(bytes).map_err(zip_err)
}

fn json_bytes(v: &impl serde::Serialize) -> ApiResult<Vec<u8>> {
    serde_json::to_vec_pretty(v).map_err(zip_err)
}

/// `GET /v1/me/export` (scope `assets:read`).
pub(crate) async fn export(State(state): State<AppState>, auth: Auth) -> ApiResult<Response> {
    let sc = state.store.scoped(auth.tenant_id());
    let records = sc.export_records().await?;
    let file = tempfile::tempfile().map_err(zip_err)?;
    let mut zip = zip::ZipWriter::new(file);
    let manifest = serde_json::json!({
        "format": "nanoimg-export-v1",
        "tenant_id": records.tenant.id,
        "exported_at": nanoimg_store::ids::now_ms(),
        "counts": {
            "keys": records.keys.len(),
            "jobs": records.jobs.len(),
            "assets": records.assets.len(),
            "edit_sessions": records.edit_sessions.len(),
            "characters": records.characters.len(),
            "audit": records.audit.len(),
        },
    });
    put(&mut zip, "manifest.json", &json_bytes(&manifest)?, true)?;
    put(&mut zip, "tenant.json", &json_bytes(&records.tenant)?, true)?;
    put(&mut zip, "keys.json", &json_bytes(&records.keys)?, true)?;
    put(&mut zip, "jobs.json", &json_bytes(&records.jobs)?, true)?;
    put(&mut zip, "assets.json", &json_bytes(&records.assets)?, true)?;
    put(
        &mut zip,
        "edit_sessions.json",
        &json_bytes(&records.edit_sessions)?,
        true,
    )?;
    put(
        &mut zip,
        "characters.json",
        &json_bytes(&records.characters)?,
        true,
    )?;
    put(&mut zip, "audit.json", &json_bytes(&records.audit)?, true)?;
    for a in &records.assets {
        let (_, bytes) = sc.asset_bytes(&a.id).await?;
        put(
            &mut zip,
            &format!("assets/{}.{}", a.id, extension(&a.media_type)),
            &bytes,
            false,
        )?;
    }
    for c in &records.characters {
        if let Some(lora) = sc.character_lora(c).await? {
            put(
                &mut zip,
                &format!("characters/{}.safetensors", c.id),
                &lora,
                false,
            )?;
        }
    }
    let mut file = zip.finish().map_err(zip_err)?;
    file.rewind().map_err(zip_err)?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes).map_err(zip_err)?;
    state
        .audit
        .record(auth.event(
            "tenant.export",
            Some(records.tenant.id.clone()),
            Outcome::Success,
            serde_json::json!({"bytes": bytes.len(), "counts": manifest["counts"]}),
        ))
        .await;
    let disposition = format!(
        "attachment; filename=\"nanoimg-export-{}.zip\"",
        records.tenant.id
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response())
}
