//! Single-file checkpoints: the original (LDM/SGM) layout that A1111, Forge, ComfyUI and model
//! sites use — UNet, VAE and text encoder(s) in one `.safetensors` file.
//!
//! The file holds weights only. As with diffusers' `from_single_file`, the rest — tokenizers,
//! attention heads, norm groups, the noise schedule — comes from a *companion*: a diffusers
//! folder of the same family, given explicitly (`--config DIR`, or `"config"` in the file's
//! `<stem>.nanoimg.json`), or else the family's reference repository in the Hugging Face cache.
//! The file decides what it can: the family (from its keys), the UNet's input channels (so
//! inpainting checkpoints work with the base model's companion) and, where it says, the
//! prediction type. Pickles (`.ckpt`, `.pt`, `.bin`) are refused: loading one runs code.

pub mod names;

use crate::error::{EngineError, Result, TensorContext};
use crate::folder::ModelFolder;
use crate::model::Weights;
use crate::registry::{hf_cache_snapshot, Family};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device};
use names::{Plan, Transform};
use nanoimg_hub::HubCache;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a checkpoint's companion comes from.
#[derive(Debug, Clone, Default)]
pub struct SourceOptions {
    /// A diffusers folder (configs and tokenizers; weights are not read) of the checkpoint's
    /// family, or a Hugging Face cache entry holding one.
    pub config: Option<PathBuf>,
    /// The Hugging Face hub cache searched for the family's reference repository; `None` reads
    /// `HF_HUB_CACHE`, `HF_HOME` and `~/.cache/huggingface/hub` as the hub's clients do.
    pub hub_cache: Option<PathBuf>,
}

/// The reference repositories whose configs and tokenizers fit each family, in the order they
/// are looked for in the hub cache. For SD 2.x the v-prediction ones come first unless the file
/// says it predicts noise.
fn references(family: Family, v_prediction: Option<bool>) -> Vec<&'static str> {
    match family {
        Family::Sd1 => vec![
            "stable-diffusion-v1-5/stable-diffusion-v1-5",
            "runwayml/stable-diffusion-v1-5",
            "CompVis/stable-diffusion-v1-4",
        ],
        Family::Sd2 => {
            let v = [
                "stabilityai/stable-diffusion-2-1",
                "stabilityai/stable-diffusion-2",
            ];
            let eps = ["stabilityai/stable-diffusion-2-1-base", "stabilityai/sd-turbo"];
            if v_prediction == Some(false) {
                eps.into_iter().chain(v).collect()
            } else {
                v.into_iter().chain(eps).collect()
            }
        }
        Family::Sdxl => vec![
            "stabilityai/stable-diffusion-xl-base-1.0",
            "stabilityai/sdxl-turbo",
        ],
        Family::SdxlRefiner => vec!["stabilityai/stable-diffusion-xl-refiner-1.0"],
        // Not read from a UNet-family checkpoint.
        Family::Flux => Vec::new(),
    }
}

/// Where a text encoder is stored in a family's files.
#[derive(Debug, Clone, Copy)]
enum TextLayout {
    /// transformers' CLIP under a prefix.
    Clip(&'static str),
    /// OpenCLIP under a prefix.
    OpenClip(&'static str),
}

/// Each family's text encoders: the diffusers component and where the file stores it.
fn text_layouts(family: Family) -> &'static [(&'static str, TextLayout)] {
    match family {
        Family::Sd1 => &[("text_encoder", TextLayout::Clip("cond_stage_model.transformer."))],
        Family::Sd2 => &[("text_encoder", TextLayout::OpenClip("cond_stage_model.model."))],
        Family::Sdxl => &[
            (
                "text_encoder",
                TextLayout::Clip("conditioner.embedders.0.transformer."),
            ),
            (
                "text_encoder_2",
                TextLayout::OpenClip("conditioner.embedders.1.model."),
            ),
        ],
        // The refiner's one embedder is SDXL's second encoder (OpenCLIP bigG).
        Family::SdxlRefiner => &[(
            "text_encoder_2",
            TextLayout::OpenClip("conditioner.embedders.0.model."),
        )],
        Family::Flux => &[],
    }
}

const UNET: &str = "model.diffusion_model.";
const VAE: &str = "first_stage_model.";

/// A `.safetensors` file's header: tensor names with their shapes, and the free-form metadata.
#[derive(Debug, Clone, Default)]
pub struct Header {
    pub shapes: BTreeMap<String, Vec<usize>>,
    pub metadata: BTreeMap<String, String>,
}

