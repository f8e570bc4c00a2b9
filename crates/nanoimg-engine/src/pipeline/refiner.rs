//! Two-stage runs: a second model draws the last steps of the schedule — SDXL's refiner after
//! its base, as diffusers' `denoising_end`/`denoising_start` and A1111's "Refiner" do it.
//!
//! The run is one sampling loop: the same sampler, noise and latents carry on across the switch,
//! only the UNet and its conditioning change, so the refiner continues exactly where the base
//! stopped (no decode and re-encode, no fresh noise).

use crate::model::{Denoiser, StableDiffusion};
use crate::schedulers::SchedulerName;
use nanoimg_core::InvalidParam;
use std::sync::Arc;

/// The model that finishes a run, and where it takes over.
#[derive(Debug, Clone)]
pub struct Refiner {
    pub model: Arc<StableDiffusion>,
    /// The fraction of the noise schedule the first model draws, 0–1 (diffusers'
    /// `denoising_end`, A1111's `refiner_switch_at`): the refiner runs every step whose
    /// timestep is below `(1 − switch_at)` × the training steps. 1 never switches; 0 hands it
    /// every step.
    pub switch_at: f64,
}

/// A1111's and the SDXL report's usual switch: the base draws the first 80 %.
pub const DEFAULT_SWITCH_AT: f64 = 0.8;

impl Refiner {
    /// Checks that the refiner can continue `base`'s latents: what
    /// [`ModelInfo::can_refine_with`](crate::ModelInfo::can_refine_with) checks, then the same
    /// latent space exactly (channels, VAE scale, scaling and shift) and the same noise schedule
    /// at these settings.
    pub(crate) fn validate(
        &self,
        base: &StableDiffusion,
        scheduler: SchedulerName,
        steps: u32,
    ) -> Result<(), InvalidParam> {
        let bad = |m: String| Err(InvalidParam::new("refiner", m));
        if !(0.0..=1.0).contains(&self.switch_at) {
            return Err(InvalidParam::new(
                "refiner_switch_at",
                format!("{} is outside 0–1", self.switch_at),
            ));
        }
        let (r, name) = (&*self.model, &self.model.info().name);
        base.info().can_refine_with(r.info()).or_else(bad)?;
        let same_shape = (base.latent_channels(), base.vae_scale()) == (r.latent_channels(), r.vae_scale());
        let same_scaling = match (base.vae(), r.vae()) {
            (Some(bv), Some(rv)) => {
                let (bv, rv) = (bv.config(), rv.config());
                (bv.scaling_factor - rv.scaling_factor).abs() <= 1e-6 && bv.shift_factor == rv.shift_factor
            }
            _ => true,
        };
        if !same_shape || !same_scaling {
            return bad(format!(
                "{name} ({}) draws in another latent space than {} ({})",
                r.info().family,
                base.info().name,
                base.info().family
            ));
        }
        let (Denoiser::Unet(bu), Denoiser::Unet(ru)) = (&base.denoiser, &r.denoiser) else {
            return bad("FLUX models draw every step themselves: no refiner".into());
        };
        let (a, b) = (
            bu.schedule.plan(scheduler, steps as usize),
            ru.schedule.plan(scheduler, steps as usize),
        );
        let close = |x: &[f64], y: &[f64]| {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|(p, q)| (p - q).abs() <= 1e-4 * p.abs().max(1.0))
        };
        if !close(&a.timesteps, &b.timesteps) || !close(&a.sigmas, &b.sigmas) {
            return bad(format!(
                "{name}'s noise schedule differs from {}'s at these settings",
                base.info().name
            ));
        }
        Ok(())
    }

    /// The first step (of a plan walking `timesteps`) the refiner draws, for a schedule
    /// trained over `train_steps`: the first whose timestep is below the cutoff, as diffusers
    /// splits `denoising_end`/`denoising_start`.
    pub(crate) fn first_step(&self, timesteps: &[f64], train_steps: usize) -> usize {
        first_step(self.switch_at, timesteps, train_steps)
    }
}

fn first_step(switch_at: f64, timesteps: &[f64], train_steps: usize) -> usize {
    let n = train_steps as f64;
    let cutoff = (n - switch_at * n).round();
    timesteps
        .iter()
        .position(|&t| t < cutoff)
        .unwrap_or(timesteps.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// diffusers' split of ten "leading" steps (901, 801, …, 1) at `denoising_end=0.8`: the
    /// base runs the timesteps ≥ 200 (eight), the refiner the rest.
    #[test]
    fn the_switch_falls_where_diffusers_splits_the_schedule() {
        let timesteps: Vec<f64> = (0..10).rev().map(|i| f64::from(i) * 100.0 + 1.0).collect();
        let at = |switch_at| first_step(switch_at, &timesteps, 1000);
        assert_eq!(at(0.8), 8);
        assert_eq!(at(0.5), 5);
        assert_eq!(at(1.0), 10);
        assert_eq!(at(0.0), 0);
    }
}
