//! Image embeddings for measuring pictures, not for making them: DINOv2's class token (how
//! alike two pictures' subjects are: the "DINO" score of subject-fidelity papers) and CLIP's
//! joint image–text space (CLIP-I between pictures, CLIP-T between a picture and its prompt).
//!
//! Each loads from a transformers model folder as the hub has it: `config.json`,
//! `model.safetensors` (or sharded `model-*.safetensors`), `preprocessor_config.json` when
//! present, and for CLIP the tokenizer files (`vocab.json`, `merges.txt`). Embeddings come back
//! unit-length, so their dot product is the cosine similarity.

use crate::error::{ConfigError, EngineError, Result, TensorContext};
use crate::folder::read_json;
use crate::models::clip::{ClipModelConfig, ClipTextModel, ClipVisionTransformer};
use crate::models::dinov2::{Dinov2Config, Dinov2Model};
use crate::tokenizer::ClipTokenizer;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use image::RgbImage;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// How a model wants its pictures: resize the shorter side, centre-crop, scale to 0–1,
/// normalise per channel. Read from `preprocessor_config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    pub shortest_edge: u32,
    pub crop: (u32, u32),
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// CLIP's own statistics (`CLIPImageProcessor`'s defaults).
const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];
/// ImageNet's, which DINOv2's `BitImageProcessor` uses.
const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

impl Preprocess {
    /// CLIP at `side` px: shorter side to `side`, crop `side`².
    pub fn clip(side: u32) -> Self {
        Self {
            shortest_edge: side,
            crop: (side, side),
            mean: CLIP_MEAN,
            std: CLIP_STD,
        }
    }

    /// DINOv2's: shorter side to 256, crop 224².
    pub fn dinov2() -> Self {
        Self {
            shortest_edge: 256,
            crop: (224, 224),
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        }
    }

    /// Overrides `self` with what a `preprocessor_config.json` says. `size` and `crop_size`
    /// may be a number or `{"shortest_edge"}` / `{"height", "width"}`, as transformers writes
    /// them across versions.
    fn with_config(mut self, v: &Value, path: &Path) -> Result<Self> {
        let bad = |message: String| EngineError::IncompleteModel {
            path: path.to_owned(),
            message,
        };
        let side = |v: &Value| -> Option<(u32, u32)> {
            let n = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok()).filter(|&n| n > 0);
            n(v).map(|s| (s, s))
                .or_else(|| n(v.get("shortest_edge")?).map(|s| (s, s)))
                .or_else(|| Some((n(v.get("height")?)?, n(v.get("width")?)?)))
        };
        if let Some(size) = v.get("size") {
            let (h, w) = side(size).ok_or_else(|| bad(format!("size {size} is not a size")))?;
            self.shortest_edge = h.min(w);
        }
        if let Some(crop) = v.get("crop_size") {
            self.crop = side(crop).ok_or_else(|| bad(format!("crop_size {crop} is not a size")))?;
        }
        let triple = |key: &str| -> Result<Option<[f32; 3]>> {
            match v.get(key) {
                None => Ok(None),
                Some(x) => serde_json::from_value::<[f32; 3]>(x.clone())
                    .map(Some)
                    .map_err(|_| bad(format!("{key} {x} is not three numbers"))),
            }
        };
        if let Some(m) = triple("image_mean")? {
            self.mean = m;
        }
        if let Some(s) = triple("image_std")? {
            if s.iter().any(|&x| x <= 0.0) {
                return Err(bad(format!("image_std {s:?} has a value that is not positive")));
            }
            self.std = s;
        }
        Ok(self)
    }

    /// `[1, 3, crop_h, crop_w]` pixel values for one picture. A picture smaller than the crop
    /// is resized up first, so every picture fills it.
    pub fn tensor(&self, img: &RgbImage, device: &Device) -> candle_core::Result<Tensor> {
        let (w, h) = img.dimensions();
        let (ch, cw) = self.crop;
        // The shorter side to `shortest_edge`, and never smaller than the crop.
        let scale = (f64::from(self.shortest_edge) / f64::from(w.min(h).max(1)))
            .max(f64::from(ch) / f64::from(h.max(1)))
            .max(f64::from(cw) / f64::from(w.max(1)));
        let (rw, rh) = (
            ((f64::from(w) * scale).round() as u32).max(cw),
            ((f64::from(h) * scale).round() as u32).max(ch),
        );
        let resized = image::imageops::resize(img, rw, rh, image::imageops::FilterType::CatmullRom);
        let (x0, y0) = ((rw - cw) / 2, (rh - ch) / 2);
        let mut data = vec![0f32; 3 * (ch * cw) as usize];
        let plane = (ch * cw) as usize;
        for y in 0..ch {
            for x in 0..cw {
                let p = resized.get_pixel(x0 + x, y0 + y).0;
                for c in 0..3 {
                    data[c * plane + (y * cw + x) as usize] =
                        (f32::from(p[c]) / 255.0 - self.mean[c]) / self.std[c];
                }
            }
        }
        Tensor::from_vec(data, (1, 3, ch as usize, cw as usize), device)
    }
}

