//! `nanoimg character eval`: how consistent a character stays across prompts, with and without
//! reference conditioning, on the local model (no server).
//!
//! For every prompt and seed it generates the image at each `--strength` (0 is no reference, the
//! baseline) and scores:
//! - **identity**: similarity of the output to the references (mean over references);
//! - **prompt retention**: similarity of the output to the same prompt and seed without a
//!   reference — how much of what the prompt alone gives survives the conditioning (1 at
//!   strength 0 by definition; any change lowers it, wanted or not);
//! - **prompt accuracy**: whether the output is still recognisably *its* prompt's: it is
//!   counted right when it is more similar, on average, to the unconditioned images of its own
//!   prompt (other seeds) than to those of any other prompt. A shift toward the reference that
//!   every prompt shares does not lower it; losing what tells the prompts apart does.
//!
//! Similarity is always [`cl_similarity`], a colour-and-layout measure that works in the bundled
//! emoji model's domain (centred subjects on white). Given model folders, identity is also
//! scored with learnt embeddings, the papers' yardsticks: `--dinov2` (DINO score: cosine of
//! DINOv2 class tokens) and `--clip` (CLIP-I between pictures, and CLIP-T, the cosine between a
//! picture and its prompt, for prompt fidelity). See `docs/characters.md`.

use crate::catalog::ModelArgs;
use crate::images;
use crate::safety::SafetyArgs;
use anyhow::{bail, Context, Result};
use image::RgbImage;
use nanoimg_core::Limits;
use nanoimg_engine::embed::{cosine, ClipEmbedder, Dinov2Embedder};
use nanoimg_engine::lora::Lora;
use nanoimg_engine::reference::{BankCache, Reference, ReferenceSettings, DEFAULT_CACHE_BYTES};
use nanoimg_engine::{CancelToken, GenerateRequest, LoadOptions, NoProgress, StableDiffusion};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;

/// Prompts for the bundled emoji model: one face in other expressions.
const DEFAULT_PROMPTS: [&str; 8] = [
    "face with tears of joy",
    "winking face",
    "smiling face with sunglasses",
    "sleeping face",
    "face with open mouth",
    "thinking face",
    "partying face",
    "face blowing a kiss",
];

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Reference images of the character (1–8).
    #[arg(long = "reference", num_args = 1..=8)]
    pub references: Vec<PathBuf>,
    /// Make the reference with the model instead: this prompt at `--reference-seed`.
    #[arg(long, conflicts_with = "references")]
    pub reference_prompt: Option<String>,
    #[arg(long, default_value_t = 1)]
    pub reference_seed: u64,
    /// The character's description (the reference pass's prompt; added to every prompt).
    #[arg(long, default_value = "")]
    pub description: String,
    /// A file of prompts, one per line [default: eight emoji faces].
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Seeds per prompt.
    #[arg(long, default_value_t = 4)]
    pub seeds: u64,
    /// Reference strengths to compare; 0 (no reference) is always included.
    #[arg(long = "strength", default_values_t = [0.5, 0.8, 1.0])]
    pub strengths: Vec<f64>,
    /// Style fidelity of the reference conditioning.
    #[arg(long, default_value_t = ReferenceSettings::default().style_fidelity)]
    pub style_fidelity: f64,
    /// Fraction of self-attention layers (widest first) that attend to the references.
    #[arg(long, default_value_t = ReferenceSettings::default().attention)]
    pub reference_attention: f64,
    /// Fraction of block outputs (widest first) moved to the references' statistics.
    #[arg(long, default_value_t = ReferenceSettings::default().adain)]
    pub reference_adain: f64,
    /// Denoising steps [default: the model's].
    #[arg(long)]
    pub steps: Option<u32>,
    /// A LoRA trained on the character, merged at strength 1 for every run (the baseline too).
    #[arg(long)]
    pub lora: Option<PathBuf>,
    /// A DINOv2 model folder (transformers `Dinov2Model`, safetensors): identity is also scored
    /// as DINO similarity.
    #[arg(long, value_name = "DIR")]
    pub dinov2: Option<PathBuf>,
    /// A CLIP model folder (transformers `CLIPModel`, safetensors, with its tokenizer files):
    /// identity is also scored as CLIP-I, and prompt fidelity as CLIP-T.
    #[arg(long, value_name = "DIR")]
    pub clip: Option<PathBuf>,
    /// Write a contact sheet: a row per prompt (first seed), the reference then each strength.
    #[arg(long)]
    pub grid: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub safety: SafetyArgs,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A 320-number description of an image: a 4×4×4 colour histogram of the subject's pixels (the
