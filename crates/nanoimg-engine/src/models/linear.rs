//! A linear layer for inputs of few rows: a text encoder's 77 tokens.
//!
//! `x·Wᵀ` with few rows is dominated by packing the weight for the matrix product; computing
//! `W·xᵀ` instead (the weight as the left operand, rows × tokens written contiguously) and
//! transposing the small result back, with the bias added on the way, takes about two thirds of
//! the time on CPU (`examples/linear_profile.rs`). Inputs with many rows, other devices and other
//! dtypes take candle's `Linear`, so results never depend on which path ran beyond rounding.

use super::conv::{f32_slice, parallelism};
use super::int8::{self, QWeight, Quantize};
use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use std::sync::Arc;

/// Rows up to which the transposed product is used (a CLIP text encoder has 77).
const FEW_ROWS: usize = 256;

/// A linear layer (`y = x·Wᵀ + b`, weight `[out, in]` as checkpoints store it); optionally on
/// int8 weights.
#[derive(Debug, Clone)]
pub struct Linear {
    weights: Weights,
}

#[derive(Debug, Clone)]
enum Weights {
    F32 {
        inner: candle_nn::Linear,
        /// The bias, or zeros: the fast path always adds one.
        bias: Tensor,
    },
    Int8(Arc<Int8Linear>),
}

impl Linear {
    /// From a weight `[out, in]` and an optional bias `[out]`.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let out = weight.dim(0)?;
        let zeros = Tensor::zeros(out, weight.dtype(), weight.device())?;
        Ok(Self {
            weights: Weights::F32 {
                bias: bias.clone().unwrap_or(zeros),
                inner: candle_nn::Linear::new(weight, bias),
            },
        })
    }
}

impl Quantize for Linear {
    /// f32 weights on the CPU become int8; others stay as they are.
    fn quantize_int8(&mut self) -> Result<()> {
        let Weights::F32 { inner, bias } = &self.weights else {
            return Ok(());
        };
        let w = inner.weight();
        if !w.device().is_cpu() || w.dtype() != DType::F32 {
            return Ok(());
        }
        let (n, k) = w.dims2()?;
        let q = QWeight::new(
            &w.flatten_all()?.to_vec1::<f32>()?,
            (n, k),
            Some(&bias.to_vec1::<f32>()?),
        );
        self.weights = Weights::Int8(Arc::new(Int8Linear(q)));
        Ok(())
    }
}

/// `candle_nn::linear`, as [`Linear`].
pub fn linear(cin: usize, cout: usize, vb: VarBuilder) -> Result<Linear> {
    let l = candle_nn::linear(cin, cout, vb)?;
    Linear::new(l.weight().clone(), l.bias().cloned())
}

/// `candle_nn::linear_no_bias`, as [`Linear`] (through it, so a synthetic model's random weights
/// are drawn exactly as before).
pub fn linear_no_bias(cin: usize, cout: usize, vb: VarBuilder) -> Result<Linear> {
    Linear::new(candle_nn::linear_no_bias(cin, cout, vb)?.weight().clone(), None)
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (inner, bias) = match &self.weights {
            Weights::F32 { inner, bias } => (inner, bias),
            Weights::Int8(op) => return x.contiguous()?.apply_op1_no_bwd(op.as_ref()),
        };
        let w = inner.weight();
        let cpu_f32 = x.device().is_cpu() && x.dtype() == DType::F32 && w.dtype() == DType::F32;
        let k = w.dim(1)?;
        let rows = x.elem_count() / k.max(1);
        if !cpu_f32 || rows > FEW_ROWS || x.dims().last() != Some(&k) {
            return inner.forward(x);
        }
        x.contiguous()?.apply_op3_no_bwd(w, bias, &FewRows)
    }
}

/// A linear layer on int8 weights (see [`int8`](super::int8)).
#[derive(Debug)]
struct Int8Linear(QWeight);

impl CustomOp1 for Int8Linear {
    fn name(&self) -> &'static str {
        "nanoimg-linear-int8"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "nanoimg-linear-int8: input")?;
        let (n, k) = (self.0.n(), self.0.k());
        if l.dims().last() != Some(&k) {
            candle_core::bail!("{}: input {:?} for a {n}×{k} weight", self.name(), l.dims());
        }
        let a = int8::PerRow { x, k };
        let at = int8::Out {
            row_stride: n,
            channel_stride: 1,
        };
        let y = int8::product_vec(&a, &self.0, x.len() / k.max(1) * n, at);
        let mut dims = l.dims().to_vec();
        *dims.last_mut().expect("checked: the last dimension is k") = n;
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }
}

