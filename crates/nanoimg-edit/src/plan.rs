//! `EditPlan`: what an edit will do, as data. A plan is a versioned list of operations with
//! typed arguments; [`EditPlan::validate`] checks every argument's range and follows the image's
//! size through the plan, so a plan that passes can run on that image within the limits. No
//! operation names anything but the current image: there is nothing in the vocabulary that could
//! read or write another object, fetch a URL, touch a file, or change a key.

use crate::EditError;
use serde::{Deserialize, Serialize};

/// The plan format's version; a plan with another is refused.
pub const PLAN_VERSION: u32 = 1;

/// The published JSON Schema of the plan (draft 2020-12); a test keeps it true to the parser.
/// Also what an LLM planner is given as its tool's parameters.
pub const SCHEMA: &str = include_str!("../schema/edit-plan.schema.json");

/// A list of operations, run in order on one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditPlan {
    pub version: u32,
    pub ops: Vec<Op>,
}

/// A part of the image, in fractions of its width and height (0–1), from the top left.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Area {
    pub x: f32,
    pub y: f32,
    pub width: f32,
    pub height: f32,
}

/// Where a crop to an aspect ratio keeps the picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anchor {
    #[default]
    Center,
    Top,
    Bottom,
    Left,
    Right,
}

/// Where a caption goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Place {
    Top,
    Center,
    #[default]
    Bottom,
}

/// Longest caption, in characters.
pub const MAX_CAPTION_CHARS: usize = 200;

/// A caption's line height as a fraction of the image's height, when the plan does not say.
pub const CAPTION_SIZE: f32 = 0.08;

fn caption_size() -> f32 {
    CAPTION_SIZE
}

fn white() -> Rgb {
    Rgb([255, 255, 255])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Axis {
    Horizontal,
    Vertical,
}

/// An sRGB colour, for fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Rgb(pub [u8; 3]);

/// One operation. Pixel operations run here, exactly; generative ones go to the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    // Geometry.
    Crop {
        area: Area,
    },
    /// The largest crop with this aspect ratio, kept at `anchor`.
    CropAspect {
        width: u32,
        height: u32,
        #[serde(default)]
        anchor: Anchor,
    },
    Resize {
        width: u32,
        height: u32,
    },
    Scale {
        factor: f32,
    },
    /// Clockwise. Multiples of 90 are exact; other angles grow the canvas, filled with `fill`.
    Rotate {
        degrees: f32,
        #[serde(default)]
        fill: Rgb,
    },
    Flip {
        axis: Axis,
    },
    /// Grows the canvas by these many pixels a side, filled with `fill`.
    Pad {
        left: u32,
        top: u32,
        right: u32,
        bottom: u32,
        #[serde(default)]
        fill: Rgb,
    },
    // Tone and colour; `amount` is −1 to 1 (0 changes nothing).
    Brightness {
        amount: f32,
    },
    Contrast {
        amount: f32,
    },
    Saturation {
        amount: f32,
    },
    /// Warmer (positive) or cooler (negative).
    Temperature {
        amount: f32,
    },
    Hue {
        degrees: f32,
    },
    Gamma {
        gamma: f32,
    },
    /// Photographic stops, in linear light.
    Exposure {
        stops: f32,
    },
    // Without arguments (written `{}` so that unknown fields are refused here too).
    Grayscale {},
    Sepia {},
    Invert {},
    // Filters.
    Blur {
        sigma: f32,
    },
    Sharpen {
        amount: f32,
    },
    Vignette {
        strength: f32,
    },
    /// Text in the bundled font (DejaVu Sans Bold), centred at `place`, lines `size` of the
    /// image's height (wrapped, then shrunk, to fit), outlined in the contrasting colour.
    Caption {
        text: String,
        #[serde(default)]
        place: Place,
        #[serde(default = "caption_size")]
        size: f32,
        #[serde(default = "white")]
        color: Rgb,
    },
    // Generative (the engine): a prompt and how much may change.
    Restyle {
        prompt: String,
        strength: f32,
    },
    Inpaint {
        area: Area,
        prompt: String,
    },
    Outpaint {
        left: u32,
        top: u32,
        right: u32,
        bottom: u32,
        prompt: String,
    },
    Variation {
        strength: f32,
    },
    /// The user's words as an instruction to a model that follows edit instructions (FLUX.1
    /// Kontext), which reads the image and changes what the words ask.
    Instruct {
        instruction: String,
    },
    Upscale {
        factor: u32,
    },
}

