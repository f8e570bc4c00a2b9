//! Distilled models in their own layouts: an LCM-distilled UNet that takes the guidance scale
//! as an embedding, and SDXS (a pruned UNet, a tiny autoencoder as the pipeline's `vae`).

use crate::common::{load_path, mean_abs_diff, test_image};
use candle_core::{Result, Tensor};
use nanoimg_core::{Limits, SchedulerName};
use nanoimg_engine::models::unet::hooks::{BlockKind, Site, UNetHooks};
use nanoimg_engine::synthetic::{write_model, SyntheticSpec};
use nanoimg_engine::{CancelToken, GenerateRequest, InitImage, NoProgress, StableDiffusion, VaeChoice};
use std::sync::{Arc, Mutex};

/// The model written into a folder named `name` (names carry meaning: `sdxs` is one-step).
fn written(name: &str, spec: &SyntheticSpec) -> (tempfile::TempDir, StableDiffusion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    write_model(&path, spec, 11).unwrap();
    let model = load_path(&path);
    (dir, model)
}

fn draw(model: &StableDiffusion, req: &GenerateRequest) -> image::RgbImage {
    model
        .generate(req, &Limits::default(), &NoProgress, &CancelToken::new())
        .unwrap_or_else(|e| panic!("{e}"))
        .remove(0)
        .image
}

/// The batch size of every block output the UNet computes.
#[derive(Default)]
struct Batches(Mutex<Vec<usize>>);

impl UNetHooks for Batches {
    fn block_output(&self, _site: Site, _kind: BlockKind, x: &Tensor) -> Result<Option<Tensor>> {
        self.0.lock().unwrap().push(x.dim(0)?);
        Ok(None)
    }
}

#[test]
fn an_lcm_unet_takes_the_guidance_as_an_embedding_in_one_pass_per_step() {
    let (_dir, model) = written("lcm", &SyntheticSpec::tiny_lcm());
    let info = model.info();
    assert!(info.embedded_guidance);
    assert_eq!(info.defaults.scheduler, SchedulerName::Lcm);
    assert_eq!((info.defaults.steps, info.defaults.guidance), (4, 8.5));

    let req = GenerateRequest {
        seed: 3,
        negative_prompt: "blurry".into(),
        ..GenerateRequest::new(&model, "a cat")
    };
    let batches = Arc::new(Batches::default());
    let a = draw(
        &model,
        &GenerateRequest {
            hooks: Some(batches.clone()),
            ..req.clone()
        },
    );
    // Guided at 8.5, yet one row per pass: the scale went in as the embedding, not as a
    // second (negative) pass.
    let seen = batches.0.lock().unwrap().clone();
    assert!(!seen.is_empty() && seen.iter().all(|&b| b == 1), "{seen:?}");
    // So the negative prompt changes nothing, and the scale does.
    let no_negative = GenerateRequest {
        negative_prompt: String::new(),
        ..req.clone()
    };
    assert_eq!(a, draw(&model, &no_negative));
    let weaker = GenerateRequest {
        guidance: 2.0,
        ..req.clone()
    };
    assert!(mean_abs_diff(&a, &draw(&model, &weaker)) > 0.0);
}

#[test]
fn sdxs_with_only_its_tiny_autoencoder_draws_and_edits_with_it() {
    let (_dir, model) = written("sdxs-512-0.9", &SyntheticSpec::tiny_sdxs(false));
    assert!(model.vae().is_none());
    assert!(model.tiny_vae().is_some());
    assert_eq!(model.vae_used(VaeChoice::Full), VaeChoice::Tiny);
    let info = model.info();
    assert!(info.turbo);
    assert_eq!((info.defaults.steps, info.defaults.size.width), (1, 64));

    let req = GenerateRequest {
        seed: 5,
        ..GenerateRequest::new(&model, "a cat")
    };
    let full = draw(&model, &req);
    assert_eq!(full.dimensions(), (64, 64));
    let px = full.as_raw();
    assert!(px.iter().any(|&p| p != px[0]), "flat image");
    // Asking for either autoencoder gives the one it has.
    let tiny = GenerateRequest {
        vae: VaeChoice::Tiny,
        ..req.clone()
    };
    assert_eq!(full, draw(&model, &tiny));
    // img2img encodes with the tiny encoder.
    let edit = GenerateRequest {
        steps: 2,
        init: Some(InitImage {
            image: test_image(64, 64),
            strength: 0.5,
            mask: None,
        }),
        ..req
    };
    assert_eq!(draw(&model, &edit).dimensions(), (64, 64));
}

#[test]
fn sdxs_with_vae_large_decodes_full_by_default_and_tiny_on_request() {
    let (_dir, model) = written("sdxs-512-0.9", &SyntheticSpec::tiny_sdxs(true));
    assert!(model.vae().is_some() && model.tiny_vae().is_some());
    assert_eq!(model.vae_used(VaeChoice::Full), VaeChoice::Full);
    // Its own tiny autoencoder is the one used: none is looked for elsewhere.
    assert_eq!(nanoimg_engine::tiny_vae::find(model.info()), None);
    let req = GenerateRequest {
        seed: 5,
        ..GenerateRequest::new(&model, "a cat")
    };
    let full = draw(&model, &req);
    let tiny = draw(
        &model,
        &GenerateRequest {
            vae: VaeChoice::Tiny,
            ..req
        },
    );
    assert!(
        mean_abs_diff(&full, &tiny) > 1.0,
        "both decodes gave the same picture"
    );
}
