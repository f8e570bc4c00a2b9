//! A loaded Stable Diffusion–family model: tokenizers, text encoders, UNet, VAE and noise
//! schedule, read from a diffusers-layout folder or a single-file checkpoint.

use crate::checkpoint::SourceOptions;
use crate::error::{EngineError, Result, TensorContext};
use crate::flux::FluxParts;
use crate::folder::ModelFolder;
use crate::models::clip::{ClipTextConfig, ClipTextModel};
use crate::models::int8::Quantize;
use crate::models::taesd::AutoencoderTiny;
use crate::models::unet::{AddedConditioning, TextTime};
use crate::models::unet::{UNet2DConditionModel, UNetConfig};
use crate::models::vae::{AutoencoderKL, VaeConfig};
use crate::registry::{Family, ModelDefaults, ModelInfo};
use crate::schedulers::{NoiseSchedule, SchedulerConfig};
use crate::source::ModelSource;
use crate::textual_inversion::Words;
use crate::tiny_vae::VaeChoice;
use crate::tokenizer::ClipTokenizer;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How to load a model: on which device, at which precision, and for a single-file checkpoint
/// where its configs come from; optionally with another VAE.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    pub dtype: DType,
    /// A checkpoint's companion (configs and tokenizers) and where to look for one.
    pub source: SourceOptions,
    /// A VAE file to use instead of the model's own (original or diffusers layout).
    pub vae: Option<PathBuf>,
    /// The UNet's weights in memory; `None`: the model's setting (`quantize` in its
    /// `nanoimg.json`), else as stored.
    pub quantize: Option<Quantization>,
}

/// How the UNet's weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantization {
    /// As stored (at the load's dtype). The default.
    #[default]
    None,
    /// The blocks' linear layers and convolutions on int8 weights with activations quantized
    /// as they arrive ([`crate::models::int8`]): CPU and f32 only, a few times faster where the
    /// CPU has AVX-512 VNNI ([`crate::models::int8::fast`]), slower elsewhere; results move by
    /// about a percent per layer.
    Int8,
}

impl std::str::FromStr for Quantization {
    type Err = nanoimg_core::InvalidParam;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "f32" | "off" => Ok(Quantization::None),
            "int8" => Ok(Quantization::Int8),
            other => Err(nanoimg_core::InvalidParam::new(
                "quantize",
                format!("unknown quantization {other:?}; use none or int8"),
            )),
        }
    }
}

impl std::fmt::Display for Quantization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Quantization::None => "none",
            Quantization::Int8 => "int8",
        })
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            dtype: DType::F32,
            source: SourceOptions::default(),
            vae: None,
            quantize: None,
        }
    }
}

/// Prompt embeddings for one prompt: the cross-attention context and, for SDXL, the pooled
/// embedding.
#[derive(Debug, Clone)]
pub struct TextConditioning {
    /// `[1, tokens, cross_attention_dim]`.
    pub context: Tensor,
    /// `[1, pooled_dim]` (SDXL only).
    pub pooled: Option<Tensor>,
    /// Whether the prompt was cut at the encoder's context length.
    pub truncated: bool,
}

/// Which side of classifier-free guidance a prompt's conditioning is for: the SDXL refiner
/// conditions the two on different aesthetic scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Negative,
    Positive,
}

/// The aesthetic scores the SDXL refiner is conditioned on (diffusers' and A1111's defaults):
/// high for the prompt, low for the negative prompt, so guidance pushes towards the high one.
pub const AESTHETIC_SCORE: f32 = 6.0;
pub const NEGATIVE_AESTHETIC_SCORE: f32 = 2.5;

pub(crate) struct TextEncoder {
    pub(crate) tokenizer: Arc<ClipTokenizer>,
    pub(crate) model: ClipTextModel,
    /// Every weight by its checkpoint name, sharing storage with `model` (for LoRA merges).
    pub(crate) weights: Weights,
}

