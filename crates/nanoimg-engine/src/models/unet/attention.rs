//! diffusers' `Transformer2DModel` and its `BasicTransformerBlock`, with the attention hook points.

use super::hooks::{Site, UNetHooks};
use crate::models::conv::Conv2d;
use crate::models::int8::Quantize;
use crate::models::kernels::{geglu, GroupNorm};
use crate::models::layers::{attention, conv2d, merge_heads, split_heads};
use crate::models::linear::{linear, linear_no_bias, Linear};
use crate::models::sdpa;
use candle_core::{Module, Result, Tensor};
use candle_nn::{LayerNorm, VarBuilder};

/// diffusers' `Attention` (`to_q`, `to_k`, `to_v`, `to_out.0`).
#[derive(Debug)]
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    scale: f64,
}

impl Attention {
    /// `context_dim` is the key/value input width (the query's for self-attention).
    pub fn new(
        vb: VarBuilder,
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        head_dim: usize,
    ) -> Result<Self> {
        let inner = heads * head_dim;
        Ok(Self {
            to_q: linear_no_bias(query_dim, inner, vb.pp("to_q"))?,
            to_k: linear_no_bias(context_dim, inner, vb.pp("to_k"))?,
            to_v: linear_no_bias(context_dim, inner, vb.pp("to_v"))?,
            to_out: linear(inner, query_dim, vb.pp("to_out").pp(0))?,
            heads,
            scale: (head_dim as f64).powf(-0.5),
        })
    }

    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        if sdpa::supported(q, k, v) {
            // The fused kernel reads the heads where the projections put them.
            return sdpa::attention_heads_last(q, k, v, self.heads, self.scale);
        }
        let out = attention(
            &split_heads(q, self.heads)?,
            &split_heads(k, self.heads)?,
            &split_heads(v, self.heads)?,
            self.scale,
        )?;
        merge_heads(&out)
    }

    /// Attention of `x` over `context` (over `x` itself when `None`), plus an optional extra
    /// branch of pre-projected keys/values.
    pub fn forward(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        extra: Option<&super::hooks::ExtraCrossAttention>,
    ) -> Result<Tensor> {
        let ctx = context.unwrap_or(x);
        let q = self.to_q.forward(x)?;
        let mut out = self.attend(&q, &self.to_k.forward(ctx)?, &self.to_v.forward(ctx)?)?;
        if let Some(e) = extra {
            // A hook may give one set of keys/values for the whole batch.
            let b = q.dim(0)?;
            let fit = |t: &Tensor| -> Result<Tensor> {
                if t.dim(0)? == b {
                    Ok(t.clone())
                } else {
                    t.repeat((b, 1, 1))
                }
            };
            let branch = self.attend(&q, &fit(&e.keys)?, &fit(&e.values)?)?;
            out = (out + (branch * e.scale)?)?;
        }
        self.to_out.forward(&out)
    }
}

impl Quantize for Attention {
    fn quantize_int8(&mut self) -> Result<()> {
        for l in [&mut self.to_q, &mut self.to_k, &mut self.to_v, &mut self.to_out] {
            l.quantize_int8()?;
        }
        Ok(())
    }
}

/// GEGLU feed-forward (`ff.net.0.proj`, `ff.net.2`).
#[derive(Debug)]
struct FeedForward {
    proj_in: Linear,
    proj_out: Linear,
}

impl FeedForward {
    fn new(vb: VarBuilder, dim: usize) -> Result<Self> {
        let inner = dim * 4;
        Ok(Self {
            proj_in: linear(dim, inner * 2, vb.pp("net").pp(0).pp("proj"))?,
            proj_out: linear(inner, dim, vb.pp("net").pp(2))?,
        })
    }
}

impl Module for FeedForward {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.proj_out.forward(&geglu(&self.proj_in.forward(x)?)?)
    }
}

impl Quantize for FeedForward {
    fn quantize_int8(&mut self) -> Result<()> {
        self.proj_in.quantize_int8()?;
        self.proj_out.quantize_int8()
    }
}

