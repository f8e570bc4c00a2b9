//! Every family and pipeline, through the real loader, on tiny random-weight models.

use crate::common;

use crate::common::{load, load_as, mean_abs_diff, test_image};
use candle_core::DType;
use image::{GrayImage, Luma};
use nanoimg_core::{ImageSize, Limits, SchedulerName};
use nanoimg_edit::ops::outpaint_canvas;
use nanoimg_engine::pipeline::Progress;
use nanoimg_engine::{CancelToken, EngineError, GenerateRequest, InitImage, NoProgress};
use std::sync::Mutex;

fn request(model: &nanoimg_engine::StableDiffusion, steps: u32) -> GenerateRequest {
    GenerateRequest {
        steps,
        guidance: 5.0,
        negative_prompt: "blurry".into(),
        seed: 42,
        ..GenerateRequest::new(model, "a cat")
    }
}

fn run(
    model: &nanoimg_engine::StableDiffusion,
    req: &GenerateRequest,
) -> Vec<nanoimg_engine::GeneratedImage> {
    model
        .generate(req, &Limits::default(), &NoProgress, &CancelToken::new())
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_family_generates_the_requested_size_with_guidance() {
    for name in ["tiny-sd1", "tiny-sd2-v", "tiny-sdxl", "tiny-sdxl-refiner"] {
        let model = load(name);
        let mut req = request(&model, 2);
        req.size = ImageSize::new(64, 96);
        let out = run(&model, &req);
        assert_eq!(out.len(), 1, "{name}");
        assert_eq!(out[0].image.dimensions(), (64, 96), "{name}");
        // Random weights still give a picture with some variation, not a constant.
        let px = out[0].image.as_raw();
        assert!(px.iter().any(|&p| p != px[0]), "{name}: flat image");
    }
}

#[test]
fn families_are_detected_from_configs() {
    use nanoimg_engine::Family;
    assert_eq!(load("tiny-sd1").info().family, Family::Sd1);
    assert_eq!(load("tiny-sd2-v").info().family, Family::Sd2);
    assert_eq!(load("tiny-sd2-v").info().prediction, "v_prediction");
    assert_eq!(load("tiny-sdxl").info().family, Family::Sdxl);
    assert_eq!(load("tiny-sdxl-refiner").info().family, Family::SdxlRefiner);
    assert!(load("tiny-inpaint").info().inpainting);
}

#[test]
fn sdxl_conditioning_changes_with_size_and_pooled_prompt() {
    // The time ids (original/target size) and pooled embedding reach the UNet: changing only the
    // requested aspect changes the picture beyond a resize; changing the prompt changes it too.
    let model = load("tiny-sdxl");
    let mut req = request(&model, 1);
    req.guidance = 0.0;
    let a = run(&model, &req)[0].image.clone();
    req.prompt = "a dog".into();
    let b = run(&model, &req)[0].image.clone();
    assert!(mean_abs_diff(&a, &b) > 0.1, "prompt had no effect");
}

/// Two-stage runs: the refiner carries on the base's latents in the same sampling loop.
#[test]
fn a_refiner_draws_the_last_steps_of_the_base_run() {
    use nanoimg_engine::Refiner;
    use std::sync::Arc;
    let base = load("tiny-sdxl");
    let refiner = Arc::new(load("tiny-sdxl-refiner"));
    type Model = Arc<nanoimg_engine::StableDiffusion>;
    let req = |model: &nanoimg_engine::StableDiffusion, r: Option<(&Model, f64)>| GenerateRequest {
        refiner: r.map(|(m, switch_at)| Refiner {
            model: m.clone(),
            switch_at,
        }),
        scheduler: SchedulerName::Euler,
        ..request(model, 4)
    };
    let alone = run(&base, &req(&base, None))[0].image.clone();
    // Switching at 1 never hands over.
    assert_eq!(run(&base, &req(&base, Some((&refiner, 1.0))))[0].image, alone);
    // Handing over to the same model is the same run: the continuation is exact (same sampler,
    // latents and noise), not a decode and re-encode.
    let same = Arc::new(load("tiny-sdxl"));
    assert_eq!(run(&base, &req(&base, Some((&same, 0.5))))[0].image, alone);
    // Switching at 0 hands over every step: the refiner's own run, decoded by its own VAE.
    let refiner_alone = run(&refiner, &req(&refiner, None))[0].image.clone();
    assert_eq!(
        run(&base, &req(&base, Some((&refiner, 0.0))))[0].image,
        refiner_alone
    );
    // Half and half is neither.
    let two_stage = run(&base, &req(&base, Some((&refiner, 0.5))))[0].image.clone();
    assert!(mean_abs_diff(&two_stage, &alone) > 0.5);
    assert!(mean_abs_diff(&two_stage, &refiner_alone) > 0.5);
    // img2img refines too.
    let mut edit = req(&base, Some((&refiner, 0.5)));
    edit.init = Some(InitImage {
        image: test_image(64, 64),
        strength: 0.75,
        mask: None,
    });
    assert_eq!(run(&base, &edit)[0].image.dimensions(), (64, 64));

    // What cannot continue the base's latents is refused by name.
    let limits = Limits::default();
    let v_model = Arc::new(load("tiny-sd2-v"));
    let e = base
        .validate(&req(&base, Some((&v_model, 0.8))), &limits)
        .unwrap_err();
    assert_eq!(e.param, "refiner");
    assert!(e.message.contains("another latent space"), "{e}");
    let sd1 = load("tiny-sd1");
    let e = sd1
        .validate(&req(&sd1, Some((&v_model, 0.8))), &limits)
        .unwrap_err();
    assert!(e.message.contains("predicts v_prediction"), "{e}");
    let inpaint = Arc::new(load("tiny-inpaint"));
    let e = base
        .validate(&req(&base, Some((&inpaint, 0.8))), &limits)
        .unwrap_err();
    assert!(e.message.contains("inpainting"), "{e}");
    let e = base
        .validate(&req(&base, Some((&refiner, 1.5))), &limits)
        .unwrap_err();
    assert_eq!(e.param, "refiner_switch_at");
}

/// The tiny autoencoder, chosen per request: it decodes (and encodes an init image) in place of
/// the full VAE; a model without one says how to get it.
#[test]
fn the_tiny_autoencoder_is_chosen_per_request() {
    use nanoimg_engine::synthetic::{tiny_taesd_config, write_taesd};
    use nanoimg_engine::VaeChoice;
    let dir = tempfile::tempdir().unwrap();
    write_taesd(dir.path(), &tiny_taesd_config(), 9).unwrap();
    let tiny = nanoimg_engine::tiny_vae::load(dir.path(), &candle_core::Device::Cpu, DType::F32).unwrap();
    let plain = load("tiny-sd1");
    let mut req = request(&plain, 2);
    req.vae = VaeChoice::Tiny;
    let e = plain.validate(&req, &Limits::default()).unwrap_err();
    assert_eq!(e.param, "vae");
    assert!(e.message.contains("nanoimg models pull madebyollin/taesd"), "{e}");

    let model = plain.with_tiny_vae(tiny).unwrap();
    let full = run(&model, &request(&model, 2))[0].image.clone();
    // The full VAE is still the default, and unchanged by the tiny one's presence.
    assert_eq!(full, run(&plain, &request(&plain, 2))[0].image);
    let quick = run(&model, &req)[0].image.clone();
    assert_eq!(quick.dimensions(), full.dimensions());
    assert!(
        mean_abs_diff(&quick, &full) > 1.0,
        "the tiny autoencoder was not used"
    );
    req.init = Some(InitImage {
        image: test_image(64, 64),
        strength: 0.5,
        mask: None,
    });
    assert_eq!(run(&model, &req)[0].image.dimensions(), (64, 64));

    // A tiny autoencoder of another latent shape is refused when it is attached.
    let other = tempfile::tempdir().unwrap();
    let mut cfg = tiny_taesd_config();
    cfg["latent_channels"] = serde_json::json!(16);
    write_taesd(other.path(), &cfg, 9).unwrap();
    let wrong = nanoimg_engine::tiny_vae::load(other.path(), &candle_core::Device::Cpu, DType::F32).unwrap();
    let e = plain.with_tiny_vae(wrong).unwrap_err().to_string();
    assert!(e.contains("16 latent channels"), "{e}");
}

/// TAESD's original pair of files (ComfyUI's `vae_approx`: no prefix, the decoder counted from
/// its clamp) loads given either file and decodes as its diffusers folder does; one without its
/// pair, or a pickle, is refused with the reason.
#[test]
fn taesds_original_files_load_as_its_folder_does() {
    use candle_core::{Device, Tensor};
    use nanoimg_engine::synthetic::{taesd_config, write_taesd};
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("taesd");
    write_taesd(&folder, &taesd_config(), 5).unwrap();
    let all =
        candle_core::safetensors::load(folder.join("diffusion_pytorch_model.safetensors"), &Device::Cpu)
            .unwrap();
    for (part, offset) in [("encoder", 0), ("decoder", 1)] {
        let original: std::collections::HashMap<String, Tensor> = all
            .iter()
            .filter_map(|(k, t)| {
                let rest = k.strip_prefix(&format!("{part}.layers."))?;
                let (i, leaf) = rest.split_once('.')?;
                Some((format!("{}.{leaf}", i.parse::<usize>().ok()? + offset), t.clone()))
            })
            .collect();
        candle_core::safetensors::save(&original, dir.path().join(format!("taesd_{part}.safetensors")))
            .unwrap();
    }
    let load = |p: &std::path::Path| nanoimg_engine::tiny_vae::load(p, &Device::Cpu, DType::F32);
    let z = Tensor::randn(0f32, 1.0, (1, 4, 8, 8), &Device::Cpu).unwrap();
    let expected = load(&folder).unwrap().decode(&z).unwrap();
    for file in ["taesd_decoder.safetensors", "taesd_encoder.safetensors"] {
        let decoded = load(&dir.path().join(file)).unwrap().decode(&z).unwrap();
        assert_eq!(
            nanoimg_engine::models::max_abs_diff(&decoded, &expected).unwrap(),
            0.0,
            "{file}"
        );
    }
    std::fs::remove_file(dir.path().join("taesd_encoder.safetensors")).unwrap();
    let e = load(&dir.path().join("taesd_decoder.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("come as a pair"), "{e}");
    std::fs::write(dir.path().join("taesd_decoder.pth"), b"PK\x03\x04").unwrap();
    let e = load(&dir.path().join("taesd_decoder.pth"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("pickle"), "{e}");
}

#[test]
fn every_scheduler_runs_and_they_differ() {
    let model = load("tiny-sd1");
    let mut images = Vec::new();
    for s in SchedulerName::ALL {
        let mut req = request(&model, 3);
        req.scheduler = s;
        images.push((s, run(&model, &req).remove(0).image));
    }
    for i in 0..images.len() {
        for j in i + 1..images.len() {
            let d = mean_abs_diff(&images[i].1, &images[j].1);
            // Euler and DDIM differ only in their σ grid; all pairs must differ somewhat.
            assert!(
                d > 0.0,
                "{} and {} gave identical images",
                images[i].0,
                images[j].0
            );
        }
    }
}

#[test]
fn same_seed_gives_identical_pixels_and_image_i_uses_seed_plus_i() {
    let model = load("tiny-sd1");
    let mut req = request(&model, 2);
    req.scheduler = SchedulerName::EulerAncestral; // also exercises per-step noise
    req.n = 2;
    let a = run(&model, &req);
    let b = run(&model, &req);
    assert_eq!(a[0].image.as_raw(), b[0].image.as_raw());
    assert_eq!(a[1].image.as_raw(), b[1].image.as_raw());
    assert_eq!((a[0].seed, a[1].seed), (42, 43));
    assert_ne!(a[0].image.as_raw(), a[1].image.as_raw());
    req.n = 1;
    req.seed = 43;
    let c = run(&model, &req);
    assert_eq!(c[0].image.as_raw(), a[1].image.as_raw());
}

#[test]
fn negative_prompt_matters_only_with_guidance() {
    let model = load("tiny-sd1");
    let mut req = request(&model, 2);
    let a = run(&model, &req).remove(0).image;
    req.negative_prompt = "a dog".into();
    let b = run(&model, &req).remove(0).image;
    assert!(mean_abs_diff(&a, &b) > 0.0);
    req.guidance = 1.0;
    let c = run(&model, &req).remove(0).image;
    req.negative_prompt = "blurry".into();
    let d = run(&model, &req).remove(0).image;
    assert_eq!(c.as_raw(), d.as_raw());
}

#[test]
fn img2img_strength_controls_how_far_the_image_moves() {
    use nanoimg_engine::pipeline::{image_to_tensor, tensor_to_image};
    let model = load("tiny-sd1");
    let init = test_image(64, 64);
    // What img2img converges to as strength → 0: the VAE's reconstruction of the init image.
    let x = image_to_tensor(&init, model.device(), DType::F32).unwrap();
    let roundtrip = tensor_to_image(
        &model
            .vae()
            .unwrap()
            .decode(&model.vae().unwrap().encode(&x).unwrap())
            .unwrap(),
    )
    .unwrap();
    let steps_seen = Mutex::new(0usize);
    let count = |p: &Progress<'_>| {
        *steps_seen.lock().unwrap() = p.steps;
    };
    let mut diffs = Vec::new();
    for strength in [0.2, 1.0] {
        let mut req = request(&model, 10);
        req.init = Some(InitImage {
            image: init.clone(),
            strength,
            mask: None,
        });
        let out = model
            .generate(&req, &Limits::default(), &count, &CancelToken::new())
            .unwrap();
        diffs.push(mean_abs_diff(&out[0].image, &roundtrip));
        assert_eq!(*steps_seen.lock().unwrap(), (10.0 * strength) as usize);
    }
    assert!(
        diffs[0] < diffs[1],
        "strength 0.2 moved {} but 1.0 moved {}",
        diffs[0],
        diffs[1]
    );
}

#[test]
fn img2img_resizes_an_init_image_of_another_size() {
    let model = load("tiny-sd1");
    let mut req = request(&model, 2);
    req.init = Some(InitImage {
        image: test_image(100, 60),
        strength: 0.5,
        mask: None,
    });
    assert_eq!(run(&model, &req)[0].image.dimensions(), (64, 64));
}

fn left_half_mask(w: u32, h: u32) -> GrayImage {
    GrayImage::from_fn(w, h, |x, _| Luma([if x < w / 2 { 255 } else { 0 }]))
}

#[test]
fn inpainting_keeps_unmasked_pixels_exactly_for_any_model() {
    for name in ["tiny-sd1", "tiny-inpaint"] {
        let model = load(name);
        let init = test_image(64, 64);
        let mut req = request(&model, 3);
        req.init = Some(InitImage {
            image: init.clone(),
            strength: 1.0,
            mask: Some(left_half_mask(64, 64)),
        });
        let out = run(&model, &req).remove(0).image;
        let mut changed = 0;
        for (x, y, p) in out.enumerate_pixels() {
            if x >= 32 {
                assert_eq!(
                    p,
                    init.get_pixel(x, y),
                    "{name}: unmasked pixel ({x},{y}) changed"
                );
            } else if p != init.get_pixel(x, y) {
                changed += 1;
            }
        }
        assert!(
            changed > 32 * 64 / 2,
            "{name}: only {changed} masked pixels changed"
        );
    }
}

#[test]
fn native_inpainting_model_refuses_txt2img() {
    let model = load("tiny-inpaint");
    let req = request(&model, 2);
    let err = model
        .generate(&req, &Limits::default(), &NoProgress, &CancelToken::new())
        .unwrap_err();
    assert!(
        matches!(err, EngineError::InvalidParam(ref p) if p.param == "image"),
        "{err}"
    );
}

#[test]
fn outpainting_extends_the_canvas_and_keeps_the_original() {
    let model = load("tiny-sd1");
    let original = test_image(48, 64);
    let (canvas, mask) = outpaint_canvas(&original, 8, 0, 8, 0);
    assert_eq!(canvas.dimensions(), (64, 64));
    let mut req = request(&model, 2);
    req.size = ImageSize::new(64, 64);
    req.init = Some(InitImage {
        image: canvas,
        strength: 1.0,
        mask: Some(mask),
    });
    let out = run(&model, &req).remove(0).image;
    for y in 0..64 {
        for x in 0..48 {
            assert_eq!(out.get_pixel(x + 8, y), original.get_pixel(x, y));
        }
    }
}

#[test]
fn progress_reports_every_step_with_the_previews_asked_for() {
    use nanoimg_engine::synthetic::{tiny_taesd_config, write_taesd};
    use nanoimg_engine::{PreviewMethod, VaeChoice};
    /// (image, step, steps, preview) per report.
    type Report = (usize, usize, usize, Option<image::RgbImage>);
    /// Asks for a latent preview at step 1, a tiny-autoencoder one at the last, none between.
    struct Sink(Mutex<Vec<Report>>);
    impl nanoimg_engine::ProgressSink for Sink {
        fn on_step(&self, p: &Progress<'_>) {
            self.0
                .lock()
                .unwrap()
                .push((p.image, p.step, p.steps, p.preview.cloned()));
        }
        fn preview_at(&self, _image: usize, step: usize, steps: usize) -> Option<PreviewMethod> {
            match step {
                1 => Some(PreviewMethod::Latent),
                s if s == steps => Some(PreviewMethod::Tiny),
                _ => None,
            }
        }
    }
    let sizes = |seen: &[Report]| -> Vec<_> {
        seen.iter()
            .map(|(i, s, n, p)| (*i, *s, *n, p.as_ref().map(|p| p.dimensions())))
            .collect()
    };
    let plain = load("tiny-sd1");
    let mut req = request(&plain, 3);
    req.n = 2;
    req.scheduler = SchedulerName::Euler;
    // Without a tiny autoencoder, a tiny preview is the latent one: an eighth of the image.
    let sink = Sink(Mutex::new(Vec::new()));
    plain
        .generate(&req, &Limits::default(), &sink, &CancelToken::new())
        .unwrap();
    let expected: Vec<_> = (0..2)
        .flat_map(|i| [(i, 1, 3, Some((8, 8))), (i, 2, 3, None), (i, 3, 3, Some((8, 8)))])
        .collect();
    assert_eq!(sizes(&sink.0.into_inner().unwrap()), expected);

    // With one, the tiny preview is the denoised estimate decoded at the image's size. At the
    // last Euler step that estimate is the result, so the preview is the image `vae: tiny`
    // gives (to a rounding of the last step's arithmetic).
    let dir = tempfile::tempdir().unwrap();
    write_taesd(dir.path(), &tiny_taesd_config(), 9).unwrap();
    let tiny = nanoimg_engine::tiny_vae::load(dir.path(), &candle_core::Device::Cpu, DType::F32).unwrap();
    let model = plain.with_tiny_vae(tiny).unwrap();
    req.vae = VaeChoice::Tiny;
    let sink = Sink(Mutex::new(Vec::new()));
    let out = model
        .generate(&req, &Limits::default(), &sink, &CancelToken::new())
        .unwrap();
    let seen = sink.0.into_inner().unwrap();
    let expected: Vec<_> = (0..2)
        .flat_map(|i| {
            [
                (i, 1, 3, Some((8, 8))),
                (i, 2, 3, None),
                (i, 3, 3, Some((64, 64))),
            ]
        })
        .collect();
    assert_eq!(sizes(&seen), expected);
    for (i, g) in out.iter().enumerate() {
        let last = seen[i * 3 + 2].3.as_ref().unwrap();
        let worst = last
            .pixels()
            .zip(g.image.pixels())
            .flat_map(|(a, b)| (0..3).map(move |c| a.0[c].abs_diff(b.0[c])))
            .max()
            .unwrap();
        assert!(worst <= 1, "image {i}: the last preview differs by {worst}");
    }
    // Previews never change the images.
    assert_eq!(out[0].image, run(&model, &req)[0].image);
}

#[test]
fn cancel_stops_at_the_next_step() {
    let model = load("tiny-sd1");
    let req = request(&model, 10);
    let cancel = CancelToken::new();
    let steps = Mutex::new(0);
    let sink = |_: &Progress<'_>| {
        *steps.lock().unwrap() += 1;
        cancel.cancel();
    };
    let err = model
        .generate(&req, &Limits::default(), &sink, &cancel)
        .unwrap_err();
    assert!(matches!(err, EngineError::Cancelled));
    assert_eq!(*steps.lock().unwrap(), 1);
}

#[test]
fn caps_reject_oversized_and_malformed_requests_with_the_parameter_name() {
    let model = load("tiny-sd1");
    let limits = Limits::default();
    let check = |f: &dyn Fn(&mut GenerateRequest), param: &str| {
        let mut req = request(&model, 2);
        f(&mut req);
        match model.generate(&req, &limits, &NoProgress, &CancelToken::new()) {
            Err(EngineError::InvalidParam(p)) => assert_eq!(p.param, param, "{p}"),
            other => panic!("expected invalid {param}, got {other:?}"),
        }
    };
    check(&|r| r.size = ImageSize::new(4096, 4096), "size");
    check(&|r| r.size = ImageSize::new(60, 64), "size");
    check(&|r| r.steps = 0, "steps");
    check(&|r| r.steps = 1000, "steps");
    check(&|r| r.n = 100, "n");
    check(&|r| r.guidance = f64::INFINITY, "guidance");
    check(&|r| r.prompt = "x".repeat(10_000), "prompt");
    check(
        &|r| {
            r.init = Some(InitImage {
                image: test_image(64, 64),
                strength: 0.05,
                mask: None,
            })
        },
        "strength",
    );
    check(
        &|r| {
            r.init = Some(InitImage {
                image: test_image(64, 64),
                strength: 0.5,
                mask: Some(GrayImage::new(32, 32)),
            })
        },
        "mask",
    );
}

#[test]
fn f16_runs_and_stays_close_to_f32() {
    let f32_model = load("tiny-sd1");
    let reference = run(&f32_model, &request(&f32_model, 2)).remove(0).image;
    let model = load_as("tiny-sd1", DType::F16);
    assert_eq!(model.dtype(), DType::F16);
    let out = run(&model, &request(&model, 2)).remove(0).image;
    let d = mean_abs_diff(&out, &reference);
    assert!(d < 4.0, "f16 differs from f32 by {d} levels on average");
}

#[test]
fn bf16_on_cpu_is_refused_at_load_with_a_reason() {
    let err = nanoimg_engine::StableDiffusion::load(
        &common::path("tiny-sd1"),
        &nanoimg_engine::LoadOptions {
            dtype: DType::BF16,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("bf16 needs a CUDA or Metal GPU"),
        "{err}"
    );
}

#[test]
fn long_prompts_are_truncated_and_reported() {
    let model = load("tiny-sd1");
    let long = "a cat ".repeat(100);
    assert!(model.encode_text(&long, false).unwrap().truncated);
    assert!(!model.encode_text("a cat", false).unwrap().truncated);
}

#[test]
fn sdxl_vae_with_force_upcast_stays_f32_when_the_model_runs_in_f16() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = nanoimg_engine::synthetic::SyntheticSpec::tiny(nanoimg_engine::Family::Sdxl);
    spec.vae["force_upcast"] = serde_json::json!(true);
    spec.vae["scaling_factor"] = serde_json::json!(0.13025);
    nanoimg_engine::synthetic::write_model(dir.path(), &spec, 21).unwrap();
    let model = nanoimg_engine::StableDiffusion::load(
        dir.path(),
        &nanoimg_engine::LoadOptions {
            dtype: DType::F16,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(model.dtype(), DType::F16);
    let z = nanoimg_engine::pipeline::SeededNoise::new(1)
        .sample(&[1, 4, 8, 8], model.device(), DType::F32)
        .unwrap();
    assert_eq!(model.vae().unwrap().decode(&z).unwrap().dtype(), DType::F32);
    let out = run(&model, &request(&model, 2)).remove(0).image;
    assert_eq!(out.dimensions(), (64, 64));
}

#[test]
fn a_model_with_a_largest_size_draws_within_it_and_answers_the_size_asked() {
    // The tiny SD1 model, told in nanoimg.json that it draws at most 64×64.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capped");
    nanoimg_engine::synthetic::write_model(
        &path,
        &nanoimg_engine::synthetic::SyntheticSpec::tiny(nanoimg_engine::Family::Sd1),
        1,
    )
    .unwrap();
    std::fs::write(path.join("nanoimg.json"), r#"{"max_size": "64x64"}"#).unwrap();
    let model = nanoimg_engine::StableDiffusion::load(&path, &Default::default()).unwrap();
    assert_eq!(model.info().max_size, Some(ImageSize::new(64, 64)));
    assert_eq!(
        model.info().drawn_size(ImageSize::new(128, 96)),
        ImageSize::new(64, 48)
    );
    assert_eq!(
        model.info().drawn_size(ImageSize::new(32, 64)),
        ImageSize::new(32, 64)
    );
    let capped = model.info().capped(&Limits::default());
    assert_eq!((capped.max_side, capped.max_pixels), (64, 64 * 64));

    // What is drawn is 64×48 (the previews are its latents, an eighth of it); what comes back is
    // the size asked.
    struct Sizes(Mutex<Vec<(u32, u32)>>);
    impl nanoimg_engine::ProgressSink for Sizes {
        fn on_step(&self, p: &Progress<'_>) {
            self.0.lock().unwrap().extend(p.preview.map(|i| i.dimensions()));
        }
        fn preview_at(&self, _: usize, _: usize, _: usize) -> Option<nanoimg_engine::PreviewMethod> {
            Some(nanoimg_engine::PreviewMethod::Latent)
        }
    }
    let mut req = request(&model, 2);
    req.size = ImageSize::new(128, 96);
    let sizes = Sizes(Mutex::new(Vec::new()));
    let out = model
        .generate(&req, &Limits::default(), &sizes, &CancelToken::new())
        .unwrap();
    assert_eq!(out[0].image.dimensions(), (128, 96));
    assert_eq!(sizes.0.into_inner().unwrap(), vec![(8, 6), (8, 6)]);

    // Inpainting keeps every unmasked pixel of the picture as it was, at the size asked.
    let original = test_image(128, 96);
    let mut mask = GrayImage::new(128, 96);
    for y in 0..48 {
        for x in 0..64 {
            mask.put_pixel(x, y, Luma([255]));
        }
    }
    req.init = Some(InitImage {
        image: original.clone(),
        strength: 1.0,
        mask: Some(mask),
    });
    let out = run(&model, &req);
    let img = &out[0].image;
    assert_eq!(img.dimensions(), (128, 96));
    for (x, y, p) in img.enumerate_pixels() {
        if x >= 64 || y >= 48 {
            assert_eq!(p, original.get_pixel(x, y), "({x}, {y}) changed");
        }
    }
    assert!(mean_abs_diff(img, &original) > 0.5, "nothing was painted");
}
