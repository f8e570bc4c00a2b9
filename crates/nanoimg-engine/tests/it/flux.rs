//! FLUX.1 models (schnell, dev, Kontext) from a diffusers folder through the real loader: parity
//! with diffusers' FluxPipeline / FluxKontextPipeline on tiny random weights, then what a user
//! of `generate` sees (seeds, `n`, img2img, masks, Kontext editing and references, progress,
//! cancel) and the errors a broken or misused model gives.

use crate::common::{mean_abs_diff, test_image};
use candle_core::{Device, Tensor};
use nanoimg_core::{ImageSize, Limits, SchedulerName};
use nanoimg_engine::reference::{Reference, ReferenceSettings};
use nanoimg_engine::synthetic::{write_flux_model, FluxSpec};
use nanoimg_engine::{
    CancelToken, Family, GenerateRequest, GeneratedImage, InitImage, LoadOptions, NoProgress, Progress,
    ProgressSink, StableDiffusion, VaeChoice,
};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const PROMPT: &str = "a cat and a dog, 2 friends!";

fn fixture(name: &str) -> std::collections::HashMap<String, Tensor> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("parity-{name}.safetensors"));
    candle_core::safetensors::load(&p, &Device::Cpu).unwrap()
}

/// Largest difference relative to the reference's largest magnitude (at least 1).
fn check(what: &str, ours: &Tensor, theirs: &Tensor) {
    assert_eq!(ours.dims(), theirs.dims(), "{what}: shapes");
    let scale = nanoimg_engine::models::max_abs_diff(theirs, &theirs.zeros_like().unwrap())
        .unwrap()
        .max(1.0);
    let d = nanoimg_engine::models::max_abs_diff(ours, theirs).unwrap() / scale;
    if std::env::var_os("NANOIMG_PARITY_REPORT").is_some() {
        eprintln!("{what}: {d:.2e}");
    }
    assert!(d < 2e-4, "{what}: max difference {d} (relative to max |value|)");
}

