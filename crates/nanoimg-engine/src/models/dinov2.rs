//! DINOv2 as transformers saves it (`Dinov2Model`, `facebook/dinov2-{small,base,large,giant}`):
//! a ViT with a class token, layer scale on both residual branches, and position embeddings
//! learnt at 518 px that are resized (bicubic, as transformers does) to the picture's patch grid.
//! The class token's final state after `layernorm` is the image's embedding, the "DINO" feature
//! that subject-fidelity papers compare.

use super::layers::{attention, bicubic_resize, merge_heads, patch_embed, split_heads, Activation};
use crate::ConfigError;
use candle_core::{Module, Result, Tensor};
use candle_nn::init::DEFAULT_KAIMING_NORMAL;
use candle_nn::{Init, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

/// The fields of a transformers `Dinov2Config` that change the computation (defaults are
/// transformers' own).
#[derive(Debug, Clone, Deserialize)]
pub struct Dinov2Config {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    #[serde(default = "default_patch")]
    pub patch_size: usize,
    #[serde(default = "default_image_size")]
    pub image_size: usize,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_true")]
    pub qkv_bias: bool,
    /// The layer scales' initial value (what a freshly made model holds; trained ones differ).
    #[serde(default = "default_layerscale")]
    pub layerscale_value: f64,
    /// The giant model's gated MLP (`mlp.weights_in` / `mlp.weights_out`).
    #[serde(default)]
    pub use_swiglu_ffn: bool,
}

fn default_mlp_ratio() -> f64 {
    4.0
}
fn default_patch() -> usize {
    14
}
fn default_image_size() -> usize {
    518
}
fn default_channels() -> usize {
    3
}
fn default_act() -> String {
    "gelu".into()
}
fn default_eps() -> f64 {
    1e-6
}
fn default_layerscale() -> f64 {
    1.0
}
fn default_true() -> bool {
    true
}

/// How the class token and position embeddings are initialised (a hint for made-up weights;
/// loading a checkpoint ignores it).
const TOKEN_INIT: Init = Init::Randn {
    mean: 0.0,
    stdev: 0.02,
};

#[derive(Debug)]
enum Mlp {
    /// `fc1`, the activation, `fc2`.
    Plain {
        fc1: Linear,
        fc2: Linear,
        act: Activation,
    },
    /// `weights_in` to two halves, `silu(a) · b`, `weights_out`.
    SwiGlu { weights_in: Linear, weights_out: Linear },
}

impl Mlp {
    fn new(vb: VarBuilder, c: &Dinov2Config, act: Activation) -> Result<Self> {
        let d = c.hidden_size;
        let hidden = (d as f64 * c.mlp_ratio) as usize;
        if c.use_swiglu_ffn {
            let hidden = (hidden * 2 / 3).div_ceil(8) * 8;
            Ok(Mlp::SwiGlu {
                weights_in: candle_nn::linear(d, 2 * hidden, vb.pp("weights_in"))?,
                weights_out: candle_nn::linear(hidden, d, vb.pp("weights_out"))?,
            })
        } else {
            Ok(Mlp::Plain {
                fc1: candle_nn::linear(d, hidden, vb.pp("fc1"))?,
                fc2: candle_nn::linear(hidden, d, vb.pp("fc2"))?,
                act,
            })
        }
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Mlp::Plain { fc1, fc2, act } => fc2.forward(&act.forward(&fc1.forward(x)?)?),
            Mlp::SwiGlu {
                weights_in,
                weights_out,
            } => {
                let h = weights_in.forward(x)?;
                let half = h.dim(candle_core::D::Minus1)? / 2;
                let gated = (candle_nn::ops::silu(&h.narrow(candle_core::D::Minus1, 0, half)?)?
                    * h.narrow(candle_core::D::Minus1, half, half)?)?;
                weights_out.forward(&gated)
            }
        }
    }
}

/// `encoder.layer.N`: pre-norm attention and MLP, each scaled by its `layer_scale*.lambda1`.
#[derive(Debug)]
struct Dinov2Layer {
    norm1: LayerNorm,
    query: Linear,
    key: Linear,
    value: Linear,
    dense: Linear,
    lambda1: Tensor,
    norm2: LayerNorm,
    mlp: Mlp,
    lambda2: Tensor,
    heads: usize,
}

