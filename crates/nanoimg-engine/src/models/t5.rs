//! transformers' `T5EncoderModel`: the text encoder FLUX.1 conditions its transformer on (T5
//! v1.1 XXL: gated-GELU feed-forward, no biases), any size its `config.json` gives.
//!
//! Names follow the checkpoint: `shared` (or `encoder.embed_tokens`), `encoder.block.{i}.layer.0`
//! (`SelfAttention.{q,k,v,o}`, the first block's `relative_attention_bias`, `layer_norm`),
//! `encoder.block.{i}.layer.1` (`DenseReluDense.{wi_0,wi_1,wo}` or `.{wi,wo}`, `layer_norm`),
//! `encoder.final_layer_norm`. T5 scales nothing: no √d in the attention scores, which get a
//! learned bias per head by bucketed relative position instead; its norms are RMS norms without
//! a mean or bias.

use super::layers::{merge_heads, split_heads, RmsNorm};
use super::linear::{linear_no_bias, Linear};
use crate::ConfigError;
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};
use serde::Deserialize;

/// The fields of a transformers `T5Config` the encoder reads.
#[derive(Debug, Clone, Deserialize)]
pub struct T5Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    #[serde(default = "buckets")]
    pub relative_attention_num_buckets: usize,
    #[serde(default = "max_distance")]
    pub relative_attention_max_distance: usize,
    #[serde(default = "eps")]
    pub layer_norm_epsilon: f64,
    /// `gated-gelu` (T5 v1.1, FLUX's), or `relu` (the original T5).
    #[serde(default = "relu")]
    pub feed_forward_proj: String,
}

fn buckets() -> usize {
    32
}
fn max_distance() -> usize {
    128
}
fn eps() -> f64 {
    1e-6
}
fn relu() -> String {
    "relu".into()
}

impl T5Config {
    /// Rejects what this implementation would compute wrongly, naming the field.
    pub fn validate(&self) -> std::result::Result<(), ConfigError> {
        if !matches!(self.feed_forward_proj.as_str(), "gated-gelu" | "relu") {
            return Err(ConfigError::unsupported(
                "feed_forward_proj",
                &self.feed_forward_proj,
            ));
        }
        if self.relative_attention_num_buckets < 4 || self.relative_attention_max_distance < 2 {
            return Err(ConfigError::invalid(
                "relative_attention_num_buckets",
                "needs at least 4 buckets and a distance of 2",
            ));
        }
        Ok(())
    }

    fn gated(&self) -> bool {
        self.feed_forward_proj == "gated-gelu"
    }
}

/// The bucket of each relative position `key − query` (bidirectional): half the buckets per
/// direction, exact up to a quarter of them, logarithmic up to `max_distance`, clamped beyond.
fn relative_bucket(relative: i64, num_buckets: usize, max_distance: usize) -> usize {
    let half = num_buckets / 2;
    let side = if relative > 0 { half } else { 0 };
    let n = relative.unsigned_abs() as usize;
    let exact = half / 2;
    if n < exact {
        return side + n;
    }
    let large = exact
        + ((n as f64 / exact as f64).ln() / (max_distance as f64 / exact as f64).ln() * (half - exact) as f64)
            as usize;
    side + large.min(half - 1)
}

#[derive(Debug)]
struct SelfAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
}

impl SelfAttention {
    fn new(c: &T5Config, vb: VarBuilder) -> Result<Self> {
        let inner = c.num_heads * c.d_kv;
        Ok(Self {
            q: linear_no_bias(c.d_model, inner, vb.pp("q"))?,
            k: linear_no_bias(c.d_model, inner, vb.pp("k"))?,
            v: linear_no_bias(c.d_model, inner, vb.pp("v"))?,
            o: linear_no_bias(inner, c.d_model, vb.pp("o"))?,
            heads: c.num_heads,
        })
    }

    /// `x` `[b, t, d]`, `bias` `[heads, t, t]`.
    fn forward(&self, x: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let h = self.heads;
        let (q, k, v) = (
            split_heads(&self.q.forward(x)?, h)?,
            split_heads(&self.k.forward(x)?, h)?,
            split_heads(&self.v.forward(x)?, h)?,
        );
        let dtype = x.dtype();
        let scores = q
            .to_dtype(DType::F32)?
            .matmul(&k.to_dtype(DType::F32)?.t()?)?
            .broadcast_add(&bias.unsqueeze(0)?)?;
        let probs = super::kernels::softmax_last_dim(&scores)?.to_dtype(dtype)?;
        self.o.forward(&merge_heads(&probs.matmul(&v)?)?)
    }
}

#[derive(Debug)]
enum FeedForward {
    /// `wo(gelu_tanh(wi_0 x) · wi_1 x)`.
    GatedGelu { wi_0: Linear, wi_1: Linear, wo: Linear },
    /// `wo(relu(wi x))`.
    Relu { wi: Linear, wo: Linear },
}

impl FeedForward {
    fn new(c: &T5Config, vb: VarBuilder) -> Result<Self> {
        let wo = linear_no_bias(c.d_ff, c.d_model, vb.pp("wo"))?;
        Ok(if c.gated() {
            FeedForward::GatedGelu {
                wi_0: linear_no_bias(c.d_model, c.d_ff, vb.pp("wi_0"))?,
                wi_1: linear_no_bias(c.d_model, c.d_ff, vb.pp("wi_1"))?,
                wo,
            }
        } else {
            FeedForward::Relu {
                wi: linear_no_bias(c.d_model, c.d_ff, vb.pp("wi"))?,
                wo,
            }
        })
    }
}

