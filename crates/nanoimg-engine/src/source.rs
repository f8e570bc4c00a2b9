//! Where a model's parts are read from: a diffusers folder, or a single-file checkpoint with
//! the companion folder its configs and tokenizers come from. Everything that loads or
//! inspects a model goes through [`ModelSource`], so the two kinds of model differ only here.

use crate::checkpoint::{sidecar_path, vae_file_weights, Checkpoint, SourceOptions};
use crate::error::{EngineError, Result};
use crate::folder::{read_json, ModelFolder};
use crate::model::{Quantization, Weights};
use crate::registry::Family;
use candle_core::{DType, Device};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A model folder's `nanoimg.json`, or a checkpoint's `<stem>.nanoimg.json`: what we would
/// otherwise guess, and for a checkpoint where its companion and VAE are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Overrides {
    #[serde(default)]
    pub family: Option<Family>,
    #[serde(default)]
    pub turbo: Option<bool>,
    #[serde(default)]
    pub steps: Option<u32>,
    #[serde(default)]
    pub guidance: Option<f64>,
    #[serde(default)]
    pub scheduler: Option<String>,
    #[serde(default)]
    pub size: Option<String>,
    /// The largest picture the model draws (`WIDTHxHEIGHT`); larger requests are drawn within it
    /// and resampled.
    #[serde(default)]
    pub max_size: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// A checkpoint's companion folder (relative to the file's folder).
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// A separate VAE file (relative to the model's folder or the file's folder).
    #[serde(default)]
    pub vae: Option<PathBuf>,
    /// How the UNet's weights are held (`"int8"`: see [`Quantization`]).
    #[serde(default)]
    pub quantize: Option<Quantization>,
}

/// A model on disk, opened: configs readable, weights not yet read.
#[derive(Debug, Clone)]
pub struct ModelSource {
    path: PathBuf,
    configs: ModelFolder,
    checkpoint: Option<Checkpoint>,
    pub(crate) overrides: Overrides,
}

impl ModelSource {
    /// Opens a diffusers folder, or a single-file `.safetensors` checkpoint (its companion
    /// found as `opts` and its sidecar say).
    pub fn open(path: &Path, opts: &SourceOptions) -> Result<Self> {
        if path.is_file() {
            let sidecar = sidecar_path(path);
            let overrides = read_overrides(&sidecar)?;
            let base = path.parent().unwrap_or(Path::new("."));
            let opts = SourceOptions {
                config: opts
                    .config
                    .clone()
                    .or_else(|| overrides.config.as_ref().map(|c| base.join(c))),
                hub_cache: opts.hub_cache.clone(),
            };
            let checkpoint = Checkpoint::open(path, &opts)?;
            if let Some(f) = overrides.family.filter(|f| *f != checkpoint.family()) {
                return Err(EngineError::Checkpoint {
                    path: sidecar,
                    message: format!("says family {f}, but the checkpoint is {}", checkpoint.family()),
                });
            }
            return Ok(Self {
                path: path.to_owned(),
                configs: checkpoint.companion().clone(),
                checkpoint: Some(checkpoint),
                overrides,
            });
        }
        let configs = ModelFolder::open(path)?;
        let overrides_path = path.join("nanoimg.json");
        let overrides = read_overrides(&overrides_path)?;
        if overrides.config.is_some() {
            return Err(EngineError::IncompleteModel {
                path: overrides_path,
                message: "\"config\" names a companion for single-file checkpoints; a model folder has its own configs"
                    .into(),
            });
        }
        Ok(Self {
            path: path.to_owned(),
            configs,
            checkpoint: None,
            overrides,
        })
    }

    /// The folder or file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where configs and tokenizers are read: the folder, or the checkpoint's companion.
    pub fn configs(&self) -> &ModelFolder {
        &self.configs
    }

