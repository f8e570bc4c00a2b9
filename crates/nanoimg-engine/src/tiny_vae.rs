//! The tiny autoencoder as a model option (TAESD, TAESDXL): the per-request choice between it
//! and the model's full VAE, where its folder is found, and loading it.
//!
//! A tiny autoencoder is a separate diffusers `AutoencoderTiny` folder (`config.json` and
//! `diffusion_pytorch_model.safetensors`, as `madebyollin/taesd` on the hub holds it), one per
//! latent space: TAESD for SD 1.x/2.x, TAESDXL for SDXL and its refiner.

use crate::error::{EngineError, Result, TensorContext};
use crate::models::taesd::{AutoencoderTiny, TinyVaeConfig};
use crate::registry::{hf_cache_snapshot, Family, ModelInfo};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use nanoimg_core::InvalidParam;
use nanoimg_hub::{HubCache, HubRef};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Which autoencoder turns a request's latents into pixels (and an init image into latents).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VaeChoice {
    /// The model's own VAE: full detail. The default.
    #[default]
    Full,
    /// The tiny autoencoder: about a tenth of the decoder's work, some loss of fine detail.
    Tiny,
}

impl std::str::FromStr for VaeChoice {
    type Err = InvalidParam;
    fn from_str(s: &str) -> std::result::Result<Self, InvalidParam> {
        match s.to_ascii_lowercase().as_str() {
            "full" => Ok(VaeChoice::Full),
            "tiny" | "taesd" => Ok(VaeChoice::Tiny),
            other => Err(InvalidParam::new(
                "vae",
                format!("unknown autoencoder {other:?}; use full or tiny"),
            )),
        }
    }
}

impl std::fmt::Display for VaeChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VaeChoice::Full => "full",
            VaeChoice::Tiny => "tiny",
        })
    }
}

/// The hub repository of the tiny autoencoder for a family's latent space.
pub fn hub_repo(family: Family) -> &'static str {
    match family {
        Family::Sd1 | Family::Sd2 => "madebyollin/taesd",
        Family::Sdxl | Family::SdxlRefiner => "madebyollin/taesdxl",
        Family::Flux => "madebyollin/taef1",
    }
}

/// TAESD's original files: `nn.Sequential` indices without a prefix, the decoder's one more than
/// diffusers' (its first entry is the clamp, which diffusers does in `forward`). Every published
/// one (TAESD, TAESDXL, TAESD3, TAEF1) has TAESD's blocks; the latent channels are read from the
/// decoder's first convolution.
fn load_original(path: &Path, device: &Device, dtype: DType) -> Result<AutoencoderTiny> {
    // Refuses pickles (`.pth`) with the command that converts one.
    crate::checkpoint::Header::read(path)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bad = |path: &Path, message: String| EngineError::IncompleteModel {
        path: path.to_owned(),
        message,
    };
    let pair = |from: &str, to: &str| path.with_file_name(name.replace(from, to));
    let (encoder, decoder) = if name.contains("_decoder") {
        (pair("_decoder", "_encoder"), path.to_owned())
    } else if name.contains("_encoder") {
        (path.to_owned(), pair("_encoder", "_decoder"))
    } else {
        return Err(bad(
            path,
            "a tiny autoencoder file is one of TAESD's pair, *_encoder.safetensors and *_decoder.safetensors \
             (or give its diffusers folder)"
                .into(),
        ));
    };
    let mut tensors = std::collections::HashMap::new();
    for (file, prefix, skipped) in [(&encoder, "encoder", 0), (&decoder, "decoder", 1)] {
        if !file.is_file() {
            return Err(bad(
                file,
                "missing: TAESD's encoder and decoder files come as a pair".into(),
            ));
        }
        crate::checkpoint::Header::read(file)?;
        let read = candle_core::safetensors::load(file, device).context(|| file.display().to_string())?;
        for (key, t) in read {
            let placed = key
                .split_once('.')
                .and_then(|(i, rest)| Some((i.parse::<usize>().ok()?.checked_sub(skipped)?, rest)))
                .ok_or_else(|| bad(file, format!("{key} is not a tensor of TAESD's {prefix}")))?;
            let t = t.to_dtype(dtype).context(|| key.clone())?;
            tensors.insert(format!("{prefix}.layers.{}.{}", placed.0, placed.1), t);
        }
    }
    let latent_channels = tensors
        .get("decoder.layers.0.weight")
        .and_then(|w| w.dims().get(1).copied())
        .ok_or_else(|| bad(&decoder, "no first convolution (1.weight)".into()))?;
    let config: TinyVaeConfig = serde_json::from_value(
        serde_json::json!({ "latent_channels": latent_channels }),
    )
    .map_err(|source| EngineError::Json {
        path: decoder.clone(),
        source,
    })?;
    AutoencoderTiny::new(VarBuilder::from_tensors(tensors, dtype, device), &config)
        .context(|| format!("{} and {}", encoder.display(), decoder.display()))
}

