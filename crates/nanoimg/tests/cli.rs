//! The `nanoimg` binary, run as a user runs it, against a tiny random model it writes itself.
//! (The built-in model is tested in `bundled.rs`.)

mod common;

use common::ok;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn bin() -> Command {
    static HOME: OnceLock<tempfile::TempDir> = OnceLock::new();
    let home = HOME.get_or_init(|| tempfile::tempdir().unwrap());
    let mut c = Command::new(env!("CARGO_BIN_EXE_nanoimg"));
    c.env_remove("NANOIMG_MODEL")
        .env_remove("NANOIMG_MODELS")
        .env("NANOIMG_HOME", home.path());
    c
}

/// A models directory holding one tiny model, written by `nanoimg models synth`.
fn models_dir() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        let models = d.path().join("models");
        let out = bin()
            .args(["models", "synth", "--arch", "tiny-sd1", "--seed", "3"])
            .arg(models.join("tiny"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (d, models)
    })
    .1
}

/// `generate` on the tiny model, chosen through `$NANOIMG_MODEL` (an explicit `--model` wins).
fn generate(args: &[&str], out: &Path) -> Output {
    bin()
        .env("NANOIMG_MODEL", "tiny")
        .arg("generate")
        .args(args)
        .arg("-o")
        .arg(out)
        .arg("--models-dir")
        .arg(models_dir())
        .output()
        .unwrap()
}

fn err(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(2),
        "expected failure; stdout: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn png_text(path: &Path) -> Vec<(String, String)> {
    let reader = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()))
        .read_info()
        .unwrap();
    reader
        .info()
        .utf8_text
        .iter()
        .map(|t| (t.keyword.clone(), t.get_text().unwrap()))
        .collect()
}

#[test]
fn generate_writes_png_of_requested_size_with_parameters_and_is_deterministic() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a.png");
    let b = d.path().join("b.png");
    let args = [
        "a cat in a hat",
        "--size",
        "64x96",
        "--seed",
        "7",
        "--steps",
        "3",
        "--negative",
        "blurry",
        "--guidance",
        "6",
        "--scheduler",
        "dpm++2m_karras",
        "--json",
    ];
    let summary: serde_json::Value = serde_json::from_str(&ok(&generate(&args, &a))).unwrap();
    assert_eq!(summary["images"][0]["width"], 64);
    assert_eq!(summary["images"][0]["height"], 96);
    assert_eq!(summary["images"][0]["seed"], 7);
    assert_eq!(summary["model"], "tiny");
    ok(&generate(&args, &b));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&a).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "output images are ordinary readable files");
    }
    let ia = image::open(&a).unwrap().to_rgb8();
    let ib = image::open(&b).unwrap().to_rgb8();
    assert_eq!(ia.dimensions(), (64, 96));
    assert_eq!(
        ia.as_raw(),
        ib.as_raw(),
        "same seed must give byte-identical pixels"
    );

    let text = png_text(&a);
    let meta: serde_json::Value = serde_json::from_str(
        &text
            .iter()
            .find(|(k, _)| k == "nanoimg")
            .expect("nanoimg chunk")
            .1,
    )
    .unwrap();
    assert_eq!(meta["prompt"], "a cat in a hat");
    assert_eq!(meta["negative_prompt"], "blurry");
    assert_eq!(meta["seed"], 7);
    assert_eq!(meta["steps"], 3);
    assert_eq!(meta["guidance"], 6.0);
    assert_eq!(meta["scheduler"], "dpm++2m_karras");
    assert_eq!(meta["size"], "64x96");
    assert_eq!(meta["mode"], "txt2img");
    let params = &text
        .iter()
        .find(|(k, _)| k == "parameters")
        .expect("parameters chunk")
        .1;
    assert!(
        params.starts_with("a cat in a hat\nNegative prompt: blurry\nSteps: 3"),
        "{params}"
    );
    assert!(params.contains("Seed: 7"), "{params}");
}

#[test]
fn several_images_get_numbered_files_and_consecutive_seeds() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("cat.png");
    let s = ok(&generate(
        &["a cat", "-n", "2", "--seed", "10", "--steps", "1", "--json"],
        &out,
    ));
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    assert_eq!(v["images"][0]["seed"], 10);
    assert_eq!(v["images"][1]["seed"], 11);
    assert!(d.path().join("cat-1.png").is_file());
    assert!(d.path().join("cat-2.png").is_file());
    assert!(!out.exists());
}