/// Self-attention, cross-attention to the text, feed-forward; each pre-norm with a residual.
#[derive(Debug)]
pub struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl BasicTransformerBlock {
    fn new(vb: VarBuilder, dim: usize, heads: usize, head_dim: usize, context_dim: usize) -> Result<Self> {
        Ok(Self {
            norm1: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm1"))?,
            attn1: Attention::new(vb.pp("attn1"), dim, dim, heads, head_dim)?,
            norm2: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm2"))?,
            attn2: Attention::new(vb.pp("attn2"), dim, context_dim, heads, head_dim)?,
            norm3: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm3"))?,
            ff: FeedForward::new(vb.pp("ff"), dim)?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        context: &Tensor,
        site: Site,
        hooks: Option<&dyn UNetHooks>,
    ) -> Result<Tensor> {
        let normed = self.norm1.forward(x)?;
        let reference = match hooks {
            Some(h) => h.self_attention_context(site, &normed)?,
            None => None,
        };
        let attended = match reference {
            None => self.attn1.forward(&normed, None, None)?,
            Some(r) => {
                let b = normed.dim(0)?;
                let tokens = if r.tokens.dim(0)? == b {
                    r.tokens
                } else {
                    r.tokens.repeat((b, 1, 1))?
                };
                let ctx = Tensor::cat(&[&normed, &tokens], 1)?;
                let with = self.attn1.forward(&normed, Some(&ctx), None)?;
                match r.weights {
                    None => with,
                    Some(w) => {
                        let own = self.attn1.forward(&normed, None, None)?;
                        (&own + (with - &own)?.broadcast_mul(&w)?)?
                    }
                }
            }
        };
        let x = (x + attended)?;
        let extra = match hooks {
            Some(h) => h.extra_cross_attention(site)?,
            None => None,
        };
        let x = (&x
            + self
                .attn2
                .forward(&self.norm2.forward(&x)?, Some(context), extra.as_ref())?)?;
        &x + self.ff.forward(&self.norm3.forward(&x)?)?
    }
}

/// Input/output projection of a `Transformer2DModel`: 1×1 conv (SD 1.x) or linear (SD 2.x, SDXL).
#[derive(Debug)]
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

impl Projection {
    fn new(vb: VarBuilder, cin: usize, cout: usize, is_linear: bool) -> Result<Self> {
        Ok(if is_linear {
            Projection::Linear(linear(cin, cout, vb)?)
        } else {
            Projection::Conv(conv2d(cin, cout, 1, 1, 0, vb)?)
        })
    }
}

/// Shape of one `Transformer2DModel`.
#[derive(Debug, Clone, Copy)]
pub struct TransformerSpec {
    pub channels: usize,
    pub heads: usize,
    pub layers: usize,
    pub context_dim: usize,
    pub linear_projection: bool,
    pub groups: usize,
}

/// diffusers' `Transformer2DModel`: norm, project in, transformer blocks, project out, residual.
#[derive(Debug)]
pub struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Projection,
    transformer_blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
}

impl Transformer2DModel {
    /// Loads `attentions.{i}` of a cross-attention block.
    pub fn new(vb: VarBuilder, s: TransformerSpec) -> Result<Self> {
        let head_dim = s.channels / s.heads;
        let inner = s.heads * head_dim;
        Ok(Self {
            norm: GroupNorm::new(s.groups, s.channels, 1e-6, vb.pp("norm"))?,
            proj_in: Projection::new(vb.pp("proj_in"), s.channels, inner, s.linear_projection)?,
            transformer_blocks: (0..s.layers)
                .map(|i| {
                    BasicTransformerBlock::new(
                        vb.pp("transformer_blocks").pp(i),
                        inner,
                        s.heads,
                        head_dim,
                        s.context_dim,
                    )
                })
                .collect::<Result<_>>()?,
            proj_out: Projection::new(vb.pp("proj_out"), inner, s.channels, s.linear_projection)?,
        })
    }

    /// `site` names this attention; its `transformer` field is filled in per block.
    pub fn forward(
        &self,
        x: &Tensor,
        context: &Tensor,
        site: Site,
        hooks: Option<&dyn UNetHooks>,
    ) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let normed = self.norm.forward(x)?;
        let to_tokens = |t: &Tensor| -> Result<Tensor> {
            let ch = t.dim(1)?;
            t.permute((0, 2, 3, 1))?.reshape((b, h * w, ch))
        };
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(&conv.forward(&normed)?)?,
            Projection::Linear(l) => l.forward(&to_tokens(&normed)?)?,
        };
        for (i, block) in self.transformer_blocks.iter().enumerate() {
            let site = Site {
                transformer: i,
                ..site
            };
            tokens = block.forward(&tokens, context, site, hooks)?;
        }
        let to_map = |t: &Tensor| -> Result<Tensor> {
            let ch = t.dim(2)?;
            t.reshape((b, h, w, ch))?.permute((0, 3, 1, 2))?.contiguous()
        };
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(&to_map(&tokens)?)?,
            Projection::Linear(l) => to_map(&l.forward(&tokens)?)?,
        };
        debug_assert_eq!(out.dim(1)?, c);
        x + out
    }
}

impl Quantize for BasicTransformerBlock {
    fn quantize_int8(&mut self) -> Result<()> {
        self.attn1.quantize_int8()?;
        self.attn2.quantize_int8()?;
        self.ff.quantize_int8()
    }
}

impl Quantize for Projection {
    fn quantize_int8(&mut self) -> Result<()> {
        match self {
            Projection::Conv(c) => c.quantize_int8(),
            Projection::Linear(l) => l.quantize_int8(),
        }
    }
}

impl Quantize for Transformer2DModel {
    fn quantize_int8(&mut self) -> Result<()> {
        self.proj_in.quantize_int8()?;
        self.transformer_blocks.quantize_int8()?;
        self.proj_out.quantize_int8()
    }
}
