//! Face detection, for the consent gate on character references: a reference that shows a
//! person needs its uploader's consent attestation. MTCNN on candle, with the weights of the
//! pinned `facenet-pytorch` wheel ([`crate::models::MTCNN`]), read from its legacy PyTorch
//! files by [`torch_legacy`].

pub mod mtcnn;
pub mod torch_legacy;

use crate::SafetyError;
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use image::RgbImage;
use std::path::Path;

/// The smallest face looked for, in pixels across (facenet-pytorch's default).
pub const MIN_FACE: f32 = 20.0;

/// One face found: its box in pixels and the detector's confidence.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Face {
    pub x: f32,
    pub y: f32,
    pub width: f32,
    pub height: f32,
    pub score: f32,
}

/// MTCNN, loaded.
pub struct FaceDetector {
    nets: mtcnn::Mtcnn,
}

impl std::fmt::Debug for FaceDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FaceDetector(MTCNN)")
    }
}

impl FaceDetector {
    /// Loads `pnet.pt`, `rnet.pt` and `onet.pt` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, SafetyError> {
        let vb = |name: &str| -> Result<VarBuilder<'static>, SafetyError> {
            let path = dir.join(name);
            let bytes =
                std::fs::read(&path).map_err(|e| SafetyError::Model(format!("{}: {e}", path.display())))?;
            let tensors = torch_legacy::read(&bytes)
                .map_err(|e| SafetyError::Model(format!("{}: {e}", path.display())))?;
            Ok(VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu))
        };
        let nets = mtcnn::Mtcnn::new(vb("pnet.pt")?, vb("rnet.pt")?, vb("onet.pt")?)
            .map_err(|e| SafetyError::Model(format!("MTCNN weights in {}: {e}", dir.display())))?;
        Ok(Self { nets })
    }

    /// The faces in `img`, best first.
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<Face>, SafetyError> {
        let windows = self
            .nets
            .detect(&mtcnn::Planar::from_rgb(img), MIN_FACE)
            .map_err(|e| SafetyError::Model(format!("face detection: {e}")))?;
        Ok(windows
            .iter()
            .map(|w| Face {
                x: w.x1,
                y: w.y1,
                width: w.x2 - w.x1,
                height: w.y2 - w.y1,
                score: w.score,
            })
            .collect())
    }
}
