//! Images in and out of the engine: decoding untrusted bytes with limits, and encoding results as
//! PNG (with text metadata), JPEG or WebP. The CLI and the server both go through here, so an
//! image bomb is refused the same way everywhere.

use crate::error::{EngineError, Result};
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};
use nanoimg_core::InvalidParam;
use std::fmt;
use std::io::Cursor;
use std::str::FromStr;

/// Bounds on an image accepted from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest encoded size in bytes.
    pub max_bytes: usize,
    /// Largest width or height.
    pub max_side: u32,
    /// Largest width × height.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024 * 1024,
            max_side: 8192,
            max_pixels: 8192 * 8192,
        }
    }
}

/// The formats NanoImg reads and writes; serialised by wire name (`png`, `jpeg`, `webp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum OutputFormat {
    #[default]
    Png,
    Jpeg,
    Webp,
}

impl OutputFormat {
    /// The MIME type.
    pub fn media_type(self) -> &'static str {
        match self {
            OutputFormat::Png => "image/png",
            OutputFormat::Jpeg => "image/jpeg",
            OutputFormat::Webp => "image/webp",
        }
    }

    /// The wire name (`png`, `jpeg`, `webp`).
    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Png => "png",
            OutputFormat::Jpeg => "jpeg",
            OutputFormat::Webp => "webp",
        }
    }

    /// The format of a MIME type written by [`OutputFormat::media_type`].
    pub fn from_media_type(m: &str) -> Option<Self> {
        [OutputFormat::Png, OutputFormat::Jpeg, OutputFormat::Webp]
            .into_iter()
            .find(|f| f.media_type() == m)
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OutputFormat {
    type Err = InvalidParam;

    fn from_str(s: &str) -> std::result::Result<Self, InvalidParam> {
        match s.to_ascii_lowercase().as_str() {
            "png" => Ok(OutputFormat::Png),
            "jpeg" | "jpg" => Ok(OutputFormat::Jpeg),
            "webp" => Ok(OutputFormat::Webp),
            _ => Err(InvalidParam::new(
                "output_format",
                format!("{s:?} is not one of png, jpeg, webp"),
            )),
        }
    }
}

impl TryFrom<String> for OutputFormat {
    type Error = InvalidParam;
    fn try_from(s: String) -> std::result::Result<Self, InvalidParam> {
        s.parse()
    }
}

impl From<OutputFormat> for String {
    fn from(f: OutputFormat) -> String {
        f.as_str().to_owned()
    }
}

/// What non-image content starts like, to say what was sent instead of an image.
fn not_an_image(bytes: &[u8]) -> &'static str {
    let head = bytes.trim_ascii_start();
    let starts = |sig: &[u8]| head.len() >= sig.len() && head[..sig.len()].eq_ignore_ascii_case(sig);
    if starts(b"<svg") || starts(b"<?xml") || starts(b"<!doctype") || starts(b"<html") || starts(b"<") {
        "SVG and other markup are not accepted; send a PNG, JPEG or WebP image"
    } else if starts(b"%PDF") {
        "this is a PDF, not an image; send a PNG, JPEG or WebP image"
    } else if starts(b"PK\x03\x04") {
        "this is a ZIP archive, not an image; send a PNG, JPEG or WebP image"
    } else if starts(b"GIF8") {
        "GIF is not accepted; send a PNG, JPEG or WebP image"
    } else {
        "not a PNG, JPEG or WebP image"
    }
}

/// Where the image data of `bytes` ends, by the format's own structure: after PNG's IEND chunk,
/// after the RIFF size of WebP, after JPEG's last end-of-image marker. `None` when the
/// structure cannot be walked (the decoder then reports what is wrong).
fn image_end(bytes: &[u8], format: ImageFormat) -> Option<usize> {
    match format {
        ImageFormat::Png => {
            let mut at = 8usize;
            loop {
                let len = u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
                let kind = bytes.get(at + 4..at + 8)?;
                let end = at.checked_add(12)?.checked_add(len)?;
                if kind == b"IEND" {
                    return (end <= bytes.len()).then_some(end);
                }
                at = end;
            }
        }
        ImageFormat::WebP => {
            let size = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?) as usize;
            let end = 8usize.checked_add(size)?.checked_add(size % 2)?;
            (end <= bytes.len()).then_some(end.min(bytes.len()))
        }
        ImageFormat::Jpeg => bytes.windows(2).rposition(|w| w == [0xFF, 0xD9]).map(|i| i + 2),
        _ => None,
    }
}