/// What a plan may do to an image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanLimits {
    pub max_ops: usize,
    /// Largest side and pixel count at any point of the plan.
    pub max_side: u32,
    pub max_pixels: u64,
    pub max_prompt_bytes: usize,
}

impl Default for PlanLimits {
    fn default() -> Self {
        Self {
            max_ops: 16,
            max_side: 4096,
            max_pixels: 4096 * 4096,
            max_prompt_bytes: 4000,
        }
    }
}

/// Why an operation's arguments are refused, naming the argument.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OpError {
    #[error("{arg} must be from {lo} to {hi}, not {value}")]
    OutOfRange {
        arg: &'static str,
        lo: f32,
        hi: f32,
        value: f32,
    },
    #[error("prompt must not be empty")]
    EmptyPrompt,
    #[error("prompt is {bytes} bytes; the limit is {limit}")]
    PromptTooLong { bytes: usize, limit: usize },
    #[error("area reaches past the image's edge")]
    AreaPastEdge,
    #[error("area is less than a pixel of a {width}×{height} image")]
    AreaUnderPixel { width: u32, height: u32 },
    #[error("extend by at least one pixel on some side")]
    NothingToExtend,
    #[error("an aspect ratio's terms are whole numbers from 1 to 100")]
    AspectTerms,
    #[error("the caption's text is empty")]
    EmptyCaption,
    #[error("the caption is {chars} characters; the limit is {MAX_CAPTION_CHARS}")]
    CaptionTooLong { chars: usize },
    #[error("the caption holds control characters; it is one line of text")]
    CaptionControl,
    #[error("factor must be 2, 3 or 4, not {0}")]
    UpscaleFactor(u32),
    #[error("the image would have no pixels")]
    NoPixels,
    #[error("the image would be {width}×{height}; the limit is {max_side} a side and {max_pixels} pixels")]
    TooLarge {
        width: u32,
        height: u32,
        max_side: u32,
        max_pixels: u64,
    },
}

