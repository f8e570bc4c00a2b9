//! Text normalisation for matching, never for the model: the prompt the model sees is unchanged.
//!
//! `fold` undoes the ways a word is disguised one character at a time: compatibility forms
//! (NFKC: fullwidth, ligatures, circled letters), invisible characters (zero-width, soft
//! hyphen, bidi controls), case, look-alike letters from other scripts (Unicode TR39
//! confusable skeletons), and accents. `variants` then undoes the disguises that span a word:
//! leetspeak, spaced-out letters ("n a k e d", "n.u.d.e"), stretched letters ("nuuude") and
//! punctuation inside a word ("na-ked", "nu_de"). `rejoin` undoes a word split by spaces into
//! pieces ("nu de", "chi ld"), given what the matcher knows.

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// Unicode's Default_Ignorable_Code_Point ranges (DerivedCoreProperties.txt): characters that
/// render as nothing and so can hide inside a word.
const IGNORABLE: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
];

pub fn is_default_ignorable(c: char) -> bool {
    let c = c as u32;
    IGNORABLE.iter().any(|&(a, b)| (a..=b).contains(&c))
}

/// One character's folded form, appended to `out`: lower case, ASCII look-alike for letters of
/// other scripts, accents dropped.
fn fold_char(c: char, out: &mut String) {
    for l in c.to_lowercase() {
        if l.is_ascii() {
            out.push(l);
            continue;
        }
        if l == 'ß' {
            out.push_str("ss");
            continue;
        }
        // TR39 skeleton of the lower-cased letter, then the accents off.
        let skeleton: String = unicode_security::skeleton(&l.to_string()).collect();
        for s in skeleton.nfd().filter(|c| !is_combining_mark(*c)) {
            // A skeleton can land on an upper-case prototype (e.g. Cyrillic "і" → "i" is
            // fine, but some map to "I"); fold it too.
            out.extend(s.to_lowercase());
        }
    }
}

/// The matching form of `text`: NFKC, invisible characters removed, case-folded, confusables
/// mapped to their Latin look-alikes, accents removed.
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.nfkc().filter(|c| !is_default_ignorable(*c)) {
        fold_char(c, &mut out);
    }
    out
}

/// Leetspeak: the letter a digit or symbol stands for inside a word. `one` is what `1` reads as
/// (`i` or `l`; both are tried).
fn leet(c: char, one: char) -> Option<char> {
    Some(match c {
        '0' => 'o',
        '1' | '!' | '|' => {
            if c == '|' {
                'l'
            } else {
                one
            }
        }
        '3' | '€' => 'e',
        '4' | '@' => 'a',
        '5' | '$' => 's',
        '7' | '+' => 't',
        '8' => 'b',
        '9' => 'g',
        _ => return None,
    })
}

/// Splits folded text into words: runs of letters and digits. In `leet` mode a run may also
/// hold leet symbols, and a run with at least one letter has its leet characters decoded;
/// a run of digits alone (an age, a count) is kept as it is.
fn words(folded: &str, leet_one: Option<char>) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let flush = |cur: &mut String, out: &mut Vec<String>| {
        if cur.is_empty() {
            return;
        }
        let word = std::mem::take(cur);
        let word: String = match leet_one {
            Some(one) if word.chars().any(|c| c.is_alphabetic()) => {
                word.chars().map(|c| leet(c, one).unwrap_or(c)).collect()
            }
            _ => word.chars().filter(|c| c.is_alphanumeric()).collect(),
        };
        if !word.is_empty() {
            out.push(word);
        }
    };
    for c in folded.chars() {
        let part = c.is_alphanumeric() || (leet_one.is_some() && leet(c, 'i').is_some());
        if part {
            cur.push(c);
        } else {
            flush(&mut cur, &mut out);
        }
    }
    flush(&mut cur, &mut out);
    out
}

/// Letters repeated three or more times become one ("nuuude" → "nude").
fn squash_repeats(word: &str) -> String {
    let chars: Vec<char> = word.chars().collect();
    let mut out = String::with_capacity(word.len());
    let mut i = 0;
    while i < chars.len() {
        let mut j = i;
        while j < chars.len() && chars[j] == chars[i] {
            j += 1;
        }
        let run = j - i;
        let keep = if run >= 3 && chars[i].is_alphabetic() {
            1
        } else {
            run
        };
        out.extend(std::iter::repeat_n(chars[i], keep));
        i = j;
    }
    out
}

