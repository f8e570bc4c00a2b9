//! Loading every layer at once, the same way for the server and the CLI: the layers whose models
//! are installed are on, a missing model turns its layer off (and says so), a broken one stops
//! the start, and the watermark and C2PA signing are always on.

use crate::faces::FaceDetector;
use crate::models;
use crate::nsfw::NsfwClassifier;
use crate::provenance::{Credentials, Provenance};
use crate::semantic::SemanticLayer;
use crate::watermark::Watermarker;
use crate::{PromptModerator, SafetyError};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;

/// Where the signing credentials come from.
#[derive(Debug, Clone)]
pub enum CredentialSource {
    /// A local CA kept in this folder, made on first start.
    Local(PathBuf),
    /// The operator's certificate chain (leaf first) and PKCS#8 key, both PEM.
    Files { chain: PathBuf, key: PathBuf },
}

/// What to load, with every path resolved.
#[derive(Debug, Clone)]
pub struct Options {
    pub models_dir: PathBuf,
    /// Refuse to start while a model-based layer is off.
    pub require_all_layers: bool,
    pub nsfw_threshold: f32,
    pub block_characters: bool,
    pub credentials: CredentialSource,
    /// More roots to trust when verifying manifests (a PEM bundle).
    pub trust_anchors: Option<PathBuf>,
}

/// Whether one layer is on, and if not, why.
#[derive(Debug, Clone, Serialize)]
pub struct LayerState {
    pub layer: &'static str,
    pub on: bool,
    pub detail: String,
}

/// The loaded layers.
pub struct Safety {
    pub prompt: Arc<PromptModerator>,
    /// The image layer (open_nsfw), when its model is installed.
    pub image: Option<Arc<NsfwClassifier>>,
    /// The face detector of the consent gate on character references, when installed.
    pub faces: Option<Arc<FaceDetector>>,
    /// The invisible watermark every output gets (built in, always on).
    pub watermark: Arc<Watermarker>,
    /// C2PA signing and verification (always on).
    pub provenance: Arc<Provenance>,
    pub layers: Vec<LayerState>,
}

impl Safety {
    /// What every output is sealed with (watermark and C2PA signing).
    pub fn sealer(&self) -> crate::seal::Sealer {
        crate::seal::Sealer {
            watermark: self.watermark.clone(),
            provenance: self.provenance.clone(),
        }
    }

    /// Loads the layers. Errors name the layer and the file.
    pub fn load(o: &Options) -> Result<Self, SafetyError> {
        let root = &o.models_dir;
        let fetch = "run `nanoimg models fetch safety`";
        let mut layers = vec![LayerState {
            layer: "lexicon",
            on: true,
            detail: "word lists built in".into(),
        }];
        let mut prompt = PromptModerator::default();
        prompt.block_characters = o.block_characters;

        let dir = models::MINILM.path(root);
        if models::MINILM.installed(root) {
            let layer = SemanticLayer::load(&dir)
                .map_err(|e| SafetyError::Model(format!("the semantic safety layer cannot load: {e}")))?;
            prompt = prompt.with_semantic(Arc::new(layer));
            layers.push(LayerState {
                layer: "semantic",
                on: true,
                detail: format!("all-MiniLM-L6-v2 from {}", dir.display()),
            });
        } else {
            layers.push(LayerState {
                layer: "semantic",
                on: false,
                detail: format!("no model in {}; {fetch}", dir.display()),
            });
        }

        let file = models::OPEN_NSFW.path(root).join("open-nsfw.onnx");
        let image = if models::OPEN_NSFW.installed(root) {
            let mut c = NsfwClassifier::load(&file)
                .map_err(|e| SafetyError::Model(format!("the image safety layer cannot load: {e}")))?;
            c.threshold = o.nsfw_threshold;
            layers.push(LayerState {
                layer: "image",
                on: true,
                detail: format!("open_nsfw from {}, threshold {}", file.display(), c.threshold),
            });
            Some(Arc::new(c))
        } else {
            layers.push(LayerState {
                layer: "image",
                on: false,
                detail: format!("no model at {}; {fetch}", file.display()),
            });
            None
        };

        let dir = models::MTCNN.path(root);
        let faces = if models::MTCNN.installed(root) {
            let d = FaceDetector::load(&dir)
                .map_err(|e| SafetyError::Model(format!("the face detector cannot load: {e}")))?;
            layers.push(LayerState {
                layer: "faces",
                on: true,
                detail: format!("MTCNN from {}", dir.display()),
            });
            Some(Arc::new(d))
        } else {
            layers.push(LayerState {
                layer: "faces",
                on: false,
                detail: format!(
                    "no model in {}; every character reference needs the consent attestation; {fetch}",
                    dir.display()
                ),
            });
            None
        };

        layers.push(LayerState {
            layer: "watermark",
            on: true,
            detail: "built in; a 64-bit id per output image".into(),
        });
        let provenance = Arc::new(load_provenance(o)?);
        layers.push(LayerState {
            layer: "provenance",
            on: true,
            detail: format!("C2PA manifests signed with the {}", provenance.source),
        });

        let off: Vec<&LayerState> = layers.iter().filter(|l| !l.on).collect();
        if o.require_all_layers && !off.is_empty() {
            let names: Vec<String> = off
                .iter()
                .map(|l| format!("{} ({})", l.layer, l.detail))
                .collect();
            return Err(SafetyError::Model(format!(
                "all safety layers are required (safety.require_all_layers), but these are off: {}. \
                 Fetch their models with `nanoimg models fetch safety`, or set \
                 safety.require_all_layers = false (NANOIMG_SAFETY_REQUIRE_ALL_LAYERS=false) to run \
                 with the word lists only",
                names.join("; ")
            )));
        }
        Ok(Self {
            prompt: Arc::new(prompt),
            image,
            faces,
            watermark: Arc::new(Watermarker::new()),
            provenance,
            layers,
        })
    }
}

fn load_provenance(o: &Options) -> Result<Provenance, SafetyError> {
    let creds = match &o.credentials {
        CredentialSource::Local(dir) => {
            let (creds, created) = Credentials::load_or_create(dir)?;
            if created {
                tracing::info!(dir = %dir.display(), "made a local CA for C2PA signing");
            }
            creds
        }
        CredentialSource::Files { chain, key } => Credentials::from_files(chain, key, None)?,
    };
    let extra = match &o.trust_anchors {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| SafetyError::Provenance(format!("trust anchors {}: {e}", p.display())))?,
        None => String::new(),
    };
    Provenance::new(&creds, &extra)
}
