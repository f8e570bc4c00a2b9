//! Random-weight models in the real on-disk format, for tests and benchmarks.
//!
//! The model constructors themselves enumerate the tensors: each component is built once
//! against a VarBuilder whose backend invents a tensor for every name and shape it is asked for,
//! and those tensors are saved as `.safetensors` beside a real diffusers `config.json`. Loading
//! the folder then runs exactly the code that loads a downloaded checkpoint.

use crate::error::{EngineError, Result, TensorContext};
use crate::models::clip::{ClipModelConfig, ClipTextConfig, ClipTextModel, ClipVisionTransformer};
use crate::models::dinov2::{Dinov2Config, Dinov2Model};
use crate::models::flux::{FluxConfig, FluxTransformer2DModel};
use crate::models::t5::{T5Config, T5EncoderModel};
use crate::models::taesd::{AutoencoderTiny, TinyVaeConfig};
use crate::models::unet::{UNet2DConditionModel, UNetConfig};
use crate::models::vae::{AutoencoderKL, VaeConfig};
use crate::registry::Family;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::{Init, VarBuilder};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

/// The configs of one model to synthesise.
#[derive(Debug, Clone)]
pub struct SyntheticSpec {
    pub family: Family,
    pub unet: Value,
    /// An `AutoencoderKL` config, or an `AutoencoderTiny` one (SDXS's own tiny decoder).
    pub vae: Value,
    /// The full autoencoder SDXS keeps beside a tiny `vae`, unlisted in `model_index.json`.
    pub vae_large: Option<Value>,
    /// `None` for the SDXL refiner, which has only the second.
    pub text_encoder: Option<Value>,
    pub text_encoder_2: Option<Value>,
    pub scheduler: Value,
    /// Written as `nanoimg.json` when set.
    pub overrides: Option<Value>,
}

/// Merges of the tiny tokenizer written with synthetic models.
const TINY_MERGES: [&str; 4] = ["c a", "ca t</w>", "d o", "do g</w>"];

/// The tiny vocabulary: 256 bytes, 256 bytes + `</w>`, the merges, BOS, EOS.
const TINY_VOCAB: usize = 514 + TINY_MERGES.len();

fn clip_config(
    hidden: usize,
    layers: usize,
    heads: usize,
    act: &str,
    vocab: usize,
    projection: Option<usize>,
) -> Value {
    let mut c = json!({
        "architectures": [if projection.is_some() { "CLIPTextModelWithProjection" } else { "CLIPTextModel" }],
        "model_type": "clip_text_model",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": hidden * 4,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "max_position_embeddings": 77,
        "hidden_act": act,
        "layer_norm_eps": 1e-5,
        // BOS and EOS are the last two ids of every CLIP vocabulary; transformers pools at EOS.
        "bos_token_id": vocab - 2, "eos_token_id": vocab - 1, "pad_token_id": vocab - 1,
    });
    if let Some(p) = projection {
        c["projection_dim"] = json!(p);
    }
    c
}

fn scheduler_config(prediction: &str, spacing: &str) -> Value {
    json!({
        "_class_name": "EulerDiscreteScheduler",
        "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "prediction_type": prediction,
        "timestep_spacing": spacing, "steps_offset": 1, "set_alpha_to_one": false,
    })
}

fn lcm_scheduler_config() -> Value {
    json!({
        "_class_name": "LCMScheduler",
        "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "prediction_type": "epsilon",
        "original_inference_steps": 50, "timestep_spacing": "leading", "steps_offset": 1,
        "set_alpha_to_one": true, "clip_sample": false,
    })
}

fn vae_config(channels: &[usize], layers: usize, groups: usize, scaling: f64, sample: usize) -> Value {
    json!({
        "_class_name": "AutoencoderKL",
        "in_channels": 3, "out_channels": 3, "latent_channels": 4,
        "block_out_channels": channels,
        "down_block_types": vec!["DownEncoderBlock2D"; channels.len()],
        "up_block_types": vec!["UpDecoderBlock2D"; channels.len()],
        "layers_per_block": layers, "norm_num_groups": groups,
        "scaling_factor": scaling, "sample_size": sample, "act_fn": "silu",
    })
}

impl SyntheticSpec {
    /// A tiny model of `family` (a few thousand parameters per layer) for tests: 64×64 images,
    /// 8×8 latents, two UNet levels, a four-level VAE with 8–16 channels.
    pub fn tiny(family: Family) -> Self {
        let te = |act: &str, proj| clip_config(32, 2, 2, act, TINY_VOCAB, proj);
        let mut unet = json!({
            "_class_name": "UNet2DConditionModel",
            "in_channels": 4, "out_channels": 4, "sample_size": 8,
            "block_out_channels": [32, 64],
            "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
            "layers_per_block": 1, "attention_head_dim": [2, 4],
            "cross_attention_dim": 32, "norm_num_groups": 8,
        });
        let (te2, sched) = match family {
            // A FLUX spec is refused by `write_model`: FLUX models are [`FluxSpec`]s.
            Family::Sd1 | Family::Flux => (None, scheduler_config("epsilon", "leading")),
            Family::Sd2 => {
                unet["use_linear_projection"] = json!(true);
                (None, scheduler_config("v_prediction", "leading"))
            }
            Family::Sdxl | Family::SdxlRefiner => {
                unet["down_block_types"] = json!(["DownBlock2D", "CrossAttnDownBlock2D"]);
                unet["up_block_types"] = json!(["CrossAttnUpBlock2D", "UpBlock2D"]);
                unet["transformer_layers_per_block"] = json!([1, 2]);
                unet["use_linear_projection"] = json!(true);
                // The second encoder is wider than the first, as OpenCLIP bigG is than CLIP-L
                // (tools tell SDXL's two encoders apart by their widths).
                unet["cross_attention_dim"] = json!(32 + 48);
                unet["addition_embed_type"] = json!("text_time");
                unet["addition_time_embed_dim"] = json!(8);
                unet["projection_class_embeddings_input_dim"] = json!(16 + 6 * 8);
                let te2 = clip_config(48, 2, 2, "gelu", TINY_VOCAB, Some(16));
                (Some(te2), scheduler_config("epsilon", "leading"))
            }
        };
        let act = if family == Family::Sd1 {
            "quick_gelu"
        } else {
            "gelu"
        };
        Self {
            family,
            unet,
            vae: vae_config(&[8, 8, 16, 16], 1, 8, 0.18215, 64),
            vae_large: None,
            text_encoder: Some(te(act, None)),
            text_encoder_2: te2,
            scheduler: sched,
            overrides: None,
        }
    }

