//! Prompt-check latency: every prompt of the dev and held-out sets, many rounds, one at a time
//! (as the server calls it). `cargo bench -p nanoimg-safety --bench prompt`.

use nanoimg_safety::{eval, PromptModerator, Strictness};
use std::time::{Duration, Instant};

fn main() {
    let started = Instant::now();
    let m = PromptModerator::default();
    let load = started.elapsed();
    let mut prompts: Vec<String> = Vec::new();
    for set in [
        include_str!("../eval/dev.tsv"),
        include_str!("../eval/holdout.tsv"),
    ] {
        prompts.extend(eval::parse(set).unwrap().into_iter().map(|e| e.prompt));
    }
    // A long prompt too: the server's limit is 4000 bytes.
    prompts.push("a watercolour of a quiet harbour at dawn, ".repeat(95));
    let mut times: Vec<Duration> = Vec::new();
    for _ in 0..50 {
        for p in &prompts {
            let t = Instant::now();
            std::hint::black_box(m.check(&[p, ""], Strictness::Auto));
            times.push(t.elapsed());
        }
    }
    times.sort();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
    let long = prompts.last().unwrap();
    let t = Instant::now();
    for _ in 0..100 {
        std::hint::black_box(m.check(&[long, ""], Strictness::Auto));
    }
    let long_us = t.elapsed().as_secs_f64() * 1e6 / 100.0;
    println!("a {}-byte prompt: {long_us:.0} µs a check", long.len());
    println!(
        "word lists compiled in {:.1} ms; {} checks of {} prompts: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        load.as_secs_f64() * 1000.0,
        times.len(),
        prompts.len(),
        pct(0.5),
        pct(0.99),
        times.last().unwrap().as_secs_f64() * 1e6
    );
}
