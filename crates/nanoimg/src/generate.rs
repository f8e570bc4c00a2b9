//! `nanoimg generate`: one command for txt2img, img2img, inpainting and outpainting.

use crate::catalog::{pick_model, registry};
use crate::images;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use nanoimg_core::{ImageSize, Limits, SchedulerName};
use nanoimg_engine::pipeline::Progress;
use nanoimg_engine::{
    outpaint_canvas, parse_dtype, CancelToken, GenerateRequest, InitImage, LoadOptions, ProgressSink,
    StableDiffusion,
};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// What to draw.
    pub prompt: String,
    /// Output PNG; with -n > 1, `out.png` becomes `out-1.png`, `out-2.png`, …
    #[arg(short, long, default_value = "out.png")]
    pub output: PathBuf,
    /// Model folder name (in the models directories) or path. Default: the bundled nanoimg-emoji.
    #[arg(long, env = "NANOIMG_MODEL")]
    pub model: Option<String>,
    /// Directory of model folders (colon-separated list). Default: $NANOIMG_MODELS, else ./models.
    #[arg(long)]
    pub models_dir: Option<String>,
    /// Denoising steps (model default if omitted).
    #[arg(long)]
    pub steps: Option<u32>,
    /// Seed; image i uses seed + i. Random (and printed) if omitted.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Output size WIDTHxHEIGHT (model default, or the init image's size).
    #[arg(long)]
    pub size: Option<ImageSize>,
    /// What to steer away from.
    #[arg(long, default_value = "")]
    pub negative: String,
    /// Classifier-free guidance scale (0 for Turbo models).
    #[arg(long)]
    pub guidance: Option<f64>,
    /// Sampler: euler, euler_a, ddim, dpm++2m_karras.
    #[arg(long)]
    pub scheduler: Option<SchedulerName>,
    /// Number of images.
    #[arg(short = 'n', long, default_value_t = 1)]
    pub n: u32,
    /// Start from this image (img2img).
    #[arg(long)]
    pub init_image: Option<PathBuf>,
    /// How much to change the init image, (0, 1].
    #[arg(long, default_value_t = 0.75)]
    pub strength: f64,
    /// Repaint only the white (or transparent) part of this mask (inpainting).
    #[arg(long, requires = "init_image")]
    pub mask: Option<PathBuf>,
    /// Extend the init image by LEFT,TOP,RIGHT,BOTTOM pixels and fill the new area (outpainting).
    #[arg(long, requires = "init_image", conflicts_with = "mask")]
    pub outpaint: Option<String>,
    /// Precision: f32, f16 (bf16 on GPUs).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Print a JSON summary on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Shows a progress bar on stderr (hidden when stderr is not a terminal).
struct Bar(ProgressBar);

impl ProgressSink for Bar {
    fn on_step(&self, p: &Progress<'_>) {
        self.0.set_length((p.steps * p.images) as u64);
        self.0.set_position((p.image * p.steps + p.step) as u64);
        self.0.set_message(format!("image {}/{}", p.image + 1, p.images));
    }
}

