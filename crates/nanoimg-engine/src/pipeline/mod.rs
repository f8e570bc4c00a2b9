//! Pipelines: txt2img, img2img (strength), inpainting (latent blending for any model, native
//! 9-channel UNets), outpainting (pad + inpaint); classifier-free guidance with a negative
//! prompt; `n` images with per-image seeds; progress and cancellation.

mod convert;
mod flux;
mod progress;
mod refiner;

pub use convert::{image_to_tensor, latent_preview, mask_to_tensor, tensor_to_image, SeededNoise};
pub use flux::{FluxSampling, FluxText};
pub use progress::{evenly_spaced, CancelToken, NoProgress, PreviewMethod, Progress, ProgressSink};
pub use refiner::{Refiner, DEFAULT_SWITCH_AT};

use crate::error::{EngineError, Result};
use crate::model::{Denoiser, Side, StableDiffusion, TextConditioning};
use crate::models::unet::hooks::UNetHooks;
use crate::models::unet::AddedConditioning;
use crate::reference::{Reference, ReferenceRun};
use crate::schedulers::{Sampler, SchedulerName};
use crate::tiny_vae::VaeChoice;
use candle_core::{DType, Tensor};
use image::{GrayImage, RgbImage};
use nanoimg_core::{ImageSize, InvalidParam, Limits};
use std::sync::Arc;

/// Longest prompt or negative prompt accepted, in bytes (CLIP reads 77 tokens; this only stops
/// abuse).
pub const MAX_PROMPT_BYTES: usize = 4096;

/// A starting image for img2img and inpainting.
#[derive(Debug, Clone)]
pub struct InitImage {
    /// The image; resized to the request's size if it differs.
    pub image: RgbImage,
    /// How much to change it: 1.0 ignores its content under the mask, small values keep it.
    pub strength: f64,
    /// White where the image should be repainted; `None` repaints everywhere (img2img).
    pub mask: Option<GrayImage>,
}

/// One generation request, everything the engine needs, validated by [`StableDiffusion::validate`].
#[derive(Clone)]
pub struct GenerateRequest {
    pub prompt: String,
    pub negative_prompt: String,
    pub size: ImageSize,
    pub steps: u32,
    /// Classifier-free guidance scale; ≤ 1 runs the conditional branch only.
    pub guidance: f64,
    pub scheduler: SchedulerName,
    /// Image `i` uses seed `seed + i`, so any image can be reproduced alone.
    pub seed: u64,
    pub n: u32,
    pub init: Option<InitImage>,
    /// Reference images that condition every step (a character), see [`crate::reference`].
    pub reference: Option<Arc<Reference>>,
    /// Per-request UNet hooks of the caller's own (cannot be combined with `reference`).
    pub hooks: Option<Arc<dyn UNetHooks>>,
    /// A second model that draws the last steps (SDXL's refiner). References and hooks
    /// condition the first model's steps only.
    pub refiner: Option<Refiner>,
    /// The autoencoder that encodes the init image and decodes the result.
    pub vae: VaeChoice,
}

impl std::fmt::Debug for GenerateRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerateRequest")
            .field("prompt", &self.prompt)
            .field("negative_prompt", &self.negative_prompt)
            .field("size", &self.size)
            .field("steps", &self.steps)
            .field("guidance", &self.guidance)
            .field("scheduler", &self.scheduler)
            .field("seed", &self.seed)
            .field("n", &self.n)
            .field(
                "init",
                &self
                    .init
                    .as_ref()
                    .map(|i| (i.image.dimensions(), i.strength, i.mask.is_some())),
            )
            .field(
                "reference",
                &self
                    .reference
                    .as_ref()
                    .map(|r| (&r.key, r.images.len(), r.settings)),
            )
            .field("hooks", &self.hooks.is_some())
            .field("vae", &self.vae)
            .field(
                "refiner",
                &self.refiner.as_ref().map(|r| (&r.model.info().name, r.switch_at)),
            )
            .finish()
    }
}

