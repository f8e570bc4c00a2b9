//! Word lists and the matcher. Entries are whole words or phrases matched on word boundaries
//! of normalised text (so "sex" never matches inside "Essex", nor "rapist" inside
//! "therapist"); `word*` matches words starting with `word`; a plain word also matches its
//! plural in `s`/`es`. `allow` phrases take their words out of play ("chicken breast",
//! "blue tit", "suicide door").
//!
//! File format, one entry a line: `GROUP SEVERITY WORDS…`, `#` starts a comment. Groups are the
//! categories (`sexual`, `sexual/minors`, `violence/graphic`, `hate`, `self-harm`) and the
//! helper lists (`minor`, `suggestive`, `framing`, `person`, `character`, `allow`); severity is `high`,
//! `mild` (blocked only at the `auto` strictness) or `-` for helper lists.

use crate::normalize;
use crate::SafetyError;
use std::collections::{HashMap, HashSet};

/// What a prompt can be blocked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Category {
    #[serde(rename = "sexual")]
    Sexual,
    /// Sexual content involving minors: blocked at every strictness.
    #[serde(rename = "sexual/minors")]
    SexualMinors,
    #[serde(rename = "violence/graphic")]
    Violence,
    #[serde(rename = "hate")]
    Hate,
    #[serde(rename = "self-harm")]
    SelfHarm,
    /// A listed public figure with sexual, violent or defamatory framing.
    #[serde(rename = "real-person")]
    RealPerson,
    /// A listed copyrighted character.
    #[serde(rename = "copyright")]
    Copyright,
}

impl Category {
    pub const ALL: [Category; 7] = [
        Category::Sexual,
        Category::SexualMinors,
        Category::Violence,
        Category::Hate,
        Category::SelfHarm,
        Category::RealPerson,
        Category::Copyright,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Sexual => "sexual",
            Category::SexualMinors => "sexual/minors",
            Category::Violence => "violence/graphic",
            Category::Hate => "hate",
            Category::SelfHarm => "self-harm",
            Category::RealPerson => "real-person",
            Category::Copyright => "copyright",
        }
    }

    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Which list an entry is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    Category(Category),
    /// Words that say a person is a child.
    Minor,
    /// Suggestive words: not blocked alone, blocked with a child.
    Suggestive,
    /// News, arrest, scandal: framing that makes a picture of a real person defamatory.
    Framing,
    /// Public figures.
    Person,
    /// Copyrighted characters.
    Character,
    /// Benign phrases whose words must not match anything else.
    Allow,
    /// Clothing: asking the model to *avoid* it (in a negative prompt) asks for nudity.
    Clothing,
    /// Adult bodies and features: asking the model to avoid them asks for a child's.
    Adult,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Blocked at the `auto` strictness only.
    Mild,
    High,
}

#[derive(Debug, Clone)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn matches(&self, word: &str) -> bool {
        match self {
            Pattern::Exact(w) => {
                word == w
                    || word
                        .strip_prefix(w.as_str())
                        .is_some_and(|rest| rest == "s" || rest == "es")
            }
            Pattern::Prefix(p) => word.starts_with(p.as_str()),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    words: Vec<Pattern>,
    group: Group,
    severity: Severity,
    /// The entry as written, for reports.
    term: String,
}

/// A list entry found in a text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hit {
    pub group: Group,
    pub severity: Severity,
    pub term: String,
}

/// Why a list entry cannot be compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("`*` may only end a word")]
    InnerWildcard,
    #[error("no words")]
    NoWords,
}

/// The compiled lists.
#[derive(Debug, Clone, Default)]
pub struct Lexicon {
    entries: Vec<Entry>,
    /// Entries by their first word (exact first words only).
    by_first: HashMap<String, Vec<usize>>,
    /// Entries whose first word is a prefix pattern.
    prefixed: Vec<usize>,
    /// Every exact word of every entry but the allow phrases, and every prefix, for
    /// [`Lexicon::knows`].
    vocabulary: HashSet<String>,
    prefixes: Vec<String>,
}

const BUILTIN: &[(&str, &str)] = &[
    ("terms.txt", include_str!("../lexicon/terms.txt")),
    ("people.txt", include_str!("../lexicon/people.txt")),
    ("characters.txt", include_str!("../lexicon/characters.txt")),
];

impl Lexicon {
    /// The lists shipped with NanoImg.
    pub fn builtin() -> Lexicon {
        let mut lex = Lexicon::default();
        for (name, text) in BUILTIN {
            lex.add(text)
                .unwrap_or_else(|e| panic!("the built-in list {name} is malformed: {e}"));
        }
        lex
    }

