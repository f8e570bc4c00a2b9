//! With the `bundled` feature, embeds the demo model folder (`models/nanoimg-emoji` at the
//! workspace root) in the library: writes `$OUT_DIR/bundled.rs` with one `include_bytes!` per
//! file and the SHA-256 of the whole folder (paths and contents), which names the folder the
//! files are unpacked to.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

fn files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("readable directory entry").path();
        if path.is_dir() {
            files(root, &path, out);
        } else {
            out.push(path.strip_prefix(root).expect("under root").to_owned());
        }
    }
}

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_BUNDLED").is_none() {
        return;
    }
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest.join("../../models/nanoimg-emoji");
    println!("cargo::rerun-if-changed={}", root.display());
    assert!(
        root.join("model_index.json").is_file(),
        "the `bundled` feature embeds {}, which is missing (see training/README.md)",
        root.display()
    );
    let root = root.canonicalize().expect("canonical path");
    let mut list = Vec::new();
    files(&root, &root, &mut list);
    list.sort();
    let mut hash = Sha256::new();
    let mut code =
        String::from("/// Every file of the bundled model: path relative to its folder, contents.\n");
    code.push_str("pub const FILES: &[(&str, &[u8])] = &[\n");
    for rel in &list {
        let rel_str = rel.to_str().expect("UTF-8 file names").replace('\\', "/");
        let bytes = std::fs::read(root.join(rel)).expect("readable model file");
        hash.update(rel_str.as_bytes());
        hash.update([0]);
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(&bytes);
        code.push_str(&format!(
            "    ({rel_str:?}, include_bytes!({:?})),\n",
            root.join(rel).to_str().expect("UTF-8 path")
        ));
    }
    code.push_str("];\n");
    let digest: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    code.push_str(&format!(
        "/// SHA-256 over the bundled files' paths, lengths and contents.\npub const SHA256: &str = {digest:?};\n"
    ));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo")).join("bundled.rs");
    std::fs::write(out, code).expect("writable OUT_DIR");
}
