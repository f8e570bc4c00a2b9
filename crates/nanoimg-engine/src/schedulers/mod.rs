//! Noise schedules and samplers.
//!
//! Every sampler here works in the σ-parameterisation of Karras et al. (k-diffusion): the latent
//! is `x = x₀ + σ·ε`, the UNet sees `x / √(σ² + 1)` (the variance-preserving sample diffusers
//! feeds it), and each step moves from σᵢ to σᵢ₊₁ given the denoised estimate x̂₀. DDIM with
//! η = 0 is exactly Euler in this parameterisation on DDIM's own σ grid, so one loop serves all.
//! The timestep/σ grids follow diffusers' schedulers so results are comparable.

pub mod flow;
mod sampler;

pub use nanoimg_core::SchedulerName;
pub use sampler::Sampler;

use crate::ConfigError;
use serde::Deserialize;

/// The fields of a diffusers `scheduler_config.json` that define the training noise schedule.
#[derive(Debug, Clone, Deserialize)]
pub struct SchedulerConfig {
    #[serde(default = "thousand")]
    pub num_train_timesteps: usize,
    #[serde(default = "beta_start")]
    pub beta_start: f64,
    #[serde(default = "beta_end")]
    pub beta_end: f64,
    #[serde(default = "scaled_linear")]
    pub beta_schedule: String,
    #[serde(default = "epsilon")]
    pub prediction_type: String,
    #[serde(default = "leading")]
    pub timestep_spacing: String,
    #[serde(default)]
    pub steps_offset: usize,
    #[serde(default)]
    pub set_alpha_to_one: bool,
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
    /// The distillation schedule's length, from which LCM and TCD pick their timesteps.
    #[serde(default = "fifty")]
    pub original_inference_steps: usize,
    /// LCM's boundary-condition scaling of the timestep.
    #[serde(default = "ten")]
    pub timestep_scaling: f64,
    /// The diffusers class the folder was saved with (`LCMScheduler` makes LCM the default).
    #[serde(rename = "_class_name", default)]
    pub class_name: Option<String>,
}

fn fifty() -> usize {
    50
}
fn ten() -> f64 {
    10.0
}

fn thousand() -> usize {
    1000
}
fn beta_start() -> f64 {
    0.00085
}
fn beta_end() -> f64 {
    0.012
}
fn scaled_linear() -> String {
    "scaled_linear".into()
}
fn epsilon() -> String {
    "epsilon".into()
}
fn leading() -> String {
    "leading".into()
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("every field has a default")
    }
}

/// What the UNet predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    /// The noise ε.
    Epsilon,
    /// v = α·ε − σ_vp·x₀ (SD 2.x 768-v models).
    VPrediction,
    /// x₀ itself.
    Sample,
}

/// How timesteps are spread over the training range (diffusers' `timestep_spacing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spacing {
    Linspace,
    Leading,
    Trailing,
}

/// The training noise schedule: ᾱₜ and σₜ = √((1 − ᾱₜ)/ᾱₜ) for every training timestep.
#[derive(Debug, Clone)]
pub struct NoiseSchedule {
    pub alphas_cumprod: Vec<f64>,
    pub sigmas: Vec<f64>,
    pub prediction: Prediction,
    pub spacing: Spacing,
    pub steps_offset: usize,
    pub set_alpha_to_one: bool,
    /// LCM's and TCD's distillation schedule length and LCM's timestep scaling.
    pub original_inference_steps: usize,
    pub timestep_scaling: f64,
}

/// TCD's γ: the fraction of each step's noise drawn afresh (diffusers' `eta`, 0.3 in its
/// documentation and in the TCD authors' examples).
pub const TCD_GAMMA: f64 = 0.3;

