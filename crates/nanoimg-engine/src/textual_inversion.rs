//! Textual-inversion embeddings: learned token vectors that stand for a word the tokenizer
//! does not know, used by name in the prompt (`easynegative`, `<cat-toy>`). Files come in the
//! forms people have:
//!
//! - A1111 (SD 1.x/2.x): `emb_params` `[n, d]`, used by the file's name;
//! - A1111/kohya for SDXL: `clip_l` `[n, 768]` and `clip_g` `[n, 1280]`, one set per encoder;
//! - diffusers (`learned_embeds.safetensors`): one tensor named by its token, `[d]` or `[n, d]`,
//!   used by that token and by the file's name.
//!
//! [`StableDiffusion::with_embeddings`] gives a model whose text encoders know the words: in
//! the prompt each becomes `n` placeholder tokens past the vocabulary, looked up in the learned
//! vectors instead of the token table. Nothing else changes, so a model with embeddings draws
//! exactly what it drew before for prompts that do not name one.

use crate::error::{EngineError, Result};
use crate::model::StableDiffusion;
use candle_core::{DType, Device, Tensor};
use std::path::Path;
use std::sync::Arc;

/// One embedding file, read.
#[derive(Debug, Clone)]
pub struct TextualInversion {
    /// The word that calls it: the file's name.
    pub name: String,
    /// The diffusers form's own token, which calls it too.
    pub token: Option<String>,
    vectors: Vectors,
}

#[derive(Debug, Clone)]
enum Vectors {
    /// One set `[n, d]`, for a model with one text encoder of width `d`.
    One(Tensor),
    /// SDXL's two sets.
    Sdxl { clip_l: Tensor, clip_g: Tensor },
}

/// The words a model's text encoders know beyond their vocabulary.
#[derive(Debug, Clone, Default)]
pub(crate) struct Words {
    /// Each word (lowercase, as the tokenizer sees text), its first placeholder (an offset past
    /// the vocabulary) and how many vectors it has.
    pub(crate) words: Vec<(String, u32, u32)>,
    /// Per text encoder, the vectors `[total, d]` in placeholder order.
    pub(crate) extra: Vec<Tensor>,
}

fn bad(path: &Path, message: String) -> EngineError {
    EngineError::Checkpoint {
        path: path.to_owned(),
        message,
    }
}