impl GenerateRequest {
    /// A txt2img request with the model's defaults.
    pub fn new(model: &StableDiffusion, prompt: impl Into<String>) -> Self {
        let d = model.defaults();
        Self {
            prompt: prompt.into(),
            negative_prompt: String::new(),
            size: d.size,
            steps: d.steps,
            guidance: d.guidance,
            scheduler: d.scheduler,
            seed: 0,
            n: 1,
            init: None,
            reference: None,
            hooks: None,
            refiner: None,
            vae: VaeChoice::Full,
        }
    }
}

/// One generated image and the seed that reproduces it.
#[derive(Debug, Clone)]
pub struct GeneratedImage {
    pub image: RgbImage,
    pub seed: u64,
}

/// Conditioning for one run: the context batch (negative first when guided) and SDXL extras.
struct Conditioning {
    context: Tensor,
    added: Option<AddedConditioning>,
    guided: bool,
    guidance: f64,
}

/// What inpainting needs each step.
struct InpaintState {
    /// Latent-sized mask, 1 = repaint.
    mask: Tensor,
    /// `1 − mask`: where the original is kept.
    keep: Tensor,
    /// The original image's latents.
    image_latents: Tensor,
    /// For native 9-channel UNets: mask and masked-image latents concatenated to the input.
    native_extra: Option<Tensor>,
}

impl StableDiffusion {
    /// Checks a request against `limits` and this model, naming the parameter at fault.
    pub fn validate(&self, req: &GenerateRequest, limits: &Limits) -> Result<(), InvalidParam> {
        limits.check_size(req.size)?;
        // (FLUX draws the multiple of 16 below and resamples: `ModelInfo::drawn_size`.)
        let multiple = self.vae_scale() as u32;
        if !req.size.width.is_multiple_of(multiple) || !req.size.height.is_multiple_of(multiple) {
            return Err(InvalidParam::new(
                "size",
                format!("width and height must be multiples of {multiple}"),
            ));
        }
        limits.check_steps(req.steps)?;
        if self.flux().is_some() {
            self.validate_flux(req)?;
        }
        let original = match &self.denoiser {
            Denoiser::Unet(u) => u.schedule.original_inference_steps,
            Denoiser::Flux(_) => usize::MAX,
        };
        if matches!(req.scheduler, SchedulerName::Lcm | SchedulerName::Tcd) && req.steps as usize > original {
            return Err(InvalidParam::new(
                "steps",
                format!(
                    "the {} sampler picks its steps from the model's {original}-step distillation schedule: \
                     at most {original}",
                    req.scheduler
                ),
            ));
        }
        limits.check_images(req.n)?;
        limits.check_guidance(req.guidance)?;
        for (param, text) in [("prompt", &req.prompt), ("negative_prompt", &req.negative_prompt)] {
            if text.len() > MAX_PROMPT_BYTES {
                return Err(InvalidParam::new(
                    param,
                    format!("{} bytes; the limit is {MAX_PROMPT_BYTES}", text.len()),
                ));
            }
        }
        if let Some(init) = &req.init {
            limits.check_strength(init.strength)?;
            let (w, h) = init.image.dimensions();
            if w == 0 || h == 0 || u64::from(w) * u64::from(h) > limits.max_pixels {
                return Err(InvalidParam::new(
                    "image",
                    format!("{w}x{h} is empty or larger than the pixel limit"),
                ));
            }
            if let Some(mask) = &init.mask {
                if mask.dimensions() != (w, h) {
                    let (mw, mh) = mask.dimensions();
                    return Err(InvalidParam::new(
                        "mask",
                        format!("mask is {mw}x{mh} but the image is {w}x{h}"),
                    ));
                }
            }
            // (FLUX rounds the other way: `FlowPlan::from_strength` keeps at least one step.)
            let keep = steps_kept(req.steps, init.strength);
            if keep == 0 && self.flux().is_none() {
                return Err(InvalidParam::new(
                    "strength",
                    format!(
                        "strength {} with {} steps runs no step; raise either",
                        init.strength, req.steps
                    ),
                ));
            }
        } else if self.info().inpainting {
            return Err(InvalidParam::new(
                "image",
                "this is an inpainting model: it needs an image and a mask",
            ));
        }
        if let Some(r) = &req.refiner {
            r.validate(self, req.scheduler, req.steps)?;
        }
        if req.vae == VaeChoice::Tiny && self.tiny_vae.is_none() {
            return Err(InvalidParam::new(
                "vae",
                format!(
                    "{} has no tiny autoencoder: `nanoimg models pull {}` fetches the one for its latent space",
                    self.info.name,
                    crate::tiny_vae::hub_repo(self.info.family)
                ),
            ));
        }
        if let Some(r) = &req.reference {
            r.validate(limits)?;
            if req.hooks.is_some() {
                return Err(InvalidParam::new(
                    "references",
                    "reference conditioning cannot be combined with custom UNet hooks",
                ));
            }
        }
        Ok(())
    }