/// Refuses a file that is also something else (a polyglot): an archive, document or script
/// after the image's end. PNG and WebP must end where their structure ends; JPEG may carry a
/// trailer (some cameras append one) unless it holds such content.
fn check_trailer(
    bytes: &[u8],
    format: ImageFormat,
    param: &'static str,
) -> std::result::Result<(), InvalidParam> {
    let Some(end) = image_end(bytes, format) else {
        return Ok(());
    };
    let trailer = &bytes[end..];
    if trailer.is_empty() || trailer.iter().all(|b| *b == 0) {
        return Ok(());
    }
    let suspicious = [
        &b"PK\x03\x04"[..],
        b"%PDF",
        b"<script",
        b"<html",
        b"<svg",
        b"<?php",
        b"<!doctype",
        b"MZ",
    ]
    .iter()
    .any(|sig| trailer.windows(sig.len()).any(|w| w.eq_ignore_ascii_case(sig)));
    if format == ImageFormat::Jpeg && !suspicious {
        return Ok(());
    }
    Err(InvalidParam::new(
        param,
        format!(
            "{} bytes follow the end of the image{}; such files (polyglots) are not accepted",
            trailer.len(),
            if suspicious {
                ", holding an archive, document or script"
            } else {
                ""
            }
        ),
    ))
}

/// Decodes untrusted bytes as a PNG, JPEG or WebP image. The type is sniffed from the content,
/// never trusted from a name or header; files that are also something else are refused; sizes
/// are checked before pixels are allocated; EXIF orientation is applied, so the pixels are the
/// right way up once re-encoded without metadata. Errors name `param`, the field the bytes came
/// from.
pub fn decode(
    bytes: &[u8],
    limits: &DecodeLimits,
    param: &'static str,
) -> std::result::Result<DynamicImage, InvalidParam> {
    if bytes.is_empty() {
        return Err(InvalidParam::new(param, "the image is empty"));
    }
    if bytes.len() > limits.max_bytes {
        return Err(InvalidParam::new(
            param,
            format!(
                "the image is {} bytes; the limit is {}",
                bytes.len(),
                limits.max_bytes
            ),
        ));
    }
    let format = match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP)) => f,
        _ => return Err(InvalidParam::new(param, not_an_image(bytes))),
    };
    check_trailer(bytes, format, param)?;
    let reader = ImageReader::with_format(Cursor::new(bytes), format);
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| InvalidParam::new(param, format!("cannot read the image header: {e}")))?;
    if w == 0 || h == 0 {
        return Err(InvalidParam::new(param, "the image has no pixels"));
    }
    if w > limits.max_side || h > limits.max_side || u64::from(w) * u64::from(h) > limits.max_pixels {
        return Err(InvalidParam::new(
            param,
            format!(
                "the image is {w}x{h}; the limits are {} pixels a side and {} pixels in all",
                limits.max_side, limits.max_pixels
            ),
        ));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_image_width = Some(limits.max_side);
    decoder_limits.max_image_height = Some(limits.max_side);
    // RGBA16 is the widest buffer a decoder may need, plus slack for its own state.
    decoder_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8) + (16 << 20));
    reader.limits(decoder_limits);
    let fail = |e: image::ImageError| InvalidParam::new(param, format!("cannot decode the image: {e}"));
    let mut decoder = reader.into_decoder().map_err(fail)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(fail)?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// A mask from a decoded image: white = repaint. If the image has an alpha channel that is not