/// near-white background left out) and a 16×16 grey thumbnail, centred; each unit-length.
fn describe(img: &RgbImage) -> (Vec<f64>, Vec<f64>) {
    let small = image::imageops::resize(img, 32, 32, image::imageops::FilterType::Triangle);
    let mut hist = vec![0.0; 64];
    for p in small.pixels().filter(|p| p.0.iter().any(|&c| c < 235)) {
        let bin = |c: u8| usize::from(c / 64);
        hist[bin(p.0[0]) * 16 + bin(p.0[1]) * 4 + bin(p.0[2])] += 1.0;
    }
    let grey = image::imageops::resize(
        &image::DynamicImage::ImageRgb8(img.clone()).to_luma8(),
        16,
        16,
        image::imageops::FilterType::Triangle,
    );
    let thumb: Vec<f64> = grey.pixels().map(|p| f64::from(p.0[0])).collect();
    (unit(hist), unit(centred(thumb)))
}

fn centred(mut v: Vec<f64>) -> Vec<f64> {
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    v.iter_mut().for_each(|x| *x -= mean);
    v
}

fn unit(mut v: Vec<f64>) -> Vec<f64> {
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
    v
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Colour-and-layout similarity in [-0.5, 1]: the mean of the cosine of the two subjects' colour
/// histograms (0 for disjoint palettes) and the correlation of their grey thumbnails. 1 for the
/// same picture; it rewards the same palette in the same places, and knows nothing of what the
/// picture shows.
pub fn cl_similarity(a: &RgbImage, b: &RgbImage) -> f64 {
    let ((ha, ta), (hb, tb)) = (describe(a), describe(b));
    0.5 * dot(&ha, &hb) + 0.5 * dot(&ta, &tb)
}

/// One strength's scores over every prompt and seed.
#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    strength: f64,
    identity: f64,
    identity_sd: f64,
    retention: f64,
    /// `None` with a single seed (no other seed of the same prompt to compare with).
    prompt_accuracy: Option<f64>,
    /// Identity as DINO similarity (mean, sd), with `--dinov2`.
    #[serde(skip_serializing_if = "Option::is_none")]
    identity_dino: Option<(f64, f64)>,
    /// Identity as CLIP-I (mean, sd), with `--clip`.
    #[serde(skip_serializing_if = "Option::is_none")]
    identity_clip: Option<(f64, f64)>,
    /// Prompt fidelity as CLIP-T (mean, sd): the picture against its prompt, with `--clip`.
    #[serde(skip_serializing_if = "Option::is_none")]
    clip_t: Option<(f64, f64)>,
    images: usize,
    seconds: f64,
}

/// The learnt measures asked for: each model with the references' embeddings, and CLIP with
/// the prompts' text embeddings.
struct Embedders {
    dino: Option<(Dinov2Embedder, Embeddings)>,
    clip: Option<(ClipEmbedder, Embeddings, Embeddings)>,
}

/// Unit-length embeddings, one per picture or text.
type Embeddings = Vec<Vec<f32>>;

/// One strength's learnt scores, an entry per image.
#[derive(Default)]
struct Learnt {
    dino: Vec<f64>,
    clip_i: Vec<f64>,
    clip_t: Vec<f64>,
}

/// Mean cosine of `e` to each of `refs`.
fn mean_cosine(refs: &[Vec<f32>], e: &[f32]) -> f64 {
    refs.iter().map(|r| cosine(r, e)).sum::<f64>() / refs.len().max(1) as f64
}

