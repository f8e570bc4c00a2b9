//! Single-file checkpoints in the original (LDM/SGM) layout, written from the tiny diffusers
//! models by `synthetic::write_checkpoint`, load through the real loader and draw the same
//! pixels as the folders they came from; what is not a checkpoint NanoImg reads is refused
//! with the reason.

use crate::common;
use candle_core::DType;
use nanoimg_core::Limits;
use nanoimg_engine::checkpoint::SourceOptions;
use nanoimg_engine::registry::Listing;
use nanoimg_engine::synthetic::write_checkpoint;
use nanoimg_engine::{
    CancelToken, GenerateRequest, InitImage, LoadOptions, NoProgress, Registry, StableDiffusion,
};
use std::path::{Path, PathBuf};

/// The folder's configs and tokenizers without a single weight: what a checkpoint's companion
/// holds (a hub repository's `model_index.json`, configs and tokenizers).
fn companion(model: &str, to: &Path) -> PathBuf {
    common::copy_tree(&common::path(model), to, &|name| !name.ends_with(".safetensors"));
    to.to_owned()
}

fn with_config(config: &Path) -> LoadOptions {
    LoadOptions {
        source: SourceOptions {
            config: Some(config.to_owned()),
            hub_cache: None,
        },
        ..Default::default()
    }
}

fn load(path: &Path, opts: &LoadOptions) -> StableDiffusion {
    StableDiffusion::load(path, opts).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn load_err(path: &Path, opts: &LoadOptions) -> String {
    StableDiffusion::load(path, opts).unwrap_err().to_string()
}

fn draw(model: &StableDiffusion, init: Option<InitImage>) -> image::RgbImage {
    let req = GenerateRequest {
        steps: 2,
        guidance: 4.0,
        negative_prompt: "blurry".into(),
        seed: 11,
        init,
        ..GenerateRequest::new(model, "a cat on a dog")
    };
    let mut out = model
        .generate(&req, &Limits::default(), &NoProgress, &CancelToken::new())
        .unwrap_or_else(|e| panic!("{e}"));
    out.remove(0).image
}

fn inpaint() -> InitImage {
    InitImage {
        image: common::test_image(64, 64),
        strength: 1.0,
        mask: Some(image::GrayImage::from_fn(64, 64, |x, _| {
            image::Luma([if x < 32 { 255 } else { 0 }])
        })),
    }
}

#[test]
fn single_files_draw_the_same_pixels_as_their_folders() {
    let dir = tempfile::tempdir().unwrap();
    for (model, family) in [
        ("tiny-sd1", "sd1"),
        ("tiny-sd2-v", "sd2"),
        ("tiny-sdxl", "sdxl"),
        ("tiny-sdxl-refiner", "sdxl_refiner"),
    ] {
        let file = dir.path().join(format!("{model}.safetensors"));
        write_checkpoint(&common::path(model), &file, DType::F32).unwrap();
        let config = companion(model, &dir.path().join(format!("{model}-config")));
        let single = load(&file, &with_config(&config));
        assert_eq!(single.info().family.to_string(), family);
        assert_eq!(single.info().name, model);
        let folder = common::load(model);
        assert_eq!(single.info().prediction, folder.info().prediction, "{model}");
        assert_eq!(draw(&single, None), draw(&folder, None), "{model}: txt2img");
        let edit = || {
            Some(InitImage {
                mask: None,
                strength: 0.6,
                ..inpaint()
            })
        };
        assert_eq!(draw(&single, edit()), draw(&folder, edit()), "{model}: img2img");
    }
}

/// An inpainting checkpoint is read with its base model's companion: the UNet's nine input
/// channels come from the file.
#[test]
fn inpainting_checkpoints_take_their_input_channels_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tiny-inpainting.safetensors");
    write_checkpoint(&common::path("tiny-inpaint"), &file, DType::F32).unwrap();
    let base = companion("tiny-sd1", &dir.path().join("sd1-config"));
    let single = load(&file, &with_config(&base));
    assert!(single.info().inpainting);
    let folder = common::load("tiny-inpaint");
    assert_eq!(draw(&single, Some(inpaint())), draw(&folder, Some(inpaint())));
}

