//! Prompt moderation: every variant of the normalised text goes through the lexicon, the
//! semantic layer (when its model is installed) embeds the text and its clauses, and then the
//! combination rules decide (a child and anything sexual; a public figure and sexual, violent or
//! news framing), whichever layer saw each part.

use crate::lexicon::{Category, Group, Hit, Lexicon, Severity};
use crate::semantic::{SemanticHit, SemanticLayer};
use crate::{normalize, SafetyError};
use serde::Serialize;
use std::sync::Arc;

/// How strict moderation is, as OpenAI's `moderation` field: `auto` (default) or `low`. There
/// is no "off"; `low` lets through what is only mildly sensitive (nudity without sex acts,
/// non-graphic violence words), never sexual content involving minors, real-person abuse, hate
/// or explicit material.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strictness {
    #[default]
    Auto,
    Low,
}

/// A strictness name that is neither `auto` nor `low`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0:?}: moderation is `auto` or `low`")]
pub struct UnknownStrictness(pub String);

impl std::str::FromStr for Strictness {
    type Err = UnknownStrictness;
    fn from_str(s: &str) -> Result<Self, UnknownStrictness> {
        match s {
            "auto" => Ok(Strictness::Auto),
            "low" => Ok(Strictness::Low),
            _ => Err(UnknownStrictness(s.to_owned())),
        }
    }
}

/// One reason a text was flagged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flag {
    pub category: Category,
    /// Which layer saw it: `lexicon` or `semantic`.
    pub layer: &'static str,
    /// The list entries (lexicon) or exemplar (semantic) behind it.
    pub evidence: Vec<String>,
    /// 1.0 for a list match; the similarity for the semantic layer.
    pub score: f32,
    /// Whether this flag alone blocks at the strictness asked for.
    pub blocks: bool,
}

/// What moderation decided about a text.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Verdict {
    pub blocked: bool,
    pub flags: Vec<Flag>,
}

impl Verdict {
    /// The categories that block, each once, in order.
    pub fn categories(&self) -> Vec<Category> {
        let mut c: Vec<Category> = self
            .flags
            .iter()
            .filter(|f| f.blocks)
            .map(|f| f.category)
            .collect();
        c.sort();
        c.dedup();
        c
    }

    fn flag(&mut self, category: Category, evidence: Vec<String>, blocks: bool) {
        self.blocked |= blocks;
        self.flags.push(Flag {
            category,
            layer: "lexicon",
            evidence,
            score: 1.0,
            blocks,
        });
    }

    fn semantic(&mut self, hit: &SemanticHit, blocks: bool) {
        self.blocked |= blocks;
        self.flags.push(Flag {
            category: hit.category,
            layer: "semantic",
            evidence: vec![
                format!("near {:?}", hit.exemplar),
                format!("in {:?}", hit.segment),
            ],
            score: hit.score,
            blocks,
        });
    }
}

/// Whether a word sequence states an age under 18 ("12 year old", "12yo", "aged 12").
fn states_minor_age(words: &[String]) -> bool {
    let age = |w: &str| w.parse::<u32>().ok();
    let unit = |w: &str| {
        matches!(
            w,
            "year"
                | "years"
                | "yr"
                | "yrs"
                | "yo"
                | "y"
                | "ans"
                | "jahre"
                | "jahrige"
                | "anos"
                | "anni"
                | "jaar"
                | "lat"
        )
    };
    words.iter().enumerate().any(|(i, w)| {
        let next = words.get(i + 1).map(String::as_str).unwrap_or("");
        let stated = if let Some(n) = age(w) {
            unit(next).then_some(n)
        } else if matches!(w.as_str(), "age" | "aged" | "alter" | "edad" | "eta" | "idade") {
            age(next)
        } else {
            // "12yo", "12yrs"
            let digits: String = w.chars().take_while(char::is_ascii_digit).collect();
            let rest = &w[digits.len()..];
            (!digits.is_empty() && unit(rest)).then(|| age(&digits)).flatten()
        };
        stated.is_some_and(|n| n < 18)
    })
}