impl Learnt {
    fn add(&mut self, m: &Embedders, img: &RgbImage, prompt: usize) -> Result<()> {
        let one = std::slice::from_ref(img);
        if let Some((model, refs)) = &m.dino {
            self.dino.push(mean_cosine(refs, &model.embed(one)?[0]));
        }
        if let Some((model, refs, prompts)) = &m.clip {
            let e = model.embed_images(one)?.remove(0);
            self.clip_i.push(mean_cosine(refs, &e));
            self.clip_t.push(cosine(&prompts[prompt], &e));
        }
        Ok(())
    }
}

fn stat(v: &[f64]) -> Option<(f64, f64)> {
    (!v.is_empty()).then(|| mean_sd(v))
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len().max(1) as f64;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len().max(1) as f64;
    (m, var.sqrt())
}

pub fn run(a: EvalArgs) -> Result<()> {
    let safety = a.safety.load()?;
    let prompts: Vec<String> = match &a.prompts {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read {}", p.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect(),
        None => DEFAULT_PROMPTS.iter().map(|p| (*p).to_owned()).collect(),
    };
    if prompts.is_empty() || a.seeds == 0 {
        bail!("nothing to evaluate: give prompts and at least one seed");
    }
    let mut texts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    texts.push(&a.description);
    texts.extend(a.reference_prompt.as_deref());
    let v = safety.prompt.check(&texts, Default::default())?;
    if v.blocked {
        let cats: Vec<&str> = v.categories().into_iter().map(|c| c.as_str()).collect();
        bail!(
            "a prompt was refused by NanoImg's safety system ({})",
            cats.join(", ")
        );
    }
    let mut strengths = vec![0.0];
    for s in &a.strengths {
        if !(0.0..=1.0).contains(s) {
            bail!("--strength {s}: strengths are 0 to 1");
        }
        if !strengths.contains(s) {
            strengths.push(*s);
        }
    }

    // The measuring models load first, so a wrong folder fails before any generating.
    let device = nanoimg_engine::default_device();
    let dino = a
        .dinov2
        .as_deref()
        .map(|d| Dinov2Embedder::load(d, &device))
        .transpose()
        .context("--dinov2")?;
    let clip = a
        .clip
        .as_deref()
        .map(|d| ClipEmbedder::load(d, &device))
        .transpose()
        .context("--clip")?;
    let base = StableDiffusion::load(
        &a.model.path()?,
        &LoadOptions {
            device,
            ..Default::default()
        },
    )?;
    let model = match &a.lora {
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            base.with_loras(&[(&Lora::from_safetensors(&bytes)?, 1.0)])?
        }
        None => base,
    };
    let limits = Limits::default();
    let d = model.defaults().clone();
    let request = |prompt: &str, seed: u64, reference: Option<Arc<Reference>>| GenerateRequest {
        prompt: if a.description.is_empty() {
            prompt.to_owned()
        } else {
            format!("{prompt}, {}", a.description)
        },
        seed,
        steps: a.steps.unwrap_or(d.steps),
        reference,
        ..GenerateRequest::new(&model, "")
    };
    let generate = |req: &GenerateRequest| -> Result<RgbImage> {
        let mut out = model.generate(req, &limits, &NoProgress, &CancelToken::new())?;
        Ok(out.remove(0).image)
    };

    let references: Vec<RgbImage> = match &a.reference_prompt {
        Some(p) => {
            let mut req = request(p, a.reference_seed, None);
            req.prompt = p.clone();
            vec![generate(&req)?]
        }
        None if a.references.is_empty() => bail!("give --reference images or a --reference-prompt"),
        None => a
            .references
            .iter()
            .map(|p| images::read_rgb_with_bytes(p).map(|(_, img)| img))
            .collect::<Result<_>>()?,
    };
    let measures = Embedders {
        dino: match dino {
            Some(m) => {
                let refs = m.embed(&references)?;
                Some((m, refs))
            }
            None => None,
        },
        clip: match clip {
            Some(m) => {
                let refs = m.embed_images(&references)?;
                let texts: Vec<&str> = prompts.iter().map(String::as_str).collect();
                let prompts = m.embed_texts(&texts)?;
                Some((m, refs, prompts))
            }
            None => None,
        },
    };
    // Banks do not depend on the strength: every strength after the first reads them.
    let banks = Arc::new(BankCache::new(DEFAULT_CACHE_BYTES));
    let reference_for = |strength: f64| {
        (strength > 0.0).then(|| {
            Arc::new(Reference {
                key: "eval".into(),
                images: references.clone(),
                prompt: a.description.clone(),
                seed: 7,
                settings: ReferenceSettings {
                    strength,
                    style_fidelity: a.style_fidelity,
                    attention: a.reference_attention,
                    adain: a.reference_adain,
                    ..ReferenceSettings::default()
                },
                cache: Some(banks.clone()),
            })
        })
    };

    let mut rows = Vec::new();
    let mut sheet: Vec<Vec<RgbImage>> = vec![Vec::new(); prompts.len()];
    let mut baseline: Vec<RgbImage> = Vec::new();
    let seeds = a.seeds as usize;
    for &s in &strengths {
        let started = std::time::Instant::now();
        let (mut ident, mut kept) = (Vec::new(), Vec::new());
        let mut learnt = Learnt::default();
        let mut outputs = Vec::new();
        let mut k = 0;
        for (pi, prompt) in prompts.iter().enumerate() {
            for seed in 0..a.seeds {
                let img = generate(&request(prompt, 1000 + seed, reference_for(s)))?;
                let id =
                    references.iter().map(|r| cl_similarity(&img, r)).sum::<f64>() / references.len() as f64;
                ident.push(id);
                learnt.add(&measures, &img, pi)?;
                if s == 0.0 {
                    baseline.push(img.clone());
                }
                kept.push(cl_similarity(&img, &baseline[k]));
                k += 1;
                if seed == 0 {
                    sheet[pi].push(img.clone());
                }
                outputs.push(img);
            }
        }
        let prompt_accuracy = (seeds > 1).then(|| prompt_accuracy(&outputs, &baseline, prompts.len(), seeds));
        let (identity, identity_sd) = mean_sd(&ident);
        rows.push(Row {
            strength: s,
            identity,
            identity_sd,
            retention: mean_sd(&kept).0,
            prompt_accuracy,
            identity_dino: stat(&learnt.dino),
            identity_clip: stat(&learnt.clip_i),
            clip_t: stat(&learnt.clip_t),
            images: ident.len(),
            seconds: started.elapsed().as_secs_f64(),
        });
    }

    if let Some(path) = &a.grid {
        let mut grid = contact_sheet(&references[0], &sheet);
        safety.watermark.embed(&mut grid, rand::random::<u64>());
        let mut png = Vec::new();
        image::DynamicImage::ImageRgb8(grid)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
        images::write_atomic(path, &png)?;
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "measure": "cl_similarity", "prompts": prompts.len(), "seeds": a.seeds,
                "dinov2": a.dinov2, "clip": a.clip,
                "references": references.len(), "results": rows,
            }))?
        );
    } else {
        let learnt_columns = |r: &Row| {
            [
                (r.identity_dino, "DINO"),
                (r.identity_clip, "CLIP-I"),
                (r.clip_t, "CLIP-T"),
            ]
            .into_iter()
            .filter_map(|(v, name)| v.map(|(m, sd)| (name, format!("{m:.3} (±{sd:.3})"))))
            .collect::<Vec<_>>()
        };
        let mut head = "strength  identity (±sd)    prompt retention  prompt accuracy".to_owned();
        for (name, _) in rows.first().map(learnt_columns).unwrap_or_default() {
            head.push_str(&format!("  {name:>16}"));
        }
        println!("{head}  images  seconds");
        for r in &rows {
            let acc = r
                .prompt_accuracy
                .map_or("-".to_owned(), |x| format!("{:.1} %", 100.0 * x));
            let mut line = format!(
                "{:>8.2}  {:.3} (±{:.3})    {:>16.3}  {:>15}",
                r.strength, r.identity, r.identity_sd, r.retention, acc
            );
            for (_, v) in learnt_columns(r) {
                line.push_str(&format!("  {v:>16}"));
            }
            println!("{line}  {:>6}  {:>7.1}", r.images, r.seconds);
        }
    }
    Ok(())
}

