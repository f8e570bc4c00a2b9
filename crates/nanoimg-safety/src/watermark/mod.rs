//! The invisible watermark: every output carries a 64-bit payload (the generation's id), and a
//! detector finds it again after JPEG compression, resizing, cropping and brightness changes.
//!
//! **Design.** A 64×64 tile is defined in the 2-D Fourier domain: the coefficients in a ring of
//! mid frequencies (4 to 11 cycles per tile: wavelengths of 6–16 pixels, which survive JPEG's
//! quantisation and a halving of the size) are split, in a fixed pseudo-random order, between a
//! **sync pattern** (known unit coefficients with random phases) and the **data** (the
//! convolutionally coded payload + CRC-24, two coded bits per coefficient as the real and
//! imaginary parts). The tile, back in pixels, is added to the luminance of the whole image,
//! repeated, with its amplitude following the local texture (less in flat areas, where it
//! would show).
//!
//! **Detection.** The image's luminance is high-passed. The repetition makes peaks in its
//! autocorrelation at the tile period, which gives the scale (the period is 64 pixels unless the
//! image was resized). For each candidate period the image is folded onto one tile (averaging
//! every repetition), and the folded tile's spectrum is correlated with the sync pattern over all
//! cyclic shifts at once (an inverse FFT): the peak gives the offset (so a crop does not matter)
//! and its height above the rest — a z-score — says whether a watermark is there at all. The data
//! coefficients, with the offset's phase removed, are the soft bits; Viterbi decodes them and the
//! CRC must match. Only then is the mark reported present.
//!
//! What defeats it: regenerating the image (img2img, or any model that redraws it), heavy
//! blurring or downscaling below about a third, rotation, and deliberate averaging attacks by
//! someone who has many marked images. It is a signal for honest pipelines, not a proof.

pub mod code;

use image::RgbImage;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rustfft::num_complex::Complex;
use rustfft::FftPlanner;
use std::f32::consts::PI;

/// The tile's side in pixels, at the size the image was marked.
pub const TILE: usize = 64;
const R_LO: f32 = 4.0;
const R_HI: f32 = 11.0;
/// The fixed seed of the pattern: the mark is the same for every tenant and every server, so
/// anyone's detector finds it.
const SEED: [u8; 32] = *b"nanoimg-watermark-v1-pattern-key";
/// Resolution of the offset search: correlation on a grid of this many points per tile side.
const GRID: usize = 128;
/// Sync z-score a candidate needs before its data is decoded.
const Z_DECODE: f32 = 5.0;

type C = Complex<f32>;

/// Embedding strength: the RMS change to each channel, in 8-bit levels, before texture masking.
pub const DEFAULT_STRENGTH: f32 = 2.0;

/// What the detector found.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Detection {
    /// A payload decoded with a matching CRC at a strong enough sync peak.
    pub present: bool,
    /// 0–1: how strongly the sync pattern was seen (0.5 is the level needed to try decoding).
    pub confidence: f32,
    /// The sync peak's z-score (noise stays below ~5).
    pub score: f32,
    /// The decoded payload, when present.
    pub payload: Option<u64>,
    /// The tile period found, in pixels (64 at the marked size).
    pub period: f32,
}

/// One coefficient of the tile's spectrum: its frequency (cycles per tile) and reference phase.
#[derive(Debug, Clone, Copy)]
struct Coef {
    u: i32,
    v: i32,
    phase: C,
}

/// The fixed layout of sync and data coefficients.
#[derive(Debug, Clone)]
pub struct Watermarker {
    sync: Vec<Coef>,
    data: Vec<Coef>,
    /// Embedding strength (see [`DEFAULT_STRENGTH`]).
    pub strength: f32,
}

impl Default for Watermarker {
    fn default() -> Self {
        Self::new()
    }
}

fn wrap(i: i32, n: usize) -> usize {
    i.rem_euclid(n as i32) as usize
}

