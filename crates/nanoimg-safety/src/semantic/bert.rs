//! A BERT encoder as `transformers` saves `BertModel` (all-MiniLM-L6-v2 is one: 6 layers, 384
//! wide, 12 heads). Field names mirror the checkpoint's: `embeddings.word_embeddings`,
//! `encoder.layer.N.attention.self.query`, … Post-norm, exact (erf) GELU. Only what sentence
//! embeddings need: no pooler, no token-type ids other than 0.

use crate::SafetyError;
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

/// The fields of a `BertConfig` that change the computation.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
}

fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}
fn default_position_type() -> String {
    "absolute".into()
}

impl BertConfig {
    /// Refuses what this implementation does not compute, by name, instead of computing
    /// something else.
    pub fn check(&self) -> std::result::Result<(), SafetyError> {
        let unsupported = |field, value: String| Err(SafetyError::UnsupportedConfig { field, value });
        if self.hidden_act != "gelu" {
            return unsupported("hidden_act", format!("{:?} (only \"gelu\")", self.hidden_act));
        }
        if self.position_embedding_type != "absolute" {
            return unsupported(
                "position_embedding_type",
                format!("{:?} (only \"absolute\")", self.position_embedding_type),
            );
        }
        if self.num_attention_heads == 0 || !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return unsupported(
                "num_attention_heads",
                format!(
                    "{} (hidden_size {} must be a multiple)",
                    self.num_attention_heads, self.hidden_size
                ),
            );
        }
        Ok(())
    }
}

#[derive(Debug)]
struct BertEmbeddings {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    layer_norm: LayerNorm,
}

impl BertEmbeddings {
    fn new(vb: VarBuilder, c: &BertConfig) -> Result<Self> {
        let d = c.hidden_size;
        Ok(Self {
            word_embeddings: candle_nn::embedding(c.vocab_size, d, vb.pp("word_embeddings"))?,
            position_embeddings: candle_nn::embedding(
                c.max_position_embeddings,
                d,
                vb.pp("position_embeddings"),
            )?,
            token_type_embeddings: candle_nn::embedding(
                c.type_vocab_size,
                d,
                vb.pp("token_type_embeddings"),
            )?,
            layer_norm: candle_nn::layer_norm(d, c.layer_norm_eps, vb.pp("LayerNorm"))?,
        })
    }

    fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        let (_, len) = input_ids.dims2()?;
        let positions = Tensor::arange(0u32, len as u32, input_ids.device())?;
        let words = self.word_embeddings.forward(input_ids)?;
        let pos = self.position_embeddings.forward(&positions)?;
        // Token type 0 throughout: one segment.
        let types =
            self.token_type_embeddings
                .forward(&Tensor::zeros(len, DType::U32, input_ids.device())?)?;
        let x = words.broadcast_add(&(pos + types)?)?;
        self.layer_norm.forward(&x)
    }
}

#[derive(Debug)]
struct BertSelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    heads: usize,
    scale: f64,
}

impl BertSelfAttention {
    fn new(vb: VarBuilder, c: &BertConfig) -> Result<Self> {
        let d = c.hidden_size;
        Ok(Self {
            query: candle_nn::linear(d, d, vb.pp("query"))?,
            key: candle_nn::linear(d, d, vb.pp("key"))?,
            value: candle_nn::linear(d, d, vb.pp("value"))?,
            heads: c.num_attention_heads,
            scale: ((d / c.num_attention_heads) as f64).powf(-0.5),
        })
    }

