//! `nanoimg generate`: one command for txt2img, img2img, inpainting and outpainting.

use crate::catalog::ModelArgs;
use crate::images;
use crate::safety::SafetyArgs;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use nanoimg_core::{ImageSize, Limits, SchedulerName};
use nanoimg_engine::codec::{self, OutputFormat};
use nanoimg_engine::library::Entry;
use nanoimg_engine::lora::prompt::LoraUse;
use nanoimg_engine::pipeline::Progress;
use nanoimg_engine::{
    parse_dtype, CancelToken, GenerateRequest, InitImage, ProgressSink, Refiner, StableDiffusion,
};
use nanoimg_safety::provenance::{media_type_of, Origin};
use nanoimg_safety::seal::{Encoding, OutputRecord};
use nanoimg_safety::{Safety, Strictness};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// What to draw.
    pub prompt: String,
    /// Output PNG; with -n > 1, `out.png` becomes `out-1.png`, `out-2.png`, …
    #[arg(short, long, default_value = "out.png")]
    pub output: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
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
    /// Classifier-free guidance scale (0 for Turbo models; for FLUX dev and Kontext the
    /// distilled guidance the transformer embeds, 3.5 and 2.5 by default).
    #[arg(long)]
    pub guidance: Option<f64>,
    /// Sampler: euler, euler_a, ddim, dpm++2m_karras, lcm (LCM models and LCM-LoRAs), tcd
    /// (TCD and Hyper-SD LoRAs).
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
    /// A LoRA to merge in, by name in the LoRA library or by path, at a weight (default 1);
    /// repeatable. `<lora:name:weight>` in the prompt does the same.
    #[arg(long = "lora", value_name = "NAME_OR_FILE[:WEIGHT]")]
    pub loras: Vec<String>,
    /// The LoRA library (colon-separated folders). Default: $NANOIMG_LORAS, else `loras/` in
    /// each models directory.
    #[arg(long)]
    pub lora_dir: Option<String>,
    /// Textual-inversion embeddings, used by name in the prompt (colon-separated folders).
    /// Default: $NANOIMG_EMBEDDINGS, else `embeddings/` in each models directory.
    #[arg(long)]
    pub embedding_dir: Option<String>,
    /// A second model that draws the last steps, as SDXL's refiner after its base: a model
    /// name, path or hub id, as for --model.
    #[arg(long, value_name = "MODEL")]
    pub refiner: Option<String>,
    /// The fraction of the noise schedule the first model draws before the refiner takes over
    /// (0–1; A1111's "Refiner switch at", diffusers' denoising_end).
    #[arg(long, value_name = "F", default_value_t = nanoimg_engine::pipeline::DEFAULT_SWITCH_AT, requires = "refiner")]
    pub refiner_switch_at: f64,
    /// Print a JSON summary on stdout instead of text.
    #[arg(long)]
    pub json: bool,
    /// Prompt moderation strictness: `auto` (default) or `low`. Sexual content involving minors
    /// is refused at every level, and outputs are always checked, marked and signed.
    #[arg(long, default_value = "auto")]
    pub moderation: Strictness,
    #[command(flatten)]
    pub safety: SafetyArgs,
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

/// The LoRAs a run asks for (the prompt's tags, then `--lora`), found, and the prompt the text
/// encoder sees (the tags taken out).
fn loras(a: &Args) -> Result<(String, Vec<(Entry, f64)>)> {
    let (text, mut uses) = nanoimg_engine::lora::prompt::extract(&a.prompt)?;
    if a.negative.to_ascii_lowercase().contains("<lora:") {
        bail!("--negative: LoRA tags belong in the prompt");
    }
    for l in &a.loras {
        uses.push(l.parse().with_context(|| format!("--lora {l}"))?);
    }
    let library = crate::catalog::lora_library(a.model.models_dir.as_deref(), a.lora_dir.as_deref());
    let found = uses
        .into_iter()
        .map(|u| Ok((library.resolve(&u.name)?, u.weight)))
        .collect::<Result<Vec<_>>>()?;
    Ok((text, found))
}

