//! FLUX.1 models (schnell, dev, Kontext) in the diffusers layout: what the registry reads of one
//! ([`is_flux`], [`info`]: the family told from the files, every missing part named with where
//! it goes) and the parts only FLUX has ([`FluxParts`]: the T5 encoder and its tokenizer, the
//! transformer, the flow-matching schedule). Its CLIP encoder, VAE and tiny autoencoder load as
//! every family's do ([`crate::model`]); sampling is [`crate::pipeline`]'s `flux` module.

use crate::error::{EngineError, Result};
use crate::model::from_weights;
use crate::models::clip::ClipTextConfig;
use crate::models::flux::{FluxConfig, FluxTransformer2DModel};
use crate::models::t5::{T5Config, T5EncoderModel};
use crate::models::vae::VaeConfig;
use crate::registry::{Family, ModelDefaults, ModelInfo};
use crate::schedulers::flow::FlowMatchConfig;
use crate::schedulers::SchedulerName;
use crate::source::ModelSource;
use crate::t5_tokenizer::T5Tokenizer;
use candle_core::{DType, Device};
use nanoimg_core::ImageSize;

/// The pipelines of the FLUX.1 family `model_index.json` may name.
const PIPELINES: [&str; 5] = [
    "FluxPipeline",
    "FluxImg2ImgPipeline",
    "FluxInpaintPipeline",
    "FluxKontextPipeline",
    "FluxKontextInpaintPipeline",
];

/// Where a FLUX.1 model's parts come from, for messages about a missing one.
const WHERE: &str = "from the model's Hugging Face repository (black-forest-labs/FLUX.1-schnell, -dev or \
                     -Kontext-dev, or `nanoimg models pull` of it)";

/// The T5 tokens FLUX.1 dev and Kontext read (`FluxPipeline`'s default); schnell was distilled
/// with 256, which its model card uses.
const DEV_SEQUENCE: usize = 512;
const SCHNELL_SEQUENCE: usize = 256;

/// Whether the model is a diffusers-layout transformer model (FLUX or another we refuse by name
/// in [`info`]): its index lists a `transformer`.
pub(crate) fn is_flux(source: &ModelSource) -> bool {
    source.checkpoint().is_none() && source.configs().has("transformer")
}

/// What a FLUX folder is, with every part it needs checked to be there.
pub(crate) fn info(source: &ModelSource) -> Result<ModelInfo> {
    let folder = source.configs();
    let path = folder.path();
    let class = folder
        .index()
        .get("_class_name")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    if !PIPELINES.contains(&class.as_str()) {
        return Err(EngineError::IncompleteModel {
            path: path.to_owned(),
            message: format!(
                "{class} is not a family NanoImg runs: it runs FLUX.1 ({}) and the UNet family (SD 1.x/2.x, SDXL)",
                PIPELINES.join(", ")
            ),
        });
    }
    let incomplete = |message: String| EngineError::IncompleteModel {
        path: path.to_owned(),
        message,
    };
    for (component, what) in [
        ("transformer", "the FLUX transformer"),
        ("vae", "the autoencoder (16 latent channels)"),
        ("text_encoder", "the CLIP-L text encoder"),
        ("tokenizer", "the CLIP tokenizer"),
        ("text_encoder_2", "the T5 encoder (T5-XXL)"),
        ("tokenizer_2", "the T5 tokenizer"),
    ] {
        if !folder.has(component) || !path.join(component).is_dir() {
            return Err(incomplete(format!(
                "{what} is missing: put its {component}/ folder in {} ({WHERE})",
                path.display()
            )));
        }
        if component.starts_with("tokenizer") {
            let files: &[&str] = match component {
                "tokenizer" => &["vocab.json", "merges.txt"],
                _ => &["tokenizer.json"],
            };
            if let Some(f) = files.iter().find(|f| !path.join(component).join(f).is_file()) {
                return Err(incomplete(format!("{what} is missing {component}/{f} ({WHERE})")));
            }
        } else {
            folder.weights(component)?;
        }
    }
    let unsupported = |component: &str, reason| EngineError::Unsupported {
        path: path.join(component),
        reason,
    };
    let transformer: FluxConfig = source.config("transformer")?;
    transformer
        .validate()
        .map_err(|r| unsupported("transformer", r))?;
    let vae: VaeConfig = source.config("vae")?;
    vae.validate().map_err(|r| unsupported("vae", r))?;
    let clip: ClipTextConfig = source.config("text_encoder")?;
    let t5: T5Config = source.config("text_encoder_2")?;
    t5.validate().map_err(|r| unsupported("text_encoder_2", r))?;
    flow_config(source)?;
    let fits = FitCheck {
        transformer: &transformer,
        clip_width: clip.hidden_size,
        t5_width: t5.d_model,
        latent_channels: vae.latent_channels,
    };
    fits.check().map_err(incomplete)?;

    let name = source.name();
    let overrides = &source.overrides;
    let kontext = class.starts_with("FluxKontext") || name.to_ascii_lowercase().contains("kontext");
    // schnell has no guidance embedding: 4 steps, as its card runs it. dev and Kontext: 28 steps
    // at their pipelines' guidance (3.5; Kontext's card uses 2.5).
    let schnell = !transformer.guidance_embeds;
    let side = 1024;
    let mut defaults = ModelDefaults {
        steps: if schnell { 4 } else { 28 },
        guidance: match (schnell, kontext) {
            (true, _) => 0.0,
            (false, true) => 2.5,
            (false, false) => 3.5,
        },
        scheduler: SchedulerName::Euler,
        size: ImageSize::new(side, side),
    };
    defaults.apply(overrides)?;
    Ok(ModelInfo {
        name,
        path: source.path().to_owned(),
        family: Family::Flux,
        turbo: overrides.turbo.unwrap_or(schnell),
        inpainting: false,
        embedded_guidance: !schnell,
        kontext,
        own_tiny_vae: false,
        prediction: "flow".into(),
        components: [
            "text_encoder",
            "text_encoder_2",
            "tokenizer",
            "tokenizer_2",
            "transformer",
            "vae",
        ]
        .into_iter()
        .chain(folder.has("scheduler").then_some("scheduler"))
        .map(str::to_owned)
        .collect(),
        size_bytes: source.size_bytes(),
        defaults,
        max_size: overrides.max_size.as_deref().map(str::parse).transpose()?,
        force_zeros_for_empty_prompt: false,
        quantize: overrides.quantize.unwrap_or_default(),
        description: overrides.description.clone(),
    })
}

