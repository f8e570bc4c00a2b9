//! The output policy, written once: every image NanoImg hands out — a generation, an edit, a
//! partial image, from the CLI or the server — is marked with the invisible watermark, encoded
//! with its parameters (a `parameters` chunk in the common Automatic1111 layout and a `nanoimg`
//! chunk with JSON, where the format has text chunks) and signed with a C2PA manifest. Signing is
//! last: any re-encode after it would strip the manifest.

use crate::provenance::{Origin, Provenance};
use crate::watermark::Watermarker;
use crate::SafetyError;
use image::RgbImage;
use nanoimg_engine::codec::{self, OutputFormat};
use nanoimg_engine::schedulers::SchedulerName;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// What made an image, as every output carries it.
#[derive(Debug, Clone, Default)]
pub struct OutputRecord {
    /// The model's name (`none (pixel operations)` for an edit that ran no model).
    pub model: String,
    /// The prompt, or an edit's instruction.
    pub prompt: String,
    pub negative_prompt: String,
    /// Sampling settings, for outputs a model drew.
    pub steps: Option<u32>,
    pub guidance: Option<f64>,
    pub scheduler: Option<String>,
    pub seed: Option<u64>,
    /// More fields for the `nanoimg` JSON (mode, plan, instruction, index, strength, dtype, …).
    pub extra: Map<String, Value>,
}

impl OutputRecord {
    /// Adds a field to the JSON metadata.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// The `parameters` text as Automatic1111 writes it: the prompt, the negative prompt, then
    /// one line of settings, so A1111, ComfyUI and image viewers read it back.
    pub fn parameters(&self, (w, h): (u32, u32)) -> String {
        let mut out = self.prompt.clone();
        if !self.negative_prompt.is_empty() {
            out.push_str("\nNegative prompt: ");
            out.push_str(&self.negative_prompt);
        }
        let mut settings = Vec::new();
        if let Some(s) = self.steps {
            settings.push(format!("Steps: {s}"));
        }
        // A1111's sampler names, so A1111 and ComfyUI read the settings back.
        match self.scheduler.as_deref().map(str::parse::<SchedulerName>) {
            Some(Ok(s)) => {
                let (name, schedule) = s.a1111();
                settings.push(format!("Sampler: {name}"));
                settings.extend(schedule.map(|t| format!("Schedule type: {t}")));
            }
            Some(Err(_)) => settings.push(format!(
                "Sampler: {}",
                self.scheduler.as_deref().unwrap_or_default()
            )),
            None => {}
        }
        if let Some(g) = self.guidance {
            settings.push(format!("CFG scale: {g}"));
        }
        if let Some(s) = self.seed {
            settings.push(format!("Seed: {s}"));
        }
        settings.push(format!("Size: {w}x{h}"));
        settings.push(format!("Model: {}", self.model));
        if let Some(r) = self.extra.get("refiner").filter(|r| r.is_object()) {
            settings.push(format!("Refiner: {}", r["model"].as_str().unwrap_or_default()));
            settings.push(format!("Refiner switch at: {}", r["switch_at"]));
        }
        out.push('\n');
        out.push_str(&settings.join(", "));
        out
    }

    /// The `nanoimg` JSON: every field of the record, the size, the software and the marks.
    pub fn metadata(&self, (w, h): (u32, u32), mark: u64, replaced: Option<u64>) -> Value {
        let mut v = json!({
            "model": self.model, "prompt": self.prompt, "negative_prompt": self.negative_prompt,
            "steps": self.steps, "guidance": self.guidance, "scheduler": self.scheduler,
            "seed": self.seed, "size": format!("{w}x{h}"),
            "software": format!("nanoimg {}", env!("CARGO_PKG_VERSION")),
            "watermark": format!("{mark:016x}"),
            "replaced_watermark": replaced.map(|m| format!("{m:016x}")),
        });
        for (k, x) in &self.extra {
            v[k] = x.clone();
        }
        v
    }
}

