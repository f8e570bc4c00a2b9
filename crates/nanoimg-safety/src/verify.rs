//! What `nanoimg verify` and `POST /v1/provenance/verify` report about an image: its C2PA
//! manifest (present, valid, trusted, tampered, what it claims) and the invisible watermark
//! (present, confidence, decoded payload). The two are independent: a manifest is stripped by any
//! re-encode, the watermark survives one; a regenerated image loses both.

use crate::provenance::{ManifestReport, Provenance};
use crate::watermark::Watermarker;
use crate::SafetyError;
use image::RgbImage;
use serde::Serialize;

/// The watermark part of a report.
#[derive(Debug, Clone, Serialize)]
pub struct WatermarkReport {
    pub present: bool,
    /// 0–1; 0.5 is the sync strength needed before a payload is tried.
    pub confidence: f32,
    /// The generation id the mark carries, as 16 hex digits (the `watermark` field of the
    /// output asset's metadata).
    pub payload: Option<String>,
}

/// Both checks together.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub c2pa: ManifestReport,
    pub watermark: WatermarkReport,
}

impl VerifyReport {
    /// One line for people: what the image carries.
    pub fn summary(&self) -> String {
        let m = &self.c2pa;
        let manifest = if !m.present {
            "no C2PA manifest".to_string()
        } else if m.tampered {
            "a C2PA manifest that no longer matches the image (tampered)".to_string()
        } else {
            format!("a {} C2PA manifest", m.state.unwrap_or("invalid"))
        };
        let mark = match (&self.watermark.payload, self.watermark.present) {
            (Some(p), true) => format!("the NanoImg watermark (id {p})"),
            _ => "no NanoImg watermark".to_string(),
        };
        format!("{manifest}; {mark}")
    }
}

/// Checks `bytes` (the file as received, never re-encoded) and `pixels` (its decoded picture).
pub fn verify(
    provenance: &Provenance,
    watermark: &Watermarker,
    bytes: &[u8],
    pixels: &RgbImage,
) -> Result<VerifyReport, SafetyError> {
    let c2pa = provenance.verify(bytes)?;
    let d = watermark.detect(pixels);
    Ok(VerifyReport {
        c2pa,
        watermark: WatermarkReport {
            present: d.present,
            confidence: d.confidence,
            payload: d.payload.filter(|_| d.present).map(|p| format!("{p:016x}")),
        },
    })
}
