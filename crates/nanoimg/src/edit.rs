//! `nanoimg edit IN "instruction" -o OUT`: plain language → a validated `EditPlan` (the built-in
//! planner, or `--plan FILE`) → pixel operations here and generative ones on the model. The
//! instruction and every prompt in the plan are moderated, the input is checked by the image
//! layer, and the output is checked, watermarked and signed (the input is its C2PA parent).

use crate::catalog::{pick_model, registry};
use crate::images;
use crate::safety::SafetyArgs;
use anyhow::{bail, Context, Result};
use image::{GrayImage, Luma, RgbImage};
use nanoimg_core::{ImageSize, Limits};
use nanoimg_edit::planner::{self, Planned};
use nanoimg_edit::{ops, EditPlan, Op, PlanLimits};
use nanoimg_engine::codec::{self, OutputFormat};
use nanoimg_engine::{
    outpaint_canvas, CancelToken, GenerateRequest, InitImage, LoadOptions, StableDiffusion,
};
use nanoimg_safety::provenance::{media_type_of, Origin};
use nanoimg_safety::{Safety, Strictness};
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// The image to edit (PNG, JPEG or WebP).
    pub input: PathBuf,
    /// What to change, in plain language: "crop to a square and make it brighter".
    pub instruction: Option<String>,
    /// Where to write the result (PNG).
    #[arg(short, long, required_unless_present = "dry_run")]
    pub output: Option<PathBuf>,
    /// Run this JSON plan instead of planning an instruction.
    #[arg(long, conflicts_with = "instruction")]
    pub plan: Option<PathBuf>,
    /// Print the plan and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Model for generative operations (as for `generate`).
    #[arg(long, env = "NANOIMG_MODEL")]
    pub model: Option<String>,
    #[arg(long)]
    pub models_dir: Option<String>,
    /// Denoising steps for generative operations (model default if omitted).
    #[arg(long)]
    pub steps: Option<u32>,
    /// Seed for generative operations (random if omitted).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Prompt moderation strictness: `auto` (default) or `low`.
    #[arg(long, default_value = "auto")]
    pub moderation: Strictness,
    /// Print a JSON summary (with the plan) on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub safety: SafetyArgs,
}

/// The plan to run: from `--plan`, or the planner.
fn plan_for(a: &Args, size: (u32, u32)) -> Result<EditPlan> {
    let plan = match (&a.plan, &a.instruction) {
        (Some(file), _) => {
            let text =
                std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
            EditPlan::from_json(&text).with_context(|| file.display().to_string())?
        }
        (None, Some(text)) => match planner::plan(text, size)? {
            Planned::Edit(p) => p,
            Planned::Undo | Planned::Redo => bail!(
                "\"{text}\" needs an edit session's history; `nanoimg edit` changes one file (keep the \
                 input to go back)"
            ),
        },
        (None, None) => bail!("say what to change (an instruction) or give --plan FILE"),
    };
    plan.validate(size, &PlanLimits::default())?;
    Ok(plan)
}

/// Refuses the instruction or any prompt in the plan that moderation blocks.
fn moderate(safety: &Safety, a: &Args, plan: &EditPlan) -> Result<()> {
    let mut texts: Vec<&str> = a.instruction.iter().map(String::as_str).collect();
    for op in &plan.ops {
        if let Op::Restyle { prompt, .. } | Op::Inpaint { prompt, .. } | Op::Outpaint { prompt, .. } = op {
            texts.push(prompt);
        }
    }
    let v = safety.prompt.check(&texts, a.moderation)?;
    if v.blocked {
        let cats: Vec<&str> = v.categories().into_iter().map(|c| c.as_str()).collect();
        bail!(
            "the instruction was refused by NanoImg's safety system ({}); change it and try again",
            cats.join(", ")
        );
    }
    Ok(())
}

/// The model, loaded on the first generative operation.
struct Engine<'a> {
    args: &'a Args,
    model: Option<StableDiffusion>,
}