#[test]
fn half_precision_files_load_at_any_precision() {
    let dir = tempfile::tempdir().unwrap();
    let config = companion("tiny-sd1", &dir.path().join("config"));
    let reference = draw(&common::load("tiny-sd1"), None);
    for dtype in [DType::F16, DType::BF16] {
        let file = dir.path().join(format!("tiny-{dtype:?}.safetensors"));
        write_checkpoint(&common::path("tiny-sd1"), &file, dtype).unwrap();
        let header = nanoimg_engine::checkpoint::Header::read(&file).unwrap();
        assert!(header.shapes.len() > 100);
        let single = load(&file, &with_config(&config));
        let diff = common::mean_abs_diff(&draw(&single, None), &reference);
        assert!(diff < 3.0, "{dtype:?}: {diff}");
    }
}

/// Without `--config`, the family's reference repository in the hub cache is the companion, as
/// diffusers' `from_single_file` finds it offline; without one the error says what to give.
#[test]
fn the_companion_comes_from_the_hub_cache_or_the_error_says_how() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dreamy-v2.safetensors");
    write_checkpoint(&common::path("tiny-sd1"), &file, DType::F32).unwrap();
    let cache = dir.path().join("hub");
    let from_cache = LoadOptions {
        source: SourceOptions {
            config: None,
            hub_cache: Some(cache.clone()),
        },
        ..Default::default()
    };
    let e = load_err(&file, &from_cache);
    assert!(
        e.contains("--config") && e.contains("stable-diffusion-v1-5/stable-diffusion-v1-5"),
        "{e}"
    );
    assert!(e.contains("dreamy-v2.nanoimg.json"), "{e}");

    let entry = cache.join("models--stable-diffusion-v1-5--stable-diffusion-v1-5");
    let rev = "0123456789abcdef0123456789abcdef01234567";
    companion("tiny-sd1", &entry.join("snapshots").join(rev));
    std::fs::create_dir_all(entry.join("refs")).unwrap();
    std::fs::write(entry.join("refs/main"), rev).unwrap();
    let single = load(&file, &from_cache);
    assert_eq!(draw(&single, None), draw(&common::load("tiny-sd1"), None));

    // The sidecar names a companion relative to the file, and sets defaults as nanoimg.json does.
    let plain = LoadOptions::default();
    companion("tiny-sd1", &dir.path().join("configs/sd1"));
    std::fs::write(
        dir.path().join("dreamy-v2.nanoimg.json"),
        r#"{"config": "configs/sd1", "steps": 7, "description": "dreamy"}"#,
    )
    .unwrap();
    let single = load(&file, &plain);
    assert_eq!(
        (single.info().defaults.steps, single.info().description.as_deref()),
        (7, Some("dreamy"))
    );
}

