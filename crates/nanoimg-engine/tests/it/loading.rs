//! Model folders that are incomplete, mis-shaped or hostile fail with errors naming the problem;
//! the registry lists and resolves models.

use crate::common;

use nanoimg_engine::registry::Listing;
use nanoimg_engine::synthetic::{write_model, SyntheticSpec};
use nanoimg_engine::{Family, LoadOptions, Registry, StableDiffusion};
use std::collections::HashMap;
use std::path::Path;

/// A private copy of the tiny SD1 model to break.
fn broken_copy() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("model");
    common::copy_dir(&common::path("tiny-sd1"), &p);
    (dir, p)
}

fn load_err(p: &Path) -> String {
    StableDiffusion::load(p, &LoadOptions::default())
        .unwrap_err()
        .to_string()
}

#[test]
fn missing_component_folder_is_named() {
    let (_d, p) = broken_copy();
    std::fs::remove_dir_all(p.join("vae")).unwrap();
    let err = load_err(&p);
    assert!(err.contains("vae/"), "{err}");
}

#[test]
fn missing_model_index_says_what_layout_is_expected() {
    let (_d, p) = broken_copy();
    std::fs::remove_file(p.join("model_index.json")).unwrap();
    let err = load_err(&p);
    assert!(
        err.contains("model_index.json") && err.contains("diffusers"),
        "{err}"
    );
}

#[test]
fn pickle_only_weights_are_refused() {
    let (_d, p) = broken_copy();
    let unet = p.join("unet");
    std::fs::rename(
        unet.join("diffusion_pytorch_model.safetensors"),
        unet.join("diffusion_pytorch_model.bin"),
    )
    .unwrap();
    let err = load_err(&p);
    assert!(
        err.contains("no .safetensors") && err.contains("pickles are refused"),
        "{err}"
    );
}