/// A tiny FLUX model written into `<tmp>/<name>` (the fixtures' seed, 7).
fn written(name: &str, dev: bool, kontext: bool) -> (tempfile::TempDir, StableDiffusion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    write_flux_model(&path, &FluxSpec::tiny(dev, kontext), 7).unwrap();
    let model = StableDiffusion::load(&path, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    (dir, model)
}

/// The prompt's embeddings, two steps from the fixture's latents and the decoding, against
/// diffusers' pipeline (with the fixture's picture as the image Kontext edits).
fn pipeline_parity(name: &str, dev: bool, kontext: bool) {
    let f = fixture(name);
    let (_dir, model) = written(name, dev, kontext);
    let text = model.encode_flux_text(PROMPT).unwrap();
    check(&format!("{name}: T5 hidden states"), &text.t5, &f["t5"]);
    check(&format!("{name}: CLIP pooled"), &text.pooled, &f["pooled"]);
    let references = match kontext {
        true => vec![model.vae().unwrap().encode(&f["image"]).unwrap()],
        false => Vec::new(),
    };
    let plan = model.flux_plan(2, ImageSize::new(64, 64)).unwrap();
    let run = model.flux_sampling(&text, (8, 8), 3.5, &references).unwrap();
    let mut x = f["latents"].clone();
    for step in 0..2 {
        let v = model.flux_velocity(&run, &x, plan.sigmas[step]).unwrap();
        x = plan.step(step, &x, &v).unwrap();
    }
    check(&format!("{name}: latents after two steps"), &x, &f["out_latents"]);
    let decoded = model.decode_latents(&f["out_latents"], VaeChoice::Full).unwrap();
    check(&format!("{name}: decoded"), &decoded, &f["decoded"]);
}

#[test]
fn flux_dev_pipeline_matches_diffusers() {
    pipeline_parity("tiny-flux", true, false);
}

#[test]
fn flux_schnell_pipeline_matches_diffusers() {
    pipeline_parity("tiny-flux-schnell", false, false);
}

#[test]
fn flux_kontext_pipeline_matches_diffusers() {
    pipeline_parity("tiny-kontext", true, true);
}

fn draw(model: &StableDiffusion, req: &GenerateRequest) -> Vec<GeneratedImage> {
    model
        .generate(req, &Limits::default(), &NoProgress, &CancelToken::new())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn refused(model: &StableDiffusion, req: &GenerateRequest) -> String {
    model
        .generate(req, &Limits::default(), &NoProgress, &CancelToken::new())
        .unwrap_err()
        .to_string()
}

#[test]
fn the_registry_tells_schnell_dev_and_kontext_from_their_files() {
    let (_a, dev) = written("flux-dev", true, false);
    let (_b, schnell) = written("flux-schnell", false, false);
    let (_c, kontext) = written("kontext", true, true);
    for m in [&dev, &schnell, &kontext] {
        let i = m.info();
        assert_eq!(i.family, Family::Flux);
        assert_eq!(i.defaults.scheduler, SchedulerName::Euler);
        assert_eq!(i.defaults.size, ImageSize::new(64, 64), "nanoimg.json's size");
        assert!(m.unet().is_none());
    }
    let d = |m: &StableDiffusion| (m.info().defaults.steps, m.info().defaults.guidance);
    assert_eq!(d(&schnell), (4, 0.0));
    assert_eq!(d(&dev), (28, 3.5));
    assert_eq!(d(&kontext), (28, 2.5));
    assert!(schnell.info().turbo && !schnell.info().embedded_guidance);
    assert!(dev.info().embedded_guidance && !dev.info().kontext);
    assert!(kontext.info().kontext);
}

#[test]
fn txt2img_is_seeded_per_image_and_reports_every_step() {
    let (_dir, model) = written("flux-schnell", false, false);
    let req = GenerateRequest {
        seed: 5,
        n: 2,
        ..GenerateRequest::new(&model, "a cat")
    };
    struct Count(AtomicUsize);
    impl ProgressSink for Count {
        fn on_step(&self, p: &Progress) {
            assert!(p.step <= p.steps && p.steps == 4 && p.images == 2);
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    let count = Count(AtomicUsize::new(0));
    let two = model
        .generate(&req, &Limits::default(), &count, &CancelToken::new())
        .unwrap();
    assert_eq!(count.0.load(Ordering::Relaxed), 8, "4 steps × 2 images");
    assert_eq!((two[0].seed, two[1].seed), (5, 6));
    assert_eq!(two[0].image.dimensions(), (64, 64));
    assert_ne!(two[0].image, two[1].image);
    // Image i of a request is the image of seed + i alone.
    let alone = draw(
        &model,
        &GenerateRequest {
            seed: 6,
            n: 1,
            ..req.clone()
        },
    );
    assert_eq!(alone[0].image, two[1].image);
    // The prompt reaches the picture.
    let other = draw(
        &model,
        &GenerateRequest {
            prompt: "a dog".into(),
            n: 1,
            ..req.clone()
        },
    );
    assert_ne!(other[0].image, two[0].image);
}

#[test]
fn dev_guidance_changes_the_picture_and_schnell_ignores_it() {
    let (_a, dev) = written("flux-dev", true, false);
    let (_b, schnell) = written("flux-schnell", false, false);
    for (model, changes) in [(&dev, true), (&schnell, false)] {
        let at = |g: f64| {
            draw(
                model,
                &GenerateRequest {
                    guidance: g,
                    steps: 3,
                    ..GenerateRequest::new(model, "a cat")
                },
            )
            .remove(0)
            .image
        };
        assert_eq!(at(1.5) != at(6.0), changes, "{}", model.info().name);
    }
}

#[test]
fn img2img_keeps_the_picture_at_low_strength_and_a_mask_keeps_its_outside() {
    let (_dir, model) = written("flux-schnell", false, false);
    let picture = test_image(64, 64);
    let at = |strength: f64, mask: Option<image::GrayImage>| {
        draw(
            &model,
            &GenerateRequest {
                init: Some(InitImage {
                    image: picture.clone(),
                    strength,
                    mask,
                }),
                steps: 4,
                ..GenerateRequest::new(&model, "a cat")
            },
        )
        .remove(0)
        .image
    };
    // Two seeds differ less when most of the picture comes from the image: one step from σ 0.25
    // against four from pure noise.
    let seeds = |strength: f64| {
        let run = |seed| {
            draw(
                &model,
                &GenerateRequest {
                    init: Some(InitImage {
                        image: picture.clone(),
                        strength,
                        mask: None,
                    }),
                    steps: 4,
                    seed,
                    ..GenerateRequest::new(&model, "a cat")
                },
            )
            .remove(0)
            .image
        };
        mean_abs_diff(&run(1), &run(2))
    };
    let (low, full) = (seeds(0.25), seeds(1.0));
    assert!(low < full, "seeds differ by {low} at strength 0.25, {full} at 1");
    // At strength 1 the image is noised to σ = 1: pure noise, the txt2img picture.
    let txt2img = draw(
        &model,
        &GenerateRequest {
            steps: 4,
            ..GenerateRequest::new(&model, "a cat")
        },
    );
    assert_eq!(at(1.0, None), txt2img[0].image);
    // A mask over the left half: the right half comes back exactly.
    let mask = image::GrayImage::from_fn(64, 64, |x, _| image::Luma([if x < 32 { 255 } else { 0 }]));
    let masked = at(0.8, Some(mask));
    for (x, y, p) in masked.enumerate_pixels() {
        if x >= 32 {
            assert_eq!(p, picture.get_pixel(x, y));
        }
    }
}

#[test]
fn kontext_reads_the_image_it_edits_and_a_characters_pictures_in_context() {
    let (_dir, model) = written("kontext", true, true);
    let edit = |picture: &image::RgbImage, reference: Option<Arc<Reference>>| {
        draw(
            &model,
            &GenerateRequest {
                init: Some(InitImage {
                    image: picture.clone(),
                    strength: 1.0,
                    mask: None,
                }),
                reference,
                steps: 2,
                seed: 9,
                ..GenerateRequest::new(&model, "make it blue")
            },
        )
        .remove(0)
        .image
    };
    let a = edit(&test_image(64, 64), None);
    let stripes = image::RgbImage::from_fn(64, 64, |x, _| {
        image::Rgb(if (x / 4) % 2 == 0 {
            [230, 40, 40]
        } else {
            [20, 20, 200]
        })
    });
    let b = edit(&stripes, None);
    assert_ne!(a, b, "the image edited is read");
    // Kontext edits from noise: the strength does not apply without a mask.
    assert_eq!(
        a,
        draw(
            &model,
            &GenerateRequest {
                init: Some(InitImage {
                    image: test_image(64, 64),
                    strength: 0.3,
                    mask: None,
                }),
                steps: 2,
                seed: 9,
                ..GenerateRequest::new(&model, "make it blue")
            },
        )
        .remove(0)
        .image
    );
    // A character's pictures (of another size and aspect) join the context.
    let character = Arc::new(Reference {
        key: "char".into(),
        images: vec![test_image(96, 48), stripes.clone()],
        prompt: "a red cat".into(),
        seed: 1,
        settings: ReferenceSettings::default(),
        cache: None,
    });
    let c = edit(&test_image(64, 64), Some(character.clone()));
    assert_ne!(a, c, "the references are read");
    // And with no image to edit, the references alone.
    let d = draw(
        &model,
        &GenerateRequest {
            reference: Some(character),
            steps: 2,
            ..GenerateRequest::new(&model, "the character on a beach")
        },
    );
    assert_eq!(d[0].image.dimensions(), (64, 64));
}

#[test]
fn a_cancelled_run_stops_at_the_next_step() {
    let (_dir, model) = written("flux-schnell", false, false);
    let cancel = CancelToken::new();
    struct CancelAfterOne<'a>(&'a CancelToken, AtomicUsize);
    impl ProgressSink for CancelAfterOne<'_> {
        fn on_step(&self, _: &Progress) {
            self.1.fetch_add(1, Ordering::Relaxed);
            self.0.cancel();
        }
    }
    let sink = CancelAfterOne(&cancel, AtomicUsize::new(0));
    let err = model
        .generate(
            &GenerateRequest::new(&model, "a cat"),
            &Limits::default(),
            &sink,
            &cancel,
        )
        .unwrap_err();
    assert!(matches!(err, nanoimg_engine::EngineError::Cancelled), "{err}");
    assert_eq!(sink.1.load(Ordering::Relaxed), 1);
}

#[test]
fn what_a_flux_model_cannot_do_is_refused_by_name() {
    let (_a, model) = written("flux-dev", true, false);
    let base = GenerateRequest::new(&model, "a cat");
    let cases: Vec<(GenerateRequest, &str)> = vec![
        (
            GenerateRequest {
                negative_prompt: "blurry".into(),
                ..base.clone()
            },
            "negative prompt",
        ),
        (
            GenerateRequest {
                scheduler: SchedulerName::DpmPp2mKarras,
                ..base.clone()
            },
            "flow-matching Euler",
        ),
        (
            GenerateRequest {
                vae: VaeChoice::Tiny,
                ..base.clone()
            },
            "madebyollin/taef1",
        ),
        (
            GenerateRequest {
                reference: Some(Arc::new(Reference {
                    key: "c".into(),
                    images: vec![test_image(64, 64)],
                    prompt: String::new(),
                    seed: 0,
                    settings: ReferenceSettings::default(),
                    cache: None,
                })),
                ..base.clone()
            },
            "Kontext",
        ),
    ];
    for (req, expected) in cases {
        let e = refused(&model, &req);
        assert!(e.contains(expected), "{expected:?} not in {e:?}");
    }
    let e = model
        .with_loras(&[])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("FLUX model") && e.contains("LoRA"), "{e}");
}

#[test]
fn a_model_missing_a_part_says_which_and_where_it_goes() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("flux");
    write_flux_model(&good, &FluxSpec::tiny(true, false), 7).unwrap();
    let broken = |name: &str, edit: &dyn Fn(&Path)| -> String {
        let p = dir.path().join(name);
        crate::common::copy_dir(&good, &p);
        edit(&p);
        StableDiffusion::load(&p, &LoadOptions::default())
            .unwrap_err()
            .to_string()
    };
    let e = broken("no-t5", &|p| {
        std::fs::remove_dir_all(p.join("text_encoder_2")).unwrap()
    });
    assert!(
        e.contains("the T5 encoder (T5-XXL) is missing") && e.contains("text_encoder_2/"),
        "{e}"
    );
    let e = broken("no-t5-tokenizer", &|p| {
        std::fs::remove_file(p.join("tokenizer_2/tokenizer.json")).unwrap()
    });
    assert!(e.contains("tokenizer_2/tokenizer.json"), "{e}");
    let e = broken("no-clip", &|p| {
        std::fs::remove_dir_all(p.join("text_encoder")).unwrap()
    });
    assert!(e.contains("CLIP-L text encoder is missing"), "{e}");
    // A transformer file cut short: named, not a panic.
    let e = broken("truncated", &|p| {
        let f = p.join("transformer/diffusion_pytorch_model.safetensors");
        let bytes = std::fs::read(&f).unwrap();
        std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    });
    assert!(e.contains("transformer"), "{e}");
    // A T5 narrower than the transformer reads.
    let e = broken("narrow-t5", &|p| {
        let cfg = p.join("transformer/config.json");
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
        v["joint_attention_dim"] = serde_json::json!(48);
        std::fs::write(&cfg, v.to_string()).unwrap();
    });
    assert!(e.contains("joint_attention_dim"), "{e}");
    // Another transformer family is named, not misread.
    let e = broken("sd3", &|p| {
        let idx = p.join("model_index.json");
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&idx).unwrap()).unwrap();
        v["_class_name"] = serde_json::json!("StableDiffusion3Pipeline");
        std::fs::write(&idx, v.to_string()).unwrap();
    });
    assert!(
        e.contains("StableDiffusion3Pipeline is not a family NanoImg runs"),
        "{e}"
    );
}

