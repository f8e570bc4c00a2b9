//! Which models the command line can use: the models directories (`--models-dir`,
//! `$NANOIMG_MODELS`, else `./models`) plus the demo model built into the binary, which is the
//! default and is unpacked into NanoImg's data directory on first use.

use anyhow::{bail, Context, Result};
use nanoimg_engine::checkpoint::SourceOptions;
use nanoimg_engine::library::Library;
use nanoimg_engine::{
    bundled, tiny_vae, EngineError, LoadOptions, Quantization, Registry, StableDiffusion, VaeChoice,
};
use std::path::PathBuf;

/// Which model to run: the flags `generate` and `edit` share.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// Model name (a folder, or a `.safetensors` checkpoint without its extension, in the models
    /// directories), path (a diffusers folder, a single-file checkpoint, a Hugging Face cache
    /// entry), or hub id `org/name[@revision]` found in the hub cache (`nanoimg models pull`).
    /// Default: the bundled nanoimg-emoji.
    #[arg(long, env = "NANOIMG_MODEL")]
    pub model: Option<String>,
    /// Directory of models (colon-separated list). Default: $NANOIMG_MODELS, else ./models.
    #[arg(long)]
    pub models_dir: Option<String>,
    /// For a single-file checkpoint: a diffusers folder of the same family whose configs and
    /// tokenizers it uses (default: `config` in `<checkpoint>.nanoimg.json`, else the family's
    /// reference repository in the Hugging Face cache).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// `tiny` for the tiny autoencoder (TAESD: about a tenth of the decoder's work, some loss
    /// of fine detail), `full` for the model's VAE, or a VAE file to use instead of the model's
    /// own (A1111's VAE files, original or diffusers layout). Default: `vae` in the model's
    /// settings, else `<checkpoint>.vae.safetensors`, else the model's own.
    #[arg(long, value_name = "tiny|full|FILE")]
    pub vae: Option<String>,
    /// The tiny autoencoder for `--vae tiny`: a diffusers `AutoencoderTiny` folder, or one of
    /// TAESD's original pair of files (`taesd_decoder.safetensors`). Default: a
    /// `taesd` (SD 1.x/2.x), `taesdxl` (SDXL) or `taef1` (FLUX) folder beside the
    /// model, else madebyollin/taesd, taesdxl or taef1 in the hub cache.
    #[arg(long, value_name = "DIR")]
    pub tiny_vae: Option<PathBuf>,
    /// `int8`: the UNet's linear layers and convolutions on int8 weights, activations quantized
    /// as they arrive (CPU, f32; a few times faster on CPUs with AVX-512 VNNI, slower on
    /// others; results move by about a percent per layer). `none`: the weights as stored.
    /// Default: `quantize` in the model's settings, else none.
    #[arg(long, value_name = "none|int8")]
    pub quantize: Option<Quantization>,
}

impl ModelArgs {
    /// The chosen model's folder or file.
    pub fn path(&self) -> Result<PathBuf> {
        pick_model(&registry(self.models_dir.as_deref()), self.model.as_deref())
    }

    /// How to load it on `device` at `dtype`.
    pub fn load_options(&self, device: candle_core::Device, dtype: candle_core::DType) -> LoadOptions {
        LoadOptions {
            device,
            dtype,
            source: SourceOptions {
                config: self.config.clone(),
                hub_cache: None,
            },
            vae: self.vae_file(),
            quantize: self.quantize,
        }
    }

    /// After a load: gives what it freed back to the OS (an int8 UNet's f32 weights) and warns
    /// when the UNet runs on int8 weights without the fast tile (slower than f32 there).
    pub fn loaded(model: &StableDiffusion) {
        crate::allocator::release_freed();
        if model.int8_is_slow() {
            eprintln!(
                "warning: this CPU has no AVX-512 VNNI, so int8 weights run slower than f32 here \
                 (--quantize none)"
            );
        }
    }

    /// Which autoencoder `--vae` asks for (a file is a full VAE).
    pub fn vae_choice(&self) -> VaeChoice {
        self.vae
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or_default()
    }

