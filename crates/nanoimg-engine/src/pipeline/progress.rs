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
    /// A cheap approximation of the current denoised estimate (latent-sized RGB), if asked for.
    pub preview: Option<&'a RgbImage>,
}

/// Receives progress; implemented by the CLI's progress bar and the server's event stream.
pub trait ProgressSink: Send + Sync {
    /// Called after every denoising step.
    fn on_step(&self, progress: &Progress<'_>);

    /// Whether to compute previews (skipped otherwise: they cost a little each step).
    fn wants_preview(&self) -> bool {
        false
    }
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