    /// A tiny SDXL refiner: the second text encoder only, and five time ids (size, crop corner,
    /// aesthetic score) in the UNet's added embedding.
    pub fn tiny_sdxl_refiner() -> Self {
        let mut s = Self::tiny(Family::SdxlRefiner);
        s.text_encoder = None;
        s.unet["cross_attention_dim"] = json!(48);
        s.unet["projection_class_embeddings_input_dim"] = json!(16 + 5 * 8);
        s
    }

    /// A tiny native inpainting model (9-channel UNet input).
    pub fn tiny_inpainting() -> Self {
        let mut s = Self::tiny(Family::Sd1);
        s.unet["in_channels"] = json!(9);
        s
    }

    /// A tiny LCM-distilled model: a UNet that takes the guidance scale as an embedding
    /// (`time_cond_proj_dim`, as LCM_Dreamshaper_v7's 256) and diffusers' LCMScheduler.
    pub fn tiny_lcm() -> Self {
        let mut s = Self::tiny(Family::Sd1);
        s.unet["time_cond_proj_dim"] = json!(16);
        s.scheduler = lcm_scheduler_config();
        s
    }

    /// A tiny model in SDXS's layout: a pruned UNet (no middle block, no attention at the
    /// highest resolution) and a tiny autoencoder as the pipeline's `vae`, with the full one
    /// as `vae_large` when `with_large` is set.
    pub fn tiny_sdxs(with_large: bool) -> Self {
        let mut s = Self::tiny(Family::Sd2);
        s.unet["block_out_channels"] = json!([16, 32, 64]);
        s.unet["down_block_types"] = json!(["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]);
        s.unet["up_block_types"] = json!(["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]);
        s.unet["attention_head_dim"] = json!([2, 2, 4]);
        s.unet["mid_block_type"] = Value::Null;
        s.unet["sample_size"] = json!(8);
        s.scheduler = scheduler_config("epsilon", "trailing");
        s.vae_large = with_large.then(|| s.vae.clone());
        s.vae = tiny_taesd_config();
        s
    }

    /// SDXS-512's architecture as its paper describes it (SD 2.1-base's UNet without the
    /// middle block, without the lowest-resolution stage on both sides and without the
    /// transformers of the highest-resolution stage; OpenCLIP ViT-H; a TAESD-sized decoder as
    /// `vae`), as a one-step model.
    pub fn sdxs512() -> Self {
        let mut s = Self::sd_turbo();
        s.unet["block_out_channels"] = json!([320, 640, 1280]);
        s.unet["down_block_types"] = json!(["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]);
        s.unet["up_block_types"] = json!(["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]);
        s.unet["attention_head_dim"] = json!([5, 10, 20]);
        s.unet["mid_block_type"] = Value::Null;
        s.vae = taesd_config();
        s
    }

    /// The real SD 1.5 architecture (860M-parameter UNet, CLIP ViT-L/14, 512×512).
    pub fn sd15() -> Self {
        Self {
            family: Family::Sd1,
            unet: json!({
                "_class_name": "UNet2DConditionModel",
                "in_channels": 4, "out_channels": 4, "sample_size": 64,
                "block_out_channels": [320, 640, 1280, 1280],
                "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
                "layers_per_block": 2, "attention_head_dim": 8, "cross_attention_dim": 768,
                "norm_num_groups": 32,
            }),
            vae: vae_config(&[128, 256, 512, 512], 2, 32, 0.18215, 512),
            vae_large: None,
            text_encoder: Some(clip_config(768, 12, 12, "quick_gelu", 49408, None)),
            text_encoder_2: None,
            scheduler: scheduler_config("epsilon", "leading"),
            overrides: None,
        }
    }

    /// The real SD 2.1-base / SD-Turbo architecture (OpenCLIP ViT-H text encoder, linear
    /// projections, 5–20 heads of 64), as a Turbo model: 1 step, no guidance, trailing spacing.
    pub fn sd_turbo() -> Self {
        let mut s = Self::sd15();
        s.family = Family::Sd2;
        s.unet["attention_head_dim"] = json!([5, 10, 20, 20]);
        s.unet["cross_attention_dim"] = json!(1024);
        s.unet["use_linear_projection"] = json!(true);
        s.text_encoder = Some(clip_config(1024, 23, 16, "gelu", 49408, None));
        s.scheduler = scheduler_config("epsilon", "trailing");
        s.overrides = Some(json!({"turbo": true}));
        s
    }
}

/// A VarBuilder backend that invents a tensor for every request and remembers it.
struct Recorder {
    rng: Mutex<ChaCha8Rng>,
    tensors: Mutex<HashMap<String, Tensor>>,
}

impl Recorder {
    fn new(seed: u64) -> Self {
        Self {
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            tensors: Mutex::new(HashMap::new()),
        }
    }

    fn take(self) -> HashMap<String, Tensor> {
        self.tensors
            .into_inner()
            .expect("recorder lock is never poisoned")
    }
}

impl candle_nn::var_builder::SimpleBackend for &Recorder {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Some(t) = self.tensors.lock().expect("recorder lock").get(name) {
            return Ok(t.clone());
        }
        let dims = shape.dims().to_vec();
        let n = shape.elem_count();
        let t = match init {
            Init::Const(v) => Tensor::full(v as f32, dims.as_slice(), dev)?,
            _ => {
                // Weights ~ N(0, 1/fan_in) keep activations in range through deep stacks.
                let fan_in: usize = dims.iter().skip(1).product::<usize>().max(1);
                let std = if dims.len() == 1 {
                    0.02
                } else {
                    (1.0 / fan_in as f64).sqrt()
                };
                let normal = Normal::new(0.0f32, std as f32).expect("std is positive");
                let mut rng = self.rng.lock().expect("recorder lock");
                let v: Vec<f32> = (0..n).map(|_| normal.sample(&mut *rng)).collect();
                Tensor::from_vec(v, dims.as_slice(), dev)?
            }
        }
        .to_dtype(dtype)?;
        self.tensors
            .lock()
            .expect("recorder lock")
            .insert(name.to_owned(), t.clone());
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("synthetic backend cannot invent {name} without a shape")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        // Write the hub's layout: CLIP under `text_model.`, the VAE with modern `to_q` names.
        name.starts_with("text_model.")
    }
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).expect("JSON values serialise");
    std::fs::write(path, text).map_err(|source| EngineError::Io {
        path: path.to_owned(),
        source,
    })
}

fn mkdir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|source| EngineError::Io {
        path: path.to_owned(),
        source,
    })
}

fn parse<T: serde::de::DeserializeOwned>(v: &Value, what: &str) -> Result<T> {
    serde_json::from_value(v.clone()).map_err(|source| EngineError::Json {
        path: what.into(),
        source,
    })
}

/// Builds one component with random weights and saves `config.json` + weights in `dir`.
fn write_component(
    dir: &Path,
    config: &Value,
    file: &str,
    seed: u64,
    build: impl FnOnce(VarBuilder) -> Result<()>,
) -> Result<()> {
    mkdir(dir)?;
    write_json(&dir.join("config.json"), config)?;
    let recorder = Recorder::new(seed);
    build(VarBuilder::from_backend(
        Box::new(&recorder),
        DType::F32,
        Device::Cpu,
    ))?;
    let tensors = recorder.take();
    candle_core::safetensors::save(&tensors, dir.join(file)).context(|| format!("writing {}", dir.display()))
}

/// Writes a CLIP tokenizer folder: the 256 byte symbols, their `</w>` forms, the results of
/// `merges` (each `"a b"`), then BOS and EOS, as CLIP's `vocab.json`/`merges.txt` order them.
pub fn write_tokenizer(dir: &Path, max_length: usize, merges: &[&str]) -> Result<()> {
    mkdir(dir)?;
    let table = {
        let mut printable: Vec<u32> = (u32::from(b'!')..=u32::from(b'~')).collect();
        printable.extend(0xA1..=0xAC);
        printable.extend(0xAE..=0xFF);
        let mut extra = 0;
        (0..256u32)
            .map(|b| {
                if printable.contains(&b) {
                    char::from_u32(b).expect("valid")
                } else {
                    extra += 1;
                    char::from_u32(255 + extra).expect("valid")
                }
            })
            .collect::<Vec<char>>()
    };
    let mut vocab: Vec<String> = table.iter().map(|c| c.to_string()).collect();
    vocab.extend(table.iter().map(|c| format!("{c}</w>")));
    for m in merges {
        vocab.push(m.replace(' ', ""));
    }
    vocab.push("<|startoftext|>".into());
    vocab.push("<|endoftext|>".into());
    let map: serde_json::Map<String, Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    write_json(&dir.join("vocab.json"), &Value::Object(map))?;
    let mut merges_txt = String::from("#version: 0.2\n");
    for m in merges {
        merges_txt.push_str(m);
        merges_txt.push('\n');
    }
    std::fs::write(dir.join("merges.txt"), merges_txt).map_err(|source| EngineError::Io {
        path: dir.join("merges.txt"),
        source,
    })?;
    write_json(
        &dir.join("tokenizer_config.json"),
        &json!({"model_max_length": max_length, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}),
    )?;
    write_json(
        &dir.join("special_tokens_map.json"),
        &json!({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}),
    )
}

/// A FLUX model asked of a writer of UNet models.
fn not_a_unet(writer: &str) -> EngineError {
    EngineError::InvalidParam(nanoimg_core::InvalidParam::new(
        "family",
        format!("{writer} writes UNet models; a FLUX model is written by write_flux_model"),
    ))
}

/// Writes a complete diffusers-layout model folder with random weights drawn from `seed`.
pub fn write_model(dir: &Path, spec: &SyntheticSpec, seed: u64) -> Result<()> {
    mkdir(dir)?;
    let pipeline = match spec.family {
        Family::Sdxl => "StableDiffusionXLPipeline",
        Family::SdxlRefiner => "StableDiffusionXLImg2ImgPipeline",
        Family::Sd1 | Family::Sd2 => "StableDiffusionPipeline",
        Family::Flux => return Err(not_a_unet("write_model")),
    };
    let scheduler_class = spec.scheduler["_class_name"]
        .as_str()
        .unwrap_or("EulerDiscreteScheduler");
    let vae_class = spec.vae["_class_name"].as_str().unwrap_or("AutoencoderKL");
    let mut index = json!({
        "_class_name": pipeline,
        "_diffusers_version": "0.42.1",
        "scheduler": ["diffusers", scheduler_class],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", vae_class],
    });
    let clip = |sub: &str, config: &Value, seed: u64| -> Result<()> {
        let cfg: ClipTextConfig = parse(config, sub)?;
        write_component(&dir.join(sub), config, "model.safetensors", seed, |vb| {
            ClipTextModel::new(vb, &cfg)
                .map(drop)
                .map_err(|e| e.at(&dir.join(sub)))
        })?;
        let max_len = cfg.max_position_embeddings;
        let tok = sub.replace("text_encoder", "tokenizer");
        write_tokenizer(&dir.join(tok), max_len, &TINY_MERGES)
    };
    match &spec.text_encoder {
        Some(te) => clip("text_encoder", te, seed)?,
        None => {
            // As the refiner's own model_index.json says it has none.
            index["text_encoder"] = json!([null, null]);
            index["tokenizer"] = json!([null, null]);
        }
    }
    if let Some(te2) = &spec.text_encoder_2 {
        clip("text_encoder_2", te2, seed.wrapping_add(1))?;
        index["text_encoder_2"] = json!(["transformers", "CLIPTextModelWithProjection"]);
        index["tokenizer_2"] = json!(["transformers", "CLIPTokenizer"]);
        index["force_zeros_for_empty_prompt"] = json!(spec.family == Family::Sdxl);
    }
    if spec.family == Family::SdxlRefiner {
        index["requires_aesthetics_score"] = json!(true);
    }
    let unet_cfg: UNetConfig = parse(&spec.unet, "unet")?;
    write_component(
        &dir.join("unet"),
        &spec.unet,
        "diffusion_pytorch_model.safetensors",
        seed.wrapping_add(2),
        |vb| UNet2DConditionModel::new(vb, &unet_cfg).map(drop),
    )?;
    let kl = |sub: &str, config: &Value, seed: u64| -> Result<()> {
        let cfg: VaeConfig = parse(config, sub)?;
        write_component(
            &dir.join(sub),
            config,
            "diffusion_pytorch_model.safetensors",
            seed,
            |vb| AutoencoderKL::new(vb, &cfg).map(drop).context(|| sub.into()),
        )
    };
    if vae_class == "AutoencoderTiny" {
        write_taesd(&dir.join("vae"), &spec.vae, seed.wrapping_add(3))?;
    } else {
        kl("vae", &spec.vae, seed.wrapping_add(3))?;
    }
    if let Some(large) = &spec.vae_large {
        kl("vae_large", large, seed.wrapping_add(4))?;
    }
    mkdir(&dir.join("scheduler"))?;
    write_json(
        &dir.join("scheduler").join("scheduler_config.json"),
        &spec.scheduler,
    )?;
    write_json(&dir.join("model_index.json"), &index)?;
    if let Some(o) = &spec.overrides {
        write_json(&dir.join("nanoimg.json"), o)?;
    }
    Ok(())
}

/// A tiny `AutoencoderTiny` config: TAESD's geometry (four levels, 8× per side, ReLU blocks)
/// with 8 channels and fewer blocks, for tests and parity.
pub fn tiny_taesd_config() -> Value {
    let mut c = taesd_config();
    c["encoder_block_out_channels"] = json!([8, 8, 8, 8]);
    c["decoder_block_out_channels"] = json!([8, 8, 8, 8]);
    c["num_encoder_blocks"] = json!([1, 2, 1, 2]);
    c["num_decoder_blocks"] = json!([2, 1, 2, 1]);
    c
}

/// TAESD's real config (`madebyollin/taesd`, and TAESDXL's: they differ only in weights).
pub fn taesd_config() -> Value {
    json!({
        "_class_name": "AutoencoderTiny",
        "encoder_block_out_channels": [64, 64, 64, 64], "decoder_block_out_channels": [64, 64, 64, 64],
        "num_encoder_blocks": [1, 3, 3, 3], "num_decoder_blocks": [3, 3, 3, 1],
        "latent_channels": 4, "act_fn": "relu", "upsample_fn": "nearest",
        "upsampling_scaling_factor": 2, "scaling_factor": 1.0, "shift_factor": 0.0,
        "latent_magnitude": 3, "latent_shift": 0.5, "force_upcast": false,
    })
}

/// Writes an `AutoencoderTiny` folder (`config.json`, `diffusion_pytorch_model.safetensors`)
/// with random weights drawn from `seed`.
pub fn write_taesd(dir: &Path, config: &Value, seed: u64) -> Result<()> {
    let cfg: TinyVaeConfig = parse(config, "taesd")?;
    write_component(dir, config, "diffusion_pytorch_model.safetensors", seed, |vb| {
        AutoencoderTiny::new(vb, &cfg)
            .map(drop)
            .context(|| "taesd".into())
    })
}

/// A tiny `Dinov2Model` config: DINOv2's geometry (14-px patches, learnt at 518 px, so 224-px
/// inputs resize the position grid) with 32 channels and 2 layers.
pub fn tiny_dinov2_config() -> Value {
    json!({
        "architectures": ["Dinov2Model"], "model_type": "dinov2",
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "mlp_ratio": 4,
        "patch_size": 14, "image_size": 518, "num_channels": 3, "hidden_act": "gelu",
        "layer_norm_eps": 1e-6, "layerscale_value": 1.0, "qkv_bias": true, "use_swiglu_ffn": false,
    })
}

/// A tiny FLUX.1 dev transformer config (guidance embedded; one double-stream and two
/// single-stream blocks of 2 heads × 16 channels, rotary axes 4 + 6 + 6), for tests and parity.
pub fn tiny_flux_config() -> Value {
    json!({
        "_class_name": "FluxTransformer2DModel", "patch_size": 1, "in_channels": 16,
        "num_layers": 1, "num_single_layers": 2, "attention_head_dim": 16, "num_attention_heads": 2,
        "joint_attention_dim": 32, "pooled_projection_dim": 16, "guidance_embeds": true,
        "axes_dims_rope": [4, 6, 6],
    })
}

/// Writes a diffusers `FluxTransformer2DModel` folder (`config.json`,
/// `diffusion_pytorch_model.safetensors`) with random weights drawn from `seed`.
pub fn write_flux_transformer(dir: &Path, config: &Value, seed: u64) -> Result<()> {
    let cfg: FluxConfig = parse(config, "flux config")?;
    write_component(dir, config, "diffusion_pytorch_model.safetensors", seed, |vb| {
        FluxTransformer2DModel::new(vb, &cfg)
            .map(drop)
            .map_err(|e| e.at(dir))
    })
}

/// A tiny VAE in FLUX.1's configuration: 16 latent channels, a scaling and a shift factor, no
/// quant convolutions.
pub fn tiny_flux_vae_config() -> Value {
    let mut c = vae_config(&[8, 8, 16, 16], 1, 8, 0.3611, 64);
    c["latent_channels"] = json!(16);
    c["shift_factor"] = json!(0.1159);
    c["use_quant_conv"] = json!(false);
    c["use_post_quant_conv"] = json!(false);
    c
}

/// The configs of one FLUX.1 model to synthesise (a whole diffusers pipeline folder).
#[derive(Debug, Clone)]
pub struct FluxSpec {
    pub transformer: Value,
    pub vae: Value,
    /// CLIP-L's place: a `CLIPTextModel` as wide as the transformer's `pooled_projection_dim`.
    pub text_encoder: Value,
    /// T5's place: as wide as the transformer's `joint_attention_dim`.
    pub text_encoder_2: Value,
    pub scheduler: Value,
    /// `FluxKontextPipeline` rather than `FluxPipeline`.
    pub kontext: bool,
    /// Written as `nanoimg.json` when set.
    pub overrides: Option<Value>,
}

impl FluxSpec {
    /// A tiny FLUX.1 model for tests: dev (guidance embedded, dynamic shift) or schnell (neither),
    /// optionally Kontext; 64×64 pictures, 8×8 latents of 16 channels, 16 image tokens.
    pub fn tiny(dev: bool, kontext: bool) -> Self {
        let mut transformer = tiny_flux_config();
        transformer["in_channels"] = json!(64);
        transformer["pooled_projection_dim"] = json!(32);
        transformer["guidance_embeds"] = json!(dev);
        Self {
            transformer,
            vae: tiny_flux_vae_config(),
            text_encoder: clip_config(32, 2, 2, "quick_gelu", TINY_VOCAB, None),
            text_encoder_2: tiny_t5_config(),
            scheduler: flow_scheduler_config(dev),
            kontext,
            overrides: Some(json!({"size": "64x64"})),
        }
    }
}

/// `FlowMatchEulerDiscreteScheduler` as FLUX.1's repositories configure it: dev and Kontext
/// shift by the picture's token count; schnell does not shift.
fn flow_scheduler_config(dynamic: bool) -> Value {
    json!({
        "_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000,
        "shift": if dynamic { 3.0 } else { 1.0 }, "use_dynamic_shifting": dynamic,
        "base_shift": 0.5, "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096,
    })
}

/// Writes a complete diffusers-layout FLUX.1 pipeline folder with random weights drawn from
/// `seed`: `transformer/`, `vae/`, `text_encoder/` + `tokenizer/` (CLIP), `text_encoder_2/` +
/// `tokenizer_2/` (T5), `scheduler/`.
pub fn write_flux_model(dir: &Path, spec: &FluxSpec, seed: u64) -> Result<()> {
    mkdir(dir)?;
    write_flux_transformer(&dir.join("transformer"), &spec.transformer, seed.wrapping_add(2))?;
    write_vae(&dir.join("vae"), &spec.vae, seed.wrapping_add(3))?;
    let clip: ClipTextConfig = parse(&spec.text_encoder, "text_encoder")?;
    write_component(
        &dir.join("text_encoder"),
        &spec.text_encoder,
        "model.safetensors",
        seed,
        |vb| {
            ClipTextModel::new(vb, &clip)
                .map(drop)
                .map_err(|e| e.at(&dir.join("text_encoder")))
        },
    )?;
    write_tokenizer(&dir.join("tokenizer"), clip.max_position_embeddings, &TINY_MERGES)?;
    write_t5(
        &dir.join("text_encoder_2"),
        &spec.text_encoder_2,
        seed.wrapping_add(1),
    )?;
    write_t5_tokenizer(&dir.join("tokenizer_2"))?;
    mkdir(&dir.join("scheduler"))?;
    write_json(
        &dir.join("scheduler").join("scheduler_config.json"),
        &spec.scheduler,
    )?;
    let pipeline = if spec.kontext {
        "FluxKontextPipeline"
    } else {
        "FluxPipeline"
    };
    write_json(
        &dir.join("model_index.json"),
        &json!({
            "_class_name": pipeline, "_diffusers_version": "0.42.1",
            "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "text_encoder_2": ["transformers", "T5EncoderModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "tokenizer_2": ["transformers", "T5TokenizerFast"],
            "transformer": ["diffusers", "FluxTransformer2DModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        }),
    )?;
    if let Some(o) = &spec.overrides {
        write_json(&dir.join("nanoimg.json"), o)?;
    }
    Ok(())
}

/// Writes a diffusers `AutoencoderKL` folder with random weights drawn from `seed`.
pub fn write_vae(dir: &Path, config: &Value, seed: u64) -> Result<()> {
    let cfg: VaeConfig = parse(config, "vae config")?;
    write_component(dir, config, "diffusion_pytorch_model.safetensors", seed, |vb| {
        AutoencoderKL::new(vb, &cfg).map(drop).context(|| "vae".into())
    })
}

/// Writes a tiny T5 tokenizer (`tokenizer.json`: a SentencePiece unigram model with T5's
/// special tokens, metaspace pre-tokenizer and `</s>` appended) into `dir`: the pieces of
/// "a cat and a dog", single letters and digits, and a few pieces the scores must choose
/// between.
pub fn write_t5_tokenizer(dir: &Path) -> Result<()> {
    mkdir(dir)?;
    let mut vocab: Vec<(String, f64)> =
        vec![("<pad>".into(), 0.0), ("</s>".into(), 0.0), ("<unk>".into(), 0.0)];
    for (piece, score) in [
        ("▁", -2.0),
        ("▁a", -3.0),
        ("▁cat", -4.0),
        ("▁and", -4.5),
        ("▁dog", -5.0),
        ("▁do", -6.0),
        ("g", -7.5),
        ("▁friend", -5.5),
        ("s", -3.5),
        ("!", -4.0),
        (",", -4.0),
    ] {
        vocab.push((piece.into(), score));
    }
    for c in ('a'..='z').chain('0'..='9') {
        if !vocab.iter().any(|(p, _)| p == &c.to_string()) {
            vocab.push((c.to_string(), -10.0));
        }
    }
    let special = |id: usize, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
               "normalized": false, "special": true})
    };
    let metaspace =
        json!({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true});
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, "<pad>"), special(1, "</s>"), special(2, "<unk>")],
        "normalizer": null,
        "pre_tokenizer": metaspace,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "special_tokens": {"</s>": {"id": "</s>", "ids": [1], "tokens": ["</s>"]}},
        },
        "decoder": metaspace,
        "model": {"type": "Unigram", "unk_id": 2, "vocab": vocab, "byte_fallback": false},
    });
    write_json(&dir.join("tokenizer.json"), &tokenizer)?;
    write_json(
        &dir.join("tokenizer_config.json"),
        &json!({"tokenizer_class": "T5Tokenizer", "eos_token": "</s>", "pad_token": "<pad>",
                "unk_token": "<unk>", "model_max_length": 512}),
    )
}

