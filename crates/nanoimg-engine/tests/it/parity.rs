//! Numerical parity with the reference implementations (diffusers 0.42.1, transformers 5.x).
//!
//! `bench/parity_fixtures.py` ran diffusers/transformers on the tiny models that
//! `models synth --seed 7` writes and saved inputs and outputs in `tests/fixtures/`. Here we write
//! the same models from the same seed, run our code on the saved inputs and compare.

use candle_core::{Device, Tensor};
use nanoimg_engine::embed::{cosine, ClipEmbedder, Dinov2Embedder};
use nanoimg_engine::models::unet::{AddedConditioning, TextTime};
use nanoimg_engine::synthetic::{self, write_model, SyntheticSpec};
use nanoimg_engine::tiny_vae::VaeChoice;
use nanoimg_engine::tokenizer::ClipTokenizer;
use nanoimg_engine::{Family, LoadOptions, Side, StableDiffusion};
use std::collections::HashMap;
use std::path::Path;

const PROMPT: &str = "a cat and a dog, 2 friends!";
/// f32 on different kernels (PyTorch's MKL/oneDNN vs. gemm) and summation orders.
const TOL: f32 = 2e-4;

fn fixture(name: &str) -> HashMap<String, Tensor> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("parity-{name}.safetensors"));
    candle_core::safetensors::load(&p, &Device::Cpu).unwrap()
}

/// Largest difference relative to the reference's largest magnitude (at least 1).
fn max_rel_diff(ours: &Tensor, theirs: &Tensor) -> f32 {
    assert_eq!(ours.dims(), theirs.dims());
    let scale = nanoimg_engine::models::max_abs_diff(theirs, &theirs.zeros_like().unwrap())
        .unwrap()
        .max(1.0);
    nanoimg_engine::models::max_abs_diff(ours, theirs).unwrap() / scale
}

fn check(what: &str, ours: &Tensor, theirs: &Tensor) {
    let d = max_rel_diff(ours, theirs);
    if std::env::var_os("NANOIMG_PARITY_REPORT").is_some() {
        eprintln!("{what}: {d:.2e}");
    }
    assert!(
        d < TOL,
        "{what}: max difference {d} (relative to max |value|) exceeds {TOL}"
    );
}

/// The tensors of a file a test just wrote, at f32 on the CPU.
fn mapped(file: &Path) -> candle_nn::VarBuilder<'static> {
    // SAFETY: the file was written by the test and is only read while mapped.
    unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(&[file], candle_core::DType::F32, &Device::Cpu) }
        .unwrap()
}

fn ids(t: &Tensor) -> Vec<u32> {
    t.squeeze(0)
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|i| i as u32)
        .collect()
}

fn run_parity(name: &str, spec: SyntheticSpec) {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), &spec, 7).unwrap();
    check_folder(name, dir.path(), spec.family);
}