/// In-place 2-D FFT of a row-major `w`×`h` buffer (unnormalised either way).
pub fn fft2(planner: &mut FftPlanner<f32>, buf: &mut [C], w: usize, h: usize, inverse: bool) {
    let (row, col) = if inverse {
        (planner.plan_fft_inverse(w), planner.plan_fft_inverse(h))
    } else {
        (planner.plan_fft_forward(w), planner.plan_fft_forward(h))
    };
    row.process(buf);
    let mut column = vec![C::default(); h];
    for x in 0..w {
        for y in 0..h {
            column[y] = buf[y * w + x];
        }
        col.process(&mut column);
        for y in 0..h {
            buf[y * w + x] = column[y];
        }
    }
}

impl Watermarker {
    pub fn new() -> Self {
        let mut ring: Vec<(i32, i32)> = Vec::new();
        let half = TILE as i32 / 2;
        for v in 0..half {
            for u in -half + 1..half {
                // One of each conjugate pair: v > 0, or v == 0 with u > 0.
                if v == 0 && u <= 0 {
                    continue;
                }
                let r = ((u * u + v * v) as f32).sqrt();
                if (R_LO..=R_HI).contains(&r) {
                    ring.push((u, v));
                }
            }
        }
        let mut rng = rand_chacha::ChaCha8Rng::from_seed(SEED);
        ring.shuffle(&mut rng);
        let mut coef = |(u, v): (i32, i32)| Coef {
            u,
            v,
            phase: C::from_polar(1.0, rng.random::<f32>() * 2.0 * PI),
        };
        let n_data = code::CODED_BITS / 2;
        assert!(ring.len() > n_data + 32, "the ring is too small for the payload");
        let data: Vec<Coef> = ring[..n_data].iter().map(|&c| coef(c)).collect();
        let sync: Vec<Coef> = ring[n_data..].iter().map(|&c| coef(c)).collect();
        Self {
            sync,
            data,
            strength: DEFAULT_STRENGTH,
        }
    }

    /// The tile for a payload, in pixels, with unit RMS.
    fn tile(&self, payload: u64) -> Vec<f32> {
        self.tile_at(payload, TILE)
    }

    /// The tile for a payload rendered `side` pixels a side (the same pattern in cycles per
    /// tile), with unit RMS.
    fn tile_at(&self, payload: u64, side: usize) -> Vec<f32> {
        let bits = code::encode(payload);
        let mut spec = vec![C::default(); side * side];
        let mut put = |c: &Coef, x: C| {
            spec[wrap(c.v, side) * side + wrap(c.u, side)] = x;
            spec[wrap(-c.v, side) * side + wrap(-c.u, side)] = x.conj();
        };
        for c in &self.sync {
            put(c, c.phase);
        }
        let s = |b: u8| if b == 1 { 1.0 } else { -1.0 };
        for (i, c) in self.data.iter().enumerate() {
            let sym = C::new(s(bits[2 * i]), s(bits[2 * i + 1])) / 2f32.sqrt();
            put(c, c.phase * sym);
        }
        let mut planner = FftPlanner::new();
        fft2(&mut planner, &mut spec, side, side, true);
        let mut t: Vec<f32> = spec.iter().map(|c| c.re).collect();
        let rms = (t.iter().map(|x| x * x).sum::<f32>() / t.len() as f32).sqrt();
        t.iter_mut().for_each(|x| *x /= rms);
        t
    }

    /// Adds the mark for `payload` to `img`, in place.
    pub fn embed(&self, img: &mut RgbImage, payload: u64) {
        self.embed_at(img, payload, TILE);
    }

    /// Adds the mark with its tile `side` pixels a side instead of [`TILE`] (at least 24, for the
    /// ring's highest frequency): the same pattern, as if the picture had been resized. The
    /// detector tries `TILE / 2` as a period, so a mark at 32 is found like one at 64; this is
    /// for measuring (`examples/wm_probe.rs`, `P=32`), not what outputs get.
    pub fn embed_at(&self, img: &mut RgbImage, payload: u64, side: usize) {
        let tile = self.tile_at(payload, side);
        let (w, h) = (img.width() as usize, img.height() as usize);
        let luma = luminance(img);
        let mask = texture_mask(&luma, w, h);
        for (i, px) in img.pixels_mut().enumerate() {
            let (x, y) = (i % w, i / w);
            let d = self.strength * mask[i] * tile[(y % side) * side + x % side];
            for c in px.0.iter_mut() {
                *c = (f32::from(*c) + d).round().clamp(0.0, 255.0) as u8;
            }
        }
    }