#[test]
fn wrong_tensor_shape_names_the_tensor_and_shapes() {
    let (_d, p) = broken_copy();
    let file = p.join("unet").join("diffusion_pytorch_model.safetensors");
    let mut tensors: HashMap<String, candle_core::Tensor> =
        candle_core::safetensors::load(&file, &candle_core::Device::Cpu).unwrap();
    let name = "down_blocks.0.resnets.0.conv1.weight";
    tensors.insert(
        name.into(),
        candle_core::Tensor::zeros((32, 32, 1, 1), candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap(),
    );
    candle_core::safetensors::save(&tensors, &file).unwrap();
    let err = load_err(&p);
    assert!(err.contains("unet") && err.contains(name), "{err}");
    assert!(
        err.contains("[32, 32, 3, 3]") || err.contains("32, 32, 3, 3"),
        "{err}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let (_d, p) = broken_copy();
    let file = p.join("vae").join("diffusion_pytorch_model.safetensors");
    let mut tensors: HashMap<String, candle_core::Tensor> =
        candle_core::safetensors::load(&file, &candle_core::Device::Cpu).unwrap();
    tensors.remove("decoder.conv_out.weight").unwrap();
    candle_core::safetensors::save(&tensors, &file).unwrap();
    let err = load_err(&p);
    assert!(err.contains("decoder.conv_out.weight"), "{err}");
}

#[test]
fn unsupported_config_field_is_named() {
    let (_d, p) = broken_copy();
    let cfg_path = p.join("unet").join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["class_embed_type"] = serde_json::json!("timestep");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    match StableDiffusion::load(&p, &LoadOptions::default()) {
        Err(nanoimg_engine::EngineError::Unsupported { path, reason }) => {
            assert_eq!(reason.field(), "class_embed_type");
            assert!(path.ends_with("unet"), "{}", path.display());
        }
        other => panic!("{:?}", other.err()),
    }
    let err = load_err(&p);
    assert!(
        err.contains("class_embed_type") && err.contains("timestep"),
        "{err}"
    );
}

#[test]
fn mismatched_text_width_is_explained() {
    let (_d, p) = broken_copy();
    let cfg_path = p.join("unet").join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["cross_attention_dim"] = serde_json::json!(48);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    // The UNet's own weights no longer fit either; whichever is found first must be explicit.
    let err = load_err(&p);
    assert!(
        err.contains("attn2.to_k.weight") || err.contains("cross_attention_dim"),
        "{err}"
    );
}

#[test]
fn malicious_shard_index_cannot_escape_the_folder() {
    let (_d, p) = broken_copy();
    let unet = p.join("unet");
    std::fs::write(
        unet.join("diffusion_pytorch_model.safetensors.index.json"),
        r#"{"weight_map": {"conv_in.weight": "../../../etc/passwd"}}"#,
    )
    .unwrap();
    let err = load_err(&p);
    assert!(err.contains("not a plain file name"), "{err}");
}

#[test]
fn garbage_json_config_is_reported_with_its_path() {
    let (_d, p) = broken_copy();
    std::fs::write(p.join("vae").join("config.json"), "{ not json").unwrap();
    let err = load_err(&p);
    assert!(
        err.contains("vae") && err.contains("config.json") && err.contains("invalid JSON"),
        "{err}"
    );
}

#[test]
fn sharded_and_variant_weights_load() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m");
    write_model(&p, &SyntheticSpec::tiny(Family::Sd1), 9).unwrap();
    // Split the UNet into two shards with an index, as large checkpoints ship.
    let unet = p.join("unet");
    let file = unet.join("diffusion_pytorch_model.safetensors");
    let tensors: HashMap<String, candle_core::Tensor> =
        candle_core::safetensors::load(&file, &candle_core::Device::Cpu).unwrap();
    let (mut a, mut b) = (HashMap::new(), HashMap::new());
    let mut map = serde_json::Map::new();
    for (i, (k, v)) in tensors.into_iter().enumerate() {
        let shard = if i % 2 == 0 {
            "part-1.safetensors"
        } else {
            "part-2.safetensors"
        };
        map.insert(k.clone(), serde_json::json!(shard));
        if i % 2 == 0 {
            a.insert(k, v)
        } else {
            b.insert(k, v)
        };
    }
    std::fs::remove_file(&file).unwrap();
    candle_core::safetensors::save(&a, unet.join("part-1.safetensors")).unwrap();
    candle_core::safetensors::save(&b, unet.join("part-2.safetensors")).unwrap();
    std::fs::write(
        unet.join("diffusion_pytorch_model.safetensors.index.json"),
        serde_json::json!({"weight_map": map}).to_string(),
    )
    .unwrap();
    // And give the VAE only an fp16 variant file.
    let vae = p.join("vae");
    std::fs::rename(
        vae.join("diffusion_pytorch_model.safetensors"),
        vae.join("diffusion_pytorch_model.fp16.safetensors"),
    )
    .unwrap();
    StableDiffusion::load(&p, &LoadOptions::default()).unwrap();
}

#[test]
fn registry_lists_ready_and_broken_models_and_resolves_names() {
    let dir = tempfile::tempdir().unwrap();
    common::copy_dir(&common::path("tiny-sd1"), &dir.path().join("alpha"));
    common::copy_dir(&common::path("tiny-sdxl"), &dir.path().join("beta-turbo"));
    common::copy_dir(&common::path("tiny-sd1"), &dir.path().join("gamma"));
    std::fs::remove_dir_all(dir.path().join("gamma").join("unet")).unwrap();
    std::fs::create_dir(dir.path().join("not-a-model")).unwrap();

    let reg = Registry::new(vec![dir.path().to_owned()]);
    let listing = reg.list();
    assert_eq!(listing.len(), 3);
    match &listing[0] {
        Listing::Ready(i) => {
            assert_eq!(i.name, "alpha");
            assert_eq!(i.defaults.steps, 30);
            assert!(i.size_bytes > 0);
        }
        other => panic!("{other:?}"),
    }
    match &listing[1] {
        Listing::Ready(i) => {
            assert_eq!(i.family, Family::Sdxl);
            assert!(i.turbo, "a folder named *turbo* is a Turbo model");
            assert_eq!((i.defaults.steps, i.defaults.guidance), (1, 0.0));
        }
        other => panic!("{other:?}"),
    }
    match &listing[2] {
        Listing::Broken { path, error } => {
            assert!(path.ends_with("gamma"));
            assert!(error.to_string().contains("unet/"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(reg.resolve("alpha").unwrap(), dir.path().join("alpha"));
    let by_path = dir.path().join("beta-turbo");
    assert_eq!(reg.resolve(by_path.to_str().unwrap()).unwrap(), by_path);
    let err = reg.resolve("nope").unwrap_err().to_string();
    assert!(err.contains("alpha") && err.contains("beta-turbo"), "{err}");
    assert!(reg.resolve("../alpha").is_err());
}

/// A folder saved with diffusers' LCMScheduler (an LCM checkpoint, or one with an LCM-LoRA
/// merged in) samples with LCM in 4 steps without guidance; TCDScheduler likewise with TCD. An
/// LCM-distilled UNet's guidance embedding is refused by name rather than ignored.
#[test]
fn consistency_model_folders_default_to_their_sampler() {
    let (_d, p) = broken_copy();
    let sched_path = p.join("scheduler").join("scheduler_config.json");
    let mut sched: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sched_path).unwrap()).unwrap();
    for (class, name) in [("LCMScheduler", "lcm"), ("TCDScheduler", "tcd")] {
        sched["_class_name"] = serde_json::json!(class);
        sched["original_inference_steps"] = serde_json::json!(50);
        std::fs::write(&sched_path, sched.to_string()).unwrap();
        let info = nanoimg_engine::ModelInfo::inspect(&p).unwrap();
        assert_eq!(info.defaults.scheduler.as_str(), name);
        assert_eq!((info.defaults.steps, info.defaults.guidance), (4, 1.0));
        let model = StableDiffusion::load(&p, &LoadOptions::default()).unwrap();
        let mut req = nanoimg_engine::GenerateRequest::new(&model, "a cat");
        req.steps = 51;
        let e = model
            .validate(&req, &nanoimg_core::Limits::default())
            .unwrap_err();
        assert_eq!(e.param, "steps");
        assert!(e.message.contains("at most 50"), "{e}");
    }
    sched["original_inference_steps"] = serde_json::json!(0);
    std::fs::write(&sched_path, sched.to_string()).unwrap();
    assert!(load_err(&p).contains("original_inference_steps"));

    let (_d, p) = broken_copy();
    let cfg_path = p.join("unet").join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    // An LCM UNet's config without the guidance projection's weights: the missing tensor is
    // named (see distilled.rs for a complete one).
    cfg["time_cond_proj_dim"] = serde_json::json!(256);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let err = load_err(&p);
    assert!(err.contains("time_embedding.cond_proj"), "{err}");
}

#[test]
fn nanoimg_json_overrides_defaults_and_rejects_unknown_keys() {
    let (_d, p) = broken_copy();
    std::fs::write(
        p.join("nanoimg.json"),
        r#"{"steps": 4, "guidance": 0, "scheduler": "euler_a", "size": "64x128"}"#,
    )
    .unwrap();
    let info = nanoimg_engine::ModelInfo::inspect(&p).unwrap();
    assert_eq!(info.defaults.steps, 4);
    assert_eq!(info.defaults.size, nanoimg_core::ImageSize::new(64, 128));
    std::fs::write(p.join("nanoimg.json"), r#"{"stepz": 4}"#).unwrap();
    let err = nanoimg_engine::ModelInfo::inspect(&p).unwrap_err().to_string();
    assert!(err.contains("stepz"), "{err}");
}

#[test]
fn hugging_face_cache_entries_resolve_to_their_main_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let entry = dir.path().join("models--stabilityai--sd-turbo");
    let rev = "0123456789abcdef0123456789abcdef01234567";
    common::copy_dir(&common::path("tiny-sd1"), &entry.join("snapshots").join(rev));
    common::copy_dir(
        &common::path("tiny-sd1"),
        &entry
            .join("snapshots")
            .join("ffff0000ffff0000ffff0000ffff0000ffff0000"),
    );
    std::fs::create_dir_all(entry.join("refs")).unwrap();
    std::fs::write(entry.join("refs").join("main"), format!("{rev}\n")).unwrap();
    let reg = Registry::new(vec![]);
    let resolved = reg.resolve(entry.to_str().unwrap()).unwrap();
    assert_eq!(resolved, entry.join("snapshots").join(rev));
    StableDiffusion::load(&resolved, &LoadOptions::default()).unwrap();
    // The snapshot is named after its repository (not its commit), so *turbo* still reads.
    let info = nanoimg_engine::ModelInfo::inspect(&resolved).unwrap();
    assert_eq!(info.name, "stabilityai/sd-turbo");
    assert!(info.turbo);
    // By hub id, from the cache, offline.
    let reg = reg.with_hub_cache(dir.path().to_owned());
    assert_eq!(reg.resolve("stabilityai/sd-turbo").unwrap(), resolved);
    assert_eq!(
        reg.resolve(&format!("stabilityai/sd-turbo@{rev}")).unwrap(),
        resolved
    );
    let e = reg.resolve("stabilityai/sdxl-turbo").unwrap_err().to_string();
    assert!(e.contains("nanoimg models pull stabilityai/sdxl-turbo"), "{e}");
    // A ref that tries to leave the cache entry is ignored; with two snapshots nothing is guessed.
    std::fs::write(entry.join("refs").join("main"), "../../elsewhere").unwrap();
    assert!(reg.resolve(entry.to_str().unwrap()).is_err());
}

/// An SDXL refiner folder (text_encoder_2 only, `requires_aesthetics_score`, as the hub's
/// refiner repository lays it out) is read as a refiner: its one encoder, its five time ids.
#[test]
fn an_sdxl_refiner_folder_loads_as_a_refiner() {
    let model = common::load("tiny-sdxl-refiner");
    let info = model.info();
    assert_eq!(info.family, nanoimg_engine::Family::SdxlRefiner);
    assert_eq!(
        info.components,
        ["text_encoder_2", "tokenizer_2", "unet", "vae", "scheduler"]
    );
    assert_eq!(
        model.time_ids(nanoimg_engine::Side::Positive, (64, 48)),
        Some(vec![48.0, 64.0, 0.0, 0.0, 6.0])
    );
    // A refiner folder whose index lost the flag is still one: it has no first text encoder.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("refiner");
    common::copy_dir(&common::path("tiny-sdxl-refiner"), &copy);
    let index_path = copy.join("model_index.json");
    let mut index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index_path).unwrap()).unwrap();
    index.as_object_mut().unwrap().remove("requires_aesthetics_score");
    std::fs::write(&index_path, index.to_string()).unwrap();
    assert_eq!(
        nanoimg_engine::ModelInfo::inspect(&copy).unwrap().family,
        nanoimg_engine::Family::SdxlRefiner
    );
}
