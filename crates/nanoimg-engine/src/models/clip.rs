//! CLIP as transformers saves it: the text encoders `CLIPTextModel` (SD 1.x/2.x, SDXL's first
//! encoder) and `CLIPTextModelWithProjection` (SDXL's second encoder, whose projected pooled
//! output conditions the UNet's `add_embedding`), and the image tower of a `CLIPModel`
//! (`vision_model.*`), which `crate::embed` uses to score pictures.

use super::layers::Activation;
use super::linear::{linear, linear_no_bias, Linear};
use crate::tokenizer::ClipTokenizer;
use crate::ConfigError;
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};
use serde::Deserialize;

/// The fields of a transformers `CLIPTextConfig` that change the computation.
#[derive(Debug, Clone, Deserialize)]
/// Defaults are transformers' own, for a `CLIPModel`'s `text_config` that lists only what differs.
pub struct ClipTextConfig {
    #[serde(default = "default_vocab")]
    pub vocab_size: usize,
    #[serde(default = "default_text_hidden")]
    pub hidden_size: usize,
    #[serde(default = "default_text_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "default_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "default_text_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Present for `CLIPTextModelWithProjection`.
    #[serde(default)]
    pub projection_dim: Option<usize>,
    #[serde(default)]
    pub architectures: Vec<String>,
}

fn default_vocab() -> usize {
    49408
}
fn default_text_hidden() -> usize {
    512
}
fn default_text_intermediate() -> usize {
    2048
}
fn default_layers() -> usize {
    12
}
fn default_text_heads() -> usize {
    8
}
fn default_max_positions() -> usize {
    77
}
fn default_act() -> String {
    "quick_gelu".into()
}
fn default_eps() -> f64 {
    1e-5
}

impl ClipTextConfig {
    /// Why `tokenizer` cannot feed this encoder, if it cannot: ids past the vocabulary or a
    /// context longer than the positions. Reads "has … but …" after the tokenizer's name.
    pub fn misfit(&self, tokenizer: &ClipTokenizer) -> Option<String> {
        (tokenizer.vocab_len() > self.vocab_size || tokenizer.max_length() > self.max_position_embeddings)
            .then(|| {
                format!(
                    "has {} tokens and context {} but the text encoder has vocab_size {} and {} positions",
                    tokenizer.vocab_len(),
                    tokenizer.max_length(),
                    self.vocab_size,
                    self.max_position_embeddings
                )
            })
    }

    /// Whether the checkpoint carries a `text_projection` (SDXL's second encoder).
    pub fn with_projection(&self) -> bool {
        self.architectures
            .iter()
            .any(|a| a == "CLIPTextModelWithProjection")
    }
}

/// The sizes an encoder layer is built from: the text and vision towers share the layer.
#[derive(Debug, Clone, Copy)]
struct Dims {
    hidden: usize,
    intermediate: usize,
    heads: usize,
    eps: f64,
}

impl From<&ClipTextConfig> for Dims {
    fn from(c: &ClipTextConfig) -> Self {
        Dims {
            hidden: c.hidden_size,
            intermediate: c.intermediate_size,
            heads: c.num_attention_heads,
            eps: c.layer_norm_eps,
        }
    }
}

#[derive(Debug)]
struct ClipAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
    scale: f64,
}

impl ClipAttention {
    fn new(vb: VarBuilder, c: Dims) -> Result<Self> {
        let d = c.hidden;
        Ok(Self {
            q_proj: linear(d, d, vb.pp("q_proj"))?,
            k_proj: linear(d, d, vb.pp("k_proj"))?,
            v_proj: linear(d, d, vb.pp("v_proj"))?,
            out_proj: linear(d, d, vb.pp("out_proj"))?,
            heads: c.heads,
            scale: ((d / c.heads) as f64).powf(-0.5),
        })
    }