/// A tiny T5 v1.1 encoder config (gated GELU, no biases, 32 position buckets: FLUX's T5-XXL
/// narrowed to 32 channels and 2 layers), for tests and parity.
pub fn tiny_t5_config() -> Value {
    json!({
        "architectures": ["T5EncoderModel"], "model_type": "t5", "vocab_size": 128,
        "d_model": 32, "d_kv": 8, "d_ff": 48, "num_layers": 2, "num_heads": 4,
        "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
        "layer_norm_epsilon": 1e-6, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": false,
    })
}

/// Writes a transformers `T5EncoderModel` folder (`config.json`, `model.safetensors`) with
/// random weights drawn from `seed`, and the tiny tokenizer ([`write_t5_tokenizer`]).
pub fn write_t5(dir: &Path, config: &Value, seed: u64) -> Result<()> {
    let cfg: T5Config = parse(config, "t5 config")?;
    write_component(dir, config, "model.safetensors", seed, |vb| {
        T5EncoderModel::new(vb, &cfg).map(drop).map_err(|e| e.at(dir))
    })?;
    write_t5_tokenizer(dir)
}

/// A tiny `CLIPModel` config: ViT-B/32's geometry at 224 px with 32 channels and 2 layers per
/// tower, the tiny tokenizer's vocabulary, a 16-number joint space.
pub fn tiny_clip_config() -> Value {
    let tower = json!({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5});
    let mut text = tower.clone();
    text["vocab_size"] = json!(TINY_VOCAB);
    text["max_position_embeddings"] = json!(77);
    // BOS and EOS are the last two ids of every CLIP vocabulary; transformers pools at EOS.
    text["bos_token_id"] = json!(TINY_VOCAB - 2);
    text["eos_token_id"] = json!(TINY_VOCAB - 1);
    text["pad_token_id"] = json!(TINY_VOCAB - 1);
    let mut vision = tower;
    vision["image_size"] = json!(224);
    vision["patch_size"] = json!(32);
    json!({
        "architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": 16,
        "logit_scale_init_value": 2.6592, "text_config": text, "vision_config": vision,
    })
}

