//! LoRA: low-rank weight deltas, merged into a copy of the weights they change.
//!
//! A LoRA layer holds `down` (`[r, in]`, or `[r, in, kh, kw]` for a convolution) and `up`
//! (`[out, r]` / `[out, r, 1, 1]`) and optionally `alpha`; at strength `s` it changes the weight
//! `W` (`[out, in]` / `[out, in, kh, kw]`) to
//!
//! ```text
//! W' = W + s · (alpha / r) · reshape(up · down)
//! ```
//!
//! computed in f32 and stored at the model's precision. [`StableDiffusion::with_loras`] builds a
//! new model whose changed tensors are fresh copies and whose every other tensor (and the VAE)
//! is shared with the base model; the base model is never written. "Un-merging" is dropping that
//! model, which restores the base exactly; swapping is building another from the base.

pub mod names;
pub mod prompt;

use crate::error::{EngineError, Result};
use crate::model::{from_weights, Denoiser, StableDiffusion, TextEncoder, UnetParts, UnetWeights, Weights};
use crate::models::clip::ClipTextModel;
use crate::models::int8::Quantize;
use crate::models::unet::UNet2DConditionModel;
use candle_core::{DType, Device, Tensor};
use names::{component_of, split_key, Component, ModuleIndex, Naming, Part};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Most layers one file may hold (SDXL LoRAs that touch everything have about 2,200).
pub const MAX_LAYERS: usize = 8192;
/// Highest rank accepted.
pub const MAX_RANK: usize = 1024;
/// Strengths outside this range are refused.
pub const STRENGTH_RANGE: std::ops::RangeInclusive<f64> = -4.0..=4.0;

/// One low-rank pair as the file holds it (f32, on the CPU).
#[derive(Debug, Clone)]
pub struct LoraLayer {
    /// The layer's name in the file, without the part suffix.
    pub name: String,
    pub down: Tensor,
    pub up: Tensor,
    pub alpha: Option<f64>,
}

impl LoraLayer {
    /// The rank `r`.
    pub fn rank(&self) -> usize {
        self.down.dim(0).unwrap_or(0)
    }

    /// `s · (alpha / r) · up · down`, shaped like `weight_shape`.
    fn delta(&self, strength: f64, weight_shape: &[usize]) -> candle_core::Result<Tensor> {
        let r = self.rank();
        let scale = strength * self.alpha.unwrap_or(r as f64) / r as f64;
        let out = self.up.dim(0)?;
        let up = self.up.reshape((out, r))?;
        let down = self.down.reshape((r, self.down.elem_count() / r))?;
        (up.matmul(&down)? * scale)?.reshape(weight_shape)
    }
}

/// A parsed LoRA file: layers by name, not yet tied to a model.
#[derive(Debug, Clone)]
pub struct Lora {
    layers: Vec<LoraLayer>,
}