    /// `mask` is added to the scores: the text tower's causal mask; the vision tower has none.
    fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        use super::layers::{merge_heads, split_heads};
        let q = split_heads(&self.q_proj.forward(x)?, self.heads)?;
        let k = split_heads(&self.k_proj.forward(x)?, self.heads)?;
        let v = split_heads(&self.v_proj.forward(x)?, self.heads)?;
        let dtype = x.dtype();
        let mut scores = (q.to_dtype(DType::F32)?.matmul(&k.to_dtype(DType::F32)?.t()?)? * self.scale)?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let probs = crate::models::kernels::softmax_last_dim(&scores)?.to_dtype(dtype)?;
        self.out_proj.forward(&merge_heads(&probs.matmul(&v)?)?)
    }
}

#[derive(Debug)]
struct ClipEncoderLayer {
    self_attn: ClipAttention,
    layer_norm1: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    layer_norm2: LayerNorm,
    act: Activation,
}

impl ClipEncoderLayer {
    fn new(vb: VarBuilder, c: Dims, act: Activation) -> Result<Self> {
        let d = c.hidden;
        Ok(Self {
            self_attn: ClipAttention::new(vb.pp("self_attn"), c)?,
            layer_norm1: candle_nn::layer_norm(d, c.eps, vb.pp("layer_norm1"))?,
            fc1: linear(d, c.intermediate, vb.pp("mlp").pp("fc1"))?,
            fc2: linear(c.intermediate, d, vb.pp("mlp").pp("fc2"))?,
            layer_norm2: candle_nn::layer_norm(d, c.eps, vb.pp("layer_norm2"))?,
            act,
        })
    }

    fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let x = (x + self.self_attn.forward(&self.layer_norm1.forward(x)?, mask)?)?;
        let h = self.fc2.forward(
            &self
                .act
                .forward(&self.fc1.forward(&self.layer_norm2.forward(&x)?)?)?,
        )?;
        x + h
    }
}

/// What a text encoder returns for a batch of prompts.
#[derive(Debug, Clone)]
pub struct ClipOutput {
    /// Final hidden states after `final_layer_norm` (`last_hidden_state`): SD 1.x/2.x context.
    pub last_hidden_state: Tensor,
    /// Hidden states entering the last layer (`hidden_states[-2]`): SDXL's context.
    pub penultimate: Tensor,
    /// The EOS token's final state, through `text_projection` when the model has one.
    pub pooled: Tensor,
}

/// A CLIP text transformer.
#[derive(Debug)]
pub struct ClipTextModel {
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<ClipEncoderLayer>,
    final_layer_norm: LayerNorm,
    text_projection: Option<Linear>,
    config: ClipTextConfig,
}

impl ClipTextModel {
    /// Loads from a VarBuilder rooted at the checkpoint (with or without the `text_model.` prefix,
    /// which some `transformers` versions omit when saving).
    pub fn new(vb: VarBuilder, config: &ClipTextConfig) -> crate::Result<Self> {
        let act = Activation::parse(&config.hidden_act)?;
        let build = || -> Result<Self> {
            let tm = if vb.contains_tensor("text_model.final_layer_norm.weight") {
                vb.pp("text_model")
            } else {
                vb.clone()
            };
            let emb = tm.pp("embeddings");
            let d = config.hidden_size;
            let layers = (0..config.num_hidden_layers)
                .map(|i| ClipEncoderLayer::new(tm.pp("encoder").pp("layers").pp(i), config.into(), act))
                .collect::<Result<Vec<_>>>()?;
            let text_projection = match config.projection_dim {
                Some(p) if config.with_projection() => Some(linear_no_bias(d, p, vb.pp("text_projection"))?),
                _ => None,
            };
            Ok(Self {
                token_embedding: candle_nn::embedding(config.vocab_size, d, emb.pp("token_embedding"))?,
                position_embedding: candle_nn::embedding(
                    config.max_position_embeddings,
                    d,
                    emb.pp("position_embedding"),
                )?,
                layers,
                final_layer_norm: candle_nn::layer_norm(d, config.layer_norm_eps, tm.pp("final_layer_norm"))?,
                text_projection,
                config: config.clone(),
            })
        };
        Ok(build()?)
    }