    /// The prompts' conditioning for a picture drawn at `drawn` (SDXL's size conditioning).
    fn conditioning(&self, req: &GenerateRequest, drawn: ImageSize) -> Result<Conditioning> {
        // An LCM-distilled UNet takes the scale as an embedding: one pass, no negative prompt
        // (as in diffusers).
        let unet = &self.unet_parts("this pipeline")?.unet;
        let guided = req.guidance > 1.0 && !unet.config().embeds_guidance();
        let cond = self.encode_text(&req.prompt, false)?;
        let uncond = guided
            .then(|| self.encode_text(&req.negative_prompt, true))
            .transpose()?;
        let parts: Vec<(&TextConditioning, Side)> = uncond
            .iter()
            .map(|c| (c, Side::Negative))
            .chain(std::iter::once((&cond, Side::Positive)))
            .collect();
        let context = Tensor::cat(&parts.iter().map(|(c, _)| &c.context).collect::<Vec<_>>(), 0)?;
        let added = self.added_conditioning(&parts, (drawn.width, drawn.height), req.guidance)?;
        Ok(Conditioning {
            context,
            added,
            guided,
            guidance: req.guidance,
        })
    }

    fn encode_image(&self, img: &RgbImage, vae: VaeChoice) -> Result<Tensor> {
        let x = image_to_tensor(img, &self.device, DType::F32)?;
        self.encode_pixels(&x, vae)
    }

    fn inpaint_state(
        &self,
        init: &RgbImage,
        image_latents: &Tensor,
        mask: Option<&GrayImage>,
        latent_hw: (usize, usize),
        vae: VaeChoice,
    ) -> Result<Option<InpaintState>> {
        let native = self.info().inpainting;
        let full;
        let mask = match (mask, native) {
            (Some(m), _) => m,
            // A native inpainting UNet always needs a mask: none means repaint everything.
            (None, true) => {
                full = GrayImage::from_pixel(init.width(), init.height(), image::Luma([255]));
                &full
            }
            (None, false) => return Ok(None),
        };
        let mask_lat = mask_to_tensor(mask, latent_hw, &self.device, self.dtype)?;
        let native_extra = if native {
            // diffusers: masked_image = image * (mask < 0.5), then encoded.
            let keep = GrayImage::from_fn(mask.width(), mask.height(), |x, y| {
                image::Luma([if mask.get_pixel(x, y).0[0] < 128 { 255 } else { 0 }])
            });
            let masked = RgbImage::from_fn(init.width(), init.height(), |x, y| {
                if keep.get_pixel(x, y).0[0] == 255 {
                    *init.get_pixel(x, y)
                } else {
                    image::Rgb([128, 128, 128])
                }
            });
            let masked_lat = self.encode_image(&masked, vae)?;
            let binary = mask_lat.ge(0.5)?.to_dtype(self.dtype)?;
            Some(Tensor::cat(&[&binary, &masked_lat], 1)?)
        } else {
            None
        };
        Ok(Some(InpaintState {
            keep: (1.0 - &mask_lat)?,
            mask: mask_lat,
            image_latents: image_latents.clone(),
            native_extra,
        }))
    }