impl Header {
    /// Reads the header only (the file's first bytes), refusing pickles by their extension and
    /// content.
    pub fn read(path: &Path) -> Result<Self> {
        let bad = |message: String| EngineError::Checkpoint {
            path: path.to_owned(),
            message,
        };
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if matches!(ext.as_str(), "ckpt" | "pt" | "pth" | "bin" | "pkl") {
            return Err(bad(PICKLE.into()));
        }
        let io = |source| EngineError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let mut len = [0u8; 8];
        file.read_exact(&mut len).map_err(io)?;
        let magic = len;
        let len = u64::from_le_bytes(len);
        const MAX_HEADER: u64 = 100 << 20;
        if len > MAX_HEADER || len > file.metadata().map_err(io)?.len() {
            // A zip (torch.save) or a raw pickle under another extension.
            if magic.starts_with(b"PK") || magic[0] == 0x80 {
                return Err(bad(PICKLE.into()));
            }
            return Err(bad(
                "not a safetensors file (its header length is impossible)".into()
            ));
        }
        let mut text = vec![0u8; len as usize];
        file.read_exact(&mut text).map_err(io)?;
        let json: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| bad(format!("not a safetensors file (its header is not JSON: {e})")))?;
        let mut header = Header::default();
        for (name, entry) in json.as_object().into_iter().flatten() {
            if name == "__metadata__" {
                for (k, v) in entry.as_object().into_iter().flatten() {
                    if let Some(v) = v.as_str() {
                        header.metadata.insert(k.clone(), v.to_owned());
                    }
                }
                continue;
            }
            let shape = entry
                .get("shape")
                .and_then(|s| s.as_array())
                .and_then(|s| {
                    s.iter()
                        .map(|d| d.as_u64().map(|d| d as usize))
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| bad(format!("tensor {name:?} has no shape in the header")))?;
            header.shapes.insert(name.clone(), shape);
        }
        Ok(header)
    }

    fn has_prefix(&self, prefix: &str) -> bool {
        self.shapes
            .range(prefix.to_owned()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(prefix))
    }

    fn names(&self) -> impl Iterator<Item = &str> + Clone {
        self.shapes.keys().map(String::as_str)
    }
}

const PICKLE: &str = "a pickle checkpoint: NanoImg never loads pickles, since loading one can run code. \
Convert it once with a tool you trust, e.g. python -c \"import torch, safetensors.torch as st; \
sd = torch.load('model.ckpt', weights_only=True); sd = sd.get('state_dict', sd); \
st.save_file({k: v.contiguous() for k, v in sd.items()}, 'model.safetensors')\"";

/// Which family a checkpoint is, from its keys; or why it is not a model NanoImg loads.
pub fn detect(header: &Header) -> std::result::Result<Family, String> {
    let has = |p: &str| header.has_prefix(p);
    if has("double_blocks.") || has("model.diffusion_model.double_blocks.") {
        return Err("a FLUX transformer, which this engine does not run yet".into());
    }
    if has("model.diffusion_model.joint_blocks.") {
        return Err("an SD3 MMDiT, which this engine does not run".into());
    }
    if header.names().all(|n| crate::lora::names::split_key(n).is_ok()) && !header.shapes.is_empty() {
        return Err("a LoRA, not a model: use it with --lora (or a character)".into());
    }
    if has("conditioner.embedders.") {
        if has("conditioner.embedders.0.transformer.") && has("conditioner.embedders.1.model.") {
            return Ok(Family::Sdxl);
        }
        if has("conditioner.embedders.0.model.transformer.resblocks.") && !has("conditioner.embedders.1.") {
            return Ok(Family::SdxlRefiner);
        }
        return Err("an SGM checkpoint whose text encoders this engine does not know".into());
    }
    if has("cond_stage_model.model.transformer.resblocks.") {
        return Ok(Family::Sd2);
    }
    if has("cond_stage_model.transformer.") {
        return Ok(Family::Sd1);
    }
    if has(UNET) {
        return Err("a UNet without text encoders; NanoImg needs the whole checkpoint".into());
    }
    if has("encoder.down.") || has("encoder.down_blocks.") || has("decoder.up.") {
        return Err("a VAE, not a model: use it with --vae".into());
    }
    Err("not a Stable Diffusion checkpoint (it has no model.diffusion_model.* tensors)".into())
}

/// What the file (or the A1111 config beside it) says about v-prediction: `Some(true)` for v,
/// `Some(false)` for noise, `None` when it does not say.
fn v_prediction(path: &Path, header: &Header) -> Option<bool> {
    if header.shapes.contains_key("v_pred") {
        return Some(true);
    }
    if let Some(p) = header.metadata.get("modelspec.prediction_type") {
        return Some(p.starts_with('v'));
    }
    if let Some(a) = header.metadata.get("modelspec.architecture") {
        if a.ends_with("-v") || a.contains("-v/") {
            return Some(true);
        }
    }
    // A1111 reads `<stem>.yaml` beside the file: v-models say `parameterization: "v"`.
    let yaml = std::fs::read_to_string(path.with_extension("yaml")).ok()?;
    Some(yaml.lines().any(|l| {
        let l = l.trim();
        l.strip_prefix("parameterization:")
            .is_some_and(|v| v.trim().trim_matches(['"', '\'']) == "v")
    }))
}