    /// Takes a mark out of a picture that still has it at its marked scale (an edit's input,
    /// perhaps cropped): the pattern is made again for the decoded payload at the found offset
    /// and subtracted, scaled by the picture's texture mask. Returns the payload removed. An edit
    /// calls this on its input, so its output carries one mark, not a new one over the old.
    pub fn unmark(&self, img: &mut RgbImage) -> Option<u64> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        if w < 24 || h < 24 {
            return None;
        }
        // Only at the marked scale: the period is exactly one tile.
        let hp = high_pass(&luminance(img), w, h);
        let mut planner = FftPlanner::new();
        let p = TILE as f32;
        let (z, shift) = self.sync_peak(&mut planner, &hp, w, h, p);
        if z < Z_DECODE {
            return None;
        }
        let payload = self.decode_at(&mut planner, &hp, w, h, p, shift)?;
        let t = TILE as isize;
        let (sx, sy) = ((shift.0 * p).round() as isize, (shift.1 * p).round() as isize);
        let tile = self.tile(payload);
        let mask = texture_mask(&luminance(img), w, h);
        for (i, px) in img.pixels_mut().enumerate() {
            let (x, y) = ((i % w) as isize, (i / w) as isize);
            let at = (y - sy).rem_euclid(t) * t + (x - sx).rem_euclid(t);
            let d = self.strength * mask[i] * tile[at as usize];
            for c in px.0.iter_mut() {
                *c = (f32::from(*c) - d).round().clamp(0.0, 255.0) as u8;
            }
        }
        Some(payload)
    }

    /// Looks for the mark.
    pub fn detect(&self, img: &RgbImage) -> Detection {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let none = Detection {
            present: false,
            confidence: 0.0,
            score: 0.0,
            payload: None,
            period: 0.0,
        };
        if w < 24 || h < 24 {
            return none;
        }
        let hp = high_pass(&luminance(img), w, h);
        let mut planner = FftPlanner::new();
        let mut periods = candidate_periods(&mut planner, &hp, w, h);
        periods.retain(|p| *p >= 2.0 * R_HI + 2.0 && *p <= w.min(h) as f32);
        let mut best = none;
        let mut tried: Vec<(f32, f32, (f32, f32))> = Vec::new();
        for p in periods {
            let (z, shift) = self.sync_peak(&mut planner, &hp, w, h, p);
            tried.push((z, p, shift));
        }
        tried.sort_by(|a, b| b.0.total_cmp(&a.0));
        // Refine the strongest few periods a little (a resize rarely gives a whole number).
        for &(z0, p0, s0) in tried.clone().iter().take(3) {
            let (mut z, mut p, mut shift) = (z0, p0, s0);
            for step in [0.004f32, 0.001] {
                for k in [-2.0f32, -1.0, 1.0, 2.0] {
                    let q = p * (1.0 + k * step);
                    let (zq, sq) = self.sync_peak(&mut planner, &hp, w, h, q);
                    if zq > z {
                        (z, p, shift) = (zq, q, sq);
                    }
                }
            }
            tried.push((z, p, shift));
        }
        tried.sort_by(|a, b| b.0.total_cmp(&a.0));
        for &(z, p, shift) in tried.iter().take(4) {
            if z > best.score {
                best.score = z;
                best.period = p;
            }
            if z < Z_DECODE {
                continue;
            }
            if let Some(payload) = self.decode_at(&mut planner, &hp, w, h, p, shift) {
                best = Detection {
                    present: true,
                    confidence: 0.0,
                    score: z,
                    payload: Some(payload),
                    period: p,
                };
                break;
            }
        }
        best.confidence = 1.0 - (-best.score.max(0.0) * std::f32::consts::LN_2 / Z_DECODE).exp();
        best
    }

    /// The folded tile's spectrum at the ring's frequencies, for period `p`: (u, v) → value.
    fn folded_ring(
        &self,
        planner: &mut FftPlanner<f32>,
        hp: &[f32],
        w: usize,
        h: usize,
        p: f32,
    ) -> impl Fn(&Coef) -> C {
        let m = p.round() as usize;
        let mut sum = vec![0f32; m * m];
        let mut count = vec![0u32; m * m];
        let scale = m as f32 / p;
        let bin = |i: usize| -> usize { (((i as f32 % p) * scale) as usize).min(m - 1) };
        let xs: Vec<usize> = (0..w).map(bin).collect();
        for y in 0..h {
            let by = bin(y) * m;
            let row = &hp[y * w..(y + 1) * w];
            for (x, &v) in row.iter().enumerate() {
                sum[by + xs[x]] += v;
                count[by + xs[x]] += 1;
            }
        }
        let mut buf: Vec<C> = sum
            .iter()
            .zip(&count)
            .map(|(s, &n)| C::new(if n > 0 { s / n as f32 } else { 0.0 }, 0.0))
            .collect();
        fft2(planner, &mut buf, m, m, false);
        move |c: &Coef| buf[wrap(c.v, m) * m + wrap(c.u, m)]
    }

    /// The sync correlation's z-score and where its peak is (the pattern's offset, in tile
    /// fractions), for period `p`.
    fn sync_peak(
        &self,
        planner: &mut FftPlanner<f32>,
        hp: &[f32],
        w: usize,
        h: usize,
        p: f32,
    ) -> (f32, (f32, f32)) {
        let at = self.folded_ring(planner, hp, w, h, p);
        let mut grid = vec![C::default(); GRID * GRID];
        for c in &self.sync {
            let z = at(c) * c.phase.conj();
            let z = z / z.norm().max(1e-12); // phase only: each coefficient votes equally
            grid[wrap(c.v, GRID) * GRID + wrap(c.u, GRID)] = z;
            grid[wrap(-c.v, GRID) * GRID + wrap(-c.u, GRID)] = z.conj();
        }
        fft2(planner, &mut grid, GRID, GRID, true);
        let vals: Vec<f32> = grid.iter().map(|c| c.re).collect();
        let n = vals.len() as f32;
        let mean = vals.iter().sum::<f32>() / n;
        let sd = (vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n).sqrt();
        let (i, peak) = vals
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, v)| (i, *v))
            .unwrap_or((0, 0.0));
        let shift = ((i % GRID) as f32 / GRID as f32, (i / GRID) as f32 / GRID as f32);
        ((peak - mean) / sd.max(1e-12), shift)
    }

    fn decode_at(
        &self,
        planner: &mut FftPlanner<f32>,
        hp: &[f32],
        w: usize,
        h: usize,
        p: f32,
        (dx, dy): (f32, f32),
    ) -> Option<u64> {
        let at = self.folded_ring(planner, hp, w, h, p);
        let mut soft = Vec::with_capacity(code::CODED_BITS);
        for c in &self.data {
            let undo = C::from_polar(1.0, 2.0 * PI * (c.u as f32 * dx + c.v as f32 * dy));
            let x = at(c) * undo * c.phase.conj();
            soft.push(x.re);
            soft.push(x.im);
        }
        code::decode(&soft)
    }
}

