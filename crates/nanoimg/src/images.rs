//! Reading user images with limits, and writing PNGs atomically with generation metadata.

use anyhow::{bail, Context, Result};
use image::{DynamicImage, GrayImage, ImageReader, RgbImage};
use std::io::Write;
use std::path::Path;

/// Largest width or height of an input image.
const MAX_INPUT_SIDE: u32 = 8192;
/// Most bytes the decoder may allocate for one input image.
const MAX_INPUT_ALLOC: u64 = 256 * 1024 * 1024;

/// Largest input file accepted, in bytes.
const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;

fn read(path: &Path) -> Result<DynamicImage> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .len();
    if len > MAX_INPUT_BYTES {
        bail!("{}: {len} bytes; the limit is {MAX_INPUT_BYTES}", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    // The type comes from the content, never from the file name.
    let format = match image::guess_format(&bytes) {
        Ok(f @ (image::ImageFormat::Png | image::ImageFormat::Jpeg)) => f,
        _ => bail!("{}: not a PNG or JPEG image", path.display()),
    };
    let mut reader = ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_INPUT_SIDE);
    limits.max_image_height = Some(MAX_INPUT_SIDE);
    limits.max_alloc = Some(MAX_INPUT_ALLOC);
    reader.limits(limits);
    reader
        .decode()
        .with_context(|| format!("{}: cannot decode image", path.display()))
}

/// Reads an RGB image (alpha dropped), type sniffed from the content.
pub fn read_rgb(path: &Path) -> Result<RgbImage> {
    Ok(read(path)?.to_rgb8())
}

/// Reads a mask: white = repaint. Uses the alpha channel if the image has one and it is not
/// fully opaque (transparent = repaint), else the luminance.
pub fn read_mask(path: &Path) -> Result<GrayImage> {
    let img = read(path)?;
    if img.color().has_alpha() {
        let rgba = img.to_rgba8();
        if rgba.pixels().any(|p| p.0[3] != 255) {
            return Ok(GrayImage::from_fn(rgba.width(), rgba.height(), |x, y| {
                image::Luma([255 - rgba.get_pixel(x, y).0[3]])
            }));
        }
    }
    Ok(img.to_luma8())
}

/// Writes `img` as a PNG with UTF-8 text chunks, via a temporary file renamed into place so a
/// crash never leaves a half-written image.
pub fn write_png(path: &Path, img: &RgbImage, text: &[(&str, String)]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile_in(dir)?;
    {
        let w = std::io::BufWriter::new(tmp.file.as_file_mut());
        let mut enc = png::Encoder::new(w, img.width(), img.height());
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        for (key, value) in text {
            enc.add_itxt_chunk((*key).to_owned(), value.clone())
                .context("adding PNG text")?;
        }
        let mut writer = enc.write_header().context("writing PNG header")?;
        writer
            .write_image_data(img.as_raw())
            .context("writing PNG data")?;
        writer.finish().context("finishing PNG")?;
    }
    tmp.file.as_file_mut().flush()?;
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
