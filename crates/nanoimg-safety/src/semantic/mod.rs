//! The semantic prompt layer: sentence embeddings (all-MiniLM-L6-v2 on candle) compared with
//! exemplar sentences per category, so that what no word list names — euphemisms, paraphrases
//! ("in her birthday suit", "wearing only a smile") — is still seen.
//!
//! A text is cut into segments (the whole text and its comma- or sentence-separated clauses, so
//! one bad clause in a long list of style words is not diluted away). A segment flags a
//! category when its best cosine with that category's exemplars reaches the category's
//! threshold *and* beats its best cosine with the benign exemplars by a margin: "a woman in a
//! winter coat" is nearer "a woman in a red dress" than any nude exemplar.

pub mod bert;
mod encoder;

pub use encoder::SentenceEncoder;

use crate::lexicon::{Category, Severity};
use crate::SafetyError;
use std::path::Path;

/// The exemplar sentences shipped with NanoImg: `CATEGORY<TAB>SEVERITY<TAB>sentence`, `safe`
/// (severity `-`) for benign ones.
pub const BUILTIN_EXEMPLARS: &str = include_str!("../../lexicon/exemplars.tsv");

/// The categories the semantic layer judges. Real people and characters are names: lists
/// decide those.
pub const CATEGORIES: [Category; 5] = [
    Category::Sexual,
    Category::SexualMinors,
    Category::Violence,
    Category::Hate,
    Category::SelfHarm,
];

/// Cut-offs, chosen on `eval/dev.tsv` (never on the held-out set).
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// Minimum cosine with a category's nearest exemplar.
    pub min_similarity: f32,
    /// How much nearer the category's exemplar must be than the nearest benign one.
    pub margin: f32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            min_similarity: 0.55,
            margin: 0.05,
        }
    }
}

/// One semantic match.
#[derive(Debug, Clone, PartialEq)]
pub struct SemanticHit {
    pub category: Category,
    /// The severity of that exemplar: `mild` blocks only at the `auto` strictness.
    pub severity: Severity,
    /// Cosine with the nearest exemplar of the category.
    pub score: f32,
    /// That exemplar.
    pub exemplar: String,
    /// The segment of the text that matched.
    pub segment: String,
}

/// Labelled exemplar embeddings.
#[derive(Debug)]
struct Exemplars {
    /// `None` for benign anchors.
    labels: Vec<Option<Category>>,
    severities: Vec<Severity>,
    texts: Vec<String>,
    /// `[n, d]`, rows L2-normalised, row-major.
    vectors: Vec<f32>,
    dim: usize,
}

/// One parsed exemplar line.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    /// `None` for a benign anchor.
    pub category: Option<Category>,
    pub severity: Severity,
    pub text: String,
}

/// Parses an exemplar file: `CATEGORY<TAB>SEVERITY<TAB>sentence` lines, `#` comments.
pub fn parse_exemplars(text: &str) -> Result<Vec<Exemplar>, SafetyError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| SafetyError::Lexicon(format!("exemplars line {}: {why}", i + 1));
        let mut fields = line.splitn(3, '\t');
        let (Some(label), Some(severity), Some(sentence)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(bad("expected CATEGORY<TAB>SEVERITY<TAB>sentence"));
        };
        let severity = match (label, severity) {
            ("safe", "-") => Severity::Mild,
            ("safe", _) => return Err(bad("a `safe` line's severity is `-`")),
            (_, "high") => Severity::High,
            (_, "mild") => Severity::Mild,
            (_, other) => return Err(bad(&format!("severity {other:?} (high or mild)"))),
        };
        let label = match label {
            "safe" => None,
            other => {
                let c = Category::parse(other).ok_or_else(|| bad(&format!("unknown category {other:?}")))?;
                if !CATEGORIES.contains(&c) {
                    return Err(bad(&format!("{other} is decided by lists, not exemplars")));
                }
                Some(c)
            }
        };
        if sentence.trim().is_empty() {
            return Err(bad("empty sentence"));
        }
        out.push(Exemplar {
            category: label,
            severity,
            text: sentence.trim().to_owned(),
        });
    }
    Ok(out)
}

/// The most segments one text is cut into; the rest of a very long text is covered by the
/// whole-text segment (and by the lexicon, which reads every word).
const MAX_SEGMENTS: usize = 24;

/// Clauses shorter than this are judged only as part of the whole text: two-word fragments
/// ("fully dressed", "no makeup") land near anything in embedding space.
const MIN_CLAUSE_WORDS: usize = 3;