/// Refuses the prompt and negative prompt if moderation blocks them: the prompt as the text
/// encoder sees it, and the trigger words of the LoRAs it runs with.
fn check_prompt(safety: &Safety, a: &Args, text: &str, loras: &[(Entry, f64)]) -> Result<()> {
    let triggers: Vec<String> = loras.iter().flat_map(|(e, _)| e.trigger_words()).collect();
    let triggers = triggers.join(", ");
    let mut positive = vec![text];
    if !triggers.is_empty() {
        positive.push(&triggers);
    }
    let v = safety
        .prompt
        .check_request(&positive, &[&a.negative], a.moderation)?;
    if v.blocked {
        let cats: Vec<&str> = v.categories().into_iter().map(|c| c.as_str()).collect();
        bail!(
            "the prompt was refused by NanoImg's safety system ({}); change it and try again",
            cats.join(", ")
        );
    }
    Ok(())
}

/// Refuses an image the image layer blocks (when its model is installed).
pub(crate) fn check_image(safety: &Safety, img: &image::RgbImage, what: &str) -> Result<()> {
    let Some(c) = &safety.image else { return Ok(()) };
    let v = c.check(&image::DynamicImage::ImageRgb8(img.clone()))?;
    if v.blocked {
        bail!(
            "{what} was refused by NanoImg's safety system (sexual: image layer score {:.2}, threshold {:.2})",
            v.score,
            v.threshold
        );
    }
    Ok(())
}

