//! Flow matching (FLUX.1, SD3): the model predicts a velocity `v` along the straight path
//! `x_σ = σ·ε + (1 − σ)·x₀`, and Euler steps move `x` from σᵢ to σᵢ₊₁ by `(σᵢ₊₁ − σᵢ)·v`.
//!
//! The σ grid is diffusers' `FlowMatchEulerDiscreteScheduler` as `FluxPipeline` drives it:
//! `steps` values from 1 down to `1/steps`, shifted — by a fixed `shift` (FLUX.1 schnell: 1,
//! SD3: 3), or, with `use_dynamic_shifting` (FLUX.1 dev, Kontext), by `μ`, which grows linearly
//! with the number of image tokens so that larger pictures spend more steps at high noise — and
//! a final 0. Timesteps handed to the model are `σ × num_train_timesteps`.

use crate::ConfigError;
use candle_core::{Result, Tensor};
use serde::Deserialize;

/// The fields of a diffusers `FlowMatchEulerDiscreteScheduler` `scheduler_config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct FlowMatchConfig {
    #[serde(default = "thousand")]
    pub num_train_timesteps: usize,
    #[serde(default = "one")]
    pub shift: f64,
    #[serde(default)]
    pub use_dynamic_shifting: bool,
    #[serde(default = "base_shift")]
    pub base_shift: f64,
    #[serde(default = "max_shift")]
    pub max_shift: f64,
    #[serde(default = "base_seq")]
    pub base_image_seq_len: usize,
    #[serde(default = "max_seq")]
    pub max_image_seq_len: usize,
    #[serde(default = "exponential")]
    pub time_shift_type: String,
    /// Stretch the shifted grid so that its last σ (before the final 0) is this.
    #[serde(default)]
    pub shift_terminal: Option<f64>,
    // Fields we only check.
    #[serde(default)]
    pub invert_sigmas: bool,
    #[serde(default)]
    pub use_karras_sigmas: bool,
    #[serde(default)]
    pub use_exponential_sigmas: bool,
    #[serde(default)]
    pub use_beta_sigmas: bool,
    #[serde(default)]
    pub stochastic_sampling: bool,
}

fn thousand() -> usize {
    1000
}
fn one() -> f64 {
    1.0
}
fn base_shift() -> f64 {
    0.5
}
fn max_shift() -> f64 {
    1.15
}
fn base_seq() -> usize {
    256
}
fn max_seq() -> usize {
    4096
}
fn exponential() -> String {
    "exponential".into()
}

impl Default for FlowMatchConfig {
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("every field has a default")
    }
}

impl FlowMatchConfig {
    /// Rejects settings this implementation would compute wrongly, naming the field.
    pub fn validate(&self) -> std::result::Result<(), ConfigError> {
        let unsupported = [
            (self.invert_sigmas, "invert_sigmas"),
            (self.use_karras_sigmas, "use_karras_sigmas"),
            (self.use_exponential_sigmas, "use_exponential_sigmas"),
            (self.use_beta_sigmas, "use_beta_sigmas"),
            (self.stochastic_sampling, "stochastic_sampling"),
        ];
        if let Some((_, field)) = unsupported.iter().find(|(on, _)| *on) {
            return Err(ConfigError::unsupported(field, "true"));
        }
        if !matches!(self.time_shift_type.as_str(), "exponential" | "linear") {
            return Err(ConfigError::unsupported("time_shift_type", &self.time_shift_type));
        }
        if self.num_train_timesteps == 0 || self.shift <= 0.0 {
            return Err(ConfigError::invalid(
                "shift",
                "num_train_timesteps and shift must be positive",
            ));
        }
        if self.use_dynamic_shifting && self.max_image_seq_len <= self.base_image_seq_len {
            return Err(ConfigError::invalid(
                "max_image_seq_len",
                "must be larger than base_image_seq_len",
            ));
        }
        if self.shift_terminal.is_some_and(|t| !(0.0..1.0).contains(&t)) {
            return Err(ConfigError::invalid("shift_terminal", "must be in [0, 1)"));
        }
        Ok(())
    }

    /// `FluxPipeline`'s `calculate_shift`: μ linear in the image's token count, from
    /// `base_shift` at `base_image_seq_len` to `max_shift` at `max_image_seq_len`.
    pub fn mu(&self, image_seq_len: usize) -> f64 {
        let (b0, b1) = (self.base_image_seq_len as f64, self.max_image_seq_len as f64);
        let m = (self.max_shift - self.base_shift) / (b1 - b0);
        image_seq_len as f64 * m + (self.base_shift - m * b0)
    }