/// The folder's `config.json`, its weights, and its preprocessing.
struct Folder {
    dir: PathBuf,
    config: Value,
    vb: VarBuilder<'static>,
}

impl Folder {
    fn open(dir: &Path, expected: &str, device: &Device) -> Result<Self> {
        let config = read_json(&dir.join("config.json"))?;
        let kind = config.get("model_type").and_then(Value::as_str).unwrap_or("");
        if kind != expected {
            return Err(EngineError::Unsupported {
                path: dir.join("config.json"),
                reason: ConfigError::invalid("model_type", format!("{kind:?}; expected {expected:?}")),
            });
        }
        let files = crate::folder::safetensors_in(dir)?;
        // SAFETY: the files are memory-mapped read-only and not written while the measure runs.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, device) }
            .context(|| format!("{}: cannot read the weights", dir.display()))?;
        Ok(Self {
            dir: dir.to_owned(),
            config,
            vb,
        })
    }

    fn preprocess(&self, default: Preprocess) -> Result<Preprocess> {
        let path = self.dir.join("preprocessor_config.json");
        if path.is_file() {
            default.with_config(&read_json(&path)?, &path)
        } else {
            Ok(default)
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, v: &Value) -> Result<T> {
        serde_json::from_value(v.clone()).map_err(|source| EngineError::Json {
            path: self.dir.join("config.json"),
            source,
        })
    }

    fn incomplete(&self, message: String) -> EngineError {
        EngineError::IncompleteModel {
            path: self.dir.clone(),
            message,
        }
    }
}

/// Unit-length rows of `[n, dim]`.
fn unit_rows(x: &Tensor) -> candle_core::Result<Vec<Vec<f32>>> {
    let norms = x.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    x.broadcast_div(&norms)?.to_vec2()
}

/// Cosine similarity of two unit-length embeddings.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum()
}

/// DINOv2's class-token embedding of a picture.
#[derive(Debug)]
pub struct Dinov2Embedder {
    model: Dinov2Model,
    preprocess: Preprocess,
    device: Device,
}

impl Dinov2Embedder {
    /// Loads a `Dinov2Model` folder (`model_type: "dinov2"`).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let f = Folder::open(dir, "dinov2", device)?;
        let config: Dinov2Config = f.parse(&f.config)?;
        let preprocess = f.preprocess(Preprocess::dinov2())?;
        let p = config.patch_size as u32;
        if !preprocess.crop.0.is_multiple_of(p) || !preprocess.crop.1.is_multiple_of(p) {
            return Err(f.incomplete(format!(
                "crop_size {:?} is not a whole number of {p}-pixel patches",
                preprocess.crop
            )));
        }
        let model = Dinov2Model::new(f.vb.clone(), &config).map_err(|e| e.at(&f.dir))?;
        Ok(Self {
            model,
            preprocess,
            device: device.clone(),
        })
    }

    /// The backbone.
    pub fn model(&self) -> &Dinov2Model {
        &self.model
    }

    /// How pictures are prepared for it.
    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    /// Unit-length embeddings, one per picture.
    pub fn embed(&self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(images.len());
        for img in images {
            let x = self.preprocess.tensor(img, &self.device)?;
            out.extend(unit_rows(&self.model.embed(&x)?)?);
        }
        Ok(out)
    }
}

/// CLIP's image and text towers with their projections into the joint space.
#[derive(Debug)]
pub struct ClipEmbedder {
    vision: ClipVisionTransformer,
    visual_projection: Linear,
    text: ClipTextModel,
    text_projection: Linear,
    tokenizer: ClipTokenizer,
    preprocess: Preprocess,
    device: Device,
}

