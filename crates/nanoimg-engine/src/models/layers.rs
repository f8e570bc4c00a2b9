//! Small building blocks shared by the UNet and the VAE: resnets, resampling, attention math.

use super::conv::Conv2d;
use super::int8::Quantize;
use super::kernels::{activation, softmax_last_dim, GroupNorm};
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Conv2dConfig, Linear, VarBuilder};

fn conv_config(stride: usize, padding: usize) -> Conv2dConfig {
    Conv2dConfig {
        stride,
        padding,
        ..Default::default()
    }
}

/// A 2-D convolution as diffusers names it (`weight`, `bias`).
pub fn conv2d(
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let cfg = conv_config(stride, padding);
    Ok(Conv2d::new(candle_nn::conv2d(cin, cout, kernel, cfg, vb)?))
}

/// A convolution stored without a bias (`weight` only), given a zero bias so it takes the fast
/// CPU path.
pub fn conv2d_no_bias(
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let c = candle_nn::conv2d_no_bias(cin, cout, kernel, conv_config(stride, padding), vb)?;
    let bias = Tensor::zeros(cout, c.weight().dtype(), c.weight().device())?;
    Ok(Conv2d::new(candle_nn::Conv2d::new(
        c.weight().clone(),
        Some(bias),
        *c.config(),
    )))
}

/// Most bytes of attention scores materialised at once; longer sequences are processed in
/// blocks of queries, so memory stays bounded at any resolution (1024² SD 1.5 with CFG would
/// otherwise need 2 × 8 × 16384² floats ≈ 17 GB).
const MAX_SCORE_BYTES: usize = 64 << 20;

/// Scaled dot-product attention over `[batch, heads, tokens, head_dim]` tensors.
///
/// On the CPU in f32 this is the fused kernel (`sdpa.rs`, which never writes the score matrix);
/// elsewhere candle's ops, over blocks of queries. Half-precision inputs are computed in f32
/// (diffusers' `upcast_attention`/`upcast_softmax`): the softmax overflows in f16 at SD
/// resolutions otherwise.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    if super::sdpa::supported(q, k, v) {
        return super::sdpa::attention(q, k, v, scale);
    }
    attention_blocked(q, k, v, scale, MAX_SCORE_BYTES)
}

fn attention_blocked(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, max_bytes: usize) -> Result<Tensor> {
    let dtype = q.dtype();
    let (q, k, v) = if dtype == DType::F32 {
        (q.clone(), k.clone(), v.clone())
    } else {
        (
            q.to_dtype(DType::F32)?,
            k.to_dtype(DType::F32)?,
            v.to_dtype(DType::F32)?,
        )
    };
    // Scaling q (tokens × dim) is far cheaper than scaling the scores (tokens × tokens).
    let q = (q * scale)?;
    let kt = k.t()?;
    let (b, h, nq, _) = q.dims4()?;
    let nk = kt.dim(3)?;
    let rows = (max_bytes / 4 / (b * h * nk).max(1)).clamp(1, nq);
    let block = |q: &Tensor| -> Result<Tensor> { softmax_last_dim(&q.matmul(&kt)?)?.matmul(&v) };
    let out = if rows >= nq {
        block(&q)?
    } else {
        let mut parts = Vec::with_capacity(nq.div_ceil(rows));
        for start in (0..nq).step_by(rows) {
            parts.push(block(&q.narrow(2, start, rows.min(nq - start))?)?);
        }
        Tensor::cat(&parts, 2)?
    };
    out.to_dtype(dtype)
}

/// An RMS norm with a weight and no bias or mean (`torch.nn.RMSNorm`, T5's `T5LayerNorm`):
/// `x / √(mean(x²) + eps) · weight` over the last dimension, computed in f32.
#[derive(Debug)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    /// `weight` of `dim` under `vb`.
    pub fn new(dim: usize, eps: f64, vb: candle_nn::VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(dim, "weight", candle_nn::Init::Const(1.0))?,
            eps,
        })
    }
}

