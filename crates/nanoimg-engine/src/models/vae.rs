//! diffusers' `AutoencoderKL`: images `[b, 3, H, W]` in [-1, 1] ↔ latents `[b, C, H/8, W/8]`.

use crate::models::conv::Conv2d;
use crate::models::kernels::GroupNorm;
use crate::models::layers::{attention, conv2d, Downsample2D, ResnetBlock2D, Upsample2D};
use crate::ConfigError;
use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};
use serde::Deserialize;

/// The fields of an `AutoencoderKL` config.json that we read.
#[derive(Debug, Clone, Deserialize)]
pub struct VaeConfig {
    #[serde(default = "three")]
    pub in_channels: usize,
    #[serde(default = "three")]
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    #[serde(default = "one")]
    pub layers_per_block: usize,
    #[serde(default = "four")]
    pub latent_channels: usize,
    #[serde(default = "thirty_two")]
    pub norm_num_groups: usize,
    #[serde(default = "sd_scale")]
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: Option<f64>,
    /// Whether the VAE must run in f32 even when the model runs in f16 (SDXL's VAE overflows).
    #[serde(default)]
    pub force_upcast: bool,
    #[serde(default = "yes")]
    pub use_quant_conv: bool,
    #[serde(default = "yes")]
    pub use_post_quant_conv: bool,
    #[serde(default = "yes")]
    pub mid_block_add_attention: bool,
    #[serde(default)]
    pub down_block_types: Vec<String>,
    #[serde(default)]
    pub up_block_types: Vec<String>,
}

fn three() -> usize {
    3
}
fn one() -> usize {
    1
}
fn four() -> usize {
    4
}
fn thirty_two() -> usize {
    32
}
fn sd_scale() -> f64 {
    0.18215
}
fn yes() -> bool {
    true
}

impl VaeConfig {
    /// How much smaller the latent is than the image per side.
    pub fn downscale(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }

    /// Rejects configurations we would compute wrongly.
    pub fn validate(&self) -> std::result::Result<(), ConfigError> {
        if self.block_out_channels.is_empty() {
            return Err(ConfigError::invalid("block_out_channels", "is empty"));
        }
        if let Some(t) = self.down_block_types.iter().find(|t| *t != "DownEncoderBlock2D") {
            return Err(ConfigError::unsupported("down_block_types", t));
        }
        if let Some(t) = self.up_block_types.iter().find(|t| *t != "UpDecoderBlock2D") {
            return Err(ConfigError::unsupported("up_block_types", t));
        }
        if let Some(c) = self
            .block_out_channels
            .iter()
            .find(|c| *c % self.norm_num_groups != 0)
        {
            return Err(ConfigError::invalid(
                "norm_num_groups",
                format!("{c} channels do not split into {} groups", self.norm_num_groups),
            ));
        }
        Ok(())
    }
}

/// The single-head self-attention in the VAE's mid block. Old checkpoints name its projections
/// `query`/`key`/`value`/`proj_attn`; both spellings load.
#[derive(Debug)]
struct VaeAttention {
    group_norm: GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
}

impl VaeAttention {
    fn new(vb: VarBuilder, ch: usize, groups: usize) -> Result<Self> {
        let legacy = vb.contains_tensor("query.weight");
        let name = |new: &'static str, old: &'static str| if legacy { old } else { new };
        let out = if legacy {
            vb.pp("proj_attn")
        } else {
            vb.pp("to_out").pp(0)
        };
        Ok(Self {
            group_norm: GroupNorm::new(groups, ch, 1e-6, vb.pp("group_norm"))?,
            to_q: candle_nn::linear(ch, ch, vb.pp(name("to_q", "query")))?,
            to_k: candle_nn::linear(ch, ch, vb.pp(name("to_k", "key")))?,
            to_v: candle_nn::linear(ch, ch, vb.pp(name("to_v", "value")))?,
            to_out: candle_nn::linear(ch, ch, out)?,
        })
    }
}