    /// Runs a request to completion, returning `n` images. Validates first; stops with
    /// [`EngineError::Cancelled`] at the next step once `cancel` is set.
    pub fn generate(
        &self,
        req: &GenerateRequest,
        limits: &Limits,
        progress: &dyn ProgressSink,
        cancel: &CancelToken,
    ) -> Result<Vec<GeneratedImage>> {
        self.validate(req, limits)?;
        let schedule = match &self.denoiser {
            Denoiser::Unet(u) => &u.schedule,
            Denoiser::Flux(_) => return self.generate_flux(req, progress, cancel),
        };
        // A model with a largest size draws a larger request within it; the images are
        // resampled to the size asked.
        let asked = req.size;
        let drawn = self.info.drawn_size(asked);
        let cond = self.conditioning(req, drawn)?;
        let (w, h) = (drawn.width, drawn.height);
        let scale = self.vae_scale();
        let latent_hw = (h as usize / scale, w as usize / scale);
        let latent_c = self.latent_channels();
        let shape = [1, latent_c, latent_hw.0, latent_hw.1];

        // The init image, at the size drawn, and (to keep its unmasked pixels) at the size asked.
        let frame = Frame::new(req, asked, drawn);
        let init = &frame.init;
        let image_latents = init
            .as_ref()
            .map(|(image, _, _)| self.encode_image(image, req.vae))
            .transpose()?;
        let inpaint = match (init, &image_latents) {
            (Some((image, mask, _)), Some(lat)) => {
                self.inpaint_state(image, lat, mask.as_ref(), latent_hw, req.vae)?
            }
            _ => None,
        };

        let full_plan = schedule.plan(req.scheduler, req.steps as usize);
        let plan = match init {
            Some((_, _, strength)) => full_plan.tail(steps_kept(req.steps, *strength)),
            None => full_plan,
        };
        let total = plan.timesteps.len();
        // The refiner's own conditioning (its encoders, its time ids), and its first step.
        let refining = req
            .refiner
            .as_ref()
            .map(|r| -> Result<_> {
                let first = r.first_step(&plan.timesteps, schedule.alphas_cumprod.len());
                Ok((&*r.model, r.model.conditioning(req, drawn)?, first))
            })
            .transpose()?;
        let base_steps = refining.as_ref().map_or(total, |(_, _, first)| *first);
        let mut reference = req.reference.as_deref().filter(|r| r.settings.active()).map(|r| {
            let sampler = Sampler::new(req.scheduler, plan.clone(), schedule.prediction);
            ReferenceRun::new(r, (w, h), &sampler, cond.guided)
        });
        let mut out = Vec::with_capacity(req.n as usize);
        for i in 0..req.n as usize {
            let seed = req.seed.wrapping_add(i as u64);
            let mut noise_source = SeededNoise::new(seed);
            let noise = noise_source.sample(&shape, &self.device, self.dtype)?;
            let mut sampler = Sampler::new(req.scheduler, plan.clone(), schedule.prediction);
            let mut x = match &image_latents {
                // Full strength starts from pure noise, as diffusers does.
                Some(lat) if total < req.steps as usize => (lat + (&noise * sampler.sigma(0))?)?,
                _ => (&noise * plan.initial_noise_scale())?,
            };
            for step in 0..total {
                if cancel.is_cancelled() {
                    return Err(EngineError::Cancelled);
                }
                let refined = step >= base_steps;
                let bank = reference
                    .as_mut()
                    .filter(|_| !refined)
                    .map(|r| r.step(self, &sampler, step))
                    .transpose()?;
                let reader = match (&reference, &bank) {
                    (Some(r), Some(b)) => Some(r.reader(self, b)?),
                    _ => None,
                };
                let hooks = match &reader {
                    Some(r) => Some(r as &dyn UNetHooks),
                    None => req.hooks.as_deref(),
                };
                let model_out = match &refining {
                    // A native inpainting UNet's extra channels are the base's alone.
                    Some((model, cond, _)) if refined => {
                        model.predict(&sampler, step, &x, cond, None, None)?
                    }
                    _ => self.predict(&sampler, step, &x, &cond, inpaint.as_ref(), hooks)?,
                };
                let denoised = sampler.denoised(step, &x, &model_out)?;
                let step_noise = sampler
                    .needs_noise()
                    .then(|| noise_source.sample(&shape, &self.device, self.dtype))
                    .transpose()?;
                x = sampler.step(step, &x, &denoised, step_noise.as_ref())?;
                if let Some(state) = inpaint.as_ref().filter(|s| s.native_extra.is_none() || refined) {
                    // Latent blending: outside the mask, put back the original at this noise level.
                    let known = (&state.image_latents + (&noise * plan.sigmas[step + 1])?)?;
                    x = (x.broadcast_mul(&state.mask)? + known.broadcast_mul(&state.keep)?)?;
                }
                let preview = progress
                    .preview_at(i, step + 1, total)
                    .map(|method| {
                        // The model drawing this step previews it, with its own tiny
                        // autoencoder or, for a refiner without one, the base's.
                        let model = match &refining {
                            Some((model, _, _)) if refined && model.tiny_vae.is_some() => *model,
                            _ => self,
                        };
                        model.preview(&denoised, method)
                    })
                    .transpose()?;
                progress.on_step(&Progress {
                    image: i,
                    images: req.n as usize,
                    step: step + 1,
                    steps: total,
                    preview: preview.as_ref(),
                });
            }
            // A plan that ends above σ = 0 (DDIM without `set_alpha_to_one`, TCD) ends on a noisy
            // sample: diffusers decodes it in the variance-preserving scale.
            let last = plan.sigmas[total];
            if last > 0.0 {
                x = (x / (last * last + 1.0).sqrt())?;
            }
            // The model that drew the last step decodes, as diffusers' refiner pipeline does
            // (the base's tiny autoencoder serves a refiner without one: the same latents).
            let decoder = match &refining {
                Some((model, _, first))
                    if *first < total && (req.vae == VaeChoice::Full || model.tiny_vae.is_some()) =>
                {
                    *model
                }
                _ => self,
            };
            let image = frame.finish(&decoder.decode_latents(&x, req.vae)?)?;
            out.push(GeneratedImage { image, seed });
        }
        if let Some(r) = reference {
            // A refined run builds the bank for the base's steps only: it is not kept.
            r.finish(total);
        }
        Ok(out)
    }

