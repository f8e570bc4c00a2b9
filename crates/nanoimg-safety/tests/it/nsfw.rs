//! The image layer on the real open_nsfw model (from the pinned wheel). Reference scores come
//! from onnxruntime 1.x run on the same preprocessed input (tract must agree with it).

use image::{DynamicImage, Rgb, RgbImage};
use nanoimg_safety::nsfw::{self, NsfwClassifier};
use nanoimg_safety::{models, testing};

fn classifier() -> NsfwClassifier {
    NsfwClassifier::load(
        &models::OPEN_NSFW
            .path(&testing::models_dir())
            .join("open-nsfw.onnx"),
    )
    .unwrap()
}

/// Deterministic test pictures: a sky-and-grass landscape, and a skin-toned gradient.
fn pictures() -> [DynamicImage; 2] {
    let land = RgbImage::from_fn(320, 240, |x, y| {
        if y < 140 {
            Rgb([90, 150, (200 + x / 8) as u8])
        } else {
            Rgb([40, (120 + y / 4) as u8, 50])
        }
    });
    let skin = RgbImage::from_fn(256, 256, |x, y| {
        Rgb([(200 + x / 8) as u8, (150 + y / 8) as u8, 120])
    });
    [land.into(), skin.into()]
}

#[test]
fn scores_agree_with_onnxruntime() {
    let c = classifier();
    let [land, skin] = pictures();
    let (a, b) = (c.score(&land).unwrap(), c.score(&skin).unwrap());
    assert!((a - 3.1197746e-5).abs() < 1e-6, "{a}");
    assert!((b - 0.0460425).abs() < 1e-4, "{b}");
}

#[test]
fn the_threshold_decides() {
    let mut c = classifier();
    let [land, skin] = pictures();
    assert!(!c.check(&skin).unwrap().blocked);
    c.threshold = 0.04;
    let v = c.check(&skin).unwrap();
    assert!(v.blocked && v.threshold == 0.04, "{v:?}");
    assert!(!c.check(&land).unwrap().blocked);
}

#[test]
fn input_is_bgr_minus_the_means_at_224() {
    let red = RgbImage::from_pixel(500, 300, Rgb([255, 0, 0]));
    let v = nsfw::preprocess(&red.into()).unwrap();
    assert_eq!(v.len(), 224 * 224 * 3);
    let centre = (112 * 224 + 112) * 3;
    let px = &v[centre..centre + 3];
    for (got, want) in px.iter().zip([-104.0f32, -117.0, 132.0]) {
        assert!((got - want).abs() <= 4.0, "{px:?}");
    }
}

#[test]
fn a_missing_or_broken_model_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let e = NsfwClassifier::load(&dir.path().join("open-nsfw.onnx")).unwrap_err();
    assert!(e.to_string().contains("open-nsfw.onnx"), "{e}");
    std::fs::write(dir.path().join("bad.onnx"), b"not a model").unwrap();
    assert!(NsfwClassifier::load(&dir.path().join("bad.onnx")).is_err());
}