impl NoiseSchedule {
    /// Builds the schedule, rejecting settings we do not implement with the field's name.
    pub fn new(c: &SchedulerConfig) -> Result<Self, ConfigError> {
        let n = c.num_train_timesteps;
        if !(2..=100_000).contains(&n) {
            return Err(ConfigError::invalid(
                "num_train_timesteps",
                format!("{n} is out of range 2..=100000"),
            ));
        }
        if c.rescale_betas_zero_snr {
            return Err(ConfigError::unsupported("rescale_betas_zero_snr", true));
        }
        let lin = |a: f64, b: f64| -> Vec<f64> {
            (0..n).map(|i| a + (b - a) * i as f64 / (n - 1) as f64).collect()
        };
        let betas: Vec<f64> = match c.beta_schedule.as_str() {
            "scaled_linear" => lin(c.beta_start.sqrt(), c.beta_end.sqrt())
                .iter()
                .map(|b| b * b)
                .collect(),
            "linear" => lin(c.beta_start, c.beta_end),
            other => return Err(ConfigError::unsupported("beta_schedule", other)),
        };
        if betas.iter().any(|b| !(*b > 0.0 && *b < 1.0)) {
            return Err(ConfigError::invalid("beta_start", "betas must lie in (0, 1)"));
        }
        let mut acc = 1.0;
        let alphas_cumprod: Vec<f64> = betas
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect();
        let sigmas = alphas_cumprod.iter().map(|a| ((1.0 - a) / a).sqrt()).collect();
        let prediction = match c.prediction_type.as_str() {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::VPrediction,
            "sample" => Prediction::Sample,
            other => return Err(ConfigError::unsupported("prediction_type", other)),
        };
        let spacing = match c.timestep_spacing.as_str() {
            "linspace" => Spacing::Linspace,
            "leading" => Spacing::Leading,
            "trailing" => Spacing::Trailing,
            other => return Err(ConfigError::unsupported("timestep_spacing", other)),
        };
        if !(1..=n).contains(&c.original_inference_steps) {
            return Err(ConfigError::invalid(
                "original_inference_steps",
                format!("{} is out of range 1..={n}", c.original_inference_steps),
            ));
        }
        if !(c.timestep_scaling.is_finite() && c.timestep_scaling > 0.0) {
            return Err(ConfigError::invalid(
                "timestep_scaling",
                "must be a positive number",
            ));
        }
        Ok(Self {
            alphas_cumprod,
            sigmas,
            prediction,
            spacing,
            steps_offset: c.steps_offset,
            set_alpha_to_one: c.set_alpha_to_one,
            original_inference_steps: c.original_inference_steps,
            timestep_scaling: c.timestep_scaling,
        })
    }

    fn n(&self) -> usize {
        self.sigmas.len()
    }

    /// Timesteps for `steps` inference steps, high to low, as diffusers spaces them.
    pub fn timesteps(&self, steps: usize, spacing: Spacing) -> Vec<f64> {
        let n = self.n();
        match spacing {
            Spacing::Linspace => (0..steps)
                .rev()
                .map(|i| {
                    if steps == 1 {
                        0.0
                    } else {
                        (n - 1) as f64 * i as f64 / (steps - 1) as f64
                    }
                })
                .collect(),
            Spacing::Leading => {
                let ratio = n / steps;
                (0..steps)
                    .rev()
                    .map(|i| ((i * ratio + self.steps_offset).min(n - 1)) as f64)
                    .collect()
            }
            Spacing::Trailing => {
                let ratio = n as f64 / steps as f64;
                (0..steps)
                    .map(|i| ((n as f64 - i as f64 * ratio).round() - 1.0).max(0.0))
                    .collect()
            }
        }
    }

    /// σ at a (possibly fractional) timestep, interpolating linearly between training steps.
    pub fn sigma_at(&self, t: f64) -> f64 {
        let t = t.clamp(0.0, (self.n() - 1) as f64);
        let lo = t.floor() as usize;
        let hi = (lo + 1).min(self.n() - 1);
        let w = t - lo as f64;
        self.sigmas[lo] * (1.0 - w) + self.sigmas[hi] * w
    }

    /// The (fractional) timestep of σ, interpolating in log σ as diffusers' `_sigma_to_t`.
    pub fn t_at(&self, sigma: f64) -> f64 {
        let log_sigma = sigma.max(1e-10).ln();
        let logs: Vec<f64> = self.sigmas.iter().map(|s| s.ln()).collect();
        let n = logs.len();
        let lo = logs.iter().rposition(|l| *l <= log_sigma).unwrap_or(0).min(n - 2);
        let hi = lo + 1;
        let w = ((logs[lo] - log_sigma) / (logs[lo] - logs[hi])).clamp(0.0, 1.0);
        (1.0 - w) * lo as f64 + w * hi as f64
    }

