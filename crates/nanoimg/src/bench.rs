//! `nanoimg bench`: median time and peak memory of the expensive operations on real-size
//! architectures with random weights (timing does not depend on the weights' values).
//!
//! The models are written once in diffusers layout (`models synth`) and loaded through the real
//! loader, so the numbers include nothing a real checkpoint would not have.

use crate::models::spec_named;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use nanoimg_core::{ImageSize, Limits};
use nanoimg_engine::pipeline::SeededNoise;
use nanoimg_engine::reference::{BankCache, DEFAULT_CACHE_BYTES};
use nanoimg_engine::synthetic::write_model;
use nanoimg_engine::{CancelToken, GenerateRequest, LoadOptions, NoProgress, StableDiffusion, VaeChoice};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Random-weight architectures to time: sd-turbo (SD 2.1-base), sd15, sdxs-512; or one
    /// FLUX.1 transformer step at the real width with D double- and S single-stream blocks,
    /// flux-D-S (flux-2-4 and flux-1-2 extrapolate to the full model: docs/benchmarks.md).
    #[arg(long, value_delimiter = ',', default_value = "sd-turbo,sd15")]
    pub arch: Vec<String>,
    /// Time installed models instead (names or paths, as `generate --model` takes them).
    #[arg(long, value_delimiter = ',')]
    pub model: Vec<String>,
    /// Directory of model folders for --model.
    #[arg(long)]
    pub models_dir: Option<String>,
    /// Operations: clip, unet (batch 1), unet-cfg (batch 2), vae, and generate (one whole image
    /// at the model's default steps, guidance and scheduler; opt-in, as it is slow for 30-step
    /// models); reference-cold / reference-warm (generate with one reference image, its bank
    /// computed afresh / taken from the cache; the bank's size is printed); lora-merge (merging
    /// a rank-16 LoRA on every attention projection); vae-tiny (TAESD's decoder, random
    /// weights) and generate-tiny (a whole image decoded by it).
    #[arg(long, value_delimiter = ',', default_value = "clip,unet,unet-cfg,vae")]
    pub ops: Vec<String>,
    /// Image side in pixels (the model's default size when omitted).
    #[arg(long)]
    pub size: Option<usize>,
    /// Denoising steps for generate and reference-* (the model's default when omitted).
    #[arg(long)]
    pub steps: Option<u32>,
    /// Timed runs per operation (the median is reported), after one untimed warm-up.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where the random-weight model folders are kept between runs.
    #[arg(long, default_value = "target/bench-models")]
    pub work_dir: PathBuf,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
    /// `int8`: time the UNet on int8 weights (see `generate --quantize`).
    #[arg(long, value_name = "none|int8")]
    pub quantize: Option<nanoimg_engine::Quantization>,
}

/// Peak resident memory since the last reset, in MiB (Linux; `None` elsewhere).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Resets the kernel's peak-RSS counter to the current RSS (Linux `clear_refs` value 5).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub(crate) struct Timing {
    pub(crate) median_s: f64,
    pub(crate) runs: Vec<f64>,
    pub(crate) peak_mib: Option<f64>,
}

pub(crate) fn time(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<Timing> {
    f()?; // warm-up: page in mmapped weights, size allocator pools
    reset_peak_rss();
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(Timing {
        median_s: median(times.clone()),
        runs: times,
        peak_mib: peak_rss_mib(),
    })
}

fn ensure_model(work_dir: &std::path::Path, arch: &str) -> Result<PathBuf> {
    let dir = work_dir.join(arch);
    if dir.join("model_index.json").is_file() {
        return Ok(dir);
    }
    let spec = spec_named(arch)?;
    eprintln!("writing random-weight {arch} to {} (once)…", dir.display());
    let tmp = work_dir.join(format!(".{arch}.partial"));
    let _ = std::fs::remove_dir_all(&tmp);
    write_model(&tmp, &spec, 0)?;
    std::fs::rename(&tmp, &dir).with_context(|| format!("moving into {}", dir.display()))?;
    Ok(dir)
}

/// TAESD's architecture with random weights, written once.
fn ensure_taesd(work_dir: &std::path::Path) -> Result<PathBuf> {
    let dir = work_dir.join("taesd");
    if dir.join("config.json").is_file() {
        return Ok(dir);
    }
    std::fs::create_dir_all(work_dir)?;
    let tmp = work_dir.join(".taesd.partial");
    let _ = std::fs::remove_dir_all(&tmp);
    nanoimg_engine::synthetic::write_taesd(&tmp, &nanoimg_engine::synthetic::taesd_config(), 0)?;
    std::fs::rename(&tmp, &dir).with_context(|| format!("moving into {}", dir.display()))?;
    Ok(dir)
}

/// One striped reference picture, as a character would bring, its banks kept in `cache`.
fn bench_reference(
    size: u32,
    cache: &std::sync::Arc<BankCache>,
) -> std::sync::Arc<nanoimg_engine::reference::Reference> {
    let img = image::RgbImage::from_fn(size, size, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    });
    std::sync::Arc::new(nanoimg_engine::reference::Reference {
        key: "bench".into(),
        images: vec![img],
        prompt: "a character".into(),
        seed: 1,
        settings: Default::default(),
        cache: Some(cache.clone()),
    })
}