impl Module for VaeAttention {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let tokens = self
            .group_norm
            .forward(x)?
            .reshape((b, c, h * w))?
            .transpose(1, 2)?
            .contiguous()?;
        let q = self.to_q.forward(&tokens)?.unsqueeze(1)?;
        let k = self.to_k.forward(&tokens)?.unsqueeze(1)?;
        let v = self.to_v.forward(&tokens)?.unsqueeze(1)?;
        let out = attention(&q, &k, &v, (c as f64).powf(-0.5))?.squeeze(1)?;
        let out = self
            .to_out
            .forward(&out)?
            .transpose(1, 2)?
            .reshape((b, c, h, w))?;
        x + out
    }
}

#[derive(Debug)]
struct VaeMidBlock {
    resnet_0: ResnetBlock2D,
    attention: Option<VaeAttention>,
    resnet_1: ResnetBlock2D,
}

impl VaeMidBlock {
    fn new(vb: VarBuilder, ch: usize, c: &VaeConfig) -> Result<Self> {
        let r = |j: usize| ResnetBlock2D::new(vb.pp("resnets").pp(j), ch, ch, None, c.norm_num_groups, 1e-6);
        Ok(Self {
            resnet_0: r(0)?,
            attention: c
                .mid_block_add_attention
                .then(|| VaeAttention::new(vb.pp("attentions").pp(0), ch, c.norm_num_groups))
                .transpose()?,
            resnet_1: r(1)?,
        })
    }
}

impl Module for VaeMidBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = self.resnet_0.forward(x, None)?;
        if let Some(a) = &self.attention {
            x = a.forward(&x)?;
        }
        self.resnet_1.forward(&x, None)
    }
}

#[derive(Debug)]
struct Encoder {
    conv_in: Conv2d,
    down_blocks: Vec<(Vec<ResnetBlock2D>, Option<Downsample2D>)>,
    mid_block: VaeMidBlock,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    fn new(vb: VarBuilder, c: &VaeConfig) -> Result<Self> {
        let boc = &c.block_out_channels;
        let g = c.norm_num_groups;
        let mut down_blocks = Vec::new();
        let mut out_ch = boc[0];
        for (i, &ch) in boc.iter().enumerate() {
            let in_ch = out_ch;
            out_ch = ch;
            let vbi = vb.pp("down_blocks").pp(i);
            let resnets = (0..c.layers_per_block)
                .map(|j| {
                    let cin = if j == 0 { in_ch } else { out_ch };
                    ResnetBlock2D::new(vbi.pp("resnets").pp(j), cin, out_ch, None, g, 1e-6)
                })
                .collect::<Result<Vec<_>>>()?;
            let down = (i + 1 < boc.len())
                .then(|| Downsample2D::new(vbi.pp("downsamplers").pp(0), out_ch, true))
                .transpose()?;
            down_blocks.push((resnets, down));
        }
        let last = *boc.last().expect("validated non-empty");
        Ok(Self {
            conv_in: conv2d(c.in_channels, boc[0], 3, 1, 1, vb.pp("conv_in"))?,
            down_blocks,
            mid_block: VaeMidBlock::new(vb.pp("mid_block"), last, c)?,
            conv_norm_out: GroupNorm::new(g, last, 1e-6, vb.pp("conv_norm_out"))?,
            conv_out: conv2d(last, 2 * c.latent_channels, 3, 1, 1, vb.pp("conv_out"))?,
        })
    }
}

impl Module for Encoder {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = self.conv_in.forward(x)?;
        for (resnets, down) in &self.down_blocks {
            for r in resnets {
                x = r.forward(&x, None)?;
            }
            if let Some(d) = down {
                x = d.forward(&x)?;
            }
        }
        let x = self.mid_block.forward(&x)?;
        self.conv_out.forward(&self.conv_norm_out.forward_silu(&x)?)
    }
}

