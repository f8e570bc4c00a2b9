//! Sentences → unit vectors: the tokenizer, the BERT encoder and masked mean pooling, as
//! sentence-transformers computes all-MiniLM-L6-v2.

use super::bert::{masked_mean_normalized, BertConfig, BertModel};
use crate::SafetyError;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::path::Path;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// The longest input in tokens; sentence-transformers' `max_seq_length` for this model.
const MAX_TOKENS: usize = 256;

fn model_err(what: &str, e: impl std::fmt::Display) -> SafetyError {
    SafetyError::Model(format!("{what}: {e}"))
}

/// A sentence embedding model on the CPU.
pub struct SentenceEncoder {
    tokenizer: Tokenizer,
    model: BertModel,
    dim: usize,
    device: Device,
}

impl std::fmt::Debug for SentenceEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentenceEncoder")
            .field("dim", &self.dim)
            .finish_non_exhaustive()
    }
}

impl SentenceEncoder {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, SafetyError> {
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read(&p).map_err(|e| model_err(&p.display().to_string(), e))
        };
        let config: BertConfig =
            serde_json::from_slice(&read("config.json")?).map_err(|e| model_err("config.json", e))?;
        let mut tokenizer =
            Tokenizer::from_bytes(read("tokenizer.json")?).map_err(|e| model_err("tokenizer.json", e))?;
        // tokenizer.json ships fixed padding to 128 tokens: pad to the batch's longest instead
        // (the mask keeps padding out of the mean either way; this keeps it out of the work).
        let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0);
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id,
            ..Default::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS.min(config.max_position_embeddings),
                ..Default::default()
            }))
            .map_err(|e| model_err("tokenizer.json", e))?;
        let device = Device::Cpu;
        let weights = dir.join("model.safetensors");
        // SAFETY: the file is memory-mapped read-only; NanoImg never writes installed model
        // files in place (installs go to a temporary folder that is renamed).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &device) }
            .map_err(|e| model_err(&weights.display().to_string(), e))?;
        let model = BertModel::new(vb, &config).map_err(|e| model_err(&weights.display().to_string(), e))?;
        Ok(Self {
            tokenizer,
            model,
            dim: config.hidden_size,
            device,
        })
    }

    /// The embedding width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Embeds sentences in one batch; each vector has unit length.
    pub fn embed<S: AsRef<str>>(&self, sentences: &[S]) -> Result<Vec<Vec<f32>>, SafetyError> {
        if sentences.is_empty() {
            return Ok(Vec::new());
        }
        let inputs: Vec<&str> = sentences.iter().map(AsRef::as_ref).collect();
        let enc = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(|e| model_err("tokenizing", e))?;
        let len = enc.first().map_or(0, |e| e.get_ids().len());
        let flat = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
            enc.iter().flat_map(|e| f(e).iter().copied()).collect()
        };
        let run = || -> candle_core::Result<Vec<Vec<f32>>> {
            let ids = Tensor::from_vec(flat(&|e| e.get_ids()), (enc.len(), len), &self.device)?;
            let mask = Tensor::from_vec(flat(&|e| e.get_attention_mask()), (enc.len(), len), &self.device)?;
            let hidden = self.model.forward(&ids, &mask)?;
            masked_mean_normalized(&hidden, &mask)?.to_vec2::<f32>()
        };
        run().map_err(|e| model_err("embedding", e))
    }
}