impl candle_core::Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let ms = x.sqr()?.mean_keepdim(candle_core::D::Minus1)?;
        x.broadcast_div(&(ms + self.eps)?.sqrt()?)?
            .to_dtype(dtype)?
            .broadcast_mul(&self.weight)
    }
}

/// Splits `[b, n, heads*dim]` into `[b, heads, n, dim]`.
pub fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, n, c) = x.dims3()?;
    x.reshape((b, n, heads, c / heads))?.transpose(1, 2)?.contiguous()
}

/// Merges `[b, heads, n, dim]` back into `[b, n, heads*dim]`.
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, n, d) = x.dims4()?;
    x.transpose(1, 2)?.reshape((b, n, h * d))
}

/// diffusers' `ResnetBlock2D`: two norm-SiLU-conv stages, an optional time embedding between them,
/// and a 1×1 shortcut when the channel count changes.
#[derive(Debug)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
}

impl ResnetBlock2D {
    /// Loads a resnet; `temb_channels` is `None` for the VAE's resnets.
    pub fn new(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        temb_channels: Option<usize>,
        groups: usize,
        eps: f64,
    ) -> Result<Self> {
        let norm1 = GroupNorm::new(groups, cin, eps, vb.pp("norm1"))?;
        let conv1 = conv2d(cin, cout, 3, 1, 1, vb.pp("conv1"))?;
        let time_emb_proj = temb_channels
            .map(|t| candle_nn::linear(t, cout, vb.pp("time_emb_proj")))
            .transpose()?;
        let norm2 = GroupNorm::new(groups, cout, eps, vb.pp("norm2"))?;
        let conv2 = conv2d(cout, cout, 3, 1, 1, vb.pp("conv2"))?;
        let conv_shortcut = (cin != cout)
            .then(|| conv2d(cin, cout, 1, 1, 0, vb.pp("conv_shortcut")))
            .transpose()?;
        Ok(Self {
            norm1,
            conv1,
            time_emb_proj,
            norm2,
            conv2,
            conv_shortcut,
        })
    }

    /// `temb` is the already-computed time embedding `[b, temb_channels]` (SiLU applied here).
    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let mut h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            let t = proj.forward(&candle_nn::ops::silu(temb)?)?;
            h = h.broadcast_add(&t.unsqueeze(D::Minus1)?.unsqueeze(D::Minus1)?)?;
        }
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        match &self.conv_shortcut {
            Some(s) => s.forward(x)? + h,
            None => x + h,
        }
    }
}

impl Quantize for ResnetBlock2D {
    fn quantize_int8(&mut self) -> Result<()> {
        self.conv1.quantize_int8()?;
        self.conv2.quantize_int8()?;
        self.conv_shortcut.quantize_int8()
    }
}

/// `downsamplers.0`: a stride-2 3×3 convolution.
#[derive(Debug)]
pub struct Downsample2D {
    conv: Conv2d,
    /// The VAE pads (0,1,0,1) by hand and convolves without padding.
    asymmetric_pad: bool,
}

impl Downsample2D {
    /// Loads `downsamplers.0.conv`; `asymmetric_pad` for the VAE encoder's variant.
    pub fn new(vb: VarBuilder, channels: usize, asymmetric_pad: bool) -> Result<Self> {
        let padding = if asymmetric_pad { 0 } else { 1 };
        let conv = conv2d(channels, channels, 3, 2, padding, vb.pp("conv"))?;
        Ok(Self { conv, asymmetric_pad })
    }
}

impl Module for Downsample2D {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.asymmetric_pad {
            let x = x
                .pad_with_zeros(D::Minus1, 0, 1)?
                .pad_with_zeros(D::Minus2, 0, 1)?;
            self.conv.forward(&x)
        } else {
            self.conv.forward(x)
        }
    }
}

