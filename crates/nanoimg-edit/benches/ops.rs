//! Pixel-operation speed on a 4-megapixel picture (2448×1632), the operations the issue names:
//! resize to half (Lanczos3), Gaussian blur (sigma 3 and 50, against imageproc's direct kernel),
//! rotate 15° (bicubic, canvas grown) and a right-angle turn. `cargo bench -p nanoimg-edit --bench ops`; `bench/pixel_ops_imagemagick.sh`
//! times the same operations with ImageMagick for docs/benchmarks.md.

use image::{Rgb, RgbImage};
use nanoimg_edit::plan::{Axis, Rgb as Fill};
use nanoimg_edit::{ops, Op};
use std::time::Instant;

fn main() {
    let (w, h) = (2448u32, 1632u32);
    let img = RgbImage::from_fn(w, h, |x, y| {
        let t = ((x * 7 + y * 13) % 23) as u8;
        Rgb([
            (x * 255 / w) as u8 ^ t,
            (y * 255 / h) as u8,
            ((x / 16 + y / 16) % 2 * 160 + 40) as u8,
        ])
    });
    let cases = [
        ("resize 50% (Lanczos3)", Op::Scale { factor: 0.5 }),
        ("gaussian blur sigma 2.5 (exact kernel)", Op::Blur { sigma: 2.5 }),
        ("gaussian blur sigma 3 (three boxes)", Op::Blur { sigma: 3.0 }),
        ("gaussian blur sigma 50 (three boxes)", Op::Blur { sigma: 50.0 }),
        (
            "rotate 15° (bicubic)",
            Op::Rotate {
                degrees: 15.0,
                fill: Fill([255, 255, 255]),
            },
        ),
        (
            "rotate 90°",
            Op::Rotate {
                degrees: 90.0,
                fill: Fill::default(),
            },
        ),
        (
            "flip",
            Op::Flip {
                axis: Axis::Horizontal,
            },
        ),
        ("brightness", Op::Brightness { amount: 0.2 }),
    ];
    println!("{w}×{h} ({:.1} MP), median of 7 runs", f64::from(w * h) / 1e6);
    for (name, op) in cases {
        let mut times: Vec<f64> = (0..7)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(ops::apply(&img, &op).unwrap());
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!("{name}: {:.1} ms", times[3]);
    }
    // The direct kernel the blur used before, whose cost grows with sigma.
    for sigma in [3.0f32, 50.0] {
        let mut times: Vec<f64> = (0..7)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(imageproc::filter::gaussian_blur_f32(&img, sigma));
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!("imageproc gaussian_blur_f32 sigma {sigma}: {:.1} ms", times[3]);
    }
}
