//! The NanoImg diffusion engine.
//!
//! Model code we own on `candle-nn` — CLIP text encoders, a `UNet2DConditionModel` with hook
//! points for reference conditioning, `AutoencoderKL` — loaded from diffusers-layout folders;
//! the schedulers; the txt2img / img2img / inpaint / outpaint pipelines; and the registry of
//! installed models. One loaded [`StableDiffusion`] serves many requests: everything that
//! belongs to a request (seed, hooks, progress, cancellation) is passed in. [`embed`] holds the
//! image embedders (DINOv2, CLIP) that measure pictures for `character eval`.
//!
//! Not here: HTTP, storage, moderation, editing plans. This crate reads model folders and
//! writes nothing but what [`synthetic`] is asked to write.

#[cfg(feature = "bundled")]
pub mod bundled;
pub mod checkpoint;
pub mod codec;
pub mod embed;
pub mod error;
pub(crate) mod flux;
pub mod folder;
pub mod ldm;
pub mod library;
pub mod lora;
pub mod model;
pub mod models;
pub mod pipeline;
pub mod reference;
pub mod registry;
pub mod schedulers;
pub mod source;
pub mod synthetic;
pub mod t5_tokenizer;
pub mod textual_inversion;
pub mod tiny_vae;
pub mod tokenizer;

pub use error::{ConfigError, EngineError, Result};
pub use model::{LoadOptions, Quantization, Side, StableDiffusion, TextConditioning};
pub use pipeline::{
    parse_dtype, CancelToken, GenerateRequest, GeneratedImage, InitImage, NoProgress, PreviewMethod,
    Progress, ProgressSink, Refiner,
};
pub use registry::{Asked, Family, ModelDefaults, ModelInfo, Registry};
pub use tiny_vae::VaeChoice;

/// Picks the compute device: the first CUDA or Metal GPU when built with that feature and one is
/// present, else the CPU.
pub fn default_device() -> candle_core::Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = candle_core::Device::new_cuda(0) {
        return d;
    }
    #[cfg(feature = "metal")]
    if let Ok(d) = candle_core::Device::new_metal(0) {
        return d;
    }
    candle_core::Device::Cpu
}