/// The model folder's own tiny autoencoder component, as the bundled model ships one.
pub const COMPONENT: &str = "vae_tiny";

/// The tiny autoencoder to attach to a model: the model folder's own [`COMPONENT`] (one
/// distilled for that model's VAE), else a folder named as the family's hub repository
/// (`taesd`, `taesdxl`) beside the model, else the hub cache. `None` also when the model's
/// pipeline `vae` is itself a tiny one (SDXS): it loads with the model.
pub fn find(model: &ModelInfo) -> Option<PathBuf> {
    if model.own_tiny_vae {
        return None;
    }
    let name = hub_repo(model.family).rsplit('/').next().unwrap_or_default();
    let folder = |d: PathBuf| Some(d).filter(|d| d.join("config.json").is_file());
    folder(model.path.join(COMPONENT))
        .or_else(|| model.path.parent().and_then(|m| folder(m.join(name))))
        .or_else(|| find_pulled(model.family))
}

/// The tiny autoencoder for `family` in the hub cache the environment names, when it has been
/// pulled.
pub fn find_pulled(family: Family) -> Option<PathBuf> {
    let r: HubRef = hub_repo(family).parse().ok()?;
    HubCache::from_env()?
        .snapshot(&r)
        .filter(|s| s.join("config.json").is_file())
}

/// Loads an `AutoencoderTiny` folder (or a Hugging Face cache entry holding one), or TAESD's
/// original pair of files (`taesd_encoder.safetensors`, `taesd_decoder.safetensors`, as
/// ComfyUI's `vae_approx` folder holds them) given either of the two.
pub fn load(path: &Path, device: &Device, dtype: DType) -> Result<AutoencoderTiny> {
    if path.is_file() {
        return load_original(path, device, dtype);
    }
    let dir = hf_cache_snapshot(path).unwrap_or_else(|| path.to_owned());
    let incomplete = |message: String| EngineError::IncompleteModel {
        path: dir.clone(),
        message,
    };
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|source| EngineError::Io {
        path: config_path.clone(),
        source,
    })?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|source| EngineError::Json {
        path: config_path.clone(),
        source,
    })?;
    match value.get("_class_name").and_then(|c| c.as_str()) {
        None | Some("AutoencoderTiny") => {}
        Some(other) => {
            return Err(incomplete(format!(
                "a {other}, not a tiny autoencoder (AutoencoderTiny)"
            )))
        }
    }
    let config: TinyVaeConfig = serde_json::from_value(value).map_err(|source| EngineError::Json {
        path: config_path,
        source,
    })?;
    config.validate().map_err(|reason| EngineError::Unsupported {
        path: dir.clone(),
        reason,
    })?;
    let weights = [
        "diffusion_pytorch_model.safetensors",
        "diffusion_pytorch_model.fp16.safetensors",
    ]
    .iter()
    .map(|f| dir.join(f))
    .find(|p| p.is_file())
    .ok_or_else(|| incomplete("no diffusion_pytorch_model.safetensors".into()))?;
    // SAFETY: the file is memory-mapped read-only; NanoImg never writes model files it serves.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], dtype, device) }
        .context(|| weights.display().to_string())?;
    AutoencoderTiny::new(vb, &config).context(|| dir.display().to_string())
}