/// A single-file checkpoint, opened: its header read, its family known, its companion found.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    path: PathBuf,
    family: Family,
    header: Header,
    companion: ModelFolder,
    v_prediction: Option<bool>,
}

impl Checkpoint {
    /// Opens `path`. `config` (explicit, or from the sidecar) names the companion; without it
    /// the family's reference repository is looked for in the hub cache.
    pub fn open(path: &Path, opts: &SourceOptions) -> Result<Self> {
        let header = Header::read(path)?;
        let bad = |message: String| EngineError::Checkpoint {
            path: path.to_owned(),
            message,
        };
        let family = detect(&header).map_err(|m| bad(format!("this file is {m}")))?;
        let v_prediction = v_prediction(path, &header);
        let companion = match &opts.config {
            Some(dir) => {
                let dir = hf_cache_snapshot(dir).unwrap_or_else(|| dir.clone());
                ModelFolder::open(&dir)?
            }
            None => {
                let cache = opts
                    .hub_cache
                    .clone()
                    .map(HubCache::new)
                    .or_else(HubCache::from_env);
                let repos = references(family, v_prediction);
                let found = cache.as_ref().and_then(|c| {
                    repos.iter().find_map(|r| {
                        let r: nanoimg_hub::HubRef = r.parse().ok()?;
                        let snapshot = hf_cache_snapshot(&c.repo_dir(&r.repo))?;
                        ModelFolder::open(&snapshot).ok()
                    })
                });
                found.ok_or_else(|| {
                    bad(format!(
                        "a single-file {family} checkpoint holds weights only; its tokenizer and configs come from a \
                         diffusers folder of the same family. Give one with --config DIR (or \"config\" in {}), or put \
                         {} in the Hugging Face cache{} (`nanoimg models pull {} --configs-only` fetches just those)",
                        sidecar_path(path).display(),
                        repos[0],
                        cache.map(|c| format!(" ({})", c.root().display())).unwrap_or_default(),
                        repos[0],
                    ))
                })?
            }
        };
        let cp = Self {
            path: path.to_owned(),
            family,
            header,
            companion,
            v_prediction,
        };
        cp.check_companion()?;
        Ok(cp)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The family its keys say.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The folder configs and tokenizers come from.
    pub fn companion(&self) -> &ModelFolder {
        &self.companion
    }

    /// The prediction type the file says, when it says one.
    pub fn prediction(&self) -> Option<&'static str> {
        self.v_prediction
            .map(|v| if v { "v_prediction" } else { "epsilon" })
    }

    /// The UNet's input channels: 4, or 9 for an inpainting checkpoint.
    pub fn unet_in_channels(&self) -> Option<usize> {
        self.header
            .shapes
            .get(&format!("{UNET}input_blocks.0.0.weight"))
            .and_then(|s| s.get(1).copied())
    }

    /// The companion must be the same family: the same number of text encoders and the same
    /// text width as the file.
    fn check_companion(&self) -> Result<()> {
        let misfit = |what: String| EngineError::Checkpoint {
            path: self.path.clone(),
            message: format!(
                "the companion {} does not fit this {} checkpoint: {what}",
                self.companion.path().display(),
                self.family
            ),
        };
        let encoders: Vec<&str> = ["text_encoder", "text_encoder_2"]
            .into_iter()
            .filter(|c| self.companion.has(c))
            .collect();
        let layouts = text_layouts(self.family);
        if !encoders.iter().eq(layouts.iter().map(|(c, _)| c)) {
            return Err(misfit(format!("it has {}", encoders.join(" and "))));
        }
        for (component, layout) in layouts {
            let config: crate::models::clip::ClipTextConfig = self.companion.config(component)?;
            let stored = match layout {
                TextLayout::Clip(p) => format!("{p}text_model.embeddings.token_embedding.weight"),
                TextLayout::OpenClip(p) => format!("{p}token_embedding.weight"),
            };
            let stored_alt = stored.replace("text_model.", "");
            let shape = self
                .header
                .shapes
                .get(&stored)
                .or_else(|| self.header.shapes.get(&stored_alt))
                .ok_or_else(|| misfit(format!("the file has no {stored}")))?;
            if shape.as_slice() != [config.vocab_size, config.hidden_size] {
                return Err(misfit(format!(
                    "{component} says {} tokens of width {}, the file's {stored} is {shape:?}",
                    config.vocab_size, config.hidden_size
                )));
            }
        }
        Ok(())
    }