fn check_folder(name: &str, dir: &Path, family: Family) {
    let f = fixture(name);
    let model = StableDiffusion::load(dir, &LoadOptions::default()).unwrap();
    let sdxl = family.is_sdxl();

    // Tokenizer(s): same ids as transformers' CLIPTokenizer.
    for (tokenizer, key) in [("tokenizer", "ids"), ("tokenizer_2", "ids_2")] {
        if let Some(expected) = f.get(key) {
            let tok = ClipTokenizer::from_dir(&dir.join(tokenizer)).unwrap();
            assert_eq!(tok.encode(PROMPT).ids, ids(expected), "{name}: {tokenizer} ids");
        }
    }

    // Text encoder(s): compare through the public conditioning path.
    let cond = model.encode_text(PROMPT, false).unwrap();
    let expected_ctx = match family {
        Family::Sdxl => Tensor::cat(&[&f["penultimate"], &f["penultimate_2"]], 2).unwrap(),
        Family::SdxlRefiner => f["penultimate_2"].clone(),
        Family::Sd1 | Family::Sd2 => f["last_hidden_state"].clone(),
        Family::Flux => unreachable!("FLUX parity is checked by flux_pipeline_matches_diffusers"),
    };
    check(&format!("{name}: text context"), &cond.context, &expected_ctx);
    if sdxl {
        check(
            &format!("{name}: pooled text_embeds"),
            cond.pooled.as_ref().unwrap(),
            &f["pooled_2"],
        );
    }

    // UNet on a batch of two with different timesteps.
    let ctx = expected_ctx.repeat((2, 1, 1)).unwrap();
    let added = AddedConditioning {
        text_time: sdxl.then(|| TextTime {
            text_embeds: f["pooled_2"].repeat((2, 1)).unwrap(),
            time_ids: f["time_ids"].clone(),
        }),
        guidance: f.get("guidance_w").cloned(),
    };
    assert_eq!(
        added.guidance.is_some(),
        model.unet().unwrap().config().embeds_guidance(),
        "{name}: the fixture and the UNet disagree on the guidance embedding"
    );
    let out = model
        .unet()
        .unwrap()
        .forward(&f["sample"], &f["timestep"], &ctx, Some(&added), None)
        .unwrap();
    check(&format!("{name}: unet"), &out, &f["unet_out"]);

    // What diffusers' own SDXL pipeline hands its UNet (negative row first) for a 64x48 picture
    // with no negative prompt: the context and pooled batch, and the time ids.
    if sdxl {
        let uncond = model.encode_text("", true).unwrap();
        let context = Tensor::cat(&[&uncond.context, &cond.context], 0).unwrap();
        check(&format!("{name}: pipeline context"), &context, &f["pipe_context"]);
        let pooled = Tensor::cat(
            &[uncond.pooled.as_ref().unwrap(), cond.pooled.as_ref().unwrap()],
            0,
        )
        .unwrap();
        check(&format!("{name}: pipeline pooled"), &pooled, &f["pipe_pooled"]);
        let time_ids: Vec<Vec<f32>> = [Side::Negative, Side::Positive]
            .iter()
            .map(|&side| model.time_ids(side, (64, 48)).unwrap())
            .collect();
        assert_eq!(
            time_ids,
            f["pipe_time_ids"].to_vec2::<f32>().unwrap(),
            "{name}: time ids"
        );
    }

    // VAE both ways: the full one (SDXS: `vae_large`), and the tiny one SDXS has as `vae`.
    assert_eq!(
        model.vae().is_some(),
        f.contains_key("decoded"),
        "{name}: full VAE"
    );
    if let Some(vae) = model.vae() {
        check(
            &format!("{name}: vae decode"),
            &vae.decode(&f["latents"]).unwrap(),
            &f["decoded"],
        );
        check(
            &format!("{name}: vae encode"),
            &vae.encode(&f["image"]).unwrap(),
            &f["encoded_mean"],
        );
    }
    assert_eq!(
        model.tiny_vae().is_some(),
        f.contains_key("tiny_decoded"),
        "{name}: tiny VAE"
    );
    if f.contains_key("tiny_decoded") {
        check(
            &format!("{name}: tiny vae decode"),
            &model.decode_latents(&f["latents"], VaeChoice::Tiny).unwrap(),
            &f["tiny_decoded"],
        );
        check(
            &format!("{name}: tiny vae encode"),
            &model.tiny_vae().unwrap().encode(&f["image"]).unwrap(),
            &f["tiny_encoded"],
        );
    }
}

#[test]
fn sd1_matches_diffusers() {
    run_parity("tiny-sd1", SyntheticSpec::tiny(Family::Sd1));
}

#[test]
fn sd2_linear_projection_and_gelu_clip_match_diffusers() {
    run_parity("tiny-sd2", SyntheticSpec::tiny(Family::Sd2));
}

#[test]
fn sdxl_with_add_embedding_and_two_encoders_matches_diffusers() {
    run_parity("tiny-sdxl", SyntheticSpec::tiny(Family::Sdxl));
}

