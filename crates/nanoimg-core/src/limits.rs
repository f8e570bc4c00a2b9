//! Caps on what one generation may ask for, so a single request cannot exhaust the machine.

use crate::{ImageSize, InvalidParam};
use serde::{Deserialize, Serialize};

/// Upper bounds on a generation request; every entry point validates against one of these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Largest width or height in pixels.
    pub max_side: u32,
    /// Smallest width or height in pixels.
    pub min_side: u32,
    /// Largest width × height.
    pub max_pixels: u64,
    /// Most denoising steps.
    pub max_steps: u32,
    /// Most images per request.
    pub max_images: u32,
    /// Largest classifier-free guidance scale.
    pub max_guidance: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_side: 2048,
            min_side: 64,
            max_pixels: 2048 * 2048,
            max_steps: 150,
            max_images: 8,
            max_guidance: 30.0,
        }
    }
}

/// Width and height must be multiples of this (the VAE downsamples by 8).
pub const SIZE_MULTIPLE: u32 = 8;

/// The size nearest `w`×`h` in its aspect ratio with both sides within `min_side..=max_side`,
/// at most `max_pixels`, and multiples of 8. A picture too small for the model is drawn larger,
/// one too large smaller.
pub fn fit_size(w: u32, h: u32, min_side: u32, max_side: u32, max_pixels: u64) -> (u32, u32) {
    let (fw, fh) = (f64::from(w.max(1)), f64::from(h.max(1)));
    let mut s = (f64::from(min_side) / fw.min(fh)).max(1.0);
    s = s
        .min(f64::from(max_side) / fw.max(fh))
        .min((max_pixels as f64 / (fw * fh)).sqrt());
    let side = |v: f64| {
        let v = ((v * s).round() as u32 / 8 * 8).max(8);
        v.clamp(min_side.div_ceil(8) * 8, (max_side / 8 * 8).max(8))
    };
    (side(fw), side(fh))
}

impl Limits {
    /// The size to draw a `w`×`h` picture at within these limits ([`fit_size`]).
    pub fn fit(&self, w: u32, h: u32) -> (u32, u32) {
        fit_size(w, h, self.min_side, self.max_side, self.max_pixels)
    }

    /// Checks an output size: within the side and pixel caps, and a multiple of 8.
    pub fn check_size(&self, size: ImageSize) -> Result<(), InvalidParam> {
        for (name, v) in [("width", size.width), ("height", size.height)] {
            if v < self.min_side || v > self.max_side {
                return Err(InvalidParam::new(
                    "size",
                    format!(
                        "{name} {v} is outside {}..={} pixels",
                        self.min_side, self.max_side
                    ),
                ));
            }
            if v % SIZE_MULTIPLE != 0 {
                return Err(InvalidParam::new(
                    "size",
                    format!("{name} {v} must be a multiple of {SIZE_MULTIPLE}"),
                ));
            }
        }
        if size.pixels() > self.max_pixels {
            return Err(InvalidParam::new(
                "size",
                format!(
                    "{size} is {} pixels; the limit is {}",
                    size.pixels(),
                    self.max_pixels
                ),
            ));
        }
        Ok(())
    }

    /// Checks the number of denoising steps.
    pub fn check_steps(&self, steps: u32) -> Result<(), InvalidParam> {
        if steps == 0 || steps > self.max_steps {
            return Err(InvalidParam::new(
                "steps",
                format!("{steps} is outside 1..={}", self.max_steps),
            ));
        }
        Ok(())
    }

    /// Checks the number of images requested.
    pub fn check_images(&self, n: u32) -> Result<(), InvalidParam> {
        if n == 0 || n > self.max_images {
            return Err(InvalidParam::new(
                "n",
                format!("{n} is outside 1..={}", self.max_images),
            ));
        }
        Ok(())
    }

    /// Checks the guidance scale (0 turns guidance off, as Turbo models want).
    pub fn check_guidance(&self, g: f64) -> Result<(), InvalidParam> {
        if !g.is_finite() || g < 0.0 || g > self.max_guidance {
            return Err(InvalidParam::new(
                "guidance",
                format!("{g} is outside 0..={}", self.max_guidance),
            ));
        }
        Ok(())
    }

    /// Checks an img2img / inpaint strength.
    pub fn check_strength(&self, s: f64) -> Result<(), InvalidParam> {
        if !s.is_finite() || s <= 0.0 || s > 1.0 {
            return Err(InvalidParam::new(
                "strength",
                format!("{s} must be greater than 0 and at most 1"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_limits_accept_common_sizes() {
        let l = Limits::default();
        for s in ["512x512", "1024x1024", "768x512", "64x64"] {
            l.check_size(s.parse().unwrap()).unwrap();
        }
    }

    #[test]
    fn sizes_outside_caps_are_rejected_with_reason() {
        let l = Limits::default();
        let e = l.check_size(ImageSize::new(4096, 64)).unwrap_err();
        assert!(e.message.contains("width 4096"), "{e}");
        let e = l.check_size(ImageSize::new(513, 512)).unwrap_err();
        assert!(e.message.contains("multiple of 8"), "{e}");
        let l = Limits {
            max_pixels: 100_000,
            ..Limits::default()
        };
        let e = l.check_size(ImageSize::new(512, 512)).unwrap_err();
        assert!(e.message.contains("262144 pixels"), "{e}");
    }

    #[test]
    fn steps_images_guidance_strength_caps() {
        let l = Limits::default();
        assert_eq!(l.check_steps(0).unwrap_err().param, "steps");
        assert_eq!(l.check_steps(151).unwrap_err().param, "steps");
        l.check_steps(1).unwrap();
        assert_eq!(l.check_images(9).unwrap_err().param, "n");
        assert_eq!(l.check_guidance(f64::NAN).unwrap_err().param, "guidance");
        assert_eq!(l.check_guidance(-1.0).unwrap_err().param, "guidance");
        l.check_guidance(0.0).unwrap();
        assert_eq!(l.check_strength(0.0).unwrap_err().param, "strength");
        assert_eq!(l.check_strength(1.5).unwrap_err().param, "strength");
        l.check_strength(1.0).unwrap();
    }

    #[test]
    fn sizes_fit_the_model() {
        // Already fine.
        assert_eq!(fit_size(512, 384, 64, 1536, 1 << 22), (512, 384));
        // Rounded down to multiples of 8.
        assert_eq!(fit_size(515, 389, 64, 1536, 1 << 22), (512, 384));
        // Too small: scaled up to the smallest side, aspect kept.
        assert_eq!(fit_size(48, 32, 64, 1536, 1 << 22), (96, 64));
        // Too large: scaled down to the largest side, and to the pixel budget.
        assert_eq!(fit_size(4000, 2000, 64, 1536, 1 << 40), (1536, 768));
        assert_eq!(fit_size(2048, 2048, 64, 4096, 1024 * 1024), (1024, 1024));
        // Extreme ratios stay within the bounds even when the ratio cannot be kept.
        let (w, h) = fit_size(4000, 10, 64, 1536, 1 << 22);
        assert!((64..=1536).contains(&w) && (64..=1536).contains(&h), "{w}x{h}");
    }
}
