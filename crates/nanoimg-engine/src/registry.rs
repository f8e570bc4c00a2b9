//! Which models are installed: model folders in the models directories or at explicit paths,
//! what family each is, and its suggested defaults. Reads configs only; loads no weights.

use crate::checkpoint::SourceOptions;
use crate::error::{EngineError, Result};
use crate::model::Quantization;
use crate::models::clip::ClipTextConfig;
use crate::models::taesd::TinyVaeConfig;
use crate::models::unet::UNetConfig;
use crate::models::vae::VaeConfig;
use crate::schedulers::{NoiseSchedule, SchedulerConfig, SchedulerName};
use crate::source::ModelSource;
use nanoimg_core::limits::{fit_size, SIZE_MULTIPLE};
use nanoimg_core::{ImageSize, Limits};
use nanoimg_hub::{HubCache, HubRef, RepoId};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Model family, which decides how prompts condition the UNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// SD 1.x: CLIP ViT-L text encoder, last hidden state.
    Sd1,
    /// SD 2.x and SD-Turbo: OpenCLIP ViT-H text encoder, last hidden state.
    Sd2,
    /// SDXL and SDXL-Turbo: two text encoders (penultimate states), pooled embedding + time ids.
    Sdxl,
    /// The SDXL refiner: SDXL's second text encoder only, and an aesthetic score in place of
    /// the target size among the time ids. It finishes what an SDXL base model started (the
    /// last steps of a two-stage run) or refines an image (img2img at low strength).
    SdxlRefiner,
    /// FLUX.1 (schnell, dev, Kontext): a rectified-flow transformer on 16-channel latents,
    /// conditioned on T5's hidden states and CLIP's pooled output, sampled by flow-matching
    /// Euler; dev and Kontext take the guidance scale as an embedding.
    Flux,
}

impl Family {
    /// An SDXL-architecture UNet: penultimate text states, a pooled embedding and time ids.
    pub fn is_sdxl(self) -> bool {
        matches!(self, Family::Sdxl | Family::SdxlRefiner)
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::Sd1 => "sd1",
            Family::Sd2 => "sd2",
            Family::Sdxl => "sdxl",
            Family::SdxlRefiner => "sdxl_refiner",
            Family::Flux => "flux",
        })
    }
}

/// What FLUX's picture sides are multiples of: 8 pixels per latent cell, 2×2 cells per token.
const FLUX_MULTIPLE: u32 = 16;

/// Suggested generation settings for a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelDefaults {
    pub steps: u32,
    pub guidance: f64,
    pub scheduler: SchedulerName,
    pub size: ImageSize,
}

impl ModelDefaults {
    /// The settings `nanoimg.json` gives in place of these.
    pub(crate) fn apply(&mut self, o: &crate::source::Overrides) -> Result<()> {
        if let Some(s) = o.steps {
            self.steps = s;
        }
        if let Some(g) = o.guidance {
            self.guidance = g;
        }
        if let Some(s) = &o.scheduler {
            self.scheduler = s.parse()?;
        }
        if let Some(s) = &o.size {
            self.size = s.parse()?;
        }
        Ok(())
    }
}

/// The parts of a request that only some families can do ([`ModelInfo::check_features`]).
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    pub scheduler: SchedulerName,
    pub negative_prompt: &'a str,
    pub loras: bool,
    pub refiner: bool,
    /// Reference images (a character's, or an edit's extra images).
    pub references: bool,
}

/// What `nanoimg models info` shows about one model folder.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub path: PathBuf,
    pub family: Family,
    /// Few-step distilled model (SD-Turbo, SDXL-Turbo): 1–4 steps, no guidance.
    pub turbo: bool,
    /// A native 9-channel inpainting UNet.
    pub inpainting: bool,
    /// An LCM-distilled UNet that takes the guidance scale as an embedding: one UNet pass per
    /// step, and the negative prompt is not used (as in diffusers).
    pub embedded_guidance: bool,
    /// A FLUX.1 Kontext model: it edits the image it is given in context (its latents join the
    /// sequence), instead of starting from that image noised (img2img).
    pub kontext: bool,
    /// The pipeline's own `vae` is a tiny autoencoder (SDXS): it loads with the model, and no
    /// other is looked for.
    #[serde(skip)]
    pub own_tiny_vae: bool,
    pub prediction: String,
    pub components: Vec<String>,
    pub size_bytes: u64,
    pub defaults: ModelDefaults,
    /// The largest picture the model draws, from `nanoimg.json` (a model trained at one small
    /// size, such as the bundled one): a larger request is drawn within it, in its aspect, and
    /// resampled to the size asked, so it costs what the model really draws. `None`: only the
    /// caller's limits apply.
    pub max_size: Option<ImageSize>,
    #[serde(skip)]
    pub force_zeros_for_empty_prompt: bool,
    /// How the UNet's weights are held when loaded (`quantize` in `nanoimg.json`).
    pub quantize: Quantization,
    pub description: Option<String>,
}