/// `facebook/dinov2-small`'s config (22 M parameters), for timing with random weights.
pub fn dinov2_small_config() -> Value {
    let mut c = tiny_dinov2_config();
    for (k, v) in [
        ("hidden_size", 384),
        ("num_hidden_layers", 12),
        ("num_attention_heads", 6),
    ] {
        c[k] = json!(v);
    }
    c
}

/// `openai/clip-vit-base-patch32`'s config (151 M parameters), for timing with random weights.
pub fn clip_vit_b32_config() -> Value {
    let mut c = tiny_clip_config();
    c["projection_dim"] = json!(512);
    for (tower, hidden, heads) in [("text_config", 512, 8), ("vision_config", 768, 12)] {
        c[tower]["hidden_size"] = json!(hidden);
        c[tower]["intermediate_size"] = json!(4 * hidden);
        c[tower]["num_hidden_layers"] = json!(12);
        c[tower]["num_attention_heads"] = json!(heads);
    }
    c
}

/// Writes a transformers `Dinov2Model` folder (`config.json`, `model.safetensors`,
/// `preprocessor_config.json` as `BitImageProcessor` saves it) with random weights.
pub fn write_dinov2(dir: &Path, config: &Value, seed: u64) -> Result<()> {
    let cfg: Dinov2Config = parse(config, "dinov2 config")?;
    write_component(dir, config, "model.safetensors", seed, |vb| {
        vb.pp("embeddings").get((1, cfg.hidden_size), "mask_token")?;
        Dinov2Model::new(vb, &cfg).map(drop).map_err(|e| e.at(dir))
    })?;
    write_json(
        &dir.join("preprocessor_config.json"),
        &json!({
            "image_processor_type": "BitImageProcessor", "do_resize": true,
            "size": {"shortest_edge": 256}, "resample": 3, "do_center_crop": true,
            "crop_size": {"height": 224, "width": 224}, "do_rescale": true,
            "rescale_factor": 1.0 / 255.0, "do_normalize": true,
            "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
        }),
    )
}

