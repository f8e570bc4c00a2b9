//! Blur, sharpen and vignette.

use image::{Rgb, RgbImage};
use imageproc::filter::gaussian_blur_f32;

/// Gaussian blur, as three box blurs in a row (each separable, by running sums): within a level
/// or two of the true Gaussian, and a cost that does not grow with `sigma` — a direct kernel at
/// sigma 50 took 10 s on a 16-megapixel picture, this a fraction of a second.
pub fn blur(img: &RgbImage, sigma: f32) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if sigma <= 0.0 || w == 0 || h == 0 {
        return img.clone();
    }
    if sigma < EXACT_BELOW {
        // A short kernel: exact, and as cheap.
        return gaussian_blur_f32(img, sigma);
    }
    let radii = box_radii(sigma);
    let mut out = img.clone();
    let mut plane = vec![0f32; w * h];
    let mut scratch = vec![0f32; w * h];
    for c in 0..3 {
        for (v, p) in plane.iter_mut().zip(img.pixels()) {
            *v = f32::from(p.0[c]);
        }
        for r in radii {
            box_pass(&plane, &mut scratch, w, h, r, true);
            box_pass(&scratch, &mut plane, w, h, r, false);
        }
        for (p, v) in out.pixels_mut().zip(&plane) {
            p.0[c] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// Below this sigma the true Gaussian kernel is short enough to run directly, and three boxes
/// of a pixel or two would be a coarse stand-in for it.
const EXACT_BELOW: f32 = 3.0;

/// The radii of three box blurs whose sum has the variance of a Gaussian of `sigma`: boxes of
/// two neighbouring odd widths, as many of each as makes the variances add up.
fn box_radii(sigma: f32) -> [usize; 3] {
    let s2 = f64::from(sigma) * f64::from(sigma);
    let ideal = (12.0 * s2 / 3.0 + 1.0).sqrt();
    let mut lower = ideal.floor() as i64;
    if lower % 2 == 0 {
        lower -= 1;
    }
    let lower = lower.max(1);
    let upper = lower + 2;
    let l = lower as f64;
    let small = ((12.0 * s2 - 3.0 * l * l - 12.0 * l - 9.0) / (-4.0 * l - 4.0)).round() as i64;
    std::array::from_fn(|i| {
        let width = if (i as i64) < small { lower } else { upper };
        ((width - 1) / 2) as usize
    })
}

/// One box blur of radius `r` along rows (`horizontal`) or columns, edges extended. Columns are
/// summed a whole row at a time, so both directions read memory in order.
fn box_pass(src: &[f32], dst: &mut [f32], w: usize, h: usize, r: usize, horizontal: bool) {
    let norm = 1.0 / (2 * r + 1) as f32;
    if horizontal {
        for (row, out) in src.chunks_exact(w).zip(dst.chunks_exact_mut(w)) {
            let at = |i: usize| row[i.min(w - 1)];
            // The window around position 0, its left part extended from the edge.
            let mut sum = row[0] * r as f32 + (0..=r).map(at).sum::<f32>();
            for (i, o) in out.iter_mut().enumerate() {
                *o = sum * norm;
                sum += at(i + r + 1) - row[i.saturating_sub(r)];
            }
        }
        return;
    }
    let row = |y: usize| &src[y.min(h - 1) * w..][..w];
    let mut sum: Vec<f32> = row(0).iter().map(|v| v * r as f32).collect();
    for y in 0..=r {
        sum.iter_mut().zip(row(y)).for_each(|(s, v)| *s += v);
    }
    for (y, out) in dst.chunks_exact_mut(w).enumerate() {
        out.iter_mut().zip(&sum).for_each(|(o, s)| *o = s * norm);
        let (add, sub) = (row(y + r + 1), row(y.saturating_sub(r)));
        for ((s, a), b) in sum.iter_mut().zip(add).zip(sub) {
            *s += a - b;
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_diff(a: &RgbImage, b: &RgbImage) -> f64 {
        let sum: u64 = a
            .iter()
            .zip(b.iter())
            .map(|(x, y)| u64::from(x.abs_diff(*y)))
            .sum();
        sum as f64 / a.as_raw().len() as f64
    }

    #[test]
    fn the_box_blur_is_a_gaussian_blur() {
        let img = RgbImage::from_fn(400, 300, |x, y| {
            Rgb([
                ((x * 37) % 256) as u8,
                ((y * 53) % 256) as u8,
                (((x ^ y) * 11) % 256) as u8,
            ])
        });
        for sigma in [EXACT_BELOW, 5.0, 12.0, 30.0] {
            let ours = blur(&img, sigma);
            let exact = gaussian_blur_f32(&img, sigma);
            // Away from the edges (which each extends its own way), within a level or two.
            let m = (3.0 * sigma) as u32;
            let inner =
                |i: &RgbImage| image::imageops::crop_imm(i, m, m, 400 - 2 * m, 300 - 2 * m).to_image();
            let d = mean_diff(&inner(&ours), &inner(&exact));
            assert!(d < 2.0, "sigma {sigma}: {d:.2} levels from the Gaussian");
            // And it blurs: far from the picture itself.
            assert!(mean_diff(&ours, &img) > 10.0, "sigma {sigma}");
        }
        // The variances of the three boxes add up to sigma².
        for sigma in [EXACT_BELOW, 10.0, 50.0] {
            let var: f64 = box_radii(sigma)
                .iter()
                .map(|&r| ((2 * r + 1) as f64).powi(2) - 1.0)
                .sum::<f64>()
                / 12.0;
            let s2 = f64::from(sigma).powi(2);
            assert!(
                (var - s2).abs() / s2 < 0.25,
                "sigma {sigma}: variance {var} for {s2}"
            );
        }
        // A flat picture stays flat, up to its edges.
        let flat = RgbImage::from_pixel(40, 30, Rgb([200, 100, 50]));
        assert_eq!(blur(&flat, 9.0), flat);
    }
}