    /// Which stored tensor each of `component`'s tensors is read from.
    fn plan(&self, component: &str) -> Result<Plan> {
        let unplaced = |e: names::Unplaced| EngineError::Checkpoint {
            path: self.path.clone(),
            message: e.to_string(),
        };
        match component {
            "unet" => names::unet(self.header.names(), UNET).map_err(unplaced),
            "vae" => names::vae(self.header.names(), VAE).map_err(unplaced),
            "text_encoder" | "text_encoder_2" => {
                let layout = text_layouts(self.family)
                    .iter()
                    .find(|(c, _)| *c == component)
                    .map(|(_, l)| *l)
                    .ok_or_else(|| EngineError::IncompleteModel {
                        path: self.path.clone(),
                        message: format!("a {} checkpoint has no {component}", self.family),
                    })?;
                let config: crate::models::clip::ClipTextConfig = self.companion.config(component)?;
                match layout {
                    TextLayout::Clip(prefix) => Ok(names::clip(self.header.names(), prefix)),
                    TextLayout::OpenClip(prefix) => names::open_clip(
                        self.header.names(),
                        prefix,
                        config.num_hidden_layers,
                        config.projection_dim.is_some(),
                    )
                    .map_err(unplaced),
                }
            }
            other => Err(EngineError::IncompleteModel {
                path: self.path.clone(),
                message: format!("a checkpoint has no {other}"),
            }),
        }
    }

    /// Reads `component`'s tensors at `dtype`, by our names.
    pub(crate) fn weights(&self, component: &str, dtype: DType, device: &Device) -> Result<Weights> {
        read_plan(&self.path, &self.plan(component)?, dtype, device)
    }
}

/// `<stem>.nanoimg.json` beside a checkpoint: the settings a model folder keeps in
/// `nanoimg.json`, plus `config` and `vae`.
pub fn sidecar_path(path: &Path) -> PathBuf {
    path.with_extension("nanoimg.json")
}

/// A separate VAE file's tensors by our names: the original layout (with or without
/// `first_stage_model.`), or diffusers' (`encoder.down_blocks…`), as A1111's `VAE` folder and
/// the hub hold them.
pub fn vae_file_weights(path: &Path, dtype: DType, device: &Device) -> Result<Weights> {
    let header = Header::read(path)?;
    let bad = |message: String| EngineError::Checkpoint {
        path: path.to_owned(),
        message,
    };
    let plan = if header.has_prefix("encoder.down_blocks.") || header.has_prefix("decoder.up_blocks.") {
        header
            .names()
            .map(|n| {
                (
                    n.to_owned(),
                    names::Source {
                        stored: n.to_owned(),
                        how: Transform::Same,
                    },
                )
            })
            .collect()
    } else {
        let prefix = if header.has_prefix(VAE) { VAE } else { "" };
        if !header.has_prefix(&format!("{prefix}decoder.")) {
            return Err(bad("this file is not a VAE (it has no decoder.* tensors)".into()));
        }
        names::vae(header.names(), prefix).map_err(|e| bad(e.to_string()))?
    };
    read_plan(path, &plan, dtype, device)
}

/// Reads the tensors a plan names from a memory-mapped file and makes them ours.
fn read_plan(path: &Path, plan: &Plan, dtype: DType, device: &Device) -> Result<Weights> {
    let what = || format!("{}: cannot read the weights", path.display());
    // SAFETY: the file is memory-mapped read-only and every tensor is copied out before the
    // mapping is dropped; NanoImg never writes model files it serves.
    let mapped = unsafe { MmapedSafetensors::new(path) }.context(what)?;
    let mut out = HashMap::with_capacity(plan.len());
    for (ours, source) in plan {
        let context = || format!("{}: {} (as {ours})", path.display(), source.stored);
        let stored = mapped.load(&source.stored, device).context(context)?;
        let t = match source.how {
            Transform::Same => stored,
            Transform::Squeeze => {
                let dims = stored.dims().to_vec();
                if dims.len() == 4 {
                    stored.reshape((dims[0], dims[1])).context(context)?
                } else {
                    stored
                }
            }
            Transform::Third(k) => {
                let rows = stored.dim(0).context(context)?;
                if rows % 3 != 0 {
                    return Err(EngineError::Checkpoint {
                        path: path.to_owned(),
                        message: format!("{} has {rows} rows, not three equal parts", source.stored),
                    });
                }
                stored
                    .narrow(0, k * rows / 3, rows / 3)
                    .context(context)?
                    .contiguous()
                    .context(context)?
            }
            Transform::Transpose => stored.t().context(context)?.contiguous().context(context)?,
        };
        out.insert(ours.clone(), t.to_dtype(dtype).context(context)?);
    }
    Ok(Arc::new(out))
}