/// A component's weights by checkpoint name. The tensors share storage with the built modules, so
/// keeping the map costs no memory; a LoRA merge copies only the tensors it changes.
pub(crate) type Weights = Arc<HashMap<String, Tensor>>;

/// The UNet's checkpoint tensors, by name, for LoRA merges.
#[derive(Clone)]
pub(crate) enum UnetWeights {
    /// In memory, sharing storage with the UNet's f32 layers (so keeping them costs nothing).
    Resident(Weights),
    /// Not kept: an int8 UNet's layers hold none of the tensors they were made from, and
    /// keeping them would more than double its memory. A merge reads them again from the
    /// model's files, with the tensors earlier merges changed (`changed`) on top.
    Reread {
        source: Arc<ModelSource>,
        changed: Weights,
    },
}

/// What turns noise into latents: a UNet and its noise schedule (the SD family), or the FLUX
/// transformer with its T5 encoder and flow-matching schedule.
#[derive(Clone)]
pub(crate) enum Denoiser {
    Unet(UnetParts),
    Flux(Arc<FluxParts>),
}

/// A UNet model's own parts.
#[derive(Clone)]
pub(crate) struct UnetParts {
    pub(crate) unet: Arc<UNet2DConditionModel>,
    pub(crate) weights: UnetWeights,
    pub(crate) schedule: NoiseSchedule,
}

/// A model ready to generate: shared read-only by every request.
#[derive(Clone)]
pub struct StableDiffusion {
    pub(crate) info: ModelInfo,
    /// The CLIP text encoders: the UNet's context (and SDXL's pooled embedding), or FLUX's
    /// pooled embedding.
    pub(crate) encoders: Vec<Arc<TextEncoder>>,
    pub(crate) denoiser: Denoiser,
    /// The full (KL) autoencoder; `None` for a model whose only one is tiny (SDXS without
    /// `vae_large`), which then does all its encoding and decoding with `tiny_vae`.
    pub(crate) vae: Option<Arc<AutoencoderKL>>,
    pub(crate) device: Device,
    pub(crate) dtype: DType,
    pub(crate) vae_dtype: DType,
    /// Textual-inversion embeddings the text encoders know by name.
    pub(crate) words: Arc<Words>,
    /// The tiny autoencoder for this model's latent space: its own (SDXS), or one given.
    pub(crate) tiny_vae: Option<Arc<AutoencoderTiny>>,
}

impl std::fmt::Debug for StableDiffusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StableDiffusion")
            .field("name", &self.info.name)
            .field("family", &self.info.family)
            .field("dtype", &self.dtype)
            .finish_non_exhaustive()
    }
}

/// Reads every tensor of a component at `dtype`, by name.
pub(crate) fn load_weights(
    folder: &ModelFolder,
    component: &str,
    dtype: DType,
    device: &Device,
) -> Result<Weights> {
    let files = folder.weights(component)?;
    let what = || format!("{}: cannot read {component} weights", folder.path().display());
    // SAFETY: as in `load_vb`; the tensors are copied out of the mapping before it is dropped.
    let mapped = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files) }.context(what)?;
    let mut map = HashMap::new();
    for (name, _) in mapped.tensors() {
        let t = mapped
            .load(&name, device)
            .context(what)?
            .to_dtype(dtype)
            .context(what)?;
        map.insert(name, t);
    }
    Ok(Arc::new(map))
}

