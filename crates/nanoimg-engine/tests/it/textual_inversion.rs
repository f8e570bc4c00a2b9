//! Textual-inversion embeddings in every form people have: an embedding made of the token
//! vectors of some words stands exactly for those words — by the file's name (A1111's
//! `emb_params`, SDXL's `clip_l` + `clip_g`) or by its own token (diffusers) — while prompts
//! that do not name it encode exactly as before; one made for another family is skipped with
//! why.

use crate::common;
use candle_core::{DType, Device, Tensor};
use nanoimg_core::Limits;
use nanoimg_engine::lora::names::Component;
use nanoimg_engine::pipeline::NoProgress;
use nanoimg_engine::textual_inversion::TextualInversion;
use nanoimg_engine::tokenizer::ClipTokenizer;
use nanoimg_engine::{CancelToken, GenerateRequest, StableDiffusion};
use std::collections::HashMap;
use std::path::Path;

/// The token-table rows of `words` in `model`'s first encoder (from `folder`): `[n, d]`,
/// taken from the loaded model (`synthetic::write_embedding` reads the files).
fn rows(model: &StableDiffusion, folder: &Path, i: usize, words: &str) -> Tensor {
    let tok_dir = folder.join("tokenizer");
    let ids = ClipTokenizer::from_dir(&tok_dir).unwrap().encode_raw(words);
    let w = model.component_weights(Component::TextEncoder(i)).unwrap();
    let table = w
        .iter()
        .find(|(k, _)| k.ends_with("embeddings.token_embedding.weight"))
        .map(|(_, t)| t.clone())
        .unwrap();
    let ids = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap();
    table.index_select(&ids, 0).unwrap().to_dtype(DType::F32).unwrap()
}

fn save(path: &Path, tensors: Vec<(&str, Tensor)>) {
    let map: HashMap<String, Tensor> = tensors.into_iter().map(|(k, t)| (k.to_owned(), t)).collect();
    candle_core::safetensors::save(&map, path).unwrap();
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn context(m: &StableDiffusion, prompt: &str) -> Tensor {
    m.encode_text(prompt, false).unwrap().context
}

fn draw(m: &StableDiffusion, prompt: &str) -> image::RgbImage {
    let req = GenerateRequest {
        steps: 2,
        seed: 3,
        ..GenerateRequest::new(m, prompt)
    };
    m.generate(&req, &Limits::default(), &NoProgress, &CancelToken::new())
        .unwrap()
        .remove(0)
        .image
}

#[test]
fn an_embedding_of_some_words_stands_exactly_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let folder = common::path("tiny-sd1");
    let base = common::load("tiny-sd1");
    // A1111's form, two vectors, called by the file's name.
    let a1111 = dir.path().join("redcat.safetensors");
    nanoimg_engine::synthetic::write_embedding(&folder, "red cat", &a1111).unwrap();
    // diffusers' form, one vector named by its token.
    let diffusers = dir.path().join("learned_embeds.safetensors");
    let one = rows(&base, &folder, 0, "dog").squeeze(0).unwrap();
    save(&diffusers, vec![("<doggo>", one)]);
    let tis = [
        TextualInversion::read(&a1111, "redcat").unwrap(),
        TextualInversion::read(&diffusers, "learned_embeds").unwrap(),
    ];
    let (m, skipped) = base.with_embeddings(&tis).unwrap();
    assert!(skipped.is_empty(), "{skipped:?}");
    assert!(m.embedding_words().contains(&"<doggo>".to_owned()));

    let same = |a: &str, b: &str| max_diff(&context(&m, a), &context(&base, b));
    assert!(same("a RedCat on a mat", "a red cat on a mat") < 1e-5);
    assert!(same("a <doggo>, redcat", "a dog, red cat") < 1e-5);
    assert!(same("learned_embeds", "dog") < 1e-5);
    // Not inside longer words; other prompts exactly as before.
    assert_eq!(same("redcats and xredcat", "redcats and xredcat"), 0.0);
    assert_eq!(same("a red cat", "a red cat"), 0.0);
    assert_eq!(draw(&m, "a redcat"), draw(&base, "a red cat"));
    assert_ne!(draw(&m, "a redcat"), draw(&base, "a blue cat"));
    // LoRA merging keeps the words.
    assert_eq!(m.with_loras(&[]).unwrap().embedding_words(), m.embedding_words());
}

#[test]
fn sdxl_embeddings_carry_both_encoders_and_other_families_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let folder = common::path("tiny-sdxl");
    let base = common::load("tiny-sdxl");
    let path = dir.path().join("redcat-xl.safetensors");
    nanoimg_engine::synthetic::write_embedding(&folder, "red cat", &path).unwrap();
    let sd1 = dir.path().join("sd1.safetensors");
    save(
        &sd1,
        vec![(
            "emb_params",
            Tensor::zeros((1, 32), DType::F32, &Device::Cpu).unwrap(),
        )],
    );
    let tis = [
        TextualInversion::read(&path, "redcat-xl").unwrap(),
        TextualInversion::read(&sd1, "sd1").unwrap(),
    ];
    let (m, skipped) = base.with_embeddings(&tis).unwrap();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].0, "sd1");
    assert!(skipped[0].1.contains("clip_l and clip_g"), "{skipped:?}");
    let a = m.encode_text("a redcat-xl", false).unwrap();
    let b = base.encode_text("a red cat", false).unwrap();
    assert!(max_diff(&a.context, &b.context) < 1e-5);
    assert!(max_diff(a.pooled.as_ref().unwrap(), b.pooled.as_ref().unwrap()) < 1e-5);

    // Not an embedding at all: an error naming what it found.
    let junk = dir.path().join("junk.safetensors");
    save(
        &junk,
        vec![
            ("a", Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap()),
            ("b", Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap()),
        ],
    );
    let e = TextualInversion::read(&junk, "junk").unwrap_err().to_string();
    assert!(e.contains("not an embedding"), "{e}");
}