fn parse_outpaint(s: &str) -> Result<[u32; 4]> {
    let parts: Vec<u32> = s
        .split(',')
        .map(|p| p.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--outpaint {s:?}: expected LEFT,TOP,RIGHT,BOTTOM pixel counts"))?;
    match parts.as_slice() {
        [l, t, r, b] if l + t + r + b > 0 && [l, t, r, b].iter().all(|v| **v <= 4096) => Ok([*l, *t, *r, *b]),
        _ => bail!("--outpaint {s:?}: expected four numbers 0..=4096, not all zero, like 64,0,64,0"),
    }
}

/// `out.png` → `out-2.png` for the second of several images.
fn numbered(path: &Path, i: usize, n: usize) -> PathBuf {
    if n == 1 {
        return path.to_owned();
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let ext = path
        .extension()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "png".into());
    path.with_file_name(format!("{stem}-{}.{ext}", i + 1))
}

pub fn run(a: Args) -> Result<()> {
    let started = Instant::now();
    let reg = registry(a.models_dir.as_deref());
    let model_path = pick_model(&reg, a.model.as_deref())?;
    let dtype = parse_dtype(&a.dtype)?;
    let limits = Limits::default();

    // Read inputs before the (slow) model load, so bad input fails fast.
    let init = match &a.init_image {
        Some(p) => {
            let image = images::read_rgb(p)?;
            let (image, mask, strength) = match (&a.mask, &a.outpaint) {
                (Some(m), _) => (image, Some(images::read_mask(m)?), a.strength),
                (None, Some(spec)) => {
                    let [l, t, r, b] = parse_outpaint(spec)?;
                    let (canvas, mask) = outpaint_canvas(&image, l, t, r, b);
                    (canvas, Some(mask), 1.0)
                }
                (None, None) => (image, None, a.strength),
            };
            Some(InitImage {
                image,
                strength,
                mask,
            })
        }
        None => None,
    };

    let model = StableDiffusion::load(
        &model_path,
        &LoadOptions {
            device: nanoimg_engine::default_device(),
            dtype,
        },
    )?;
    let d = model.defaults().clone();
    let size = match (a.size, &init) {
        (Some(s), _) => s,
        // img2img keeps the init image's size, rounded down to a multiple of 8.
        (None, Some(i)) => ImageSize::new(i.image.width() / 8 * 8, i.image.height() / 8 * 8),
        (None, None) => d.size,
    };
    let seed = a.seed.unwrap_or_else(|| u64::from(rand::random::<u32>()));
    let req = GenerateRequest {
        prompt: a.prompt.clone(),
        negative_prompt: a.negative.clone(),
        size,
        steps: a.steps.unwrap_or(d.steps),
        guidance: a.guidance.unwrap_or(d.guidance),
        scheduler: a.scheduler.unwrap_or(d.scheduler),
        seed,
        n: a.n,
        init,
        hooks: None,
    };
    model.validate(&req, &limits)?;
    for (what, text) in [("prompt", &req.prompt), ("negative prompt", &req.negative_prompt)] {
        if let Some(tokens) = model.prompt_truncated(text) {
            eprintln!(
                "warning: the {what} is longer than the model's {tokens}-token context; its end is ignored"
            );
        }
    }

    let bar = ProgressBar::new((req.steps * req.n) as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} steps {elapsed}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    if a.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let images = model.generate(&req, &limits, &Bar(bar.clone()), &CancelToken::new())?;
    bar.finish_and_clear();

    let info = model.info();
    let mut written = Vec::new();
    for (i, g) in images.iter().enumerate() {
        let path = numbered(&a.output, i, images.len());
        let meta = json!({
            "prompt": req.prompt, "negative_prompt": req.negative_prompt,
            "steps": req.steps, "guidance": req.guidance, "scheduler": req.scheduler,
            "seed": g.seed, "size": req.size.to_string(), "model": info.name,
            "family": info.family, "dtype": a.dtype,
            "strength": req.init.as_ref().map(|i| i.strength),
            "mode": match (&req.init, req.init.as_ref().and_then(|i| i.mask.as_ref())) {
                (None, _) => "txt2img", (Some(_), None) => "img2img",
                (Some(_), Some(_)) if a.outpaint.is_some() => "outpaint", _ => "inpaint",
            },
            "software": format!("nanoimg {}", env!("CARGO_PKG_VERSION")),
        });
        // The "parameters" chunk in the common A1111 layout, readable by other tools.
        let mut params = req.prompt.clone();
        if !req.negative_prompt.is_empty() {
            params.push_str(&format!("\nNegative prompt: {}", req.negative_prompt));
        }
        params.push_str(&format!(
            "\nSteps: {}, Sampler: {}, CFG scale: {}, Seed: {}, Size: {}, Model: {}",
            req.steps, req.scheduler, req.guidance, g.seed, req.size, info.name
        ));
        images::write_png(
            &path,
            &g.image,
            &[("parameters", params), ("nanoimg", meta.to_string())],
        )?;
        written.push(
            json!({"path": path, "seed": g.seed, "width": g.image.width(), "height": g.image.height()}),
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    if a.json {
        let summary = json!({
            "images": written, "model": info.name, "model_path": info.path, "steps": req.steps,
            "guidance": req.guidance, "scheduler": req.scheduler, "size": req.size.to_string(),
            "seconds": (seconds * 1000.0).round() / 1000.0,
        });
        println!("{summary}");
    } else {
        for w in &written {
            println!(
                "wrote {} (seed {})",
                w["path"].as_str().unwrap_or_default(),
                w["seed"]
            );
        }
        eprintln!("{} image(s) in {seconds:.1}s", written.len());
    }
    Ok(())
}