impl Quantize for Downsample2D {
    fn quantize_int8(&mut self) -> Result<()> {
        self.conv.quantize_int8()
    }
}

/// `upsamplers.0`: nearest-neighbour resize then a 3×3 convolution.
#[derive(Debug)]
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    /// Loads `upsamplers.0.conv`.
    pub fn new(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(Self {
            conv: conv2d(channels, channels, 3, 1, 1, vb.pp("conv"))?,
        })
    }

    /// Upsamples to `(h, w)` (twice the input unless a skip connection needs another size).
    pub fn forward(&self, x: &Tensor, size: Option<(usize, usize)>) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (th, tw) = size.unwrap_or((2 * h, 2 * w));
        self.conv.forward(&x.upsample_nearest2d(th, tw)?)
    }
}

impl Quantize for Upsample2D {
    fn quantize_int8(&mut self) -> Result<()> {
        self.conv.quantize_int8()
    }
}

/// A ViT patch embedding: the stride-`patch` convolution with a `patch`-sized kernel that cuts
/// `[b, c, h, w]` into patches, computed as one matrix product over the unfolded patches.
/// Returns `[b, (h/patch)·(w/patch), out]`, row-major over the patch grid as `flatten(2)` gives.
pub fn patch_embed(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, patch: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let out = weight.dim(0)?;
    let (gh, gw) = (h / patch, w / patch);
    if gh * patch != h || gw * patch != w {
        candle_core::bail!("a {h}×{w} image is not a whole number of {patch}×{patch} patches");
    }
    let patches = x
        .reshape((b, c, gh, patch, gw, patch))?
        .permute((0, 2, 4, 1, 3, 5))?
        .reshape((b * gh * gw, c * patch * patch))?;
    let mut y = patches.matmul(&weight.reshape((out, c * patch * patch))?.t()?)?;
    if let Some(bias) = bias {
        y = y.broadcast_add(bias)?;
    }
    y.reshape((b, gh * gw, out))
}

/// PyTorch's `interpolate(mode="bicubic", align_corners=False)` to an output size, for a
/// channels-last grid `[h, w, channels]`: the cubic convolution kernel with A = −0.75, source
/// coordinates `(dst + 0.5)·in/out − 0.5`, and edge samples repeated.
pub fn bicubic_resize(
    src: &[f32],
    (h, w): (usize, usize),
    channels: usize,
    (oh, ow): (usize, usize),
) -> Vec<f32> {
    const A: f64 = -0.75;
    let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    // For each output coordinate: the four source indices (clamped) and their weights.
    let taps = |n_in: usize, n_out: usize| -> Vec<([usize; 4], [f64; 4])> {
        let scale = n_in as f64 / n_out as f64;
        (0..n_out)
            .map(|d| {
                let real = scale * (d as f64 + 0.5) - 0.5;
                let i = real.floor();
                let t = real - i;
                let idx = [-1.0, 0.0, 1.0, 2.0].map(|o| (i + o).clamp(0.0, (n_in - 1) as f64) as usize);
                (idx, [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)])
            })
            .collect()
    };
    let (ty, tx) = (taps(h, oh), taps(w, ow));
    let mut out = vec![0f32; oh * ow * channels];
    let mut acc = vec![0f64; channels];
    for (oy, (iy, wy)) in ty.iter().enumerate() {
        for (ox, (ix, wx)) in tx.iter().enumerate() {
            acc.iter_mut().for_each(|a| *a = 0.0);
            for (&sy, &vy) in iy.iter().zip(wy) {
                for (&sx, &vx) in ix.iter().zip(wx) {
                    let row = &src[(sy * w + sx) * channels..][..channels];
                    for (a, &v) in acc.iter_mut().zip(row) {
                        *a += vy * vx * f64::from(v);
                    }
                }
            }
            let o = &mut out[(oy * ow + ox) * channels..][..channels];
            for (o, a) in o.iter_mut().zip(&acc) {
                *o = *a as f32;
            }
        }
    }
    out
}