#[derive(Debug)]
struct Decoder {
    conv_in: Conv2d,
    mid_block: VaeMidBlock,
    up_blocks: Vec<(Vec<ResnetBlock2D>, Option<Upsample2D>)>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    fn new(vb: VarBuilder, c: &VaeConfig) -> Result<Self> {
        let rev: Vec<usize> = c.block_out_channels.iter().rev().copied().collect();
        let g = c.norm_num_groups;
        let mut up_blocks = Vec::new();
        let mut out_ch = rev[0];
        for (i, &ch) in rev.iter().enumerate() {
            let prev = out_ch;
            out_ch = ch;
            let vbi = vb.pp("up_blocks").pp(i);
            let resnets = (0..=c.layers_per_block)
                .map(|j| {
                    let cin = if j == 0 { prev } else { out_ch };
                    ResnetBlock2D::new(vbi.pp("resnets").pp(j), cin, out_ch, None, g, 1e-6)
                })
                .collect::<Result<Vec<_>>>()?;
            let up = (i + 1 < rev.len())
                .then(|| Upsample2D::new(vbi.pp("upsamplers").pp(0), out_ch))
                .transpose()?;
            up_blocks.push((resnets, up));
        }
        let first = c.block_out_channels[0];
        Ok(Self {
            conv_in: conv2d(c.latent_channels, rev[0], 3, 1, 1, vb.pp("conv_in"))?,
            mid_block: VaeMidBlock::new(vb.pp("mid_block"), rev[0], c)?,
            up_blocks,
            conv_norm_out: GroupNorm::new(g, first, 1e-6, vb.pp("conv_norm_out"))?,
            conv_out: conv2d(first, c.out_channels, 3, 1, 1, vb.pp("conv_out"))?,
        })
    }
}

impl Module for Decoder {
    fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let mut x = self.mid_block.forward(&self.conv_in.forward(z)?)?;
        for (resnets, up) in &self.up_blocks {
            for r in resnets {
                x = r.forward(&x, None)?;
            }
            if let Some(u) = up {
                x = u.forward(&x, None)?;
            }
        }
        self.conv_out.forward(&self.conv_norm_out.forward_silu(&x)?)
    }
}

/// The variational autoencoder that maps between pixels and the UNet's latent space.
#[derive(Debug)]
pub struct AutoencoderKL {
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    config: VaeConfig,
}

impl AutoencoderKL {
    /// Loads from a VarBuilder rooted at the checkpoint.
    pub fn new(vb: VarBuilder, c: &VaeConfig) -> Result<Self> {
        let l = c.latent_channels;
        Ok(Self {
            encoder: Encoder::new(vb.pp("encoder"), c)?,
            decoder: Decoder::new(vb.pp("decoder"), c)?,
            quant_conv: c
                .use_quant_conv
                .then(|| conv2d(2 * l, 2 * l, 1, 1, 0, vb.pp("quant_conv")))
                .transpose()?,
            post_quant_conv: c
                .use_post_quant_conv
                .then(|| conv2d(l, l, 1, 1, 0, vb.pp("post_quant_conv")))
                .transpose()?,
            config: c.clone(),
        })
    }

    /// The VAE's config.
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// Encodes images in [-1, 1] to scaled latents, taking the posterior's mean (deterministic).
    pub fn encode(&self, images: &Tensor) -> Result<Tensor> {
        let mut moments = self.encoder.forward(images)?;
        if let Some(q) = &self.quant_conv {
            moments = q.forward(&moments)?;
        }
        let mean = moments.narrow(1, 0, self.config.latent_channels)?;
        let shift = self.config.shift_factor.unwrap_or(0.0);
        (mean - shift)? * self.config.scaling_factor
    }

    /// Decodes scaled latents to images in roughly [-1, 1].
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let shift = self.config.shift_factor.unwrap_or(0.0);
        let mut z = ((latents / self.config.scaling_factor)? + shift)?;
        if let Some(p) = &self.post_quant_conv {
            z = p.forward(&z)?;
        }
        self.decoder.forward(&z)
    }
}