    /// A picture of the denoised estimate `x0` (latents), made by `method`.
    pub(crate) fn preview(&self, x0: &Tensor, method: PreviewMethod) -> Result<RgbImage> {
        match method {
            PreviewMethod::Tiny if self.tiny_vae.is_some() => {
                Ok(tensor_to_image(&self.decode_latents(x0, VaeChoice::Tiny)?)?)
            }
            _ => Ok(latent_preview(x0)?),
        }
    }

    /// One UNet evaluation with guidance; returns the combined prediction for `x`.
    fn predict(
        &self,
        sampler: &Sampler,
        step: usize,
        x: &Tensor,
        cond: &Conditioning,
        inpaint: Option<&InpaintState>,
        hooks: Option<&dyn UNetHooks>,
    ) -> Result<Tensor> {
        let mut input = (x * sampler.input_scale(step))?;
        if let Some(extra) = inpaint.and_then(|s| s.native_extra.as_ref()) {
            input = Tensor::cat(&[&input, extra], 1)?;
        }
        let batch = if cond.guided { 2 } else { 1 };
        if batch == 2 {
            input = Tensor::cat(&[&input, &input], 0)?;
        }
        let t = Tensor::full(sampler.plan().timesteps[step] as f32, batch, &self.device)?;
        let out = self.unet_parts("this pipeline")?.unet.forward(
            &input,
            &t,
            &cond.context,
            cond.added.as_ref(),
            hooks,
        )?;
        if cond.guided {
            let (uncond, text) = (out.get(0)?.unsqueeze(0)?, out.get(1)?.unsqueeze(0)?);
            Ok((&uncond + ((text - &uncond)? * cond.guidance)?)?)
        } else {
            Ok(out)
        }
    }
}

