//! Training-free reference conditioning ("reference-only" attention and AdaIN), for keeping a
//! character the same across images.
//!
//! At every sampling step the reference latents are noised to that step's σ and run through the
//! UNet once (the *write* pass, with the reference's own prompt), recording each transformer
//! block's self-attention input and each block output's channel statistics. The real pass then
//! attends over its own tokens ⊕ the reference's and moves its block statistics toward the
//! reference's (AdaIN). Three knobs shape it:
//! - `strength` blends both effects into the output (0 = no reference, 1 = full);
//! - `style_fidelity` takes the reference away from the unconditional half of classifier-free
//!   guidance, so guidance pushes *toward* the reference;
//! - gates keep the widest fraction of attention layers and of block outputs.
//!
//! Banks depend only on the references, their prompt and seed, the size, the schedule and the
//! gates (and the weights), so they are computed once and cached in the [`BankCache`] the caller
//! passes with the reference: the second image of a character skips every write pass.

pub mod bank;
mod cache;

pub use cache::{Bank, BankCache, BankKey, CacheStats};

use crate::error::Result;
use crate::model::{Side, StableDiffusion};
use crate::models::unet::AddedConditioning;
use crate::pipeline::{image_to_tensor, SeededNoise};
use crate::schedulers::Sampler;
use crate::tiny_vae::VaeChoice;
use bank::{Gates, Reader, StepBank, Writer};
use candle_core::{DType, Tensor};
use image::RgbImage;
use nanoimg_core::{InvalidParam, Limits};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Most reference images one request may carry.
pub const MAX_REFERENCES: usize = 8;

/// Default bytes of banks a loaded model keeps.
pub const DEFAULT_CACHE_BYTES: usize = 1 << 30;

/// How several references are combined in self-attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Combine {
    /// Every reference's tokens side by side (attention cost grows with the count).
    #[default]
    Concat,
    /// The references' tokens averaged position by position (cost of one).
    Average,
}

/// How strongly, and where, a reference conditions a generation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReferenceSettings {
    /// 0 = no reference, 1 = full (Midjourney's `--cw` on a 0–1 scale).
    pub strength: f64,
    /// 0 = the reference in both guidance halves, 1 = only in the conditional half.
    pub style_fidelity: f64,
    /// Fraction of self-attention layers (widest first) that attend to the reference.
    pub attention: f64,
    /// Fraction of block outputs (widest first) moved to the reference's statistics.
    pub adain: f64,
    pub combine: Combine,
}

/// The defaults were measured (`nanoimg character eval`, docs/characters.md): on the bundled
/// model they raise identity the most for the least loss of what tells the prompts apart, of the
/// five settings compared. A real SD checkpoint has not been measured.
impl Default for ReferenceSettings {
    fn default() -> Self {
        Self {
            strength: 0.8,
            style_fidelity: 1.0,
            attention: 0.5,
            adain: 0.0,
            combine: Combine::Concat,
        }
    }
}

impl ReferenceSettings {
    /// Every knob must be in 0..=1.
    pub fn validate(&self) -> Result<(), InvalidParam> {
        for (param, v) in [
            ("character_strength", self.strength),
            ("style_fidelity", self.style_fidelity),
            ("reference_attention", self.attention),
            ("reference_adain", self.adain),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(InvalidParam::new(param, format!("{v} is outside 0..=1")));
            }
        }
        Ok(())
    }

    /// Whether these settings change anything.
    pub fn active(&self) -> bool {
        self.strength > 0.0 && (self.attention > 0.0 || self.adain > 0.0)
    }
}

/// Reference images for one request.
#[derive(Debug, Clone)]
pub struct Reference {
    /// The caller's name for this reference set (a character id, or several joined by `+`);
    /// banks are forgotten by it.
    pub key: String,
    /// 1–[`MAX_REFERENCES`] images; each is cropped to the request's aspect and resized.
    pub images: Vec<RgbImage>,
    /// The prompt of the write pass (the character's description), so banks do not depend on
    /// the request's prompt.
    pub prompt: String,
    /// Seed of the write pass's noise.
    pub seed: u64,
    pub settings: ReferenceSettings,
    /// Where banks computed with this model's weights are kept between requests: the caller
    /// owns one cache per set of weights (a LoRA-merged copy is another set) and passes it here.
    /// `None` records the banks for this request only.
    pub cache: Option<Arc<BankCache>>,
}

