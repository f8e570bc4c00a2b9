//! diffusers' `UNet2DConditionModel` for SD 1.x, SD 2.x and SDXL (with SDXL's `text_time`
//! added conditioning), with hook points for reference conditioning.

mod attention;
mod blocks;
pub mod hooks;

use crate::models::conv::Conv2d;
use crate::models::int8::Quantize;
use crate::models::kernels::GroupNorm;
use crate::models::layers::conv2d;
use crate::ConfigError;
use blocks::{DownBlock, MidBlock, ResnetSpec, UpBlock};
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};
use hooks::UNetHooks;
use serde::Deserialize;

pub use attention::TransformerSpec;

/// A config value that is either one value for every block or one per block.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PerBlock<T> {
    One(T),
    Each(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    /// The value for each of `n` blocks; errors if a list has the wrong length.
    pub fn expand(&self, n: usize, field: &'static str) -> std::result::Result<Vec<T>, ConfigError> {
        match self {
            PerBlock::One(v) => Ok(vec![v.clone(); n]),
            PerBlock::Each(v) if v.len() == n => Ok(v.clone()),
            PerBlock::Each(v) => Err(ConfigError::invalid(
                field,
                format!("{} entries for {n} blocks", v.len()),
            )),
        }
    }
}

/// The fields of a diffusers `UNet2DConditionModel` config.json that we read. Fields that would
/// change the computation in ways we do not implement are read too, and rejected by
/// [`UNetConfig::validate`] with their name.
#[derive(Debug, Clone, Deserialize)]
pub struct UNetConfig {
    #[serde(default = "four")]
    pub in_channels: usize,
    #[serde(default = "four")]
    pub out_channels: usize,
    #[serde(default)]
    pub sample_size: Option<usize>,
    pub block_out_channels: Vec<usize>,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    /// Absent: diffusers' default, `UNetMidBlock2DCrossAttn`; `null`: no middle block (the
    /// pruned UNets of BK-SDM and SDXS).
    #[serde(default = "cross_attn_mid_block")]
    pub mid_block_type: Option<String>,
    #[serde(default = "two_per_block")]
    pub layers_per_block: PerBlock<usize>,
    #[serde(default = "one_per_block")]
    pub transformer_layers_per_block: PerBlock<usize>,
    #[serde(default)]
    pub reverse_transformer_layers_per_block: Option<Vec<usize>>,
    /// diffusers reads this as the number of heads when `num_attention_heads` is absent (a
    /// historical naming slip every SD checkpoint relies on).
    #[serde(default = "eight_per_block")]
    pub attention_head_dim: PerBlock<usize>,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock<usize>>,
    pub cross_attention_dim: PerBlock<usize>,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default = "thirty_two")]
    pub norm_num_groups: usize,
    #[serde(default = "norm_eps")]
    pub norm_eps: f64,
    #[serde(default = "yes")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    #[serde(default)]
    pub addition_time_embed_dim: Option<usize>,
    #[serde(default)]
    pub projection_class_embeddings_input_dim: Option<usize>,
    #[serde(default)]
    pub upcast_attention: bool,
    // Fields we only check.
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default)]
    pub only_cross_attention: PerBlock<bool>,
    #[serde(default)]
    pub dual_cross_attention: bool,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub encoder_hid_dim: Option<usize>,
    #[serde(default = "default_shift")]
    pub resnet_time_scale_shift: String,
    #[serde(default = "silu")]
    pub act_fn: String,
    #[serde(default = "three")]
    pub conv_in_kernel: usize,
    #[serde(default = "three")]
    pub conv_out_kernel: usize,
    #[serde(default = "positional")]
    pub time_embedding_type: String,
    /// LCM-distilled UNets' guidance embedding (`time_embedding.cond_proj`).
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
}

impl Default for PerBlock<bool> {
    fn default() -> Self {
        PerBlock::One(false)
    }
}

fn cross_attn_mid_block() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}
fn four() -> usize {
    4
}
fn three() -> usize {
    3
}
fn thirty_two() -> usize {
    32
}
fn two_per_block() -> PerBlock<usize> {
    PerBlock::One(2)
}
fn one_per_block() -> PerBlock<usize> {
    PerBlock::One(1)
}
fn eight_per_block() -> PerBlock<usize> {
    PerBlock::One(8)
}
fn norm_eps() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}
fn default_shift() -> String {
    "default".into()
}
fn silu() -> String {
    "silu".into()
}
fn positional() -> String {
    "positional".into()
}