/// The scheduler folder's flow-matching settings (diffusers' defaults when there is none).
fn flow_config(source: &ModelSource) -> Result<FlowMatchConfig> {
    let folder = source.configs();
    let flow: FlowMatchConfig = match folder.has("scheduler") {
        true => source.config("scheduler")?,
        false => FlowMatchConfig::default(),
    };
    if let Some(class) = folder
        .class_of("scheduler")
        .filter(|c| *c != "FlowMatchEulerDiscreteScheduler")
    {
        return Err(EngineError::Unsupported {
            path: folder.path().join("scheduler"),
            reason: crate::ConfigError::unsupported("_class_name", class),
        });
    }
    flow.validate().map_err(|reason| EngineError::Unsupported {
        path: folder.path().join("scheduler"),
        reason,
    })?;
    Ok(flow)
}

/// The widths the parts of a FLUX model must agree on.
struct FitCheck<'a> {
    transformer: &'a FluxConfig,
    clip_width: usize,
    t5_width: usize,
    latent_channels: usize,
}

impl FitCheck<'_> {
    fn check(&self) -> std::result::Result<(), String> {
        let t = self.transformer;
        if self.clip_width != t.pooled_projection_dim {
            return Err(format!(
                "the CLIP text encoder is {} wide but the transformer's pooled_projection_dim is {}",
                self.clip_width, t.pooled_projection_dim
            ));
        }
        if self.t5_width != t.joint_attention_dim {
            return Err(format!(
                "the T5 encoder is {} wide (d_model) but the transformer's joint_attention_dim is {}",
                self.t5_width, t.joint_attention_dim
            ));
        }
        if t.in_channels != 4 * self.latent_channels {
            return Err(format!(
                "the transformer takes {} channels per token; the VAE's {} latent channels pack to {}",
                t.in_channels,
                self.latent_channels,
                4 * self.latent_channels
            ));
        }
        Ok(())
    }
}

/// T5 with its tokenizer.
pub(crate) struct T5Encoder {
    pub(crate) tokenizer: T5Tokenizer,
    pub(crate) model: T5EncoderModel,
}

/// The parts only a FLUX model has.
pub(crate) struct FluxParts {
    pub(crate) t5: T5Encoder,
    pub(crate) transformer: FluxTransformer2DModel,
    pub(crate) flow: FlowMatchConfig,
    /// The T5 tokens every prompt is padded or cut to.
    pub(crate) max_sequence_length: usize,
}

impl FluxParts {
    /// Loads T5 (with its tokenizer), the transformer and the schedule at `dtype`.
    pub(crate) fn load(source: &ModelSource, dtype: DType, device: &Device) -> Result<Self> {
        let path = source.path();
        let tokenizer = T5Tokenizer::from_dir(&source.configs().component_dir("tokenizer_2")?)?;
        let t5_config: T5Config = source.config("text_encoder_2")?;
        let t5_weights = source.weights("text_encoder_2", dtype, device)?;
        let model = T5EncoderModel::new(from_weights(&t5_weights, dtype, device), &t5_config)
            .map_err(|e| e.at(&path.join("text_encoder_2")))?;
        let config: FluxConfig = source.config("transformer")?;
        let weights = source.weights("transformer", dtype, device)?;
        let transformer = FluxTransformer2DModel::new(from_weights(&weights, dtype, device), &config)
            .map_err(|e| e.at(&path.join("transformer")))?;
        let max_sequence_length = match config.guidance_embeds {
            true => DEV_SEQUENCE,
            false => SCHNELL_SEQUENCE,
        };
        Ok(Self {
            t5: T5Encoder { tokenizer, model },
            transformer,
            flow: flow_config(source)?,
            max_sequence_length,
        })
    }

    /// Whether the loaded parts fit the CLIP encoder and the VAE loaded beside them.
    pub(crate) fn check_fits(
        &self,
        clip: &ClipTextConfig,
        latent_channels: usize,
    ) -> std::result::Result<(), String> {
        FitCheck {
            transformer: self.transformer.config(),
            clip_width: clip.hidden_size,
            t5_width: self.t5.model.config().d_model,
            latent_channels,
        }
        .check()
    }
}
