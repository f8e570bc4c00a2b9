//! One sampling run: converts UNet outputs to denoised estimates and steps down the σ grid.

use super::{Consistency, Plan, Prediction, SchedulerName};
use candle_core::{Result, Tensor};

/// The per-run state of a sampler (DPM++ 2M remembers the previous estimate).
#[derive(Debug)]
pub struct Sampler {
    kind: SchedulerName,
    plan: Plan,
    prediction: Prediction,
    previous: Option<Tensor>,
}

impl Sampler {
    /// A fresh sampler walking `plan`.
    pub fn new(kind: SchedulerName, plan: Plan, prediction: Prediction) -> Self {
        Self {
            kind,
            plan,
            prediction,
            previous: None,
        }
    }

    /// The grid this run walks.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Number of UNet evaluations.
    pub fn steps(&self) -> usize {
        self.plan.timesteps.len()
    }

    /// σ before step `i`.
    pub fn sigma(&self, i: usize) -> f64 {
        self.plan.sigmas[i]
    }

    /// Whether [`Sampler::step`] needs fresh noise (ancestral and consistency samplers).
    pub fn needs_noise(&self) -> bool {
        matches!(
            self.kind,
            SchedulerName::EulerAncestral | SchedulerName::Lcm | SchedulerName::Tcd
        )
    }

    /// Factor that turns `x` into the UNet's variance-preserving input at step `i`.
    pub fn input_scale(&self, i: usize) -> f64 {
        let s = self.sigma(i);
        1.0 / (s * s + 1.0).sqrt()
    }

    /// The denoised estimate x̂₀ from the UNet's output at step `i` (LCM's boundary-conditioned
    /// one for LCM).
    pub fn denoised(&self, i: usize, x: &Tensor, model_out: &Tensor) -> Result<Tensor> {
        let s = self.sigma(i);
        let x0 = match self.prediction {
            Prediction::Epsilon => (x - (model_out * s)?)?,
            Prediction::VPrediction => ((x / (s * s + 1.0))? - (model_out * (s / (s * s + 1.0).sqrt()))?)?,
            Prediction::Sample => model_out.clone(),
        };
        match &self.plan.consistency {
            Some(Consistency::Lcm { timestep_scaling }) => {
                // c_skip and c_out at the scaled timestep, σ_data = 0.5; c_skip weighs the
                // variance-preserving sample, as diffusers' LCMScheduler does.
                let t = self.plan.timesteps[i] * timestep_scaling;
                let (c_skip, c_out) = (0.25 / (t * t + 0.25), t / (t * t + 0.25).sqrt());
                (x0 * c_out)? + (x * (c_skip * self.input_scale(i)))?
            }
            _ => Ok(x0),
        }
    }

    /// Moves `x` from σᵢ to σᵢ₊₁ given the denoised estimate; `noise` (unit normal, same shape)
    /// is used by ancestral samplers only.
    pub fn step(
        &mut self,
        i: usize,
        x: &Tensor,
        denoised: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (s, s_next) = (self.sigma(i), self.plan.sigmas[i + 1]);
        match self.kind {
            SchedulerName::Euler | SchedulerName::Ddim => euler(x, denoised, s, s_next),
            SchedulerName::Lcm => {
                // The estimate, re-noised afresh to the next σ.
                match noise {
                    _ if s_next == 0.0 => Ok(denoised.clone()),
                    Some(n) => denoised + (n * s_next)?,
                    None => candle_core::bail!("the LCM sampler needs noise for step {i}"),
                }
            }
            SchedulerName::Tcd => {
                // To σₛ along the predicted noise, then fresh noise up to the next σ.
                let Some(Consistency::Tcd { via }) = &self.plan.consistency else {
                    candle_core::bail!("a TCD plan carries its intermediate σ")
                };
                let s_via = via[i];
                let x_via = (denoised + ((x - denoised)? * (s_via / s))?)?;
                let up = (s_next * s_next - s_via * s_via).max(0.0).sqrt();
                match noise {
                    _ if up == 0.0 => Ok(x_via),
                    Some(n) => x_via + (n * up)?,
                    None => candle_core::bail!("the TCD sampler needs noise for step {i}"),
                }
            }
            SchedulerName::EulerAncestral => {
                let up = if s_next == 0.0 {
                    0.0
                } else {
                    (s_next * s_next * (s * s - s_next * s_next) / (s * s))
                        .sqrt()
                        .min(s_next)
                };
                let down = (s_next * s_next - up * up).sqrt();
                let x = euler(x, denoised, s, down)?;
                match noise {
                    Some(n) if up > 0.0 => x + (n * up)?,
                    Some(_) => Ok(x),
                    None => candle_core::bail!("the ancestral sampler needs noise for step {i}"),
                }
            }
            SchedulerName::DpmPp2mKarras => {
                let out = if s_next == 0.0 {
                    denoised.clone()
                } else {
                    let h = s.ln() - s_next.ln();
                    let d = match (&self.previous, i) {
                        (Some(prev), i) if i > 0 => {
                            let h_last = self.sigma(i - 1).ln() - s.ln();
                            let r = h_last / h;
                            ((denoised * (1.0 + 1.0 / (2.0 * r)))? - (prev * (1.0 / (2.0 * r)))?)?
                        }
                        _ => denoised.clone(),
                    };
                    ((x * (s_next / s))? - (d * (-h).exp_m1())?)?
                };
                self.previous = Some(denoised.clone());
                Ok(out)
            }
        }
    }
}

