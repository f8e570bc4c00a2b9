//! 2-D convolution on the CPU as banded im2col + one GEMM per band, written straight into the
//! output.
//!
//! candle's CPU convolution reaches ~60 GFLOP/s on the 3×3 convolutions that dominate the VAE,
//! while the `gemm` crate it uses for matrix products reaches ~170 on the same machine. Here the
//! input patches for a band of output rows are unfolded into a buffer of a few MiB (so it stays
//! in cache and is reused), and one GEMM per band computes `bias + W · patches` directly into the
//! output tensor. 1×1 convolutions need no unfolding at all. With many bands (large images,
//! few channels) each thread takes bands of its own; with few, every thread works on each. Other devices, dtypes and grouped
//! or dilated convolutions use candle's implementation.

use super::int8::{self, ConvShape, Patches, QWeight, Quantize};
use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Module, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// Bytes of unfolded patches per band.
const BAND_BYTES: usize = 4 << 20;

/// A convolution layer (`weight`, `bias`), fast on the CPU; optionally on int8 weights.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weights: Weights,
}

#[derive(Debug, Clone)]
enum Weights {
    F32(candle_nn::Conv2d),
    Int8(Arc<Int8Conv>),
}

impl Conv2d {
    /// Wraps a loaded candle convolution.
    pub fn new(inner: candle_nn::Conv2d) -> Self {
        Self {
            weights: Weights::F32(inner),
        }
    }
}

impl Quantize for Conv2d {
    /// Ungrouped, undilated f32 convolutions on the CPU take int8 weights; others keep theirs.
    fn quantize_int8(&mut self) -> Result<()> {
        let Weights::F32(c) = &self.weights else {
            return Ok(());
        };
        let (cfg, w) = (c.config(), c.weight());
        if !w.device().is_cpu() || w.dtype() != DType::F32 || cfg.groups != 1 || cfg.dilation != 1 {
            return Ok(());
        }
        let (cout, cin, kh, kw) = w.dims4()?;
        let data = w.flatten_all()?.to_vec1::<f32>()?;
        let bias = c.bias().map(|b| b.to_vec1::<f32>()).transpose()?;
        let packed = int8::conv_weight(&data, (cout, cin, kh, kw));
        self.weights = Weights::Int8(Arc::new(Int8Conv {
            w: QWeight::new(&packed, (cout, cin * kh * kw), bias.as_deref()),
            cin,
            shape: ConvShape {
                kh,
                kw,
                stride: cfg.stride,
                pad: cfg.padding,
            },
        }));
        Ok(())
    }
}

/// A convolution on int8 weights (see [`int8`]).
#[derive(Debug)]
struct Int8Conv {
    w: QWeight,
    cin: usize,
    shape: ConvShape,
}

impl CustomOp1 for Int8Conv {
    fn name(&self) -> &'static str {
        "nanoimg-conv2d-int8"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "nanoimg-conv2d-int8: input")?;
        let (n, cin, h, w) = l.shape().dims4()?;
        let ConvShape { kh, kw, pad, .. } = self.shape;
        if cin != self.cin || h + 2 * pad < kh || w + 2 * pad < kw {
            candle_core::bail!(
                "{}: input {:?} for a {}-channel {kh}x{kw} kernel",
                self.name(),
                l.dims(),
                self.cin
            );
        }
        let (oh, ow) = self.shape.output((h, w));
        let plane = oh * ow;
        let cout = self.w.n();
        let at = int8::Out {
            row_stride: 1,
            channel_stride: plane,
        };
        let mut out = Vec::with_capacity(n * cout * plane);
        for img in x.chunks_exact(cin * h * w) {
            let a = Patches::new(img, cin, (h, w), self.shape);
            let y = &mut out.spare_capacity_mut()[..cout * plane];
            int8::product(&a, &self.w, y, at);
            // SAFETY: `product` wrote every one of the image's cout × plane outputs.
            unsafe { out.set_len(out.len() + cout * plane) };
        }
        Ok((CpuStorage::F32(out), Shape::from((n, cout, oh, ow))))
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let inner = match &self.weights {
            Weights::F32(c) => c,
            Weights::Int8(op) => return x.contiguous()?.apply_op1_no_bwd(op.as_ref()),
        };
        let cfg = inner.config();
        let w = inner.weight();
        match inner.bias() {
            Some(b)
                if x.device().is_cpu()
                    && x.dtype() == DType::F32
                    && w.dtype() == DType::F32
                    && cfg.groups == 1
                    && cfg.dilation == 1
                    && x.rank() == 4 =>
            {
                let op = Conv2dOp {
                    stride: cfg.stride,
                    padding: cfg.padding,
                    band_bytes: BAND_BYTES,
                };
                x.contiguous()?.apply_op3_no_bwd(&w.contiguous()?, b, &op)
            }
            _ => inner.forward(x),
        }
    }
}