/// Per-block shapes derived from a [`UNetConfig`].
#[derive(Debug, Clone)]
struct Layout {
    heads: Vec<usize>,
    layers: Vec<usize>,
    transformer_layers: Vec<usize>,
    context_dim: usize,
}

impl UNetConfig {
    /// Whether this is an SDXL-style UNet that needs pooled text embeddings and time ids.
    pub fn uses_text_time(&self) -> bool {
        self.addition_embed_type.as_deref() == Some("text_time")
    }

    /// Whether the UNet takes the guidance scale as an embedding (LCM-distilled UNets,
    /// `time_cond_proj_dim`) instead of being run twice for classifier-free guidance.
    pub fn embeds_guidance(&self) -> bool {
        self.time_cond_proj_dim.is_some()
    }

    /// Width of the time embedding (4 × the first block's channels).
    pub fn time_embed_dim(&self) -> usize {
        self.block_out_channels[0] * 4
    }

    /// Rejects configurations this implementation would compute wrongly.
    pub fn validate(&self) -> std::result::Result<(), ConfigError> {
        self.layout().map(|_| ())
    }

    fn layout(&self) -> std::result::Result<Layout, ConfigError> {
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(ConfigError::invalid("block_out_channels", "is empty"));
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(ConfigError::invalid(
                "down_block_types",
                format!(
                    "{n} block_out_channels but {} down and {} up block types",
                    self.down_block_types.len(),
                    self.up_block_types.len()
                ),
            ));
        }
        if let Some(t) = self
            .down_block_types
            .iter()
            .find(|t| *t != "CrossAttnDownBlock2D" && *t != "DownBlock2D")
        {
            return Err(ConfigError::unsupported("down_block_types", t));
        }
        if let Some(t) = self
            .up_block_types
            .iter()
            .find(|t| *t != "CrossAttnUpBlock2D" && *t != "UpBlock2D")
        {
            return Err(ConfigError::unsupported("up_block_types", t));
        }
        match self.mid_block_type.as_deref() {
            None | Some("UNetMidBlock2DCrossAttn") => {}
            Some(t) => return Err(ConfigError::unsupported("mid_block_type", t)),
        }
        let checks: [(bool, &'static str, String); 10] = [
            (self.center_input_sample, "center_input_sample", "true".into()),
            (
                self.only_cross_attention != PerBlock::One(false),
                "only_cross_attention",
                format!("{:?}", self.only_cross_attention),
            ),
            (self.dual_cross_attention, "dual_cross_attention", "true".into()),
            (
                self.class_embed_type.is_some(),
                "class_embed_type",
                format!("{:?}", self.class_embed_type),
            ),
            (
                self.encoder_hid_dim.is_some(),
                "encoder_hid_dim",
                format!("{:?}", self.encoder_hid_dim),
            ),
            (
                self.resnet_time_scale_shift != "default",
                "resnet_time_scale_shift",
                format!("{:?}", self.resnet_time_scale_shift),
            ),
            (self.act_fn != "silu", "act_fn", format!("{:?}", self.act_fn)),
            (
                self.conv_in_kernel != 3 || self.conv_out_kernel != 3,
                "conv_in_kernel",
                format!("{}/{}", self.conv_in_kernel, self.conv_out_kernel),
            ),
            (
                self.time_embedding_type != "positional",
                "time_embedding_type",
                format!("{:?}", self.time_embedding_type),
            ),
            (
                !matches!(self.addition_embed_type.as_deref(), None | Some("text_time")),
                "addition_embed_type",
                format!("{:?}", self.addition_embed_type),
            ),
        ];
        if let Some((_, field, value)) = checks.into_iter().find(|(bad, ..)| *bad) {
            return Err(ConfigError::Unsupported { field, value });
        }
        if self.uses_text_time()
            && (self.addition_time_embed_dim.is_none()
                || self.projection_class_embeddings_input_dim.is_none())
        {
            return Err(ConfigError::invalid(
                "addition_embed_type",
                "text_time conditioning needs addition_time_embed_dim and projection_class_embeddings_input_dim",
            ));
        }
        let heads = match &self.num_attention_heads {
            Some(h) => h.expand(n, "num_attention_heads")?,
            None => self.attention_head_dim.expand(n, "attention_head_dim")?,
        };
        let context_dim = match &self.cross_attention_dim {
            PerBlock::One(d) => *d,
            PerBlock::Each(d) => return Err(ConfigError::unsupported("cross_attention_dim", d)),
        };
        for (i, (&c, &h)) in self.block_out_channels.iter().zip(&heads).enumerate() {
            if h == 0 || c % h != 0 {
                return Err(ConfigError::invalid(
                    "attention_head_dim",
                    format!("block {i}: {c} channels do not split into {h} heads"),
                ));
            }
            if c % self.norm_num_groups != 0 {
                return Err(ConfigError::invalid(
                    "norm_num_groups",
                    format!(
                        "block {i}: {c} channels do not split into {} groups",
                        self.norm_num_groups
                    ),
                ));
            }
        }
        Ok(Layout {
            heads,
            layers: self.layers_per_block.expand(n, "layers_per_block")?,
            transformer_layers: self
                .transformer_layers_per_block
                .expand(n, "transformer_layers_per_block")?,
            context_dim,
        })
    }
}