impl ModelInfo {
    /// What a request asks of this model that its family cannot do, by the parameter that asks
    /// (checked by the engine on every run, and by a server before it queues the job).
    pub fn check_features(&self, ask: &Asked) -> std::result::Result<(), nanoimg_core::InvalidParam> {
        use nanoimg_core::InvalidParam;
        if self.family != Family::Flux {
            return Ok(());
        }
        let name = &self.name;
        if ask.scheduler != SchedulerName::Euler {
            return Err(InvalidParam::new(
                "scheduler",
                format!(
                    "{name} samples with flow-matching Euler: use euler, not {}",
                    ask.scheduler
                ),
            ));
        }
        if !ask.negative_prompt.trim().is_empty() {
            return Err(InvalidParam::new(
                "negative_prompt",
                format!("{name} is a FLUX model, whose guidance is distilled: it takes no negative prompt"),
            ));
        }
        if ask.loras {
            return Err(InvalidParam::new(
                "loras",
                format!("{name} is a FLUX model: LoRAs work with UNet models (SD 1.x/2.x/SDXL) only"),
            ));
        }
        if ask.refiner {
            return Err(InvalidParam::new(
                "refiner",
                format!("{name} is a FLUX model: it draws every step itself"),
            ));
        }
        if ask.references && !self.kontext {
            return Err(InvalidParam::new(
                "references",
                format!("{name} cannot read reference images: a FLUX.1 Kontext model (or a UNet model) can"),
            ));
        }
        Ok(())
    }

    /// `limits` narrowed to what the model draws: with a `max_size`, no side longer than its
    /// longer side and no more pixels than it has.
    pub fn capped(&self, limits: &Limits) -> Limits {
        let mut l = limits.clone();
        if let Some(m) = self.max_size {
            l.max_side = l.max_side.min(m.width.max(m.height));
            l.max_pixels = l.max_pixels.min(m.pixels());
            l.min_side = l.min_side.min(l.max_side);
        }
        l
    }

    /// Whether `refiner` can draw the last steps of this model's runs, as far as their configs
    /// tell (the loaded models are checked exactly when a run starts): not an inpainting UNet,
    /// the same latent space (SDXL's or SD's) and the same prediction type.
    pub fn can_refine_with(&self, refiner: &ModelInfo) -> std::result::Result<(), String> {
        let name = &refiner.name;
        if refiner.inpainting {
            return Err(format!("{name} is an inpainting model, which cannot refine"));
        }
        if self.family == Family::Flux || refiner.family == Family::Flux {
            return Err("FLUX models draw every step themselves: no refiner".into());
        }
        if self.family.is_sdxl() != refiner.family.is_sdxl() {
            return Err(format!(
                "{name} ({}) draws in another latent space than {} ({})",
                refiner.family, self.name, self.family
            ));
        }
        if self.prediction != refiner.prediction {
            return Err(format!(
                "{name} predicts {} and {} predicts {}",
                refiner.prediction, self.name, self.prediction
            ));
        }
        Ok(())
    }

    /// The size the model draws a request for `asked` at: `asked` itself, or with a `max_size`
    /// it does not fit, the nearest size in its aspect within it. FLUX draws sides in multiples
    /// of 16 (a token is 2×2 latent cells): the nearest below, as diffusers' FLUX pipelines
    /// round them.
    pub fn drawn_size(&self, asked: ImageSize) -> ImageSize {
        let drawn = self.fitted_size(asked);
        match self.family {
            Family::Flux => {
                let side = |s: u32| (s / FLUX_MULTIPLE * FLUX_MULTIPLE).max(FLUX_MULTIPLE);
                ImageSize::new(side(drawn.width), side(drawn.height))
            }
            _ => drawn,
        }
    }

    fn fitted_size(&self, asked: ImageSize) -> ImageSize {
        match self.max_size {
            Some(m)
                if asked.width.max(asked.height) > m.width.max(m.height) || asked.pixels() > m.pixels() =>
            {
                let (w, h) = fit_size(
                    asked.width,
                    asked.height,
                    SIZE_MULTIPLE,
                    m.width.max(m.height),
                    m.pixels(),
                );
                ImageSize::new(w, h)
            }
            _ => asked,
        }
    }

