//! Model code we own, built on `candle-nn` layers. Struct and field names mirror the diffusers /
//! transformers checkpoint keys, so `vb.pp("down_blocks").pp(i)` reads like the file it loads.

pub mod clip;
pub mod conv;
pub mod dinov2;
pub mod flux;
pub mod int8;
pub mod kernels;
pub mod layers;
pub mod linear;
pub mod sdpa;
pub mod t5;
pub mod taesd;
pub mod unet;
pub mod vae;

/// `‖a − b‖ / ‖b‖` (as f32): how far an approximation (int8 weights) moved a result.
pub fn relative_l2(a: &candle_core::Tensor, b: &candle_core::Tensor) -> candle_core::Result<f32> {
    use candle_core::DType;
    let (a, b) = (a.to_dtype(DType::F32)?, b.to_dtype(DType::F32)?);
    let diff = (&a - &b)?.sqr()?.sum_all()?.to_scalar::<f32>()?;
    Ok((diff / b.sqr()?.sum_all()?.to_scalar::<f32>()?).sqrt())
}

/// The largest elementwise difference between two tensors of the same shape (as f32): how
/// tests and parity checks compare a computation with its reference.
pub fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> candle_core::Result<f32> {
    use candle_core::DType;
    (a.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()
}