impl Lora {
    /// Parses a `.safetensors` LoRA. Errors name the offending key.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self> {
        let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
            .map_err(|e| invalid(format!("not a readable safetensors file: {e}")))?;
        Self::from_tensors(tensors)
    }

    /// Builds from named tensors (kohya or diffusers/PEFT naming).
    pub fn from_tensors(tensors: HashMap<String, Tensor>) -> Result<Self> {
        #[derive(Default)]
        struct Parts {
            down: Option<Tensor>,
            up: Option<Tensor>,
            alpha: Option<f64>,
        }
        let mut by_layer: BTreeMap<String, Parts> = BTreeMap::new();
        for (key, t) in tensors {
            let k = split_key(&key).map_err(|e| invalid(e.to_string()))?;
            let entry = by_layer.entry(k.layer).or_default();
            if !t.dtype().is_float() {
                return Err(invalid(format!("{key:?} is {:?}, not a float tensor", t.dtype())));
            }
            let t = t.to_dtype(DType::F32)?;
            match k.part {
                Part::Down => entry.down = Some(t),
                Part::Up => entry.up = Some(t),
                Part::Alpha => {
                    let a = t.flatten_all()?.to_vec1::<f32>()?;
                    match a.as_slice() {
                        [a] if a.is_finite() && *a > 0.0 => entry.alpha = Some(f64::from(*a)),
                        _ => return Err(invalid(format!("{key:?} must be one positive number"))),
                    }
                }
            }
        }
        if by_layer.is_empty() {
            return Err(invalid("the file holds no LoRA layers".into()));
        }
        if by_layer.len() > MAX_LAYERS {
            return Err(invalid(format!(
                "{} layers; the limit is {MAX_LAYERS}",
                by_layer.len()
            )));
        }
        let mut layers = Vec::with_capacity(by_layer.len());
        for (name, p) in by_layer {
            let (Some(down), Some(up)) = (p.down, p.up) else {
                return Err(invalid(format!("layer {name:?} lacks its down or up matrix")));
            };
            let (dd, ud) = (down.dims().to_vec(), up.dims().to_vec());
            let conv_ok = ud.len() == 4 && ud[2] == 1 && ud[3] == 1;
            let shapes_ok =
                (down.rank() == 2 && up.rank() == 2) || (down.rank() == 4 && (conv_ok || up.rank() == 2));
            if !shapes_ok || dd[0] != ud[1] || dd[0] == 0 {
                return Err(invalid(format!(
                    "layer {name:?}: down {dd:?} and up {ud:?} are not a low-rank pair"
                )));
            }
            if dd[0] > MAX_RANK {
                return Err(invalid(format!(
                    "layer {name:?}: rank {} is above {MAX_RANK}",
                    dd[0]
                )));
            }
            layers.push(LoraLayer {
                name,
                down,
                up,
                alpha: p.alpha,
            });
        }
        Ok(Self { layers })
    }

    /// The layers, sorted by name.
    pub fn layers(&self) -> &[LoraLayer] {
        &self.layers
    }

    /// Ties every layer to the module it changes in `model`, checking shapes; errors name the
    /// first layer the model does not have (a LoRA for another architecture).
    pub fn resolve(&self, model: &StableDiffusion) -> Result<Vec<Resolved<'_>>> {
        self.resolve_in(&ModelIndexes::new(model)?)
    }

    fn resolve_in(&self, indexes: &ModelIndexes) -> Result<Vec<Resolved<'_>>> {
        let mut out = Vec::with_capacity(self.layers.len());
        let mut missing = Vec::new();
        for layer in &self.layers {
            let (component, naming) = component_of(&layer.name);
            let Some(Indexed { index, weights }) = indexes.get(component) else {
                return Err(invalid(format!(
                    "layer {:?} changes {component}, which this model does not have",
                    layer.name
                )));
            };
            let module = match naming {
                Naming::Flat(f) => index.flat(f),
                Naming::Dotted(d) => index.dotted(d),
            };
            let Some(module) = module else {
                missing.push(layer.name.clone());
                continue;
            };
            let name = format!("{module}.weight");
            let weight = weights
                .get(&name)
                .ok_or_else(|| invalid(format!("{component} has no {name}")))?;
            let ws = weight.dims();
            let (out_dim, in_total) = (layer.up.dim(0)?, layer.down.elem_count() / layer.rank());
            let fits = ws.first() == Some(&out_dim) && ws.iter().skip(1).product::<usize>() == in_total;
            if !fits {
                return Err(invalid(format!(
                    "layer {:?} makes a [{out_dim}, {in_total}] change but {component} {name} is {ws:?}: this LoRA is for another model",
                    layer.name
                )));
            }
            out.push(Resolved {
                component,
                tensor: name,
                layer,
            });
        }
        if !missing.is_empty() {
            let shown: Vec<_> = missing.iter().take(3).collect();
            return Err(invalid(format!(
                "{} of {} layers name modules this model does not have (e.g. {shown:?}): this LoRA is for another architecture",
                missing.len(),
                self.layers.len()
            )));
        }
        Ok(out)
    }
}

/// A LoRA layer tied to the tensor it changes.
#[derive(Debug, Clone)]
pub struct Resolved<'a> {
    pub component: Component,
    /// The checkpoint tensor name (`….weight`).
    pub tensor: String,
    pub layer: &'a LoraLayer,
}

/// A component's tensors and the index of its module names.
struct Indexed {
    index: ModuleIndex,
    weights: Weights,
}

/// Every component's [`Indexed`], fetched once per merge (an int8 UNet's tensors are read from
/// disk).
struct ModelIndexes {
    unet: Indexed,
    encoders: Vec<Indexed>,
}

impl ModelIndexes {
    fn new(model: &StableDiffusion) -> Result<Self> {
        let unet = model.unet_weights()?;
        Ok(Self {
            unet: Indexed {
                index: ModuleIndex::new(unet.keys(), true),
                weights: unet,
            },
            encoders: model
                .encoders
                .iter()
                .map(|e| Indexed {
                    index: ModuleIndex::new(e.weights.keys(), false),
                    weights: e.weights.clone(),
                })
                .collect(),
        })
    }