/// Joins runs of three or more one-letter words ("n a k e d" → "naked"). With `keep_article`,
/// a run's leading "a" or "i" stays a word of its own ("a n.u.d.e woman" → "a nude woman").
fn join_spaced(words: &[String], keep_article: bool) -> Vec<String> {
    let mut out = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        let mut j = i;
        while j < words.len() && words[j].chars().count() == 1 {
            j += 1;
        }
        let start = if keep_article && j - i >= 4 && matches!(words[i].as_str(), "a" | "i") {
            out.push(words[i].clone());
            i + 1
        } else {
            i
        };
        if j - start >= 3 {
            out.push(words[start..j].concat());
            i = j;
        } else {
            for w in &words[start..j.max(start + 1)] {
                out.push(w.clone());
            }
            i = j.max(start + 1);
        }
    }
    out
}

/// `folded` with punctuation between two letters taken out: "na-ked", "nu_de", "se.xy" become
/// one word. Spaces still separate words.
fn close_punctuation(folded: &str) -> String {
    let chars: Vec<char> = folded.chars().collect();
    let mut out = String::with_capacity(folded.len());
    for (i, &c) in chars.iter().enumerate() {
        let inner = !c.is_alphanumeric() && !c.is_whitespace();
        let word_edge = |n: &&char| n.is_alphanumeric() || n.is_whitespace();
        let between = chars[..i]
            .iter()
            .rev()
            .find(word_edge)
            .is_some_and(|n| n.is_alphabetic())
            && chars[i + 1..]
                .iter()
                .find(word_edge)
                .is_some_and(|n| n.is_alphabetic());
        if !(inner && between) {
            out.push(c);
        }
    }
    out
}

/// The word sequences a matcher should look at: the plain words, leet decoded (with `1` as
/// `i` and as `l`), each with stretched letters squashed and spaced-out letters joined, and the
/// words with the punctuation inside them taken out. Duplicates are dropped.
pub fn variants(text: &str) -> Vec<Vec<String>> {
    let folded = fold(text);
    let closed = close_punctuation(&folded);
    let mut out: Vec<Vec<String>> = Vec::new();
    for (text, leets) in [
        (&folded, &[None, Some('i'), Some('l')][..]),
        (&closed, &[None][..]),
    ] {
        for &leet_one in leets {
            let w: Vec<String> = words(text, leet_one).iter().map(|w| squash_repeats(w)).collect();
            for v in [join_spaced(&w, false), join_spaced(&w, true), w] {
                if !out.contains(&v) {
                    out.push(v);
                }
            }
        }
    }
    out
}

/// Words never taken as a piece of a split word: English function words and the pieces an
/// apostrophe leaves ("john's ex" must not read as "sex"), so "pen is" stays two words.
const NEVER_A_PIECE: &[&str] = &[
    "a", "an", "the", "is", "are", "was", "were", "be", "been", "am", "i", "me", "my", "we", "us", "our",
    "you", "your", "he", "him", "his", "she", "her", "it", "its", "they", "them", "their", "this", "that",
    "these", "those", "of", "in", "on", "at", "to", "for", "with", "by", "from", "as", "into", "onto", "up",
    "down", "out", "off", "over", "under", "and", "or", "but", "nor", "so", "if", "then", "than", "no",
    "not", "do", "does", "did", "has", "have", "had", "can", "could", "will", "would", "shall", "should",
    "may", "might", "must", "just", "very", "too", "also", "all", "any", "some", "each", "every", "both",
    "few", "more", "most", "other", "such", "own", "same", "only", "here", "there", "when", "where", "why",
    "how", "what", "which", "who", "whom", "whose", "while", "about", "above", "after", "again", "against",
    "before", "below", "between", "during", "through", "until", "per", "via", "s", "t", "d", "ll", "re",
    "ve", "m",
];

/// The longest piece of a split word that is rejoined: longer pieces are words of their own.
const MAX_PIECE: usize = 6;

