//! diffusers' `FluxTransformer2DModel` (FLUX.1 schnell/dev, Kontext): a rectified-flow
//! transformer over the text tokens and the 2×2-packed latent tokens, with rotary positions on
//! (t, h, w) ids.
//!
//! Names follow diffusers' layout: `x_embedder`, `context_embedder`, `time_text_embed`
//! (`timestep_embedder`, `guidance_embedder` for dev, `text_embedder` for the pooled CLIP
//! embedding), `transformer_blocks.{i}` (double-stream: `norm1`, `norm1_context`, `attn` with
//! `to_{q,k,v}`/`add_{q,k,v}_proj`, `norm_{q,k}`/`norm_added_{q,k}`, `to_out.0`/`to_add_out`,
//! `ff`/`ff_context`), `single_transformer_blocks.{i}` (`norm`, `proj_mlp`, `attn`, `proj_out`),
//! `norm_out`, `proj_out`. Every modulation is `LayerNorm(x)·(1 + scale) + shift` from a linear
//! map of `silu(conditioning)`; gates scale what each branch adds back.

use super::layers::{merge_heads, split_heads, RmsNorm};
use super::linear::{linear, Linear};
use super::unet::{timestep_embedding, TimestepEmbedding};
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;
use serde::Deserialize;

/// The fields of a diffusers `FluxTransformer2DModel` config.json.
#[derive(Debug, Clone, Deserialize)]
pub struct FluxConfig {
    #[serde(default = "one")]
    pub patch_size: usize,
    #[serde(default = "sixty_four")]
    pub in_channels: usize,
    #[serde(default)]
    pub out_channels: Option<usize>,
    #[serde(default = "nineteen")]
    pub num_layers: usize,
    #[serde(default = "thirty_eight")]
    pub num_single_layers: usize,
    #[serde(default = "head_dim")]
    pub attention_head_dim: usize,
    #[serde(default = "heads")]
    pub num_attention_heads: usize,
    #[serde(default = "joint_dim")]
    pub joint_attention_dim: usize,
    #[serde(default = "pooled_dim")]
    pub pooled_projection_dim: usize,
    /// FLUX.1 dev and Kontext take the guidance scale as an embedding; schnell does not.
    #[serde(default)]
    pub guidance_embeds: bool,
    #[serde(default = "axes")]
    pub axes_dims_rope: Vec<usize>,
}

fn one() -> usize {
    1
}
fn sixty_four() -> usize {
    64
}
fn nineteen() -> usize {
    19
}
fn thirty_eight() -> usize {
    38
}
fn head_dim() -> usize {
    128
}
fn heads() -> usize {
    24
}
fn joint_dim() -> usize {
    4096
}
fn pooled_dim() -> usize {
    768
}
fn axes() -> Vec<usize> {
    vec![16, 56, 56]
}

impl FluxConfig {
    /// Rejects what this implementation would compute wrongly, naming the field.
    pub fn validate(&self) -> std::result::Result<(), crate::ConfigError> {
        if self.patch_size != 1 {
            return Err(crate::ConfigError::unsupported("patch_size", self.patch_size));
        }
        if self.axes_dims_rope.iter().sum::<usize>() != self.attention_head_dim
            || self.axes_dims_rope.iter().any(|d| d % 2 == 1)
        {
            return Err(crate::ConfigError::invalid(
                "axes_dims_rope",
                format!(
                    "{:?} must be even and add up to attention_head_dim {}",
                    self.axes_dims_rope, self.attention_head_dim
                ),
            ));
        }
        Ok(())
    }

    fn inner(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }
}

/// `LayerNorm` without weights, eps 1e-6, over the last dimension.
fn layer_norm(x: &Tensor) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let x = x.broadcast_sub(&mean)?;
    let var = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(var + 1e-6)?.sqrt()?)
}

/// `LayerNorm(x)·(1 + scale) + shift`, `scale`/`shift` `[b, dim]`.
fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    layer_norm(x)?
        .broadcast_mul(&(scale.unsqueeze(1)? + 1.0)?)?
        .broadcast_add(&shift.unsqueeze(1)?)
}

/// `linear(silu(emb))` cut into `n` pieces of `[b, dim]`.
#[derive(Debug)]
struct Modulation {
    linear: Linear,
    n: usize,
}

impl Modulation {
    fn new(dim: usize, n: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            linear: linear(dim, n * dim, vb.pp("linear"))?,
            n,
        })
    }

    fn forward(&self, emb: &Tensor) -> Result<Vec<Tensor>> {
        self.linear.forward(&candle_nn::ops::silu(emb)?)?.chunk(self.n, 1)
    }
}