/// Writes a transformers `CLIPModel` folder (`config.json`, `model.safetensors`, the tokenizer
/// files, `preprocessor_config.json` as `CLIPImageProcessor` saves it) with random weights.
pub fn write_clip(dir: &Path, config: &Value, seed: u64) -> Result<()> {
    let ClipModelConfig {
        text_config: text,
        vision_config: vision,
        projection_dim: projection,
    } = parse(config, "clip config")?;
    write_component(dir, config, "model.safetensors", seed, |vb| {
        ClipVisionTransformer::new(vb.pp("vision_model"), &vision).map_err(|e| e.at(dir))?;
        ClipTextModel::new(vb.clone(), &text).map_err(|e| e.at(dir))?;
        candle_nn::linear_no_bias(vision.hidden_size, projection, vb.pp("visual_projection"))?;
        candle_nn::linear_no_bias(text.hidden_size, projection, vb.pp("text_projection"))?;
        vb.get_with_hints((), "logit_scale", Init::Const(2.6592))?;
        Ok(())
    })?;
    write_tokenizer(dir, text.max_position_embeddings, &TINY_MERGES)?;
    let side = vision.image_size;
    write_json(
        &dir.join("preprocessor_config.json"),
        &json!({
            "image_processor_type": "CLIPImageProcessor", "do_resize": true,
            "size": {"shortest_edge": side}, "resample": 3, "do_center_crop": true,
            "crop_size": {"height": side, "width": side}, "do_rescale": true,
            "rescale_factor": 1.0 / 255.0, "do_normalize": true,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
        }),
    )
}