/// The prompt moderator: the lexicon always, the semantic layer when its model is loaded.
#[derive(Debug, Clone)]
pub struct PromptModerator {
    lexicon: Lexicon,
    semantic: Option<Arc<SemanticLayer>>,
    /// Block listed copyrighted characters (the default).
    pub block_characters: bool,
}

impl Default for PromptModerator {
    fn default() -> Self {
        Self::new(Lexicon::builtin())
    }
}

impl PromptModerator {
    pub fn new(lexicon: Lexicon) -> Self {
        Self {
            lexicon,
            semantic: None,
            block_characters: true,
        }
    }

    /// Adds the semantic layer.
    pub fn with_semantic(mut self, layer: Arc<SemanticLayer>) -> Self {
        self.semantic = Some(layer);
        self
    }

    /// Whether the semantic layer is on.
    pub fn has_semantic(&self) -> bool {
        self.semantic.is_some()
    }

    /// Checks texts that go into one request together and all describe the image (prompt,
    /// instruction, characters' descriptions): a child in one and something sexual in another
    /// still combine. See [`Self::check_request`] for requests with a negative prompt.
    ///
    /// Fails only when the semantic layer's model fails; callers must then refuse the request,
    /// not let it through.
    pub fn check(&self, texts: &[&str], strictness: Strictness) -> Result<Verdict, SafetyError> {
        self.check_request(texts, &[], strictness)
    }

    /// Checks one request: `positive` texts say what the image shows, `negative` texts (negative
    /// prompts) what the model is pushed away from. A negative text is read for what avoiding
    /// it asks for: its sexual, violent or hateful words block nothing (avoiding them is what a
    /// careful user writes), but avoiding clothing asks for nudity, and avoiding adult bodies
    /// asks for a child's — both combine with the positive texts like their own words would.
    pub fn check_request(
        &self,
        positive: &[&str],
        negative: &[&str],
        strictness: Strictness,
    ) -> Result<Verdict, SafetyError> {
        let (hits, minor_age) = self.scan(positive);
        let (avoided, _) = self.scan(negative);
        let terms = |pred: &dyn Fn(&Hit) -> bool| -> Vec<String> {
            hits.iter().filter(|h| pred(h)).map(|h| h.term.clone()).collect()
        };
        let avoiding = |group: Group| -> Vec<String> {
            avoided
                .iter()
                .filter(|h| h.group == group)
                .map(|h| format!("avoids {:?}", h.term))
                .collect()
        };
        let unclothed = avoiding(Group::Clothing);
        let semantic = match &self.semantic {
            Some(layer) => layer.check(positive)?,
            None => Vec::new(),
        };
        let seen = |c: Category| -> Vec<String> {
            semantic
                .iter()
                .filter(|h| h.category == c)
                .map(|h| format!("~{:?}", h.exemplar))
                .collect()
        };
        let mut sexual = terms(&|h| h.group == Group::Category(Category::Sexual));
        sexual.extend(seen(Category::Sexual));
        sexual.extend(unclothed.iter().cloned());
        let mut violent = terms(&|h| h.group == Group::Category(Category::Violence));
        violent.extend(seen(Category::Violence));
        let mut minors = terms(&|h| h.group == Group::Minor);
        if minor_age {
            minors.push("<age under 18>".into());
        }
        minors.extend(avoiding(Group::Adult));
        let mut v = Verdict::default();

        // Hard blocks, whatever the strictness.
        let mut csam = terms(&|h| h.group == Group::Category(Category::SexualMinors));
        let suggestive = terms(&|h| h.group == Group::Suggestive);
        let sexualised = !(sexual.is_empty() && suggestive.is_empty());
        if !minors.is_empty() && sexualised {
            csam.extend(minors.iter().cloned());
            csam.extend(sexual.iter().chain(&suggestive).cloned());
        }
        if !csam.is_empty() {
            v.flag(Category::SexualMinors, csam, true);
        }
        let people = terms(&|h| h.group == Group::Person);
        let framing = terms(&|h| h.group == Group::Framing);
        let harmful_framing = !(sexual.is_empty() && violent.is_empty() && framing.is_empty());
        if !people.is_empty() && harmful_framing {
            let mut evidence = people;
            evidence.extend(sexual.iter().chain(&violent).chain(&framing).cloned());
            v.flag(Category::RealPerson, evidence, true);
        }
        let characters = terms(&|h| h.group == Group::Character);
        if !characters.is_empty() {
            v.flag(Category::Copyright, characters, self.block_characters);
        }
        // The categories' own words, by severity.
        for category in [
            Category::Sexual,
            Category::Violence,
            Category::Hate,
            Category::SelfHarm,
        ] {
            let found: Vec<&Hit> = hits
                .iter()
                .filter(|h| h.group == Group::Category(category))
                .collect();
            if found.is_empty() {
                continue;
            }
            let worst = found.iter().map(|h| h.severity).max().unwrap_or(Severity::Mild);
            let blocks = worst == Severity::High || strictness == Strictness::Auto;
            v.flag(category, found.iter().map(|h| h.term.clone()).collect(), blocks);
        }
        if !unclothed.is_empty() {
            // Nudity asked for by avoiding clothes: mild, like the word "nude".
            v.flag(Category::Sexual, unclothed, strictness == Strictness::Auto);
        }
        for hit in &semantic {
            let blocks = hit.severity == Severity::High || strictness == Strictness::Auto;
            v.semantic(hit, blocks);
        }
        Ok(v)
    }