    /// Adds entries in the file format; errors name the line.
    pub fn add(&mut self, text: &str) -> Result<(), SafetyError> {
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |why: &str| SafetyError::Lexicon(format!("line {}: {why}: {line:?}", n + 1));
            let mut parts = line.splitn(3, char::is_whitespace);
            let (Some(group), Some(severity), Some(words)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad("expected GROUP SEVERITY WORDS"));
            };
            let group = match group {
                "minor" => Group::Minor,
                "suggestive" => Group::Suggestive,
                "framing" => Group::Framing,
                "person" => Group::Person,
                "character" => Group::Character,
                "allow" => Group::Allow,
                "clothing" => Group::Clothing,
                "adult" => Group::Adult,
                c => Group::Category(Category::parse(c).ok_or_else(|| bad("unknown group"))?),
            };
            let severity = match severity {
                "high" | "-" => Severity::High,
                "mild" => Severity::Mild,
                _ => return Err(bad("severity must be high, mild or -")),
            };
            self.push(group, severity, words.trim())
                .map_err(|e| bad(&e.to_string()))?;
        }
        Ok(())
    }

    /// Adds one entry: `words` in the same normalisation as the text it will be matched to.
    pub fn push(&mut self, group: Group, severity: Severity, words: &str) -> Result<(), EntryError> {
        let folded = normalize::fold(words);
        let mut patterns = Vec::new();
        for w in folded.split(|c: char| !(c.is_alphanumeric() || c == '*')) {
            if w.is_empty() {
                continue;
            }
            patterns.push(match w.strip_suffix('*') {
                Some(p) if !p.contains('*') && !p.is_empty() => Pattern::Prefix(p.to_owned()),
                None if !w.contains('*') => Pattern::Exact(w.to_owned()),
                _ => return Err(EntryError::InnerWildcard),
            });
        }
        let Some(first) = patterns.first() else {
            return Err(EntryError::NoWords);
        };
        if group != Group::Allow {
            for p in &patterns {
                match p {
                    Pattern::Exact(w) => {
                        self.vocabulary.insert(w.clone());
                    }
                    Pattern::Prefix(w) => self.prefixes.push(w.clone()),
                }
            }
        }
        let i = self.entries.len();
        match first {
            Pattern::Exact(w) => self.by_first.entry(w.clone()).or_default().push(i),
            Pattern::Prefix(_) => self.prefixed.push(i),
        }
        self.entries.push(Entry {
            words: patterns,
            group,
            severity,
            term: words.to_owned(),
        });
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `word` is a word of some entry (allow phrases aside), as the matcher reads it:
    /// plurals and prefixes included. Split words are rejoined only into such words.
    pub fn knows(&self, word: &str) -> bool {
        [word.strip_suffix("es"), word.strip_suffix('s'), Some(word)]
            .into_iter()
            .flatten()
            .any(|w| self.vocabulary.contains(w))
            || self.prefixes.iter().any(|p| word.starts_with(p.as_str()))
    }

    /// Entries that could start at `word`.
    fn candidates(&self, word: &str) -> impl Iterator<Item = &Entry> + '_ {
        let mut ids: Vec<usize> = [word.strip_suffix("es"), word.strip_suffix('s'), Some(word)]
            .into_iter()
            .flatten()
            .flat_map(|w| self.by_first.get(w).into_iter().flatten().copied())
            .chain(self.prefixed.iter().copied())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter().map(|i| &self.entries[i])
    }

    fn entry_at(e: &Entry, words: &[String], at: usize) -> bool {
        e.words.len() <= words.len() - at && e.words.iter().zip(&words[at..]).all(|(p, w)| p.matches(w))
    }

    /// Every entry found in one word sequence; words inside an `allow` phrase match nothing
    /// else.
    pub fn scan(&self, words: &[String]) -> Vec<Hit> {
        let mut allowed = vec![false; words.len()];
        for at in 0..words.len() {
            for e in self.candidates(&words[at]) {
                if e.group == Group::Allow && Self::entry_at(e, words, at) {
                    allowed[at..at + e.words.len()].iter_mut().for_each(|a| *a = true);
                }
            }
        }
        let mut hits = Vec::new();
        for at in 0..words.len() {
            for e in self.candidates(&words[at]) {
                if e.group == Group::Allow
                    || !Self::entry_at(e, words, at)
                    || allowed[at..at + e.words.len()].iter().any(|a| *a)
                {
                    continue;
                }
                let hit = Hit {
                    group: e.group,
                    severity: e.severity,
                    term: e.term.clone(),
                };
                if !hits.contains(&hit) {
                    hits.push(hit);
                }
            }
        }
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn matching_is_by_whole_words_with_plurals_prefixes_and_allow_phrases() {
        let mut lex = Lexicon::default();
        lex.add(
            "sexual mild nude\nsexual high porn*\nviolence/graphic high severed head\n\
             allow - chicken breast\nsexual mild breast\nhate high slur # comment",
        )
        .unwrap();
        let terms = |s: &str| -> Vec<String> { lex.scan(&words(s)).into_iter().map(|h| h.term).collect() };
        assert_eq!(terms("two nudes"), ["nude"]);
        assert_eq!(terms("pornographic"), ["porn*"]);
        assert_eq!(terms("a severed heads pile"), ["severed head"]);
        assert!(terms("denude the tree").is_empty());
        assert!(terms("severed rope head").is_empty());
        assert!(terms("grilled chicken breast").is_empty());
        assert_eq!(terms("a bare breast"), ["breast"]);
    }

    #[test]
    fn malformed_lines_are_named() {
        let mut lex = Lexicon::default();
        let e = lex.add("sexual high ok\nweird high x").unwrap_err();
        assert!(e.to_string().contains("line 2: unknown group"), "{e}");
        let e = lex.add("sexual sometimes x").unwrap_err();
        assert!(e.to_string().contains("severity"), "{e}");
        let e = lex.add("sexual high a*b").unwrap_err();
        assert!(e.to_string().contains("`*`"), "{e}");
    }

    #[test]
    fn the_builtin_lists_load() {
        assert!(Lexicon::builtin().len() > 300);
    }
}
