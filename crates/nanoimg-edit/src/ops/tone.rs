//! Tone and colour, pixel by pixel. Curves that are the same for every pixel go through a
//! 256-entry table; the rest work on each pixel's three channels.

use image::{Rgb, RgbImage};

fn clamp8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// Applies the same curve to every channel of every pixel.
fn curve(img: &RgbImage, f: impl Fn(f32) -> f32) -> RgbImage {
    let lut: Vec<u8> = (0..256).map(|v| clamp8(f(v as f32))).collect();
    let mut out = img.clone();
    out.iter_mut().for_each(|c| *c = lut[*c as usize]);
    out
}

/// Applies `f` to each pixel's channels (0–255 floats).
fn per_pixel(img: &RgbImage, f: impl Fn([f32; 3]) -> [f32; 3]) -> RgbImage {
    let mut out = img.clone();
    for p in out.pixels_mut() {
        let v = f(p.0.map(f32::from));
        *p = Rgb(v.map(clamp8));
    }
    out
}

fn luma([r, g, b]: [f32; 3]) -> f32 {
    0.2126 * r + 0.7152 * g + 0.0722 * b
}

/// Shifts every level by `amount` × 255 (so ±1 is white or black).
pub fn brightness(img: &RgbImage, amount: f32) -> RgbImage {
    curve(img, |v| v + amount * 255.0)
}

/// Stretches levels away from (positive) or towards (negative) mid-grey.
pub fn contrast(img: &RgbImage, amount: f32) -> RgbImage {
    // amount −1 → flat grey, 0 → unchanged, 1 → ×3 slope.
    let k = if amount >= 0.0 {
        1.0 + 2.0 * amount
    } else {
        1.0 + amount
    };
    curve(img, |v| (v - 127.5) * k + 127.5)
}

/// Moves each channel away from (positive) or towards (negative, −1 = grey) the pixel's luma.
pub fn saturation(img: &RgbImage, amount: f32) -> RgbImage {
    let k = 1.0 + amount;
    per_pixel(img, |p| {
        let y = luma(p);
        p.map(|c| y + (c - y) * k)
    })
}

/// Warmer: red up and blue down; cooler: the reverse. ±1 is a strong cast (±20 %).
pub fn temperature(img: &RgbImage, amount: f32) -> RgbImage {
    let (r, b) = (1.0 + 0.2 * amount, 1.0 - 0.2 * amount);
    per_pixel(img, |[pr, pg, pb]| [pr * r, pg, pb * b])
}

/// Rotates hue by `degrees` about the grey axis, keeping luma (the standard YIQ-style matrix).
pub fn hue(img: &RgbImage, degrees: f32) -> RgbImage {
    let (s, c) = degrees.to_radians().sin_cos();
    let m = [
        [
            0.213 + c * 0.787 - s * 0.213,
            0.715 - c * 0.715 - s * 0.715,
            0.072 - c * 0.072 + s * 0.928,
        ],
        [
            0.213 - c * 0.213 + s * 0.143,
            0.715 + c * 0.285 + s * 0.140,
            0.072 - c * 0.072 - s * 0.283,
        ],
        [
            0.213 - c * 0.213 - s * 0.787,
            0.715 - c * 0.715 + s * 0.715,
            0.072 + c * 0.928 + s * 0.072,
        ],
    ];
    per_pixel(img, |p| {
        m.map(|row| row[0] * p[0] + row[1] * p[1] + row[2] * p[2])
    })
}

/// `out = 255 × (in/255)^(1/gamma)`: above 1 brightens the mid-tones.
pub fn gamma(img: &RgbImage, gamma: f32) -> RgbImage {
    curve(img, |v| 255.0 * (v / 255.0).powf(1.0 / gamma))
}

fn to_linear(v: f32) -> f32 {
    let c = v / 255.0;
    if c <= 0.04045 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }
}

fn to_srgb(l: f32) -> f32 {
    let c = if l <= 0.003_130_8 {
        l * 12.92
    } else {
        1.055 * l.powf(1.0 / 2.4) - 0.055
    };
    c * 255.0
}

/// Multiplies linear light by 2^stops, as a camera's exposure would.
pub fn exposure(img: &RgbImage, stops: f32) -> RgbImage {
    let k = 2f32.powf(stops);
    curve(img, |v| to_srgb(to_linear(v) * k))
}

pub fn grayscale(img: &RgbImage) -> RgbImage {
    per_pixel(img, |p| [luma(p); 3])
}

/// The classic sepia matrix.
pub fn sepia(img: &RgbImage) -> RgbImage {
    per_pixel(img, |[r, g, b]| {
        [
            0.393 * r + 0.769 * g + 0.189 * b,
            0.349 * r + 0.686 * g + 0.168 * b,
            0.272 * r + 0.534 * g + 0.131 * b,
        ]
    })
}

pub fn invert(img: &RgbImage) -> RgbImage {
    curve(img, |v| 255.0 - v)
}