/// A tiny autoencoder for FLUX's 16-channel latents (TAEF1's shape) decodes on request and
/// draws the step previews; one for SD's 4 channels is refused by name.
#[test]
fn a_16_channel_tiny_autoencoder_decodes_and_previews_flux() {
    let (dir, model) = written("flux-schnell", false, false);
    let write = |name: &str, channels: u32| {
        let mut config = nanoimg_engine::synthetic::tiny_taesd_config();
        config["latent_channels"] = serde_json::json!(channels);
        let path = dir.path().join(name);
        nanoimg_engine::synthetic::write_taesd(&path, &config, 3).unwrap();
        nanoimg_engine::tiny_vae::load(&path, &Device::Cpu, candle_core::DType::F32).unwrap()
    };
    let e = model.with_tiny_vae(write("taesd", 4)).unwrap_err().to_string();
    assert!(e.contains("4 latent channels") && e.contains("16"), "{e}");
    let model = model.with_tiny_vae(write("taef1", 16)).unwrap();
    struct Previews(AtomicUsize);
    impl ProgressSink for Previews {
        fn preview_at(&self, _: usize, step: usize, _: usize) -> Option<nanoimg_engine::PreviewMethod> {
            (step == 2).then_some(nanoimg_engine::PreviewMethod::Tiny)
        }
        fn on_step(&self, p: &Progress) {
            if let Some(img) = p.preview {
                assert_eq!(
                    img.dimensions(),
                    (64, 64),
                    "decoded at the size drawn, not latent-sized"
                );
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let previews = Previews(AtomicUsize::new(0));
    let req = GenerateRequest {
        seed: 2,
        ..GenerateRequest::new(&model, "a cat")
    };
    let full = model
        .generate(&req, &Limits::default(), &previews, &CancelToken::new())
        .unwrap();
    assert_eq!(previews.0.load(Ordering::Relaxed), 1);
    let tiny = draw(
        &model,
        &GenerateRequest {
            vae: VaeChoice::Tiny,
            ..req
        },
    );
    assert_ne!(full[0].image, tiny[0].image, "the tiny autoencoder decoded");
}