impl StableDiffusion {
    /// Loads every component of the model at `path` (a diffusers folder or a single-file
    /// checkpoint). Errors name the component and the file, tensor or config field that is
    /// missing or wrong.
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Self> {
        let source = ModelSource::open(path, &opts.source)?;
        let info = ModelInfo::of(&source)?;
        let folder = source.configs();
        let (device, dtype) = (&opts.device, opts.dtype);
        if device.is_cpu() && dtype == DType::BF16 {
            // candle's CPU backend has no bf16 matrix multiply.
            return Err(nanoimg_core::InvalidParam::new(
                "dtype",
                "bf16 needs a CUDA or Metal GPU; on the CPU use f32 or f16",
            )
            .into());
        }
        let at = |component: &str| format!("{}: {component}", path.display());
        let flux = info.family == Family::Flux;
        let quantize = opts.quantize.unwrap_or(info.quantize);
        if quantize == Quantization::Int8 && flux {
            return Err(nanoimg_core::InvalidParam::new(
                "quantize",
                "int8 weights are for the UNet family; FLUX models run as stored",
            )
            .into());
        }

        let mut encoders = Vec::new();
        // FLUX's second text encoder is T5, loaded with its transformer.
        let clip_pairs = if flux { 1 } else { 2 };
        for (tok, enc) in [("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")]
            .into_iter()
            .take(clip_pairs)
        {
            if !folder.has(enc) {
                continue;
            }
            let tokenizer = ClipTokenizer::from_dir(&folder.component_dir(tok)?)?;
            let config: ClipTextConfig = source.config(enc)?;
            if let Some(m) = config.misfit(&tokenizer) {
                return Err(EngineError::IncompleteModel {
                    path: path.to_owned(),
                    message: format!("{tok} {m} ({enc})"),
                });
            }
            let weights = source.weights(enc, dtype, device)?;
            let model = ClipTextModel::new(from_weights(&weights, dtype, device), &config)
                .map_err(|e| e.at(&path.join(enc)))?;
            encoders.push(Arc::new(TextEncoder {
                tokenizer: Arc::new(tokenizer),
                model,
                weights,
            }));
        }

        let denoiser = if flux {
            Denoiser::Flux(Arc::new(FluxParts::load(&source, dtype, device)?))
        } else {
            Denoiser::Unet(Self::load_unet(&source, quantize, dtype, device)?)
        };

        let tiny_vae = match source.has_tiny_vae() {
            true => {
                let mut tiny = crate::tiny_vae::load(&path.join("vae"), device, dtype)?;
                if quantize == Quantization::Int8 {
                    tiny.quantize_decoder_int8().context(|| at("vae"))?;
                }
                Some(Arc::new(tiny))
            }
            false => None,
        };
        let mut vae_dtype = dtype;
        let vae = match source.full_vae_component() {
            Some(component) => {
                let vae_config: VaeConfig = source.config(component)?;
                vae_config.validate().map_err(|reason| EngineError::Unsupported {
                    path: path.join(component),
                    reason,
                })?;
                if vae_config.force_upcast && dtype == DType::F16 {
                    vae_dtype = DType::F32;
                }
                let vae_weights = source.vae_weights(opts.vae.as_deref(), vae_dtype, device)?;
                Some(Arc::new(
                    AutoencoderKL::new(from_weights(&vae_weights, vae_dtype, device), &vae_config)
                        .context(|| at(component))?,
                ))
            }
            None => None,
        };

        let model = Self {
            info,
            encoders,
            denoiser,
            vae,
            device: device.clone(),
            dtype,
            vae_dtype,
            words: Arc::new(Words::default()),
            tiny_vae,
        };
        model.check_consistency()?;
        Ok(model)
    }