/// Rotary position: `cos`, `sin` `[seq, head_dim]`, each frequency repeated for its pair.
#[derive(Debug, Clone)]
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    /// FLUX's rotary embedding of position ids `[seq, axes]` (text tokens all zero; image
    /// tokens `(0, row, column)`), θ = 10000, `axes_dims` channels per axis.
    pub fn new(ids: &[[f32; 3]], axes_dims: &[usize], device: &candle_core::Device) -> Result<Self> {
        let dim: usize = axes_dims.iter().sum();
        let mut cos = Vec::with_capacity(ids.len() * dim);
        let mut sin = Vec::with_capacity(ids.len() * dim);
        for id in ids {
            for (axis, &d) in axes_dims.iter().enumerate() {
                for i in 0..d / 2 {
                    let freq = 1.0 / 10000f64.powf((2 * i) as f64 / d as f64);
                    let arg = id[axis] as f64 * freq;
                    let (s, c) = (arg.sin() as f32, arg.cos() as f32);
                    cos.extend([c, c]);
                    sin.extend([s, s]);
                }
            }
        }
        Ok(Self {
            cos: Tensor::from_vec(cos, (ids.len(), dim), device)?,
            sin: Tensor::from_vec(sin, (ids.len(), dim), device)?,
        })
    }

    /// Rotates `x` `[b, heads, seq, head_dim]`: each pair `(a, b)` → `(a·cos − b·sin, b·cos + a·sin)`.
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let (b, h, s, d) = x.dims4()?;
        let pairs = x.reshape((b, h, s, d / 2, 2))?;
        let (re, im) = (pairs.narrow(4, 0, 1)?, pairs.narrow(4, 1, 1)?);
        let rotated = Tensor::cat(&[&im.neg()?, &re], 4)?.reshape((b, h, s, d))?;
        x.broadcast_mul(&self.cos)? + rotated.broadcast_mul(&self.sin)?
    }
}

/// Query, key and value projections of one stream, with the per-head RMS norms.
#[derive(Debug)]
struct Qkv {
    q: Linear,
    k: Linear,
    v: Linear,
    norm_q: RmsNorm,
    norm_k: RmsNorm,
}

impl Qkv {
    fn new(c: &FluxConfig, vb: &VarBuilder, names: [&str; 5]) -> Result<Self> {
        let (dim, hd) = (c.inner(), c.attention_head_dim);
        Ok(Self {
            q: linear(dim, dim, vb.pp(names[0]))?,
            k: linear(dim, dim, vb.pp(names[1]))?,
            v: linear(dim, dim, vb.pp(names[2]))?,
            norm_q: RmsNorm::new(hd, 1e-6, vb.pp(names[3]))?,
            norm_k: RmsNorm::new(hd, 1e-6, vb.pp(names[4]))?,
        })
    }

    /// `[b, heads, seq, head_dim]` each.
    fn forward(&self, x: &Tensor, heads: usize) -> Result<(Tensor, Tensor, Tensor)> {
        Ok((
            self.norm_q.forward(&split_heads(&self.q.forward(x)?, heads)?)?,
            self.norm_k.forward(&split_heads(&self.k.forward(x)?, heads)?)?,
            split_heads(&self.v.forward(x)?, heads)?,
        ))
    }
}

/// Softmax attention over the joint sequence after rotary positions; `[b, seq, heads·dim]`
/// (the shared kernel: on the CPU in f32 it never holds the whole score matrix, which at 1024²
/// would be 24 heads × 4608² floats, 2 GB).
fn attention(q: &Tensor, k: &Tensor, v: &Tensor, rope: &Rope) -> Result<Tensor> {
    let scale = 1.0 / (q.dim(3)? as f64).sqrt();
    merge_heads(&super::layers::attention(
        &rope.apply(q)?,
        &rope.apply(k)?,
        v,
        scale,
    )?)
}

/// `FeedForward(activation_fn="gelu-approximate")`: `net.2(gelu_tanh(net.0.proj(x)))`.
#[derive(Debug)]
struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            proj: linear(dim, 4 * dim, vb.pp("net.0.proj"))?,
            out: linear(4 * dim, dim, vb.pp("net.2"))?,
        })
    }
}

impl Module for FeedForward {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.out.forward(&self.proj.forward(x)?.gelu()?)
    }
}

