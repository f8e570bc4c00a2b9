//! The demo model built into the binary: `nanoimg generate "…"` with no model installed and no
//! network draws the emoji the prompt asks for, and every pipeline runs on it.

use crate::common::{mean_abs_diff, ok};
use std::path::Path;
use std::process::Command;

/// The binary with an empty data directory and no models directory: a fresh install.
fn fresh(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nanoimg"));
    c.env_remove("NANOIMG_MODEL")
        .env("NANOIMG_MODELS", home.join("no-models-here"))
        .env("NANOIMG_HOME", home);
    c
}

fn generate(home: &Path, args: &[&str], out: &Path) -> image::RgbImage {
    ok(&fresh(home)
        .arg("generate")
        .args(args)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap());
    image::open(out).unwrap().to_rgb8()
}

/// Mean colour of the pixels that are not (near) white, and their share of the image.
fn ink(img: &image::RgbImage) -> ([f64; 3], f64) {
    let mut sum = [0f64; 3];
    let mut n = 0usize;
    for p in img.pixels() {
        if p.0.iter().any(|&c| c < 200) {
            for (s, &c) in sum.iter_mut().zip(&p.0) {
                *s += f64::from(c);
            }
            n += 1;
        }
    }
    let total = (img.width() * img.height()) as f64;
    (sum.map(|s| s / n.max(1) as f64), n as f64 / total)
}

/// Mean brightness of the outermost `w` pixels.
fn border_brightness(img: &image::RgbImage, w: u32) -> f64 {
    let (iw, ih) = img.dimensions();
    let px: Vec<f64> = img
        .enumerate_pixels()
        .filter(|(x, y, _)| *x < w || *y < w || *x >= iw - w || *y >= ih - w)
        .map(|(_, _, p)| p.0.iter().map(|&c| f64::from(c)).sum::<f64>() / 3.0)
        .collect();
    px.iter().sum::<f64>() / px.len() as f64
}

/// Three images (seeds 2, 3, 4) for `prompt`: mean ink colour, mean coverage, mean border.
fn three(home: &Path, dir: &Path, prompt: &str) -> ([f64; 3], f64, f64) {
    let out = dir.join(format!("{}.png", prompt.replace(' ', "_")));
    ok(&fresh(home)
        .args(["generate", prompt, "--seed", "2", "-n", "3", "-o"])
        .arg(&out)
        .output()
        .unwrap());
    let (mut colour, mut cover, mut border) = ([0f64; 3], 0f64, 0f64);
    for i in 1..=3 {
        let img = image::open(dir.join(format!("{}-{i}.png", prompt.replace(' ', "_"))))
            .unwrap()
            .to_rgb8();
        assert_eq!(img.dimensions(), (64, 64), "the model's default size");
        let (c, f) = ink(&img);
        for (a, b) in colour.iter_mut().zip(c) {
            *a += b / 3.0;
        }
        cover += f / 3.0;
        border += border_brightness(&img, 3) / 3.0;
    }
    (colour, cover, border)
}

#[test]
fn fresh_install_draws_the_prompt_with_the_bundled_model() {
    let home = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    // The quick start's command: no --model, nothing installed.
    let cat = generate(home.path(), &["a smiling cat face"], &d.path().join("cat.png"));
    assert_eq!(cat.dimensions(), (64, 64));
    // Unpacked once into the data directory, then reused.
    let models: Vec<_> = std::fs::read_dir(home.path().join("models")).unwrap().collect();
    assert_eq!(models.len(), 1);

    // An emoji face: a yellow figure on a white ground — not noise, not a blank page.
    let ([r, g, b], cover, border) = three(home.path(), d.path(), "a smiling cat face");
    assert!(border > 200.0, "border brightness {border}");
    assert!((0.3..0.95).contains(&cover), "covered {cover}");
    assert!(r > b + 60.0 && g > b + 40.0, "cat face colour {:?}", [r, g, b]);

    // The prompt steers the drawing: an apple is a small object, a face fills the frame.
    let (_, apple, _) = three(home.path(), d.path(), "red apple");
    let (_, face, _) = three(home.path(), d.path(), "grinning face");
    assert!(apple + 0.15 < face, "apple covers {apple}, face {face}");
}