impl Engine<'_> {
    fn model(&mut self) -> Result<&StableDiffusion> {
        if self.model.is_none() {
            let reg = registry(self.args.models_dir.as_deref());
            let path = pick_model(&reg, self.args.model.as_deref())?;
            self.model = Some(StableDiffusion::load(
                &path,
                &LoadOptions {
                    device: nanoimg_engine::default_device(),
                    dtype: candle_core::DType::F32,
                },
            )?);
        }
        Ok(self.model.as_ref().expect("loaded"))
    }

    /// img2img / inpaint on the model, at a size it can draw (a multiple of 8), brought back to
    /// the picture's own size.
    fn draw(
        &mut self,
        img: &RgbImage,
        prompt: &str,
        strength: f64,
        mask: Option<GrayImage>,
    ) -> Result<RgbImage> {
        let (w, h) = img.dimensions();
        let (ew, eh) = ((w / 8 * 8).max(8), (h / 8 * 8).max(8));
        let fit = |i: &RgbImage| -> Result<RgbImage> {
            Ok(ops::apply(
                i,
                &Op::Resize {
                    width: ew,
                    height: eh,
                },
            )?)
        };
        let mask = mask.map(|m| image::imageops::resize(&m, ew, eh, image::imageops::FilterType::Nearest));
        let (steps, seed) = (self.args.steps, self.args.seed.unwrap_or_else(rand::random));
        let model = self.model()?;
        let d = model.defaults().clone();
        let req = GenerateRequest {
            prompt: prompt.to_owned(),
            negative_prompt: String::new(),
            size: ImageSize::new(ew, eh),
            steps: steps.unwrap_or(d.steps),
            guidance: d.guidance,
            scheduler: d.scheduler,
            seed,
            n: 1,
            init: Some(InitImage {
                image: fit(img)?,
                strength,
                mask,
            }),
            hooks: None,
        };
        let limits = Limits::default();
        model.validate(&req, &limits)?;
        let out = model.generate(
            &req,
            &limits,
            &nanoimg_engine::pipeline::NoProgress,
            &CancelToken::new(),
        )?;
        let out = out
            .into_iter()
            .next()
            .context("the model returned no image")?
            .image;
        Ok(ops::apply(&out, &Op::Resize { width: w, height: h })?)
    }

    /// One generative operation.
    fn run(&mut self, img: &RgbImage, op: &Op) -> Result<RgbImage> {
        let (w, h) = img.dimensions();
        match op {
            Op::Restyle { prompt, strength } => self.draw(img, prompt, f64::from(*strength), None),
            Op::Variation { strength } => self.draw(img, "", f64::from(*strength), None),
            Op::Inpaint { area, prompt } => {
                let (x, y, aw, ah) = ops::area_rect(area, w, h);
                let mask = GrayImage::from_fn(w, h, |px, py| {
                    let inside = px >= x && px < x + aw && py >= y && py < y + ah;
                    Luma([if inside { 255 } else { 0 }])
                });
                self.draw(img, prompt, 1.0, Some(mask))
            }
            Op::Outpaint {
                left,
                top,
                right,
                bottom,
                prompt,
            } => {
                let (canvas, mask) = outpaint_canvas(img, *left, *top, *right, *bottom);
                self.draw(&canvas, prompt, 1.0, Some(mask))
            }
            Op::Upscale { factor } => {
                // Lanczos to the new size, then a light pass of the model to redraw detail.
                let big = ops::apply(
                    img,
                    &Op::Scale {
                        factor: *factor as f32,
                    },
                )?;
                self.draw(&big, "high detail, sharp focus", 0.25, None)
            }
            op => Ok(ops::apply(img, op)?),
        }
    }
}

pub fn run(a: Args) -> Result<()> {
    let limits = codec::DecodeLimits::default();
    let bytes = images::read_limited(&a.input, &limits)?;
    let mut img = codec::decode(&bytes, &limits, "image")
        .map_err(|e| anyhow::anyhow!("{}: {}", a.input.display(), e.message))?
        .to_rgb8();
    let plan = plan_for(&a, img.dimensions())?;
    let safety = a.safety.load()?;
    moderate(&safety, &a, &plan)?;
    if a.dry_run {
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(());
    }
    crate::generate::check_image(&safety, &img, &format!("{}", a.input.display()))?;
    // The input's own mark goes before editing, so the result carries one mark, its own.
    let replaced = safety.watermark.unmark(&mut img);
    let mut engine = Engine {
        args: &a,
        model: None,
    };
    for (i, op) in plan.ops.iter().enumerate() {
        img = engine
            .run(&img, op)
            .with_context(|| format!("operation {} ({})", i + 1, op.name()))?;
    }
    crate::generate::check_image(&safety, &img, "the edited image").context("nothing was written")?;
    let mark = rand::random::<u64>();
    safety.watermark.embed(&mut img, mark);
    let meta = json!({
        "instruction": a.instruction, "plan": plan, "watermark": format!("{mark:016x}"),
        "replaced_watermark": replaced.map(|m| format!("{m:016x}")),
        "software": format!("nanoimg {}", env!("CARGO_PKG_VERSION")),
    });
    let png = codec::encode(&img, OutputFormat::Png, None, &[("nanoimg", meta.to_string())])?;
    // The C2PA parent: the input file as given when C2PA reads its format (so its own manifest
    // is kept), else the decoded input as PNG.
    let parent = if media_type_of(&bytes).is_some() {
        bytes
    } else {
        let decoded = codec::decode(&bytes, &limits, "image").map_err(|e| anyhow::anyhow!(e.message))?;
        codec::encode(&decoded.to_rgb8(), OutputFormat::Png, None, &[])?
    };
    let model_name = if plan.ops.iter().any(Op::is_generative) {
        engine
            .model
            .as_ref()
            .map(|m| m.info().name.clone())
            .unwrap_or_default()
    } else {
        "none (pixel operations)".to_string()
    };
    let signed = safety
        .provenance
        .sign(
            &png,
            "image/png",
            Origin::Edited {
                input: &parent,
                input_media_type: media_type_of(&parent).unwrap_or("image/png"),
            },
            &model_name,
        )
        .context("C2PA signing")?;
    let out = a.output.as_deref().unwrap_or(Path::new("out.png"));
    images::write_atomic(out, &signed)?;
    if a.json {
        println!(
            "{}",
            json!({"path": out, "width": img.width(), "height": img.height(), "plan": plan,
                   "watermark": format!("{mark:016x}")})
        );
    } else {
        let names: Vec<&str> = plan.ops.iter().map(Op::name).collect();
        println!(
            "wrote {} ({}×{}): {}",
            out.display(),
            img.width(),
            img.height(),
            names.join(", ")
        );
    }
    Ok(())
}
