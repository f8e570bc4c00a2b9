//! Reading user images with limits, and writing PNGs atomically with generation metadata.

use anyhow::{Context, Result};
use image::{DynamicImage, GrayImage, RgbImage};
use nanoimg_engine::codec::{self, DecodeLimits, OutputFormat};
use std::io::Write;
use std::path::Path;

fn read(path: &Path) -> Result<DynamicImage> {
    let limits = DecodeLimits::default();
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
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    // The type comes from the content, never from the file name.
    codec::decode(&bytes, &limits, "image").map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message))
}

/// Reads an RGB image (alpha dropped), type sniffed from the content.
pub fn read_rgb(path: &Path) -> Result<RgbImage> {
    Ok(read(path)?.to_rgb8())
}

/// Reads a mask: white = repaint. Uses the alpha channel if the image has one and it is not
/// fully opaque (transparent = repaint), else the luminance.
pub fn read_mask(path: &Path) -> Result<GrayImage> {
    Ok(codec::mask_from(&read(path)?))
}

/// Writes `img` as a PNG with UTF-8 text chunks, via a temporary file renamed into place so a
/// crash never leaves a half-written image.
pub fn write_png(path: &Path, img: &RgbImage, text: &[(&str, String)]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let bytes = codec::encode(img, OutputFormat::Png, None, text)?;
    let mut tmp = tempfile_in(dir)?;
    tmp.file.write_all(&bytes)?;
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