impl Dinov2Layer {
    fn new(vb: VarBuilder, c: &Dinov2Config, act: Activation) -> Result<Self> {
        let d = c.hidden_size;
        let attn = vb.pp("attention");
        let qkv = |name: &str| candle_nn::linear_b(d, d, c.qkv_bias, attn.pp("attention").pp(name));
        Ok(Self {
            norm1: candle_nn::layer_norm(d, c.layer_norm_eps, vb.pp("norm1"))?,
            query: qkv("query")?,
            key: qkv("key")?,
            value: qkv("value")?,
            dense: candle_nn::linear(d, d, attn.pp("output").pp("dense"))?,
            lambda1: vb
                .pp("layer_scale1")
                .get_with_hints(d, "lambda1", Init::Const(c.layerscale_value))?,
            norm2: candle_nn::layer_norm(d, c.layer_norm_eps, vb.pp("norm2"))?,
            mlp: Mlp::new(vb.pp("mlp"), c, act)?,
            lambda2: vb
                .pp("layer_scale2")
                .get_with_hints(d, "lambda1", Init::Const(c.layerscale_value))?,
            heads: c.num_attention_heads,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.norm1.forward(x)?;
        let (q, k, v) = (
            split_heads(&self.query.forward(&h)?, self.heads)?,
            split_heads(&self.key.forward(&h)?, self.heads)?,
            split_heads(&self.value.forward(&h)?, self.heads)?,
        );
        let scale = (q.dim(3)? as f64).powf(-0.5);
        let a = self
            .dense
            .forward(&merge_heads(&attention(&q, &k, &v, scale)?)?)?;
        let x = (x + a.broadcast_mul(&self.lambda1)?)?;
        let m = self.mlp.forward(&self.norm2.forward(&x)?)?;
        x + m.broadcast_mul(&self.lambda2)?
    }
}

/// A DINOv2 backbone.
#[derive(Debug)]
pub struct Dinov2Model {
    cls_token: Tensor,
    /// The learnt grid `[side, side, hidden]` (channels last), without the class position.
    patch_positions: Vec<f32>,
    class_position: Tensor,
    projection_weight: Tensor,
    projection_bias: Tensor,
    layers: Vec<Dinov2Layer>,
    layernorm: LayerNorm,
    config: Dinov2Config,
}

impl Dinov2Model {
    /// Loads from a VarBuilder rooted at the checkpoint (with or without the `dinov2.` prefix
    /// that the classification heads' files put on the backbone).
    pub fn new(vb: VarBuilder, config: &Dinov2Config) -> crate::Result<Self> {
        let act = Activation::parse(&config.hidden_act)?;
        let (d, p) = (config.hidden_size, config.patch_size);
        if p == 0 || config.image_size < p {
            return Err(ConfigError::invalid(
                "patch_size",
                format!("{p} does not fit image_size {}", config.image_size),
            )
            .into());
        }
        if config.num_attention_heads == 0 || !d.is_multiple_of(config.num_attention_heads) {
            return Err(ConfigError::invalid(
                "num_attention_heads",
                format!(
                    "hidden_size {d} is not a multiple of {}",
                    config.num_attention_heads
                ),
            )
            .into());
        }
        let build = || -> Result<Self> {
            let vb = if vb.contains_tensor("dinov2.layernorm.weight") {
                vb.pp("dinov2")
            } else {
                vb.clone()
            };
            let emb = vb.pp("embeddings");
            let side = config.image_size / p;
            let positions = emb
                .get_with_hints((1, side * side + 1, d), "position_embeddings", TOKEN_INIT)?
                .squeeze(0)?;
            Ok(Self {
                cls_token: emb.get_with_hints((1, 1, d), "cls_token", TOKEN_INIT)?,
                patch_positions: positions.narrow(0, 1, side * side)?.flatten_all()?.to_vec1()?,
                class_position: positions.narrow(0, 0, 1)?,
                projection_weight: emb.pp("patch_embeddings").pp("projection").get_with_hints(
                    (d, config.num_channels, p, p),
                    "weight",
                    DEFAULT_KAIMING_NORMAL,
                )?,
                projection_bias: emb.pp("patch_embeddings").pp("projection").get(d, "bias")?,
                layers: (0..config.num_hidden_layers)
                    .map(|i| Dinov2Layer::new(vb.pp("encoder").pp("layer").pp(i), config, act))
                    .collect::<Result<Vec<_>>>()?,
                layernorm: candle_nn::layer_norm(d, config.layer_norm_eps, vb.pp("layernorm"))?,
                config: config.clone(),
            })
        };
        Ok(build()?)
    }

    /// The model's config.
    pub fn config(&self) -> &Dinov2Config {
        &self.config
    }

    /// Position embeddings `[1 + gh·gw, hidden]` for a `gh × gw` patch grid: the learnt ones
    /// when the grid is the training grid, else resized as transformers does.
    fn positions(&self, (gh, gw): (usize, usize)) -> Result<Tensor> {
        let d = self.config.hidden_size;
        let side = self.config.image_size / self.config.patch_size;
        let grid = if (gh, gw) == (side, side) {
            self.patch_positions.clone()
        } else {
            bicubic_resize(&self.patch_positions, (side, side), d, (gh, gw))
        };
        let grid = Tensor::from_vec(grid, (gh * gw, d), self.cls_token.device())?
            .to_dtype(self.cls_token.dtype())?;
        Tensor::cat(&[&self.class_position, &grid], 0)
    }

    /// `pixel_values` `[batch, 3, h, w]`, already normalised (h and w multiples of the patch
    /// size), to `last_hidden_state` `[batch, 1 + patches, hidden]` after `layernorm`.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (b, _, h, w) = pixel_values.dims4()?;
        let p = self.config.patch_size;
        let d = self.config.hidden_size;
        let patches = patch_embed(
            pixel_values,
            &self.projection_weight,
            Some(&self.projection_bias),
            p,
        )?;
        let cls = self.cls_token.broadcast_as((b, 1, d))?;
        let mut x = Tensor::cat(&[&cls, &patches], 1)?.broadcast_add(&self.positions((h / p, w / p))?)?;
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        self.layernorm.forward(&x)
    }

    /// The pooled output: the class token's final state `[batch, hidden]`.
    pub fn embed(&self, pixel_values: &Tensor) -> Result<Tensor> {
        self.forward(pixel_values)?.narrow(1, 0, 1)?.squeeze(1)
    }
}