    /// The list entries in every reading of `texts` (normalised variants, and split words
    /// rejoined into words the lists know), and whether any states an age under 18.
    fn scan(&self, texts: &[&str]) -> (Vec<Hit>, bool) {
        let mut hits: Vec<Hit> = Vec::new();
        let mut minor_age = false;
        for text in texts {
            for words in normalize::variants(text) {
                let rejoined = normalize::rejoin(&words, |w| self.lexicon.knows(w));
                for words in std::iter::once(words).chain(rejoined) {
                    minor_age |= states_minor_age(&words);
                    for h in self.lexicon.scan(&words) {
                        if !hits.contains(&h) {
                            hits.push(h);
                        }
                    }
                }
            }
        }
        (hits, minor_age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(text: &str) -> Vec<&'static str> {
        PromptModerator::default()
            .check(&[text], Strictness::Auto)
            .unwrap()
            .categories()
            .into_iter()
            .map(Category::as_str)
            .collect()
    }

    #[test]
    fn scunthorpe_words_pass() {
        for ok in [
            "a foggy morning in Essex",
            "portrait of a therapist in her office",
            "a data analyst at a whiteboard",
            "grilled chicken breast with lemon",
            "a blue tit on a branch",
            "vintage car with suicide doors",
            "the city of Scunthorpe at dusk",
            "a cocktail bar in Shoreditch",
            "a bass guitar on a stand",
            "sussex countryside",
            "a kind old man feeding pigeons",
            "a ship's cockpit, sextant on the chart table",
        ] {
            assert!(blocked(ok).is_empty(), "{ok:?} was blocked: {:?}", blocked(ok));
        }
    }

    #[test]
    fn disguised_words_are_caught() {
        for bad in [
            "n a k e d woman on a bed",
            "n.u.d.e photo",
            "ｎｕｄｅ selfie",
            "nu\u{200b}de model",
            "nаkеd", // Cyrillic
            "p0rn0graphic scene",
            "nuuuude beach party",
            "nekkid lady",
        ] {
            assert_eq!(blocked(bad), ["sexual"], "{bad:?}");
        }
    }

    #[test]
    fn minors_and_sexual_content_are_a_hard_block() {
        let m = PromptModerator::default();
        for bad in [
            "naked child",
            "a 12 year old, nude",
            "topless 14yo",
            "sexy schoolgirl aged 13",
        ] {
            let v = m.check(&[bad], Strictness::Low).unwrap();
            assert!(v.categories().contains(&Category::SexualMinors), "{bad:?}: {v:?}");
        }
        // Across the texts that describe the image (a prompt and a character's description).
        let v = m
            .check(&["a little girl on a beach", "nude"], Strictness::Low)
            .unwrap();
        assert!(v.categories().contains(&Category::SexualMinors), "{v:?}");
        // An adult age is not a minor.
        let v = m
            .check(&["a 30 year old woman, topless"], Strictness::Low)
            .unwrap();
        assert!(!v.categories().contains(&Category::SexualMinors), "{v:?}");
    }

    #[test]
    fn split_words_are_caught_and_function_words_are_not_pieces() {
        let m = PromptModerator::default();
        for bad in [
            "na-ked child",
            "a nu de child on a bed",
            "a chi ld, na ked",
            "a little girl, n-u-d-e",
            "se-xy schoolgirl",
        ] {
            let v = m.check(&[bad], Strictness::Low).unwrap();
            assert!(v.categories().contains(&Category::SexualMinors), "{bad:?}: {v:?}");
        }
        for ok in [
            "a child holding a pen is smiling",
            "John's ex-wife at a cafe",
            "an al fresco lunch with a child",
            "a well-lit room with a child reading",
        ] {
            let v = m.check(&[ok], Strictness::Low).unwrap();
            assert!(!v.categories().contains(&Category::SexualMinors), "{ok:?}: {v:?}");
            assert!(!v.categories().contains(&Category::Sexual), "{ok:?}: {v:?}");
        }
    }

    #[test]
    fn a_negative_prompt_is_read_for_what_avoiding_it_asks() {
        let m = PromptModerator::default();
        let check = |p: &str, n: &str, s| m.check_request(&[p], &[n], s).unwrap();
        // Avoiding words blocks nothing: the usual negative prompts pass.
        for n in ["nude, nsfw, porn, blood, gore", "ugly, deformed, naked"] {
            let v = check("a portrait of a woman in a garden", n, Strictness::Auto);
            assert!(!v.blocked, "{n:?}: {v:?}");
            let v = check("a boy flying a kite", n, Strictness::Auto);
            assert!(!v.blocked, "{n:?}: {v:?}");
        }
        // Avoiding clothes asks for nudity: with a child, the hard block; alone, sexual (mild).
        for n in ["clothes", "clothing, shirt", "dressed", "swimsuit"] {
            let v = check("a little girl on a beach", n, Strictness::Low);
            assert!(v.categories().contains(&Category::SexualMinors), "{n:?}: {v:?}");
        }
        let v = check("a woman on a beach", "clothes", Strictness::Auto);
        assert_eq!(v.categories(), [Category::Sexual], "{v:?}");
        assert!(!check("a woman on a beach", "clothes", Strictness::Low).blocked);
        // Avoiding an adult body with sexual content asks for a child's.
        let v = check(
            "a nude figure on a bed",
            "adult body, mature face",
            Strictness::Low,
        );
        assert!(v.categories().contains(&Category::SexualMinors), "{v:?}");
        // Clothing words in the prompt itself are just clothes.
        assert!(!check("a child in a red shirt", "", Strictness::Auto).blocked);
    }

    #[test]
    fn low_strictness_lets_mild_content_through_but_not_explicit() {
        let m = PromptModerator::default();
        assert!(
            m.check(&["a nude figure study, charcoal"], Strictness::Auto)
                .unwrap()
                .blocked
        );
        assert!(
            !m.check(&["a nude figure study, charcoal"], Strictness::Low)
                .unwrap()
                .blocked
        );
        assert!(
            m.check(&["hardcore porn scene"], Strictness::Low)
                .unwrap()
                .blocked
        );
    }

    #[test]
    fn public_figures_only_with_harmful_framing() {
        assert!(blocked("a portrait of Barack Obama smiling").is_empty());
        assert_eq!(
            blocked("news photo of Barack Obama in handcuffs"),
            ["real-person"]
        );
        assert!(blocked("Taylor Swift naked").contains(&"real-person"));
    }

    #[test]
    fn copyrighted_characters_block_by_default() {
        let mut m = PromptModerator::default();
        assert_eq!(blocked("Mickey Mouse waving"), ["copyright"]);
        m.block_characters = false;
        assert!(
            !m.check(&["Mickey Mouse waving"], Strictness::Auto)
                .unwrap()
                .blocked
        );
    }

    #[test]
    fn european_languages() {
        for bad in [
            "eine nackte Frau",
            "femme nue sur la plage",
            "mujer desnuda",
            "donna nuda",
            "naakte vrouw",
        ] {
            assert_eq!(blocked(bad), ["sexual"], "{bad:?}");
        }
    }
}