/// Sinusoidal embedding of `t` (`[b]`, f32) as diffusers' `get_timestep_embedding`.
pub fn timestep_embedding(t: &Tensor, dim: usize, flip_sin_to_cos: bool, shift: f64) -> Result<Tensor> {
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (-(10000f64.ln()) * i as f64 / (half as f64 - shift)).exp() as f32)
        .collect();
    let freqs = Tensor::from_vec(freqs, (1, half), t.device())?;
    let args = t.to_dtype(DType::F32)?.unsqueeze(1)?.broadcast_mul(&freqs)?;
    let (sin, cos) = (args.sin()?, args.cos()?);
    if flip_sin_to_cos {
        Tensor::cat(&[cos, sin], 1)
    } else {
        Tensor::cat(&[sin, cos], 1)
    }
}

/// The sinusoidal embedding of an LCM UNet's guidance scale `w` (`[b]`; diffusers passes
/// `guidance_scale - 1`), as diffusers' `get_guidance_scale_embedding`: `w × 1000` at the
/// timestep embedding's frequencies with a shift of 1, sines first, zero-padded to an odd `dim`.
pub fn guidance_embedding(w: &Tensor, dim: usize) -> Result<Tensor> {
    let emb = timestep_embedding(&(w.to_dtype(DType::F32)? * 1000.0)?, dim, false, 1.0)?;
    if dim % 2 == 1 {
        emb.pad_with_zeros(1, 0, 1)
    } else {
        Ok(emb)
    }
}

