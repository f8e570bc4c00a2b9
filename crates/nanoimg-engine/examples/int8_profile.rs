//! Times the UNet's convolutions and linear layers at SD 512×512 sizes on f32 and on int8
//! weights, and prints how far int8 moves each result.
//! `cargo run --release -p nanoimg-engine --example int8_profile`
use candle_core::{Device, Module, Tensor};
use nanoimg_engine::models::{conv::Conv2d, int8::Quantize, linear::Linear};
use std::time::Instant;
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn median(f: impl Fn() -> Tensor) -> (f64, Tensor) {
    let y = f();
    let mut v: Vec<f64> = (0..5)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    (v[2], y)
}

fn compare(name: &str, f32: &dyn Module, int8: &dyn Module, x: &Tensor) {
    // `INT8_PROFILE_ONLY=<part of a name>` runs just those rows (for `perf record`).
    if std::env::var("INT8_PROFILE_ONLY").is_ok_and(|only| !name.contains(&only)) {
        return;
    }
    let (a, ya) = median(|| f32.forward(x).unwrap());
    let (b, yb) = median(|| int8.forward(x).unwrap());
    let err = nanoimg_engine::models::relative_l2(&yb, &ya).unwrap();
    println!(
        "{name:<34} f32 {a:>8.4} s  int8 {b:>8.4} s  {:>5.2}x  rel. error {err:.4}",
        a / b
    );
}

fn main() {
    let dev = Device::Cpu;
    let r = |s: &[usize]| Tensor::randn(0f32, 1.0, s, &dev).unwrap();
    println!("int8 fast tile: {}", nanoimg_engine::models::int8::fast());
    for (c, hw, k) in [
        (320, 64, 3),
        (640, 32, 3),
        (1280, 16, 3),
        (1280, 8, 3),
        (320, 64, 1),
    ] {
        let cfg = candle_nn::Conv2dConfig {
            padding: k / 2,
            ..Default::default()
        };
        let w = (r(&[c, c, k, k]) * (1.0 / ((c * k * k) as f64).sqrt())).unwrap();
        let f = Conv2d::new(candle_nn::Conv2d::new(w, Some(r(&[c])), cfg));
        let mut q = f.clone();
        q.quantize_int8().unwrap();
        let x = r(&[1, c, hw, hw]);
        compare(&format!("conv{k}x{k} {c}->{c} @{hw}x{hw}"), &f, &q, &x);
    }
    for (rows, k, n) in [
        (4096, 320, 320),
        (4096, 320, 2560),
        (4096, 1280, 320),
        (1024, 640, 640),
        (256, 1280, 1280),
        (77, 768, 320),
    ] {
        let w = (r(&[n, k]) * (1.0 / (k as f64).sqrt())).unwrap();
        let f = Linear::new(w, Some(r(&[n]))).unwrap();
        let mut q = f.clone();
        q.quantize_int8().unwrap();
        let x = r(&[1, rows, k]);
        compare(&format!("linear {rows}x{k} -> {n}"), &f, &q, &x);
    }
}
