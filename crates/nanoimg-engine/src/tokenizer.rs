//! The CLIP byte-level BPE tokenizer, read from a diffusers `tokenizer/` folder
//! (`vocab.json`, `merges.txt`, `tokenizer_config.json`, `special_tokens_map.json`).

use crate::error::{EngineError, Result};
use crate::folder::read_json;
use regex::Regex;
use std::collections::HashMap;
use std::path::Path;

const BOS: &str = "<|startoftext|>";
const EOS: &str = "<|endoftext|>";

/// Token ids for one prompt, padded to the model's context length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// `max_length` ids: BOS, the prompt's tokens (truncated), EOS, padding.
    pub ids: Vec<u32>,
    /// Index of the EOS token, where CLIP reads its pooled output.
    pub eos_index: usize,
    /// Whether the prompt was longer than the context and lost its tail.
    pub truncated: bool,
}

/// A CLIP tokenizer: lower-cases, splits with CLIP's pattern, applies byte-level BPE with `</w>`.
#[derive(Debug)]
pub struct ClipTokenizer {
    encoder: HashMap<String, u32>,
    ranks: HashMap<(String, String), usize>,
    byte_to_char: [char; 256],
    pattern: Regex,
    bos: u32,
    eos: u32,
    pad: u32,
    max_length: usize,
}

/// GPT-2's reversible map from bytes to printable characters.
fn bytes_to_unicode() -> [char; 256] {
    let mut printable: Vec<u32> = (u32::from(b'!')..=u32::from(b'~')).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut table = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..256u32 {
        let c = if printable.contains(&b) {
            b
        } else {
            extra += 1;
            255 + extra
        };
        table[b as usize] = char::from_u32(c).expect("code points below 0x200 are valid");
    }
    table
}

/// A special token in `tokenizer_config.json` is either a string or `{"content": …}`.
fn special_token(v: &serde_json::Value) -> Option<String> {
    v.as_str()
        .map(str::to_owned)
        .or_else(|| v.get("content")?.as_str().map(str::to_owned))
}