/// Writes the diffusers folder at `folder` as one single-file checkpoint in the original
/// (LDM/SGM) layout, at `dtype`: `model.diffusion_model.*`, `first_stage_model.*` and the text
/// encoders as SD 1.x (`cond_stage_model.transformer.*`), SD 2.x (OpenCLIP under
/// `cond_stage_model.model.*`, with the extra last layer that SD 2.x skips) or SDXL
/// (`conditioner.embedders.{0,1}.*`) store them. Names are worked out from diffusers' side
/// here, independently of the loader's reading of the original side, so a test that loads the
/// result checks one against the other.
pub fn write_checkpoint(folder: &Path, out: &Path, dtype: DType) -> Result<()> {
    let source = crate::source::ModelSource::open(folder, &Default::default())?;
    let family = crate::registry::ModelInfo::of(&source)?.family;
    if family == Family::Flux {
        return Err(not_a_unet("write_checkpoint"));
    }
    let dev = Device::Cpu;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut put = |name: String, t: Tensor| -> Result<()> {
        let t = t.to_dtype(dtype).context(|| name.clone())?;
        tensors.insert(name, t);
        Ok(())
    };

    let unet_cfg: UNetConfig = source.config("unet")?;
    let levels = unet_cfg.block_out_channels.len();
    let per_level = unet_cfg
        .layers_per_block
        .expand(levels, "layers_per_block")
        .map_err(|reason| EngineError::Unsupported {
            path: folder.join("unet"),
            reason,
        })?;
    let n = per_level[0];
    let up_has_attention: Vec<bool> = unet_cfg
        .up_block_types
        .iter()
        .map(|t| t.contains("CrossAttn"))
        .collect();
    for (name, t) in source.weights("unet", DType::F32, &dev)?.iter() {
        let ldm = ldm_unet_name(name, n, &up_has_attention).ok_or_else(|| EngineError::IncompleteModel {
            path: folder.join("unet"),
            message: format!("{name} has no place in the original layout"),
        })?;
        put(format!("model.diffusion_model.{ldm}"), t.clone())?;
    }

    let vae_cfg: VaeConfig = source.config("vae")?;
    let vae_levels = vae_cfg.block_out_channels.len();
    for (name, t) in source.weights("vae", DType::F32, &dev)?.iter() {
        let (ldm, conv) = ldm_vae_name(name, vae_levels).ok_or_else(|| EngineError::IncompleteModel {
            path: folder.join("vae"),
            message: format!("{name} has no place in the original layout"),
        })?;
        let t = if conv {
            let (o, i) = t.dims2().context(|| name.clone())?;
            t.reshape((o, i, 1, 1)).context(|| name.clone())?
        } else {
            t.clone()
        };
        put(format!("first_stage_model.{ldm}"), t)?;
    }

    let te = || source.weights("text_encoder", DType::F32, &dev);
    let te2 = || -> Result<_> {
        let layers: ClipTextConfig = source.config("text_encoder_2")?;
        Ok((
            source.weights("text_encoder_2", DType::F32, &dev)?,
            layers.num_hidden_layers,
        ))
    };
    match family {
        Family::Sd1 => {
            let te = te()?;
            for (name, t) in te.iter() {
                put(format!("cond_stage_model.transformer.{name}"), t.clone())?;
            }
        }
        Family::Sd2 => {
            let layers: ClipTextConfig = source.config("text_encoder")?;
            open_clip_tensors(&*te()?, layers.num_hidden_layers, true, &mut |k, t| {
                put(format!("cond_stage_model.model.{k}"), t)
            })?;
        }
        Family::Sdxl => {
            for (name, t) in te()?.iter() {
                put(format!("conditioner.embedders.0.transformer.{name}"), t.clone())?;
            }
            let (te2, layers) = te2()?;
            open_clip_tensors(&te2, layers, false, &mut |k, t| {
                put(format!("conditioner.embedders.1.model.{k}"), t)
            })?;
        }
        Family::SdxlRefiner => {
            let (te2, layers) = te2()?;
            open_clip_tensors(&te2, layers, false, &mut |k, t| {
                put(format!("conditioner.embedders.0.model.{k}"), t)
            })?;
        }
        Family::Flux => unreachable!("refused above"),
    }
    candle_core::safetensors::save(&tensors, out).context(|| format!("writing {}", out.display()))
}

