//! Progress reporting and cancellation, passed into every pipeline run.

use image::RgbImage;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// One progress report.
#[derive(Debug)]
pub struct Progress<'a> {
    /// Which image of the request (0-based) and how many there are.
    pub image: usize,
    pub images: usize,
    /// Steps done for this image (1-based after a step) and the total.
    pub step: usize,
    pub steps: usize,
    /// The current denoised estimate as a picture, made as [`ProgressSink::preview_at`] asked
    /// for this step (`None` when it asked for none).
    pub preview: Option<&'a RgbImage>,
}

/// How a step's preview is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreviewMethod {
    /// A linear projection of the latents to RGB: latent-sized (64×64 for a 512×512 SD image)
    /// and almost free.
    Latent,
    /// The denoised estimate decoded by the model's tiny autoencoder, at the size drawn: a
    /// fair picture of the result for a fraction of a full decode. Falls back to
    /// [`PreviewMethod::Latent`] when the model has no tiny autoencoder attached.
    Tiny,
}

/// Receives progress; implemented by the CLI's progress bar and the server's event stream.
pub trait ProgressSink: Send + Sync {
    /// Called after every denoising step.
    fn on_step(&self, progress: &Progress<'_>);

    /// The preview wanted with the report of step `step` (1-based) of `steps` of image
    /// `image`, if any. Asked before every report; previews are skipped unless asked for (a
    /// tiny-autoencoder decode costs a good part of a step on a CPU).
    fn preview_at(&self, image: usize, step: usize, steps: usize) -> Option<PreviewMethod> {
        let _ = (image, step, steps);
        None
    }
}

/// Whether step `step` (1-based) of `steps` is one of `k` evenly spaced steps before the last
/// (those where `step · (k + 1) / steps` passes a whole number): with 20 steps and `k` = 4,
/// steps 4, 8, 12 and 16. The last step has no use for a preview (the image follows), so a run
/// of `k` steps or fewer has one before each step but the last.
pub fn evenly_spaced(step: usize, steps: usize, k: usize) -> bool {
    step >= 1 && step < steps && step * (k + 1) / steps > (step - 1) * (k + 1) / steps
}

/// A sink that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn on_step(&self, _progress: &Progress<'_>) {}
}

impl<F: Fn(&Progress<'_>) + Send + Sync> ProgressSink for F {
    fn on_step(&self, progress: &Progress<'_>) {
        self(progress)
    }
}

/// Shared flag that stops a run at the next step boundary.
#[derive(Debug, Default, Clone)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every run holding this token to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::evenly_spaced;

    fn spaced(steps: usize, k: usize) -> Vec<usize> {
        (1..=steps).filter(|&s| evenly_spaced(s, steps, k)).collect()
    }

    #[test]
    fn evenly_spaced_steps_are_k_before_the_last() {
        assert_eq!(spaced(20, 4), [4, 8, 12, 16]);
        assert_eq!(spaced(30, 4), [6, 12, 18, 24]);
        assert_eq!(spaced(10, 3), [3, 5, 8]);
        assert_eq!(spaced(4, 4), [1, 2, 3]);
        assert_eq!(spaced(2, 1), [1]);
        assert!(spaced(1, 4).is_empty());
        assert!(spaced(20, 0).is_empty());
        assert!(!evenly_spaced(0, 20, 4));
    }
}
