//! For whoever tunes the semantic layer: how recall and false positives move with the two
//! thresholds on a labelled TSV (the dev set; never the held-out set).
//!
//!     cargo run --release -p nanoimg-safety --example semantic_sweep -- MODELS_DIR eval/dev.tsv

use nanoimg_safety::semantic::{SemanticLayer, Thresholds};
use nanoimg_safety::{eval, models, PromptModerator, Strictness};
use std::sync::Arc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (root, file) = match args.as_slice() {
        [_, root, file] => (root, file),
        _ => {
            eprintln!("usage: semantic_sweep MODELS_DIR FILE.tsv");
            std::process::exit(2)
        }
    };
    let set = eval::parse(&std::fs::read_to_string(file).unwrap()).unwrap();
    let base = SemanticLayer::load(&models::MINILM.path(root.as_ref())).unwrap();
    let mut layer = Some(base);
    println!("min_similarity margin recall fp");
    for min in [0.45f32, 0.5, 0.55, 0.6, 0.65] {
        for margin in [0.0f32, 0.03, 0.05, 0.08, 0.12] {
            let mut l = layer.take().unwrap();
            l.thresholds = Thresholds {
                min_similarity: min,
                margin,
            };
            let arc = Arc::new(l);
            let m = PromptModerator::default().with_semantic(arc.clone());
            let r = eval::evaluate(&m, &set, Strictness::Auto).unwrap();
            println!(
                "{min:.2} {margin:.2} {:.1} {:.1}",
                100.0 * r.unsafe_recall(),
                100.0 * r.false_positive_rate()
            );
            drop(m);
            layer = Some(Arc::into_inner(arc).unwrap());
        }
    }
}