/// A double-stream block: text and image tokens keep their own weights, attend jointly.
#[derive(Debug)]
struct DoubleBlock {
    norm1: Modulation,
    norm1_context: Modulation,
    img: Qkv,
    txt: Qkv,
    to_out: Linear,
    to_add_out: Linear,
    ff: FeedForward,
    ff_context: FeedForward,
    heads: usize,
}

impl DoubleBlock {
    fn new(c: &FluxConfig, vb: VarBuilder) -> Result<Self> {
        let dim = c.inner();
        let attn = vb.pp("attn");
        Ok(Self {
            norm1: Modulation::new(dim, 6, vb.pp("norm1"))?,
            norm1_context: Modulation::new(dim, 6, vb.pp("norm1_context"))?,
            img: Qkv::new(c, &attn, ["to_q", "to_k", "to_v", "norm_q", "norm_k"])?,
            txt: Qkv::new(
                c,
                &attn,
                [
                    "add_q_proj",
                    "add_k_proj",
                    "add_v_proj",
                    "norm_added_q",
                    "norm_added_k",
                ],
            )?,
            to_out: linear(dim, dim, attn.pp("to_out.0"))?,
            to_add_out: linear(dim, dim, attn.pp("to_add_out"))?,
            ff: FeedForward::new(dim, vb.pp("ff"))?,
            ff_context: FeedForward::new(dim, vb.pp("ff_context"))?,
            heads: c.num_attention_heads,
        })
    }

    fn forward(&self, img: &Tensor, txt: &Tensor, temb: &Tensor, rope: &Rope) -> Result<(Tensor, Tensor)> {
        let m = self.norm1.forward(temb)?;
        let mc = self.norm1_context.forward(temb)?;
        let img_in = modulate(img, &m[0], &m[1])?;
        let txt_in = modulate(txt, &mc[0], &mc[1])?;
        let (iq, ik, iv) = self.img.forward(&img_in, self.heads)?;
        let (tq, tk, tv) = self.txt.forward(&txt_in, self.heads)?;
        let joint = |t: &Tensor, i: &Tensor| Tensor::cat(&[t, i], 2);
        let out = attention(&joint(&tq, &iq)?, &joint(&tk, &ik)?, &joint(&tv, &iv)?, rope)?;
        let n_txt = txt.dim(1)?;
        let txt_attn = out.narrow(1, 0, n_txt)?;
        let img_attn = out.narrow(1, n_txt, img.dim(1)?)?;
        let gated = |g: &Tensor, y: Tensor| y.broadcast_mul(&g.unsqueeze(1)?);

        let img = (img + gated(&m[2], self.to_out.forward(&img_attn)?)?)?;
        let ff = self.ff.forward(&modulate(&img, &m[3], &m[4])?)?;
        let img = (&img + gated(&m[5], ff)?)?;

        let txt = (txt + gated(&mc[2], self.to_add_out.forward(&txt_attn)?)?)?;
        let ff = self.ff_context.forward(&modulate(&txt, &mc[3], &mc[4])?)?;
        let txt = (&txt + gated(&mc[5], ff)?)?;
        Ok((img, txt))
    }
}

/// A single-stream block over the concatenated tokens: attention and MLP side by side.
#[derive(Debug)]
struct SingleBlock {
    norm: Modulation,
    qkv: Qkv,
    proj_mlp: Linear,
    proj_out: Linear,
    heads: usize,
}

impl SingleBlock {
    fn new(c: &FluxConfig, vb: VarBuilder) -> Result<Self> {
        let dim = c.inner();
        Ok(Self {
            norm: Modulation::new(dim, 3, vb.pp("norm"))?,
            qkv: Qkv::new(c, &vb.pp("attn"), ["to_q", "to_k", "to_v", "norm_q", "norm_k"])?,
            proj_mlp: linear(dim, 4 * dim, vb.pp("proj_mlp"))?,
            proj_out: linear(5 * dim, dim, vb.pp("proj_out"))?,
            heads: c.num_attention_heads,
        })
    }

    fn forward(&self, x: &Tensor, temb: &Tensor, rope: &Rope) -> Result<Tensor> {
        let m = self.norm.forward(temb)?;
        let h = modulate(x, &m[0], &m[1])?;
        let mlp = self.proj_mlp.forward(&h)?.gelu()?;
        let (q, k, v) = self.qkv.forward(&h, self.heads)?;
        let attn = attention(&q, &k, &v, rope)?;
        let out = self.proj_out.forward(&Tensor::cat(&[&attn, &mlp], 2)?)?;
        x + out.broadcast_mul(&m[2].unsqueeze(1)?)?
    }
}