    /// The UNet, its weights as the load holds them, and its noise schedule.
    fn load_unet(
        source: &ModelSource,
        quantize: Quantization,
        dtype: DType,
        device: &Device,
    ) -> Result<UnetParts> {
        let path = source.path();
        let at = |component: &str| format!("{}: {component}", path.display());
        let unet_config: UNetConfig = source.config("unet")?;
        let unet_weights = source.weights("unet", dtype, device)?;
        let mut unet = UNet2DConditionModel::new(from_weights(&unet_weights, dtype, device), &unet_config)
            .map_err(|e| e.at(&path.join("unet")))?;
        if quantize == Quantization::Int8 {
            if !device.is_cpu() || dtype != DType::F32 {
                return Err(nanoimg_core::InvalidParam::new(
                    "quantize",
                    "int8 weights run on the CPU at f32; load without quantize or on the CPU",
                )
                .into());
            }
            unet.quantize_int8().context(|| at("unet"))?;
        }
        let unet = Arc::new(unet);
        // Dropping the map frees the tensors the int8 layers replaced; the f32 layers left
        // (norms, conv_in/out, time embedding) still hold theirs.
        let unet_weights = match quantize {
            Quantization::Int8 => UnetWeights::Reread {
                source: Arc::new(source.clone()),
                changed: Weights::default(),
            },
            Quantization::None => UnetWeights::Resident(unet_weights),
        };
        let sched_config: SchedulerConfig = if source.configs().has("scheduler") {
            source.config("scheduler")?
        } else {
            SchedulerConfig::default()
        };
        let schedule = NoiseSchedule::new(&sched_config).map_err(|reason| EngineError::Unsupported {
            path: path.join("scheduler"),
            reason,
        })?;
        Ok(UnetParts {
            unet,
            weights: unet_weights,
            schedule,
        })
    }

    /// The UNet model's parts; for a FLUX model, an error saying that `what` needs a UNet.
    pub(crate) fn unet_parts(&self, what: &str) -> Result<&UnetParts> {
        match &self.denoiser {
            Denoiser::Unet(u) => Ok(u),
            Denoiser::Flux(_) => Err(nanoimg_core::InvalidParam::new(
                "model",
                format!(
                    "{} is a FLUX model: {what} works with UNet models (SD 1.x/2.x/SDXL) only",
                    self.info.name
                ),
            )
            .into()),
        }
    }

    /// The FLUX model's parts, for a FLUX model.
    pub(crate) fn flux(&self) -> Option<&FluxParts> {
        match &self.denoiser {
            Denoiser::Flux(f) => Some(f),
            Denoiser::Unet(_) => None,
        }
    }

    /// How the UNet's weights are held (the load's choice).
    pub fn quantization(&self) -> Quantization {
        match self.unet().is_some_and(|u| u.is_int8()) {
            true => Quantization::Int8,
            false => Quantization::None,
        }
    }

    /// Whether the UNet runs on int8 weights without a fast tile on this CPU, which is slower
    /// than f32 (worth a warning).
    pub fn int8_is_slow(&self) -> bool {
        self.quantization() == Quantization::Int8 && !crate::models::int8::fast()
    }

    /// The UNet's checkpoint tensors by name (read from the files again for an int8 UNet).
    pub(crate) fn unet_weights(&self) -> Result<Weights> {
        match &self.unet_parts("LoRA")?.weights {
            UnetWeights::Resident(w) => Ok(w.clone()),
            UnetWeights::Reread { source, changed } => {
                let mut all = (*source.weights("unet", self.dtype, &self.device)?).clone();
                all.extend(changed.iter().map(|(k, v)| (k.clone(), v.clone())));
                Ok(Arc::new(all))
            }
        }
    }