/// The whole text, then its clauses (split on `,.;:!?|` and line breaks) of three words or more.
/// A clause longer than 24 words is cut into 24-word windows.
pub fn segments(text: &str) -> Vec<String> {
    let whole = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = vec![whole];
    for clause in text.split(|c: char| ",.;:!?|()[]{}\n\r".contains(c)) {
        let words: Vec<&str> = clause.split_whitespace().collect();
        if words.len() < MIN_CLAUSE_WORDS {
            continue;
        }
        for window in words.chunks(24) {
            let s = window.join(" ");
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    out.truncate(MAX_SEGMENTS);
    out
}

/// The semantic layer: an encoder and the exemplars it embedded at load.
#[derive(Debug)]
pub struct SemanticLayer {
    encoder: SentenceEncoder,
    exemplars: Exemplars,
    pub thresholds: Thresholds,
}

impl SemanticLayer {
    /// Loads the model from `dir` (`model.safetensors`, `tokenizer.json`, `config.json`, as
    /// `nanoimg models fetch safety` installs them) and embeds the built-in exemplars.
    pub fn load(dir: &Path) -> Result<Self, SafetyError> {
        Self::with_exemplars(SentenceEncoder::load(dir)?, BUILTIN_EXEMPLARS)
    }

    pub fn with_exemplars(encoder: SentenceEncoder, exemplars: &str) -> Result<Self, SafetyError> {
        let parsed = parse_exemplars(exemplars)?;
        let texts: Vec<String> = parsed.iter().map(|e| e.text.clone()).collect();
        let mut vectors = Vec::with_capacity(texts.len() * encoder.dim());
        for chunk in texts.chunks(64) {
            for v in encoder.embed(chunk)? {
                vectors.extend(v);
            }
        }
        Ok(Self {
            exemplars: Exemplars {
                labels: parsed.iter().map(|e| e.category).collect(),
                severities: parsed.iter().map(|e| e.severity).collect(),
                texts,
                dim: encoder.dim(),
                vectors,
            },
            encoder,
            thresholds: Thresholds::default(),
        })
    }

    /// The nearest exemplar per category (benign under `None`) for one embedding.
    fn nearest(&self, v: &[f32]) -> Vec<(Option<Category>, f32, usize)> {
        let ex = &self.exemplars;
        let mut best: Vec<(Option<Category>, f32, usize)> = Vec::new();
        for (i, row) in ex.vectors.chunks(ex.dim).enumerate() {
            let cos: f32 = row.iter().zip(v).map(|(a, b)| a * b).sum();
            let label = ex.labels[i];
            match best.iter_mut().find(|(l, _, _)| *l == label) {
                Some(b) if cos > b.1 => *b = (label, cos, i),
                Some(_) => {}
                None => best.push((label, cos, i)),
            }
        }
        best
    }

    /// Scores every segment of every text; returns the best hit per category that passes the
    /// thresholds.
    pub fn check(&self, texts: &[&str]) -> Result<Vec<SemanticHit>, SafetyError> {
        let segs: Vec<String> = texts
            .iter()
            .filter(|t| !t.trim().is_empty())
            .flat_map(|t| segments(t))
            .collect();
        if segs.is_empty() {
            return Ok(Vec::new());
        }
        let embedded = self.encoder.embed(&segs)?;
        let mut hits: Vec<SemanticHit> = Vec::new();
        for (seg, v) in segs.iter().zip(&embedded) {
            let near = self.nearest(v);
            let benign = near
                .iter()
                .find(|(l, _, _)| l.is_none())
                .map_or(f32::MIN, |(_, s, _)| *s);
            for &(label, score, i) in &near {
                let Some(category) = label else { continue };
                if score < self.thresholds.min_similarity || score < benign + self.thresholds.margin {
                    continue;
                }
                let hit = SemanticHit {
                    category,
                    severity: self.exemplars.severities[i],
                    score,
                    exemplar: self.exemplars.texts[i].clone(),
                    segment: seg.clone(),
                };
                match hits.iter_mut().find(|h| h.category == category) {
                    Some(h) if score > h.score => *h = hit,
                    Some(_) => {}
                    None => hits.push(hit),
                }
            }
        }
        hits.sort_by_key(|h| h.category);
        Ok(hits)
    }

    /// The encoder, for callers that embed other text (tests, benchmarks).
    pub fn encoder(&self) -> &SentenceEncoder {
        &self.encoder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cut_clauses_and_keep_the_whole() {
        let s = segments("a castle, in her birthday suit on the beach. 8k, trending");
        assert_eq!(
            s,
            [
                "a castle, in her birthday suit on the beach. 8k, trending",
                "in her birthday suit on the beach",
            ]
        );
        let long = vec!["word"; 100].join(" ");
        assert!(segments(&long).iter().all(|s| s.split(' ').count() <= 100));
        let many = vec!["three short words"; 100].join(", ");
        assert!(segments(&many).len() <= MAX_SEGMENTS);
    }

    #[test]
    fn the_builtin_exemplars_parse_and_cover_every_category() {
        let parsed = parse_exemplars(BUILTIN_EXEMPLARS).unwrap();
        for c in CATEGORIES {
            assert!(
                parsed.iter().filter(|e| e.category == Some(c)).count() >= 10,
                "{c:?} has too few exemplars"
            );
        }
        assert!(parsed.iter().filter(|e| e.category.is_none()).count() >= 40);
    }

    #[test]
    fn bad_exemplar_lines_are_named() {
        let e = parse_exemplars("sexual\tmild\tok\nnonsense\thigh\tx\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = parse_exemplars("sexual\tok\n").unwrap_err();
        assert!(e.to_string().contains("SEVERITY"), "{e}");
        let e = parse_exemplars("safe\thigh\ta cat\n").unwrap_err();
        assert!(e.to_string().contains("`-`"), "{e}");
        let e = parse_exemplars("copyright\thigh\tMickey\n").unwrap_err();
        assert!(e.to_string().contains("lists"), "{e}");
    }
}
