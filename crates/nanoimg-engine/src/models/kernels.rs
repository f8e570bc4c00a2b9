//! Fused CPU kernels for the operations where candle's generic CPU ops lose most time to
//! PyTorch: softmax over the last dimension (attention) and GroupNorm (+ SiLU) (every resnet).
//!
//! Both are candle `CustomOp1`s over contiguous f32 data, parallel over rows/groups with rayon,
//! with an `exp` that the compiler vectorises (AVX2/FMA chosen at run time). Other devices and
//! dtypes take candle's own ops, so results never depend on which path ran beyond rounding.

use super::layers::Activation;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `e^x` for `x ≤ 0` (inputs are clamped to [-87, 0]). Cody–Waite range reduction
/// `x = n·ln2 + r`, `|r| ≤ ½ln2`, with ln 2 split in two so `r` keeps its bits; `e^r` from its
/// degree-6 Taylor polynomial; `2^n` put straight into the exponent bits. Relative error ≈ 2e-7.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // exactly representable head of ln 2
    const LN2_LO: f32 = -2.121_944_4e-4; // ln 2 − LN2_HI
    let x = x.clamp(-87.0, 0.0);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2^n without a float→int conversion (which blocks vectorisation): n + 127 ∈ [1, 127] is
    // an integer, so adding 1.5·2²³ puts it in the low mantissa bits; shifting those into the
    // exponent field drops everything above them.
    let biased = (n + 127.0 + 12_582_912.0).to_bits();
    f32::from_bits(biased << 23) * p
}

/// Lanes the reductions are split over so they vectorise.
const LANES: usize = 8;

/// Lanes of the softmax: one zmm register where AVX-512 is on, two ymm where only AVX2.
const ROW_LANES: usize = 16;

/// Softmax of one row, in place.
#[inline(always)]
pub(crate) fn softmax_in_place(row: &mut [f32]) {
    let mut m = [f32::NEG_INFINITY; ROW_LANES];
    let chunks = row.chunks_exact(ROW_LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..ROW_LANES {
            m[l] = if c[l] > m[l] { c[l] } else { m[l] };
        }
    }
    let max = tail
        .iter()
        .chain(m.iter())
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    let mut s = [0f32; ROW_LANES];
    let mut chunks = row.chunks_exact_mut(ROW_LANES);
    for c in &mut chunks {
        for l in 0..ROW_LANES {
            c[l] = exp_nonpositive(c[l] - max);
            s[l] += c[l];
        }
    }
    let mut sum: f32 = s.iter().sum();
    for v in chunks.into_remainder() {
        *v = exp_nonpositive(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_in_place_avx2(row: &mut [f32]) {
    softmax_in_place(row)
}

fn softmax_in_place_dispatch(row: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function was compiled for.
        return unsafe { softmax_in_place_avx2(row) };
    }
    softmax_in_place(row)
}

pub(crate) fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: expected f32");
    };
    let Some((a, b)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: expected a contiguous tensor");
    };
    Ok(&data[a..b])
}

struct SoftmaxLastDim;

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "nanoimg-softmax-last-dim"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, self.name())?;
        let dim = *layout.dims().last().unwrap_or(&1);
        let mut out = x.to_vec();
        if dim > 0 {
            out.par_chunks_mut(dim).for_each(softmax_in_place_dispatch);
        }
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// Softmax over the last dimension.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op1_no_bwd(&SoftmaxLastDim)
    } else {
        candle_nn::ops::softmax_last_dim(x)
    }
}

/// `erf(x)`: Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5e-7), made odd by its sign.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly =
        t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    (1.0 - poly * exp_nonpositive(-a * a)).copysign(x)
}

/// `σ(y)`; `e^{-|y|}` keeps the exponent non-positive.
#[inline(always)]
fn sigmoid(y: f32) -> f32 {
    let e = exp_nonpositive(-y.abs());
    if y >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    }
}