    /// Checks that the components fit together (text width vs. cross-attention width, …).
    fn check_consistency(&self) -> Result<()> {
        let bad = |message: String| EngineError::IncompleteModel {
            path: self.info.path.clone(),
            message,
        };
        if self.encoders.is_empty() {
            return Err(bad("no text_encoder".into()));
        }
        let latent = self.latent_channels();
        let uc = match &self.denoiser {
            Denoiser::Unet(u) => u.unet.config(),
            Denoiser::Flux(f) => return f.check_fits(self.encoders[0].model.config(), latent).map_err(bad),
        };
        let text_width: usize = self.encoders.iter().map(|e| e.model.config().hidden_size).sum();
        let cross = match uc.cross_attention_dim {
            crate::models::unet::PerBlock::One(d) => d,
            _ => unreachable!("per-block cross_attention_dim is rejected by UNetConfig::validate"),
        };
        let expected_width = if self.info.family.is_sdxl() {
            text_width
        } else {
            self.encoders[0].model.config().hidden_size
        };
        if expected_width != cross {
            return Err(bad(format!(
                "text encoders produce {expected_width}-wide embeddings but the UNet's cross_attention_dim is {cross}"
            )));
        }
        if let (Some(full), Some(tiny)) = (&self.vae, &self.tiny_vae) {
            let (f, t) = (full.config(), tiny.config());
            if (f.latent_channels, f.downscale()) != (t.latent_channels, t.downscale()) {
                return Err(bad(format!(
                    "the tiny vae has {} latent channels at 1/{} scale; vae_large has {} at 1/{}",
                    t.latent_channels,
                    t.downscale(),
                    f.latent_channels,
                    f.downscale()
                )));
            }
        }
        let expected_in = if self.info.inpainting {
            2 * latent + 1
        } else {
            latent
        };
        if uc.in_channels != expected_in || uc.out_channels != latent {
            return Err(bad(format!(
                "UNet has {} in / {} out channels; a VAE with {latent} latent channels needs {expected_in} / {latent}",
                uc.in_channels, uc.out_channels
            )));
        }
        Ok(())
    }