impl Op {
    /// The operation's name as it appears in JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Crop { .. } => "crop",
            Op::CropAspect { .. } => "crop_aspect",
            Op::Resize { .. } => "resize",
            Op::Scale { .. } => "scale",
            Op::Rotate { .. } => "rotate",
            Op::Flip { .. } => "flip",
            Op::Pad { .. } => "pad",
            Op::Brightness { .. } => "brightness",
            Op::Contrast { .. } => "contrast",
            Op::Saturation { .. } => "saturation",
            Op::Temperature { .. } => "temperature",
            Op::Hue { .. } => "hue",
            Op::Gamma { .. } => "gamma",
            Op::Exposure { .. } => "exposure",
            Op::Grayscale {} => "grayscale",
            Op::Sepia {} => "sepia",
            Op::Invert {} => "invert",
            Op::Blur { .. } => "blur",
            Op::Sharpen { .. } => "sharpen",
            Op::Vignette { .. } => "vignette",
            Op::Caption { .. } => "caption",
            Op::Restyle { .. } => "restyle",
            Op::Inpaint { .. } => "inpaint",
            Op::Outpaint { .. } => "outpaint",
            Op::Variation { .. } => "variation",
            Op::Instruct { .. } => "instruct",
            Op::Upscale { .. } => "upscale",
        }
    }

    /// Whether the engine runs it.
    pub fn is_generative(&self) -> bool {
        matches!(
            self,
            Op::Restyle { .. }
                | Op::Inpaint { .. }
                | Op::Outpaint { .. }
                | Op::Variation { .. }
                | Op::Instruct { .. }
                | Op::Upscale { .. }
        )
    }

    /// Checks the arguments and returns the size the image has afterwards.
    pub fn check(&self, (w, h): (u32, u32), limits: &PlanLimits) -> Result<(u32, u32), OpError> {
        let within = |value: f32, lo: f32, hi: f32, arg: &'static str| -> Result<(), OpError> {
            if value.is_finite() && (lo..=hi).contains(&value) {
                Ok(())
            } else {
                Err(OpError::OutOfRange { arg, lo, hi, value })
            }
        };
        let prompt = |p: &str| -> Result<(), OpError> {
            if p.trim().is_empty() {
                Err(OpError::EmptyPrompt)
            } else if p.len() > limits.max_prompt_bytes {
                Err(OpError::PromptTooLong {
                    bytes: p.len(),
                    limit: limits.max_prompt_bytes,
                })
            } else {
                Ok(())
            }
        };
        let area = |a: &Area| -> Result<(u32, u32), OpError> {
            for (v, what) in [
                (a.x, "area.x"),
                (a.y, "area.y"),
                (a.width, "area.width"),
                (a.height, "area.height"),
            ] {
                within(v, 0.0, 1.0, what)?;
            }
            if a.x + a.width > 1.0 + 1e-4 || a.y + a.height > 1.0 + 1e-4 {
                return Err(OpError::AreaPastEdge);
            }
            let r = crate::ops::area_rect(a, w, h);
            if r.2 == 0 || r.3 == 0 {
                return Err(OpError::AreaUnderPixel { width: w, height: h });
            }
            Ok((r.2, r.3))
        };
        let grown = |l: u32, t: u32, r: u32, b: u32| -> Result<(u32, u32), OpError> {
            let (nw, nh) = (
                u64::from(w) + u64::from(l) + u64::from(r),
                u64::from(h) + u64::from(t) + u64::from(b),
            );
            if (l, t, r, b) == (0, 0, 0, 0) && matches!(self, Op::Outpaint { .. }) {
                return Err(OpError::NothingToExtend);
            }
            Ok((
                nw.min(u64::from(u32::MAX)) as u32,
                nh.min(u64::from(u32::MAX)) as u32,
            ))
        };
        let size = match self {
            Op::Crop { area: a } => area(a)?,
            Op::CropAspect { width, height, .. } => {
                if *width == 0 || *height == 0 || *width > 100 || *height > 100 {
                    return Err(OpError::AspectTerms);
                }
                crate::ops::aspect_size(w, h, *width, *height)
            }
            Op::Resize { width, height } => (*width, *height),
            Op::Scale { factor } => {
                within(*factor, 0.01, 8.0, "factor")?;
                crate::ops::scaled(w, h, *factor)
            }
            Op::Rotate { degrees, .. } => {
                within(*degrees, -360.0, 360.0, "degrees")?;
                crate::ops::rotated_size(w, h, *degrees)
            }
            Op::Flip { .. } | Op::Grayscale {} | Op::Sepia {} | Op::Invert {} => (w, h),
            Op::Pad {
                left,
                top,
                right,
                bottom,
                ..
            } => grown(*left, *top, *right, *bottom)?,
            Op::Brightness { amount }
            | Op::Contrast { amount }
            | Op::Saturation { amount }
            | Op::Temperature { amount } => {
                within(*amount, -1.0, 1.0, "amount")?;
                (w, h)
            }
            Op::Hue { degrees } => {
                within(*degrees, -180.0, 180.0, "degrees")?;
                (w, h)
            }
            Op::Gamma { gamma } => {
                within(*gamma, 0.1, 10.0, "gamma")?;
                (w, h)
            }
            Op::Exposure { stops } => {
                within(*stops, -5.0, 5.0, "stops")?;
                (w, h)
            }
            Op::Blur { sigma } => {
                within(*sigma, 0.1, 50.0, "sigma")?;
                (w, h)
            }
            Op::Sharpen { amount } => {
                within(*amount, 0.05, 5.0, "amount")?;
                (w, h)
            }
            Op::Vignette { strength } => {
                within(*strength, 0.0, 1.0, "strength")?;
                (w, h)
            }
            Op::Caption { text, size, .. } => {
                within(*size, 0.02, 0.3, "size")?;
                if text.trim().is_empty() {
                    return Err(OpError::EmptyCaption);
                }
                if text.chars().count() > MAX_CAPTION_CHARS {
                    return Err(OpError::CaptionTooLong {
                        chars: text.chars().count(),
                    });
                }
                if text.chars().any(char::is_control) {
                    return Err(OpError::CaptionControl);
                }
                (w, h)
            }
            Op::Restyle { prompt: p, strength } => {
                prompt(p)?;
                within(*strength, 0.05, 1.0, "strength")?;
                (w, h)
            }
            Op::Inpaint { area: a, prompt: p } => {
                prompt(p)?;
                area(a)?;
                (w, h)
            }
            Op::Outpaint {
                left,
                top,
                right,
                bottom,
                prompt: p,
            } => {
                prompt(p)?;
                grown(*left, *top, *right, *bottom)?
            }
            Op::Variation { strength } => {
                within(*strength, 0.05, 1.0, "strength")?;
                (w, h)
            }
            Op::Instruct { instruction } => {
                prompt(instruction)?;
                (w, h)
            }
            Op::Upscale { factor } => {
                if !(2..=4).contains(factor) {
                    return Err(OpError::UpscaleFactor(*factor));
                }
                (w.saturating_mul(*factor), h.saturating_mul(*factor))
            }
        };
        let (nw, nh) = size;
        if nw == 0 || nh == 0 {
            return Err(OpError::NoPixels);
        }
        if nw > limits.max_side || nh > limits.max_side || u64::from(nw) * u64::from(nh) > limits.max_pixels {
            return Err(OpError::TooLarge {
                width: nw,
                height: nh,
                max_side: limits.max_side,
                max_pixels: limits.max_pixels,
            });
        }
        Ok(size)
    }
}