/// The peak signal-to-noise ratio of `b` against `a` (same size), in dB: how much a mark
/// changed a picture.
pub fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    let mse = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum::<f64>()
        / a.as_raw().len() as f64;
    10.0 * (255.0f64 * 255.0 / mse.max(1e-12)).log10()
}

fn luminance(img: &RgbImage) -> Vec<f32> {
    img.pixels()
        .map(|p| 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]))
        .collect()
}

/// Box blur with radius `r` (separable running sums, edges clamped).
fn box_blur(src: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    let pass = |src: &[f32], len: usize, stride: usize, lines: usize, step: usize| -> Vec<f32> {
        let mut out = vec![0f32; src.len()];
        for l in 0..lines {
            let at = |i: isize| src[l * step + (i.clamp(0, len as isize - 1) as usize) * stride];
            let mut acc: f32 = (-(r as isize)..=r as isize).map(at).sum();
            for i in 0..len {
                out[l * step + i * stride] = acc / (2 * r + 1) as f32;
                acc += at(i as isize + r as isize + 1) - at(i as isize - r as isize);
            }
        }
        out
    };
    let rows = pass(src, w, 1, h, w);
    pass(&rows, h, w, w, 1)
}

/// Luminance minus its local mean: the content's broad shapes go, the mark's band stays.
fn high_pass(luma: &[f32], w: usize, h: usize) -> Vec<f32> {
    let blur = box_blur(luma, w, h, 4);
    luma.iter().zip(&blur).map(|(a, b)| a - b).collect()
}

