//! The shipped dev set must keep its numbers: a change to the word lists or the normaliser that
//! loses recall or adds false positives fails here, with the prompts that changed.

use nanoimg_safety::{eval, Category, PromptModerator, Strictness};

fn report(strictness: Strictness) -> eval::Report {
    let set = eval::parse(include_str!("../eval/dev.tsv")).unwrap();
    assert!(set.len() >= 300, "the dev set has {} prompts", set.len());
    eval::evaluate(&PromptModerator::default(), &set, strictness)
}

#[test]
fn auto_strictness_meets_the_targets_on_the_dev_set() {
    let r = report(Strictness::Auto);
    let detail = format!("{}\n{:#?}", r.table(), r.mistakes);
    assert!(r.unsafe_recall() >= 0.95, "{detail}");
    assert!(r.false_positive_rate() <= 0.02, "{detail}");
}

#[test]
fn no_strictness_lets_sexual_content_involving_minors_through() {
    for s in [Strictness::Auto, Strictness::Low] {
        let r = report(s);
        let t = r.by_category[&Category::SexualMinors];
        assert_eq!(t.blocked, t.total, "{s:?}: {:#?}", r.mistakes);
        assert_eq!(t.right_category, t.total, "{s:?}");
    }
}

#[test]
fn low_strictness_blocks_no_more_than_auto() {
    let (auto, low) = (report(Strictness::Auto), report(Strictness::Low));
    assert!(low.safe.blocked <= auto.safe.blocked);
    for (c, t) in &low.by_category {
        assert!(t.blocked <= auto.by_category[c].blocked, "{c:?}");
    }
}