#[test]
fn what_is_not_a_checkpoint_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = companion("tiny-sd1", &dir.path().join("config"));
    let opts = with_config(&config);

    let ckpt = dir.path().join("model.ckpt");
    std::fs::write(&ckpt, b"PK\x03\x04 a torch zip").unwrap();
    let e = load_err(&ckpt, &opts);
    assert!(e.contains("pickle") && e.contains("safetensors"), "{e}");
    let disguised = dir.path().join("disguised.safetensors");
    std::fs::write(&disguised, b"\x80\x02}q\x00(X\x05\x00\x00\x00").unwrap();
    assert!(load_err(&disguised, &opts).contains("pickle"));
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, [0xffu8; 64]).unwrap();
    assert!(load_err(&garbage, &opts).contains("not a safetensors file"));

    let lora = common::fixtures().root.join("lora-for-checkpoint.safetensors");
    let down = candle_core::Tensor::zeros((2, 32), DType::F32, &candle_core::Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &[(
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight".to_string(),
            down,
        )]
        .into_iter()
        .collect(),
        &lora,
    )
    .unwrap();
    assert!(
        load_err(&lora, &opts).contains("a LoRA, not a model"),
        "{}",
        load_err(&lora, &opts)
    );

    // A lone VAE, in the original layout without a prefix.
    let file = dir.path().join("full.safetensors");
    write_checkpoint(&common::path("tiny-sd1"), &file, DType::F32).unwrap();
    let vae = dir.path().join("just-vae.safetensors");
    strip(&file, "first_stage_model.", &vae);
    assert!(
        load_err(&vae, &opts).contains("use it with --vae"),
        "{}",
        load_err(&vae, &opts)
    );

    // A companion of another family.
    let sdxl = companion("tiny-sdxl", &dir.path().join("sdxl-config"));
    let e = load_err(&file, &with_config(&sdxl));
    assert!(e.contains("does not fit this sd1 checkpoint"), "{e}");

    // SDXL's base and refiner are told apart by their embedders, and neither takes the other's
    // companion.
    let refiner_file = dir.path().join("refiner.safetensors");
    write_checkpoint(&common::path("tiny-sdxl-refiner"), &refiner_file, DType::F32).unwrap();
    let e = load_err(&refiner_file, &with_config(&sdxl));
    assert!(
        e.contains("does not fit this sdxl_refiner checkpoint")
            && e.contains("text_encoder and text_encoder_2"),
        "{e}"
    );
    let refiner = companion("tiny-sdxl-refiner", &dir.path().join("refiner-config"));
    let sdxl_file = dir.path().join("sdxl.safetensors");
    write_checkpoint(&common::path("tiny-sdxl"), &sdxl_file, DType::F32).unwrap();
    let e = load_err(&sdxl_file, &with_config(&refiner));
    assert!(e.contains("does not fit this sdxl checkpoint"), "{e}");
}

/// Writes the tensors of `file` under `prefix`, without it.
fn strip(file: &Path, prefix: &str, out: &Path) {
    let all = candle_core::safetensors::load(file, &candle_core::Device::Cpu).unwrap();
    let kept: std::collections::HashMap<String, candle_core::Tensor> = all
        .into_iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_owned(), v)))
        .collect();
    candle_core::safetensors::save(&kept, out).unwrap();
}

/// `--vae` (and A1111's `<stem>.vae.safetensors` beside the file) replaces the checkpoint's
/// VAE: the result is the folder's with the other model's `vae/` put in.
#[test]
fn a_separate_vae_file_replaces_the_checkpoints_own() {
    let dir = tempfile::tempdir().unwrap();
    let config = companion("tiny-sd1", &dir.path().join("config"));
    let file = dir.path().join("model.safetensors");
    write_checkpoint(&common::path("tiny-sd1"), &file, DType::F32).unwrap();
    // Another model's VAE (same architecture, other weights), as a VAE file in the original layout.
    let other = dir.path().join("other.safetensors");
    write_checkpoint(&common::path("tiny-inpaint"), &other, DType::F32).unwrap();
    let vae_file = dir.path().join("other-vae.safetensors");
    strip(&other, "first_stage_model.", &vae_file);
    // The expected result: the SD1 folder with tiny-inpaint's vae/.
    let swapped = dir.path().join("swapped");
    common::copy_dir(&common::path("tiny-sd1"), &swapped);
    std::fs::remove_dir_all(swapped.join("vae")).unwrap();
    common::copy_dir(&common::path("tiny-inpaint").join("vae"), &swapped.join("vae"));
    let expected = draw(&common::load_path(&swapped), None);

    let opts = LoadOptions {
        vae: Some(vae_file.clone()),
        ..with_config(&config)
    };
    assert_eq!(draw(&load(&file, &opts), None), expected);
    assert_ne!(draw(&load(&file, &with_config(&config)), None), expected);
    // A diffusers-layout VAE file works the same.
    let diffusers_vae = common::path("tiny-inpaint").join("vae/diffusion_pytorch_model.safetensors");
    let opts = LoadOptions {
        vae: Some(diffusers_vae),
        ..with_config(&config)
    };
    assert_eq!(draw(&load(&file, &opts), None), expected);
    // A1111's convention: `<stem>.vae.safetensors` beside the checkpoint.
    std::fs::copy(&vae_file, dir.path().join("model.vae.safetensors")).unwrap();
    assert_eq!(draw(&load(&file, &with_config(&config)), None), expected);
    // Not a VAE.
    let opts = LoadOptions {
        vae: Some(common::path("tiny-sd1").join("unet/diffusion_pytorch_model.safetensors")),
        ..with_config(&config)
    };
    assert!(load_err(&file, &opts).contains("not a VAE"));
}