/// What one request's pictures start from and end as: the init image, its mask and strength at
/// the size drawn, and (when the size drawn is not the size asked and a mask keeps part of the
/// picture) the image and mask at the size asked.
struct Frame {
    asked: ImageSize,
    drawn: ImageSize,
    init: Option<(RgbImage, Option<GrayImage>, f64)>,
    kept: Option<(RgbImage, Option<GrayImage>)>,
}

impl Frame {
    fn new(req: &GenerateRequest, asked: ImageSize, drawn: ImageSize) -> Self {
        Self {
            asked,
            drawn,
            init: req.init.as_ref().map(|i| {
                let (image, mask) = init_at(i, drawn);
                (image, mask, i.strength)
            }),
            kept: match &req.init {
                Some(i) if i.mask.is_some() && drawn != asked => Some(init_at(i, asked)),
                _ => None,
            },
        }
    }

    /// The decoded picture as asked: resampled from the size drawn, and the original's pixels
    /// outside the mask put back exactly.
    fn finish(&self, decoded: &Tensor) -> Result<RgbImage> {
        let (asked, drawn) = (self.asked, self.drawn);
        let mut image = tensor_to_image(decoded)?;
        if drawn != asked {
            image = image::imageops::resize(
                &image,
                asked.width,
                asked.height,
                image::imageops::FilterType::Lanczos3,
            );
        }
        match (&self.kept, &self.init) {
            (Some((orig, Some(mask))), _) | (None, Some((orig, Some(mask), _))) => {
                paste_unmasked(&mut image, orig, mask)
            }
            _ => {}
        }
        Ok(image)
    }
}

/// An init image and its mask at `size`.
fn init_at(i: &InitImage, size: ImageSize) -> (RgbImage, Option<GrayImage>) {
    let (w, h) = (size.width, size.height);
    let image = if i.image.dimensions() == (w, h) {
        i.image.clone()
    } else {
        image::imageops::resize(&i.image, w, h, image::imageops::FilterType::Lanczos3)
    };
    let mask = i.mask.as_ref().map(|m| {
        if m.dimensions() == (w, h) {
            m.clone()
        } else {
            image::imageops::resize(m, w, h, image::imageops::FilterType::Triangle)
        }
    });
    (image, mask)
}

/// Number of steps img2img runs for a strength (diffusers: ⌊steps × strength⌋).
fn steps_kept(steps: u32, strength: f64) -> usize {
    ((steps as f64 * strength).floor() as usize).min(steps as usize)
}

/// Keeps the original pixels outside the mask exactly (soft masks blend).
fn paste_unmasked(out: &mut RgbImage, orig: &RgbImage, mask: &GrayImage) {
    for ((o, src), m) in out.pixels_mut().zip(orig.pixels()).zip(mask.pixels()) {
        let a = f32::from(m.0[0]) / 255.0;
        for c in 0..3 {
            o.0[c] = (a * f32::from(o.0[c]) + (1.0 - a) * f32::from(src.0[c])).round() as u8;
        }
    }
}

/// The dtype names users type (`f32`, `f16`, `bf16`).
pub fn parse_dtype(s: &str) -> Result<DType, InvalidParam> {
    match s.to_ascii_lowercase().as_str() {
        "f32" | "fp32" | "float32" => Ok(DType::F32),
        "f16" | "fp16" | "float16" | "half" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        other => Err(InvalidParam::new(
            "dtype",
            format!("unknown dtype {other:?}; use f32, f16 or bf16"),
        )),
    }
}