impl TextualInversion {
    /// Reads `path`, called `name` in prompts.
    pub fn read(path: &Path, name: &str) -> Result<Self> {
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| bad(path, format!("not a readable safetensors file: {e}")))?;
        let as_2d = |t: &Tensor, key: &str| -> Result<Tensor> {
            let t = t
                .to_dtype(DType::F32)
                .map_err(|e| bad(path, format!("{key}: {e}")))?;
            let t = match t.rank() {
                1 => t.unsqueeze(0).map_err(|e| bad(path, format!("{key}: {e}")))?,
                2 => t,
                r => {
                    return Err(bad(
                        path,
                        format!("{key} has {r} dimensions; an embedding has 1 or 2"),
                    ))
                }
            };
            let (n, _) = t.dims2().map_err(|e| bad(path, format!("{key}: {e}")))?;
            if n == 0 || n > 75 {
                return Err(bad(path, format!("{key} has {n} vectors; 1 to 75 fit a prompt")));
            }
            Ok(t)
        };
        let (vectors, token) = match (
            tensors.get("clip_l"),
            tensors.get("clip_g"),
            tensors.get("emb_params"),
        ) {
            (Some(l), Some(g), _) => {
                let (l, g) = (as_2d(l, "clip_l")?, as_2d(g, "clip_g")?);
                if l.dim(0)? != g.dim(0)? {
                    return Err(bad(
                        path,
                        "clip_l and clip_g have different numbers of vectors".into(),
                    ));
                }
                (Vectors::Sdxl { clip_l: l, clip_g: g }, None)
            }
            (_, _, Some(e)) => (Vectors::One(as_2d(e, "emb_params")?), None),
            _ if tensors.len() == 1 => {
                let (key, t) = tensors.iter().next().expect("one tensor");
                (Vectors::One(as_2d(t, key)?), Some(key.clone()))
            }
            _ => {
                let mut keys: Vec<&String> = tensors.keys().collect();
                keys.sort();
                return Err(bad(
                    path,
                    format!(
                        "not an embedding: expected emb_params, clip_l + clip_g, or one tensor named by its token; found {}",
                        keys.iter().take(5).map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        };
        Ok(Self {
            name: name.to_owned(),
            token,
            vectors,
        })
    }

    /// How many vectors (tokens) it stands for.
    pub fn vectors(&self) -> usize {
        match &self.vectors {
            Vectors::One(t) | Vectors::Sdxl { clip_l: t, .. } => t.dims()[0],
        }
    }

    /// Its vectors for text encoders of widths `widths`, or why it does not fit them.
    fn for_encoders(&self, widths: &[usize]) -> Result<Vec<Tensor>, String> {
        let width = |t: &Tensor| t.dims()[1];
        match (&self.vectors, widths) {
            (Vectors::One(t), [w]) if width(t) == *w => Ok(vec![t.clone()]),
            (Vectors::One(t), [w]) => Err(format!("its vectors are {} wide; this model's encoder is {w}", width(t))),
            (Vectors::One(t), _) => Err(format!(
                "a one-encoder embedding ({} wide) on a model with {} text encoders (SDXL embeddings have clip_l and clip_g)",
                width(t),
                widths.len()
            )),
            (Vectors::Sdxl { clip_l, clip_g }, [a, b]) if width(clip_l) == *a && width(clip_g) == *b => {
                Ok(vec![clip_l.clone(), clip_g.clone()])
            }
            // The SDXL refiner has SDXL's second encoder only.
            (Vectors::Sdxl { clip_g, .. }, [w]) if width(clip_g) == *w => Ok(vec![clip_g.clone()]),
            (Vectors::Sdxl { .. }, _) => Err(format!("an SDXL embedding on a model with encoders {widths:?} wide")),
        }
    }
}

/// Every embedding in `library`, read; the files that are not embeddings, with why.
pub fn read_library(library: &crate::library::Library) -> (Vec<TextualInversion>, Vec<(String, String)>) {
    let mut read = Vec::new();
    let mut failed = Vec::new();
    for e in library.list() {
        match TextualInversion::read(&e.path, &e.name) {
            Ok(t) => read.push(t),
            Err(err) => failed.push((e.name, err.to_string())),
        }
    }
    (read, failed)
}

impl StableDiffusion {
    /// `self` with every embedding of `library` that fits it; the rest (files that are not
    /// embeddings, embeddings of another family), with why.
    pub fn with_embedding_library(
        &self,
        library: &crate::library::Library,
    ) -> Result<(StableDiffusion, Vec<(String, String)>)> {
        let (read, mut left_out) = read_library(library);
        if read.is_empty() {
            return Ok((self.clone(), left_out));
        }
        let (model, skipped) = self.with_embeddings(&read)?;
        left_out.extend(skipped);
        Ok((model, left_out))
    }

    /// A model whose text encoders know `embeddings` by name (and by token), sharing every
    /// weight with `self`. Embeddings that do not fit this model (another family's) are left
    /// out and returned with why, as A1111 lists them as skipped.
    pub fn with_embeddings(
        &self,
        embeddings: &[TextualInversion],
    ) -> Result<(StableDiffusion, Vec<(String, String)>)> {
        let widths: Vec<usize> = self
            .encoders
            .iter()
            .map(|e| e.model.config().hidden_size)
            .collect();
        let mut words = (*self.words).clone();
        let mut per_encoder: Vec<Vec<Tensor>> = vec![Vec::new(); widths.len()];
        if !words.extra.is_empty() {
            per_encoder = words.extra.iter().map(|t| vec![t.clone()]).collect();
        }
        let mut next = words.words.iter().map(|(_, o, n)| o + n).max().unwrap_or(0);
        let mut skipped = Vec::new();
        for e in embeddings {
            let vectors = match e.for_encoders(&widths) {
                Ok(v) => v,
                Err(why) => {
                    skipped.push((e.name.clone(), why));
                    continue;
                }
            };
            let n = e.vectors() as u32;
            for word in std::iter::once(&e.name).chain(e.token.as_ref()) {
                let word = word.to_lowercase();
                if !word.trim().is_empty() && !words.words.iter().any(|(w, _, _)| *w == word) {
                    words.words.push((word, next, n));
                }
            }
            for (acc, v) in per_encoder.iter_mut().zip(vectors) {
                acc.push(v);
            }
            next += n;
        }
        words.extra = per_encoder
            .into_iter()
            .map(|parts| Tensor::cat(&parts, 0))
            .collect::<candle_core::Result<Vec<_>>>()?;
        if words.words.is_empty() {
            words.extra.clear();
        }
        // Longest first, so `bad-hands-5` wins over `bad`.
        words
            .words
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        let mut model = self.clone();
        model.words = Arc::new(words);
        Ok((model, skipped))
    }

    /// The words this model's embeddings are called by.
    pub fn embedding_words(&self) -> Vec<String> {
        self.words.words.iter().map(|(w, _, _)| w.clone()).collect()
    }
}