impl Reference {
    /// Checks the count, sizes, prompt and settings.
    pub fn validate(&self, limits: &Limits) -> Result<(), InvalidParam> {
        if self.images.is_empty() || self.images.len() > MAX_REFERENCES {
            return Err(InvalidParam::new(
                "references",
                format!(
                    "{} reference images; 1 to {MAX_REFERENCES} are accepted",
                    self.images.len()
                ),
            ));
        }
        for (i, img) in self.images.iter().enumerate() {
            let (w, h) = img.dimensions();
            if w == 0 || h == 0 || u64::from(w) * u64::from(h) > limits.max_pixels {
                return Err(InvalidParam::new(
                    "references",
                    format!("reference {i} is {w}x{h}: empty or larger than the pixel limit"),
                ));
            }
        }
        if self.prompt.len() > crate::pipeline::MAX_PROMPT_BYTES {
            return Err(InvalidParam::new(
                "references",
                "the reference prompt is too long",
            ));
        }
        self.settings.validate()
    }

    fn fingerprint(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for img in &self.images {
            img.dimensions().hash(&mut h);
            img.as_raw().hash(&mut h);
        }
        self.prompt.hash(&mut h);
        self.seed.hash(&mut h);
        h.finish()
    }
}

/// The image cropped (centred) to `w:h` and resized to `w×h`.
fn cover(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    let (iw, ih) = img.dimensions();
    // Largest centred crop with the target aspect.
    let (cw, ch) = if u64::from(iw) * u64::from(h) > u64::from(ih) * u64::from(w) {
        (((u64::from(ih) * u64::from(w)) / u64::from(h)).max(1) as u32, ih)
    } else {
        (iw, ((u64::from(iw) * u64::from(h)) / u64::from(w)).max(1) as u32)
    };
    let cropped = image::imageops::crop_imm(img, (iw - cw) / 2, (ih - ch) / 2, cw, ch).to_image();
    if (cw, ch) == (w, h) {
        cropped
    } else {
        image::imageops::resize(&cropped, w, h, image::imageops::FilterType::Lanczos3)
    }
}

/// One request's use of a reference: the cached bank, or the one being built step by step.
pub(crate) struct ReferenceRun<'a> {
    reference: &'a Reference,
    key: BankKey,
    cached: Option<Arc<Bank>>,
    /// Each step's bank as recorded, for the request's other images and for the cache; `None`
    /// where keeping it would have passed `budget` (it is recorded again when needed).
    built: Vec<Option<Arc<StepBank>>>,
    /// Bytes of `built` held, and the most it may hold: the cache's budget (the default one
    /// without a cache), so a run never holds more banks than the operator allows.
    kept: usize,
    budget: usize,
    gates: Option<Gates>,
    /// Reference latents `[R, c, h, w]` and the write pass's text conditioning, made when the
    /// first step needs them (never on a cache hit).
    inputs: Option<(Tensor, Tensor, Option<AddedConditioning>)>,
    /// Per-sample reference weights for the real pass.
    weights: Vec<f64>,
}

impl<'a> ReferenceRun<'a> {
    pub(crate) fn new(reference: &'a Reference, size: (u32, u32), sampler: &Sampler, guided: bool) -> Self {
        let s = &reference.settings;
        let plan = sampler.plan();
        let key = BankKey {
            key: reference.key.clone(),
            fingerprint: reference.fingerprint(),
            size,
            schedule: plan
                .timesteps
                .iter()
                .zip(&plan.sigmas)
                .map(|(t, s)| (t.to_bits(), s.to_bits()))
                .collect(),
            attention_gate: s.attention.to_bits(),
            adain_gate: s.adain.to_bits(),
            combine: s.combine,
        };
        let cached = reference.cache.as_ref().and_then(|c| c.get(&key));
        let weights = if guided {
            vec![s.strength * (1.0 - s.style_fidelity), s.strength]
        } else {
            vec![s.strength]
        };
        let budget = reference
            .cache
            .as_ref()
            .map_or(DEFAULT_CACHE_BYTES, |c| c.stats().budget);
        Self {
            reference,
            key,
            cached,
            built: Vec::new(),
            kept: 0,
            budget,
            gates: None,
            inputs: None,
            weights,
        }
    }

    /// The bank for `step`: cached, built earlier in this request, or recorded now.
    pub(crate) fn step(
        &mut self,
        model: &StableDiffusion,
        sampler: &Sampler,
        step: usize,
    ) -> Result<Arc<StepBank>> {
        if let Some(bank) = &self.cached {
            return Ok(bank.steps[step].clone());
        }
        if let Some(Some(bank)) = self.built.get(step) {
            return Ok(bank.clone());
        }
        let bank = Arc::new(self.write_pass(model, sampler, step)?);
        if self.built.len() <= step {
            self.built.resize(step + 1, None);
        }
        if self.kept + bank.bytes() <= self.budget {
            self.kept += bank.bytes();
            self.built[step] = Some(bank.clone());
        }
        Ok(bank)
    }