impl Module for FeedForward {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            FeedForward::GatedGelu { wi_0, wi_1, wo } => {
                wo.forward(&(wi_0.forward(x)?.gelu()? * wi_1.forward(x)?)?)
            }
            FeedForward::Relu { wi, wo } => wo.forward(&wi.forward(x)?.relu()?),
        }
    }
}

#[derive(Debug)]
struct Block {
    attention: SelfAttention,
    attention_norm: RmsNorm,
    ff: FeedForward,
    ff_norm: RmsNorm,
}

impl Block {
    fn new(c: &T5Config, vb: VarBuilder) -> Result<Self> {
        let (l0, l1) = (vb.pp("layer").pp("0"), vb.pp("layer").pp("1"));
        Ok(Self {
            attention: SelfAttention::new(c, l0.pp("SelfAttention"))?,
            attention_norm: RmsNorm::new(c.d_model, c.layer_norm_epsilon, l0.pp("layer_norm"))?,
            ff: FeedForward::new(c, l1.pp("DenseReluDense"))?,
            ff_norm: RmsNorm::new(c.d_model, c.layer_norm_epsilon, l1.pp("layer_norm"))?,
        })
    }

    fn forward(&self, x: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let x = (x + self.attention.forward(&self.attention_norm.forward(x)?, bias)?)?;
        &x + self.ff.forward(&self.ff_norm.forward(&x)?)?
    }
}

/// The encoder stack of a T5 checkpoint.
#[derive(Debug)]
pub struct T5EncoderModel {
    embed: Embedding,
    relative_bias: Embedding,
    blocks: Vec<Block>,
    final_norm: RmsNorm,
    config: T5Config,
}

impl T5EncoderModel {
    /// From a VarBuilder rooted at the checkpoint. The token embedding is read as `shared`
    /// (transformers' name), else as `encoder.embed_tokens` (a file that kept only the tied copy).
    pub fn new(vb: VarBuilder, c: &T5Config) -> crate::Result<Self> {
        c.validate()?;
        Ok(Self::build(vb, c)?)
    }

    fn build(vb: VarBuilder, c: &T5Config) -> Result<Self> {
        let enc = vb.pp("encoder");
        let embed_vb = if !vb.contains_tensor("shared.weight") && enc.contains_tensor("embed_tokens.weight") {
            enc.pp("embed_tokens")
        } else {
            vb.pp("shared")
        };
        let blocks = (0..c.num_layers)
            .map(|i| Block::new(c, enc.pp("block").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed: candle_nn::embedding(c.vocab_size, c.d_model, embed_vb)?,
            relative_bias: candle_nn::embedding(
                c.relative_attention_num_buckets,
                c.num_heads,
                enc.pp("block.0.layer.0.SelfAttention.relative_attention_bias"),
            )?,
            blocks,
            final_norm: RmsNorm::new(c.d_model, c.layer_norm_epsilon, enc.pp("final_layer_norm"))?,
            config: c.clone(),
        })
    }

    /// The config.
    pub fn config(&self) -> &T5Config {
        &self.config
    }

    /// The attention bias every layer adds: `[heads, t, t]` by bucketed `key − query`.
    fn position_bias(&self, t: usize, device: &Device) -> Result<Tensor> {
        let c = &self.config;
        let buckets: Vec<u32> = (0..t)
            .flat_map(|q| {
                (0..t).map(move |k| {
                    relative_bucket(
                        k as i64 - q as i64,
                        c.relative_attention_num_buckets,
                        c.relative_attention_max_distance,
                    ) as u32
                })
            })
            .collect();
        let ids = Tensor::from_vec(buckets, (t, t), device)?;
        self.relative_bias
            .forward(&ids)?
            .permute((2, 0, 1))?
            .to_dtype(DType::F32)?
            .contiguous()
    }

    /// The last hidden state `[b, t, d_model]` for token ids `[b, t]` (every position attended,
    /// padding included, as FLUX's pipelines call it).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let t = ids.dim(1)?;
        let bias = self.position_bias(t, ids.device())?;
        let mut x = self.embed.forward(ids)?;
        for block in &self.blocks {
            x = block.forward(&x, &bias)?;
        }
        self.final_norm.forward(&x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// transformers' `_relative_position_bucket` (bidirectional, 32 buckets, 128) at a few
    /// distances, worked by hand: exact below 8, then 8 + ⌊ln(n/8)/ln(16) · 8⌋, capped at 15,
    /// keys after the query in the upper half.
    #[test]
    fn relative_buckets_are_t5s() {
        let b = |r| relative_bucket(r, 32, 128);
        assert_eq!([b(0), b(-1), b(-7), b(1), b(7)], [0, 1, 7, 17, 23]);
        assert_eq!(b(-8), 8);
        assert_eq!(b(-16), 10); // 8 + ⌊ln 2 / ln 16 · 8⌋ = 8 + 2
        assert_eq!(b(-127), 15);
        assert_eq!(b(-1000), 15);
        assert_eq!(b(1000), 31);
    }
}
