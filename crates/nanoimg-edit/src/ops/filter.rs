//! Blur, sharpen and vignette.

use image::{Rgb, RgbImage};
use imageproc::filter::gaussian_blur_f32;

/// Gaussian blur (imageproc, separable).
pub fn blur(img: &RgbImage, sigma: f32) -> RgbImage {
    gaussian_blur_f32(img, sigma)
}

/// Unsharp mask: the picture plus `amount` × (picture − its blur at sigma 1.5).
pub fn sharpen(img: &RgbImage, amount: f32) -> RgbImage {
    let soft = gaussian_blur_f32(img, 1.5);
    let mut out = img.clone();
    for (o, s) in out.iter_mut().zip(soft.iter()) {
        let v = f32::from(*o) + amount * (f32::from(*o) - f32::from(*s));
        *o = v.round().clamp(0.0, 255.0) as u8;
    }
    out
}

/// Darkens towards the corners: `strength` 1 takes the corners to black, smoothly from the
/// middle third outwards.
pub fn vignette(img: &RgbImage, strength: f32) -> RgbImage {
    let (w, h) = img.dimensions();
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
    let rmax = (cx * cx + cy * cy).sqrt().max(1.0);
    let mut out = img.clone();
    for (x, y, p) in out.enumerate_pixels_mut() {
        let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
        let r = (dx * dx + dy * dy).sqrt() / rmax;
        // 0 inside a third of the way out, rising smoothly to 1 at the corners.
        let t = ((r - 1.0 / 3.0) / (2.0 / 3.0)).clamp(0.0, 1.0);
        let k = 1.0 - strength * t * t * (3.0 - 2.0 * t);
        *p = Rgb(p.0.map(|c| (f32::from(c) * k).round() as u8));
    }
    out
}
