//! Writes the bundled model's raw outputs (no watermark, no C2PA: straight from the engine) as
//! PNGs, for measuring what the safety layers do to real pictures, e.g. the watermark with
//! `cargo run -p nanoimg-safety --example wm_probe -- DIR/*.png`.
//!
//! `cargo run -p nanoimg --example raw_outputs -- DIR [SIZE] [SEEDS]` (default 64 px, 2 seeds
//! for each of eight prompts).

use nanoimg_core::{ImageSize, Limits};
use nanoimg_engine::{bundled, CancelToken, GenerateRequest, LoadOptions, NoProgress, StableDiffusion};
use std::path::PathBuf;

const PROMPTS: [&str; 8] = [
    "face with tears of joy",
    "red apple",
    "smiling face with sunglasses",
    "rocket",
    "sunflower",
    "blue car",
    "pizza",
    "cat face",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("give an output folder")?);
    let size: u32 = args.next().map_or(Ok(64), |s| s.parse())?;
    let seeds: u64 = args.next().map_or(Ok(2), |s| s.parse())?;
    std::fs::create_dir_all(&dir)?;
    let home = tempfile::tempdir()?;
    let model = StableDiffusion::load(&bundled::unpack(home.path())?, &LoadOptions::default())?;
    for (i, prompt) in PROMPTS.iter().enumerate() {
        for seed in 0..seeds {
            let req = GenerateRequest {
                prompt: (*prompt).to_owned(),
                seed,
                size: ImageSize::new(size, size),
                ..GenerateRequest::new(&model, "")
            };
            let out = model.generate(&req, &Limits::default(), &NoProgress, &CancelToken::new())?;
            let path = dir.join(format!("{size}-{i}-{seed}.png"));
            out[0].image.save(&path)?;
            println!("{}", path.display());
        }
    }
    Ok(())
}