/// The tiny autoencoder (TAESD's architecture, smaller) both ways, loaded as a folder.
/// An LCM-distilled UNet: the guidance scale through `time_embedding.cond_proj`.
#[test]
fn lcm_unet_with_guidance_embedding_matches_diffusers() {
    run_parity("tiny-lcm", SyntheticSpec::tiny_lcm());
}

/// SDXS's layout: a UNet without a middle block or top-level attention, a tiny autoencoder
/// as `vae` and the full one as `vae_large`.
#[test]
fn sdxs_layout_matches_diffusers() {
    run_parity("tiny-sdxs", SyntheticSpec::tiny_sdxs(true));
}

#[test]
fn tiny_autoencoder_matches_diffusers() {
    let f = fixture("tiny-taesd");
    let dir = tempfile::tempdir().unwrap();
    synthetic::write_taesd(dir.path(), &synthetic::tiny_taesd_config(), 7).unwrap();
    let vae = nanoimg_engine::tiny_vae::load(dir.path(), &Device::Cpu, candle_core::DType::F32).unwrap();
    check(
        "tiny-taesd: decode",
        &vae.decode(&f["latents"]).unwrap(),
        &f["decoded"],
    );
    check(
        "tiny-taesd: encode",
        &vae.encode(&f["image"]).unwrap(),
        &f["encoded"],
    );
}

/// The refiner: the second encoder alone, five time ids with the aesthetic scores, a negative
/// prompt encoded rather than zeroed.
#[test]
fn sdxl_refiner_matches_diffusers() {
    run_parity("tiny-sdxl-refiner", SyntheticSpec::tiny_sdxl_refiner());
}

#[test]
fn nine_channel_inpainting_unet_matches_diffusers() {
    run_parity("tiny-inpaint", SyntheticSpec::tiny_inpainting());
}

/// The bundled demo model (f16 weights, computed in f32): our loader reads the folder exactly as
/// diffusers does — its own BPE vocabulary, 32-token context, 8-group VAE.
#[test]
fn bundled_emoji_model_matches_diffusers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/nanoimg-emoji");
    check_folder("nanoimg-emoji", &dir, Family::Sd1);
}

/// The fixture's picture `[h, w, 3]` as an image.
fn picture(t: &Tensor) -> image::RgbImage {
    let (h, w, _) = t.dims3().unwrap();
    let bytes = t.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    image::RgbImage::from_raw(w as u32, h as u32, bytes).unwrap()
}

/// Our preparation of the fixture's picture against the processor's (PIL's bicubic resize
/// against the `image` crate's Catmull-Rom; the crop and normalisation are the same): the mean
/// absolute difference in normalised units, and the cosine of the embeddings each gives.
fn check_preprocess(what: &str, ours: &Tensor, theirs: &Tensor) -> f32 {
    let mean = (ours - theirs)
        .unwrap()
        .abs()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    if std::env::var_os("NANOIMG_PARITY_REPORT").is_some() {
        eprintln!("{what}: preprocessing mean |difference| {mean:.4}");
    }
    assert!(
        mean < 0.05,
        "{what}: our pixel values differ from the processor's by {mean} on average"
    );
    mean
}

