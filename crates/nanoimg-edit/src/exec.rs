//! Runs a validated plan on one image. Pixel operations run here; generative ones go to a
//! [`Painter`], the image model behind a trait, which is handed an image, a prompt, a strength
//! and a mask and nothing else: no operation can name another object, a file or a URL.

use crate::ops::{self, area_rect};
use crate::plan::{EditPlan, Op};
use crate::EditError;
use image::{GrayImage, Luma, RgbImage};
use nanoimg_core::limits::fit_size;

/// What draws for generative operations: the engine, in the server and the CLI.
pub trait Painter {
    type Error: From<EditError>;

    /// The size to draw a `w`×`h` picture at: both sides multiples of 8 within what the model
    /// takes. The result is resampled back to `w`×`h`.
    fn drawable(&self, w: u32, h: u32) -> (u32, u32) {
        fit_size(w, h, 8, u32::MAX, u64::MAX)
    }

    /// Repaints `img` toward `prompt`, img2img at `strength` (0–1); only inside `mask` (255 =
    /// repaint) when there is one. Both sides of `img` are multiples of 8 and the result must
    /// have its size.
    fn paint(
        &mut self,
        img: &RgbImage,
        prompt: &str,
        strength: f64,
        mask: Option<&GrayImage>,
    ) -> Result<RgbImage, Self::Error>;

    /// Whether the model follows edit instructions (FLUX.1 Kontext): an `instruct` operation
    /// reaches [`Painter::paint`] as the instruction, the whole image, strength 1 — which only
    /// such a model reads as "change this picture as the words say".
    fn follows_instructions(&self) -> bool {
        false
    }

    /// Whether the run should stop: asked before every operation, so a cancelled plan stops
    /// after the operation in hand (each pixel operation is linear in the image's pixels).
    fn cancelled(&self) -> bool {
        false
    }
}

/// The prompt and strength of an upscale's model pass, which redraws detail after resampling
/// (the strength is also what prices the pass).
const UPSCALE_PROMPT: &str = "high detail, sharp focus";
pub const UPSCALE_STRENGTH: f64 = 0.25;

/// Runs `plan` on `img`. `mask` (255 = may change), from an OpenAI-style edit, limits the
/// generative operations that have no area of their own (restyle, variation); it is stretched
/// to the image's size at that point of the plan. `on_op` hears each operation as it starts.
/// The caller validates the plan first ([`EditPlan::validate`]). A painter that says it is
/// cancelled stops the run before the next operation with [`EditError::Cancelled`].
pub fn run<P: Painter>(
    plan: &EditPlan,
    mut img: RgbImage,
    mask: Option<&GrayImage>,
    painter: &mut P,
    mut on_op: impl FnMut(usize, &Op),
) -> Result<RgbImage, P::Error> {
    for (i, op) in plan.ops.iter().enumerate() {
        if painter.cancelled() {
            return Err(EditError::Cancelled.into());
        }
        on_op(i, op);
        img = step(&img, op, mask, painter)?;
    }
    Ok(img)
}

fn step<P: Painter>(
    img: &RgbImage,
    op: &Op,
    user_mask: Option<&GrayImage>,
    painter: &mut P,
) -> Result<RgbImage, P::Error> {
    let (w, h) = img.dimensions();
    let fitted_mask =
        || user_mask.map(|m| image::imageops::resize(m, w, h, image::imageops::FilterType::Nearest));
    match op {
        Op::Restyle { prompt, strength } => {
            paint_at_size(painter, img, prompt, f64::from(*strength), fitted_mask().as_ref())
        }
        Op::Variation { strength } => {
            paint_at_size(painter, img, "", f64::from(*strength), fitted_mask().as_ref())
        }
        Op::Instruct { instruction } => match painter.follows_instructions() {
            true => paint_at_size(painter, img, instruction, 1.0, fitted_mask().as_ref()),
            false => Err(EditError::NeedsInstructionModel.into()),
        },
        Op::Inpaint { area, prompt } => {
            let (x, y, aw, ah) = area_rect(area, w, h);
            let mask = GrayImage::from_fn(w, h, |px, py| {
                let inside = px >= x && px < x + aw && py >= y && py < y + ah;
                Luma([if inside { 255 } else { 0 }])
            });
            paint_at_size(painter, img, prompt, 1.0, Some(&mask))
        }
        Op::Outpaint {
            left,
            top,
            right,
            bottom,
            prompt,
        } => {
            let (canvas, mask) = ops::outpaint_canvas(img, *left, *top, *right, *bottom);
            paint_at_size(painter, &canvas, prompt, 1.0, Some(&mask))
        }
        Op::Upscale { factor } => {
            let big = ops::apply(
                img,
                &Op::Scale {
                    factor: *factor as f32,
                },
            )?;
            paint_at_size(painter, &big, UPSCALE_PROMPT, UPSCALE_STRENGTH, None)
        }
        op => Ok(ops::apply(img, op)?),
    }
}

/// Paints at the size the painter can draw ([`Painter::drawable`]) and resamples the result
/// back to the picture's own size.
fn paint_at_size<P: Painter>(
    painter: &mut P,
    img: &RgbImage,
    prompt: &str,
    strength: f64,
    mask: Option<&GrayImage>,
) -> Result<RgbImage, P::Error> {
    let (w, h) = img.dimensions();
    let (ew, eh) = painter.drawable(w, h);
    if (ew, eh) == (w, h) {
        return painter.paint(img, prompt, strength, mask);
    }
    let fitted = ops::apply(
        img,
        &Op::Resize {
            width: ew,
            height: eh,
        },
    )?;
    let mask = mask.map(|m| image::imageops::resize(m, ew, eh, image::imageops::FilterType::Nearest));
    let out = painter.paint(&fitted, prompt, strength, mask.as_ref())?;
    Ok(ops::apply(&out, &Op::Resize { width: w, height: h })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what it is asked to paint and hands the image back.
    struct Recorder {
        follows: bool,
        asked: Vec<(String, f64, bool)>,
    }

    impl Painter for Recorder {
        type Error = EditError;
        fn paint(
            &mut self,
            img: &RgbImage,
            prompt: &str,
            strength: f64,
            mask: Option<&GrayImage>,
        ) -> Result<RgbImage, EditError> {
            self.asked.push((prompt.to_owned(), strength, mask.is_some()));
            Ok(img.clone())
        }
        fn follows_instructions(&self) -> bool {
            self.follows
        }
    }

    #[test]
    fn an_instruction_reaches_only_a_model_that_follows_instructions_whole_and_in_words() {
        let plan = EditPlan::new(vec![Op::Instruct {
            instruction: "add a hat".into(),
        }]);
        let img = RgbImage::new(64, 48);
        let mut kontext = Recorder {
            follows: true,
            asked: Vec::new(),
        };
        run(&plan, img.clone(), None, &mut kontext, |_, _| {}).unwrap();
        assert_eq!(kontext.asked, [("add a hat".to_owned(), 1.0, false)]);
        let mut other = Recorder {
            follows: false,
            asked: Vec::new(),
        };
        let e = run(&plan, img, None, &mut other, |_, _| {}).unwrap_err();
        assert!(matches!(e, EditError::NeedsInstructionModel), "{e}");
        assert!(other.asked.is_empty());
    }
}
