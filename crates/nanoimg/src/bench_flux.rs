//! `nanoimg bench --arch flux-2-4,flux-1-2`: one FLUX.1 transformer step at the real width
//! (3072 channels, 24 heads, T5-XXL's 4096-wide text, 512 text tokens as dev reads them) with
//! reduced depth — 2 double- and 4 single-stream blocks, and 1 + 2 — on random weights. The two
//! depths keep FLUX.1's 1 : 2 ratio of double to single blocks, so their difference is one
//! "unit" of the full model's 19 units (19 double + 38 single blocks), and the rest of the
//! step (embedders, final layer) is what is left: full ≈ 19·(T₂₄ − T₁₂) + (2·T₁₂ − T₂₄).
//! `bench/flux_reference.py` times diffusers' `FluxTransformer2DModel` the same way.

use crate::bench::{time, Args};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use nanoimg_engine::models::flux::{position_ids, FluxInputs, FluxTransformer2DModel, Rope};
use nanoimg_engine::pipeline::SeededNoise;
use serde_json::json;
use std::path::{Path, PathBuf};

/// T5 tokens the transformer reads (FLUX.1 dev's sequence length).
const TEXT_TOKENS: usize = 512;

/// The (double, single) blocks of a `flux-D-S` architecture name.
pub fn depth(arch: &str) -> Option<(usize, usize)> {
    let rest = arch.strip_prefix("flux-")?;
    let (d, s) = rest.split_once('-')?;
    Some((d.parse().ok()?, s.parse().ok()?))
}

/// FLUX.1 dev's transformer config at the given depth.
fn config((double, single): (usize, usize)) -> serde_json::Value {
    json!({
        "_class_name": "FluxTransformer2DModel", "patch_size": 1, "in_channels": 64,
        "num_layers": double, "num_single_layers": single, "attention_head_dim": 128,
        "num_attention_heads": 24, "joint_attention_dim": 4096, "pooled_projection_dim": 768,
        "guidance_embeds": true, "axes_dims_rope": [16, 56, 56],
    })
}

/// The transformer folder of `arch`, written once (random weights).
fn ensure(work_dir: &Path, arch: &str, blocks: (usize, usize)) -> Result<PathBuf> {
    let dir = work_dir.join(arch);
    if dir.join("config.json").is_file() {
        return Ok(dir);
    }
    std::fs::create_dir_all(work_dir)?;
    eprintln!("writing random-weight {arch} to {} (once)…", dir.display());
    let tmp = work_dir.join(format!(".{arch}.partial"));
    let _ = std::fs::remove_dir_all(&tmp);
    nanoimg_engine::synthetic::write_flux_transformer(&tmp, &config(blocks), 0)?;
    std::fs::rename(&tmp, &dir).with_context(|| format!("moving into {}", dir.display()))?;
    Ok(dir)
}

/// Times one transformer step of `arch` at `a.size` pixels a side.
pub fn run(a: &Args, arch: &str, threads: usize) -> Result<()> {
    let Some(blocks) = depth(arch) else {
        bail!("{arch:?}: FLUX benchmark architectures are named flux-DOUBLE-SINGLE, e.g. flux-2-4");
    };
    let size = a.size.unwrap_or(512);
    if !size.is_multiple_of(16) {
        bail!("--size must be a multiple of 16 for FLUX");
    }
    let dir = ensure(&a.work_dir, arch, blocks)?;
    let model = FluxTransformer2DModel::load(&dir, DType::F32, &Device::Cpu)?;
    let cfg = model.config();
    let dev = Device::Cpu;
    let lat = size / 8;
    let image_tokens = (lat / 2) * (lat / 2);
    let mut noise = SeededNoise::new(0);
    let latents = noise.sample(&[1, image_tokens, 64], &dev, DType::F32)?;
    let text = noise.sample(&[1, TEXT_TOKENS, 4096], &dev, DType::F32)?;
    let pooled = noise.sample(&[1, 768], &dev, DType::F32)?;
    let (timestep, guidance) = (Tensor::new(&[1.0f32], &dev)?, Tensor::new(&[3.5f32], &dev)?);
    let rope = Rope::new(&position_ids(TEXT_TOKENS, (lat, lat)), &cfg.axes_dims_rope, &dev)?;
    let inputs = FluxInputs {
        latents: &latents,
        text: &text,
        pooled: &pooled,
        timestep: &timestep,
        guidance: Some(&guidance),
        rope: &rope,
    };
    let t = time(a.runs, || {
        model.forward(&inputs)?;
        Ok(())
    })?;
    let op = "flux-step";
    if a.json {
        println!(
            "{}",
            json!({"arch": arch, "op": op, "backend": "nanoimg", "size": size, "threads": threads,
                   "median_s": t.median_s, "runs_s": t.runs, "peak_rss_mib": t.peak_mib})
        );
    } else {
        let runs: Vec<String> = t.runs.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "{:<12} {:<18} {:>10.3} {:>12}  {}",
            arch,
            format!("{op} @{size}"),
            t.median_s,
            t.peak_mib.map_or("-".into(), |m| format!("{m:.0} MiB")),
            runs.join(" ")
        );
    }
    Ok(())
}
