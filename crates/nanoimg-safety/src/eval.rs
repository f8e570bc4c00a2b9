//! Measuring prompt moderation on a labelled set: a TSV of `category<TAB>prompt` lines, with
//! `safe` for prompts that must pass. Recall per category counts a prompt as caught when it is
//! blocked; the false-positive rate is the share of `safe` prompts blocked.

use crate::{Category, PromptModerator, SafetyError, Strictness};
use std::collections::BTreeMap;

/// One labelled prompt.
#[derive(Debug, Clone)]
pub struct Example {
    /// `None` = safe.
    pub label: Option<Category>,
    pub prompt: String,
    pub line: usize,
}

/// Parses the TSV; `#` lines and blank lines are skipped; errors name the line.
pub fn parse(tsv: &str) -> Result<Vec<Example>, SafetyError> {
    let mut out = Vec::new();
    for (i, line) in tsv.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: String| SafetyError::EvalSet(format!("line {}: {why}", i + 1));
        let (label, prompt) = line
            .split_once('\t')
            .ok_or_else(|| bad("expected CATEGORY<TAB>PROMPT".into()))?;
        let label = match label.trim() {
            "safe" => None,
            c => Some(Category::parse(c).ok_or_else(|| {
                bad(format!(
                    "unknown category {c:?}; use safe or one of {}",
                    Category::ALL.map(Category::as_str).join(", ")
                ))
            })?),
        };
        if prompt.trim().is_empty() {
            return Err(bad("empty prompt".into()));
        }
        out.push(Example {
            label,
            prompt: prompt.to_owned(),
            line: i + 1,
        });
    }
    Ok(out)
}

/// Counts for one label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub total: usize,
    /// Blocked (for `safe`: wrongly).
    pub blocked: usize,
    /// Blocked with this very category among the reasons.
    pub right_category: usize,
}

/// The outcome of a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub by_category: BTreeMap<Category, Tally>,
    pub safe: Tally,
    /// Unsafe prompts let through, and safe prompts blocked: (line, label, prompt, categories).
    pub mistakes: Vec<(usize, String, String, String)>,
}

impl Report {
    pub fn unsafe_recall(&self) -> f64 {
        let (caught, total) = self
            .by_category
            .values()
            .fold((0, 0), |(c, t), x| (c + x.blocked, t + x.total));
        caught as f64 / total.max(1) as f64
    }

    pub fn false_positive_rate(&self) -> f64 {
        self.safe.blocked as f64 / self.safe.total.max(1) as f64
    }

    /// A Markdown table.
    pub fn table(&self) -> String {
        let mut s = String::from(
            "| label | prompts | blocked | recall | blocked as this category |\n|---|---|---|---|---|\n",
        );
        for (c, t) in &self.by_category {
            s += &format!(
                "| {} | {} | {} | {:.1} % | {} |\n",
                c.as_str(),
                t.total,
                t.blocked,
                100.0 * t.blocked as f64 / t.total.max(1) as f64,
                t.right_category
            );
        }
        s += &format!(
            "| all unsafe | {} | {} | {:.1} % | |\n",
            self.by_category.values().map(|t| t.total).sum::<usize>(),
            self.by_category.values().map(|t| t.blocked).sum::<usize>(),
            100.0 * self.unsafe_recall()
        );
        s += &format!(
            "| safe | {} | {} (false positives) | {:.1} % FP | |\n",
            self.safe.total,
            self.safe.blocked,
            100.0 * self.false_positive_rate()
        );
        s
    }
}

/// Runs every example through the moderator.
pub fn evaluate(m: &PromptModerator, set: &[Example], strictness: Strictness) -> Result<Report, SafetyError> {
    let mut r = Report::default();
    for ex in set {
        let v = m.check(&[&ex.prompt], strictness)?;
        let cats = v.categories();
        let tally = match ex.label {
            Some(c) => r.by_category.entry(c).or_default(),
            None => &mut r.safe,
        };
        tally.total += 1;
        if v.blocked {
            tally.blocked += 1;
        }
        if ex.label.is_some_and(|c| cats.contains(&c)) {
            tally.right_category += 1;
        }
        if v.blocked != ex.label.is_some() {
            r.mistakes.push((
                ex.line,
                ex.label.map_or("safe", Category::as_str).to_owned(),
                ex.prompt.clone(),
                cats.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(","),
            ));
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names_bad_lines_and_evaluate_counts() {
        assert!(parse("sexual\tnude\nweird\tx")
            .unwrap_err()
            .to_string()
            .contains("line 2"));
        assert!(parse("no tab here").is_err());
        let set = parse("# comment\nsexual\tnude photo\nsafe\ta red apple\nsafe\tnaked mole rat\n").unwrap();
        let r = evaluate(&PromptModerator::default(), &set, Strictness::Auto).unwrap();
        assert_eq!(r.by_category[&Category::Sexual].blocked, 1);
        assert_eq!(r.safe.total, 2);
        assert_eq!(r.unsafe_recall(), 1.0);
    }
}