    /// The VAE file `--vae` names, if it names one.
    fn vae_file(&self) -> Option<PathBuf> {
        self.vae
            .as_deref()
            .filter(|v| v.parse::<VaeChoice>().is_err())
            .map(PathBuf::from)
    }

    /// `model` with the tiny autoencoder when `--vae tiny` asks for it and one is found
    /// (`--tiny-vae`, else beside the model, else the hub cache); without one, the request's
    /// validation says how to get it.
    pub fn with_tiny_vae(&self, model: StableDiffusion) -> Result<StableDiffusion> {
        if self.vae_choice() != VaeChoice::Tiny {
            return Ok(model);
        }
        let found = self.tiny_vae.clone().or_else(|| tiny_vae::find(model.info()));
        let Some(path) = found else {
            return Ok(model);
        };
        let tiny = tiny_vae::load(&path, model.device(), model.dtype())
            .with_context(|| format!("the tiny autoencoder at {}", path.display()))?;
        Ok(model.with_tiny_vae(tiny)?)
    }
}

/// The LoRA library: `--lora-dir` (colon-separated), else `$NANOIMG_LORAS`, else the `loras`
/// folder of each models directory.
pub fn lora_library(models_dir: Option<&str>, lora_dir: Option<&str>) -> Library {
    library(models_dir, lora_dir, "NANOIMG_LORAS", "loras")
}

/// The textual-inversion embeddings: `--embedding-dir`, else `$NANOIMG_EMBEDDINGS`, else the
/// `embeddings` folder of each models directory.
pub fn embedding_library(models_dir: Option<&str>, dir: Option<&str>) -> Library {
    library(models_dir, dir, "NANOIMG_EMBEDDINGS", "embeddings")
}

fn library(models_dir: Option<&str>, flag: Option<&str>, var: &str, sub: &str) -> Library {
    let from_env = std::env::var_os(var).filter(|v| !v.is_empty());
    match (flag, from_env) {
        (Some(d), _) => Library::new(std::env::split_paths(d).collect()),
        (None, Some(v)) => Library::new(std::env::split_paths(&v).collect()),
        (None, None) => Library::new(registry(models_dir).dirs().iter().map(|d| d.join(sub)).collect()),
    }
}

/// The registry for `--models-dir` or the environment.
pub fn registry(models_dir: Option<&str>) -> Registry {
    match models_dir {
        Some(d) => Registry::new(std::env::split_paths(d).collect()),
        None => Registry::from_env(),
    }
}

/// NanoImg's data directory: `$NANOIMG_HOME`, else `$XDG_DATA_HOME/nanoimg`, else
/// `~/.local/share/nanoimg`.
pub fn data_dir() -> Result<PathBuf> {
    let from = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(home) = from("NANOIMG_HOME") {
        return Ok(home);
    }
    if let Some(xdg) = from("XDG_DATA_HOME") {
        return Ok(xdg.join("nanoimg"));
    }
    match from("HOME") {
        Some(home) => Ok(home.join(".local/share/nanoimg")),
        None => bail!("cannot tell where to keep data: set NANOIMG_HOME (or HOME)"),
    }
}

/// The bundled model's folder, unpacked if this is its first use.
pub fn bundled_model() -> Result<PathBuf> {
    let dir = data_dir()?.join("models");
    bundled::unpack(&dir).with_context(|| format!("unpacking the bundled model into {}", dir.display()))
}

/// The model folder to use: `--model` (a name in the models directories, a path, or the bundled
/// model's name), else the bundled model.
pub fn pick_model(registry: &Registry, name: Option<&str>) -> Result<PathBuf> {
    match name {
        None => bundled_model(),
        Some(name) => match registry.resolve(name) {
            Ok(path) => Ok(path),
            Err(EngineError::ModelNotFound { .. }) if name == bundled::NAME => bundled_model(),
            Err(EngineError::ModelNotFound { name, installed }) => {
                bail!(
                    "no model named {name:?}; installed: {installed}; built in: {}",
                    bundled::NAME
                )
            }
            Err(e) => Err(e.into()),
        },
    }
}
