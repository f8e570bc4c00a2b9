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

impl Limits {
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
}