    /// The σ grid of `steps` steps for a picture of `image_seq_len` latent tokens (FLUX: one per
    /// 2×2 latent patch, so 1024 at 512², 4096 at 1024²), as `FluxPipeline` asks
    /// `set_timesteps` for it.
    pub fn plan(&self, steps: usize, image_seq_len: usize) -> FlowPlan {
        let n = steps.max(1);
        // np.linspace(1, 1/n, n)
        let base: Vec<f64> = (0..n)
            .map(|i| match n {
                1 => 1.0,
                _ => 1.0 + (1.0 / n as f64 - 1.0) * i as f64 / (n - 1) as f64,
            })
            .collect();
        let mu = self.mu(image_seq_len);
        let mut sigmas: Vec<f64> = base
            .iter()
            .map(
                |&s| match (self.use_dynamic_shifting, self.time_shift_type.as_str()) {
                    (true, "linear") => mu / (mu + (1.0 / s - 1.0)),
                    (true, _) => mu.exp() / (mu.exp() + (1.0 / s - 1.0)),
                    (false, _) => self.shift * s / (1.0 + (self.shift - 1.0) * s),
                },
            )
            .collect();
        if let Some(terminal) = self.shift_terminal {
            let last = 1.0 - sigmas[n - 1];
            let scale = last / (1.0 - terminal);
            for s in &mut sigmas {
                *s = 1.0 - (1.0 - *s) / scale;
            }
        }
        let timesteps = sigmas
            .iter()
            .map(|s| s * self.num_train_timesteps as f64)
            .collect();
        sigmas.push(0.0);
        FlowPlan { sigmas, timesteps }
    }
}

/// The σ of every step and the final 0, and the timesteps the model sees.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowPlan {
    /// `steps + 1` values, decreasing to 0.
    pub sigmas: Vec<f64>,
    /// `steps` values: `σ × num_train_timesteps`.
    pub timesteps: Vec<f64>,
}

impl FlowPlan {
    /// Steps to run.
    pub fn steps(&self) -> usize {
        self.timesteps.len()
    }

    /// The steps image-to-image runs at `strength` (0–1], as diffusers' FLUX img2img pipelines
    /// choose them: all but the first `⌊steps × (1 − strength)⌋`; `None` when none would run.
    pub fn from_strength(&self, strength: f64) -> Option<FlowPlan> {
        let n = self.steps();
        let start = ((n as f64 - n as f64 * strength.clamp(0.0, 1.0)).max(0.0)) as usize;
        (start < n).then(|| FlowPlan {
            sigmas: self.sigmas[start..].to_vec(),
            timesteps: self.timesteps[start..].to_vec(),
        })
    }

    /// The starting point of image-to-image: the clean latents `x0` noised to the first σ
    /// (`scale_noise`).
    pub fn noised(&self, x0: &Tensor, noise: &Tensor) -> Result<Tensor> {
        let s = self.sigmas[0];
        (noise * s)? + (x0 * (1.0 - s))?
    }

    /// One Euler step from σᵢ to σᵢ₊₁ along the predicted velocity.
    pub fn step(&self, i: usize, x: &Tensor, velocity: &Tensor) -> Result<Tensor> {
        let dt = self.sigmas[i + 1] - self.sigmas[i];
        x + (velocity * dt)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schnell_runs_from_pure_noise_to_zero_unshifted() {
        let plan = FlowMatchConfig::default().plan(4, 1024);
        assert_eq!(plan.sigmas, [1.0, 0.75, 0.5, 0.25, 0.0]);
        assert_eq!(plan.timesteps, [1000.0, 750.0, 500.0, 250.0]);
    }

    #[test]
    fn dynamic_shifting_spends_longer_at_high_noise_for_larger_pictures() {
        let dev = FlowMatchConfig {
            use_dynamic_shifting: true,
            ..Default::default()
        };
        assert!((dev.mu(256) - 0.5).abs() < 1e-12 && (dev.mu(4096) - 1.15).abs() < 1e-12);
        let (small, large) = (dev.plan(10, 1024), dev.plan(10, 4096));
        assert_eq!(small.sigmas[0], 1.0);
        assert!(small.sigmas[1..10]
            .iter()
            .zip(&large.sigmas[1..10])
            .all(|(s, l)| s < l));
    }

    #[test]
    fn img2img_keeps_the_last_steps_and_unsupported_settings_are_named() {
        let plan = FlowMatchConfig::default().plan(10, 1024);
        let kept = plan.from_strength(0.6).unwrap();
        assert_eq!(kept.steps(), 6);
        assert_eq!(kept.sigmas.last(), Some(&0.0));
        // diffusers rounds the steps skipped down, so the steps kept up.
        assert_eq!(plan.from_strength(0.55).unwrap().steps(), 6);
        assert_eq!(plan.from_strength(0.01).unwrap().steps(), 1);
        assert_eq!(plan.from_strength(0.0), None);
        let bad = FlowMatchConfig {
            stochastic_sampling: true,
            ..Default::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("stochastic_sampling"));
    }
}
