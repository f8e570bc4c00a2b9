//! `nanoimg edit IN "instruction" -o OUT`: plain language → a validated `EditPlan` (the built-in
//! planner, or `--plan FILE`) → pixel operations here and generative ones on the model. The
//! instruction and every prompt in the plan are moderated, the input is checked by the image
//! layer, and the output is checked, watermarked and signed (the input is its C2PA parent).

use crate::catalog::ModelArgs;
use crate::images;
use crate::safety::SafetyArgs;
use anyhow::{bail, Context, Result};
use image::{GrayImage, RgbImage};
use nanoimg_core::{ImageSize, Limits};
use nanoimg_edit::exec::{self, Painter};
use nanoimg_edit::planner::{self, PlanOptions, Planned};
use nanoimg_edit::{EditPlan, Op, PlanLimits};
use nanoimg_engine::codec::{self, OutputFormat};
use nanoimg_engine::{CancelToken, GenerateRequest, InitImage, ModelInfo, StableDiffusion};
use nanoimg_safety::provenance::{media_type_of, Origin};
use nanoimg_safety::seal::{Encoding, OutputRecord};
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
    /// The model for generative operations.
    #[command(flatten)]
    pub model: ModelArgs,
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

/// Whether the model follows edit instructions (FLUX.1 Kontext), read from its configs.
fn follows_instructions(a: &Args) -> bool {
    a.model
        .path()
        .ok()
        .and_then(|p| ModelInfo::inspect(&p).ok())
        .is_some_and(|i| i.kontext)
}

/// The plan to run: from `--plan`, or the planner (generative changes in the user's words for a
/// model that follows instructions).
fn plan_for(a: &Args, size: (u32, u32), instruct: bool) -> Result<EditPlan> {
    let plan = match (&a.plan, &a.instruction) {
        (Some(file), _) => {
            let text =
                std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
            EditPlan::from_json(&text).with_context(|| file.display().to_string())?
        }
        (None, Some(text)) => match planner::plan_with(text, size, PlanOptions { instruct })? {
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
    texts.extend(plan.prompts());
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
struct ModelPainter<'a> {
    args: &'a Args,
    model: Option<StableDiffusion>,
    /// The model follows edit instructions.
    instruct: bool,
}

impl ModelPainter<'_> {
    fn model(&mut self) -> Result<&StableDiffusion> {
        if self.model.is_none() {
            let path = self.args.model.path()?;
            let model = StableDiffusion::load(
                &path,
                &self
                    .args
                    .model
                    .load_options(nanoimg_engine::default_device(), candle_core::DType::F32),
            )?;
            crate::catalog::ModelArgs::loaded(&model);
            self.model = Some(model);
        }
        Ok(self.model.as_ref().expect("loaded"))
    }
}

impl Painter for ModelPainter<'_> {
    type Error = anyhow::Error;

    fn drawable(&self, w: u32, h: u32) -> (u32, u32) {
        let l = Limits::default();
        l.fit(w, h)
    }

    fn follows_instructions(&self) -> bool {
        self.instruct
    }

    fn paint(
        &mut self,
        img: &RgbImage,
        prompt: &str,
        strength: f64,
        mask: Option<&GrayImage>,
    ) -> Result<RgbImage> {
        let (steps, seed) = (self.args.steps, self.args.seed.unwrap_or_else(rand::random));
        let model = self.model()?;
        let defaults = GenerateRequest::new(model, prompt);
        let req = GenerateRequest {
            size: ImageSize::new(img.width(), img.height()),
            steps: steps.unwrap_or(defaults.steps),
            seed,
            init: Some(InitImage {
                image: img.clone(),
                strength,
                mask: mask.cloned(),
            }),
            ..defaults
        };
        let limits = Limits::default();
        model.validate(&req, &limits)?;
        let out = model.generate(
            &req,
            &limits,
            &nanoimg_engine::pipeline::NoProgress,
            &CancelToken::new(),
        )?;
        Ok(out
            .into_iter()
            .next()
            .context("the model returned no image")?
            .image)
    }
}

pub fn run(a: Args) -> Result<()> {
    let limits = codec::DecodeLimits::default();
    let bytes = images::read_limited(&a.input, &limits)?;
    let mut img = codec::decode(&bytes, &limits, "image")
        .map_err(|e| anyhow::anyhow!("{}: {}", a.input.display(), e.message))?
        .to_rgb8();
    let instruct = follows_instructions(&a);
    let plan = plan_for(&a, img.dimensions(), instruct)?;
    let safety = a.safety.load()?;
    moderate(&safety, &a, &plan)?;
    if a.dry_run {
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(());
    }
    crate::generate::check_image(&safety, &img, &format!("{}", a.input.display()))?;
    // The input's own mark goes before editing, so the result carries one mark, its own.
    let replaced = safety.watermark.unmark(&mut img);
    let mut painter = ModelPainter {
        args: &a,
        model: None,
        instruct,
    };
    let mut current = (0, "");
    img = exec::run(&plan, img, None, &mut painter, |i, op| {
        current = (i + 1, op.name())
    })
    .with_context(|| format!("operation {} ({})", current.0, current.1))?;
    crate::generate::check_image(&safety, &img, "the edited image").context("nothing was written")?;
    // The C2PA parent: the input file as given when C2PA reads its format (so its own manifest
    // is kept), else the decoded input as PNG.
    let parent = if media_type_of(&bytes).is_some() {
        bytes
    } else {
        let decoded = codec::decode(&bytes, &limits, "image").map_err(|e| anyhow::anyhow!(e.message))?;
        codec::encode(&decoded.to_rgb8(), OutputFormat::Png, None, &[])?
    };
    let drawn = painter
        .model
        .as_ref()
        .filter(|_| plan.ops.iter().any(Op::is_generative));
    let record = OutputRecord {
        model: drawn.map_or_else(|| "none (pixel operations)".to_owned(), |m| m.info().name.clone()),
        prompt: a.instruction.clone().unwrap_or_else(|| "(plan)".to_owned()),
        steps: drawn.map(|m| a.steps.unwrap_or(m.defaults().steps)),
        seed: drawn.and(a.seed),
        ..OutputRecord::default()
    }
    .with("instruction", a.instruction.clone())
    .with("plan", serde_json::to_value(&plan)?)
    .with("mode", "edit");
    let origin = Origin::Edited {
        input: &parent,
        input_media_type: media_type_of(&parent).unwrap_or("image/png"),
    };
    let sealed = safety
        .sealer()
        .seal(&mut img, &record, Encoding::default(), replaced, origin)
        .context("sealing the output")?;
    let mark = sealed.mark;
    let signed = sealed.bytes;
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