struct FewRows;

impl CustomOp3 for FewRows {
    fn name(&self) -> &'static str {
        "nanoimg-linear-few-rows"
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
            f32_slice(s1, l1, "nanoimg-linear: input")?,
            f32_slice(s2, l2, "nanoimg-linear: weight")?,
            f32_slice(s3, l3, "nanoimg-linear: bias")?,
        );
        let (n, k) = l2.shape().dims2()?;
        let rows = x.len() / k;
        if bias.len() != n || rows * k != x.len() {
            candle_core::bail!(
                "{}: input {:?}, weight {n}×{k}, bias {}",
                self.name(),
                l1.dims(),
                bias.len()
            );
        }
        // yᵀ = W·xᵀ: n × rows, row-major.
        let mut yt = vec![0f32; n * rows];
        // SAFETY: the operands are valid for the extents and strides given: W is n × k
        // row-major, xᵀ is k × rows read from x (rows × k row-major), yᵀ is n × rows row-major
        // and not read (`read_dst` false).
        unsafe {
            gemm::gemm(
                n,
                rows,
                k,
                yt.as_mut_ptr(),
                1,
                rows as isize,
                false,
                w.as_ptr(),
                1,
                k as isize,
                x.as_ptr(),
                k as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                parallelism(),
            );
        }
        let mut y = vec![0f32; rows * n];
        for (r, row) in y.chunks_exact_mut(n).enumerate() {
            for ((v, t), b) in row.iter_mut().zip(yt[r..].iter().step_by(rows)).zip(bias) {
                *v = t + b;
            }
        }
        let mut dims = l1.dims().to_vec();
        *dims.last_mut().expect("checked: the last dimension is k") = n;
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Against candle's `Linear` on odd shapes, with and without a bias, 2-D and 3-D inputs, and
    /// past the row limit (candle's own path).
    #[test]
    fn matches_candle_linear() {
        let dev = Device::Cpu;
        for (lead, rows, k, n, bias) in [
            (vec![], 1, 5, 7, true),
            (vec![1], 77, 33, 65, true),
            (vec![2], 13, 64, 3, false),
            (vec![], 300, 17, 9, true),
        ] {
            let mut shape = lead.clone();
            shape.extend([rows, k]);
            let x = Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
            let b = bias.then(|| Tensor::randn(0f32, 1.0, n, &dev).unwrap());
            let ours = Linear::new(w.clone(), b.clone()).unwrap().forward(&x).unwrap();
            let theirs = candle_nn::Linear::new(w, b).forward(&x).unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            let d = super::super::max_abs_diff(&ours, &theirs).unwrap();
            assert!(d < 1e-4, "{lead:?} {rows}×{k}→{n}: {d}");
        }
    }

    /// On int8 weights, against candle's f32 `Linear`: within 2 % relative L2 error (the
    /// tolerance of `int8`'s own tests), 2-D and 3-D inputs, with and without a bias.
    #[test]
    fn int8_layer_is_close_to_candle() {
        let dev = Device::Cpu;
        for (shape, n, bias) in [
            (vec![1, 77, 33], 65, true),
            (vec![13, 64], 3, false),
            (vec![2, 300, 40], 50, true),
        ] {
            let k = *shape.last().unwrap();
            let x = Tensor::randn(0f32, 1.0, shape.clone(), &dev).unwrap();
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
            let b = bias.then(|| Tensor::randn(0f32, 1.0, n, &dev).unwrap());
            let mut ours = Linear::new(w.clone(), b.clone()).unwrap();
            ours.quantize_int8().unwrap();
            assert!(matches!(ours.weights, Weights::Int8(_)));
            let (got, want) = (
                ours.forward(&x).unwrap(),
                candle_nn::Linear::new(w, b).forward(&x).unwrap(),
            );
            assert_eq!(got.dims(), want.dims());
            let rel = super::super::relative_l2(&got, &want).unwrap();
            assert!(rel < 0.02, "{shape:?}→{n}: relative error {rel}");
            // A wrong width is an error, not a panic.
            assert!(ours
                .forward(&Tensor::zeros((2, k + 1), DType::F32, &dev).unwrap())
                .is_err());
        }
    }
}
