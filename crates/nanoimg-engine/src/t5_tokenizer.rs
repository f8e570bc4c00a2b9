//! T5's SentencePiece (unigram) tokenizer, read from the fast tokenizer's `tokenizer.json` as
//! FLUX's repositories ship it in `tokenizer_2/`, and used as FluxPipeline calls it: `</s>`
//! appended, truncated to the sequence length (keeping `</s>` last) and padded with `<pad>`.

use crate::error::{EngineError, Result};
use std::path::Path;
use tokenizers::Tokenizer;

/// A T5 tokenizer padding to a fixed length.
pub struct T5Tokenizer {
    inner: Tokenizer,
    pad: u32,
    eos: u32,
}

/// One prompt's ids.
#[derive(Debug, Clone, PartialEq)]
pub struct T5Tokens {
    /// Exactly `max_len` ids.
    pub ids: Vec<u32>,
    /// Whether the prompt was cut to fit.
    pub truncated: bool,
}

impl std::fmt::Debug for T5Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("T5Tokenizer")
            .field("vocab", &self.inner.get_vocab_size(true))
            .finish()
    }
}

impl T5Tokenizer {
    /// Loads `dir/tokenizer.json`. A folder with only SentencePiece's `spiece.model` is refused
    /// with what to add.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let file = dir.join("tokenizer.json");
        let incomplete = |message: String| EngineError::IncompleteModel {
            path: dir.to_owned(),
            message,
        };
        if !file.is_file() {
            return Err(incomplete(if dir.join("spiece.model").is_file() {
                "the T5 tokenizer has only spiece.model: NanoImg reads its tokenizer.json (the \
                 fast tokenizer's file, in the same repository folder)"
                    .into()
            } else {
                "missing the T5 tokenizer's tokenizer.json".into()
            }));
        }
        let inner = Tokenizer::from_file(&file).map_err(|e| incomplete(format!("tokenizer.json: {e}")))?;
        let id = |special: &str| {
            inner
                .token_to_id(special)
                .ok_or_else(|| incomplete(format!("tokenizer.json has no {special} token")))
        };
        let (pad, eos) = (id("<pad>")?, id("</s>")?);
        Ok(Self { inner, pad, eos })
    }

    /// The ids of `text` for a sequence of `max_len`: its pieces (cut to `max_len − 1`), `</s>`,
    /// then `<pad>` to the length.
    pub fn encode(&self, text: &str, max_len: usize) -> Result<T5Tokens> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| EngineError::Encode(format!("T5 tokenizer: {e}")))?;
        let mut ids = enc.get_ids().to_vec();
        let keep = max_len.saturating_sub(1);
        let truncated = ids.len() > keep;
        ids.truncate(keep);
        ids.push(self.eos);
        ids.resize(max_len.max(1), self.pad);
        Ok(T5Tokens { ids, truncated })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_without_tokenizer_json_is_refused_with_what_to_add() {
        let dir = tempfile::tempdir().unwrap();
        let e = T5Tokenizer::from_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("missing the T5 tokenizer's tokenizer.json"), "{e}");
        std::fs::write(dir.path().join("spiece.model"), b"\x0a").unwrap();
        let e = T5Tokenizer::from_dir(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("only spiece.model") && e.contains("tokenizer.json"),
            "{e}"
        );
        crate::synthetic::write_t5_tokenizer(dir.path()).unwrap();
        let t = T5Tokenizer::from_dir(dir.path())
            .unwrap()
            .encode("a dog", 4)
            .unwrap();
        assert_eq!(t.ids, [4, 7, 1, 0]);
    }
}