    /// Karras et al.'s ρ = 7 spacing of `steps` σ values between the training extremes.
    pub fn karras_sigmas(&self, steps: usize) -> Vec<f64> {
        let (min, max) = (self.sigmas[0], self.sigmas[self.n() - 1]);
        let rho = 7.0;
        let (min_inv, max_inv) = (min.powf(1.0 / rho), max.powf(1.0 / rho));
        (0..steps)
            .map(|i| {
                let ramp = if steps == 1 {
                    0.0
                } else {
                    i as f64 / (steps - 1) as f64
                };
                (max_inv + ramp * (min_inv - max_inv)).powf(rho)
            })
            .collect()
    }

    /// LCM's and TCD's timesteps: `steps` of the distillation schedule's
    /// `original_inference_steps` timesteps (k − 1, 2k − 1, …, N − 1 for k = N / that), picked at
    /// evenly spaced indices from the top, as diffusers picks them (its `np.linspace` floats
    /// included). Requests for more steps than that are refused by validation.
    pub fn consistency_timesteps(&self, steps: usize) -> Vec<f64> {
        let original = self.original_inference_steps;
        let k = self.n() / original;
        let stride = original as f64 / steps as f64;
        (0..steps)
            .map(|i| {
                let index = ((i as f64 * stride).floor() as usize).min(original - 1);
                ((original - index) * k - 1) as f64
            })
            .collect()
    }

    /// The timesteps and σ grid one run of `kind` with `steps` steps walks.
    pub fn plan(&self, kind: SchedulerName, steps: usize) -> Plan {
        match kind {
            SchedulerName::Euler | SchedulerName::EulerAncestral => {
                let timesteps = self.timesteps(steps, self.spacing);
                let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| self.sigma_at(t)).collect();
                sigmas.push(0.0);
                Plan {
                    timesteps,
                    sigmas,
                    initial_scale: InitialScale::Sigma,
                    consistency: None,
                }
            }
            SchedulerName::Ddim => {
                // σ at DDIM's own timesteps; after the last one DDIM steps to ᾱ = 1 (σ = 0) or
                // to ᾱ₀, per `set_alpha_to_one`. Identical to diffusers for leading and trailing
                // spacing, where the previous timestep t − N/steps is the next one on the grid.
                let timesteps = self.timesteps(steps, self.spacing);
                let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| self.sigmas[t as usize]).collect();
                sigmas.push(if self.set_alpha_to_one {
                    0.0
                } else {
                    self.sigmas[0]
                });
                Plan {
                    timesteps,
                    sigmas,
                    initial_scale: InitialScale::VariancePreserving,
                    consistency: None,
                }
            }
            SchedulerName::DpmPp2mKarras => {
                let mut sigmas = self.karras_sigmas(steps);
                let timesteps = sigmas.iter().map(|&s| self.t_at(s).round()).collect();
                sigmas.push(0.0);
                Plan {
                    timesteps,
                    sigmas,
                    initial_scale: InitialScale::Sigma,
                    consistency: None,
                }
            }
            SchedulerName::Lcm => {
                // The UNet's σ at each timestep; the last step lands on its estimate (σ = 0).
                let timesteps = self.consistency_timesteps(steps);
                let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| self.sigmas[t as usize]).collect();
                sigmas.push(0.0);
                Plan {
                    timesteps,
                    sigmas,
                    initial_scale: InitialScale::VariancePreserving,
                    consistency: Some(Consistency::Lcm {
                        timestep_scaling: self.timestep_scaling,
                    }),
                }
            }
            SchedulerName::Tcd => {
                // Each step goes to the next timestep t′ by way of s = ⌊(1 − γ)·t′⌋: the estimate
                // re-noised to σₛ, then fresh noise up to σₜ′. The last goes to t′ = 0.
                let timesteps = self.consistency_timesteps(steps);
                let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| self.sigmas[t as usize]).collect();
                sigmas.push(self.sigmas[0]);
                let via = timesteps[1..]
                    .iter()
                    .chain([&0.0])
                    .map(|&t_next| self.sigmas[((1.0 - TCD_GAMMA) * t_next).floor() as usize])
                    .collect();
                Plan {
                    timesteps,
                    sigmas,
                    initial_scale: InitialScale::VariancePreserving,
                    consistency: Some(Consistency::Tcd { via }),
                }
            }
        }
    }
}