    /// Reads a model's configs (a diffusers folder, or a single-file checkpoint and its
    /// companion, found as the environment says) and checks that every component it needs is
    /// present.
    pub fn inspect(path: &Path) -> Result<Self> {
        Self::inspect_with(path, &SourceOptions::default())
    }

    /// [`ModelInfo::inspect`] with the checkpoint's companion given.
    pub fn inspect_with(path: &Path, opts: &SourceOptions) -> Result<Self> {
        Self::of(&ModelSource::open(path, opts)?)
    }

    /// What an opened model is.
    pub fn of(source: &ModelSource) -> Result<Self> {
        if crate::flux::is_flux(source) {
            return crate::flux::info(source);
        }
        let path = source.path();
        let folder = source.configs();
        let incomplete = |message: String| EngineError::IncompleteModel {
            path: folder.path().to_owned(),
            message,
        };
        let refiner = folder
            .index()
            .get("requires_aesthetics_score")
            .and_then(|v| v.as_bool())
            == Some(true)
            || (!folder.has("text_encoder") && folder.has("text_encoder_2"));
        // A refiner has SDXL's second text encoder only; every other model has the first.
        let (encoder, tokenizer) = if refiner {
            ("text_encoder_2", "tokenizer_2")
        } else {
            ("text_encoder", "tokenizer")
        };
        for needed in ["unet", "vae", encoder, tokenizer] {
            if !folder.has(needed) {
                return Err(incomplete(format!("model_index.json does not list {needed}")));
            }
        }
        let mut components = Vec::new();
        for c in [
            "text_encoder",
            "text_encoder_2",
            "tokenizer",
            "tokenizer_2",
            "unet",
            "vae",
            "scheduler",
        ] {
            if folder.has(c) {
                folder.component_dir(c)?;
                if c.starts_with("tokenizer") {
                    for f in ["vocab.json", "merges.txt"] {
                        if !folder.path().join(c).join(f).is_file() {
                            return Err(incomplete(format!("missing {c}/{f}")));
                        }
                    }
                } else if c != "scheduler" && source.checkpoint().is_none() {
                    folder.weights(c)?;
                }
                components.push(c.to_owned());
            }
        }
        if folder.has("text_encoder_2") != folder.has("tokenizer_2") {
            return Err(incomplete(
                "text_encoder_2 and tokenizer_2 must come together".into(),
            ));
        }
        let unet: UNetConfig = source.config("unet")?;
        unet.validate().map_err(|reason| EngineError::Unsupported {
            path: folder.path().join("unet"),
            reason,
        })?;
        // (latent channels, pixels per latent cell per side) of the model's own autoencoder.
        let own_tiny_vae = source.has_tiny_vae();
        let (latent_channels, vae_scale) = if own_tiny_vae {
            let tiny: TinyVaeConfig = source.config("vae")?;
            (tiny.latent_channels, tiny.downscale())
        } else {
            let vae: VaeConfig = source.config("vae")?;
            (vae.latent_channels, vae.downscale())
        };
        let te: ClipTextConfig = source.config(encoder)?;
        let sched: SchedulerConfig = if folder.has("scheduler") {
            source.config("scheduler")?
        } else {
            SchedulerConfig::default()
        };
        NoiseSchedule::new(&sched).map_err(|reason| EngineError::Unsupported {
            path: folder.path().join("scheduler"),
            reason,
        })?;
        let overrides = &source.overrides;

        let family = source
            .checkpoint()
            .map(|c| c.family())
            .or(overrides.family)
            .unwrap_or(if refiner {
                Family::SdxlRefiner
            } else if unet.uses_text_time() || folder.has("text_encoder_2") {
                Family::Sdxl
            } else if te.hidden_act == "gelu" {
                Family::Sd2
            } else {
                Family::Sd1
            });
        let name = source.name();
        let turbo = overrides.turbo.unwrap_or_else(|| {
            // SD-Turbo, SDXL-Turbo, and SDXS (one step, no guidance, as its card runs it).
            let name = name.to_ascii_lowercase();
            name.contains("turbo") || name.contains("sdxs")
        });
        let latent_side = unet
            .sample_size
            .unwrap_or(if family.is_sdxl() { 128 } else { 64 });
        let side = (latent_side * vae_scale) as u32;
        // A folder saved with diffusers' LCMScheduler / TCDScheduler is a consistency model (or
        // has one merged in): it samples with that scheduler, in a few steps without guidance.
        // An LCM-distilled UNet (guidance as an embedding) samples with LCM whatever its folder
        // says, at diffusers' LatentConsistencyModelPipeline's default guidance.
        let embedded_guidance = unet.embeds_guidance();
        let consistency = match sched.class_name.as_deref() {
            Some("LCMScheduler") => Some(SchedulerName::Lcm),
            Some("TCDScheduler") => Some(SchedulerName::Tcd),
            _ if embedded_guidance => Some(SchedulerName::Lcm),
            _ => None,
        };
        let mut defaults = ModelDefaults {
            steps: match (turbo, consistency) {
                (true, _) => 1,
                (false, Some(_)) => 4,
                (false, None) => 30,
            },
            guidance: match (turbo, family) {
                _ if embedded_guidance => 8.5,
                _ if consistency.is_some() => 1.0,
                (true, _) => 0.0,
                (false, f) if f.is_sdxl() => 5.0,
                (false, _) => 7.5,
            },
            scheduler: consistency.unwrap_or(SchedulerName::Euler),
            size: ImageSize::new(side, side),
        };
        defaults.apply(overrides)?;
        let inpainting = unet.in_channels == 2 * latent_channels + 1;
        Ok(Self {
            name,
            path: path.to_owned(),
            family,
            turbo,
            inpainting,
            embedded_guidance,
            kontext: false,
            own_tiny_vae,
            prediction: sched.prediction_type.clone(),
            components,
            size_bytes: source.size_bytes(),
            defaults,
            max_size: overrides.max_size.as_deref().map(str::parse).transpose()?,
            force_zeros_for_empty_prompt: folder
                .index()
                .get("force_zeros_for_empty_prompt")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            description: overrides.description.clone(),
            quantize: overrides.quantize.unwrap_or_default(),
        })
    }
}