/// DINOv2 as transformers' `Dinov2Model` computes it: the 224-px batch (position grid resized
/// from 37×37 to 16×16), the pooled class token, a non-square 2×3-patch grid, and the picture
/// prepared as `BitImageProcessor` prepares it.
#[test]
fn dinov2_matches_transformers() {
    let f = fixture("tiny-dinov2");
    let dir = tempfile::tempdir().unwrap();
    synthetic::write_dinov2(dir.path(), &synthetic::tiny_dinov2_config(), 7).unwrap();
    let e = Dinov2Embedder::load(dir.path(), &Device::Cpu).unwrap();
    let pixels = f["pixel_values"].to_dtype(candle_core::DType::F32).unwrap();
    check(
        "dinov2: last_hidden_state",
        &e.model().forward(&pixels).unwrap(),
        &f["last_hidden_state"],
    );
    check(
        "dinov2: pooler_output",
        &e.model().embed(&pixels).unwrap(),
        &f["pooler_output"],
    );
    check(
        "dinov2: 2×3 patch grid",
        &e.model().forward(&f["small_pixel_values"]).unwrap(),
        &f["small_last_hidden_state"],
    );
    let pic = picture(&f["picture"]);
    let ours = e.preprocess().tensor(&pic, &Device::Cpu).unwrap();
    check_preprocess("dinov2", &ours.squeeze(0).unwrap(), &pixels.get(1).unwrap());
    // End to end: the picture's embedding against transformers' on its own preparation.
    let theirs = f["pooler_output"].get(1).unwrap().to_vec1::<f32>().unwrap();
    let norm = theirs.iter().map(|x| x * x).sum::<f32>().sqrt();
    let theirs: Vec<f32> = theirs.iter().map(|x| x / norm).collect();
    let c = cosine(&e.embed(&[pic]).unwrap()[0], &theirs);
    assert!(
        c > 0.99,
        "dinov2: the picture's embedding has cosine {c} to transformers'"
    );
}

/// CLIP as transformers' `CLIPModel` computes it: projected image features for the batch,
/// the tokenizer's ids, projected text features, and `CLIPImageProcessor`'s preparation.
#[test]
fn clip_image_and_text_features_match_transformers() {
    let f = fixture("tiny-clip");
    let dir = tempfile::tempdir().unwrap();
    synthetic::write_clip(dir.path(), &synthetic::tiny_clip_config(), 7).unwrap();
    let e = ClipEmbedder::load(dir.path(), &Device::Cpu).unwrap();
    let pixels = f["pixel_values"].to_dtype(candle_core::DType::F32).unwrap();
    check(
        "clip: image features",
        &e.image_features(&pixels).unwrap(),
        &f["image_embeds"],
    );
    assert_eq!(
        e.tokenizer().encode(PROMPT).ids,
        ids(&f["ids"]),
        "clip: token ids"
    );
    check(
        "clip: text features",
        &e.text_features(PROMPT).unwrap(),
        &f["text_embeds"],
    );
    let pic = picture(&f["picture"]);
    let ours = e.preprocess().tensor(&pic, &Device::Cpu).unwrap();
    check_preprocess("clip", &ours.squeeze(0).unwrap(), &pixels.get(1).unwrap());
}

/// The consistency samplers against diffusers' LCMScheduler and TCDScheduler (γ = 0.3) on SD's
/// training schedule: the same stand-in denoiser (`bench/parity_fixtures.py`'s `fake_eps`) and
/// the same recorded noise give the same timesteps and the same sample after every step (in
/// diffusers' variance-preserving scale).
#[test]
fn consistency_samplers_match_diffusers() {
    use nanoimg_engine::schedulers::{NoiseSchedule, Prediction, Sampler, SchedulerConfig, SchedulerName};
    let f = fixture("schedulers");
    let schedule = NoiseSchedule::new(&SchedulerConfig::default()).unwrap();
    for (kind, name) in [(SchedulerName::Lcm, "lcm"), (SchedulerName::Tcd, "tcd")] {
        for steps in [1usize, 4, 6] {
            let key = format!("{name}{steps}");
            let plan = schedule.plan(kind, steps);
            let theirs: Vec<f32> = f[&format!("{key}_timesteps")].to_vec1().unwrap();
            let ours: Vec<f32> = plan.timesteps.iter().map(|&t| t as f32).collect();
            assert_eq!(ours, theirs, "{key} timesteps");
            let noise = &f[&format!("{key}_noise")];
            let expected = &f[&format!("{key}_samples")];
            let mut sampler = Sampler::new(kind, plan.clone(), Prediction::Epsilon);
            // diffusers starts from unit noise in its scale: x_t = ε.
            let mut x = (&f[&format!("{key}_initial")] * plan.initial_noise_scale()).unwrap();
            for i in 0..steps {
                let x_t = (&x * sampler.input_scale(i)).unwrap();
                let t = plan.timesteps[i];
                let eps = ((&x_t * 0.5).unwrap() + (t / 100.0).sin() * 0.1).unwrap();
                let d = sampler.denoised(i, &x, &eps).unwrap();
                x = sampler.step(i, &x, &d, Some(&noise.get(i).unwrap())).unwrap();
                let next = plan.sigmas[i + 1];
                let vp = (&x / (next * next + 1.0).sqrt()).unwrap();
                check(&format!("{key} step {i}"), &vp, &expected.get(i).unwrap());
            }
        }
    }
}