/// A rank-16 LoRA (kohya names) on every attention projection of the UNet.
fn bench_lora(model: &StableDiffusion) -> Result<nanoimg_engine::lora::Lora> {
    use nanoimg_engine::lora::names::Component;
    let weights = model
        .component_weights(Component::Unet)
        .context("the model has no UNet weights")?;
    let mut noise = SeededNoise::new(2);
    let mut tensors = std::collections::HashMap::new();
    for (name, w) in weights.iter() {
        let Some(module) = name.strip_suffix(".weight") else {
            continue;
        };
        let attn = [".to_q", ".to_k", ".to_v", ".to_out.0"]
            .iter()
            .any(|s| module.ends_with(s));
        if !attn || w.rank() != 2 {
            continue;
        }
        let (out, inp) = w.dims2()?;
        let key = format!("lora_unet_{}", module.replace('.', "_"));
        tensors.insert(
            format!("{key}.lora_down.weight"),
            noise.sample(&[16, inp], &Device::Cpu, DType::F32)?,
        );
        tensors.insert(
            format!("{key}.lora_up.weight"),
            noise.sample(&[out, 16], &Device::Cpu, DType::F32)?,
        );
    }
    Ok(nanoimg_engine::lora::Lora::from_tensors(tensors)?)
}

pub fn run(a: Args) -> Result<()> {
    if let Some(t) = a.threads {
        // Read by rayon and the gemm kernels when their pools start, which is after this.
        std::env::set_var("RAYON_NUM_THREADS", t.to_string());
    }
    if a.runs == 0 || a.size.is_some_and(|s| s == 0 || !s.is_multiple_of(8)) {
        bail!("--runs must be ≥ 1 and --size a positive multiple of 8");
    }
    // (label, folder) of every model to time.
    let (flux, unets): (Vec<&String>, Vec<&String>) =
        a.arch.iter().partition(|x| crate::bench_flux::depth(x).is_some());
    let targets: Vec<(String, PathBuf)> = if a.model.is_empty() {
        std::fs::create_dir_all(&a.work_dir)?;
        unets
            .into_iter()
            .map(|arch| Ok((arch.clone(), ensure_model(&a.work_dir, arch)?)))
            .collect::<Result<_>>()?
    } else {
        let reg = crate::catalog::registry(a.models_dir.as_deref());
        a.model
            .iter()
            .map(|m| Ok((m.clone(), crate::catalog::pick_model(&reg, Some(m))?)))
            .collect::<Result<_>>()?
    };
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if !a.json {
        println!(
            "nanoimg bench: f32, {threads} threads, median of {} runs after 1 warm-up",
            a.runs
        );
        println!(
            "{:<12} {:<18} {:>10} {:>12}  runs",
            "model", "operation", "median s", "peak RSS"
        );
    }
    for arch in flux {
        crate::bench_flux::run(&a, arch, threads)?;
    }
    let prompt = "a photograph of an astronaut riding a horse";
    for (label, path) in &targets {
        let opts = LoadOptions {
            quantize: a.quantize,
            ..LoadOptions::default()
        };
        let mut model = StableDiffusion::load(path, &opts)?;
        // What loading freed (an int8 UNet's f32 weights) goes back now, as it would within a
        // minute in a server: the peak memory below is the operation's, not the load's leftovers.
        crate::allocator::release_freed();
        if a.ops.iter().any(|o| o.ends_with("-tiny")) && model.tiny_vae().is_none() {
            let dir = ensure_taesd(&a.work_dir)?;
            let tiny = nanoimg_engine::tiny_vae::load(&dir, &Device::Cpu, DType::F32)?;
            model = model.with_tiny_vae(tiny)?;
        }
        let banks = std::sync::Arc::new(BankCache::new(DEFAULT_CACHE_BYTES));
        let dev = Device::Cpu;
        let size = a.size.unwrap_or(model.defaults().size.width as usize);
        let lat = size / model.vae_scale();
        let latent_c = model.latent_channels();
        let unet = model
            .unet()
            .ok_or_else(|| anyhow::anyhow!("{label} is not a UNet model"))?;
        let unet_in = unet.config().in_channels;
        let ctx = model.encode_text(prompt, false)?.context;
        for op in &a.ops {
            let mut bank_bytes = None;
            let mut steps = None;
            let t = match op.as_str() {
                "clip" => time(a.runs, || {
                    model.encode_text(prompt, false)?;
                    Ok(())
                })?,
                "unet" | "unet-cfg" => {
                    let b = if op == "unet" { 1 } else { 2 };
                    let x = SeededNoise::new(0).sample(&[b, unet_in, lat, lat], &dev, DType::F32)?;
                    let t = Tensor::full(999f32, b, &dev)?;
                    let c = ctx.repeat((b, 1, 1))?;
                    time(a.runs, || {
                        unet.forward(&x, &t, &c, None, None)?;
                        Ok(())
                    })?
                }
                "vae" | "vae-tiny" => {
                    let z = SeededNoise::new(0).sample(&[1, latent_c, lat, lat], &dev, DType::F32)?;
                    let vae = if op == "vae" {
                        VaeChoice::Full
                    } else {
                        VaeChoice::Tiny
                    };
                    time(a.runs, || {
                        model.decode_latents(&z, vae)?;
                        Ok(())
                    })?
                }
                "generate" | "generate-tiny" | "reference-cold" | "reference-warm" => {
                    let mut req = GenerateRequest {
                        size: ImageSize::new(size as u32, size as u32),
                        vae: if op == "generate-tiny" {
                            VaeChoice::Tiny
                        } else {
                            VaeChoice::Full
                        },
                        ..GenerateRequest::new(&model, prompt)
                    };
                    if let Some(s) = a.steps {
                        req.steps = s;
                    }
                    steps = Some(req.steps);
                    if op.starts_with("reference") {
                        req.reference = Some(bench_reference(size as u32, &banks));
                    }
                    let cold = op == "reference-cold";
                    let limits = Limits::default();
                    let t = time(a.runs, || {
                        if cold {
                            banks.forget("bench");
                        }
                        model.generate(&req, &limits, &NoProgress, &CancelToken::new())?;
                        Ok(())
                    })?;
                    bank_bytes = op.starts_with("reference").then(|| banks.stats().bytes);
                    t
                }
                "lora-merge" => {
                    let lora = bench_lora(&model)?;
                    time(a.runs, || {
                        model.with_loras(&[(&lora, 0.8)])?;
                        Ok(())
                    })?
                }
                other => bail!(
                    "unknown operation {other:?}; use clip, unet, unet-cfg, vae, vae-tiny, generate, \
                     generate-tiny, reference-cold, reference-warm, lora-merge"
                ),
            };
            // Which UNet weights ran: what the ratio table names the row after.
            let int8 = model.quantization() == nanoimg_engine::Quantization::Int8;
            let backend = if int8 { "nanoimg-int8" } else { "nanoimg" };
            if a.json {
                println!(
                    "{}",
                    json!({"arch": label, "op": op, "backend": backend, "size": size,
                           "steps": steps, "threads": threads,
                           "median_s": t.median_s, "runs_s": t.runs, "peak_rss_mib": t.peak_mib,
                           "bank_mib": bank_bytes.map(|b| b as f64 / 1048576.0)})
                );
            } else {
                let runs: Vec<String> = t.runs.iter().map(|r| format!("{r:.2}")).collect();
                let bank = bank_bytes.map_or(String::new(), |b| {
                    format!("  (bank {:.1} MiB)", b as f64 / 1048576.0)
                });
                println!(
                    "{:<12} {:<18} {:>10.3} {:>12}  {}{bank}",
                    format!("{label}{}", if int8 { " int8" } else { "" }),
                    format!("{op} @{size}"),
                    t.median_s,
                    t.peak_mib.map_or("n/a".into(), |m| format!("{m:.0} MiB")),
                    runs.join(" ")
                );
            }
        }
    }
    Ok(())
}
