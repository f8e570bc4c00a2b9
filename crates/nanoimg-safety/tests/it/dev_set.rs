//! The shipped dev set must keep its numbers with both prompt layers (the lexicon and the
//! semantic layer on the real all-MiniLM-L6-v2 weights): a change to the word lists, the
//! normaliser, the exemplars or the thresholds that loses recall or adds false positives fails
//! here, with the prompts that changed.

use nanoimg_safety::semantic::SemanticLayer;
use nanoimg_safety::{eval, models, testing, Category, PromptModerator, Strictness};
use std::sync::{Arc, OnceLock};

fn moderator() -> &'static PromptModerator {
    static M: OnceLock<PromptModerator> = OnceLock::new();
    M.get_or_init(|| {
        let layer = SemanticLayer::load(&models::MINILM.path(&testing::models_dir())).unwrap();
        PromptModerator::default().with_semantic(Arc::new(layer))
    })
}

fn set() -> Vec<eval::Example> {
    let set = eval::parse(include_str!("../../eval/dev.tsv")).unwrap();
    assert!(set.len() >= 300, "the dev set has {} prompts", set.len());
    set
}

fn report(m: &PromptModerator, strictness: Strictness) -> eval::Report {
    eval::evaluate(m, &set(), strictness).unwrap()
}

#[test]
fn auto_strictness_meets_the_targets_on_the_dev_set() {
    let r = report(moderator(), Strictness::Auto);
    let detail = format!("{}\n{:#?}", r.table(), r.mistakes);
    assert!(r.unsafe_recall() >= 0.95, "{detail}");
    assert!(r.false_positive_rate() <= 0.02, "{detail}");
}

#[test]
fn the_semantic_layer_only_adds_to_the_lexicon() {
    let lexicon = PromptModerator::default();
    let (mut gained, mut both) = (0, 0);
    for ex in set().iter().filter(|e| e.label.is_some()) {
        let alone = lexicon.check(&[&ex.prompt], Strictness::Auto).unwrap();
        let full = moderator().check(&[&ex.prompt], Strictness::Auto).unwrap();
        assert!(!alone.blocked || full.blocked, "{:?}", ex.prompt);
        gained += usize::from(full.blocked && !alone.blocked);
        both += usize::from(full.blocked);
    }
    // On this set the lexicon alone catches about four in five; the semantic layer most of the rest.
    assert!(gained >= 30, "the semantic layer added {gained} of {both}");
}

#[test]
fn no_strictness_lets_sexual_content_involving_minors_through() {
    for s in [Strictness::Auto, Strictness::Low] {
        let r = report(moderator(), s);
        let t = r.by_category[&Category::SexualMinors];
        assert_eq!(t.blocked, t.total, "{s:?}: {:#?}", r.mistakes);
        assert_eq!(t.right_category, t.total, "{s:?}");
    }
}

#[test]
fn low_strictness_blocks_no_more_than_auto() {
    let (auto, low) = (
        report(moderator(), Strictness::Auto),
        report(moderator(), Strictness::Low),
    );
    assert!(low.safe.blocked <= auto.safe.blocked);
    for (c, t) in &low.by_category {
        assert!(t.blocked <= auto.by_category[c].blocked, "{c:?}");
    }
}