/// What the consistency samplers need beyond the σ grid.
#[derive(Debug, Clone, PartialEq)]
pub enum Consistency {
    /// LCM: the denoised estimate is `c_out·x̂₀ + c_skip·x` with the boundary scalings at
    /// `timestep · timestep_scaling` (σ_data = 0.5).
    Lcm { timestep_scaling: f64 },
    /// TCD: the σ each step re-noises its estimate to before fresh noise takes it to the next
    /// σ (one per step).
    Tcd { via: Vec<f64> },
}

/// How pure noise is scaled to start sampling at σ₀.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialScale {
    /// x = σ₀·ε (k-diffusion).
    Sigma,
    /// x = √(σ₀² + 1)·ε: unit-variance noise in the variance-preserving sample (DDIM).
    VariancePreserving,
}

/// The grid one sampling run walks: `timesteps[i]` is fed to the UNet at `sigmas[i]`, and the
/// step moves to `sigmas[i + 1]` (the last is the final σ, usually 0).
#[derive(Debug, Clone)]
pub struct Plan {
    pub timesteps: Vec<f64>,
    pub sigmas: Vec<f64>,
    pub initial_scale: InitialScale,
    pub consistency: Option<Consistency>,
}

impl Plan {
    /// Keeps only the last `keep` steps (img2img with strength < 1 starts part-way down).
    pub fn tail(&self, keep: usize) -> Plan {
        let skip = self.timesteps.len() - keep.min(self.timesteps.len());
        Plan {
            timesteps: self.timesteps[skip..].to_vec(),
            sigmas: self.sigmas[skip..].to_vec(),
            initial_scale: self.initial_scale,
            consistency: match &self.consistency {
                Some(Consistency::Tcd { via }) => Some(Consistency::Tcd {
                    via: via[skip..].to_vec(),
                }),
                other => other.clone(),
            },
        }
    }

