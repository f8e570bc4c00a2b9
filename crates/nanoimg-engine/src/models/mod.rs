//! Model code we own, built on `candle-nn` layers. Struct and field names mirror the diffusers /
//! transformers checkpoint keys, so `vb.pp("down_blocks").pp(i)` reads like the file it loads.

pub mod clip;
pub mod conv;
pub mod kernels;
pub mod layers;
pub mod unet;
pub mod vae;