impl ClipTokenizer {
    /// Loads a diffusers `tokenizer/` folder.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let incomplete = |message: String| EngineError::IncompleteModel {
            path: dir.to_owned(),
            message,
        };
        let vocab_path = dir.join("vocab.json");
        let merges_path = dir.join("merges.txt");
        for p in [&vocab_path, &merges_path] {
            if !p.is_file() {
                return Err(incomplete(format!("missing {}", p.display())));
            }
        }
        let vocab: HashMap<String, u32> =
            serde_json::from_value(read_json(&vocab_path)?).map_err(|source| EngineError::Json {
                path: vocab_path.clone(),
                source,
            })?;
        let merges = std::fs::read_to_string(&merges_path).map_err(|source| EngineError::Io {
            path: merges_path.clone(),
            source,
        })?;
        let ranks = merges
            .lines()
            .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
            .filter_map(|l| l.split_once(' '))
            .enumerate()
            .map(|(rank, (a, b))| ((a.to_owned(), b.to_owned()), rank))
            .collect();

        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.is_file() {
            read_json(&config_path)?
        } else {
            serde_json::Value::Null
        };
        let map_path = dir.join("special_tokens_map.json");
        let special_map = if map_path.is_file() {
            read_json(&map_path)?
        } else {
            serde_json::Value::Null
        };
        let token_name = |key: &str, default: &str| -> String {
            special_map
                .get(key)
                .and_then(special_token)
                .or_else(|| config.get(key).and_then(special_token))
                .unwrap_or_else(|| default.to_owned())
        };
        let id_of = |name: String| -> Result<u32> {
            vocab
                .get(&name)
                .copied()
                .ok_or_else(|| incomplete(format!("vocab.json has no token {name:?}")))
        };
        let bos = id_of(token_name("bos_token", BOS))?;
        let eos = id_of(token_name("eos_token", EOS))?;
        let pad = id_of(token_name("pad_token", EOS))?;
        let max_length = config
            .get("model_max_length")
            .and_then(serde_json::Value::as_u64)
            .filter(|&n| (3..=4096).contains(&n))
            .unwrap_or(77) as usize;

        let pattern = Regex::new(
            r"(?i)<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+",
        )
        .expect("the CLIP pattern is a valid regex");
        Ok(Self {
            encoder: vocab,
            ranks,
            byte_to_char: bytes_to_unicode(),
            pattern,
            bos,
            eos,
            pad,
            max_length,
        })
    }

    /// One more than the largest token id this tokenizer can produce.
    pub fn vocab_len(&self) -> usize {
        self.encoder.values().max().map_or(0, |&m| m as usize + 1)
    }

    /// The context length (77 for Stable Diffusion's text encoders, 32 for nanoimg-emoji's).
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Applies BPE merges to one pre-token (already mapped to byte characters).
    fn bpe(&self, token: &str) -> Vec<String> {
        let mut word: Vec<String> = token.chars().map(String::from).collect();
        if let Some(last) = word.last_mut() {
            last.push_str("</w>");
        }
        while word.len() > 1 {
            let best = word
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| self.ranks.get(&(w[0].clone(), w[1].clone())).map(|&r| (r, i)))
                .min();
            let Some((_, i)) = best else { break };
            let (a, b) = (word[i].clone(), word[i + 1].clone());
            let mut merged = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && word[i] == a && word[i + 1] == b {
                    merged.push(format!("{a}{b}"));
                    i += 2;
                } else {
                    merged.push(word[i].clone());
                    i += 1;
                }
            }
            word = merged;
        }
        word
    }

    /// Token ids of `text` without BOS/EOS or padding.
    pub fn encode_raw(&self, text: &str) -> Vec<u32> {
        let cleaned = text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        let mut ids = Vec::new();
        for m in self.pattern.find_iter(&cleaned) {
            match m.as_str() {
                BOS => ids.push(self.bos),
                EOS => ids.push(self.eos),
                piece => {
                    let mapped: String = piece.bytes().map(|b| self.byte_to_char[b as usize]).collect();
                    for sub in self.bpe(&mapped) {
                        // Every byte character is in CLIP's vocabulary, so this only skips
                        // pieces of a deliberately reduced test vocabulary.
                        if let Some(&id) = self.encoder.get(&sub) {
                            ids.push(id);
                        }
                    }
                }
            }
        }
        ids
    }

    /// Encodes a prompt as the text encoder expects it: BOS, tokens, EOS, padding to 77.
    pub fn encode(&self, text: &str) -> Tokens {
        self.encode_with(text, &[], 0)
    }

    /// As [`Self::encode`], with `words` — (lowercase word, first placeholder, count) — each
    /// standing for `count` placeholder ids from `base + first` wherever it appears as a whole
    /// word (not inside a longer one), case aside. Textual-inversion embeddings use this.
    pub fn encode_with(&self, text: &str, words: &[(String, u32, u32)], base: u32) -> Tokens {
        let mut body = Vec::new();
        let lower = text.to_lowercase();
        let mut rest = lower.as_str();
        let is_word_char = |c: char| c.is_alphanumeric() || c == '_';
        'scan: while !rest.is_empty() && !words.is_empty() {
            // The earliest whole-word occurrence of any word (the longest at one place, as
            // `words` comes longest first).
            let mut best: Option<(usize, &(String, u32, u32))> = None;
            for w in words {
                let mut from = 0;
                while let Some(i) = rest[from..].find(w.0.as_str()).map(|i| i + from) {
                    let before = rest[..i].chars().next_back();
                    let after = rest[i + w.0.len()..].chars().next();
                    if !before.is_some_and(is_word_char) && !after.is_some_and(is_word_char) {
                        if best.is_none_or(|(b, _)| i < b) {
                            best = Some((i, w));
                        }
                        break;
                    }
                    from = i + rest[i..].chars().next().map_or(1, char::len_utf8);
                }
            }
            let Some((i, (word, first, count))) = best else {
                break 'scan;
            };
            body.extend(self.encode_raw(&rest[..i]));
            body.extend((0..*count).map(|k| base + first + k));
            rest = &rest[i + word.len()..];
        }
        body.extend(self.encode_raw(rest));
        let room = self.max_length - 2;
        let truncated = body.len() > room;
        body.truncate(room);
        let mut ids = Vec::with_capacity(self.max_length);
        ids.push(self.bos);
        ids.extend(body);
        let eos_index = ids.len();
        ids.push(self.eos);
        ids.resize(self.max_length, self.pad);
        Tokens {
            ids,
            eos_index,
            truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::write_tokenizer;

    #[test]
    fn byte_map_is_a_bijection() {
        let t = bytes_to_unicode();
        let mut seen: Vec<char> = t.to_vec();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 256);
        assert_eq!(t[b'a' as usize], 'a');
        assert_eq!(t[b' ' as usize], 'Ġ');
    }

    #[test]
    fn encodes_with_bos_eos_padding_and_merges() {
        let dir = tempfile::tempdir().unwrap();
        write_tokenizer(dir.path(), 77, &["c a", "ca t</w>"]).unwrap();
        let tok = ClipTokenizer::from_dir(dir.path()).unwrap();
        let t = tok.encode("A  CAT!");
        assert_eq!(t.ids.len(), 77);
        assert_eq!(t.ids[0], tok.bos);
        // "a</w>", "cat</w>", "!</w>", EOS
        let a = tok.encoder["a</w>"];
        let cat = tok.encoder["cat</w>"];
        let bang = tok.encoder["!</w>"];
        assert_eq!(&t.ids[1..5], &[a, cat, bang, tok.eos]);
        assert_eq!(t.eos_index, 4);
        assert!(t.ids[5..].iter().all(|&i| i == tok.pad));
        assert!(!t.truncated);
    }

    #[test]
    fn long_prompts_are_truncated_and_flagged() {
        let dir = tempfile::tempdir().unwrap();
        write_tokenizer(dir.path(), 8, &[]).unwrap();
        let tok = ClipTokenizer::from_dir(dir.path()).unwrap();
        let t = tok.encode("a b c d e f g h i j");
        assert_eq!(t.ids.len(), 8);
        assert_eq!(t.eos_index, 7);
        assert!(t.truncated);
    }

    #[test]
    fn missing_files_name_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let err = ClipTokenizer::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("vocab.json"), "{err}");
    }
}