/// A models directory lists checkpoint files beside folders, and `--model NAME` finds one by
/// its name without `.safetensors`.
#[test]
fn the_registry_lists_and_resolves_checkpoint_files() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    let file = models.join("cartoon-mix.safetensors");
    write_checkpoint(&common::path("tiny-sd1"), &file, DType::F32).unwrap();
    companion("tiny-sd1", &dir.path().join("sd1"));
    std::fs::write(models.join("cartoon-mix.nanoimg.json"), r#"{"config": "../sd1"}"#).unwrap();
    std::fs::write(
        models.join("cartoon-mix.vae.safetensors"),
        b"not listed as a model",
    )
    .unwrap();
    std::fs::write(models.join("old-model.ckpt"), b"PK\x03\x04").unwrap();
    let registry = Registry::new(vec![models.clone()]);
    let listed: Vec<String> = registry
        .list()
        .into_iter()
        .map(|l| match l {
            Listing::Ready(i) => i.name,
            Listing::Broken { path, error } => format!("{}: {error}", path.display()),
        })
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0], "cartoon-mix");
    assert!(
        listed[1].contains("old-model.ckpt") && listed[1].contains("never loads pickles"),
        "{listed:?}"
    );
    assert_eq!(registry.resolve("cartoon-mix").unwrap(), file);
}

/// SD 2.x files do not say whether they predict noise or v; the file's metadata, a `v_pred`
/// marker or A1111's `<stem>.yaml` beside it do, and win over the companion's schedule.
#[test]
fn the_prediction_type_comes_from_what_the_file_says() {
    let dir = tempfile::tempdir().unwrap();
    let config = companion("tiny-sd2-v", &dir.path().join("config"));
    let file = dir.path().join("sd2-model.safetensors");
    write_checkpoint(&common::path("tiny-sd2-v"), &file, DType::F32).unwrap();
    let prediction = || {
        nanoimg_engine::ModelInfo::inspect_with(
            &file,
            &SourceOptions {
                config: Some(config.clone()),
                hub_cache: None,
            },
        )
        .unwrap()
        .prediction
    };
    assert_eq!(prediction(), "v_prediction", "the companion's");
    std::fs::write(
        dir.path().join("sd2-model.yaml"),
        "model:\n  params:\n    linear_start: 0.00085\n",
    )
    .unwrap();
    assert_eq!(
        prediction(),
        "epsilon",
        "an A1111 config without parameterization"
    );
    std::fs::write(
        dir.path().join("sd2-model.yaml"),
        "model:\n  params:\n    parameterization: \"v\"\n",
    )
    .unwrap();
    assert_eq!(prediction(), "v_prediction");
    std::fs::remove_file(dir.path().join("sd2-model.yaml")).unwrap();

    let mut tensors = candle_core::safetensors::load(&file, &candle_core::Device::Cpu).unwrap();
    let metadata_file = dir.path().join("sd2-model.safetensors");
    // safetensors metadata as SAI's model spec writes it.
    let data: Vec<(String, candle_core::Tensor)> = tensors.drain().collect();
    let views: Vec<(&str, &candle_core::Tensor)> = data.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let metadata =
        std::collections::HashMap::from([("modelspec.prediction_type".to_string(), "epsilon".to_string())]);
    safetensors::serialize_to_file(views, Some(metadata), &metadata_file).unwrap();
    assert_eq!(prediction(), "epsilon", "the file's model spec");
}
