//! Crop, resize, rotate, flip and pad.

use crate::plan::{Anchor, Area, Axis, Rgb};
use crate::EditError;
use fast_image_resize::images::Image as FirImage;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;
use imageproc::geometric_transformations::{rotate_about_center_no_crop, Border, Interpolation};

/// An area as whole pixels (x, y, width, height), rounded to the nearest pixel edges and kept
/// inside the image.
pub fn area_rect(a: &Area, w: u32, h: u32) -> (u32, u32, u32, u32) {
    let px = |f: f32, n: u32| ((f.clamp(0.0, 1.0) * n as f32).round() as u32).min(n);
    let (x0, y0) = (px(a.x, w), px(a.y, h));
    let (x1, y1) = (px(a.x + a.width, w), px(a.y + a.height, h));
    (x0, y0, x1.saturating_sub(x0), y1.saturating_sub(y0))
}

/// The largest `rw`:`rh` box inside a `w`×`h` image.
pub fn aspect_size(w: u32, h: u32, rw: u32, rh: u32) -> (u32, u32) {
    // Compare w/h with rw/rh without floating point.
    if u64::from(w) * u64::from(rh) > u64::from(h) * u64::from(rw) {
        ((u64::from(h) * u64::from(rw) / u64::from(rh)) as u32, h)
    } else {
        (w, (u64::from(w) * u64::from(rh) / u64::from(rw)) as u32)
    }
}

/// The size after scaling by `f` (at least one pixel a side).
pub fn scaled(w: u32, h: u32, f: f32) -> (u32, u32) {
    let s = |n: u32| ((n as f64 * f64::from(f)).round() as u32).max(1);
    (s(w), s(h))
}

/// The canvas a rotation by `degrees` needs: the same for multiples of 180, swapped for odd
/// multiples of 90, else the bounding box of the turned image.
pub fn rotated_size(w: u32, h: u32, degrees: f32) -> (u32, u32) {
    match right_angles(degrees) {
        Some(0) | Some(2) => (w, h),
        Some(_) => (h, w),
        None => {
            let t = degrees.to_radians();
            let (c, s) = (t.cos().abs(), t.sin().abs());
            (
                (h as f32 * s + w as f32 * c).ceil() as u32,
                (h as f32 * c + w as f32 * s).ceil() as u32,
            )
        }
    }
}

/// Quarter turns clockwise, if `degrees` is a whole multiple of 90.
fn right_angles(degrees: f32) -> Option<u32> {
    let q = degrees / 90.0;
    ((q - q.round()).abs() < 1e-6).then(|| (q.round() as i64).rem_euclid(4) as u32)
}

pub fn crop(img: &RgbImage, (x, y, w, h): (u32, u32, u32, u32)) -> RgbImage {
    image::imageops::crop_imm(img, x, y, w, h).to_image()
}

pub fn crop_aspect(img: &RgbImage, rw: u32, rh: u32, anchor: Anchor) -> RgbImage {
    let (w, h) = img.dimensions();
    let (cw, ch) = aspect_size(w, h, rw, rh);
    let (mx, my) = (w - cw, h - ch);
    let (x, y) = match anchor {
        Anchor::Center => (mx / 2, my / 2),
        Anchor::Top => (mx / 2, 0),
        Anchor::Bottom => (mx / 2, my),
        Anchor::Left => (0, my / 2),
        Anchor::Right => (mx, my / 2),
    };
    crop(img, (x, y, cw, ch))
}

/// Lanczos3 resampling (fast_image_resize, SIMD).
pub fn resize(img: &RgbImage, w: u32, h: u32) -> Result<RgbImage, EditError> {
    if img.dimensions() == (w, h) {
        return Ok(img.clone());
    }
    let fail = |e: String| EditError::Internal(format!("resize to {w}×{h}: {e}"));
    let src = FirImage::from_vec_u8(img.width(), img.height(), img.as_raw().clone(), PixelType::U8x3)
        .map_err(|e| fail(e.to_string()))?;
    let mut dst = FirImage::new(w, h, PixelType::U8x3);
    Resizer::new()
        .resize(
            &src,
            &mut dst,
            &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3)),
        )
        .map_err(|e| fail(e.to_string()))?;
    RgbImage::from_raw(w, h, dst.into_vec()).ok_or_else(|| fail("buffer size".into()))
}

/// Clockwise. Right angles are exact pixel moves; other angles use bicubic interpolation on a
/// canvas grown to hold the whole turned image.
pub fn rotate(img: &RgbImage, degrees: f32, fill: Rgb) -> RgbImage {
    match right_angles(degrees) {
        Some(0) => img.clone(),
        Some(1) => image::imageops::rotate90(img),
        Some(2) => image::imageops::rotate180(img),
        Some(_) => image::imageops::rotate270(img),
        None => rotate_about_center_no_crop(
            img,
            degrees.to_radians(),
            Interpolation::Bicubic,
            Border::Constant(image::Rgb(fill.0)),
        ),
    }
}

pub fn flip(img: &RgbImage, axis: Axis) -> RgbImage {
    match axis {
        Axis::Horizontal => image::imageops::flip_horizontal(img),
        Axis::Vertical => image::imageops::flip_vertical(img),
    }
}

/// Grows the canvas by `[left, top, right, bottom]` pixels of `fill`.
pub fn pad(img: &RgbImage, [l, t, r, b]: [u32; 4], fill: Rgb) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = RgbImage::from_pixel(w + l + r, h + t + b, image::Rgb(fill.0));
    image::imageops::replace(&mut out, img, i64::from(l), i64::from(t));
    out
}

/// The canvas and mask for outpainting: `image` with `left`/`top`/`right`/`bottom` pixels added,
/// the new area filled by stretching the nearest edge pixel (a start the model repaints), and a
/// mask that is 255 over the new area and 0 over the original.
pub fn outpaint_canvas(
    image: &RgbImage,
    left: u32,
    top: u32,
    right: u32,
    bottom: u32,
) -> (RgbImage, image::GrayImage) {
    let (w, h) = image.dimensions();
    let (cw, ch) = (w + left + right, h + top + bottom);
    let canvas = RgbImage::from_fn(cw, ch, |x, y| {
        let sx = x.saturating_sub(left).min(w - 1);
        let sy = y.saturating_sub(top).min(h - 1);
        *image.get_pixel(sx, sy)
    });
    let inside = |x: u32, y: u32| x >= left && x < left + w && y >= top && y < top + h;
    let mask = image::GrayImage::from_fn(cw, ch, |x, y| image::Luma([if inside(x, y) { 0 } else { 255 }]));
    (canvas, mask)
}