    /// The checkpoint, when this is one.
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        self.checkpoint.as_ref()
    }

    /// The model's name: the folder's name (a hub cache snapshot's repository id), or the
    /// file's without `.safetensors`.
    pub fn name(&self) -> String {
        let name = if self.checkpoint.is_some() {
            self.path.file_stem()
        } else if let Some(id) = nanoimg_hub::cache::repo_of_snapshot(&self.path) {
            return id.to_string();
        } else {
            self.path.file_name()
        };
        name.map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string())
    }

    /// A component's config. A checkpoint's UNet takes its input channels from the file (an
    /// inpainting checkpoint with its base model's companion) and its scheduler the prediction
    /// type the file says.
    pub fn config<T: DeserializeOwned>(&self, component: &str) -> Result<T> {
        let mut value: serde_json::Value = self.configs.config(component)?;
        if let Some(cp) = &self.checkpoint {
            match component {
                "unet" => {
                    if let Some(c) = cp.unet_in_channels() {
                        value["in_channels"] = c.into();
                    }
                }
                "scheduler" => {
                    if let Some(p) = cp.prediction() {
                        value["prediction_type"] = p.into();
                    }
                }
                _ => {}
            }
        }
        serde_json::from_value(value).map_err(|e| EngineError::Checkpoint {
            path: self.configs.path().join(component),
            message: format!("config: {e}"),
        })
    }

    /// A component's weights at `dtype`, by our names.
    pub(crate) fn weights(&self, component: &str, dtype: DType, device: &Device) -> Result<Weights> {
        match &self.checkpoint {
            Some(cp) => cp.weights(component, dtype, device),
            None => crate::model::load_weights(&self.configs, component, dtype, device),
        }
    }

    /// Whether the pipeline's own `vae` is a tiny autoencoder (SDXS ships its distilled tiny
    /// decoder as `vae`, and the full KL autoencoder, if at all, as `vae_large`).
    pub fn has_tiny_vae(&self) -> bool {
        self.checkpoint.is_none() && self.configs.class_of("vae") == Some("AutoencoderTiny")
    }

    /// The component holding the full (KL) autoencoder: `vae`, or `vae_large` beside a tiny
    /// `vae`; `None` when the model has only the tiny one.
    pub fn full_vae_component(&self) -> Option<&'static str> {
        if !self.has_tiny_vae() {
            return Some("vae");
        }
        self.configs
            .path()
            .join("vae_large/config.json")
            .is_file()
            .then_some("vae_large")
    }

    /// The VAE's weights: from `explicit` (`--vae`), the settings' `vae`, A1111's
    /// `<stem>.vae.safetensors` beside a checkpoint, or the model's own.
    pub(crate) fn vae_weights(
        &self,
        explicit: Option<&Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<Weights> {
        match self.vae_file(explicit) {
            Some(file) => vae_file_weights(&file, dtype, device),
            None => self.weights(self.full_vae_component().unwrap_or("vae"), dtype, device),
        }
    }

    /// The separate VAE file used, if any.
    pub fn vae_file(&self, explicit: Option<&Path>) -> Option<PathBuf> {
        if let Some(e) = explicit {
            return Some(e.to_owned());
        }
        let base = if self.checkpoint.is_some() {
            self.path.parent().unwrap_or(Path::new(".")).to_owned()
        } else {
            self.path.clone()
        };
        if let Some(v) = &self.overrides.vae {
            return Some(base.join(v));
        }
        let a1111 = self.path.with_extension("vae.safetensors");
        (self.checkpoint.is_some() && a1111.is_file()).then_some(a1111)
    }

    /// The model's size on disk.
    pub fn size_bytes(&self) -> u64 {
        if self.checkpoint.is_some() {
            std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
        } else {
            self.configs.size_bytes()
        }
    }
}

fn read_overrides(path: &Path) -> Result<Overrides> {
    if !path.is_file() {
        return Ok(Overrides::default());
    }
    serde_json::from_value(read_json(path)?).map_err(|source| EngineError::Json {
        path: path.to_owned(),
        source,
    })
}