    /// The encoder's config.
    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    fn causal_mask(n: usize, device: &Device) -> Result<Tensor> {
        let mask: Vec<f32> = (0..n)
            .flat_map(|i| (0..n).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        Tensor::from_vec(mask, (1, 1, n, n), device)
    }

    /// Encodes `ids` `[batch, tokens]`; `eos_index[b]` is where each prompt's EOS token sits.
    pub fn forward(&self, ids: &Tensor, eos_index: &[usize]) -> Result<ClipOutput> {
        self.forward_with(ids, eos_index, None)
    }

    /// As [`Self::forward`], with `extra` `[k, hidden]` vectors for the ids past the
    /// vocabulary (`vocab_size + i` is `extra[i]`): textual-inversion embeddings.
    pub fn forward_with(
        &self,
        ids: &Tensor,
        eos_index: &[usize],
        extra: Option<&Tensor>,
    ) -> Result<ClipOutput> {
        let (b, n) = ids.dims2()?;
        if eos_index.len() != b {
            candle_core::bail!("eos_index has {} entries for a batch of {b}", eos_index.len());
        }
        let positions = Tensor::arange(0u32, n as u32, ids.device())?;
        let tokens = match extra {
            None => self.token_embedding.forward(ids)?,
            Some(extra) => {
                let table = self.token_embedding.embeddings();
                let extra = extra.to_device(table.device())?.to_dtype(table.dtype())?;
                let table = Tensor::cat(&[table, &extra], 0)?;
                table.index_select(&ids.flatten_all()?, 0)?.reshape((b, n, ()))?
            }
        };
        let mut x = tokens.broadcast_add(&self.position_embedding.forward(&positions)?)?;
        let mask = Self::causal_mask(n, ids.device())?;
        let mut penultimate = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            if i + 1 == self.layers.len() {
                penultimate = x.clone();
            }
            x = layer.forward(&x, Some(&mask))?;
        }
        let last_hidden_state = self.final_layer_norm.forward(&x)?;
        let pooled = eos_index
            .iter()
            .enumerate()
            .map(|(i, &e)| last_hidden_state.get(i)?.get(e))
            .collect::<Result<Vec<_>>>()?;
        let mut pooled = Tensor::stack(&pooled, 0)?;
        if let Some(p) = &self.text_projection {
            pooled = p.forward(&pooled)?;
        }
        Ok(ClipOutput {
            last_hidden_state,
            penultimate,
            pooled,
        })
    }
}

/// A transformers `CLIPModel`'s `config.json`: both towers and their joint space. A missing
/// section or field takes transformers' default.
#[derive(Debug, Clone, Deserialize)]
pub struct ClipModelConfig {
    #[serde(default = "from_empty")]
    pub text_config: ClipTextConfig,
    #[serde(default = "from_empty")]
    pub vision_config: ClipVisionConfig,
    #[serde(default = "default_projection")]
    pub projection_dim: usize,
}

/// A config section that is absent: every field at its default.
fn from_empty<T: serde::de::DeserializeOwned>() -> T {
    serde_json::from_value(serde_json::json!({})).expect("every field of a CLIP config section has a default")
}

fn default_projection() -> usize {
    512
}