/// How much the mark may show at each pixel: 0.4 in flat areas up to 1.6 in busy ones, from the
/// local standard deviation of the luminance.
fn texture_mask(luma: &[f32], w: usize, h: usize) -> Vec<f32> {
    let mean = box_blur(luma, w, h, 3);
    let sq: Vec<f32> = luma.iter().map(|v| v * v).collect();
    let mean_sq = box_blur(&sq, w, h, 3);
    mean.iter()
        .zip(&mean_sq)
        .map(|(m, m2)| {
            let sd = (m2 - m * m).max(0.0).sqrt();
            (0.4 + sd / 12.0).min(1.6)
        })
        .collect()
}

/// Tile periods worth trying: 64 (unchanged size), and the strongest peaks of the high-passed
/// image's autocorrelation along the axes (with their halves and thirds, in case the peak found
/// is a multiple of the period).
fn candidate_periods(planner: &mut FftPlanner<f32>, hp: &[f32], w: usize, h: usize) -> Vec<f32> {
    let mut out = vec![TILE as f32, TILE as f32 / 2.0];
    // The autocorrelation of a centre crop at most 512 a side.
    let (cw, ch) = (w.min(512), h.min(512));
    let (x0, y0) = ((w - cw) / 2, (h - ch) / 2);
    let mut buf: Vec<C> = (0..cw * ch)
        .map(|i| C::new(hp[(y0 + i / cw) * w + x0 + i % cw], 0.0))
        .collect();
    fft2(planner, &mut buf, cw, ch, false);
    buf.iter_mut().for_each(|c| *c = C::new(c.norm_sqr(), 0.0));
    fft2(planner, &mut buf, cw, ch, true);
    let ac = |x: usize, y: usize| buf[(y % ch) * cw + x % cw].re;
    let max_lag = cw.min(ch) / 2;
    if max_lag < 16 {
        return out;
    }
    let profile: Vec<f32> = (0..max_lag).map(|l| ac(l, 0) + ac(0, l)).collect();
    let mut peaks: Vec<(f32, f32)> = Vec::new();
    for l in 12..max_lag - 1 {
        let (a, b, c) = (profile[l - 1], profile[l], profile[l + 1]);
        if b > a && b >= c {
            // Parabolic refinement of the peak's position.
            let d = a - 2.0 * b + c;
            let off = if d.abs() > 1e-12 { 0.5 * (a - c) / d } else { 0.0 };
            peaks.push((b, l as f32 + off.clamp(-0.5, 0.5)));
        }
    }
    peaks.sort_by(|a, b| b.0.total_cmp(&a.0));
    for &(_, l) in peaks.iter().take(3) {
        out.extend([l, l / 2.0, l / 3.0]);
    }
    out.dedup_by(|a, b| (*a - *b).abs() < 0.25);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn picture(w: u32, h: u32) -> RgbImage {
        // Smooth shapes plus some texture, deterministic.
        RgbImage::from_fn(w, h, |x, y| {
            let (fx, fy) = (x as f32, y as f32);
            let v =
                120.0 + 60.0 * (fx / 37.0).sin() * (fy / 23.0).cos() + 20.0 * ((fx * 0.9 + fy * 1.3).sin());
            let t = ((x * 7919 + y * 104729) % 97) as f32 / 97.0 * 16.0;
            image::Rgb([(v + t) as u8, (v * 0.8 + t) as u8, (200.0 - v * 0.5) as u8])
        })
    }

    #[test]
    fn the_layout_fits_the_payload() {
        let w = Watermarker::new();
        assert_eq!(w.data.len() * 2, code::CODED_BITS);
        assert!(w.sync.len() >= 40, "{}", w.sync.len());
    }

    #[test]
    fn marked_is_found_with_its_payload_and_unmarked_is_not() {
        let wm = Watermarker::new();
        let mut img = picture(256, 256);
        let clean = img.clone();
        wm.embed(&mut img, 0x00C0_FFEE_1234_5678);
        let d = wm.detect(&img);
        assert!(d.present, "{d:?}");
        assert_eq!(d.payload, Some(0x00C0_FFEE_1234_5678));
        let d = wm.detect(&clean);
        assert!(!d.present, "{d:?}");
    }

    #[test]
    fn unmark_takes_the_mark_out_so_a_new_one_reads_cleanly() {
        let wm = Watermarker::new();
        let (mut new_read, mut gone) = (0, 0);
        for s in 0..8u64 {
            let clean = picture(512 + 32 * s as u32, 512);
            let mut img = clean.clone();
            wm.embed(&mut img, 1000 + s);
            // Also from a crop at an odd offset, as an edit of a cut-out would see it.
            let mut img = if s % 2 == 1 {
                image::imageops::crop_imm(&img, 13 + s as u32, 7, 480, 448).to_image()
            } else {
                img
            };
            assert_eq!(wm.unmark(&mut img), Some(1000 + s));
            let after = wm.detect(&img);
            if !after.present && after.score < Z_DECODE {
                gone += 1;
            }
            if s % 2 == 0 {
                let diff: f64 = img
                    .as_raw()
                    .iter()
                    .zip(clean.as_raw())
                    .map(|(a, b)| f64::from(a.abs_diff(*b)))
                    .sum::<f64>()
                    / img.as_raw().len() as f64;
                assert!(diff < 0.6, "unmarked differs from the original by {diff}");
            }
            wm.embed(&mut img, 2000 + s);
            if wm.detect(&img).payload == Some(2000 + s) {
                new_read += 1;
            }
        }
        assert_eq!(gone, 8, "the old mark stayed findable");
        assert_eq!(new_read, 8);
        // Nothing is taken from an unmarked picture.
        let mut clean = picture(256, 256);
        let before = clean.clone();
        assert_eq!(wm.unmark(&mut clean), None);
        assert_eq!(clean, before);
    }

    #[test]
    fn small_pictures_carry_it_too() {
        // One or two tiles: enough without attacks (the bundled model makes 64×64).
        let wm = Watermarker::new();
        for side in [64u32, 96, 128] {
            for s in 0..5u32 {
                let mut img =
                    image::imageops::crop_imm(&picture(side + s * 5, side), s * 5, 0, side, side).to_image();
                wm.embed(&mut img, 42 + u64::from(s));
                let d = wm.detect(&img);
                assert_eq!(d.payload, Some(42 + u64::from(s)), "{side}: {d:?}");
            }
        }
    }

    #[test]
    fn attacks_on_a_512_picture() {
        let wm = Watermarker::new();
        let mut img = picture(512, 512);
        wm.embed(&mut img, 7);
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 50)
            .encode_image(&img)
            .unwrap();
        let jpeg = image::load_from_memory(&jpeg).unwrap().to_rgb8();
        let half = image::imageops::resize(&img, 256, 256, image::imageops::FilterType::Triangle);
        let crop = image::imageops::crop_imm(&img, 37, 11, 460, 460).to_image();
        for (name, attacked) in [("jpeg", jpeg), ("half", half), ("crop", crop)] {
            let d = wm.detect(&attacked);
            assert_eq!(d.payload, Some(7), "{name}: {d:?}");
            assert!(d.confidence > 0.5, "{name}: {d:?}");
        }
    }
}