/// One Euler step of the probability-flow ODE from σ to σ_next.
fn euler(x: &Tensor, denoised: &Tensor, s: f64, s_next: f64) -> Result<Tensor> {
    let derivative = ((x - denoised)? / s)?;
    x + (derivative * (s_next - s))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedulers::{NoiseSchedule, SchedulerConfig};
    use candle_core::{Device, Tensor};

    /// With a perfect denoiser (it always returns the true x₀), every deterministic sampler must
    /// land exactly on x₀.
    #[test]
    fn deterministic_samplers_recover_x0_with_an_oracle_denoiser() {
        let dev = Device::Cpu;
        let sched = NoiseSchedule::new(&SchedulerConfig::default()).unwrap();
        let x0 = Tensor::new(&[0.5f32, -1.0, 2.0], &dev).unwrap();
        let eps = Tensor::new(&[1.0f32, -0.3, 0.7], &dev).unwrap();
        for kind in [SchedulerName::Euler, SchedulerName::DpmPp2mKarras] {
            let mut s = Sampler::new(kind, sched.plan(kind, 8), Prediction::Epsilon);
            let mut x = ((&eps * s.sigma(0)).unwrap() + &x0).unwrap();
            for i in 0..s.steps() {
                let eps_pred = ((&x - &x0).unwrap() / s.sigma(i)).unwrap();
                let d = s.denoised(i, &x, &eps_pred).unwrap();
                x = s.step(i, &x, &d, None).unwrap();
            }
            let err: f32 = (&x - &x0)
                .unwrap()
                .abs()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!(err < 1e-5, "{kind}: {err}");
        }
    }

    #[test]
    fn v_prediction_denoised_inverts_the_forward_process() {
        let dev = Device::Cpu;
        let sched = NoiseSchedule::new(&SchedulerConfig::default()).unwrap();
        let s = Sampler::new(
            SchedulerName::Euler,
            sched.plan(SchedulerName::Euler, 5),
            Prediction::VPrediction,
        );
        let sigma = s.sigma(2);
        let (alpha, sigma_vp) = (
            1.0 / (sigma * sigma + 1.0).sqrt(),
            sigma / (sigma * sigma + 1.0).sqrt(),
        );
        let x0 = Tensor::new(&[0.25f64, -0.5], &dev).unwrap();
        let eps = Tensor::new(&[-1.0f64, 0.4], &dev).unwrap();
        let x = (&x0 + (&eps * sigma).unwrap()).unwrap();
        let v = ((&eps * alpha).unwrap() - (&x0 * sigma_vp).unwrap()).unwrap();
        let d = s.denoised(2, &x, &v).unwrap();
        let err: f64 = (&d - &x0)
            .unwrap()
            .abs()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(err < 1e-12, "{err}");
    }

    #[test]
    fn ancestral_step_adds_noise_and_demands_it() {
        let dev = Device::Cpu;
        let sched = NoiseSchedule::new(&SchedulerConfig::default()).unwrap();
        let mut s = Sampler::new(
            SchedulerName::EulerAncestral,
            sched.plan(SchedulerName::EulerAncestral, 4),
            Prediction::Epsilon,
        );
        let x = Tensor::new(&[3.0f32], &dev).unwrap();
        let d = Tensor::new(&[1.0f32], &dev).unwrap();
        assert!(s.step(0, &x, &d, None).is_err());
        let quiet = s
            .step(0, &x, &d, Some(&Tensor::new(&[0.0f32], &dev).unwrap()))
            .unwrap();
        let noisy = s
            .step(0, &x, &d, Some(&Tensor::new(&[1.0f32], &dev).unwrap()))
            .unwrap();
        let diff: f32 = (noisy - quiet).unwrap().to_vec1::<f32>().unwrap()[0];
        assert!(diff > 0.1, "{diff}");
    }
}
