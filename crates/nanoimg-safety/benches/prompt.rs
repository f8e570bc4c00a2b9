//! Prompt-check latency: every prompt of the dev and held-out sets, one at a time (as the
//! server calls it), with the word lists alone and with the semantic layer too (the real
//! all-MiniLM-L6-v2 from the pinned wheel in .cache/wheels, which scripts/test.sh downloads).
//! `cargo bench -p nanoimg-safety --bench prompt`.

use nanoimg_safety::semantic::SemanticLayer;
use nanoimg_safety::{eval, models, testing, PromptModerator, Strictness};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn measure(name: &str, m: &PromptModerator, prompts: &[String], rounds: usize) {
    let mut times: Vec<Duration> = Vec::new();
    for _ in 0..rounds {
        for p in prompts {
            let t = Instant::now();
            std::hint::black_box(m.check(&[p, ""], Strictness::Auto).unwrap());
            times.push(t.elapsed());
        }
    }
    times.sort();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    let long = prompts.last().unwrap();
    let t = Instant::now();
    let n = rounds.min(20);
    for _ in 0..n {
        std::hint::black_box(m.check(&[long, ""], Strictness::Auto).unwrap());
    }
    println!(
        "{name}: {} checks: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; a {}-byte prompt {:.3} ms",
        times.len(),
        pct(0.5),
        pct(0.99),
        times.last().unwrap().as_secs_f64() * 1e3,
        long.len(),
        t.elapsed().as_secs_f64() * 1e3 / n as f64
    );
}

fn main() {
    let mut prompts: Vec<String> = Vec::new();
    for set in [
        include_str!("../eval/dev.tsv"),
        include_str!("../eval/holdout.tsv"),
    ] {
        prompts.extend(eval::parse(set).unwrap().into_iter().map(|e| e.prompt));
    }
    // A long prompt last: the server's limit is 4000 bytes.
    prompts.push("a watercolour of a quiet harbour at dawn, ".repeat(95));

    let started = Instant::now();
    let lexicon = PromptModerator::default();
    println!(
        "word lists compiled in {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    measure("lexicon", &lexicon, &prompts, 50);

    let started = Instant::now();
    let layer = SemanticLayer::load(&models::MINILM.path(&testing::models_dir())).unwrap();
    println!(
        "semantic layer loaded (model + exemplars embedded) in {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    measure(
        "lexicon + semantic",
        &lexicon.with_semantic(Arc::new(layer)),
        &prompts,
        3,
    );
}
