//! The image layer: Yahoo's open_nsfw (a ResNet-50 trained to score pornographic images) as
//! ONNX, run by tract (pure Rust, CPU). It sees nudity and sex acts. It does not see age,
//! violence, hate symbols, real people or copyrighted characters: those are the prompt layers'
//! job, and for generated images the prompt was checked before anything ran.
//!
//! Preprocessing follows the reference: resize to 256×256, JPEG round trip at quality 75 (the
//! model was trained on JPEG-decoded images), centre crop 224×224, BGR, minus the channel means
//! [104, 117, 123], no scaling, NHWC. Output `[sfw, nsfw]` probabilities.

use crate::SafetyError;
use image::{imageops::FilterType, DynamicImage, RgbImage};
use std::path::Path;
use std::sync::Arc;
use tract_onnx::prelude::*;

/// The default score at or above which an image is refused. open_nsfw's authors suggest
/// reading < 0.2 as safe and > 0.8 as NSFW.
pub const DEFAULT_THRESHOLD: f32 = 0.8;

const SIDE: usize = 224;
const RESIZE: u32 = 256;
const MEAN_BGR: [f32; 3] = [104.0, 117.0, 123.0];

type Plan = Arc<TypedRunnableModel>;

/// open_nsfw, loaded and optimised for one image at a time.
pub struct NsfwClassifier {
    plan: Plan,
    /// Scores at or above this are refused.
    pub threshold: f32,
}

impl std::fmt::Debug for NsfwClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NsfwClassifier")
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

/// What the image layer decided.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ImageVerdict {
    /// open_nsfw's NSFW probability, 0–1.
    pub score: f32,
    pub threshold: f32,
    pub blocked: bool,
}

fn model_err(e: impl std::fmt::Display) -> SafetyError {
    SafetyError::Model(format!("open_nsfw: {e}"))
}

impl NsfwClassifier {
    /// Loads `open-nsfw.onnx`, fixing the symbolic batch dimension to 1 before optimising
    /// (tract cannot optimise with it left open).
    pub fn load(path: &Path) -> Result<Self, SafetyError> {
        let plan = tract_onnx::onnx()
            .model_for_path(path)
            .and_then(|m| m.with_input_fact(0, f32::fact([1, SIDE, SIDE, 3]).into()))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| SafetyError::Model(format!("{}: {e:#}", path.display())))?;
        Ok(Self {
            plan,
            threshold: DEFAULT_THRESHOLD,
        })
    }

    /// The NSFW probability of an image of any size.
    pub fn score(&self, img: &DynamicImage) -> Result<f32, SafetyError> {
        let input = Tensor::from_shape(&[1, SIDE, SIDE, 3], &preprocess(img)?).map_err(model_err)?;
        let out = self.plan.run(tvec!(input.into())).map_err(model_err)?;
        let probs = out[0].to_plain_array_view::<f32>().map_err(model_err)?;
        let nsfw = probs
            .iter()
            .nth(1)
            .copied()
            .ok_or_else(|| model_err("the output has no NSFW score"))?;
        Ok(nsfw)
    }

    /// Scores an image and compares with the threshold.
    pub fn check(&self, img: &DynamicImage) -> Result<ImageVerdict, SafetyError> {
        let score = self.score(img)?;
        Ok(ImageVerdict {
            score,
            threshold: self.threshold,
            blocked: score >= self.threshold,
        })
    }
}

/// The reference preprocessing: the model's `[1, 224, 224, 3]` input, row-major.
pub fn preprocess(img: &DynamicImage) -> Result<Vec<f32>, SafetyError> {
    let small = img.resize_exact(RESIZE, RESIZE, FilterType::Triangle).to_rgb8();
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 75)
        .encode_image(&small)
        .map_err(model_err)?;
    let decoded: RgbImage = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg)
        .map_err(model_err)?
        .to_rgb8();
    let off = (RESIZE as usize - SIDE) / 2;
    let mut data = Vec::with_capacity(SIDE * SIDE * 3);
    for y in 0..SIDE {
        for x in 0..SIDE {
            let p = decoded.get_pixel((x + off) as u32, (y + off) as u32).0;
            // BGR order.
            for (c, mean) in [p[2], p[1], p[0]].into_iter().zip(MEAN_BGR) {
                data.push(f32::from(c) - mean);
            }
        }
    }
    Ok(data)
}