/// A diffusers UNet name in the original layout, for `n` resnets per down level.
fn ldm_unet_name(name: &str, n: usize, up_has_attention: &[bool]) -> Option<String> {
    let fixed = [
        ("conv_in.", "input_blocks.0.0."),
        ("time_embedding.linear_1.", "time_embed.0."),
        ("time_embedding.linear_2.", "time_embed.2."),
        ("add_embedding.linear_1.", "label_emb.0.0."),
        ("add_embedding.linear_2.", "label_emb.0.2."),
        ("conv_norm_out.", "out.0."),
        ("conv_out.", "out.2."),
    ];
    for (d, l) in fixed {
        if let Some(leaf) = name.strip_prefix(d) {
            return Some(format!("{l}{leaf}"));
        }
    }
    let resnet = |r: &str| -> Option<String> {
        let (part, leaf) = r.split_once('.')?;
        let part = match part {
            "norm1" => "in_layers.0",
            "conv1" => "in_layers.2",
            "time_emb_proj" => "emb_layers.1",
            "norm2" => "out_layers.0",
            "conv2" => "out_layers.3",
            "conv_shortcut" => "skip_connection",
            _ => return None,
        };
        Some(format!("{part}.{leaf}"))
    };
    let numbered = |r: &str| -> Option<(usize, String)> {
        let (i, rest) = r.split_once('.')?;
        Some((i.parse().ok()?, rest.to_owned()))
    };
    if let Some(r) = name.strip_prefix("mid_block.") {
        let (kind, r) = r.split_once('.')?;
        let (k, rest) = numbered(r)?;
        return match (kind, k) {
            ("resnets", 0) => Some(format!("middle_block.0.{}", resnet(&rest)?)),
            ("attentions", 0) => Some(format!("middle_block.1.{rest}")),
            ("resnets", 1) => Some(format!("middle_block.2.{}", resnet(&rest)?)),
            _ => None,
        };
    }
    let (down, r) = if let Some(r) = name.strip_prefix("down_blocks.") {
        (true, r)
    } else {
        (false, name.strip_prefix("up_blocks.")?)
    };
    let (level, r) = numbered(r)?;
    let (kind, r) = r.split_once('.')?;
    let (k, rest) = numbered(r)?;
    Some(match (down, kind) {
        (true, "resnets") => format!("input_blocks.{}.0.{}", 1 + level * (n + 1) + k, resnet(&rest)?),
        (true, "attentions") => format!("input_blocks.{}.1.{rest}", 1 + level * (n + 1) + k),
        (true, "downsamplers") => {
            format!(
                "input_blocks.{}.0.{}",
                (level + 1) * (n + 1),
                rest.replacen("conv.", "op.", 1)
            )
        }
        (false, "resnets") => format!("output_blocks.{}.0.{}", level * (n + 1) + k, resnet(&rest)?),
        (false, "attentions") => format!("output_blocks.{}.1.{rest}", level * (n + 1) + k),
        (false, "upsamplers") => {
            let part = if *up_has_attention.get(level)? { 2 } else { 1 };
            format!("output_blocks.{}.{part}.{rest}", level * (n + 1) + n)
        }
        _ => return None,
    })
}

/// A diffusers VAE name in the original layout, and whether it is an attention projection
/// (stored there as a 1×1 convolution).
fn ldm_vae_name(name: &str, levels: usize) -> Option<(String, bool)> {
    let (coder, rest) = name.split_once('.')?;
    if !matches!(coder, "encoder" | "decoder") {
        return Some((name.to_owned(), false));
    }
    let resnet = |r: &str| r.replacen("conv_shortcut.", "nin_shortcut.", 1);
    let mut conv = false;
    let ldm = if let Some(r) = rest.strip_prefix("mid_block.") {
        if let Some(r) = r.strip_prefix("resnets.0.") {
            format!("mid.block_1.{}", resnet(r))
        } else if let Some(r) = r.strip_prefix("resnets.1.") {
            format!("mid.block_2.{}", resnet(r))
        } else {
            let r = r.strip_prefix("attentions.0.")?;
            let (part, leaf) = r.rsplit_once('.')?;
            let part = match part {
                "group_norm" => "norm",
                "to_q" => "q",
                "to_k" => "k",
                "to_v" => "v",
                "to_out.0" => "proj_out",
                _ => return None,
            };
            conv = part != "norm" && leaf == "weight";
            format!("mid.attn_1.{part}.{leaf}")
        }
    } else if let Some(r) = rest
        .strip_prefix("down_blocks.")
        .or_else(|| rest.strip_prefix("up_blocks."))
    {
        let (i, r) = r.split_once('.')?;
        let i: usize = i.parse().ok()?;
        let (group, level) = if coder == "encoder" {
            ("down", i)
        } else {
            ("up", levels.checked_sub(i + 1)?)
        };
        if let Some(r) = r.strip_prefix("resnets.") {
            format!("{group}.{level}.block.{}", resnet(r))
        } else {
            let r = r
                .strip_prefix("downsamplers.0.")
                .or_else(|| r.strip_prefix("upsamplers.0."))?;
            let sampler = if coder == "encoder" {
                "downsample"
            } else {
                "upsample"
            };
            format!("{group}.{level}.{sampler}.{r}")
        }
    } else if let Some(r) = rest.strip_prefix("conv_norm_out.") {
        format!("norm_out.{r}")
    } else {
        rest.to_owned()
    };
    Some((format!("{coder}.{ldm}"), conv))
}