/// diffusers' `TimestepEmbedding`: (plus the projected condition, for LCM UNets) linear, SiLU,
/// linear.
#[derive(Debug)]
pub(crate) struct TimestepEmbedding {
    cond_proj: Option<Linear>,
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    pub(crate) fn new(vb: VarBuilder, cin: usize, dim: usize, cond_dim: Option<usize>) -> Result<Self> {
        Ok(Self {
            cond_proj: cond_dim
                .map(|c| candle_nn::linear_no_bias(c, cin, vb.pp("cond_proj")))
                .transpose()?,
            linear_1: candle_nn::linear(cin, dim, vb.pp("linear_1"))?,
            linear_2: candle_nn::linear(dim, dim, vb.pp("linear_2"))?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, condition: Option<&Tensor>) -> Result<Tensor> {
        let x = match (&self.cond_proj, condition) {
            (Some(proj), Some(c)) => (x + proj.forward(c)?)?,
            (Some(_), None) => candle_core::bail!(
                "this LCM-distilled UNet takes the guidance scale as an embedding, and none was given"
            ),
            (None, _) => x.clone(),
        };
        self.linear_2
            .forward(&candle_nn::ops::silu(&self.linear_1.forward(&x)?)?)
    }
}

/// Conditioning besides the text context, for the UNets that take it.
#[derive(Debug, Clone, Default)]
pub struct AddedConditioning {
    /// SDXL's pooled text embeddings and size/crop numbers.
    pub text_time: Option<TextTime>,
    /// An LCM-distilled UNet's guidance scale `w` per row, `[b]` f32 (diffusers passes
    /// `guidance_scale - 1`); see [`UNetConfig::embeds_guidance`].
    pub guidance: Option<Tensor>,
}

/// SDXL's extra conditioning: the second text encoder's pooled, projected embedding and the
/// six size/crop numbers (original h, w, crop top, left, target h, w).
#[derive(Debug, Clone)]
pub struct TextTime {
    /// `[b, pooled_dim]`.
    pub text_embeds: Tensor,
    /// `[b, 6]` (`[b, 5]` for the refiner).
    pub time_ids: Tensor,
}

/// The denoising UNet.
#[derive(Debug)]
pub struct UNet2DConditionModel {
    conv_in: Conv2d,
    time_embedding: TimestepEmbedding,
    add_embedding: Option<TimestepEmbedding>,
    down_blocks: Vec<DownBlock>,
    mid_block: Option<MidBlock>,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    config: UNetConfig,
    int8: bool,
}

impl UNet2DConditionModel {
    /// Builds the UNet from a VarBuilder rooted at the checkpoint. Config errors come back as
    /// [`EngineError::Unsupported`](crate::EngineError) naming the field; missing or mis-shaped
    /// tensors as [`EngineError::Tensor`](crate::EngineError); [`crate::EngineError::at`] names
    /// the folder.
    pub fn new(vb: VarBuilder, config: &UNetConfig) -> crate::Result<Self> {
        let layout = config.layout()?;
        Ok(Self::build(vb, config, &layout)?)
    }

    fn build(vb: VarBuilder, c: &UNetConfig, l: &Layout) -> Result<Self> {
        let boc = &c.block_out_channels;
        let n = boc.len();
        let temb = c.time_embed_dim();
        let groups = c.norm_num_groups;
        let spec = |channels: usize, heads: usize, layers: usize| TransformerSpec {
            channels,
            heads,
            layers,
            context_dim: l.context_dim,
            linear_projection: c.use_linear_projection,
            groups,
        };
        let rs = ResnetSpec {
            temb,
            groups,
            eps: c.norm_eps,
        };
        let add_embedding = if c.uses_text_time() {
            let input = c
                .projection_class_embeddings_input_dim
                .expect("checked by layout()");
            Some(TimestepEmbedding::new(vb.pp("add_embedding"), input, temb, None)?)
        } else {
            None
        };

        let mut down_blocks = Vec::with_capacity(n);
        let mut out_ch = boc[0];
        for (i, &ch) in boc.iter().enumerate() {
            let in_ch = out_ch;
            out_ch = ch;
            let attn = (c.down_block_types[i] == "CrossAttnDownBlock2D")
                .then(|| spec(out_ch, l.heads[i], l.transformer_layers[i]));
            down_blocks.push(DownBlock::new(
                vb.pp("down_blocks").pp(i),
                (in_ch, out_ch),
                rs,
                l.layers[i],
                attn,
                i + 1 < n,
            )?);
        }
        let last = boc[n - 1];
        let mid_block = c
            .mid_block_type
            .is_some()
            .then(|| {
                MidBlock::new(
                    vb.pp("mid_block"),
                    last,
                    rs,
                    spec(last, l.heads[n - 1], l.transformer_layers[n - 1]),
                )
            })
            .transpose()?;

        let rev_ch: Vec<usize> = boc.iter().rev().copied().collect();
        let rev_heads: Vec<usize> = l.heads.iter().rev().copied().collect();
        let rev_layers: Vec<usize> = l.layers.iter().rev().copied().collect();
        let rev_tl: Vec<usize> = c
            .reverse_transformer_layers_per_block
            .clone()
            .unwrap_or_else(|| l.transformer_layers.iter().rev().copied().collect());
        let mut up_blocks = Vec::with_capacity(n);
        let mut out_ch = rev_ch[0];
        for i in 0..n {
            let prev_out = out_ch;
            out_ch = rev_ch[i];
            let in_ch = rev_ch[(i + 1).min(n - 1)];
            let attn = (c.up_block_types[i] == "CrossAttnUpBlock2D")
                .then(|| spec(out_ch, rev_heads[i], rev_tl.get(i).copied().unwrap_or(1)));
            up_blocks.push(UpBlock::new(
                vb.pp("up_blocks").pp(i),
                (in_ch, out_ch, prev_out),
                rs,
                rev_layers[i] + 1,
                attn,
                i + 1 < n,
            )?);
        }
        Ok(Self {
            conv_in: conv2d(c.in_channels, boc[0], 3, 1, 1, vb.pp("conv_in"))?,
            time_embedding: TimestepEmbedding::new(
                vb.pp("time_embedding"),
                boc[0],
                temb,
                c.time_cond_proj_dim,
            )?,
            add_embedding,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::new(groups, boc[0], c.norm_eps, vb.pp("conv_norm_out"))?,
            conv_out: conv2d(boc[0], c.out_channels, 3, 1, 1, vb.pp("conv_out"))?,
            config: c.clone(),
            int8: false,
        })
    }

    /// The UNet's config.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// Whether any layer runs on int8 weights.
    pub fn is_int8(&self) -> bool {
        self.int8
    }

    /// Predicts noise (or v) for `sample` `[b, in_channels, h, w]` at `timestep` (`[b]`, f32),
    /// conditioned on `context` `[b, tokens, cross_attention_dim]`.
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: &Tensor,
        context: &Tensor,
        added: Option<&AddedConditioning>,
        hooks: Option<&dyn UNetHooks>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let dtype = sample.dtype();
        let t_emb = timestep_embedding(timestep, c.block_out_channels[0], c.flip_sin_to_cos, c.freq_shift)?
            .to_dtype(dtype)?;
        let guidance = match (c.time_cond_proj_dim, added.and_then(|a| a.guidance.as_ref())) {
            (Some(dim), Some(w)) => Some(guidance_embedding(w, dim)?.to_dtype(dtype)?),
            _ => None,
        };
        let mut emb = self.time_embedding.forward(&t_emb, guidance.as_ref())?;
        if let Some(add) = &self.add_embedding {
            let Some(added) = added.and_then(|a| a.text_time.as_ref()) else {
                candle_core::bail!("this SDXL UNet needs pooled text embeddings and time ids");
            };
            let b = added.time_ids.dim(0)?;
            let dim = c.addition_time_embed_dim.expect("checked by layout()");
            let time = timestep_embedding(
                &added.time_ids.flatten_all()?,
                dim,
                c.flip_sin_to_cos,
                c.freq_shift,
            )?
            .reshape((b, ()))?
            .to_dtype(dtype)?;
            let add_in = Tensor::cat(&[&added.text_embeds.to_dtype(dtype)?, &time], 1)?;
            emb = (emb + add.forward(&add_in, None)?)?;
        }

        let mut x = self.conv_in.forward(sample)?;
        let mut skips = vec![x.clone()];
        for (i, block) in self.down_blocks.iter().enumerate() {
            let (out, res) = block.forward(&x, &emb, context, i, hooks)?;
            x = out;
            skips.extend(res);
        }
        if let Some(mid) = &self.mid_block {
            x = mid.forward(&x, &emb, context, hooks)?;
        }
        for (i, block) in self.up_blocks.iter().enumerate() {
            let take = block.num_resnets();
            let res = skips.split_off(skips.len() - take);
            // Upsample to the next skip's size, so odd latent sizes still line up.
            let next = skips.last().map(|s| (s.dim(2), s.dim(3)));
            let size = match next {
                Some((Ok(h), Ok(w))) => Some((h, w)),
                _ => None,
            };
            x = block.forward(&x, &res, &emb, context, size, i, hooks)?;
        }
        self.conv_out.forward(&self.conv_norm_out.forward_silu(&x)?)
    }
}

/// The blocks' convolutions and linear layers; `conv_in` and `conv_out` (4 channels, where the
/// error would land straight in the prediction) and the time embedding (one row) stay f32.
impl Quantize for UNet2DConditionModel {
    fn quantize_int8(&mut self) -> Result<()> {
        self.down_blocks.quantize_int8()?;
        self.mid_block.quantize_int8()?;
        self.up_blocks.quantize_int8()?;
        self.int8 = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: serde_json::Value) -> UNetConfig {
        let mut c = serde_json::json!({
            "block_out_channels": [32, 64],
            "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
            "cross_attention_dim": 32,
        });
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(c).unwrap()
    }