    /// What the registry knows about this model.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Suggested steps, guidance, scheduler and size.
    pub fn defaults(&self) -> &ModelDefaults {
        &self.info.defaults
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The precision of the UNet and text encoders.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The UNet (for callers that drive it directly, e.g. benchmarks); `None` for FLUX.
    pub fn unet(&self) -> Option<&UNet2DConditionModel> {
        match &self.denoiser {
            Denoiser::Unet(u) => Some(&u.unet),
            Denoiser::Flux(_) => None,
        }
    }

    /// The added conditioning for a batch of prompts at an output size and guidance scale
    /// (`None` for the UNets that take none): SDXL's pooled text embeddings and time ids —
    /// original size, crop corner and target size for the base model; original size, crop
    /// corner and an aesthetic score per side for the refiner — and an LCM UNet's guidance
    /// scale, as diffusers passes it (`guidance - 1`).
    pub(crate) fn added_conditioning(
        &self,
        parts: &[(&TextConditioning, Side)],
        size: (u32, u32),
        guidance: f64,
    ) -> Result<Option<AddedConditioning>> {
        let guidance = self
            .unet_parts("UNet conditioning")?
            .unet
            .config()
            .embeds_guidance()
            .then(|| Tensor::full((guidance - 1.0) as f32, parts.len(), &self.device))
            .transpose()?;
        let text_time = self.text_time(parts, size)?;
        Ok((text_time.is_some() || guidance.is_some()).then_some(AddedConditioning { text_time, guidance }))
    }

    fn text_time(&self, parts: &[(&TextConditioning, Side)], (w, h): (u32, u32)) -> Result<Option<TextTime>> {
        if !self.info.family.is_sdxl() {
            return Ok(None);
        }
        let pooled: Vec<&Tensor> = parts
            .iter()
            .map(|(c, _)| {
                c.pooled
                    .as_ref()
                    .ok_or_else(|| candle_core::Error::Msg("SDXL prompt without pooled embedding".into()))
            })
            .collect::<candle_core::Result<_>>()?;
        let ids: Vec<Vec<f32>> = parts
            .iter()
            .filter_map(|(_, side)| self.time_ids(*side, (w, h)))
            .collect();
        Ok(Some(TextTime {
            text_embeds: Tensor::cat(&pooled, 0)?,
            time_ids: Tensor::new(ids, &self.device)?,
        }))
    }

    /// The SDXL time ids one side of a `w`×`h` picture is conditioned on (`None` for the
    /// families without): `[h, w, 0, 0, h, w]` (original size, crop corner, target size) for
    /// the base model, `[h, w, 0, 0, score]` for the refiner.
    pub fn time_ids(&self, side: Side, (w, h): (u32, u32)) -> Option<Vec<f32>> {
        let (h, w) = (h as f32, w as f32);
        match (self.info.family, side) {
            (Family::SdxlRefiner, Side::Positive) => Some(vec![h, w, 0.0, 0.0, AESTHETIC_SCORE]),
            (Family::SdxlRefiner, Side::Negative) => Some(vec![h, w, 0.0, 0.0, NEGATIVE_AESTHETIC_SCORE]),
            (Family::Sdxl, _) => Some(vec![h, w, 0.0, 0.0, h, w]),
            (Family::Sd1 | Family::Sd2 | Family::Flux, _) => None,
        }
    }

    /// The full (KL) VAE; `None` when the model's only autoencoder is tiny (SDXS without its
    /// `vae_large`).
    pub fn vae(&self) -> Option<&AutoencoderKL> {
        self.vae.as_deref()
    }

    /// The latent channels (4 for every SD VAE).
    pub fn latent_channels(&self) -> usize {
        self.latent_geometry().0
    }

    /// Latent channels and pixels per latent cell per side, from whichever autoencoder the
    /// model has (both agree when it has two: checked at load).
    fn latent_geometry(&self) -> (usize, usize) {
        match (&self.vae, &self.tiny_vae) {
            (Some(full), _) => (full.config().latent_channels, full.config().downscale()),
            (None, Some(tiny)) => (tiny.config().latent_channels, tiny.config().downscale()),
            (None, None) => unreachable!("a model is loaded with at least one autoencoder"),
        }
    }

    /// The autoencoder a request choosing `choice` gets: the tiny one when the model has no
    /// full one.
    pub fn vae_used(&self, choice: VaeChoice) -> VaeChoice {
        if self.vae.is_none() {
            VaeChoice::Tiny
        } else {
            choice
        }
    }

    /// `self` with a tiny autoencoder (TAESD) that requests may choose instead of the full VAE
    /// ([`VaeChoice::Tiny`]). It must draw in the same latent shape: channels and scale. On an
    /// int8 model its decoder goes to int8 weights too.
    pub fn with_tiny_vae(&self, mut tiny: AutoencoderTiny) -> Result<Self> {
        let (channels, scale) = self.latent_geometry();
        let t = tiny.config();
        if (t.latent_channels, t.downscale()) != (channels, scale) {
            return Err(EngineError::IncompleteModel {
                path: self.info.path.clone(),
                message: format!(
                    "the tiny autoencoder has {} latent channels at 1/{} scale; this model's VAE has {channels} at 1/{scale}",
                    t.latent_channels,
                    t.downscale(),
                ),
            });
        }
        if self.quantization() == Quantization::Int8 && !tiny.is_int8() {
            tiny.quantize_decoder_int8()
                .context(|| format!("{}: tiny autoencoder", self.info.path.display()))?;
        }
        let mut model = self.clone();
        model.tiny_vae = Some(Arc::new(tiny));
        Ok(model)
    }

    /// The tiny autoencoder, when the model has one.
    pub fn tiny_vae(&self) -> Option<&AutoencoderTiny> {
        self.tiny_vae.as_deref()
    }

    /// Decodes latents to images in about [-1, 1] with the chosen autoencoder.
    pub fn decode_latents(&self, latents: &Tensor, vae: VaeChoice) -> Result<Tensor> {
        Ok(match (vae, &self.vae, &self.tiny_vae) {
            (VaeChoice::Full, Some(full), _) | (VaeChoice::Tiny, Some(full), None) => {
                full.decode(&latents.to_dtype(self.vae_dtype)?)?
            }
            (_, _, Some(tiny)) => tiny.decode(latents)?,
            (_, None, None) => unreachable!("a model is loaded with at least one autoencoder"),
        })
    }

    /// Encodes images in [-1, 1] to latents at the model's precision with the chosen
    /// autoencoder.
    pub(crate) fn encode_pixels(&self, images: &Tensor, vae: VaeChoice) -> Result<Tensor> {
        Ok(match (vae, &self.vae, &self.tiny_vae) {
            (VaeChoice::Full, Some(full), _) | (VaeChoice::Tiny, Some(full), None) => {
                full.encode(&images.to_dtype(self.vae_dtype)?)?
            }
            (_, _, Some(tiny)) => tiny.encode(&images.to_dtype(self.dtype)?)?,
            (_, None, None) => unreachable!("a model is loaded with at least one autoencoder"),
        }
        .to_dtype(self.dtype)?)
    }

    /// Pixels per latent cell per side (8 for every SD VAE).
    pub fn vae_scale(&self) -> usize {
        self.latent_geometry().1
    }

    /// If `prompt` is longer than a text encoder's context (so its end would be ignored), that
    /// context's length in tokens; `None` when it fits.
    pub fn prompt_truncated(&self, prompt: &str) -> Option<usize> {
        if let Some(flux) = self.flux() {
            // CLIP gives FLUX only its pooled summary; T5 reads the prompt.
            let n = flux.max_sequence_length;
            return match flux.t5.tokenizer.encode(prompt, n) {
                Ok(t) if t.truncated => Some(n),
                _ => None,
            };
        }
        (0..self.encoders.len())
            .find(|&i| self.tokens(i, prompt).truncated)
            .map(|i| self.encoders[i].tokenizer.max_length())
    }

    /// A prompt as encoder `i` reads it: its embeddings' words as placeholders past the
    /// vocabulary.
    pub(crate) fn tokens(&self, i: usize, prompt: &str) -> crate::tokenizer::Tokens {
        let enc = &self.encoders[i];
        enc.tokenizer
            .encode_with(prompt, &self.words.words, enc.model.config().vocab_size as u32)
    }

    /// How many tokens `prompt` is, by the first text encoder's tokenizer, before truncation and
    /// without the start and end markers.
    pub fn prompt_tokens(&self, prompt: &str) -> usize {
        self.encoders
            .first()
            .map_or(0, |e| e.tokenizer.encode_raw(prompt).len())
    }

    /// Encodes a prompt. An empty prompt on a model with `force_zeros_for_empty_prompt` (SDXL)
    /// gives all-zero embeddings, as diffusers does for the negative prompt.
    pub fn encode_text(&self, prompt: &str, zero_if_empty: bool) -> Result<TextConditioning> {
        let sdxl = self.info.family.is_sdxl();
        let mut contexts = Vec::new();
        let mut pooled = None;
        let mut truncated = false;
        for (i, enc) in self.encoders.iter().enumerate() {
            let tokens = self.tokens(i, prompt);
            truncated |= tokens.truncated;
            let ids = Tensor::new(tokens.ids.as_slice(), &self.device)?.unsqueeze(0)?;
            let out = enc
                .model
                .forward_with(&ids, &[tokens.eos_index], self.words.extra.get(i))
                .context(|| "text encoder".into())?;
            contexts.push(if sdxl {
                out.penultimate
            } else {
                out.last_hidden_state
            });
            pooled = Some(out.pooled);
        }
        let mut context = Tensor::cat(&contexts, 2)?;
        let mut pooled = if sdxl { pooled } else { None };
        if zero_if_empty && prompt.trim().is_empty() && self.info.force_zeros_for_empty_prompt {
            context = context.zeros_like()?;
            pooled = pooled.map(|p| p.zeros_like()).transpose()?;
        }
        Ok(TextConditioning {
            context,
            pooled,
            truncated,
        })
    }
}

/// A VarBuilder over tensors already in memory (cheap clones of shared storage).
pub(crate) fn from_weights<'a>(
    weights: &HashMap<String, Tensor>,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'a> {
    VarBuilder::from_tensors(weights.clone(), dtype, device)
}