pub fn run(a: Args) -> Result<()> {
    let started = Instant::now();
    let model_path = a.model.path()?;
    let dtype = parse_dtype(&a.dtype)?;
    let limits = Limits::default();

    // The safety layers and every input check come before the (slow) model load, so a refused
    // or bad request fails fast.
    let (text, loras) = loras(&a)?;
    let safety = a.safety.load()?;
    check_prompt(&safety, &a, &text, &loras)?;
    let mut input_file = None;
    let mut replaced_mark = None;
    let init = match &a.init_image {
        Some(p) => {
            let (bytes, mut image) = images::read_rgb_with_bytes(p)?;
            check_image(&safety, &image, &format!("--init-image {}", p.display()))?;
            input_file = Some(bytes);
            // A marked input (an earlier output) loses its mark first, so the result carries
            // one mark, its own.
            replaced_mark = safety.watermark.unmark(&mut image);
            let (image, mask, strength) = match (&a.mask, &a.outpaint) {
                (Some(m), _) => (image, Some(images::read_mask(m)?), a.strength),
                (None, Some(spec)) => {
                    let [l, t, r, b] = parse_outpaint(spec)?;
                    let (canvas, mask) = nanoimg_edit::ops::outpaint_canvas(&image, l, t, r, b);
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

    let mut model = StableDiffusion::load(
        &model_path,
        &a.model.load_options(nanoimg_engine::default_device(), dtype),
    )?;
    crate::catalog::ModelArgs::loaded(&model);
    model = a.model.with_tiny_vae(model)?;
    let embeddings =
        crate::catalog::embedding_library(a.model.models_dir.as_deref(), a.embedding_dir.as_deref());
    let (with_words, left_out) = model.with_embedding_library(&embeddings)?;
    model = with_words;
    for (name, why) in left_out {
        eprintln!("warning: embedding {name} left out: {why}");
    }
    let refiner = match &a.refiner {
        Some(name) => {
            let path = crate::catalog::pick_model(
                &crate::catalog::registry(a.model.models_dir.as_deref()),
                Some(name),
            )?;
            let opts = nanoimg_engine::LoadOptions {
                device: nanoimg_engine::default_device(),
                dtype,
                ..Default::default()
            };
            let loaded = StableDiffusion::load(&path, &opts).with_context(|| format!("--refiner {name}"))?;
            let (loaded, _) = loaded.with_embedding_library(&embeddings)?;
            Some(Refiner {
                model: Arc::new(loaded),
                switch_at: a.refiner_switch_at,
            })
        }
        None => None,
    };
    if !loras.is_empty() {
        let parsed = loras
            .iter()
            .map(|(e, _)| e.load_lora())
            .collect::<Result<Vec<_>, _>>()?;
        let pairs: Vec<_> = parsed.iter().zip(&loras).map(|(l, (_, w))| (l, *w)).collect();
        model = model.with_loras(&pairs).context("merging the LoRAs")?;
    }
    // The model's defaults, then what the flags set.
    let defaults = GenerateRequest::new(&model, text);
    let size = match (a.size, &init) {
        (Some(s), _) => s,
        // img2img keeps the init image's size, rounded down to a multiple of 8.
        (None, Some(i)) => ImageSize::new(i.image.width() / 8 * 8, i.image.height() / 8 * 8),
        (None, None) => defaults.size,
    };
    let seed = a.seed.unwrap_or_else(|| u64::from(rand::random::<u32>()));
    let req = GenerateRequest {
        negative_prompt: a.negative.clone(),
        size,
        steps: a.steps.unwrap_or(defaults.steps),
        guidance: a.guidance.unwrap_or(defaults.guidance),
        scheduler: a.scheduler.unwrap_or(defaults.scheduler),
        seed,
        n: a.n,
        init,
        refiner,
        vae: a.model.vae_choice(),
        ..defaults
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
    let mut images = model.generate(&req, &limits, &Bar(bar.clone()), &CancelToken::new())?;
    bar.finish_and_clear();
    for (i, g) in images.iter().enumerate() {
        check_image(&safety, &g.image, &format!("generated image {}", i + 1))
            .context("nothing was written")?;
    }
    // The C2PA parent of an edit: the input file as given when it is a format C2PA reads (so
    // its own manifest, if any, is kept), else the decoded input as PNG.
    let parent = match (&input_file, &req.init) {
        (Some(bytes), _) if media_type_of(bytes).is_some() => Some(bytes.clone()),
        (_, Some(init)) => Some(codec::encode(&init.image, OutputFormat::Png, None, &[])?),
        _ => None,
    };
    let origin = match &parent {
        Some(p) => Origin::Edited {
            input: p,
            input_media_type: media_type_of(p).unwrap_or("image/png"),
        },
        None => Origin::Created,
    };

    let info = model.info();
    // What the UNet ran on (the model's setting or `--quantize`), recorded with each image.
    let quantize = model.quantization();
    let sealer = safety.sealer();
    let mode = match (&req.init, req.init.as_ref().and_then(|i| i.mask.as_ref())) {
        (None, _) => "txt2img",
        (Some(_), None) => "img2img",
        (Some(_), Some(_)) if a.outpaint.is_some() => "outpaint",
        _ => "inpaint",
    };
    let mut written = Vec::new();
    let count = images.len();
    for (i, g) in images.iter_mut().enumerate() {
        let path = numbered(&a.output, i, count);
        let record = OutputRecord {
            model: info.name.clone(),
            // As written, tags and all, with --lora flags as tags: how A1111 writes it back.
            prompt: std::iter::once(a.prompt.clone())
                .chain(
                    a.loras
                        .iter()
                        .filter_map(|l| l.parse::<LoraUse>().ok())
                        .map(|u| u.tag()),
                )
                .collect::<Vec<_>>()
                .join(" "),
            negative_prompt: req.negative_prompt.clone(),
            steps: Some(req.steps),
            guidance: Some(req.guidance),
            scheduler: Some(req.scheduler.to_string()),
            seed: Some(g.seed),
            extra: Default::default(),
        }
        .with("family", json!(info.family))
        .with("dtype", a.dtype.clone())
        .with("quantize", quantize.to_string())
        .with("strength", json!(req.init.as_ref().map(|i| i.strength)))
        .with("mode", mode)
        .with("index", i)
        .with("vae", model.vae_used(req.vae).to_string())
        .with(
            "refiner",
            json!(req
                .refiner
                .as_ref()
                .map(|r| json!({"model": r.model.info().name, "switch_at": r.switch_at}))),
        )
        .with(
            "loras",
            json!(loras
                .iter()
                .map(|(e, w)| json!({"name": e.name, "weight": w}))
                .collect::<Vec<_>>()),
        );
        let sealed = sealer
            .seal(&mut g.image, &record, Encoding::default(), replaced_mark, origin)
            .context("sealing the output")?;
        images::write_atomic(&path, &sealed.bytes)?;
        written.push(json!({
            "path": path, "seed": g.seed, "width": g.image.width(), "height": g.image.height(),
            "watermark": format!("{:016x}", sealed.mark),
        }));
    }
    let seconds = started.elapsed().as_secs_f64();
    if a.json {
        let summary = json!({
            "images": written, "model": info.name, "model_path": info.path, "steps": req.steps,
            "guidance": req.guidance, "scheduler": req.scheduler, "size": req.size.to_string(),
            "quantize": quantize, "seconds": (seconds * 1000.0).round() / 1000.0,
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
