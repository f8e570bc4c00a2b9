//! Images in and out of the engine: decoding untrusted bytes with limits, and encoding results as
//! PNG (with text metadata), JPEG or WebP. The CLI and the server both go through here, so an
//! image bomb is refused the same way everywhere.

use crate::error::{EngineError, Result};
use image::{DynamicImage, ImageFormat, ImageReader, RgbImage};
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

/// Decodes untrusted bytes as a PNG, JPEG or WebP image. The type is sniffed from the content,
/// never trusted from a name or header; sizes are checked before pixels are allocated. Errors
/// name `param`, the field the bytes came from.
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
        _ => return Err(InvalidParam::new(param, "not a PNG, JPEG or WebP image")),
    };
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
    reader
        .decode()
        .map_err(|e| InvalidParam::new(param, format!("cannot decode the image: {e}")))
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
        assert!(e.message.contains("not a PNG"), "{e}");
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
}