/// How one output is written.
#[derive(Debug, Clone, Copy)]
pub struct Encoding {
    pub format: OutputFormat,
    /// JPEG quality 0–100.
    pub quality: Option<u8>,
}

impl Default for Encoding {
    fn default() -> Self {
        Self {
            format: OutputFormat::Png,
            quality: None,
        }
    }
}

/// A sealed output: the file, its watermark payload and the metadata it carries.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub bytes: Vec<u8>,
    pub mark: u64,
    pub metadata: Value,
}

/// Marks, encodes and signs outputs. Cheap to clone; shared by every worker.
#[derive(Clone)]
pub struct Sealer {
    pub watermark: Arc<Watermarker>,
    pub provenance: Arc<Provenance>,
}

impl Sealer {
    /// Seals `img` (marked in place with a fresh random payload). `replaced` is the mark taken
    /// off an edit's input, kept in the metadata so the operator can follow the chain.
    pub fn seal(
        &self,
        img: &mut RgbImage,
        record: &OutputRecord,
        encoding: Encoding,
        replaced: Option<u64>,
        origin: Origin<'_>,
    ) -> Result<Sealed, SafetyError> {
        // A random id, not derived from the tenant: the record keeps it, so the operator can
        // trace a found mark to its generation.
        let mark = getrandom::u64().map_err(|e| SafetyError::Provenance(format!("random source: {e}")))?;
        self.watermark.embed(img, mark);
        let size = img.dimensions();
        let metadata = record.metadata(size, mark, replaced);
        let text = [
            ("parameters", record.parameters(size)),
            ("nanoimg", metadata.to_string()),
        ];
        let encoded = codec::encode(img, encoding.format, encoding.quality, &text)
            .map_err(|e| SafetyError::Encode(e.to_string()))?;
        let bytes = self
            .provenance
            .sign(&encoded, encoding.format.media_type(), origin, &record.model)?;
        Ok(Sealed {
            bytes,
            mark,
            metadata,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_follow_the_automatic1111_layout() {
        let r = OutputRecord {
            model: "m".into(),
            prompt: "a cat".into(),
            negative_prompt: "blurry".into(),
            steps: Some(20),
            guidance: Some(7.5),
            scheduler: Some("euler_a".into()),
            seed: Some(42),
            extra: Map::new(),
        };
        assert_eq!(
            r.parameters((64, 32)),
            "a cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, \
             Size: 64x32, Model: m"
        );
        let refined = r
            .clone()
            .with("refiner", json!({"model": "sdxl-refiner", "switch_at": 0.8}));
        assert!(
            refined
                .parameters((64, 32))
                .ends_with("Model: m, Refiner: sdxl-refiner, Refiner switch at: 0.8"),
            "{}",
            refined.parameters((64, 32))
        );
        let pixel_edit = OutputRecord {
            model: "none (pixel operations)".into(),
            prompt: "crop to a square".into(),
            ..OutputRecord::default()
        };
        assert_eq!(
            pixel_edit.parameters((8, 8)),
            "crop to a square\nSize: 8x8, Model: none (pixel operations)"
        );
    }

    #[test]
    fn metadata_holds_the_record_the_marks_and_the_extras() {
        let r = OutputRecord {
            model: "m".into(),
            prompt: "p".into(),
            ..OutputRecord::default()
        }
        .with("index", 2)
        .with("mode", "img2img");
        let v = r.metadata((16, 8), 0xabc, Some(1));
        assert_eq!(v["watermark"], "0000000000000abc");
        assert_eq!(v["replaced_watermark"], "0000000000000001");
        assert_eq!(v["size"], "16x8");
        assert_eq!(v["index"], 2);
        assert_eq!(v["mode"], "img2img");
        assert!(v["software"].as_str().unwrap().starts_with("nanoimg "));
    }
}