/// The MLP activations of the transformers checkpoints we load, by their `hidden_act` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    QuickGelu,
    Gelu,
}

impl Activation {
    /// Reads a `hidden_act` value.
    pub fn parse(name: &str) -> std::result::Result<Self, crate::ConfigError> {
        match name {
            "quick_gelu" => Ok(Activation::QuickGelu),
            "gelu" => Ok(Activation::Gelu),
            other => Err(crate::ConfigError::unsupported("hidden_act", other)),
        }
    }

    /// Applies the activation.
    pub fn forward(self, x: &Tensor) -> Result<Tensor> {
        activation(x, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn blocked_attention_equals_whole_attention() {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (2, 3, 50, 8), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (2, 3, 20, 8), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (2, 3, 20, 8), &dev).unwrap();
        let whole = attention_blocked(&q, &k, &v, 0.3, usize::MAX).unwrap();
        // 7 query rows per block: uneven final block.
        let blocked = attention_blocked(&q, &k, &v, 0.3, 7 * 2 * 3 * 20 * 4).unwrap();
        let d: f32 = crate::models::max_abs_diff(&whole, &blocked).unwrap();
        assert!(d < 1e-6, "{d}");
    }

    #[test]
    fn patch_embed_equals_the_strided_convolution() {
        let dev = candle_core::Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 3, 8, 12), &dev).unwrap();
        let w = Tensor::randn(0f32, 1., (5, 3, 4, 4), &dev).unwrap();
        let b = Tensor::randn(0f32, 1., 5, &dev).unwrap();
        let conv = x
            .conv2d(&w, 0, 4, 1, 1)
            .unwrap()
            .broadcast_add(&b.reshape((1, 5, 1, 1)).unwrap())
            .unwrap()
            .flatten_from(2)
            .unwrap()
            .transpose(1, 2)
            .unwrap();
        let ours = patch_embed(&x, &w, Some(&b), 4).unwrap();
        assert_eq!(ours.dims(), &[2, 6, 5]);
        assert!(crate::models::max_abs_diff(&conv, &ours).unwrap() < 1e-4);
        assert!(patch_embed(&x, &w, None, 5).is_err());
    }

    #[test]
    fn bicubic_resize_keeps_identity_constants_and_ramps() {
        // Same size: the kernel's taps are 0, 1, 0, 0.
        let grid: Vec<f32> = (0..5 * 4 * 2).map(|i| (i * 7 % 11) as f32).collect();
        assert_eq!(bicubic_resize(&grid, (5, 4), 2, (5, 4)), grid);
        // The weights sum to one: a constant stays constant.
        let flat = vec![3.5f32; 6 * 6];
        assert!(bicubic_resize(&flat, (6, 6), 1, (4, 9))
            .iter()
            .all(|v| (v - 3.5).abs() < 1e-5));
        // Cubic convolution reproduces a linear ramp wherever no tap is clamped: 8 → 4 samples
        // x' = 2x + 0.5, all taps in range for x' in 1..=5.
        let ramp: Vec<f32> = (0..8).map(|x| x as f32).collect();
        let down = bicubic_resize(&ramp, (1, 8), 1, (1, 4));
        assert!(
            (down[1] - 2.5).abs() < 1e-5 && (down[2] - 4.5).abs() < 1e-5,
            "{down:?}"
        );
        // 2 → 3 samples of [0, 1]: sources −1/6, 1/2, 7/6. The middle is 0.5; the ends overshoot
        // by the kernel's negative lobe, W(7/6) = −0.0868 with A = −0.75.
        let up = bicubic_resize(&[0.0, 1.0], (1, 2), 1, (1, 3));
        let want = [-0.086_805_6, 0.5, 1.086_805_6];
        assert!(up.iter().zip(want).all(|(u, w)| (u - w).abs() < 1e-6), "{up:?}");
    }
}