/// `out = a · act(g)`, or `act(g)` without `a`. The choices are made outside the loops, so each
/// loop vectorises.
#[inline(always)]
fn activate_row(act: Activation, a: Option<&[f32]>, g: &[f32], out: &mut [f32]) {
    #[inline(always)]
    fn run(a: Option<&[f32]>, g: &[f32], out: &mut [f32], f: impl Fn(f32) -> f32) {
        match a {
            Some(a) => {
                for ((o, &a), &g) in out.iter_mut().zip(a).zip(g) {
                    *o = a * f(g);
                }
            }
            None => {
                for (o, &g) in out.iter_mut().zip(g) {
                    *o = f(g);
                }
            }
        }
    }
    match act {
        Activation::Gelu => run(a, g, out, |x| {
            0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
        }),
        Activation::QuickGelu => run(a, g, out, |x| x * sigmoid(1.702 * x)),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn activate_row_avx512(act: Activation, a: Option<&[f32]>, g: &[f32], out: &mut [f32]) {
    activate_row(act, a, g, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn activate_row_avx2(act: Activation, a: Option<&[f32]>, g: &[f32], out: &mut [f32]) {
    activate_row(act, a, g, out)
}

fn activate_row_dispatch(act: Activation, a: Option<&[f32]>, g: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx2") && has!("fma") {
            // SAFETY: the CPU supports the features each function was compiled for.
            return unsafe {
                if has!("avx512f") {
                    activate_row_avx512(act, a, g, out)
                } else {
                    activate_row_avx2(act, a, g, out)
                }
            };
        }
    }
    activate_row(act, a, g, out)
}

/// An activation over every element, or (`gated`) diffusers' GEGLU-style gate over the last
/// dimension: its first half times the activation of its second half.
struct Activate {
    act: Activation,
    gated: bool,
}

/// Elements per parallel chunk of an ungated activation.
const ACT_CHUNK: usize = 16 * 1024;

impl CustomOp1 for Activate {
    fn name(&self) -> &'static str {
        "nanoimg-activation"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, self.name())?;
        if !self.gated {
            let mut out = vec![0f32; x.len()];
            out.par_chunks_mut(ACT_CHUNK)
                .zip(x.par_chunks(ACT_CHUNK))
                .for_each(|(o, g)| activate_row_dispatch(self.act, None, g, o));
            return Ok((CpuStorage::F32(out), layout.shape().clone()));
        }
        let mut dims = layout.dims().to_vec();
        let width = dims.last().copied().unwrap_or(0);
        if width % 2 != 0 {
            candle_core::bail!("{}: odd last dimension {width} for a gate", self.name());
        }
        let half = width / 2;
        *dims.last_mut().expect("checked: a last dimension") = half;
        let mut out = vec![0f32; x.len() / 2];
        if half > 0 {
            out.par_chunks_mut(half)
                .zip(x.par_chunks(width))
                .for_each(|(o, row)| {
                    let (a, gate) = row.split_at(half);
                    activate_row_dispatch(self.act, Some(a), gate, o)
                });
        }
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

/// diffusers' GEGLU activation of a projection `h = [a, gate]` (last dimension split in half):
/// `a · gelu(gate)`. On the CPU in f32 one fused pass with a vectorised erf; elsewhere candle's
/// ops.
pub fn geglu(h: &Tensor) -> Result<Tensor> {
    if h.device().is_cpu() && h.dtype() == DType::F32 {
        let op = Activate {
            act: Activation::Gelu,
            gated: true,
        };
        return h.contiguous()?.apply_op1_no_bwd(&op);
    }
    let half = h.dim(candle_core::D::Minus1)? / 2;
    let (a, gate) = (
        h.narrow(candle_core::D::Minus1, 0, half)?,
        h.narrow(candle_core::D::Minus1, half, half)?,
    );
    a * gate.gelu_erf()?
}

/// An MLP activation; on the CPU in f32 one vectorised pass, elsewhere candle's ops.
pub fn activation(x: &Tensor, act: Activation) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        return x.contiguous()?.apply_op1_no_bwd(&Activate { act, gated: false });
    }
    match act {
        Activation::Gelu => x.gelu_erf(),
        Activation::QuickGelu => x * candle_nn::ops::sigmoid(&(x * 1.702)?)?,
    }
}

/// GroupNorm over `[b, c, …]` with a per-channel affine, optionally followed by SiLU.
struct GroupNormOp<'a> {
    groups: usize,
    eps: f64,
    weight: &'a [f32],
    bias: &'a [f32],
    silu: bool,
}

