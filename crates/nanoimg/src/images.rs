//! Reading user images with limits, and writing PNGs atomically with generation metadata.

use anyhow::{Context, Result};
use image::{DynamicImage, GrayImage, RgbImage};
use nanoimg_engine::codec::{self, DecodeLimits};
use std::io::Write;
use std::path::Path;

/// A file's bytes, refused before reading if it is over the size limit.
pub fn read_limited(path: &Path, limits: &DecodeLimits) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .len();
    if len > limits.max_bytes as u64 {
        anyhow::bail!(
            "{}: {len} bytes; the limit is {}",
            path.display(),
            limits.max_bytes
        );
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn read(path: &Path) -> Result<DynamicImage> {
    let limits = DecodeLimits::default();
    let bytes = read_limited(path, &limits)?;
    // The type comes from the content, never from the file name.
    codec::decode(&bytes, &limits, "image").map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message))
}

/// The file's bytes and its RGB picture.
pub fn read_rgb_with_bytes(path: &Path) -> Result<(Vec<u8>, RgbImage)> {
    let limits = DecodeLimits::default();
    let bytes = read_limited(path, &limits)?;
    let img = codec::decode(&bytes, &limits, "image")
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message))?;
    Ok((bytes, img.to_rgb8()))
}

/// Reads a mask: white = repaint. Uses the alpha channel if the image has one and it is not
/// fully opaque (transparent = repaint), else the luminance.
pub fn read_mask(path: &Path) -> Result<GrayImage> {
    Ok(codec::mask_from(&read(path)?))
}

/// Writes `bytes` via a temporary file renamed into place, so a crash never leaves a
/// half-written image.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile_in(dir)?;
    tmp.file.write_all(bytes)?;
    tmp.file.flush()?;
    tmp.file
        .persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

struct Tmp {
    file: tempfile::NamedTempFile,
}

fn tempfile_in(dir: &Path) -> Result<Tmp> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(".nanoimg-").suffix(".png.tmp");
    // Temporary files are private (0600); the finished image is an ordinary file.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let file = builder
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    Ok(Tmp { file })
}

/// Reads the text chunks of a PNG (for tests and `models` tooling).
#[allow(dead_code)]
pub fn read_png_text(path: &Path) -> Result<Vec<(String, String)>> {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path)?));
    let reader = decoder.read_info()?;
    let info = reader.info();
    let mut out: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|t| (t.keyword.clone(), t.text.clone()))
        .collect();
    for t in &info.utf8_text {
        out.push((t.keyword.clone(), t.get_text()?));
    }
    Ok(out)
}