/// FluxPipeline's `_pack_latents`: `[b, c, h, w]` latents as `[b, (h/2)·(w/2), 4c]` tokens, one
/// per 2×2 patch in row-major order, channel `4·ch + 2·dy + dx`.
pub fn pack_latents(latents: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = latents.dims4()?;
    latents
        .reshape((b, c, h / 2, 2, w / 2, 2))?
        .permute((0, 2, 4, 1, 3, 5))?
        .reshape((b, (h / 2) * (w / 2), c * 4))
}

/// The inverse of [`pack_latents`] for latents of `h × w`.
pub fn unpack_latents(tokens: &Tensor, (h, w): (usize, usize)) -> Result<Tensor> {
    let (b, _, c4) = tokens.dims3()?;
    tokens
        .reshape((b, h / 2, w / 2, c4 / 4, 2, 2))?
        .permute((0, 3, 1, 4, 2, 5))?
        .reshape((b, c4 / 4, h, w))
}

/// FluxPipeline's position ids: `text_tokens` zeros, then `(0, row, column)` for each packed
/// image token of an `h × w` latent (`(h/2) × (w/2)` tokens).
pub fn position_ids(text_tokens: usize, (h, w): (usize, usize)) -> Vec<[f32; 3]> {
    let (rows, cols) = (h / 2, w / 2);
    std::iter::repeat_n([0.0; 3], text_tokens)
        .chain((0..rows * cols).map(|i| [0.0, (i / cols) as f32, (i % cols) as f32]))
        .collect()
}

/// What one call of the transformer is conditioned on.
#[derive(Debug, Clone)]
pub struct FluxInputs<'a> {
    /// Packed latent tokens `[b, image_tokens, in_channels]`.
    pub latents: &'a Tensor,
    /// T5's last hidden state `[b, text_tokens, joint_attention_dim]`.
    pub text: &'a Tensor,
    /// CLIP's pooled output `[b, pooled_projection_dim]`.
    pub pooled: &'a Tensor,
    /// σ per row `[b]` (the model sees `σ × 1000`).
    pub timestep: &'a Tensor,
    /// The guidance scale per row `[b]`, for models with `guidance_embeds`.
    pub guidance: Option<&'a Tensor>,
    /// Rotary positions of the text tokens then the image tokens.
    pub rope: &'a Rope,
}

/// The FLUX transformer.
#[derive(Debug)]
pub struct FluxTransformer2DModel {
    x_embedder: Linear,
    context_embedder: Linear,
    timestep_embedder: TimestepEmbedding,
    guidance_embedder: Option<TimestepEmbedding>,
    /// `PixArtAlphaTextProjection`: the same linear, SiLU, linear.
    text_embedder: TimestepEmbedding,
    blocks: Vec<DoubleBlock>,
    single_blocks: Vec<SingleBlock>,
    norm_out: Modulation,
    proj_out: Linear,
    config: FluxConfig,
}

impl FluxTransformer2DModel {
    /// From a VarBuilder rooted at the checkpoint (diffusers' names).
    pub fn new(vb: VarBuilder, c: &FluxConfig) -> crate::Result<Self> {
        c.validate()?;
        Ok(Self::build(vb, c)?)
    }

    /// A diffusers `transformer/` folder on its own (its `config.json` and safetensors, mapped
    /// rather than read), at `dtype`.
    pub fn load(dir: &std::path::Path, dtype: DType, device: &candle_core::Device) -> crate::Result<Self> {
        let config: FluxConfig = serde_json::from_value(crate::folder::read_json(&dir.join("config.json"))?)
            .map_err(|source| crate::EngineError::Json {
                path: dir.join("config.json"),
                source,
            })?;
        let files = crate::folder::safetensors_in(dir)?;
        // SAFETY: the files are only read while mapped; NanoImg never writes a model it loads.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device) }
            .map_err(|e| crate::EngineError::from(e).at(dir))?;
        Self::new(vb, &config).map_err(|e| e.at(dir))
    }