#[test]
fn img2img_inpaint_and_outpaint_from_the_command_line() {
    let d = tempfile::tempdir().unwrap();
    let init = d.path().join("init.png");
    image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 4, y as u8 * 4, 128]))
        .save(&init)
        .unwrap();
    let mask = d.path().join("mask.png");
    image::GrayImage::from_fn(64, 64, |x, _| image::Luma([if x < 32 { 255 } else { 0 }]))
        .save(&mask)
        .unwrap();
    let init_s = init.to_str().unwrap();

    let out = d.path().join("i2i.png");
    ok(&generate(
        &[
            "a cat",
            "--init-image",
            init_s,
            "--strength",
            "0.5",
            "--steps",
            "4",
        ],
        &out,
    ));
    assert_eq!(image::open(&out).unwrap().to_rgb8().dimensions(), (64, 64));

    let out = d.path().join("inpaint.png");
    ok(&generate(
        &[
            "a cat",
            "--init-image",
            init_s,
            "--mask",
            mask.to_str().unwrap(),
            "--strength",
            "1",
            "--steps",
            "2",
        ],
        &out,
    ));
    let (got, orig) = (
        image::open(&out).unwrap().to_rgb8(),
        image::open(&init).unwrap().to_rgb8(),
    );
    assert!((32..64).all(|x| (0..64).all(|y| got.get_pixel(x, y) == orig.get_pixel(x, y))));

    let out = d.path().join("outpaint.png");
    ok(&generate(
        &[
            "a cat",
            "--init-image",
            init_s,
            "--outpaint",
            "16,0,16,8",
            "--steps",
            "2",
        ],
        &out,
    ));
    let got = image::open(&out).unwrap().to_rgb8();
    assert_eq!(got.dimensions(), (96, 72));
    assert_eq!(got.get_pixel(16 + 5, 7), orig.get_pixel(5, 7));
    let meta = png_text(&out);
    assert!(meta
        .iter()
        .any(|(k, v)| k == "nanoimg" && v.contains("\"mode\":\"outpaint\"")));
}

#[test]
fn bad_input_fails_with_a_clear_message_and_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("x.png");
    let e = err(&generate(&["a cat", "--size", "100x64"], &out));
    assert!(e.contains("size") && e.contains("multiple of 8"), "{e}");
    let e = err(&generate(&["a cat", "--steps", "0"], &out));
    assert!(e.contains("steps"), "{e}");
    let e = err(&generate(&["a cat", "--size", "banana"], &out));
    assert!(e.contains("WIDTHxHEIGHT"), "{e}");
    let e = err(&generate(&["a cat", "--scheduler", "plms"], &out));
    assert!(e.contains("unknown scheduler"), "{e}");
    let e = err(&generate(&["a cat", "--model", "nope"], &out));
    assert!(e.contains("no model named \"nope\"") && e.contains("tiny"), "{e}");
    let junk = d.path().join("junk.png");
    std::fs::write(&junk, b"this is not an image").unwrap();
    let e = err(&generate(
        &["a cat", "--init-image", junk.to_str().unwrap()],
        &out,
    ));
    assert!(
        e.contains("junk.png") && e.contains("not a PNG, JPEG or WebP"),
        "{e}"
    );
    let e = err(&generate(&["a cat", "--init-image", "/nonexistent.png"], &out));
    assert!(e.contains("/nonexistent.png"), "{e}");
    let e = err(&generate(&["a cat", "--dtype", "f64"], &out));
    assert!(e.contains("dtype"), "{e}");
    assert!(!out.exists());
    // Nothing half-written either.
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1, "only junk.png");
}

#[test]
fn decompression_bomb_is_refused() {
    let d = tempfile::tempdir().unwrap();
    // A 20000×20000 greyscale PNG compresses to a few hundred KB but decodes to 400 MB.
    let bomb = d.path().join("bomb.png");
    {
        let f = std::io::BufWriter::new(std::fs::File::create(&bomb).unwrap());
        let mut enc = png::Encoder::new(f, 20_000, 20_000);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_compression(png::Compression::Fast);
        let mut w = enc.write_header().unwrap().into_stream_writer().unwrap();
        let row = vec![0u8; 20_000];
        for _ in 0..20_000 {
            std::io::Write::write_all(&mut w, &row).unwrap();
        }
        w.finish().unwrap();
    }
    let e = err(&generate(
        &["a cat", "--init-image", bomb.to_str().unwrap()],
        &d.path().join("o.png"),
    ));
    assert!(e.contains("cannot decode") || e.contains("limit"), "{e}");
}

#[test]
fn models_list_and_info_describe_the_installed_model() {
    let out = ok(&bin()
        .args(["models", "list", "--models-dir"])
        .arg(models_dir())
        .output()
        .unwrap());
    assert!(out.contains("tiny") && out.contains("sd1"), "{out}");
    let out = ok(&bin()
        .args(["models", "info", "tiny", "--json", "--models-dir"])
        .arg(models_dir())
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["family"], "sd1");
    assert_eq!(v["defaults"]["size"]["width"], 64);
    let e = err(&bin()
        .args(["models", "info", "missing", "--models-dir"])
        .arg(models_dir())
        .output()
        .unwrap());
    assert!(e.contains("no model named"), "{e}");
}

#[test]
fn bench_times_an_installed_model_including_a_whole_image() {
    let out = ok(&bin()
        .args([
            "bench",
            "--model",
            "tiny",
            "--ops",
            "clip,unet,vae,generate",
            "--runs",
            "1",
            "--json",
        ])
        .arg("--models-dir")
        .arg(models_dir())
        .output()
        .unwrap());
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let ops: Vec<&str> = rows.iter().map(|r| r["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["clip", "unet", "vae", "generate"]);
    for r in &rows {
        assert_eq!(r["arch"], "tiny");
        assert_eq!(r["size"], 64, "the model's default size");
        assert!(r["median_s"].as_f64().unwrap() > 0.0);
    }
    let e = err(&bin()
        .args(["bench", "--model", "nope", "--models-dir"])
        .arg(models_dir())
        .output()
        .unwrap());
    assert!(e.contains("no model named"), "{e}");
}
