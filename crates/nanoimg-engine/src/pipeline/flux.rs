//! Sampling a FLUX.1 model, as diffusers' FLUX pipelines do: the prompt through CLIP (pooled)
//! and T5 (hidden states); noise as 2×2-patch tokens; flow-matching Euler over the σ grid,
//! shifted for the picture's token count; the guidance scale as an embedding (dev, Kontext) and
//! no negative prompt. With an image: img2img from the image noised to the first σ
//! (`FluxImg2ImgPipeline`), a mask blends the kept part back each step (`FluxInpaintPipeline`);
//! a Kontext model instead reads the image — and a character's reference images — as extra
//! tokens in the sequence (`FluxKontextPipeline`), and starts from noise unless a mask asks to
//! keep part of the picture (`FluxKontextInpaintPipeline`).

use super::{image_to_tensor, mask_to_tensor, CancelToken, Progress, ProgressSink, SeededNoise};
use super::{Frame, GenerateRequest, GeneratedImage};
use crate::error::{EngineError, Result, TensorContext};
use crate::flux::FluxParts;
use crate::model::StableDiffusion;
use crate::models::flux::{pack_latents, position_ids, unpack_latents, FluxInputs, Rope};
use crate::registry::Asked;
use crate::schedulers::flow::FlowPlan;
use candle_core::{DType, Tensor};
use image::RgbImage;
use nanoimg_core::{ImageSize, InvalidParam};

/// What the steps of one FLUX request share ([`StableDiffusion::flux_sampling`]).
pub struct FluxSampling {
    text: FluxText,
    rope: Rope,
    /// The references' tokens, after the image's in the sequence.
    references: Option<Tensor>,
    guidance: Option<Tensor>,
    latent_hw: (usize, usize),
}

/// One prompt as a FLUX model reads it.
#[derive(Debug, Clone)]
pub struct FluxText {
    /// T5's last hidden state `[1, tokens, joint_attention_dim]`.
    pub t5: Tensor,
    /// CLIP's pooled output `[1, pooled_projection_dim]`.
    pub pooled: Tensor,
    /// Whether T5 cut the prompt (CLIP reads only its first 77 tokens in every FLUX pipeline).
    pub truncated: bool,
}

impl StableDiffusion {
    fn flux_parts(&self) -> Result<&FluxParts> {
        self.flux().ok_or_else(|| {
            InvalidParam::new("model", format!("{} is not a FLUX model", self.info.name)).into()
        })
    }

    /// Encodes a prompt for a FLUX model: CLIP's pooled output (`FluxPipeline`'s
    /// `_get_clip_prompt_embeds`) and T5's hidden states padded to the model's sequence length.
    pub fn encode_flux_text(&self, prompt: &str) -> Result<FluxText> {
        let flux = self.flux_parts()?;
        let clip = &self.encoders[0];
        let tokens = self.tokens(0, prompt);
        let ids = Tensor::new(tokens.ids.as_slice(), &self.device)?.unsqueeze(0)?;
        let pooled = clip
            .model
            .forward_with(&ids, &[tokens.eos_index], self.words.extra.first())
            .context(|| "CLIP text encoder".into())?
            .pooled;
        let t5_tokens = flux.t5.tokenizer.encode(prompt, flux.max_sequence_length)?;
        let t5_ids = Tensor::new(t5_tokens.ids.as_slice(), &self.device)?.unsqueeze(0)?;
        let t5 = flux
            .t5
            .model
            .forward(&t5_ids)
            .context(|| "T5 encoder".into())?
            .to_dtype(self.dtype)?;
        Ok(FluxText {
            t5,
            pooled,
            truncated: t5_tokens.truncated,
        })
    }

    /// The σ grid a FLUX model samples a `size` picture with in `steps` steps (shifted for its
    /// token count where the model's schedule says so).
    pub fn flux_plan(&self, steps: u32, size: ImageSize) -> Result<FlowPlan> {
        let flux = self.flux_parts()?;
        let cell = self.vae_scale() * 2;
        let tokens = (size.width as usize / cell) * (size.height as usize / cell);
        Ok(flux.flow.plan(steps as usize, tokens))
    }