    fn write_pass(&mut self, model: &StableDiffusion, sampler: &Sampler, step: usize) -> Result<StepBank> {
        if self.inputs.is_none() {
            self.inputs = Some(self.prepare(model)?);
        }
        let (latents, context, added) = self.inputs.as_ref().expect("prepared");
        let r = latents.dim(0)?;
        // Fresh noise every step, as diffusers' reference pipeline draws it, but seeded so that
        // the bank is reproducible and cacheable; the same noise for every reference, so that a
        // reference records the same whatever its place among the others.
        let (_, c, h, w) = latents.dims4()?;
        let mut noise =
            SeededNoise::new(self.reference.seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let eps = noise.sample(&[1, c, h, w], model.device(), model.dtype())?;
        let x = latents.broadcast_add(&(eps * sampler.sigma(step))?)?;
        let mut input = (x * sampler.input_scale(step))?;
        if model.info().inpainting {
            // A native inpainting UNet: nothing masked, the reference itself as the kept image.
            let mask = Tensor::zeros((r, 1, h, w), model.dtype(), model.device())?;
            input = Tensor::cat(&[&input, &mask, latents], 1)?;
        }
        let t = Tensor::full(sampler.plan().timesteps[step] as f32, r, model.device())?;
        let s = &self.reference.settings;
        let writer = Writer::new(s.combine, self.gates.as_ref());
        model.unet_parts("reference conditioning")?.unet.forward(
            &input,
            &t,
            context,
            added.as_ref(),
            Some(&writer),
        )?;
        let chosen = match &self.gates {
            Some(_) => None,
            None => {
                let (a, b) = writer.sites();
                Some(Gates::choose(&a, &b, s.attention, s.adain))
            }
        };
        let bank = writer.into_bank(chosen.as_ref().or(self.gates.as_ref()).expect("gates"));
        if chosen.is_some() {
            self.gates = chosen;
        }
        Ok(bank)
    }

    fn prepare(&self, model: &StableDiffusion) -> Result<(Tensor, Tensor, Option<AddedConditioning>)> {
        let (w, h) = self.key.size;
        let mut latents = Vec::with_capacity(self.reference.images.len());
        for img in &self.reference.images {
            let x = image_to_tensor(&cover(img, w, h), model.device(), DType::F32)?;
            latents.push(model.encode_pixels(&x, VaeChoice::Full)?);
        }
        let latents = Tensor::cat(&latents, 0)?;
        let r = latents.dim(0)?;
        let text = model.encode_text(&self.reference.prompt, false)?;
        let context = text.context.repeat((r, 1, 1))?;
        // An LCM UNet's recording pass runs at the model's suggested guidance (banks are cached
        // per reference set and size, not per scale).
        let added = model.added_conditioning(
            &vec![(&text, Side::Positive); r],
            self.key.size,
            model.defaults().guidance,
        )?;
        Ok((latents, context, added))
    }

    /// The hooks for the real pass at this step.
    pub(crate) fn reader<'b>(&self, model: &StableDiffusion, bank: &'b StepBank) -> Result<Reader<'b>> {
        Ok(Reader::new(bank, &self.weights, model.dtype(), model.device())?)
    }

    /// Keeps the bank for later requests once every step has been recorded.
    pub(crate) fn finish(self, steps: usize) {
        let Some(cache) = &self.reference.cache else {
            return;
        };
        let whole = self.built.len() == steps && self.built.iter().all(Option::is_some);
        if self.cached.is_none() && whole {
            let bytes = self.kept;
            cache.insert(
                self.key,
                Arc::new(Bank {
                    steps: self.built.into_iter().flatten().collect(),
                    bytes,
                }),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cover_crops_to_the_aspect_then_resizes() {
        let img = RgbImage::from_fn(40, 20, |x, _| {
            image::Rgb([if (10..30).contains(&x) { 0 } else { 255 }, 0, 0])
        });
        let out = cover(&img, 8, 8);
        assert_eq!(out.dimensions(), (8, 8));
        // The centred 20×20 crop is all black: the red sides are gone.
        assert!(out.pixels().all(|p| p.0[0] < 40), "{:?}", out.get_pixel(0, 0));
        let tall = cover(&RgbImage::new(10, 50), 20, 10);
        assert_eq!(tall.dimensions(), (20, 10));
    }

    #[test]
    fn settings_outside_their_range_name_the_knob() {
        let bad = ReferenceSettings {
            style_fidelity: 1.5,
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().param, "style_fidelity");
        assert!(!ReferenceSettings {
            strength: 0.0,
            ..Default::default()
        }
        .active());
    }
}
