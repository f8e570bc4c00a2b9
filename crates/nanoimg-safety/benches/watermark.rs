//! Watermark robustness: detection rate on marked pictures, unattacked and after JPEG q50,
//! resize ×0.5, a 10 % crop and brightness +15 %, and the false-positive rate on unmarked
//! pictures; also the picture quality (PSNR) and the time to mark and to detect.
//!
//!     cargo bench -p nanoimg-safety --bench watermark            # 200 marked, 1000 unmarked
//!     NANOIMG_WM_MARKED=1000 NANOIMG_WM_UNMARKED=3000 cargo bench -p nanoimg-safety --bench watermark
//!
//! The pictures are synthetic but have natural images' statistics: 1/f ("pink") noise in
//! colour, with flat shapes and gradients on top (like illustrations), at 512×512 and 768×512.

use image::{imageops, Rgb, RgbImage};
use nanoimg_safety::watermark::{fft2, psnr, Watermarker};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rustfft::num_complex::Complex;
use rustfft::FftPlanner;
use std::time::{Duration, Instant};

/// A picture with a 1/f^β spectrum per channel, plus flat shapes.
fn picture(rng: &mut ChaCha8Rng, w: usize, h: usize) -> RgbImage {
    let beta: f32 = rng.random_range(0.8..1.4);
    let mut planner = FftPlanner::<f32>::new();
    let mut chans = Vec::new();
    for _ in 0..3 {
        let mut buf: Vec<Complex<f32>> = (0..w * h)
            .map(|i| {
                let (x, y) = (i % w, i / w);
                let fx = x.min(w - x) as f32 / w as f32;
                let fy = y.min(h - y) as f32 / h as f32;
                let f = (fx * fx + fy * fy).sqrt().max(1.0 / w as f32);
                Complex::from_polar(f.powf(-beta), rng.random::<f32>() * std::f32::consts::TAU)
            })
            .collect();
        fft2(&mut planner, &mut buf, w, h, true);
        let v: Vec<f32> = buf.iter().map(|c| c.re).collect();
        let (mean, sd) = {
            let m = v.iter().sum::<f32>() / v.len() as f32;
            (
                m,
                (v.iter().map(|x| (x - m) * (x - m)).sum::<f32>() / v.len() as f32).sqrt(),
            )
        };
        let contrast: f32 = rng.random_range(20.0..50.0);
        let base: f32 = rng.random_range(70.0..180.0);
        chans.push(
            v.iter()
                .map(|x| base + contrast * (x - mean) / sd)
                .collect::<Vec<f32>>(),
        );
    }
    let mut img = RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let i = y as usize * w + x as usize;
        Rgb([0, 1, 2].map(|c| chans[c][i].clamp(0.0, 255.0) as u8))
    });
    for _ in 0..rng.random_range(0..6) {
        let colour = Rgb([rng.random(), rng.random(), rng.random()]);
        let (cx, cy) = (rng.random_range(0..w) as i64, rng.random_range(0..h) as i64);
        let r = rng.random_range(20..(w / 3)) as i64;
        for y in (cy - r).max(0)..(cy + r).min(h as i64) {
            for x in (cx - r).max(0)..(cx + r).min(w as i64) {
                if (x - cx).pow(2) + (y - cy).pow(2) <= r * r {
                    img.put_pixel(x as u32, y as u32, colour);
                }
            }
        }
    }
    img
}

fn jpeg(img: &RgbImage, q: u8) -> RgbImage {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, q)
        .encode_image(img)
        .unwrap();
    image::load_from_memory(&out).unwrap().to_rgb8()
}

fn attacks(rng: &mut ChaCha8Rng, img: &RgbImage) -> Vec<(&'static str, RgbImage)> {
    let (w, h) = img.dimensions();
    let (cw, ch) = (w * 9 / 10, h * 9 / 10);
    let (x0, y0) = (rng.random_range(0..=w - cw), rng.random_range(0..=h - ch));
    let bright = RgbImage::from_fn(w, h, |x, y| {
        Rgb(img
            .get_pixel(x, y)
            .0
            .map(|c| (f32::from(c) * 1.15).round().min(255.0) as u8))
    });
    vec![
        ("none", img.clone()),
        ("JPEG q50", jpeg(img, 50)),
        (
            "resize ×0.5",
            imageops::resize(img, w / 2, h / 2, imageops::FilterType::Triangle),
        ),
        ("crop 10 %", imageops::crop_imm(img, x0, y0, cw, ch).to_image()),
        ("brightness +15 %", bright),
    ]
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let (marked, unmarked) = (env("NANOIMG_WM_MARKED", 200), env("NANOIMG_WM_UNMARKED", 1000));
    let wm = Watermarker::new();
    let mut rng = ChaCha8Rng::seed_from_u64(20_261_124);
    let names = ["none", "JPEG q50", "resize ×0.5", "crop 10 %", "brightness +15 %"];
    let mut found = [0usize; 5];
    let mut wrong = [0usize; 5];
    let mut psnrs = Vec::new();
    let (mut t_embed, mut t_detect) = (Duration::ZERO, Duration::ZERO);
    for i in 0..marked {
        let (w, h) = if i % 4 == 3 { (768, 512) } else { (512, 512) };
        let clean = picture(&mut rng, w, h);
        let payload: u64 = rng.random();
        let mut img = clean.clone();
        let t = Instant::now();
        wm.embed(&mut img, payload);
        t_embed += t.elapsed();
        psnrs.push(psnr(&clean, &img));
        for (k, (_, attacked)) in attacks(&mut rng, &img).into_iter().enumerate() {
            let t = Instant::now();
            let d = wm.detect(&attacked);
            t_detect += t.elapsed();
            match d.payload {
                Some(p) if p == payload => found[k] += 1,
                Some(_) => wrong[k] += 1,
                None => {}
            }
        }
    }
    let mut false_pos = 0;
    let mut max_score = 0f32;
    for i in 0..unmarked {
        let (w, h) = if i % 4 == 3 { (768, 512) } else { (512, 512) };
        let mut img = picture(&mut rng, w, h);
        if i % 2 == 1 {
            img = jpeg(&img, 75);
        }
        let d = wm.detect(&img);
        max_score = max_score.max(d.score);
        false_pos += usize::from(d.present);
    }
    psnrs.sort_by(f64::total_cmp);
    println!("| attack | detected (right payload) | wrong payload |");
    println!("|---|---|---|");
    for k in 0..5 {
        println!(
            "| {} | {}/{marked} ({:.1} %) | {} |",
            names[k],
            found[k],
            100.0 * found[k] as f64 / marked.max(1) as f64,
            wrong[k]
        );
    }
    println!(
        "| unmarked (half of them JPEG q75) | {false_pos}/{unmarked} false positives ({:.2} %); highest sync score {max_score:.2} | |",
        100.0 * false_pos as f64 / unmarked.max(1) as f64
    );
    println!(
        "PSNR marked vs original: median {:.1} dB, lowest {:.1} dB",
        psnrs[psnrs.len() / 2],
        psnrs[0]
    );
    println!(
        "time: mark {:.1} ms, detect {:.1} ms (mean, 512×512 and 768×512)",
        t_embed.as_secs_f64() * 1e3 / marked as f64,
        t_detect.as_secs_f64() * 1e3 / (5 * marked) as f64
    );
}