impl EditPlan {
    pub fn new(ops: Vec<Op>) -> Self {
        Self {
            version: PLAN_VERSION,
            ops,
        }
    }

    /// Parses a plan from JSON; the error names the field.
    /// The texts the plan gives the model or draws on the image (prompts and captions):
    /// moderation checks each like a user's prompt.
    pub fn prompts(&self) -> Vec<&str> {
        self.ops
            .iter()
            .filter_map(|op| match op {
                Op::Restyle { prompt, .. } | Op::Inpaint { prompt, .. } | Op::Outpaint { prompt, .. } => {
                    Some(prompt.as_str())
                }
                Op::Instruct { instruction } => Some(instruction.as_str()),
                Op::Caption { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    pub fn from_json(text: &str) -> Result<Self, EditError> {
        serde_json::from_str(text).map_err(|e| EditError::InvalidPlan(format!("not a valid plan: {e}")))
    }

    /// Checks the plan against `limits` for an image of `size`, and returns the final size. The
    /// error names the operation (by its index and name) and what is wrong with it.
    pub fn validate(&self, size: (u32, u32), limits: &PlanLimits) -> Result<(u32, u32), EditError> {
        if self.version != PLAN_VERSION {
            return Err(EditError::InvalidPlan(format!(
                "plan version {} is not supported (this is version {PLAN_VERSION})",
                self.version
            )));
        }
        if self.ops.is_empty() {
            return Err(EditError::InvalidPlan("the plan has no operations".into()));
        }
        if self.ops.len() > limits.max_ops {
            return Err(EditError::InvalidPlan(format!(
                "the plan has {} operations; the limit is {}",
                self.ops.len(),
                limits.max_ops
            )));
        }
        let mut size = size;
        for (i, op) in self.ops.iter().enumerate() {
            size = op
                .check(size, limits)
                .map_err(|m| EditError::InvalidPlan(format!("operation {} ({}): {m}", i + 1, op.name())))?;
        }
        Ok(size)
    }
}