struct Conv2dOp {
    stride: usize,
    padding: usize,
    band_bytes: usize,
}

/// The contiguous f32 data of a custom op's operand.
pub(crate) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{what} must be contiguous f32"),
    }
}

/// Geometry of one convolution.
#[derive(Clone, Copy)]
struct Geom {
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
    oh: usize,
    ow: usize,
}

impl Geom {
    /// Unfolds the patches of output rows `y0..y0+rows` of one image into `cols`
    /// (`cin·kh·kw` rows of `rows·ow` columns, in the weight's `[cin, kh, kw]` order).
    /// `parallel` spreads the rows of `cols` over the thread pool (for a band that one GEMM
    /// computes on every thread); otherwise the calling thread does it all.
    fn im2col(&self, x: &[f32], y0: usize, rows: usize, cols: &mut [f32], parallel: bool) {
        let g = *self;
        let n = rows * g.ow;
        let fill = |(row, c): (usize, &mut [f32])| {
            let ci = row / (g.kh * g.kw);
            let ky = (row / g.kw) % g.kh;
            let kx = row % g.kw;
            let plane = &x[ci * g.h * g.w..(ci + 1) * g.h * g.w];
            for r in 0..rows {
                let dst = &mut c[r * g.ow..(r + 1) * g.ow];
                let iy = ((y0 + r) * g.stride + ky) as isize - g.pad as isize;
                if iy < 0 || iy >= g.h as isize {
                    dst.fill(0.0);
                    continue;
                }
                let src = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                if g.stride == 1 {
                    // Output x maps to input x + kx − pad: one copy with zeroed edges.
                    let shift = kx as isize - g.pad as isize;
                    let lo = (-shift).clamp(0, g.ow as isize) as usize;
                    let hi = (g.w as isize - shift).clamp(lo as isize, g.ow as isize) as usize;
                    dst[..lo].fill(0.0);
                    let s0 = (lo as isize + shift) as usize;
                    dst[lo..hi].copy_from_slice(&src[s0..s0 + (hi - lo)]);
                    dst[hi..].fill(0.0);
                } else {
                    for (ox, d) in dst.iter_mut().enumerate() {
                        let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                        *d = if ix >= 0 && ix < g.w as isize {
                            src[ix as usize]
                        } else {
                            0.0
                        };
                    }
                }
            }
        };
        if parallel {
            cols.par_chunks_mut(n).enumerate().for_each(fill);
        } else {
            cols.chunks_mut(n).enumerate().for_each(fill);
        }
    }
}

/// `dst[cout, ncols] += W[cout, k] · rhs[k, ncols]`: `dst` rows `plane` apart, `rhs` rows
/// `rhs.1` apart.
///
/// # Safety
/// `dst` must hold `cout` rows of `ncols` writable floats, `plane` apart, that no one else
/// touches meanwhile; `rhs.0` must hold `k` rows of `ncols` floats, `rhs.1` apart; `w` holds
/// `cout · k`.
unsafe fn add_product(
    (cout, ncols, k): (usize, usize, usize),
    dst: *mut f32,
    plane: usize,
    w: &[f32],
    rhs: (*const f32, isize),
    parallelism: gemm::Parallelism,
) {
    gemm::gemm(
        cout,
        ncols,
        k,
        dst,
        1,
        plane as isize,
        true,
        w.as_ptr(),
        1,
        k as isize,
        rhs.0,
        1,
        rhs.1,
        1.0,
        1.0,
        false,
        false,
        false,
        parallelism,
    )
}

/// The output's address, shared by the threads that each write their own band's columns.
struct OutPtr(*mut f32);

// SAFETY: every band writes a disjoint set of the output's elements (its own columns of each
// output channel's row), and the bands are joined before the output is read.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    fn get(&self) -> *mut f32 {
        self.0
    }
}

/// Every rayon thread, for one `gemm` call.
pub(crate) fn parallelism() -> gemm::Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

