//! The built-in planner: a plain-language instruction → an [`EditPlan`], with no network and no
//! model. The instruction is data: it is split into clauses, and each clause is matched against
//! the language of edits (numbers, percentages, "a bit", "twice", directions, aspect ratios,
//! colour words). What pixel operations cannot express becomes a generative operation with a
//! prompt taken from the clause. A clause that asks for anything but a change to this image
//! (deleting, sending, granting, running queries) is refused with the reason; nothing in a plan
//! can do such things anyway.

mod clause;
mod words;

use crate::plan::{Anchor, EditPlan, Op, Place, Rgb, CAPTION_SIZE};
use crate::EditError;
use clause::clause_op;
use words::{any_word, colour, contains_word, outside_the_image};

/// What an instruction asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Planned {
    /// Edits to run on the current image.
    Edit(EditPlan),
    /// Go back one version (the session does it; no plan runs).
    Undo,
    /// Go forward again after an undo.
    Redo,
}

/// What the model the plan is for can do, which decides how generative clauses are handed to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// The model follows edit instructions (FLUX.1 Kontext): a clause that asks for a
    /// generative change to the picture (what would otherwise be `restyle` or `inpaint` with a
    /// prompt taken from the clause) goes to it in the user's words as `instruct`; consecutive
    /// ones as one instruction. Pixel operations and refusals are the same either way.
    pub instruct: bool,
}

