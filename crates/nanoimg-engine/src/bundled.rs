//! The demo model built into the library (feature `bundled`): `models/nanoimg-emoji`, a small
//! SD 1.x–layout model trained on emoji (see its `MODEL_CARD.md`). It is unpacked once into a
//! folder named by its SHA-256 and from then on loaded like any other model folder, so a
//! binary with no models installed (and no network) can still generate.

use crate::error::{EngineError, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

/// The bundled model's name, as `--model` and `models list` show it.
pub const NAME: &str = "nanoimg-emoji";

/// Total size of the bundled files in bytes.
pub fn size_bytes() -> u64 {
    FILES.iter().map(|(_, b)| b.len() as u64).sum()
}

/// Where [`unpack`] puts the model under `dir`: `nanoimg-emoji-<first 12 hex digits of SHA256>`.
pub fn folder_in(dir: &Path) -> PathBuf {
    dir.join(format!("{NAME}-{}", &SHA256[..12]))
}

/// Unpacks the model into `dir` (once; later calls return the existing folder) and returns its
/// path. The files are written to a temporary folder beside it that is renamed into place, so a
/// crash or a concurrent run never leaves a half-written model where a later run would load it.
pub fn unpack(dir: &Path) -> Result<PathBuf> {
    let target = folder_in(dir);
    if complete(&target) {
        return Ok(target);
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| EngineError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = dir.join(format!(
        ".{NAME}-{}.partial-{}",
        &SHA256[..12],
        std::process::id()
    ));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    for (rel, bytes) in FILES {
        let path = tmp.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let mut f = std::fs::File::create(&path).map_err(io(&path))?;
        f.write_all(bytes).map_err(io(&path))?;
        f.sync_all().map_err(io(&path))?;
    }
    if target.exists() {
        // Damaged (a file removed or truncated): replace it.
        std::fs::remove_dir_all(&target).map_err(io(&target))?;
    }
    match std::fs::rename(&tmp, &target) {
        Ok(()) => Ok(target),
        // Another process unpacked it first: theirs is identical.
        Err(_) if complete(&target) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(target)
        }
        Err(source) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(EngineError::Io { path: target, source })
        }
    }
}

/// Whether `folder` holds every bundled file at its expected size.
fn complete(folder: &Path) -> bool {
    FILES.iter().all(|(rel, bytes)| {
        std::fs::metadata(folder.join(rel)).is_ok_and(|m| m.is_file() && m.len() == bytes.len() as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpacks_once_into_a_folder_named_by_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = unpack(dir.path()).unwrap();
        assert_eq!(path, folder_in(dir.path()));
        assert!(path.join("model_index.json").is_file());
        assert_eq!(SHA256.len(), 64);
        // Nothing but the model folder is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // A second call reuses it; a damaged copy (wrong size) is replaced.
        let before = std::fs::metadata(path.join("model_index.json"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(unpack(dir.path()).unwrap(), path);
        assert_eq!(
            std::fs::metadata(path.join("model_index.json"))
                .unwrap()
                .modified()
                .unwrap(),
            before
        );
        let weights = FILES.iter().find(|(r, _)| r.ends_with(".safetensors")).unwrap().0;
        std::fs::write(path.join(weights), b"truncated").unwrap();
        assert!(!complete(&path));
        assert_eq!(unpack(dir.path()).unwrap(), path);
        assert!(complete(&path));
    }
}
