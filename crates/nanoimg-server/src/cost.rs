//! What a job costs, in **megapixel-steps**: a denoising step's work grows with the pixels it
//! draws, so a job costs the megapixels of every model pass times its steps, summed over its
//! images and passes (twice with classifier-free guidance, which runs the model on two
//! batches; twice again with characters or reference images, whose references are written each
//! step). An edit
//! plan costs each generative operation as one pass at the size the model draws it, and each
//! pixel operation a hundredth of a step per megapixel. Admission refuses a job that costs more
//! than `budget.max_job_megapixel_steps` before any work, and charges the rest to the tenant's
//! `budget.megapixel_steps_per_minute`.

use crate::spec::JobSpec;
use nanoimg_edit::exec::UPSCALE_STRENGTH;
use nanoimg_edit::{Op, PlanLimits};

/// A pixel operation's cost per megapixel, in steps: resampling, curves and captions are
/// linear in the pixels and about a thousand times cheaper than a UNet step.
const PIXEL_OP_STEPS: f64 = 0.01;

/// The megapixel-steps `spec` will cost; `max_pixels` is the most the model draws in one pass
/// (larger pictures in a plan are drawn at that size and resampled back).
pub fn megapixel_steps(spec: &JobSpec, max_pixels: u64) -> f64 {
    let mp = |w: u32, h: u32| (u64::from(w) * u64::from(h)).min(max_pixels) as f64 / 1e6;
    let per_pass = f64::from(spec.steps)
        * if spec.guidance > 1.0 { 2.0 } else { 1.0 }
        * if spec.characters.is_empty() && spec.references.is_empty() {
            1.0
        } else {
            2.0
        };
    let strength = |s: f64| s.clamp(0.0, 1.0);
    let Some(plan) = &spec.plan else {
        // img2img denoises only the last `strength` of the schedule.
        let run = spec.init.as_ref().map_or(1.0, |i| strength(i.strength));
        return mp(spec.size.width, spec.size.height) * per_pass * run * f64::from(spec.n);
    };
    // The sizes through the plan, as its own check computes them (it was validated already).
    let unbounded = PlanLimits {
        max_ops: usize::MAX,
        max_side: u32::MAX,
        max_pixels: u64::MAX,
        max_prompt_bytes: usize::MAX,
    };
    let mut size = (spec.size.width, spec.size.height);
    let mut total = 0.0;
    for op in &plan.plan.ops {
        let after = op.check(size, &unbounded).unwrap_or(size);
        let full = |(w, h): (u32, u32)| (u64::from(w) * u64::from(h)) as f64 / 1e6;
        total += match op {
            Op::Restyle { strength: s, .. } | Op::Variation { strength: s } => {
                mp(size.0, size.1) * per_pass * strength(f64::from(*s))
            }
            Op::Inpaint { .. } | Op::Instruct { .. } => mp(size.0, size.1) * per_pass,
            Op::Outpaint { .. } => mp(after.0, after.1) * per_pass,
            Op::Upscale { .. } => mp(after.0, after.1) * per_pass * UPSCALE_STRENGTH,
            _ => full(size).max(full(after)) * PIXEL_OP_STEPS,
        };
        size = after;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{CharacterUse, InitSpec, PlanSpec};
    use nanoimg_core::{ImageSize, SchedulerName};
    use nanoimg_edit::EditPlan;

    fn spec(w: u32, h: u32, steps: u32, n: u32) -> JobSpec {
        JobSpec {
            model: "m".into(),
            prompt: "p".into(),
            negative_prompt: String::new(),
            size: ImageSize::new(w, h),
            steps,
            guidance: 1.0,
            scheduler: SchedulerName::Euler,
            seed: 0,
            n,
            output_format: Default::default(),
            output_compression: None,
            init: None,
            partial_images: 0,
            moderation: Default::default(),
            plan: None,
            characters: Vec::new(),
            loras: Vec::new(),
            references: Vec::new(),
            refiner: None,
            vae: Default::default(),
        }
    }

    #[test]
    fn cost_grows_with_pixels_steps_images_and_passes() {
        let one = megapixel_steps(&spec(1000, 1000, 10, 1), u64::MAX);
        assert!((one - 10.0).abs() < 1e-9, "{one}");
        assert!((megapixel_steps(&spec(1000, 1000, 10, 4), u64::MAX) - 40.0).abs() < 1e-9);
        assert!((megapixel_steps(&spec(2000, 1000, 20, 1), u64::MAX) - 40.0).abs() < 1e-9);
        let mut guided = spec(1000, 1000, 10, 1);
        guided.guidance = 7.5;
        assert!((megapixel_steps(&guided, u64::MAX) - 20.0).abs() < 1e-9);
        guided.characters.push(CharacterUse {
            id: "chr".into(),
            name: "c".into(),
            description: String::new(),
            strength: 0.8,
            seed: 1,
        });
        assert!((megapixel_steps(&guided, u64::MAX) - 40.0).abs() < 1e-9);
        // img2img at strength 0.5 runs half the steps.
        let mut edit = spec(1000, 1000, 10, 1);
        edit.init = Some(InitSpec {
            image: "img".into(),
            mask: None,
            strength: 0.5,
        });
        assert!((megapixel_steps(&edit, u64::MAX) - 5.0).abs() < 1e-9);
    }

    #[test]
    fn a_plan_costs_each_pass_and_almost_nothing_for_pixel_ops() {
        let with_plan = |ops: serde_json::Value| {
            let mut s = spec(1000, 1000, 10, 1);
            s.plan = Some(PlanSpec {
                plan: EditPlan::from_json(&serde_json::json!({"version": 1, "ops": ops}).to_string())
                    .unwrap(),
                instruction: String::new(),
                session: None,
            });
            megapixel_steps(&s, 1_000_000)
        };
        let restyle = serde_json::json!({"op": "restyle", "prompt": "x", "strength": 1.0});
        let one = with_plan(serde_json::json!([restyle]));
        assert!((one - 10.0).abs() < 1e-9, "{one}");
        // Sixteen restyles cost sixteen passes, not one.
        let many = with_plan(serde_json::json!(vec![restyle; 16]));
        assert!((many - 160.0).abs() < 1e-6, "{many}");
        // Pixel operations are cheap but not free.
        let pixels = with_plan(serde_json::json!([{"op": "grayscale"}, {"op": "invert"}]));
        assert!(pixels > 0.0 && pixels < 0.1, "{pixels}");
        // Passes are drawn at most at the model's pixel budget: an upscaled picture's pass
        // costs that budget, at the upscale's strength.
        let up = with_plan(serde_json::json!([{"op": "upscale", "factor": 2}]));
        assert!((up - 2.5).abs() < 1e-9, "{up}");
    }
}