/// A transformers CLIP text model's tensors as OpenCLIP names them: q/k/v fused into
/// `in_proj`, `text_projection` transposed. `extra_layer` appends a copy of the last layer, as
/// SD 2.x files hold one layer more than the penultimate-layer encoder diffusers builds.
fn open_clip_tensors(
    w: &HashMap<String, Tensor>,
    layers: usize,
    extra_layer: bool,
    put: &mut dyn FnMut(String, Tensor) -> Result<()>,
) -> Result<()> {
    let get = |k: &str| {
        w.get(k).cloned().ok_or_else(|| EngineError::IncompleteModel {
            path: k.into(),
            message: "missing from the text encoder".into(),
        })
    };
    let tm = "text_model";
    put(
        "token_embedding.weight".into(),
        get(&format!("{tm}.embeddings.token_embedding.weight"))?,
    )?;
    put(
        "positional_embedding".into(),
        get(&format!("{tm}.embeddings.position_embedding.weight"))?,
    )?;
    for leaf in ["weight", "bias"] {
        put(
            format!("ln_final.{leaf}"),
            get(&format!("{tm}.final_layer_norm.{leaf}"))?,
        )?;
    }
    let width = get(&format!("{tm}.final_layer_norm.weight"))?
        .dim(0)
        .context(|| "width".into())?;
    let projection = match w.get("text_projection.weight") {
        Some(p) => p.t().and_then(|t| t.contiguous()),
        None => Tensor::eye(width, DType::F32, &Device::Cpu),
    };
    put(
        "text_projection".into(),
        projection.context(|| "text_projection".into())?,
    )?;
    let stored = if extra_layer { layers + 1 } else { layers };
    for i in 0..stored {
        let ours = format!("{tm}.encoder.layers.{}", i.min(layers - 1));
        let theirs = format!("transformer.resblocks.{i}");
        for leaf in ["weight", "bias"] {
            let qkv = ["q_proj", "k_proj", "v_proj"]
                .iter()
                .map(|p| get(&format!("{ours}.self_attn.{p}.{leaf}")))
                .collect::<Result<Vec<_>>>()?;
            let fused = Tensor::cat(&qkv, 0).context(|| "in_proj".into())?;
            put(format!("{theirs}.attn.in_proj_{leaf}"), fused)?;
            for (o, t) in [
                ("self_attn.out_proj", "attn.out_proj"),
                ("layer_norm1", "ln_1"),
                ("layer_norm2", "ln_2"),
                ("mlp.fc1", "mlp.c_fc"),
                ("mlp.fc2", "mlp.c_proj"),
            ] {
                put(
                    format!("{theirs}.{t}.{leaf}"),
                    get(&format!("{ours}.{o}.{leaf}"))?,
                )?;
            }
        }
    }
    Ok(())
}

/// Writes a rank-4 LoRA with random weights for the model in `folder`, in kohya's naming, that
/// changes every attention projection of its UNet: for trying `--lora` and the library without
/// a trained file, and for tests. Its strength is such that weight 1 visibly changes a tiny
/// model's drawing.
pub fn write_lora(folder: &Path, out: &Path, seed: u64) -> Result<()> {
    let source = crate::source::ModelSource::open(folder, &Default::default())?;
    let dev = Device::Cpu;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0f32, 1.0).expect("a valid normal distribution");
    let mut sample = |dims: &[usize]| -> Result<Tensor> {
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n).map(|_| normal.sample(&mut rng)).collect();
        Tensor::from_vec(v, dims, &dev).context(|| "a LoRA tensor".to_owned())
    };
    let rank = 4;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut names: Vec<(String, Vec<usize>)> = source
        .weights("unet", DType::F32, &dev)?
        .iter()
        .filter(|(name, t)| {
            t.dims().len() == 2
                && [".to_q.weight", ".to_k.weight", ".to_v.weight", ".to_out.0.weight"]
                    .iter()
                    .any(|s| name.ends_with(s))
        })
        .map(|(name, t)| (name.clone(), t.dims().to_vec()))
        .collect();
    names.sort();
    for (name, dims) in names {
        let module = name.trim_end_matches(".weight").replace('.', "_");
        let key = format!("lora_unet_{module}");
        let (out_dim, in_dim) = (dims[0], dims[1]);
        tensors.insert(format!("{key}.lora_down.weight"), sample(&[rank, in_dim])?);
        let up = (sample(&[out_dim, rank])? * 0.5).context(|| key.clone())?;
        tensors.insert(format!("{key}.lora_up.weight"), up);
        tensors.insert(
            format!("{key}.alpha"),
            Tensor::new(rank as f32, &dev).context(|| key.clone())?,
        );
    }
    save_creating_folder(&tensors, out)
}

/// Writes a textual-inversion embedding for the model in `folder` whose vectors are the token
/// vectors of `words`, so a prompt naming it encodes exactly as one with `words` would: A1111's
/// `emb_params` for one text encoder, `clip_l` + `clip_g` for SDXL's two. For tests and for
/// trying embeddings without a trained file.
pub fn write_embedding(folder: &Path, words: &str, out: &Path) -> Result<()> {
    let source = crate::source::ModelSource::open(folder, &Default::default())?;
    let dev = Device::Cpu;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let encoders = [("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")];
    let present: Vec<_> = encoders.iter().filter(|(e, _)| source.configs().has(e)).collect();
    for (i, (encoder, tokenizer)) in present.iter().enumerate() {
        let ids = crate::tokenizer::ClipTokenizer::from_dir(&source.configs().path().join(tokenizer))?
            .encode_raw(words);
        let weights = source.weights(encoder, DType::F32, &dev)?;
        let table = weights
            .iter()
            .find(|(k, _)| k.ends_with("embeddings.token_embedding.weight"))
            .map(|(_, t)| t.clone())
            .ok_or_else(|| EngineError::IncompleteModel {
                path: folder.join(encoder),
                message: "no token embedding".into(),
            })?;
        let ids = Tensor::new(ids.as_slice(), &dev).context(|| "token ids".to_owned())?;
        let rows = table
            .index_select(&ids, 0)
            .context(|| "token vectors".to_owned())?;
        let key = match (present.len(), i) {
            (1, _) => "emb_params",
            (_, 0) => "clip_l",
            _ => "clip_g",
        };
        tensors.insert(key.to_owned(), rows);
    }
    save_creating_folder(&tensors, out)
}

/// Saves `tensors` at `out`, making its folder first.
fn save_creating_folder(tensors: &HashMap<String, Tensor>, out: &Path) -> Result<()> {
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| EngineError::Io {
            path: parent.to_owned(),
            source,
        })?;
    }
    candle_core::safetensors::save(tensors, out).context(|| out.display().to_string())
}