/// The clauses of an instruction: "crop it to a square, brighten it and then add a vignette".
fn clauses(text: &str) -> Vec<String> {
    let mut t = format!(" {} ", text.to_lowercase().replace(['\n', '\t'], " "));
    // Phrases whose "and" is not a separator.
    for (from, to) in [
        (" black and white ", " grayscale "),
        (" black & white ", " grayscale "),
        (" b&w ", " grayscale "),
        (" b/w ", " grayscale "),
        (" rock and roll ", " rock-n-roll "),
    ] {
        t = t.replace(from, to);
    }
    for sep in [
        " and then ",
        " then ",
        " and also ",
        " also ",
        " and ",
        " plus ",
        ";",
        ",",
        ". ",
        "&",
    ] {
        t = t.replace(sep, "\u{1}");
    }
    t.split('\u{1}')
        .map(|s| s.trim().trim_end_matches(['.', '!', '?']).trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Words that say a clause is about text on the picture.
const CAPTION_WORDS: &[&str] = &[
    "caption", "text", "write", "writing", "says", "saying", "say", "label", "title", "words", "headline",
];

/// Takes the quoted passages out of an instruction that talks about text ("add a caption saying
/// \"Happy birthday, Ada!\""), leaving `⟦n⟧` in their place: their case and punctuation are
/// kept, and nothing inside them is read as part of the instruction. Double quotes (straight or
/// curly) and single quotes at word edges count; an apostrophe does not.
fn take_quotes(text: &str) -> (String, Vec<String>) {
    let lower = text.to_lowercase();
    if !CAPTION_WORDS.iter().any(|w| contains_word(&lower, w)) {
        return (text.to_owned(), Vec::new());
    }
    let chars: Vec<char> = text.chars().collect();
    let closer = |c: char| match c {
        '"' => Some('"'),
        '\u{201c}' => Some('\u{201d}'),
        '\'' | '\u{2018}' => Some(if c == '\'' { '\'' } else { '\u{2019}' }),
        _ => None,
    };
    let (mut out, mut quoted) = (String::new(), Vec::new());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let at_edge = i == 0 || !chars[i - 1].is_alphanumeric();
        if let Some(close) = closer(c).filter(|_| at_edge) {
            let end = (i + 1..chars.len())
                .find(|&j| chars[j] == close && chars.get(j + 1).is_none_or(|n| !n.is_alphanumeric()));
            if let Some(end) = end {
                let inner: String = chars[i + 1..end].iter().collect();
                if !inner.trim().is_empty() {
                    out.push_str(&format!(" \u{27e6}{}\u{27e7} ", quoted.len()));
                    quoted.push(inner.trim().to_owned());
                    i = end + 1;
                    continue;
                }
            }
        }
        out.push(c);
        i += 1;
    }
    (out, quoted)
}

/// The index of the quoted passage a clause holds, if it holds one.
fn placeholder(c: &str) -> Option<usize> {
    let start = c.find('\u{27e6}')? + '\u{27e6}'.len_utf8();
    let end = start + c[start..].find('\u{27e7}')?;
    c[start..end].parse().ok()
}

/// A clause with its quoted passages put back (lower-cased like the rest of the clause).
fn restore(c: &str, quoted: &[String]) -> String {
    let mut c = c.to_owned();
    for (i, q) in quoted.iter().enumerate() {
        c = c.replace(&format!("\u{27e6}{i}\u{27e7}"), &q.to_lowercase());
    }
    c
}

/// "add a caption saying ⟦0⟧ at the top in red" → a caption.
fn caption_op(c: &str, quoted: &[String]) -> Option<Op> {
    let text = quoted.get(placeholder(c)?)?.clone();
    if !any_word(c, CAPTION_WORDS) {
        return None;
    }
    let place = if any_word(c, &["top", "above", "header"]) {
        Place::Top
    } else if any_word(c, &["middle", "center", "centre", "across"]) {
        Place::Center
    } else {
        Place::Bottom
    };
    let size = if any_word(c, &["big", "large", "huge", "bold", "giant"]) {
        0.12
    } else if any_word(c, &["small", "tiny", "little", "subtle"]) {
        0.05
    } else {
        CAPTION_SIZE
    };
    Some(Op::Caption {
        text,
        place,
        size,
        color: colour(c).unwrap_or(Rgb([255, 255, 255])),
    })
}

/// Plans an instruction for an image of `size`. Refused clauses make the whole instruction
/// refused (a half-done instruction would surprise more than a clear "no").
pub fn plan(instruction: &str, size: (u32, u32)) -> Result<Planned, EditError> {
    plan_with(instruction, size, PlanOptions::default())
}

/// [`plan`] for a model that can do what `opts` says.
pub fn plan_with(instruction: &str, size: (u32, u32), opts: PlanOptions) -> Result<Planned, EditError> {
    let text = instruction.trim();
    if text.is_empty() {
        return Err(EditError::InvalidPlan("the instruction is empty".into()));
    }
    if text.len() > 2000 {
        return Err(EditError::InvalidPlan(format!(
            "the instruction is {} bytes; the limit is 2000",
            text.len()
        )));
    }
    let (text, quoted) = take_quotes(text);
    let parts = clauses(&text);
    match parts.as_slice() {
        [one]
            if matches!(
                one.as_str(),
                "undo"
                    | "undo that"
                    | "go back"
                    | "revert"
                    | "revert that"
                    | "undo the last edit"
                    | "undo last edit"
            ) =>
        {
            return Ok(Planned::Undo)
        }
        [one] if matches!(one.as_str(), "redo" | "redo that") => return Ok(Planned::Redo),
        _ => {}
    }
    let mut ops = Vec::new();
    let mut size_now = size;
    let limits = crate::PlanLimits::default();
    for c in &parts {
        // "…, keep the left": where the previous aspect crop keeps the picture.
        if let (Some(rest), Some(Op::CropAspect { anchor, .. })) = (c.strip_prefix("keep "), ops.last_mut()) {
            let a = [
                ("left", Anchor::Left),
                ("right", Anchor::Right),
                ("top", Anchor::Top),
                ("bottom", Anchor::Bottom),
            ]
            .into_iter()
            .find(|(w, _)| contains_word(rest, w));
            if let Some((_, a)) = a {
                *anchor = a;
                continue;
            }
        }
        let more = match caption_op(c, &quoted) {
            Some(op) => {
                if let Some(why) = outside_the_image(c) {
                    return Err(EditError::InvalidPlan(format!("\"{c}\" was not done: {why}")));
                }
                vec![op]
            }
            None => {
                let words = restore(c, &quoted);
                let op = clause_op(&words, size_now).map_err(|e| EditError::InvalidPlan(e.to_string()))?;
                match (op, ops.last_mut()) {
                    (Op::Restyle { .. } | Op::Inpaint { .. }, Some(Op::Instruct { instruction }))
                        if opts.instruct =>
                    {
                        instruction.push_str(", ");
                        instruction.push_str(&words);
                        continue;
                    }
                    (Op::Restyle { .. } | Op::Inpaint { .. }, _) if opts.instruct => {
                        vec![Op::Instruct { instruction: words }]
                    }
                    (op, _) => vec![op],
                }
            }
        };
        for op in &more {
            size_now = op
                .check(size_now, &limits)
                .map_err(|m| EditError::InvalidPlan(format!("\"{c}\": {m}")))?;
        }
        ops.extend(more);
    }
    Ok(Planned::Edit(EditPlan::new(ops)))
}

/// What asks for the last instruction again.
const REPEAT: &[&str] = &[
    "again",
    "do that again",
    "do it again",
    "repeat",
    "repeat that",
    "once more",
    "one more time",
    "same again",
    "more",
    "a bit more",
    "even more",
];

/// Plans `instruction` in an edit session whose earlier instructions, from the first to the one
/// that made the current image, are `history`. "again", "once more", "a bit more" and the like
/// repeat the last instruction on the current image; everything else is [`plan`].
pub fn plan_in_context(
    instruction: &str,
    size: (u32, u32),
    history: &[String],
    opts: PlanOptions,
) -> Result<Planned, EditError> {
    let said = instruction
        .trim()
        .trim_end_matches(['.', '!', '?'])
        .trim()
        .to_lowercase();
    let said = said.strip_prefix("please ").unwrap_or(&said);
    if !REPEAT.contains(&said) {
        return plan_with(instruction, size, opts);
    }
    // The last instruction that planned an edit (not an undo, redo or a repeat itself).
    let last = history.iter().rev().find(|h| {
        let h = h.trim().trim_end_matches(['.', '!', '?']).to_lowercase();
        !REPEAT.contains(&h.as_str()) && matches!(plan(&h, size), Ok(Planned::Edit(_)))
    });
    match last {
        Some(h) => plan_with(h, size, opts),
        None => Err(EditError::InvalidPlan(format!(
            "\"{}\" repeats the last edit, and there is none yet",
            instruction.trim()
        ))),
    }
}