/// `words` with each run of two or three pieces that together spell a word `known` knows
/// ("nu de" → "nude", "chi ld" → "child") joined into it; `None` when nothing was joined. A
/// piece is short, not a function word and not a number, and a run never starts with a word
/// `known` already knows.
pub fn rejoin(words: &[String], known: impl Fn(&str) -> bool) -> Option<Vec<String>> {
    let piece = |w: &String| {
        w.chars().all(char::is_alphabetic)
            && w.chars().count() <= MAX_PIECE
            && !NEVER_A_PIECE.contains(&w.as_str())
    };
    let mut out = Vec::with_capacity(words.len());
    let mut joined = false;
    let mut i = 0;
    'words: while i < words.len() {
        for k in [3, 2] {
            let Some(run) = words.get(i..i + k) else {
                continue;
            };
            // A run that starts with a known word is that word and what follows ("naked mole
            // rat" is not one word, however the lists' prefixes would read it).
            let starts_known = (1..k).any(|j| known(&run[..j].concat()));
            if run.iter().all(piece) && !starts_known {
                let word = run.concat();
                if word.chars().count() >= 4 && known(&word) {
                    out.push(word);
                    joined = true;
                    i += k;
                    continue 'words;
                }
            }
        }
        out.push(words[i].clone());
        i += 1;
    }
    joined.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words_of(text: &str) -> Vec<String> {
        variants(text).into_iter().flatten().collect()
    }

    #[test]
    fn folding_undoes_character_disguises() {
        // Fullwidth, zero-width joiner, soft hyphen, bidi override, Cyrillic and Greek
        // look-alikes, accents, German sharp s.
        assert_eq!(fold("ＮＵＤＥ"), "nude");
        assert_eq!(fold("nu\u{200d}de"), "nude");
        assert_eq!(fold("na\u{ad}ked"), "naked");
        assert_eq!(fold("\u{202e}nude"), "nude");
        assert_eq!(fold("nаkеd"), "naked"); // Cyrillic а and е
        assert_eq!(fold("νυde"), "vude"); // Greek nu looks like v, upsilon like u
        assert_eq!(fold("nüdé"), "nude");
        assert_eq!(fold("Straße"), "strasse");
        assert_eq!(fold("ǸUDE"), "nude");
    }

    #[test]
    fn variants_undo_word_disguises() {
        assert!(words_of("n a k e d woman").contains(&"naked".to_owned()));
        assert!(words_of("n.u.d.e").contains(&"nude".to_owned()));
        assert!(words_of("a n.u.d.e woman").contains(&"nude".to_owned()));
        assert!(words_of("i k i l l").contains(&"ikill".to_owned()));
        assert!(words_of("n_u_d_e photo").contains(&"nude".to_owned()));
        assert!(words_of("nuuuude").contains(&"nude".to_owned()));
        assert!(words_of("p0rn").contains(&"porn".to_owned()));
        assert!(words_of("n@k3d").contains(&"naked".to_owned()));
        assert!(words_of("$3x").contains(&"sex".to_owned()));
        assert!(words_of("k1ll").contains(&"kill".to_owned()));
        assert!(words_of("b1ood").contains(&"blood".to_owned()));
        // Punctuation inside a word.
        for split in ["na-ked", "na_ked", "na.ked", "na\u{2011}ked", "na--ked"] {
            assert!(words_of(split).contains(&"naked".to_owned()), "{split}");
        }
        // The words as written come first; the closed-up reading is only another variant.
        assert_eq!(
            variants("a well-known painter")[0],
            ["a", "well", "known", "painter"]
        );
        assert!(variants("a well-known painter").contains(&vec![
            "a".into(),
            "wellknown".into(),
            "painter".into()
        ]));
        // Numbers on their own stay numbers.
        assert!(words_of("a 12 year old").contains(&"12".to_owned()));
        // Ordinary text is unchanged apart from case.
        assert_eq!(
            variants("A cat, in Essex!")[0],
            vec!["a".to_owned(), "cat".into(), "in".into(), "essex".into()]
        );
    }

    fn owned(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn split_words_are_rejoined_into_known_words_only() {
        let known = |w: &str| matches!(w, "nude" | "child" | "sex" | "penis") || w.starts_with("naked");
        let rejoined = |s: &str| rejoin(&owned(s), known).map(|w| w.join(" "));
        assert_eq!(rejoined("a nu de woman").as_deref(), Some("a nude woman"));
        assert_eq!(rejoined("n ak ed child").as_deref(), Some("naked child"));
        assert_eq!(rejoined("a chi ld").as_deref(), Some("a child"));
        // Function words and an apostrophe's pieces are never pieces.
        assert_eq!(rejoined("a pen is on the desk"), None);
        assert_eq!(rejoined("john s ex wife"), None);
        // Nothing that spells no known word is joined.
        assert_eq!(rejoined("a red cat on a mat"), None);
        // Numbers and long words are not pieces.
        assert_eq!(rejoined("nu 12 de"), None);
        // A known word and what follows it stay apart, even where a prefix would match.
        assert_eq!(rejoined("a naked mole rat"), None);
    }
}