    fn get(&self, c: Component) -> Option<&Indexed> {
        match c {
            Component::Unet => Some(&self.unet),
            Component::TextEncoder(i) => self.encoders.get(i),
        }
    }
}

fn invalid(message: String) -> EngineError {
    EngineError::InvalidParam(nanoimg_core::InvalidParam::new("lora", message))
}

impl StableDiffusion {
    /// The checkpoint tensors of one component, by name (an int8 UNet's are read from disk).
    pub fn component_weights(&self, c: Component) -> Result<Arc<HashMap<String, Tensor>>> {
        match c {
            Component::Unet => self.unet_weights(),
            Component::TextEncoder(i) => self
                .encoders
                .get(i)
                .map(|e| e.weights.clone())
                .ok_or_else(|| invalid(format!("this model has no {c}"))),
        }
    }

    /// A model with `loras` merged at their strengths. Tensors no LoRA touches, the tokenizers,
    /// the VAE and untouched text encoders are shared with `self`, which is left unchanged.
    pub fn with_loras(&self, loras: &[(&Lora, f64)]) -> Result<StableDiffusion> {
        let mut deltas: BTreeMap<(Component, String), Vec<(&LoraLayer, f64)>> = BTreeMap::new();
        let indexes = ModelIndexes::new(self)?;
        for (lora, strength) in loras {
            if !strength.is_finite() || !STRENGTH_RANGE.contains(strength) {
                return Err(EngineError::InvalidParam(nanoimg_core::InvalidParam::new(
                    "lora_strength",
                    format!("{strength} is outside {STRENGTH_RANGE:?}"),
                )));
            }
            for r in lora.resolve_in(&indexes)? {
                deltas
                    .entry((r.component, r.tensor))
                    .or_default()
                    .push((r.layer, *strength));
            }
        }
        let merge = |c: Component, base: &Weights| -> Result<Option<Weights>> {
            let mut changed = false;
            let mut map: HashMap<String, Tensor> = (**base).clone();
            for ((comp, name), parts) in deltas.range((c, String::new())..) {
                if *comp != c {
                    break;
                }
                let w = &base[name];
                let mut acc = w.to_dtype(DType::F32)?;
                for (layer, s) in parts {
                    let delta = layer.delta(*s, w.dims())?.to_device(w.device())?;
                    acc = (acc + delta)?;
                }
                map.insert(name.clone(), acc.to_dtype(w.dtype())?);
                changed = true;
            }
            Ok(changed.then(|| Arc::new(map)))
        };

        let (dtype, device) = (self.dtype, &self.device);
        let parts = self.unet_parts("LoRA")?;
        let (unet, unet_weights) = match merge(Component::Unet, &indexes.unet.weights)? {
            Some(w) => {
                let mut unet =
                    UNet2DConditionModel::new(from_weights(&w, dtype, device), parts.unet.config())?;
                let kept = match &parts.weights {
                    UnetWeights::Resident(_) => UnetWeights::Resident(w),
                    UnetWeights::Reread { source, changed } => {
                        // Keep only what differs from the files: earlier merges' and this one's.
                        let mut changed = (**changed).clone();
                        for (_, name) in deltas.keys().filter(|(c, _)| *c == Component::Unet) {
                            changed.insert(name.clone(), w[name].clone());
                        }
                        unet.quantize_int8()?;
                        UnetWeights::Reread {
                            source: source.clone(),
                            changed: Arc::new(changed),
                        }
                    }
                };
                (Arc::new(unet), kept)
            }
            None => (parts.unet.clone(), parts.weights.clone()),
        };
        let mut encoders = Vec::with_capacity(self.encoders.len());
        for (i, enc) in self.encoders.iter().enumerate() {
            encoders.push(match merge(Component::TextEncoder(i), &enc.weights)? {
                Some(w) => {
                    let model = ClipTextModel::new(from_weights(&w, dtype, device), enc.model.config())
                        .map_err(|e| invalid(format!("rebuilding the text encoder: {e}")))?;
                    Arc::new(TextEncoder {
                        tokenizer: enc.tokenizer.clone(),
                        model,
                        weights: w,
                    })
                }
                None => enc.clone(),
            });
        }
        Ok(StableDiffusion {
            encoders,
            denoiser: Denoiser::Unet(UnetParts {
                unet,
                weights: unet_weights,
                schedule: parts.schedule.clone(),
            }),
            ..self.clone()
        })
    }
}
