//! Small building blocks shared by the UNet and the VAE: resnets, resampling, attention math.

use super::conv::Conv2d;
use super::kernels::{softmax_last_dim, GroupNorm};
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Conv2dConfig, Linear, VarBuilder};

/// A 2-D convolution as diffusers names it (`weight`, `bias`).
pub fn conv2d(
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        stride,
        padding,
        ..Default::default()
    };
    Ok(Conv2d::new(candle_nn::conv2d(cin, cout, kernel, cfg, vb)?))
}

/// Most bytes of attention scores materialised at once; longer sequences are processed in
/// blocks of queries, so memory stays bounded at any resolution (1024² SD 1.5 with CFG would
/// otherwise need 2 × 8 × 16384² floats ≈ 17 GB).
const MAX_SCORE_BYTES: usize = 64 << 20;

/// Scaled dot-product attention over `[batch, heads, tokens, head_dim]` tensors.
///
/// Half-precision inputs are computed in f32 (diffusers' `upcast_attention`/`upcast_softmax`):
/// the softmax overflows in f16 at SD resolutions otherwise.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
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
}