impl ClipEmbedder {
    /// Loads a `CLIPModel` folder (`model_type: "clip"`) with its tokenizer files.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let f = Folder::open(dir, "clip", device)?;
        let ClipModelConfig {
            text_config,
            vision_config,
            projection_dim: projection,
        } = f.parse(&f.config)?;
        let tokenizer = ClipTokenizer::from_dir(dir)?;
        if let Some(m) = text_config.misfit(&tokenizer) {
            return Err(f.incomplete(format!("the tokenizer {m}")));
        }
        let preprocess = f.preprocess(Preprocess::clip(vision_config.image_size as u32))?;
        let side = vision_config.image_size as u32;
        if preprocess.crop != (side, side) {
            return Err(f.incomplete(format!(
                "crop_size {:?} differs from the vision tower's image_size {side}",
                preprocess.crop
            )));
        }
        let vision =
            ClipVisionTransformer::new(f.vb.pp("vision_model"), &vision_config).map_err(|e| e.at(&f.dir))?;
        let text = ClipTextModel::new(f.vb.clone(), &text_config).map_err(|e| e.at(&f.dir))?;
        let linear = |din: usize, name: &str| {
            candle_nn::linear_no_bias(din, projection, f.vb.pp(name)).map_err(|e| f.incomplete(e.to_string()))
        };
        Ok(Self {
            visual_projection: linear(vision_config.hidden_size, "visual_projection")?,
            text_projection: linear(text_config.hidden_size, "text_projection")?,
            vision,
            text,
            tokenizer,
            preprocess,
            device: device.clone(),
        })
    }

    /// How pictures are prepared for it.
    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    /// The tokenizer of the text tower.
    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }

    /// `get_image_features`: prepared `pixel_values` `[batch, 3, side, side]` to the joint space
    /// `[batch, projection_dim]`, not normalised.
    pub fn image_features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        Ok(self
            .visual_projection
            .forward(&self.vision.forward(pixel_values)?)?)
    }

    /// `get_text_features` of one text `[1, projection_dim]`, not normalised. Texts longer than
    /// the context are cut, as CLIP's own tokenizer cuts them.
    pub fn text_features(&self, text: &str) -> Result<Tensor> {
        let tokens = self.tokenizer.encode(text);
        let n = tokens.ids.len();
        let ids = Tensor::from_vec(tokens.ids, (1, n), &self.device)?;
        let pooled = self.text.forward(&ids, &[tokens.eos_index])?.pooled;
        Ok(self.text_projection.forward(&pooled)?)
    }

    /// Unit-length image embeddings, one per picture.
    pub fn embed_images(&self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(images.len());
        for img in images {
            out.extend(unit_rows(
                &self.image_features(&self.preprocess.tensor(img, &self.device)?)?,
            )?);
        }
        Ok(out)
    }

    /// Unit-length text embeddings, one per text.
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for text in texts {
            out.extend(unit_rows(&self.text_features(text)?)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{tiny_clip_config, tiny_dinov2_config, write_clip, write_dinov2};
    use serde_json::json;

    #[test]
    fn preprocessor_configs_are_read_in_every_form_transformers_writes() {
        let p = Path::new("preprocessor_config.json");
        let old = Preprocess::dinov2()
            .with_config(
                &json!({"size": 224, "crop_size": 224, "image_mean": [0.5, 0.5, 0.5]}),
                p,
            )
            .unwrap();
        assert_eq!(
            (old.shortest_edge, old.crop, old.mean),
            (224, (224, 224), [0.5; 3])
        );
        let new = Preprocess::clip(224)
            .with_config(
                &json!({"size": {"shortest_edge": 256}, "crop_size": {"height": 196, "width": 168}}),
                p,
            )
            .unwrap();
        assert_eq!(
            (new.shortest_edge, new.crop, new.std),
            (256, (196, 168), CLIP_STD)
        );
        for bad in [
            json!({"size": "big"}),
            json!({"crop_size": {"height": 0, "width": 3}}),
            json!({"image_std": [0.2, 0.0, 0.2]}),
            json!({"image_mean": [0.2]}),
        ] {
            let err = Preprocess::clip(224)
                .with_config(&bad, p)
                .unwrap_err()
                .to_string();
            assert!(err.contains("preprocessor_config.json"), "{bad}: {err}");
        }
    }

    #[test]
    fn any_picture_fills_the_crop() {
        let pre = Preprocess::dinov2();
        for (w, h) in [(1, 1), (64, 64), (300, 90), (7, 500)] {
            let img = RgbImage::from_pixel(w, h, image::Rgb([255, 0, 0]));
            let t = pre.tensor(&img, &Device::Cpu).unwrap();
            assert_eq!(t.dims(), &[1, 3, 224, 224]);
            // Red everywhere: channel 0 is (1 − 0.485) / 0.229 at every pixel.
            let r = t
                .get(0)
                .unwrap()
                .get(0)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert!(
                r.iter().all(|v| (v - (1.0 - 0.485) / 0.229).abs() < 1e-4),
                "{w}×{h}"
            );
        }
    }

    #[test]
    fn embeddings_are_unit_length_and_tell_pictures_apart() {
        let dir = tempfile::tempdir().unwrap();
        write_dinov2(&dir.path().join("d"), &tiny_dinov2_config(), 1).unwrap();
        write_clip(&dir.path().join("c"), &tiny_clip_config(), 1).unwrap();
        let dino = Dinov2Embedder::load(&dir.path().join("d"), &Device::Cpu).unwrap();
        let clip = ClipEmbedder::load(&dir.path().join("c"), &Device::Cpu).unwrap();
        let a = RgbImage::from_fn(64, 64, |x, y| image::Rgb([(x * 4) as u8, (y * 4) as u8, 90]));
        let b = RgbImage::from_fn(64, 64, |x, _| image::Rgb([0, 200, if x < 32 { 0 } else { 255 }]));
        for e in [
            dino.embed(&[a.clone(), b.clone(), a.clone()]).unwrap(),
            clip.embed_images(&[a.clone(), b.clone(), a.clone()]).unwrap(),
        ] {
            assert!(e.iter().all(|v| (cosine(v, v) - 1.0).abs() < 1e-5));
            assert!(
                (cosine(&e[0], &e[2]) - 1.0).abs() < 1e-5,
                "the same picture twice"
            );
            assert!(
                cosine(&e[0], &e[1]) < 0.999,
                "two different pictures: {}",
                cosine(&e[0], &e[1])
            );
        }
        let t = clip.embed_texts(&["a cat", "a dog", "a cat"]).unwrap();
        assert!((cosine(&t[0], &t[2]) - 1.0).abs() < 1e-5 && cosine(&t[0], &t[1]) < 0.999);
    }

    #[test]
    fn bad_folders_are_errors_that_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let (d, c) = (dir.path().join("d"), dir.path().join("c"));
        write_dinov2(&d, &tiny_dinov2_config(), 1).unwrap();
        write_clip(&c, &tiny_clip_config(), 1).unwrap();
        let err = |r: Result<()>| r.unwrap_err().to_string();
        match Dinov2Embedder::load(&c, &Device::Cpu) {
            Err(EngineError::Unsupported { reason, .. }) => assert_eq!(reason.field(), "model_type"),
            other => panic!("{:?}", other.err()),
        }
        let e = err(Dinov2Embedder::load(&c, &Device::Cpu).map(drop));
        assert!(
            e.contains("model_type") && e.contains("\"clip\"") && e.contains("expected \"dinov2\""),
            "{e}"
        );
        let e = err(ClipEmbedder::load(&dir.path().join("nowhere"), &Device::Cpu).map(drop));
        assert!(e.contains("config.json"), "{e}");
        // Only a PyTorch pickle: say to convert it.
        std::fs::rename(d.join("model.safetensors"), d.join("pytorch_model.bin")).unwrap();
        let e = err(Dinov2Embedder::load(&d, &Device::Cpu).map(drop));
        assert!(e.contains("convert it to safetensors"), "{e}");
        // A tensor missing from the file: its name.
        let file = c.join("model.safetensors");
        let mut tensors = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
        tensors.remove("visual_projection.weight").unwrap();
        candle_core::safetensors::save(&tensors, &file).unwrap();
        let e = err(ClipEmbedder::load(&c, &Device::Cpu).map(drop));
        assert!(e.contains("visual_projection.weight"), "{e}");
        // A config whose sizes do not fit together.
        let mut cfg = tiny_dinov2_config();
        cfg["num_attention_heads"] = json!(5);
        let bad = dir.path().join("bad");
        std::fs::create_dir(&bad).unwrap();
        std::fs::write(bad.join("config.json"), cfg.to_string()).unwrap();
        std::fs::rename(d.join("pytorch_model.bin"), bad.join("model.safetensors")).unwrap();
        match Dinov2Embedder::load(&bad, &Device::Cpu) {
            Err(EngineError::Unsupported { path, reason }) => {
                assert_eq!(reason.field(), "num_attention_heads");
                assert_eq!(path, bad);
            }
            other => panic!("{:?}", other.err()),
        }
    }
}