/// Flow matching (FLUX) against diffusers' FlowMatchEulerDiscreteScheduler as FluxPipeline
/// drives it: σ and timesteps for fixed and resolution-dependent shifts (exponential and
/// linear) and a terminal stretch; Euler steps with a stand-in velocity
/// (`bench/parity_fixtures.py`'s `fake_v`); image-to-image's kept steps and noised start.
#[test]
fn flow_matching_schedules_match_diffusers() {
    use nanoimg_engine::schedulers::flow::FlowMatchConfig;
    let f = fixture("flow");
    let cases: [(&str, serde_json::Value, usize, usize); 5] = [
        ("schnell", serde_json::json!({}), 4, 1024),
        (
            "dev_512",
            serde_json::json!({"shift": 3.0, "use_dynamic_shifting": true}),
            28,
            1024,
        ),
        (
            "dev_1024",
            serde_json::json!({"shift": 3.0, "use_dynamic_shifting": true}),
            20,
            4096,
        ),
        (
            "linear",
            serde_json::json!({"use_dynamic_shifting": true, "time_shift_type": "linear"}),
            8,
            2048,
        ),
        (
            "terminal",
            serde_json::json!({"shift": 3.0, "shift_terminal": 0.1}),
            10,
            1024,
        ),
    ];
    let close = |what: &str, ours: &[f64], theirs: &Tensor, tol: f64| {
        let theirs = theirs.to_vec1::<f32>().unwrap();
        assert_eq!(ours.len(), theirs.len(), "{what}: length");
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert!((a - *b as f64).abs() <= tol, "{what}[{i}]: {a} vs {b}");
        }
    };
    for (name, cfg, steps, seq) in cases {
        let cfg: FlowMatchConfig = serde_json::from_value(cfg).unwrap();
        cfg.validate().unwrap();
        let plan = cfg.plan(steps, seq);
        close(
            &format!("{name}: sigmas"),
            &plan.sigmas,
            &f[&format!("{name}_sigmas")],
            1e-6,
        );
        close(
            &format!("{name}: timesteps"),
            &plan.timesteps,
            &f[&format!("{name}_timesteps")],
            1e-3,
        );
        if name != "dev_512" {
            continue;
        }
        let mut x = f["dev_512_initial"].clone();
        let expected = &f["dev_512_samples"];
        for (i, &t) in plan.timesteps.iter().enumerate() {
            let v = ((&x * 0.3).unwrap() + (t / 100.0).sin() * 0.2).unwrap();
            x = plan.step(i, &x, &v).unwrap();
            check(&format!("flow step {i}"), &x, &expected.get(i).unwrap());
        }
        let kept = plan.from_strength(0.55).unwrap();
        close(
            "img2img timesteps",
            &kept.timesteps,
            &f["img2img_timesteps"],
            1e-3,
        );
        check(
            "img2img noised",
            &kept.noised(&f["img2img_x0"], &f["img2img_noise"]).unwrap(),
            &f["img2img_noised"],
        );
    }
}

