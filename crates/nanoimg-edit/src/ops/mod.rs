//! The pixel operations, exact and deterministic: `geometry` (crop, resize, rotate, flip, pad),
//! `tone` (brightness, contrast, colour, curves), `filter` (blur, sharpen, vignette), `text`
//! (captions in the bundled font). Resampling
//! is `fast_image_resize` (Lanczos3) and filtering and arbitrary rotation are `imageproc`; nothing
//! here is a hand-rolled resampler.

mod filter;
mod geometry;
mod text;
mod tone;

use crate::plan::Op;
use crate::EditError;
use image::RgbImage;

pub use geometry::{area_rect, aspect_size, outpaint_canvas, rotated_size, scaled};

/// Runs one pixel operation. Generative operations are the engine's: they are refused here.
pub fn apply(img: &RgbImage, op: &Op) -> Result<RgbImage, EditError> {
    let (w, h) = img.dimensions();
    Ok(match op {
        Op::Crop { area } => geometry::crop(img, area_rect(area, w, h)),
        Op::CropAspect {
            width,
            height,
            anchor,
        } => geometry::crop_aspect(img, *width, *height, *anchor),
        Op::Resize { width, height } => geometry::resize(img, *width, *height)?,
        Op::Scale { factor } => {
            let (nw, nh) = scaled(w, h, *factor);
            geometry::resize(img, nw, nh)?
        }
        Op::Rotate { degrees, fill } => geometry::rotate(img, *degrees, *fill),
        Op::Flip { axis } => geometry::flip(img, *axis),
        Op::Pad {
            left,
            top,
            right,
            bottom,
            fill,
        } => geometry::pad(img, [*left, *top, *right, *bottom], *fill),
        Op::Brightness { amount } => tone::brightness(img, *amount),
        Op::Contrast { amount } => tone::contrast(img, *amount),
        Op::Saturation { amount } => tone::saturation(img, *amount),
        Op::Temperature { amount } => tone::temperature(img, *amount),
        Op::Hue { degrees } => tone::hue(img, *degrees),
        Op::Gamma { gamma } => tone::gamma(img, *gamma),
        Op::Exposure { stops } => tone::exposure(img, *stops),
        Op::Grayscale {} => tone::grayscale(img),
        Op::Sepia {} => tone::sepia(img),
        Op::Invert {} => tone::invert(img),
        Op::Blur { sigma } => filter::blur(img, *sigma),
        Op::Sharpen { amount } => filter::sharpen(img, *amount),
        Op::Vignette { strength } => filter::vignette(img, *strength),
        Op::Caption {
            text,
            place,
            size,
            color,
        } => text::caption(img, text, *place, *size, *color),
        op => {
            return Err(EditError::NeedsEngine(op.name()));
        }
    })
}
