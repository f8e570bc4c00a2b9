//! Text-encoder-sized linear layers (77 tokens), candle's `Linear` against ours
//! (`models::linear`), the activations around them, then (given a model folder) the whole text
//! encoding.
//! `cargo run --release -p nanoimg-engine --example linear_profile [MODEL_DIR]`
use candle_core::{Device, Module, Tensor};
use std::time::Instant;
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The median of 21 runs after a warm-up, in milliseconds.
fn t(name: &str, f: impl Fn() -> candle_core::Result<Tensor>) {
    f().unwrap();
    let mut v: Vec<f64> = (0..21)
        .map(|_| {
            let s = Instant::now();
            f().unwrap();
            s.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    println!("{name:<50} {:>8.3} ms", v[10] * 1e3);
}

fn main() {
    if let Some(dir) = std::env::args().nth(1) {
        let model =
            nanoimg_engine::StableDiffusion::load(std::path::Path::new(&dir), &Default::default()).unwrap();
        t("encode_text (one prompt)", || {
            Ok(model
                .encode_text("a photograph of an astronaut riding a horse", false)
                .unwrap()
                .context)
        });
    }
    let dev = Device::Cpu;
    let r = |s: &[usize]| Tensor::randn(0f32, 1.0, s, &dev).unwrap();
    let h = r(&[1, 77, 4096]);
    t("gelu (erf) 77x4096", || h.gelu_erf());
    t("quick_gelu 77x3072", || {
        let h = h.narrow(2, 0, 3072)?;
        &h * candle_nn::ops::sigmoid(&(&h * 1.702)?)?
    });
    for (k, n) in [(1024, 4096), (4096, 1024), (1024, 1024), (768, 3072)] {
        let x = r(&[1, 77, k]);
        let (w, b) = (r(&[n, k]), r(&[n]));
        let candle = candle_nn::Linear::new(w.clone(), Some(b.clone()));
        t(&format!("candle Linear 77x{k} -> {n}"), || candle.forward(&x));
        let ours = nanoimg_engine::models::linear::Linear::new(w, Some(b)).unwrap();
        t(&format!("ours (W·xᵀ) 77x{k} -> {n}"), || ours.forward(&x));
    }
}
