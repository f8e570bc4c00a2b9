use candle_core::{Device, Tensor};
use std::time::Instant;
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn t(name: &str, f: impl Fn() -> candle_core::Result<Tensor>) {
    f().unwrap();
    let mut v = vec![];
    for _ in 0..3 {
        let s = Instant::now();
        f().unwrap();
        v.push(s.elapsed().as_secs_f64());
    }
    v.sort_by(|a, b| a.total_cmp(b));
    println!("{name:<40} {:>8.4} s", v[1]);
}
fn chunked(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, chunk: usize) -> candle_core::Result<Tensor> {
    let q = (q * scale)?;
    let kt = k.t()?.contiguous()?;
    let n = q.dim(2)?;
    let mut outs = vec![];
    let mut s = 0;
    while s < n {
        let len = chunk.min(n - s);
        let qs = q.narrow(2, s, len)?;
        let p = nanoimg_engine::models::kernels::softmax_last_dim(&qs.matmul(&kt)?)?;
        outs.push(p.matmul(v)?);
        s += len;
    }
    Tensor::cat(&outs, 2)
}
fn main() {
    let dev = Device::Cpu;
    let q = Tensor::randn(0f32, 1.0, (1, 5, 4096, 64), &dev).unwrap();
    let kt = q.t().unwrap().contiguous().unwrap();
    t("q.kT (k.t() view)", || q.matmul(&q.t()?));
    t("q.kT (kT contiguous)", || q.matmul(&kt));
    let s = q.matmul(&kt).unwrap();
    t("softmax 5x4096x4096", || candle_nn::ops::softmax_last_dim(&s));
    t("ours softmax 5x4096x4096", || {
        nanoimg_engine::models::kernels::softmax_last_dim(&s)
    });
    t("scale 5x4096x4096", || &s * 0.125);
    t("p.v", || s.matmul(&q));
    for c in [64, 128, 256, 512, 1024, 4096] {
        t(&format!("chunked {c}"), || chunked(&q, &q, &q, 0.125, c));
    }
    let q8 = Tensor::randn(0f32, 1.0, (1, 8, 4096, 40), &dev).unwrap();
    t("chunked 128 8x40", || chunked(&q8, &q8, &q8, 0.15, 128));
    t("chunked 256 8x40", || chunked(&q8, &q8, &q8, 0.15, 256));
    let r = nanoimg_engine::models::layers::attention(&q, &q, &q, 0.125).unwrap();
    let c = chunked(&q, &q, &q, 0.125, 512).unwrap();
    println!(
        "max diff {}",
        (r - c)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
    );
}