/// fully opaque, transparent pixels are the area to repaint (the OpenAI `mask` convention);
/// otherwise the luminance is used.
pub fn mask_from(img: &DynamicImage) -> image::GrayImage {
    if img.color().has_alpha() {
        let rgba = img.to_rgba8();
        if rgba.pixels().any(|p| p.0[3] != 255) {
            return image::GrayImage::from_fn(rgba.width(), rgba.height(), |x, y| {
                image::Luma([255 - rgba.get_pixel(x, y).0[3]])
            });
        }
    }
    img.to_luma8()
}

/// Encodes `img`. `quality` (0–100) applies to JPEG; WebP is written lossless (the pure-Rust
/// encoder has no lossy mode) and PNG is lossless by definition. `text` becomes PNG iTXt chunks
/// and is dropped for the other formats.
pub fn encode(
    img: &RgbImage,
    format: OutputFormat,
    quality: Option<u8>,
    text: &[(&str, String)],
) -> Result<Vec<u8>> {
    let fail = |e: &dyn fmt::Display| EngineError::Encode(format!("{format}: {e}"));
    let mut out = Vec::new();
    match format {
        OutputFormat::Png => {
            let mut enc = png::Encoder::new(&mut out, img.width(), img.height());
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            for (key, value) in text {
                enc.add_itxt_chunk((*key).to_owned(), value.clone())
                    .map_err(|e| fail(&e))?;
            }
            let mut writer = enc.write_header().map_err(|e| fail(&e))?;
            writer.write_image_data(img.as_raw()).map_err(|e| fail(&e))?;
            writer.finish().map_err(|e| fail(&e))?;
        }
        OutputFormat::Jpeg => {
            let q = quality.unwrap_or(90).clamp(1, 100);
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, q)
                .encode_image(img)
                .map_err(|e| fail(&e))?;
        }
        OutputFormat::Webp => {
            image::codecs::webp::WebPEncoder::new_lossless(&mut out)
                .encode(
                    img.as_raw(),
                    img.width(),
                    img.height(),
                    image::ExtendedColorType::Rgb8,
                )
                .map_err(|e| fail(&e))?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RgbImage {
        RgbImage::from_fn(24, 16, |x, y| image::Rgb([x as u8 * 10, y as u8 * 15, 128]))
    }

    #[test]
    fn every_format_round_trips_through_decode() {
        let img = sample();
        for f in [OutputFormat::Png, OutputFormat::Jpeg, OutputFormat::Webp] {
            let bytes = encode(&img, f, Some(95), &[("k", "v".into())]).unwrap();
            let back = decode(&bytes, &DecodeLimits::default(), "image")
                .unwrap()
                .to_rgb8();
            assert_eq!(back.dimensions(), (24, 16), "{f}");
            if f != OutputFormat::Jpeg {
                assert_eq!(back, img, "{f} is lossless");
            }
        }
    }

    #[test]
    fn hostile_input_is_refused_by_name() {
        let limits = DecodeLimits {
            max_bytes: 1 << 20,
            max_side: 100,
            max_pixels: 5000,
        };
        let e = decode(b"", &limits, "image").unwrap_err();
        assert_eq!(e.param, "image");
        let e = decode(b"GIF89a....", &limits, "mask").unwrap_err();
        assert!(e.message.contains("GIF is not accepted"), "{e}");
        let e = decode(b"  <svg xmlns='http://www.w3.org/2000/svg'/>", &limits, "image").unwrap_err();
        assert!(e.message.starts_with("SVG and other markup"), "{e}");
        let e = decode(b"%PDF-1.7", &limits, "image").unwrap_err();
        assert!(e.message.contains("PDF"), "{e}");
        let big = encode(&RgbImage::new(101, 10), OutputFormat::Png, None, &[]).unwrap();
        assert!(decode(&big, &limits, "image")
            .unwrap_err()
            .message
            .contains("101x10"));
        let many = encode(&RgbImage::new(100, 60), OutputFormat::Png, None, &[]).unwrap();
        assert!(decode(&many, &limits, "image")
            .unwrap_err()
            .message
            .contains("100x60"));
        let mut truncated = encode(&sample(), OutputFormat::Png, None, &[]).unwrap();
        truncated.truncate(truncated.len() / 2);
        assert!(decode(&truncated, &limits, "image").is_err());
        let too_long = vec![0x89; (1 << 20) + 1];
        assert!(decode(&too_long, &limits, "image")
            .unwrap_err()
            .message
            .contains("bytes"));
    }

    #[test]
    fn transparent_pixels_are_the_area_to_repaint() {
        let mut rgba = image::RgbaImage::new(4, 1);
        rgba.put_pixel(1, 0, image::Rgba([0, 0, 0, 255]));
        let m = mask_from(&DynamicImage::ImageRgba8(rgba));
        assert_eq!(m.as_raw(), &[255, 0, 255, 255]);
    }

    #[test]
    fn files_that_are_also_something_else_are_refused() {
        let limits = DecodeLimits::default();
        let img = sample();
        let zip = b"PK\x03\x04\x14\x00\x00\x00payload.txt";
        for f in [OutputFormat::Png, OutputFormat::Webp, OutputFormat::Jpeg] {
            let clean = encode(&img, f, Some(90), &[]).unwrap();
            assert!(decode(&clean, &limits, "image").is_ok(), "{f}");
            let mut polyglot = clean.clone();
            polyglot.extend_from_slice(zip);
            let e = decode(&polyglot, &limits, "image").unwrap_err();
            assert!(e.message.contains("polyglots"), "{f}: {e}");
            assert!(e.message.contains("archive"), "{f}: {e}");
            // A trailer of anything else: refused for PNG and WebP, tolerated for JPEG.
            let mut trailer = clean.clone();
            trailer.extend_from_slice(b"camera maker notes");
            assert_eq!(
                decode(&trailer, &limits, "image").is_ok(),
                f == OutputFormat::Jpeg,
                "{f}"
            );
            // Zero padding is not content.
            let mut padded = clean;
            padded.extend_from_slice(&[0; 16]);
            assert!(decode(&padded, &limits, "image").is_ok(), "{f}");
        }
    }

    /// A JPEG of `img` with an EXIF block saying `orientation`.
    fn jpeg_with_orientation(img: &RgbImage, orientation: u16) -> Vec<u8> {
        let jpeg = encode(img, OutputFormat::Jpeg, Some(95), &[]).unwrap();
        // TIFF header (little-endian), one IFD entry: 0x0112 Orientation, SHORT, 1 value.
        let mut tiff = b"II*\x00\x08\x00\x00\x00\x01\x00".to_vec();
        tiff.extend([0x12, 0x01, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00]);
        tiff.extend(orientation.to_le_bytes());
        tiff.extend([0, 0, 0, 0, 0, 0]);
        let mut app1 = b"Exif\x00\x00".to_vec();
        app1.extend(tiff);
        let mut out = vec![0xFF, 0xD8, 0xFF, 0xE1];
        out.extend(((app1.len() + 2) as u16).to_be_bytes());
        out.extend(app1);
        out.extend(&jpeg[2..]);
        out
    }

    #[test]
    fn exif_orientation_is_applied() {
        let img = sample(); // 24 × 16, brighter to the right
        let limits = DecodeLimits::default();
        let upright = decode(&jpeg_with_orientation(&img, 1), &limits, "image").unwrap();
        assert_eq!((upright.width(), upright.height()), (24, 16));
        // 6 = the camera was turned: the stored pixels must be rotated 90° clockwise.
        let turned = decode(&jpeg_with_orientation(&img, 6), &limits, "image")
            .unwrap()
            .to_rgb8();
        assert_eq!(turned.dimensions(), (16, 24));
        // Rotated clockwise, the original's left column (dark red) is now the top row.
        let top = turned.get_pixel(8, 0).0[0];
        let bottom = turned.get_pixel(8, 23).0[0];
        assert!(top < bottom, "top {top}, bottom {bottom}");
    }
}