#[inline(always)]
fn group_norm_group(x: &[f32], out: &mut [f32], spatial: usize, w: &[f32], b: &[f32], eps: f64, silu: bool) {
    // Mean and variance in two passes with f64 totals of f32 lane sums: stable and exact enough
    // for the 10⁶-element groups of a 512² VAE.
    let mut s = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f64 = chunks.remainder().iter().map(|&v| f64::from(v)).sum();
    let mut total = tail;
    for (i, c) in chunks.enumerate() {
        for l in 0..LANES {
            s[l] += c[l];
        }
        if i % 1024 == 1023 {
            total += s.iter().map(|&v| f64::from(v)).sum::<f64>();
            s = [0f32; LANES];
        }
    }
    total += s.iter().map(|&v| f64::from(v)).sum::<f64>();
    let mean = (total / x.len() as f64) as f32;
    let mut q = [0f32; LANES];
    let mut var_total = 0f64;
    let chunks = x.chunks_exact(LANES);
    for &v in chunks.remainder() {
        var_total += f64::from((v - mean) * (v - mean));
    }
    for (i, c) in chunks.enumerate() {
        for l in 0..LANES {
            let d = c[l] - mean;
            q[l] += d * d;
        }
        if i % 1024 == 1023 {
            var_total += q.iter().map(|&v| f64::from(v)).sum::<f64>();
            q = [0f32; LANES];
        }
    }
    var_total += q.iter().map(|&v| f64::from(v)).sum::<f64>();
    let rstd = (1.0 / (var_total / x.len() as f64 + eps).sqrt()) as f32;
    for (ch, (o, xs)) in out
        .chunks_exact_mut(spatial)
        .zip(x.chunks_exact(spatial))
        .enumerate()
    {
        let scale = rstd * w[ch];
        let shift = b[ch] - mean * scale;
        if silu {
            for (o, &v) in o.iter_mut().zip(xs) {
                let y = v * scale + shift;
                *o = y * sigmoid(y);
            }
        } else {
            for (o, &v) in o.iter_mut().zip(xs) {
                *o = v * scale + shift;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn group_norm_group_avx2(
    x: &[f32],
    out: &mut [f32],
    spatial: usize,
    w: &[f32],
    b: &[f32],
    eps: f64,
    silu: bool,
) {
    group_norm_group(x, out, spatial, w, b, eps, silu)
}

impl CustomOp1 for GroupNormOp<'_> {
    fn name(&self) -> &'static str {
        "nanoimg-group-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, self.name())?;
        let dims = layout.dims();
        let (b, c) = (dims[0], dims[1]);
        let spatial: usize = dims[2..].iter().product();
        let cpg = c / self.groups;
        let group_len = cpg * spatial;
        let mut out = vec![0f32; x.len()];
        #[cfg(target_arch = "x86_64")]
        let avx2 = std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
        out.par_chunks_mut(group_len)
            .zip(x.par_chunks(group_len))
            .enumerate()
            .for_each(|(i, (o, xs))| {
                let g = i % self.groups;
                let (w, bi) = (
                    &self.weight[g * cpg..(g + 1) * cpg],
                    &self.bias[g * cpg..(g + 1) * cpg],
                );
                #[cfg(target_arch = "x86_64")]
                if avx2 {
                    // SAFETY: the CPU supports the features the function was compiled for.
                    return unsafe { group_norm_group_avx2(xs, o, spatial, w, bi, self.eps, self.silu) };
                }
                group_norm_group(xs, o, spatial, w, bi, self.eps, self.silu)
            });
        debug_assert_eq!(out.len(), b * c * spatial);
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// A GroupNorm layer (`weight`, `bias` as diffusers names them) with a fused-SiLU variant.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    inner: candle_nn::GroupNorm,
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// Loads `weight` and `bias` of `channels` entries.
    pub fn new(groups: usize, channels: usize, eps: f64, vb: candle_nn::VarBuilder) -> Result<Self> {
        let inner = candle_nn::group_norm(groups, channels, eps, vb.clone())?;
        let weight = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.))?;
        let bias = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.))?;
        Ok(Self {
            inner,
            weight,
            bias,
            groups,
            eps,
        })
    }

    fn fused(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        let (w, b) = (self.weight.to_vec1::<f32>()?, self.bias.to_vec1::<f32>()?);
        x.contiguous()?.apply_op1_no_bwd(&GroupNormOp {
            groups: self.groups,
            eps: self.eps,
            weight: &w,
            bias: &b,
            silu,
        })
    }

    fn fast_path(&self, x: &Tensor) -> bool {
        x.device().is_cpu() && x.dtype() == DType::F32 && self.weight.dtype() == DType::F32 && x.rank() >= 3
    }

    /// GroupNorm.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.fast_path(x) {
            self.fused(x, false)
        } else {
            candle_core::Module::forward(&self.inner, x)
        }
    }

    /// SiLU(GroupNorm(x)) in one pass.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        if self.fast_path(x) {
            self.fused(x, true)
        } else {
            candle_nn::ops::silu(&candle_core::Module::forward(&self.inner, x)?)
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::models::max_abs_diff;
    use candle_core::{Device, Module};

    /// Against candle's `a · gelu_erf(gate)` (libm's erf) on odd shapes and a wide value range.
    #[test]
    fn geglu_matches_candle() {
        let dev = candle_core::Device::Cpu;
        for shape in [(1, 1, 2), (2, 7, 22), (1, 77, 2560)] {
            let h = (Tensor::randn(0f32, 1.0, shape, &dev).unwrap() * 4.0).unwrap();
            let half = shape.2 / 2;
            let want = (h.narrow(2, 0, half).unwrap() * h.narrow(2, half, half).unwrap().gelu_erf().unwrap())
                .unwrap();
            let got = geglu(&h).unwrap();
            let d = crate::models::max_abs_diff(&got, &want).unwrap();
            assert!(d < 1e-5, "{shape:?}: {d}");
        }
        assert!(geglu(&Tensor::zeros((2, 3), DType::F32, &dev).unwrap()).is_err());
    }

    /// Against candle's GELU (libm's erf) and `x · sigmoid(1.702 x)`, lengths off the chunk
    /// size, values up to ±20 (both tails).
    #[test]
    fn activations_match_candle() {
        let dev = candle_core::Device::Cpu;
        for n in [1, 31, ACT_CHUNK + 5] {
            let x = (Tensor::randn(0f32, 1.0, (1, n), &dev).unwrap() * 6.0).unwrap();
            let x = Tensor::cat(&[&x, &Tensor::new(&[[-20f32, 20.0, 0.0]], &dev).unwrap()], 1).unwrap();
            let quick = (&x * candle_nn::ops::sigmoid(&(&x * 1.702).unwrap()).unwrap()).unwrap();
            for (act, want) in [
                (Activation::Gelu, x.gelu_erf().unwrap()),
                (Activation::QuickGelu, quick),
            ] {
                let d = crate::models::max_abs_diff(&activation(&x, act).unwrap(), &want).unwrap();
                assert!(d < 1e-5, "{act:?} {n}: {d}");
            }
        }
    }

    #[test]
    fn fast_exp_is_accurate_over_the_softmax_range() {
        let mut worst = 0f32;
        for i in 0..=87_000 {
            let x = -(i as f32) / 1000.0;
            let rel = ((exp_nonpositive(x) - x.exp()) / x.exp()).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 5e-7, "{worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(-200.0) < 1e-37);
    }

    #[test]
    fn softmax_matches_candle_including_odd_row_lengths() {
        let dev = Device::Cpu;
        for shape in [(2, 3, 77), (1, 5, 4096), (4, 1, 9)] {
            let x = (Tensor::randn(0f32, 4.0, shape, &dev).unwrap())
                .contiguous()
                .unwrap();
            let ours = softmax_last_dim(&x).unwrap();
            let theirs = candle_nn::ops::softmax_last_dim(&x).unwrap();
            // Summation order differs (8 lanes vs candle's sequential sum), so compare relative
            // to the largest probability: a row of 4096 can have one entry near 1.
            let scale = theirs.max_keepdim(candle_core::D::Minus1).unwrap();
            let diff = max_abs_diff(
                &ours.broadcast_div(&scale).unwrap(),
                &theirs.broadcast_div(&scale).unwrap(),
            )
            .unwrap();
            assert!(diff < 1e-5, "{shape:?}: {diff}");
        }
        // A transposed (non-contiguous) input is made contiguous first.
        let x = Tensor::randn(0f32, 1.0, (8, 16), &dev).unwrap().t().unwrap();
        let ours = softmax_last_dim(&x).unwrap();
        let theirs = candle_nn::ops::softmax(&x, candle_core::D::Minus1).unwrap();
        assert!(max_abs_diff(&ours, &theirs).unwrap() < 1e-6);
    }

    #[test]
    fn group_norm_and_fused_silu_match_candle() {
        let dev = Device::Cpu;
        let vb = candle_nn::VarBuilder::from_tensors(
            [
                ("weight".to_string(), Tensor::randn(1f32, 0.5, 32, &dev).unwrap()),
                ("bias".to_string(), Tensor::randn(0f32, 0.5, 32, &dev).unwrap()),
            ]
            .into_iter()
            .collect(),
            DType::F32,
            &dev,
        );
        let ours = GroupNorm::new(8, 32, 1e-6, vb.clone()).unwrap();
        let theirs = candle_nn::group_norm(8, 32, 1e-6, vb).unwrap();
        // Offset data checks the variance is not computed as E[x²] − E[x]².
        let x = (Tensor::randn(0f32, 2.0, (2, 32, 33, 17), &dev).unwrap() + 100.0).unwrap();
        let want = theirs.forward(&x).unwrap();
        assert!(max_abs_diff(&ours.forward(&x).unwrap(), &want).unwrap() < 1e-4);
        let want_silu = candle_nn::ops::silu(&want).unwrap();
        assert!(max_abs_diff(&ours.forward_silu(&x).unwrap(), &want_silu).unwrap() < 1e-4);
    }
}