impl Registry {
    /// Every diffusers model in the hub cache (its `main` snapshot), inspected and named by its
    /// id: what `nanoimg models pull` fetched, or diffusers did.
    pub fn list_pulled(&self) -> Vec<Listing> {
        let Some(cache) = &self.hub_cache else {
            return Vec::new();
        };
        let Ok(rd) = std::fs::read_dir(cache.root()) else {
            return Vec::new();
        };
        let mut ids: Vec<HubRef> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| RepoId::from_cache_folder(e.file_name().to_str()?).map(HubRef::from))
            .collect();
        ids.sort_by_key(|r| r.to_string());
        ids.into_iter()
            .filter_map(|r| {
                let snapshot = cache.snapshot(&r)?;
                snapshot.join("model_index.json").is_file().then_some(snapshot)
            })
            .map(|path| match ModelInfo::inspect(&path) {
                Ok(info) => Listing::Ready(Box::new(info)),
                Err(error) => Listing::Broken { path, error },
            })
            .collect()
    }

    /// A pulled model: its snapshot (a diffusers folder), or the one checkpoint file in it.
    fn resolve_pulled(&self, r: &HubRef) -> Result<PathBuf> {
        let not_pulled = || EngineError::NotPulled {
            id: r.to_string(),
            cache: self
                .hub_cache
                .as_ref()
                .map_or("none: set HF_HUB_CACHE or HF_HOME".into(), |c| {
                    c.root().display().to_string()
                }),
        };
        let snapshot = self
            .hub_cache
            .as_ref()
            .and_then(|c| c.snapshot(r))
            .ok_or_else(not_pulled)?;
        if snapshot.join("model_index.json").is_file() {
            return Ok(snapshot);
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&snapshot)
            .map_err(|source| EngineError::Io {
                path: snapshot.clone(),
                source,
            })?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| is_checkpoint_file(p))
            .collect();
        match files.len() {
            1 => Ok(files.remove(0)),
            0 => Err(EngineError::IncompleteModel {
                path: snapshot,
                message: "neither a model_index.json nor a checkpoint file: pulled with --configs-only?"
                    .into(),
            }),
            _ => Err(EngineError::IncompleteModel {
                path: snapshot,
                message: "several checkpoint files: give the one to use by its path".into(),
            }),
        }
    }
}