    fn build(vb: VarBuilder, c: &FluxConfig) -> Result<Self> {
        let dim = c.inner();
        let tte = vb.pp("time_text_embed");
        let out_channels = c.out_channels.unwrap_or(c.in_channels);
        Ok(Self {
            x_embedder: linear(c.in_channels, dim, vb.pp("x_embedder"))?,
            context_embedder: linear(c.joint_attention_dim, dim, vb.pp("context_embedder"))?,
            timestep_embedder: TimestepEmbedding::new(tte.pp("timestep_embedder"), 256, dim, None)?,
            guidance_embedder: c
                .guidance_embeds
                .then(|| TimestepEmbedding::new(tte.pp("guidance_embedder"), 256, dim, None))
                .transpose()?,
            text_embedder: TimestepEmbedding::new(
                tte.pp("text_embedder"),
                c.pooled_projection_dim,
                dim,
                None,
            )?,
            blocks: (0..c.num_layers)
                .map(|i| DoubleBlock::new(c, vb.pp("transformer_blocks").pp(i)))
                .collect::<Result<_>>()?,
            single_blocks: (0..c.num_single_layers)
                .map(|i| SingleBlock::new(c, vb.pp("single_transformer_blocks").pp(i)))
                .collect::<Result<_>>()?,
            norm_out: Modulation::new(dim, 2, vb.pp("norm_out"))?,
            proj_out: linear(dim, out_channels, vb.pp("proj_out"))?,
            config: c.clone(),
        })
    }

    /// The config.
    pub fn config(&self) -> &FluxConfig {
        &self.config
    }

    /// The predicted velocity for the image tokens, `[b, image_tokens, out_channels]`.
    pub fn forward(&self, i: &FluxInputs) -> Result<Tensor> {
        let dtype = i.latents.dtype();
        let embed = |t: &Tensor, mlp: &TimestepEmbedding| -> Result<Tensor> {
            let t = (t.to_dtype(DType::F32)? * 1000.0)?;
            mlp.forward(&timestep_embedding(&t, 256, true, 0.0)?.to_dtype(dtype)?, None)
        };
        let pooled = self.text_embedder.forward(i.pooled, None)?;
        let mut temb = (embed(i.timestep, &self.timestep_embedder)? + pooled)?;
        match (&self.guidance_embedder, i.guidance) {
            (Some(g), Some(scale)) => temb = (temb + embed(scale, g)?)?,
            (Some(_), None) => candle_core::bail!("this FLUX model needs a guidance scale"),
            (None, _) => {}
        }
        let mut img = self.x_embedder.forward(i.latents)?;
        let mut txt = self.context_embedder.forward(i.text)?;
        for block in &self.blocks {
            (img, txt) = block.forward(&img, &txt, &temb, i.rope)?;
        }
        let n_txt = txt.dim(1)?;
        let mut x = Tensor::cat(&[&txt, &img], 1)?;
        for block in &self.single_blocks {
            x = block.forward(&x, &temb, i.rope)?;
        }
        let img = x.narrow(1, n_txt, x.dim(1)? - n_txt)?;
        // AdaLayerNormContinuous: scale first, then shift.
        let m = self.norm_out.forward(&temb)?;
        self.proj_out.forward(&modulate(&img, &m[1], &m[0])?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Token (r, c), channel 4·ch + 2·dy + dx holds latent (ch, 2r + dy, 2c + dx), as diffusers'
    /// view/permute lays it out; unpacking gives the latents back.
    #[test]
    fn packing_is_diffusers_2x2_patch_order_and_unpacks() {
        let (c, h, w) = (3, 4, 6);
        let v: Vec<f32> = (0..c * h * w).map(|i| i as f32).collect();
        let latents = Tensor::from_vec(v, (1, c, h, w), &Device::Cpu).unwrap();
        let tokens = pack_latents(&latents).unwrap();
        assert_eq!(tokens.dims(), [1, (h / 2) * (w / 2), 4 * c]);
        let t = tokens.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
        let l = latents.squeeze(0).unwrap().to_vec3::<f32>().unwrap();
        for (token, row) in t.iter().enumerate() {
            let (r, col) = (token / (w / 2), token % (w / 2));
            for (k, &x) in row.iter().enumerate() {
                let (ch, dy, dx) = (k / 4, (k / 2) % 2, k % 2);
                assert_eq!(x, l[ch][2 * r + dy][2 * col + dx]);
            }
        }
        let back = unpack_latents(&tokens, (h, w)).unwrap();
        let flat = |x: &Tensor| x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(back.dims(), latents.dims());
        assert_eq!(flat(&back), flat(&latents));
        let ids = position_ids(2, (h, w));
        assert_eq!(ids.len(), 2 + 6);
        assert_eq!(
            (ids[0], ids[2], ids[7]),
            ([0.0; 3], [0.0, 0.0, 0.0], [0.0, 1.0, 2.0])
        );
    }
}
