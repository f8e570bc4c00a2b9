//! Helpers shared by the CLI test binaries.

use std::process::{Command, Output};
use std::sync::OnceLock;

/// The `nanoimg` binary with its own data directory and no model chosen by the environment.
pub fn bin() -> Command {
    static HOME: OnceLock<tempfile::TempDir> = OnceLock::new();
    let home = HOME.get_or_init(|| tempfile::tempdir().unwrap());
    let mut c = Command::new(env!("CARGO_BIN_EXE_nanoimg"));
    c.env_remove("NANOIMG_MODEL")
        .env_remove("NANOIMG_MODELS")
        .env("NANOIMG_HOME", home.path());
    c
}

/// Asserts that the command succeeded (printing its output if not) and returns its stdout.
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// Mean absolute difference per channel, in 8-bit levels, of two pictures of the same size.
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
