//! The UNet on int8 weights through the real loader: chosen per load or by the model's
//! settings, close to f32, kept through a LoRA merge, refused where it cannot run.

use crate::common;
use candle_core::{DType, Tensor};
use nanoimg_core::Limits;
use nanoimg_engine::models::max_abs_diff;
use nanoimg_engine::pipeline::SeededNoise;
use nanoimg_engine::{
    CancelToken, GenerateRequest, LoadOptions, ModelInfo, NoProgress, Quantization, StableDiffusion,
};

fn load_with(
    path: &std::path::Path,
    quantize: Option<Quantization>,
    dtype: DType,
) -> nanoimg_engine::Result<StableDiffusion> {
    StableDiffusion::load(
        path,
        &LoadOptions {
            quantize,
            dtype,
            ..Default::default()
        },
    )
}

fn int8(name: &str) -> StableDiffusion {
    load_with(&common::path(name), Some(Quantization::Int8), DType::F32).unwrap()
}

pub(crate) fn unet_out(model: &StableDiffusion) -> Tensor {
    let dev = model.device();
    let x = SeededNoise::new(7)
        .sample(&[2, 4, 16, 16], dev, DType::F32)
        .unwrap();
    let t = Tensor::new(&[500f32, 20.0], dev).unwrap();
    let ctx = model.encode_text("a red fox in the snow", false).unwrap().context;
    let ctx = Tensor::cat(&[&ctx, &ctx], 0).unwrap();
    model.unet().unwrap().forward(&x, &t, &ctx, None, None).unwrap()
}

/// Relative L2 distance of `a` from `b`.
pub(crate) fn relative(a: &Tensor, b: &Tensor) -> f32 {
    nanoimg_engine::models::relative_l2(a, b).unwrap()
}

#[test]
fn an_int8_unet_stays_close_to_f32_and_generates() {
    for name in ["tiny-sd1", "tiny-sd2-v", "tiny-sdxl"] {
        let (full, q) = (common::load(name), int8(name));
        assert!(
            q.unet().unwrap().is_int8() && !full.unet().unwrap().is_int8(),
            "{name}"
        );
        if name != "tiny-sdxl" {
            // (SDXL's UNet needs its added conditioning; the image below covers it.)
            let rel = relative(&unet_out(&q), &unet_out(&full));
            assert!(rel > 0.0 && rel < 0.05, "{name}: int8 UNet {rel} from f32");
        }
        let req = GenerateRequest {
            steps: 2,
            seed: 3,
            ..GenerateRequest::new(&full, "a red fox in the snow")
        };
        let run = |m: &StableDiffusion| {
            m.generate(&req, &Limits::default(), &NoProgress, &CancelToken::new())
                .unwrap()
                .remove(0)
                .image
        };
        let (a, b) = (run(&full), run(&q));
        let diff = common::mean_abs_diff(&a, &b);
        assert!(diff < 8.0, "{name}: int8 image {diff} levels from f32 on average");
    }
}

#[test]
fn the_model_settings_choose_int8_and_a_load_overrides_them() {
    let dir = tempfile::tempdir().unwrap();
    common::copy_dir(&common::path("tiny-sd1"), dir.path());
    std::fs::write(dir.path().join("nanoimg.json"), r#"{"quantize": "int8"}"#).unwrap();
    assert_eq!(
        ModelInfo::inspect(dir.path()).unwrap().quantize,
        Quantization::Int8
    );
    assert!(load_with(dir.path(), None, DType::F32)
        .unwrap()
        .unet()
        .unwrap()
        .is_int8());
    let plain = load_with(dir.path(), Some(Quantization::None), DType::F32).unwrap();
    assert!(!plain.unet().unwrap().is_int8());
    assert_eq!(
        max_abs_diff(&unet_out(&plain), &unet_out(&common::load("tiny-sd1"))).unwrap(),
        0.0
    );

    std::fs::write(dir.path().join("nanoimg.json"), r#"{"quantize": "int4"}"#).unwrap();
    let err = ModelInfo::inspect(dir.path()).unwrap_err().to_string();
    assert!(err.contains("int4"), "{err}");
}

#[test]
fn int8_is_refused_off_the_cpu_or_below_f32_with_the_reason() {
    let err = load_with(&common::path("tiny-sd1"), Some(Quantization::Int8), DType::F16)
        .unwrap_err()
        .to_string();
    assert!(err.contains("quantize") && err.contains("f32"), "{err}");
    for bad in ["int4", "", "INT8 "] {
        assert!(bad.parse::<Quantization>().is_err(), "{bad:?}");
    }
    assert_eq!("INT8".parse::<Quantization>().unwrap(), Quantization::Int8);
}

/// On an int8 model the tiny autoencoder's decoder runs on int8 weights too (its own, as
/// SDXS's, or one attached), and decodes within a stated tolerance of the f32 one.
#[test]
fn an_int8_models_tiny_decoder_is_int8_and_close_to_f32() {
    use nanoimg_engine::synthetic::{tiny_taesd_config, write_model, write_taesd, SyntheticSpec};
    use nanoimg_engine::VaeChoice;
    let latents = SeededNoise::new(9)
        .sample(&[1, 4, 16, 16], &candle_core::Device::Cpu, DType::F32)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (sdxs, taesd) = (dir.path().join("sdxs"), dir.path().join("taesd"));
    write_model(&sdxs, &SyntheticSpec::tiny_sdxs(false), 5).unwrap();
    write_taesd(&taesd, &tiny_taesd_config(), 9).unwrap();
    let tiny = || nanoimg_engine::tiny_vae::load(&taesd, &candle_core::Device::Cpu, DType::F32).unwrap();
    let pairs = [
        (
            load_with(&sdxs, None, DType::F32).unwrap(),
            load_with(&sdxs, Some(Quantization::Int8), DType::F32).unwrap(),
        ),
        (
            common::load("tiny-sd1").with_tiny_vae(tiny()).unwrap(),
            int8("tiny-sd1").with_tiny_vae(tiny()).unwrap(),
        ),
    ];
    for (full, q) in pairs {
        assert!(!full.tiny_vae().unwrap().is_int8());
        assert!(q.tiny_vae().unwrap().is_int8());
        let a = full.decode_latents(&latents, VaeChoice::Tiny).unwrap();
        let b = q.decode_latents(&latents, VaeChoice::Tiny).unwrap();
        let rel = relative(&b, &a);
        assert!(rel > 0.0 && rel < 0.03, "int8 tiny decoder {rel} from f32");
    }
}