/// The fields of a transformers `CLIPVisionConfig` that change the computation (defaults are
/// transformers' own: ViT-B/32 at 224 px).
#[derive(Debug, Clone, Deserialize)]
pub struct ClipVisionConfig {
    #[serde(default = "default_vision_hidden")]
    pub hidden_size: usize,
    #[serde(default = "default_vision_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "default_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "default_vision_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "default_image_size")]
    pub image_size: usize,
    #[serde(default = "default_patch")]
    pub patch_size: usize,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

fn default_vision_hidden() -> usize {
    768
}
fn default_vision_intermediate() -> usize {
    3072
}
fn default_vision_heads() -> usize {
    12
}
fn default_image_size() -> usize {
    224
}
fn default_patch() -> usize {
    32
}
fn default_channels() -> usize {
    3
}

impl From<&ClipVisionConfig> for Dims {
    fn from(c: &ClipVisionConfig) -> Self {
        Dims {
            hidden: c.hidden_size,
            intermediate: c.intermediate_size,
            heads: c.num_attention_heads,
            eps: c.layer_norm_eps,
        }
    }
}

/// CLIP's image transformer (`vision_model.*` of a `CLIPModel`): patches plus a class token,
/// `pre_layrnorm` (the checkpoint's spelling), the encoder, and `post_layernorm` on the class
/// token's final state.
#[derive(Debug)]
pub struct ClipVisionTransformer {
    class_embedding: Tensor,
    patch_embedding: Tensor,
    position_embedding: Tensor,
    pre_layrnorm: LayerNorm,
    layers: Vec<ClipEncoderLayer>,
    post_layernorm: LayerNorm,
    config: ClipVisionConfig,
}

impl ClipVisionTransformer {
    /// Loads from a VarBuilder at `vision_model`.
    pub fn new(vb: VarBuilder, config: &ClipVisionConfig) -> crate::Result<Self> {
        let act = Activation::parse(&config.hidden_act)?;
        if config.patch_size == 0 || !config.image_size.is_multiple_of(config.patch_size) {
            return Err(ConfigError::invalid(
                "patch_size",
                format!(
                    "image_size {} is not a multiple of {}",
                    config.image_size, config.patch_size
                ),
            )
            .into());
        }
        let build = || -> Result<Self> {
            let (d, p) = (config.hidden_size, config.patch_size);
            let grid = config.image_size / p;
            let emb = vb.pp("embeddings");
            // Hints for made-up weights; loading a checkpoint ignores them.
            let random = candle_nn::Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            };
            Ok(Self {
                class_embedding: emb.get_with_hints(d, "class_embedding", random)?,
                patch_embedding: emb.get_with_hints(
                    (d, config.num_channels, p, p),
                    "patch_embedding.weight",
                    candle_nn::init::DEFAULT_KAIMING_NORMAL,
                )?,
                position_embedding: emb.get_with_hints(
                    (grid * grid + 1, d),
                    "position_embedding.weight",
                    random,
                )?,
                pre_layrnorm: candle_nn::layer_norm(d, config.layer_norm_eps, vb.pp("pre_layrnorm"))?,
                layers: (0..config.num_hidden_layers)
                    .map(|i| ClipEncoderLayer::new(vb.pp("encoder").pp("layers").pp(i), config.into(), act))
                    .collect::<Result<Vec<_>>>()?,
                post_layernorm: candle_nn::layer_norm(d, config.layer_norm_eps, vb.pp("post_layernorm"))?,
                config: config.clone(),
            })
        };
        Ok(build()?)
    }

    /// The tower's config.
    pub fn config(&self) -> &ClipVisionConfig {
        &self.config
    }

    /// `pixel_values` `[batch, 3, image_size, image_size]`, already normalised, to the pooled
    /// output `[batch, hidden]` (before `visual_projection`).
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (b, _, h, w) = pixel_values.dims4()?;
        let size = self.config.image_size;
        if (h, w) != (size, size) {
            candle_core::bail!("CLIP's image tower takes {size}×{size} pictures, not {w}×{h}");
        }
        let d = self.config.hidden_size;
        let patches =
            super::layers::patch_embed(pixel_values, &self.patch_embedding, None, self.config.patch_size)?;
        let class = self.class_embedding.reshape((1, 1, d))?.broadcast_as((b, 1, d))?;
        let mut x = Tensor::cat(&[&class, &patches], 1)?.broadcast_add(&self.position_embedding)?;
        x = self.pre_layrnorm.forward(&x)?;
        for layer in &self.layers {
            x = layer.forward(&x, None)?;
        }
        self.post_layernorm.forward(&x.narrow(1, 0, 1)?.squeeze(1)?)
    }
}