/// FLUX's T5 text encoder against transformers' `T5EncoderModel` (v1.1: gated GELU, relative
/// position buckets out to 160 tokens, RMS norms, no √d).
#[test]
fn t5_encoder_matches_transformers() {
    use nanoimg_engine::models::t5::{T5Config, T5EncoderModel};
    let f = fixture("tiny-t5");
    let dir = tempfile::tempdir().unwrap();
    let config = synthetic::tiny_t5_config();
    synthetic::write_t5(dir.path(), &config, 7).unwrap();
    let cfg: T5Config = serde_json::from_value(config).unwrap();
    let vb = mapped(&dir.path().join("model.safetensors"));
    let model = T5EncoderModel::new(vb, &cfg).unwrap();
    let tokens = f["ids"].to_dtype(candle_core::DType::U32).unwrap();
    check(
        "t5: last hidden state",
        &model.forward(&tokens).unwrap(),
        &f["last_hidden_state"],
    );

    // Its tokenizer as FluxPipeline calls it (transformers' T5TokenizerFast, padded to 16).
    let tok = nanoimg_engine::t5_tokenizer::T5Tokenizer::from_dir(dir.path()).unwrap();
    let short = tok.encode(PROMPT, 16).unwrap();
    assert_eq!(short.ids, ids(&f["tok_short"]), "t5 tokenizer: {PROMPT}");
    assert!(!short.truncated);
    let long = tok.encode(&("a cat and a dog ".repeat(6) + "!"), 16).unwrap();
    assert_eq!(long.ids, ids(&f["tok_long"]), "t5 tokenizer: a long prompt");
    assert!(long.truncated);
    assert_eq!(long.ids.last(), Some(&1), "</s> is kept last");
}

/// The FLUX transformer against diffusers' `FluxTransformer2DModel` (dev: guidance embedded):
/// double- and single-stream blocks, rotary positions on FluxPipeline's ids.
#[test]
fn flux_transformer_matches_diffusers() {
    use nanoimg_engine::models::flux::{FluxInputs, FluxTransformer2DModel, Rope};
    let f = fixture("tiny-flux-transformer");
    let dir = tempfile::tempdir().unwrap();
    synthetic::write_flux_transformer(dir.path(), &synthetic::tiny_flux_config(), 7).unwrap();
    // The transformer folder on its own, as `FluxTransformer2DModel::load` maps it.
    let model = FluxTransformer2DModel::load(dir.path(), candle_core::DType::F32, &Device::Cpu).unwrap();
    let cfg = model.config();
    // 8 text tokens and a 4 × 4 grid of packed tokens (an 8 × 8 latent).
    let ids = nanoimg_engine::models::flux::position_ids(8, (8, 8));
    let rope = Rope::new(&ids, &cfg.axes_dims_rope, &Device::Cpu).unwrap();
    let out = model
        .forward(&FluxInputs {
            latents: &f["latents"],
            text: &f["text"],
            pooled: &f["pooled"],
            timestep: &f["timestep"],
            guidance: Some(&f["guidance"]),
            rope: &rope,
        })
        .unwrap();
    check("flux transformer", &out, &f["out"]);
}

/// FLUX's VAE configuration (16 latent channels, scaling and shift, no quant convolutions)
/// against diffusers' `AutoencoderKL`, both ways.
#[test]
fn flux_vae_matches_diffusers() {
    use nanoimg_engine::models::vae::{AutoencoderKL, VaeConfig};
    let f = fixture("tiny-flux-vae");
    let dir = tempfile::tempdir().unwrap();
    let config = synthetic::tiny_flux_vae_config();
    synthetic::write_vae(dir.path(), &config, 7).unwrap();
    let cfg: VaeConfig = serde_json::from_value(config).unwrap();
    let vb = mapped(&dir.path().join("diffusion_pytorch_model.safetensors"));
    let vae = AutoencoderKL::new(vb, &cfg).unwrap();
    check(
        "flux vae: decode",
        &vae.decode(&f["latents"]).unwrap(),
        &f["decoded"],
    );
    check(
        "flux vae: encode",
        &vae.encode(&f["image"]).unwrap(),
        &f["encoded_mean"],
    );
}