    /// Multiplier for unit noise at the start of this plan.
    pub fn initial_noise_scale(&self) -> f64 {
        let s = self.sigmas[0];
        match self.initial_scale {
            InitialScale::Sigma => s,
            InitialScale::VariancePreserving => (s * s + 1.0).sqrt(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd() -> NoiseSchedule {
        NoiseSchedule::new(&SchedulerConfig {
            steps_offset: 1,
            ..Default::default()
        })
        .unwrap()
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn sd_training_sigmas_match_published_extremes() {
        // σ_max ≈ 14.6146 and σ_min ≈ 0.0292 for SD's scaled-linear betas (k-diffusion, diffusers).
        let s = sd();
        assert!(close(s.sigmas[999], 14.6146, 1e-3), "{}", s.sigmas[999]);
        assert!(close(s.sigmas[0], 0.0292, 1e-4), "{}", s.sigmas[0]);
    }

    #[test]
    fn leading_spacing_matches_diffusers_ddim_50() {
        // diffusers DDIM docs: 50 steps, steps_offset=1 → 981, 961, …, 21, 1.
        let t = sd().timesteps(50, Spacing::Leading);
        assert_eq!(t.len(), 50);
        assert_eq!(t[0], 981.0);
        assert_eq!(t[1], 961.0);
        assert_eq!(*t.last().unwrap(), 1.0);
    }

    #[test]
    fn trailing_spacing_matches_turbo_schedules() {
        let s = sd();
        assert_eq!(s.timesteps(1, Spacing::Trailing), vec![999.0]);
        assert_eq!(
            s.timesteps(4, Spacing::Trailing),
            vec![999.0, 749.0, 499.0, 249.0]
        );
    }

    #[test]
    fn linspace_spacing_spans_the_full_range() {
        let t = sd().timesteps(5, Spacing::Linspace);
        assert_eq!(t, vec![999.0, 749.25, 499.5, 249.75, 0.0]);
    }

    #[test]
    fn euler_plan_ends_at_zero_and_interpolates_sigma() {
        let s = sd();
        let p = s.plan(SchedulerName::Euler, 10);
        assert_eq!(p.sigmas.len(), 11);
        assert_eq!(*p.sigmas.last().unwrap(), 0.0);
        assert!(close(p.sigmas[0], s.sigmas[901], 1e-12));
        let mid = s.sigma_at(100.5);
        assert!(mid > s.sigmas[100] && mid < s.sigmas[101]);
    }

    #[test]
    fn karras_sigmas_hit_both_extremes_and_decrease() {
        let s = sd();
        let k = s.karras_sigmas(20);
        assert!(close(k[0], 14.6146, 1e-3));
        assert!(close(*k.last().unwrap(), 0.0292, 1e-4));
        assert!(k.windows(2).all(|w| w[0] > w[1]));
        let p = s.plan(SchedulerName::DpmPp2mKarras, 20);
        assert_eq!(p.timesteps[0], 999.0);
        assert_eq!(*p.timesteps.last().unwrap(), 0.0);
    }

    #[test]
    fn sigma_to_timestep_inverts_the_table() {
        let s = sd();
        for t in [0usize, 1, 250, 500, 998, 999] {
            assert!(close(s.t_at(s.sigmas[t]), t as f64, 1e-6), "t={t}");
        }
    }

    #[test]
    fn ddim_final_sigma_follows_set_alpha_to_one() {
        let s = sd();
        let p = s.plan(SchedulerName::Ddim, 50);
        assert!(close(*p.sigmas.last().unwrap(), s.sigmas[0], 1e-12));
        let one = NoiseSchedule::new(&SchedulerConfig {
            set_alpha_to_one: true,
            steps_offset: 1,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(*one.plan(SchedulerName::Ddim, 50).sigmas.last().unwrap(), 0.0);
        // DDIM's σ grid is the training table at its own timesteps.
        assert!(close(p.sigmas[1], s.sigmas[961], 1e-12));
    }

    #[test]
    fn consistency_timesteps_are_picked_from_the_distillation_schedule() {
        // diffusers' LCMScheduler with original_inference_steps = 50.
        let s = sd();
        assert_eq!(s.consistency_timesteps(1), vec![999.0]);
        assert_eq!(s.consistency_timesteps(4), vec![999.0, 759.0, 499.0, 259.0]);
        assert_eq!(
            s.consistency_timesteps(6),
            vec![999.0, 839.0, 679.0, 499.0, 339.0, 179.0]
        );
        let lcm = s.plan(SchedulerName::Lcm, 4);
        assert_eq!(*lcm.sigmas.last().unwrap(), 0.0);
        assert!(close(lcm.sigmas[1], s.sigmas[759], 1e-12));
        // TCD re-noises to ⌊0.7·t′⌋ before each next timestep t′, and ends at t = 0.
        let tcd = s.plan(SchedulerName::Tcd, 4);
        let Some(Consistency::Tcd { via }) = &tcd.consistency else {
            panic!("{:?}", tcd.consistency)
        };
        let expected = [531usize, 349, 181, 0].map(|t| s.sigmas[t]);
        assert_eq!(via.as_slice(), expected.as_slice());
        assert!(close(*tcd.sigmas.last().unwrap(), s.sigmas[0], 1e-12));
        let Some(Consistency::Tcd { via }) = tcd.tail(2).consistency else {
            panic!()
        };
        assert_eq!(via.as_slice(), &expected[2..]);
    }

    #[test]
    fn img2img_tail_keeps_last_steps() {
        let p = sd().plan(SchedulerName::Euler, 10).tail(3);
        assert_eq!(p.timesteps, vec![201.0, 101.0, 1.0]);
        assert_eq!(p.sigmas.len(), 4);
    }

    #[test]
    fn unsupported_settings_are_named() {
        let err = NoiseSchedule::new(&SchedulerConfig {
            beta_schedule: "squaredcos_cap_v2".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            err,
            ConfigError::unsupported("beta_schedule", "squaredcos_cap_v2")
        );
        assert!(err.to_string().contains("squaredcos_cap_v2"), "{err}");
        let err = NoiseSchedule::new(&SchedulerConfig {
            prediction_type: "flow".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.field(), "prediction_type");
    }
}
