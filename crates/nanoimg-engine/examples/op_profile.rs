//! Times single operations at Stable Diffusion 512×512 sizes, to see where a UNet step goes.
//! `cargo run --release -p nanoimg-engine --example op_profile`
use candle_core::{DType, Device, Module, Tensor};
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

fn main() {
    let dev = Device::Cpu;
    let r = |s: &[usize]| Tensor::randn(0f32, 1.0, s, &dev).unwrap();
    let vb = candle_nn::VarBuilder::zeros(DType::F32, &dev);
    let conv = |cin, cout, k, p| {
        let w = r(&[cout, cin, k, k]);
        candle_nn::Conv2d::new(
            w,
            Some(r(&[cout])),
            candle_nn::Conv2dConfig {
                padding: p,
                ..Default::default()
            },
        )
    };
    let ours = |cin, cout, k, p| nanoimg_engine::models::conv::Conv2d::new(conv(cin, cout, k, p));
    let x320 = r(&[1, 320, 64, 64]);
    let o1 = ours(320, 320, 3, 1);
    t("ours: conv3x3 320->320 @64x64", || o1.forward(&x320));
    let (xa, xb) = (r(&[1, 128, 512, 512]), r(&[1, 512, 64, 64]));
    let o2 = ours(128, 128, 3, 1);
    t("ours: conv3x3 128->128 @512x512", || o2.forward(&xa));
    let o3 = ours(512, 512, 3, 1);
    t("ours: conv3x3 512->512 @64x64", || o3.forward(&xb));
    // TAESD's decoder: 64 channels at every level.
    let x64 = r(&[1, 64, 512, 512]);
    let o5 = ours(64, 64, 3, 1);
    t("ours: conv3x3 64->64 @512x512", || o5.forward(&x64));
    let o4 = ours(512, 512, 1, 0);
    t("ours: conv1x1 512->512 @64x64", || o4.forward(&xb));
    let c4 = conv(512, 512, 1, 0);
    t("conv1x1 512->512 @64x64", || c4.forward(&xb));
    let c = conv(320, 320, 3, 1);
    t("conv3x3 320->320 @64x64", || c.forward(&x320));
    let x128 = r(&[1, 128, 512, 512]);
    let c2 = conv(128, 128, 3, 1);
    t("conv3x3 128->128 @512x512", || c2.forward(&x128));
    let x512 = r(&[1, 512, 64, 64]);
    let c3 = conv(512, 512, 3, 1);
    t("conv3x3 512->512 @64x64", || c3.forward(&x512));
    let gn = candle_nn::group_norm(32, 320, 1e-5, vb.pp("gn")).unwrap();
    t("groupnorm 320 @64x64", || gn.forward(&x320));
    let gn2 = candle_nn::group_norm(32, 128, 1e-5, vb.pp("gn2")).unwrap();
    t("groupnorm 128 @512x512", || gn2.forward(&x128));
    t("silu 128 @512x512", || candle_nn::ops::silu(&x128));
    let ogn = nanoimg_engine::models::kernels::GroupNorm::new(32, 128, 1e-5, vb.pp("gn2")).unwrap();
    t("ours: groupnorm+silu 128 @512x512", || ogn.forward_silu(&x128));
    let ogn3 = nanoimg_engine::models::kernels::GroupNorm::new(32, 320, 1e-5, vb.pp("gn")).unwrap();
    t("ours: groupnorm+silu 320 @64x64", || ogn3.forward_silu(&x320));
    let small = r(&[1, 5, 64, 4096]);
    t("ours: softmax 5x64x4096 (in cache)", || {
        nanoimg_engine::models::kernels::softmax_last_dim(&small)
    });
    t("candle: softmax 5x64x4096 (in cache)", || {
        candle_nn::ops::softmax_last_dim(&small)
    });
    t("exp 5x64x4096 (candle)", || small.exp());
    let q = r(&[1, 5, 4096, 64]);
    t("attention 5x4096x64", || {
        nanoimg_engine::models::layers::attention(&q, &q, &q, 0.125)
    });
    t(
        "attention 5x4096x64 (unfused: candle matmul + our softmax)",
        || {
            let s = q.matmul(&q.t()?)?;
            nanoimg_engine::models::kernels::softmax_last_dim(&s)?.matmul(&q)
        },
    );
    let q8 = r(&[1, 8, 4096, 40]);
    t("attention 8x4096x40", || {
        nanoimg_engine::models::layers::attention(&q8, &q8, &q8, 0.15)
    });
    t("attention 8x4096x40 (unfused)", || {
        let s = q8.matmul(&q8.t()?)?;
        nanoimg_engine::models::kernels::softmax_last_dim(&s)?.matmul(&q8)
    });
    let tok = r(&[1, 4096, 320]);
    let lin = candle_nn::Linear::new(r(&[320, 320]), None);
    t("linear 4096x320 -> 320", || lin.forward(&tok));
    let ff = candle_nn::Linear::new(r(&[2560, 320]), Some(r(&[2560])));
    t("linear 4096x320 -> 2560 (GEGLU in)", || ff.forward(&tok));
    t("upsample nearest 128@256->512", || {
        r(&[1, 128, 256, 256]).upsample_nearest2d(512, 512)
    });
    t("permute+contiguous 320@64x64", || {
        x320.permute((0, 2, 3, 1))?.contiguous()
    });
}