    /// What every step of one request shares: the rotary positions of the text, image and
    /// reference tokens, the references (Kontext: image latents `[1, C, h', w']` in the model's
    /// latent scale) packed as tokens, and the guidance for models that embed it. Made once per
    /// request, not per step.
    pub fn flux_sampling(
        &self,
        text: &FluxText,
        latent_hw: (usize, usize),
        guidance: f64,
        references: &[Tensor],
    ) -> Result<FluxSampling> {
        let flux = self.flux_parts()?;
        let mut ids = position_ids(text.t5.dim(1)?, latent_hw);
        let mut packed = Vec::with_capacity(references.len());
        // Every reference at time index 1, placed after the previous one along the width (one
        // reference is diffusers' FluxKontextPipeline exactly).
        let mut column = 0usize;
        for r in references {
            let (_, _, rh, rw) = r.dims4()?;
            let (rows, cols) = (rh / 2, rw / 2);
            ids.extend((0..rows * cols).map(|i| [1.0, (i / cols) as f32, (column + i % cols) as f32]));
            column += cols;
            packed.push(pack_latents(r)?);
        }
        let config = flux.transformer.config();
        Ok(FluxSampling {
            text: text.clone(),
            rope: Rope::new(&ids, &config.axes_dims_rope, &self.device)?,
            references: (!packed.is_empty())
                .then(|| Tensor::cat(&packed, 1))
                .transpose()?,
            guidance: config
                .guidance_embeds
                .then(|| Tensor::full(guidance as f32, 1, &self.device))
                .transpose()?,
            latent_hw,
        })
    }

    /// The transformer's velocity for latents `[1, C, h, w]` (the size `run` was made for) at
    /// noise level `sigma`.
    pub fn flux_velocity(&self, run: &FluxSampling, latents: &Tensor, sigma: f64) -> Result<Tensor> {
        let flux = self.flux_parts()?;
        let (_, _, h, w) = latents.dims4()?;
        if (h, w) != run.latent_hw {
            return Err(candle_core::Error::Msg(format!(
                "latents of {h}×{w} for a run made for {:?}",
                run.latent_hw
            ))
            .into());
        }
        let image = pack_latents(latents)?;
        let image_tokens = image.dim(1)?;
        let packed = match &run.references {
            Some(r) => Tensor::cat(&[&image, r], 1)?,
            None => image,
        };
        let timestep = Tensor::full(sigma as f32, 1, &self.device)?;
        let out = flux
            .transformer
            .forward(&FluxInputs {
                latents: &packed,
                text: &run.text.t5,
                pooled: &run.text.pooled,
                timestep: &timestep,
                guidance: run.guidance.as_ref(),
                rope: &run.rope,
            })
            .context(|| "FLUX transformer".into())?;
        Ok(unpack_latents(&out.narrow(1, 0, image_tokens)?, (h, w))?)
    }

    /// The request checks only a FLUX model adds (sizes, steps, images and strength are checked
    /// for every family by `validate`).
    pub(super) fn validate_flux(&self, req: &GenerateRequest) -> std::result::Result<(), InvalidParam> {
        if req.hooks.is_some() {
            return Err(InvalidParam::new(
                "hooks",
                "UNet hooks do not apply to a FLUX model",
            ));
        }
        self.info.check_features(&Asked {
            scheduler: req.scheduler,
            negative_prompt: &req.negative_prompt,
            loras: false,
            refiner: req.refiner.is_some(),
            references: req.reference.is_some(),
        })
    }