#[test]
fn img2img_inpaint_and_outpaint_run_on_the_bundled_model() {
    let home = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    let init = d.path().join("apple.png");
    let apple = generate(home.path(), &["red apple", "--seed", "3"], &init);
    let init_s = init.to_str().unwrap();

    // Low strength keeps the picture; the prompt still changes it a little.
    let i2i = generate(
        home.path(),
        &[
            "green apple",
            "--init-image",
            init_s,
            "--strength",
            "0.3",
            "--seed",
            "4",
        ],
        &d.path().join("i2i.png"),
    );
    let diff = mean_abs_diff(&apple, &i2i);
    assert!(diff > 0.5 && diff < 40.0, "img2img changed the image by {diff}");

    // Inpainting the left half leaves the right half as it was, up to the invisible mark every
    // output carries (a level or two).
    let mask = d.path().join("mask.png");
    image::GrayImage::from_fn(64, 64, |x, _| image::Luma([if x < 32 { 255 } else { 0 }]))
        .save(&mask)
        .unwrap();
    let inpainted = generate(
        home.path(),
        &[
            "grinning face",
            "--init-image",
            init_s,
            "--mask",
            mask.to_str().unwrap(),
        ],
        &d.path().join("inpaint.png"),
    );
    let right = |img: &image::RgbImage| image::imageops::crop_imm(img, 32, 0, 32, 64).to_image();
    let kept = mean_abs_diff(&right(&apple), &right(&inpainted));
    assert!(kept < 3.0, "the kept half changed by {kept}");
    assert!(
        mean_abs_diff(&apple, &inpainted) > 0.5,
        "the masked half was repainted"
    );

    // Outpainting grows the canvas and keeps the original where it was.
    let out = generate(
        home.path(),
        &["red apple", "--init-image", init_s, "--outpaint", "16,8,16,8"],
        &d.path().join("outpaint.png"),
    );
    assert_eq!(out.dimensions(), (96, 80));
    let placed = image::imageops::crop_imm(&out, 16, 8, 64, 64).to_image();
    let moved = mean_abs_diff(&placed, &apple);
    assert!(moved < 3.0, "the original moved or changed: {moved}");
}

#[test]
fn models_list_names_the_built_in_model_as_the_default() {
    let home = tempfile::tempdir().unwrap();
    let out = ok(&fresh(home.path()).args(["models", "list"]).output().unwrap());
    assert!(
        out.contains("nanoimg-emoji") && out.contains("built in, default"),
        "{out}"
    );
    let out = ok(&fresh(home.path())
        .args(["models", "info", "nanoimg-emoji", "--json"])
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["name"], "nanoimg-emoji");
    assert_eq!(v["family"], "sd1");
    assert_eq!(v["defaults"]["size"]["width"], 64);
}

#[test]
fn a_prompt_longer_than_the_context_is_warned_about_and_a_bad_data_dir_named() {
    let home = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    let long = "a smiling cat face ".repeat(10);
    let o = fresh(home.path())
        .args(["generate", &long, "-o"])
        .arg(d.path().join("long.png"))
        .output()
        .unwrap();
    ok(&o);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("longer than the model's 32-token context"), "{e}");

    // A data directory that cannot be created: one clear message, exit 2, nothing written.
    let file = d.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let o = fresh(&file)
        .args(["generate", "cat", "-o"])
        .arg(d.path().join("x.png"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("unpacking the bundled model") && e.contains("a-file"),
        "{e}"
    );
    assert_eq!(e.matches("os error").count(), 1, "the cause is printed once: {e}");
    assert!(!d.path().join("x.png").exists());
}

/// The bundled model ships a tiny autoencoder distilled from its VAE (`vae_tiny/`):
/// `--vae tiny` draws the same picture closely, not identically, and encodes an init image too.
#[test]
fn the_bundled_tiny_autoencoder_draws_what_its_vae_draws() {
    let home = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    let args = ["a smiling cat face", "--seed", "2"];
    let full = generate(home.path(), &args, &d.path().join("full.png"));
    let tiny = generate(
        home.path(),
        &[&args[..], &["--vae", "tiny"]].concat(),
        &d.path().join("tiny.png"),
    );
    // Two different emoji differ by 35 to 70 levels on average (a cat face and a grinning face
    // by 37, an apple by 71); the two decoders of one drawing by about 9 (the watermark adds a
    // level or two).
    let diff = mean_abs_diff(&full, &tiny);
    assert!(diff > 0.2 && diff < 16.0, "the tiny decode differs by {diff}");
    let ([r, g, b], cover) = ink(&tiny);
    assert!(
        (0.3..0.95).contains(&cover) && r > b + 60.0 && g > b + 40.0,
        "{cover} {r} {g} {b}"
    );

    let init = d.path().join("full.png");
    let i2i = generate(
        home.path(),
        &[
            "a smiling cat face",
            "--init-image",
            init.to_str().unwrap(),
            "--strength",
            "0.3",
            "--vae",
            "tiny",
        ],
        &d.path().join("i2i.png"),
    );
    let kept = mean_abs_diff(&full, &i2i);
    assert!(
        kept < 30.0,
        "img2img through the tiny autoencoder changed the image by {kept}"
    );
}