impl CustomOp3 for Conv2dOp {
    fn name(&self) -> &'static str {
        "nanoimg-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, bias) = (
            f32_slice(s1, l1, "nanoimg-conv2d: input")?,
            f32_slice(s2, l2, "nanoimg-conv2d: weight")?,
            f32_slice(s3, l3, "nanoimg-conv2d: bias")?,
        );
        let (n, cin, h, wd) = l1.shape().dims4()?;
        let (cout, wcin, kh, kw) = l2.shape().dims4()?;
        if wcin != cin || bias.len() != cout {
            candle_core::bail!(
                "nanoimg-conv2d: input has {cin} channels, weight {wcin}, bias {}",
                bias.len()
            );
        }
        let (s, p) = (self.stride, self.padding);
        if h + 2 * p < kh || wd + 2 * p < kw || s == 0 {
            candle_core::bail!("nanoimg-conv2d: {h}x{wd} input is smaller than the {kh}x{kw} kernel");
        }
        let g = Geom {
            h,
            w: wd,
            kh,
            kw,
            stride: s,
            pad: p,
            oh: (h + 2 * p - kh) / s + 1,
            ow: (wd + 2 * p - kw) / s + 1,
        };
        let k = cin * kh * kw;
        let plane = g.oh * g.ow;
        let mut out = vec![0f32; n * cout * plane];
        let pointwise = kh == 1 && kw == 1 && s == 1 && p == 0;
        let band = if pointwise {
            g.oh
        } else {
            (self.band_bytes / 4 / (k * g.ow)).clamp(1, g.oh)
        };
        // Many bands: each thread unfolds and multiplies its own bands (one GEMM per band on one
        // thread, no hand-over between the two); few bands (large channel counts): every
        // thread works on each band's unfolding and GEMM.
        let bands: Vec<(usize, usize)> = (0..g.oh)
            .step_by(band)
            .map(|y0| (y0, band.min(g.oh - y0)))
            .collect();
        let threads = rayon::current_num_threads();
        let by_band = !pointwise && threads > 1 && bands.len() >= 4 * threads;
        let mut cols = if pointwise || by_band {
            Vec::new()
        } else {
            vec![0f32; k * band * g.ow]
        };
        for b in 0..n {
            let xin = &x[b * cin * h * wd..(b + 1) * cin * h * wd];
            let dst = &mut out[b * cout * plane..(b + 1) * cout * plane];
            for (co, d) in dst.chunks_exact_mut(plane).enumerate() {
                d.fill(bias[co]);
            }
            if by_band {
                let out = OutPtr(dst.as_mut_ptr());
                bands.par_iter().for_each_init(
                    || vec![0f32; k * band * g.ow],
                    |cols, &(y0, rows)| {
                        let ncols = rows * g.ow;
                        g.im2col(xin, y0, rows, &mut cols[..k * ncols], false);
                        let rhs = (cols.as_ptr(), ncols as isize);
                        // SAFETY: as below; this band alone writes columns y0·ow .. y0·ow + ncols
                        // of each output row, and `dst` outlives the parallel loop.
                        unsafe {
                            add_product(
                                (cout, ncols, k),
                                out.get().add(y0 * g.ow),
                                plane,
                                w,
                                rhs,
                                gemm::Parallelism::None,
                            )
                        };
                    },
                );
                continue;
            }
            let mut y0 = 0;
            while y0 < g.oh {
                let rows = band.min(g.oh - y0);
                let ncols = rows * g.ow;
                // rhs: pointwise convolutions read the input itself ([cin, h·w] row-major).
                let (rhs, rhs_rs) = if pointwise {
                    (xin.as_ptr(), (h * wd) as isize)
                } else {
                    g.im2col(xin, y0, rows, &mut cols[..k * ncols], true);
                    (cols.as_ptr(), ncols as isize)
                };
                // SAFETY: dst holds cout rows of `plane` floats; this band writes columns
                // y0·ow .. y0·ow + ncols of each, inside the row. lhs is the [cout, k] weight,
                // rhs a [k, ncols] matrix with row stride rhs_rs, all in bounds by construction.
                unsafe {
                    add_product(
                        (cout, ncols, k),
                        dst.as_mut_ptr().add(y0 * g.ow),
                        plane,
                        w,
                        (rhs, rhs_rs),
                        parallelism(),
                    )
                };
                y0 += rows;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((n, cout, g.oh, g.ow))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[allow(clippy::too_many_arguments)]
    fn check(
        n: usize,
        cin: usize,
        cout: usize,
        (h, w): (usize, usize),
        k: usize,
        stride: usize,
        padding: usize,
        band_bytes: usize,
    ) {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (n, cin, h, w), &dev).unwrap();
        let wt = Tensor::randn(0f32, 0.3, (cout, cin, k, k), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, cout, &dev).unwrap();
        let cfg = candle_nn::Conv2dConfig {
            stride,
            padding,
            ..Default::default()
        };
        let reference = candle_nn::Conv2d::new(wt.clone(), Some(b.clone()), cfg)
            .forward(&x)
            .unwrap();
        let op = Conv2dOp {
            stride,
            padding,
            band_bytes,
        };
        let ours = x.apply_op3_no_bwd(&wt, &b, &op).unwrap();
        assert_eq!(ours.dims(), reference.dims());
        let d: f32 = crate::models::max_abs_diff(&ours, &reference).unwrap();
        assert!(
            d < 1e-4,
            "n{n} {cin}->{cout} {h}x{w} k{k} s{stride} p{padding} band {band_bytes}: {d}"
        );
    }

    #[test]
    fn matches_candle_for_every_shape_the_models_use() {
        // 3×3 same-padding, several bands (tiny band size) and one band.
        check(2, 5, 7, (9, 11), 3, 1, 1, 64);
        check(1, 8, 16, (16, 16), 3, 1, 1, BAND_BYTES);
        // UNet downsampler (stride 2, pad 1) and VAE downsampler (stride 2, pad 0, odd size).
        check(1, 4, 4, (10, 12), 3, 2, 1, 100);
        check(1, 4, 4, (9, 9), 3, 2, 0, BAND_BYTES);
        // Many bands: each thread unfolds and multiplies bands of its own (stride 1 and 2).
        check(2, 3, 5, (40, 12), 3, 1, 1, 100);
        check(1, 3, 4, (40, 12), 3, 2, 1, 100);
        // 1×1 shortcut / quant convs.
        check(2, 6, 3, (5, 7), 1, 1, 0, BAND_BYTES);
        // A kernel as wide as the padded input.
        check(1, 2, 2, (1, 1), 3, 1, 1, BAND_BYTES);
    }

    /// The int8 layer against candle's f32 convolution on the shapes the UNet uses (3×3,
    /// stride 2, 1×1, batches, channel counts that leave padding bytes): within 2 % relative
    /// L2 error, the same tolerance as `int8`'s own tests; without a bias too.
    #[test]
    fn int8_layer_is_close_to_candle() {
        let dev = Device::Cpu;
        for (n, cin, cout, (h, w), k, stride, padding, bias) in [
            (2, 5, 7, (9, 11), 3, 1, 1, true),
            (1, 16, 40, (16, 16), 3, 1, 1, true),
            (1, 12, 12, (10, 12), 3, 2, 1, false),
            (2, 6, 50, (5, 7), 1, 1, 0, true),
            (1, 2, 2, (1, 1), 3, 1, 1, true),
        ] {
            let x = Tensor::randn(0f32, 1.0, (n, cin, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 0.3, (cout, cin, k, k), &dev).unwrap();
            let b = bias.then(|| Tensor::randn(0f32, 1.0, cout, &dev).unwrap());
            let cfg = candle_nn::Conv2dConfig {
                stride,
                padding,
                ..Default::default()
            };
            let reference = candle_nn::Conv2d::new(wt, b, cfg);
            let mut layer = Conv2d::new(reference.clone());
            layer.quantize_int8().unwrap();
            assert!(matches!(layer.weights, Weights::Int8(_)));
            let (want, got) = (reference.forward(&x).unwrap(), layer.forward(&x).unwrap());
            assert_eq!(got.dims(), want.dims());
            let rel = crate::models::relative_l2(&got, &want).unwrap();
            assert!(
                rel < 0.02,
                "n{n} {cin}->{cout} {h}x{w} k{k} s{stride}: relative error {rel}"
            );
        }
    }

    #[test]
    fn layer_falls_back_for_other_dtypes() {
        let dev = Device::Cpu;
        let wt = Tensor::randn(0f32, 0.3, (3, 2, 3, 3), &dev)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap();
        let b = Tensor::zeros(3, DType::F16, &dev).unwrap();
        let conv = Conv2d::new(candle_nn::Conv2d::new(
            wt,
            Some(b),
            candle_nn::Conv2dConfig {
                padding: 1,
                ..Default::default()
            },
        ));
        let x = Tensor::randn(0f32, 1.0, (1, 2, 4, 4), &dev)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap();
        assert_eq!(conv.forward(&x).unwrap().dims(), &[1, 3, 4, 4]);
    }
}
