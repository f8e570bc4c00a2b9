//! Tiny random-weight models in diffusers layout, written once per test binary.

#![allow(dead_code)]

use candle_core::DType;
use nanoimg_engine::synthetic::{write_model, SyntheticSpec};
use nanoimg_engine::{Family, LoadOptions, StableDiffusion};
use std::path::PathBuf;
use std::sync::OnceLock;

pub struct Fixtures {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
}

pub fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_owned();
        write_model(&root.join("tiny-sd1"), &SyntheticSpec::tiny(Family::Sd1), 1).expect("sd1");
        write_model(&root.join("tiny-sd2-v"), &SyntheticSpec::tiny(Family::Sd2), 2).expect("sd2");
        write_model(&root.join("tiny-sdxl"), &SyntheticSpec::tiny(Family::Sdxl), 3).expect("sdxl");
        write_model(&root.join("tiny-inpaint"), &SyntheticSpec::tiny_inpainting(), 4).expect("inpaint");
        write_model(
            &root.join("tiny-sdxl-refiner"),
            &SyntheticSpec::tiny_sdxl_refiner(),
            5,
        )
        .expect("refiner");
        Fixtures { _dir: dir, root }
    })
}

pub fn path(name: &str) -> PathBuf {
    fixtures().root.join(name)
}

pub fn load(name: &str) -> StableDiffusion {
    load_as(name, DType::F32)
}

pub fn load_path(p: &std::path::Path) -> StableDiffusion {
    StableDiffusion::load(p, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("loading {}: {e}", p.display()))
}

pub fn load_as(name: &str, dtype: DType) -> StableDiffusion {
    StableDiffusion::load(
        &path(name),
        &LoadOptions {
            dtype,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// Copies a folder tree; `keep` says which files (by name) are copied.
pub fn copy_tree(from: &std::path::Path, to: &std::path::Path, keep: &dyn Fn(&str) -> bool) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest, keep);
        } else if keep(&e.file_name().to_string_lossy()) {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Copies a folder tree.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    copy_tree(from, to, &|_| true);
}

/// Mean absolute difference between two images of the same size, in 0..255 levels.
pub fn mean_abs_diff(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / a.as_raw().len() as f64
}

/// A colourful test picture.
pub fn test_image(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 255 / w.max(1)) as u8,
            (y * 255 / h.max(1)) as u8,
            ((x + y) % 256) as u8,
        ])
    })
}