    fn split(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, d) = x.dims3()?;
        x.reshape((b, n, self.heads, d / self.heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// `bias` is `[batch, 1, 1, len]`: 0 for tokens, a large negative number for padding.
    fn forward(&self, x: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let q = self.split(&self.query.forward(x)?)?;
        let k = self.split(&self.key.forward(x)?)?;
        let v = self.split(&self.value.forward(x)?)?;
        let scores = (q.matmul(&k.t()?)? * self.scale)?.broadcast_add(bias)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let (b, _, n, _) = probs.dims4()?;
        probs.matmul(&v)?.transpose(1, 2)?.reshape((b, n, ()))
    }
}

/// `dense` then `LayerNorm(x + residual)`: BERT's post-norm output block (both the attention
/// output and the feed-forward output have this shape in the checkpoint).
#[derive(Debug)]
struct BertOutput {
    dense: Linear,
    layer_norm: LayerNorm,
}

impl BertOutput {
    fn new(vb: VarBuilder, inner: usize, c: &BertConfig) -> Result<Self> {
        Ok(Self {
            dense: candle_nn::linear(inner, c.hidden_size, vb.pp("dense"))?,
            layer_norm: candle_nn::layer_norm(c.hidden_size, c.layer_norm_eps, vb.pp("LayerNorm"))?,
        })
    }

    fn forward(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        self.layer_norm.forward(&(self.dense.forward(x)? + residual)?)
    }
}

#[derive(Debug)]
struct BertLayer {
    attention_self: BertSelfAttention,
    attention_output: BertOutput,
    intermediate: Linear,
    output: BertOutput,
}

impl BertLayer {
    fn new(vb: VarBuilder, c: &BertConfig) -> Result<Self> {
        let d = c.hidden_size;
        Ok(Self {
            attention_self: BertSelfAttention::new(vb.pp("attention").pp("self"), c)?,
            attention_output: BertOutput::new(vb.pp("attention").pp("output"), d, c)?,
            intermediate: candle_nn::linear(d, c.intermediate_size, vb.pp("intermediate").pp("dense"))?,
            output: BertOutput::new(vb.pp("output"), c.intermediate_size, c)?,
        })
    }

    fn forward(&self, x: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let a = self
            .attention_output
            .forward(&self.attention_self.forward(x, bias)?, x)?;
        let h = self.intermediate.forward(&a)?.gelu_erf()?;
        self.output.forward(&h, &a)
    }
}

/// The encoder: embeddings and layers. Returns `last_hidden_state`.
#[derive(Debug)]
pub struct BertModel {
    embeddings: BertEmbeddings,
    layers: Vec<BertLayer>,
}

impl BertModel {
    /// Loads from a VarBuilder rooted at the checkpoint (with or without a `bert.` prefix).
    pub fn new(vb: VarBuilder, config: &BertConfig) -> std::result::Result<Self, SafetyError> {
        config.check()?;
        let build = || -> Result<Self> {
            let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
                vb.pp("bert")
            } else {
                vb.clone()
            };
            let layers = (0..config.num_hidden_layers)
                .map(|i| BertLayer::new(vb.pp("encoder").pp("layer").pp(i), config))
                .collect::<Result<Vec<_>>>()?;
            Ok(Self {
                embeddings: BertEmbeddings::new(vb.pp("embeddings"), config)?,
                layers,
            })
        };
        build().map_err(|e| SafetyError::Model(e.to_string()))
    }

    /// `input_ids` and `attention_mask` are `[batch, len]` u32; the mask is 1 for tokens and 0
    /// for padding. Returns `[batch, len, hidden]`.
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let (b, n) = attention_mask.dims2()?;
        // 0 where attended, -1e9 where padded (transformers uses the dtype's minimum; any large
        // negative number gives the same softmax).
        let bias = ((attention_mask.to_dtype(DType::F32)? - 1.0)? * 1e9)?.reshape((b, 1, 1, n))?;
        let mut x = self.embeddings.forward(input_ids)?;
        for layer in &self.layers {
            x = layer.forward(&x, &bias)?;
        }
        Ok(x)
    }
}

/// Mean of the token states where `attention_mask` is 1 (sentence-transformers' mean pooling),
/// then L2-normalised. `hidden` is `[batch, len, d]`, the mask `[batch, len]`. Returns `[batch, d]`.
pub fn masked_mean_normalized(hidden: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
    let mask = attention_mask.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
    let mean = summed.broadcast_div(&counts)?;
    let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    mean.broadcast_div(&norm)
}