    /// [`StableDiffusion::generate`] for a FLUX model (the request already validated).
    pub(super) fn generate_flux(
        &self,
        req: &GenerateRequest,
        progress: &dyn ProgressSink,
        cancel: &CancelToken,
    ) -> Result<Vec<GeneratedImage>> {
        let asked = req.size;
        let drawn = self.info.drawn_size(asked);
        let text = self.encode_flux_text(&req.prompt)?;
        let scale = self.vae_scale();
        let latent_hw = (drawn.height as usize / scale, drawn.width as usize / scale);
        let shape = [1, self.latent_channels(), latent_hw.0, latent_hw.1];

        let frame = Frame::new(req, asked, drawn);
        let init = &frame.init;
        let image_latents = init
            .as_ref()
            .map(|(image, _, _)| self.encode_flux_image(image, req))
            .transpose()?;
        let kontext = self.info.kontext;
        // A Kontext model reads the image it edits, and a character's pictures, in context.
        let mut references = Vec::new();
        if kontext {
            references.extend(image_latents.iter().cloned());
            if let Some(r) = req.reference.as_deref().filter(|r| r.settings.strength > 0.0) {
                for picture in &r.images {
                    let fitted = fit_reference(picture, drawn, scale * 2);
                    references.push(self.encode_flux_image(&fitted, req)?);
                }
            }
        }
        let mask = init
            .as_ref()
            .and_then(|(_, m, _)| m.as_ref())
            .map(|m| mask_to_tensor(m, latent_hw, &self.device, self.dtype))
            .transpose()?;
        // img2img (and inpainting) starts from the image noised to the first σ; Kontext edits
        // the whole picture from noise unless a mask keeps part of it.
        let from_image = init.is_some() && (!kontext || mask.is_some());
        let full = self.flux_plan(req.steps, drawn)?;
        let plan = match (init, from_image) {
            (Some((_, _, strength)), true) => full.from_strength(*strength).ok_or_else(|| {
                InvalidParam::new(
                    "strength",
                    format!(
                        "strength {strength} with {} steps runs no step; raise either",
                        req.steps
                    ),
                )
            })?,
            _ => full,
        };
        let total = plan.steps();
        let run = self.flux_sampling(&text, latent_hw, req.guidance, &references)?;
        let mut out = Vec::with_capacity(req.n as usize);
        for i in 0..req.n as usize {
            let seed = req.seed.wrapping_add(i as u64);
            let noise = SeededNoise::new(seed).sample(&shape, &self.device, self.dtype)?;
            let mut x = match (&image_latents, from_image) {
                (Some(lat), true) => plan.noised(lat, &noise)?,
                _ => noise.clone(),
            };
            for step in 0..total {
                if cancel.is_cancelled() {
                    return Err(EngineError::Cancelled);
                }
                let sigma = plan.sigmas[step];
                let v = self.flux_velocity(&run, &x, sigma)?;
                let preview = progress
                    .preview_at(i, step + 1, total)
                    .map(|method| self.preview(&(&x - (&v * sigma)?)?, method))
                    .transpose()?;
                x = plan.step(step, &x, &v)?;
                if let (Some(m), Some(lat)) = (&mask, &image_latents) {
                    // Outside the mask, the original at the next step's noise level.
                    let next = plan.sigmas[step + 1];
                    let known = ((&noise * next)? + (lat * (1.0 - next))?)?;
                    x = (x.broadcast_mul(m)? + known.broadcast_mul(&(1.0 - m)?)?)?;
                }
                progress.on_step(&Progress {
                    image: i,
                    images: req.n as usize,
                    step: step + 1,
                    steps: total,
                    preview: preview.as_ref(),
                });
            }
            let image = frame.finish(&self.decode_latents(&x, req.vae)?)?;
            out.push(GeneratedImage { image, seed });
        }
        Ok(out)
    }

    /// An image's latents in the model's scale (`FluxImg2ImgPipeline` and Kontext encode the
    /// distribution's mode: its mean).
    fn encode_flux_image(&self, image: &RgbImage, req: &GenerateRequest) -> Result<Tensor> {
        let x = image_to_tensor(image, &self.device, DType::F32)?;
        self.encode_pixels(&x, req.vae)
    }
}

/// A reference picture resized to about the pixels of `drawn`, in its own aspect, each side a
/// multiple of `multiple` (FluxKontextPipeline brings its image to a size near its area with
/// sides in multiples of 16).
fn fit_reference(picture: &RgbImage, drawn: ImageSize, multiple: usize) -> RgbImage {
    let (w, h) = picture.dimensions();
    let area = drawn.pixels() as f64;
    let ratio = (area / (f64::from(w) * f64::from(h))).sqrt();
    let m = multiple as f64;
    let side = |s: u32| (((f64::from(s) * ratio) / m).round().max(1.0) * m) as u32;
    let (tw, th) = (side(w), side(h));
    if (tw, th) == (w, h) {
        picture.clone()
    } else {
        image::imageops::resize(picture, tw, th, image::imageops::FilterType::Lanczos3)
    }
}