/// The snapshot folder of a Hugging Face hub cache entry (`models--org--name/snapshots/<rev>`):
/// the revision `refs/main` names, else the only snapshot holding a `model_index.json`.
pub fn hf_cache_snapshot(entry: &Path) -> Option<PathBuf> {
    let snapshots = entry.join("snapshots");
    if !snapshots.is_dir() {
        return None;
    }
    if let Some(rev) = nanoimg_hub::cache::read_ref(entry, "main") {
        let p = snapshots.join(rev);
        if p.join("model_index.json").is_file() {
            return Some(p);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(&snapshots)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("model_index.json").is_file())
        .collect();
    (found.len() == 1).then(|| found.remove(0))
}

/// A file that may be a single-file checkpoint: a `.safetensors` (not a `<stem>.vae.safetensors`
/// beside one), or a `.ckpt` pickle, listed so that `models list` says how to convert it.
pub fn is_checkpoint_file(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase());
    path.is_file()
        && name.is_some_and(|n| {
            (n.ends_with(".safetensors") && !n.ends_with(".vae.safetensors")) || n.ends_with(".ckpt")
        })
}

/// One entry of a models-directory listing: a usable model, or a folder that is not one and why.
#[derive(Debug)]
pub enum Listing {
    Ready(Box<ModelInfo>),
    Broken { path: PathBuf, error: EngineError },
}

/// The models directories NanoImg searches, in order.
#[derive(Debug, Clone)]
pub struct Registry {
    dirs: Vec<PathBuf>,
    hub_cache: Option<HubCache>,
}

impl Registry {
    /// Searches `dirs` in order, and the hub cache the environment names for hub ids.
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        Self {
            dirs,
            hub_cache: HubCache::from_env(),
        }
    }

    /// Finds hub ids in the hub cache at `root` instead.
    pub fn with_hub_cache(mut self, root: PathBuf) -> Self {
        self.hub_cache = Some(HubCache::new(root));
        self
    }

    /// `$NANOIMG_MODELS` (colon-separated) if set, else `./models`.
    pub fn from_env() -> Self {
        match std::env::var_os("NANOIMG_MODELS") {
            Some(v) => Self::new(std::env::split_paths(&v).collect()),
            None => Self::new(vec![PathBuf::from("models")]),
        }
    }

    /// The directories searched.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Every subfolder with a `model_index.json` and every checkpoint file, inspected.
    pub fn list(&self) -> Vec<Listing> {
        let mut out = Vec::new();
        for dir in &self.dirs {
            let Ok(rd) = std::fs::read_dir(dir) else { continue };
            let mut paths: Vec<PathBuf> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.join("model_index.json").is_file() || is_checkpoint_file(p))
                .collect();
            paths.sort();
            for path in paths {
                out.push(match ModelInfo::inspect(&path) {
                    Ok(info) => Listing::Ready(Box::new(info)),
                    Err(error) => Listing::Broken { path, error },
                });
            }
        }
        out
    }

    /// Finds a model by folder name (or checkpoint file name without `.safetensors`) in the
    /// models directories, or takes `name` as a path (a folder or a checkpoint file). A path
    /// may also be a Hugging Face cache entry (`models--org--name`), whose `refs/main` snapshot
    /// (or only snapshot) is used. A hub id (`org/name[@revision]`) that is not a path is
    /// looked up in the hub cache, without the network.
    pub fn resolve(&self, name: &str) -> Result<PathBuf> {
        let as_path = Path::new(name);
        // A file given by path is the model, whatever it is: loading it says what is wrong.
        if as_path.join("model_index.json").is_file() || as_path.is_file() {
            return Ok(as_path.to_owned());
        }
        if let Some(snapshot) = hf_cache_snapshot(as_path) {
            return Ok(snapshot);
        }
        if !as_path.exists() {
            if let Ok(r) = name.parse::<HubRef>() {
                return self.resolve_pulled(&r);
            }
        }
        // A bare name must not walk out of the models directory.
        let plain = !name.is_empty() && as_path.components().count() == 1 && !name.starts_with('.');
        if plain {
            for dir in &self.dirs {
                let p = dir.join(name);
                if p.join("model_index.json").is_file() {
                    return Ok(p);
                }
                let file = dir.join(format!("{name}.safetensors"));
                if is_checkpoint_file(&file) {
                    return Ok(file);
                }
            }
        }
        let installed: Vec<String> = self
            .list()
            .into_iter()
            .filter_map(|l| match l {
                Listing::Ready(i) => Some(i.name),
                Listing::Broken { .. } => None,
            })
            .collect();
        Err(EngineError::ModelNotFound {
            name: name.to_owned(),
            installed: if installed.is_empty() {
                format!("none in {}", crate::folder::display_paths(&self.dirs))
            } else {
                installed.join(", ")
            },
        })
    }
}