    /// diffusers builds the cross-attention middle block when the key is absent and none when
    /// it is `null` (BK-SDM, SDXS); the two must not be confused.
    #[test]
    fn an_absent_mid_block_type_is_the_default_and_null_is_none() {
        let absent = config(serde_json::json!({}));
        assert_eq!(absent.mid_block_type.as_deref(), Some("UNetMidBlock2DCrossAttn"));
        assert_eq!(
            config(serde_json::json!({"mid_block_type": null})).mid_block_type,
            None
        );
        let other = config(serde_json::json!({"mid_block_type": "UNetMidBlock2DSimpleCrossAttn"}));
        assert!(other.validate().is_err());
    }

    /// diffusers' `get_guidance_scale_embedding` for w = 0.5 at 6 dims: sin, then cos, of
    /// 500 × 10000^(-i/2).
    #[test]
    fn the_guidance_embedding_is_diffusers_formula() {
        let w = Tensor::new(&[0.5f32], &candle_core::Device::Cpu).unwrap();
        let got = guidance_embedding(&w, 6).unwrap().to_vec2::<f32>().unwrap();
        let args = [500.0f64, 500.0 / 100.0, 500.0 / 10000.0];
        let want: Vec<f32> = args
            .iter()
            .map(|a| a.sin() as f32)
            .chain(args.iter().map(|a| a.cos() as f32))
            .collect();
        for (g, w) in got[0].iter().zip(&want) {
            assert!((g - w).abs() < 1e-4, "{got:?} vs {want:?}");
        }
        // An odd width is padded with a zero, as diffusers pads it.
        let odd = guidance_embedding(&w, 7).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(odd[0].len(), 7);
        assert_eq!(odd[0][6], 0.0);
    }
}