/// The share of `outputs` (prompt-major, `seeds` per prompt) closer on average to the baseline
/// images of their own prompt (the other seeds) than to those of every other prompt.
fn prompt_accuracy(outputs: &[RgbImage], baseline: &[RgbImage], prompts: usize, seeds: usize) -> f64 {
    let mut right = 0;
    for p in 0..prompts {
        for s in 0..seeds {
            let img = &outputs[p * seeds + s];
            let score = |q: usize| {
                let sims: Vec<f64> = (0..seeds)
                    .filter(|&t| q != p || t != s)
                    .map(|t| cl_similarity(img, &baseline[q * seeds + t]))
                    .collect();
                sims.iter().sum::<f64>() / sims.len() as f64
            };
            let own = score(p);
            if (0..prompts).filter(|&q| q != p).all(|q| score(q) < own) {
                right += 1;
            }
        }
    }
    right as f64 / (prompts * seeds) as f64
}

/// Rows of `[reference, image at each strength]`, each cell 64 px with a 4 px gap.
fn contact_sheet(reference: &RgbImage, rows: &[Vec<RgbImage>]) -> RgbImage {
    const CELL: u32 = 64;
    const GAP: u32 = 4;
    let cols = 1 + rows.iter().map(Vec::len).max().unwrap_or(0) as u32;
    let (w, h) = (cols * (CELL + GAP) + GAP, rows.len() as u32 * (CELL + GAP) + GAP);
    let mut out = RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]));
    let cell =
        |img: &RgbImage| image::imageops::resize(img, CELL, CELL, image::imageops::FilterType::Nearest);
    for (r, row) in rows.iter().enumerate() {
        let y = GAP + r as u32 * (CELL + GAP);
        image::imageops::replace(&mut out, &cell(reference), i64::from(GAP), i64::from(y));
        for (c, img) in row.iter().enumerate() {
            let x = GAP + (c as u32 + 1) * (CELL + GAP);
            image::imageops::replace(&mut out, &cell(img), i64::from(x), i64::from(y));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(shift: u32, colour: [u8; 3]) -> RgbImage {
        RgbImage::from_fn(64, 64, |x, y| {
            let (dx, dy) = (x as i32 - 32 - shift as i32, y as i32 - 32);
            if dx * dx + dy * dy < 400 {
                image::Rgb(colour)
            } else {
                image::Rgb([255, 255, 255])
            }
        })
    }

    #[test]
    fn cl_similarity_ranks_palette_and_layout() {
        let a = face(0, [250, 200, 40]);
        assert!((cl_similarity(&a, &a) - 1.0).abs() < 1e-9);
        let moved = face(6, [250, 200, 40]);
        let recoloured = face(0, [40, 90, 250]);
        let other = face(14, [40, 90, 250]);
        let s_moved = cl_similarity(&a, &moved);
        let s_recoloured = cl_similarity(&a, &recoloured);
        let s_other = cl_similarity(&a, &other);
        assert!(s_moved > s_recoloured, "{s_moved} vs {s_recoloured}");
        assert!(s_recoloured > s_other, "{s_recoloured} vs {s_other}");
        assert!((cl_similarity(&a, &other) - cl_similarity(&other, &a)).abs() < 1e-12);
    }

    #[test]
    fn prompt_accuracy_counts_outputs_nearest_their_own_prompt() {
        // Two prompts (yellow and blue discs), two seeds each (two positions).
        let base = vec![
            face(0, [250, 200, 40]),
            face(3, [250, 200, 40]),
            face(0, [40, 90, 250]),
            face(3, [40, 90, 250]),
        ];
        assert_eq!(prompt_accuracy(&base, &base, 2, 2), 1.0);
        // Outputs that all turned yellow: the blue prompt's are now wrong.
        let all_yellow = vec![base[0].clone(), base[1].clone(), base[0].clone(), base[1].clone()];
        assert_eq!(prompt_accuracy(&all_yellow, &base, 2, 2), 0.5);
    }

    #[test]
    fn the_contact_sheet_has_a_cell_per_image() {
        let r = face(0, [1, 2, 3]);
        let sheet = contact_sheet(&r, &[vec![r.clone(), r.clone()], vec![r.clone()]]);
        assert_eq!(sheet.dimensions(), (3 * 68 + 4, 2 * 68 + 4));
    }
}
