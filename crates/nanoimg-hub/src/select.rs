//! Which of a repository's files a model needs. A diffusers repository (with
//! `model_index.json`) gives the components the index lists, each with its configs, tokenizer
//! files and safetensors weights in one precision; pickles, other frameworks' exports and the
//! single-file copy many repositories also carry are left on the hub. A repository without an
//! index gives its one single-file checkpoint (with A1111's `<stem>.yaml` and
//! `<stem>.vae.safetensors` if there), or the files asked for by name.

use crate::{HubError, Result};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

/// One file as the hub lists it (`/api/models/{id}/revision/{rev}?blobs=true`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Sibling {
    pub rfilename: String,
    #[serde(default)]
    pub size: Option<u64>,
    /// The git blob SHA-1.
    #[serde(default)]
    pub blob_id: Option<String>,
    /// For files stored in LFS: their SHA-256 and size.
    #[serde(default)]
    pub lfs: Option<Lfs>,
}

/// A file's LFS pointer.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Lfs {
    pub sha256: String,
    pub size: u64,
}

/// How a file is checked once downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Digest {
    /// SHA-256 of the content (LFS files).
    Sha256(String),
    /// git's blob SHA-1: SHA-1 of `blob <len>\0` and the content (small files).
    GitSha1(String),
}

impl Digest {
    /// The hex hash, which also names the blob in the cache.
    pub fn hex(&self) -> &str {
        match self {
            Digest::Sha256(h) | Digest::GitSha1(h) => h,
        }
    }
}

impl Sibling {
    /// The size and hash to check the download against, if the listing gives them.
    pub fn expected(&self) -> Option<(u64, Digest)> {
        let hex = |h: &str| !h.is_empty() && h.len() <= 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
        match (&self.lfs, &self.blob_id, self.size) {
            (Some(l), _, _) if hex(&l.sha256) => {
                Some((l.size, Digest::Sha256(l.sha256.to_ascii_lowercase())))
            }
            (None, Some(b), Some(size)) if hex(b) => Some((size, Digest::GitSha1(b.to_ascii_lowercase()))),
            _ => None,
        }
    }
}

/// What to pull beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// The precision variant of the weights (`fp16`): diffusers' `variant`. Without it the
    /// plain files, or the only variant a component has.
    pub variant: Option<String>,
    /// Configs and tokenizers only, no weights: the companion a single-file checkpoint needs.
    pub configs_only: bool,
    /// These files exactly (for repositories that hold several checkpoints).
    pub files: Vec<String>,
}

/// Why a file was left on the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    Pickle,
    OtherFormat,
    OtherPrecision,
    NotInModel,
    Weights,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Skip::Pickle => "a pickle (NanoImg reads safetensors only)",
            Skip::OtherFormat => "another framework's format",
            Skip::OtherPrecision => "another precision of the same weights",
            Skip::NotInModel => "not part of the model's components",
            Skip::Weights => "weights (configs only asked for)",
        })
    }
}

/// The files to pull, and those left out with why.
#[derive(Debug, Clone, Default)]
pub struct Chosen<'a> {
    pub files: Vec<&'a Sibling>,
    pub skipped: Vec<(&'a Sibling, Skip)>,
}

const PICKLES: &[&str] = &[".bin", ".ckpt", ".pt", ".pth", ".pkl", ".pickle"];
const OTHER_FORMATS: &[&str] = &[
    ".msgpack",
    ".h5",
    ".ot",
    ".onnx",
    ".onnx_data",
    ".pb",
    ".tflite",
    ".mlmodel",
    ".gguf",
    ".xml",
    ".npz",
];
const METADATA: &[&str] = &[".json", ".txt", ".model", ".tiktoken", ".yaml"];
const ROOT_DOCS: &[&str] = &["README.md", "LICENSE", "LICENSE.md", "LICENSE.txt"];

/// A weight file's precision variant: `x.fp16.safetensors` → fp16,
/// `x.fp16-00001-of-00002.safetensors` → fp16, `x.safetensors.index.fp16.json` → fp16.
fn variant_of(file: &str) -> Option<&str> {
    let stem = if let Some(s) = file.strip_suffix(".json") {
        let (_, after) = s.split_once(".safetensors.index")?;
        return after.strip_prefix('.');
    } else {
        file.strip_suffix(".safetensors")?
    };
    let stem = match stem.rsplit_once('-') {
        // Shards: name-00001-of-00002.
        Some((head, tail)) if tail.bytes().all(|b| b.is_ascii_digit()) => head
            .rsplit_once("-of")
            .and_then(|(h, _)| h.rsplit_once('-'))
            .map_or(stem, |(h, _)| h),
        _ => stem,
    };
    let (_, v) = stem.rsplit_once('.')?;
    Some(v)
}

fn is_weights(file: &str) -> bool {
    file.ends_with(".safetensors") || file.contains(".safetensors.index")
}

fn ends_with_any(file: &str, ends: &[&str]) -> bool {
    let lower = file.to_ascii_lowercase();
    ends.iter().any(|e| lower.ends_with(e))
}

/// Chooses the files of `repo` to pull. `model_index` is the parsed `model_index.json` when the
/// repository has one.
pub fn select<'a>(
    repo: &str,
    siblings: &'a [Sibling],
    model_index: Option<&serde_json::Value>,
    sel: &Selection,
) -> Result<Chosen<'a>> {
    let fail = |message: String| HubError::Selection {
        repo: repo.to_owned(),
        message,
    };
    if !sel.files.is_empty() {
        let mut chosen = Chosen::default();
        for f in &sel.files {
            let s = siblings
                .iter()
                .find(|s| &s.rfilename == f)
                .ok_or_else(|| fail(format!("no file {f:?} in the repository")))?;
            if ends_with_any(f, PICKLES) {
                return Err(fail(format!("{f} is a pickle: NanoImg reads safetensors only")));
            }
            chosen.files.push(s);
        }
        return Ok(chosen);
    }
    match model_index {
        Some(index) => select_diffusers(siblings, index, sel).map_err(fail),
        None => select_single_file(siblings, sel).map_err(fail),
    }
}

fn select_diffusers<'a>(
    siblings: &'a [Sibling],
    index: &serde_json::Value,
    sel: &Selection,
) -> Result<Chosen<'a>, String> {
    let mut components: BTreeSet<&str> = index
        .as_object()
        .ok_or("model_index.json is not a JSON object")?
        .iter()
        .filter(|(k, v)| {
            !k.starts_with('_') && v.as_array().is_some_and(|a| a.len() == 2 && a[0].is_string())
        })
        .map(|(k, _)| k.as_str())
        .collect();
    // SDXS ships its distilled tiny decoder as `vae` and the full autoencoder, unlisted, as
    // `vae_large`: the engine uses both (`--vae full|tiny`).
    if index["vae"][1].as_str() == Some("AutoencoderTiny") {
        components.insert("vae_large");
    }
    let mut chosen = Chosen::default();
    // Each component's weight files, by variant.
    let mut weights: BTreeMap<&str, BTreeMap<Option<&str>, Vec<&'a Sibling>>> = BTreeMap::new();
    for s in siblings {
        let f = s.rfilename.as_str();
        let Some((comp, rest)) = f.split_once('/') else {
            if f == "model_index.json" || ROOT_DOCS.contains(&f) {
                chosen.files.push(s);
            } else {
                chosen.skipped.push((s, Skip::NotInModel));
            }
            continue;
        };
        if !components.contains(comp) || rest.contains('/') {
            chosen.skipped.push((s, Skip::NotInModel));
        } else if ends_with_any(f, PICKLES) {
            chosen.skipped.push((s, Skip::Pickle));
        } else if ends_with_any(f, OTHER_FORMATS) {
            chosen.skipped.push((s, Skip::OtherFormat));
        } else if is_weights(f) {
            weights
                .entry(comp)
                .or_default()
                .entry(variant_of(rest))
                .or_default()
                .push(s);
        } else if ends_with_any(f, METADATA) {
            chosen.files.push(s);
        } else {
            chosen.skipped.push((s, Skip::OtherFormat));
        }
    }
    for comp in &components {
        let Some(by_variant) = weights.remove(comp) else {
            // Schedulers and tokenizers have no weights; a model component with only pickles
            // cannot be loaded.
            if chosen
                .skipped
                .iter()
                .any(|(s, k)| *k == Skip::Pickle && s.rfilename.starts_with(&format!("{comp}/")))
            {
                return Err(format!(
                    "the {comp} component has pickled weights only (.bin); NanoImg reads safetensors only — \
                     convert them (diffusers: `pipe.save_pretrained(dir, safe_serialization=True)`)"
                ));
            }
            continue;
        };
        let want = sel.variant.as_deref();
        let pick = if by_variant.contains_key(&want) {
            want
        } else if by_variant.contains_key(&None) {
            None
        } else if by_variant.len() == 1 {
            *by_variant.keys().next().expect("one key")
        } else {
            return Err(format!(
                "the {comp} component has the precisions {}: choose one with --variant",
                by_variant
                    .keys()
                    .map(|v| v.unwrap_or("(plain)"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        for (v, files) in by_variant {
            let skip = if sel.configs_only {
                Some(Skip::Weights)
            } else {
                (v != pick).then_some(Skip::OtherPrecision)
            };
            // A shard index goes with its shards.
            for s in files {
                match skip {
                    Some(k) => chosen.skipped.push((s, k)),
                    None => chosen.files.push(s),
                }
            }
        }
    }
    Ok(chosen)
}

fn select_single_file<'a>(siblings: &'a [Sibling], sel: &Selection) -> Result<Chosen<'a>, String> {
    let root = |s: &&Sibling| !s.rfilename.contains('/');
    let checkpoints: Vec<&Sibling> = siblings
        .iter()
        .filter(root)
        .filter(|s| s.rfilename.ends_with(".safetensors") && !s.rfilename.ends_with(".vae.safetensors"))
        .collect();
    let one = match checkpoints.as_slice() {
        [one] => *one,
        [] => {
            let pickles: Vec<&str> = siblings
                .iter()
                .filter(|s| ends_with_any(&s.rfilename, PICKLES))
                .map(|s| s.rfilename.as_str())
                .collect();
            return Err(if pickles.is_empty() {
                "no model_index.json and no .safetensors checkpoint: not a model NanoImg can load".into()
            } else {
                format!(
                    "no model_index.json and no .safetensors checkpoint, only pickles ({}): NanoImg reads safetensors only",
                    pickles.join(", ")
                )
            });
        }
        many => {
            return Err(format!(
                "no model_index.json and several checkpoints ({}): name one with --file",
                many.iter()
                    .map(|s| s.rfilename.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    };
    if sel.configs_only {
        return Err("--configs-only is for diffusers repositories (with model_index.json)".into());
    }
    let stem = one.rfilename.trim_end_matches(".safetensors");
    let beside = [format!("{stem}.yaml"), format!("{stem}.vae.safetensors")];
    let mut chosen = Chosen::default();
    for s in siblings {
        let f = s.rfilename.as_str();
        if std::ptr::eq(s, one) || beside.iter().any(|b| b == f) || ROOT_DOCS.contains(&f) {
            chosen.files.push(s);
        } else if ends_with_any(f, PICKLES) {
            chosen.skipped.push((s, Skip::Pickle));
        } else {
            chosen.skipped.push((s, Skip::NotInModel));
        }
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(files: &[&str]) -> Vec<Sibling> {
        files
            .iter()
            .map(|f| Sibling {
                rfilename: f.to_string(),
                size: Some(1),
                blob_id: Some("ab".into()),
                lfs: None,
            })
            .collect()
    }

    fn names<'a>(c: &Chosen<'a>) -> Vec<&'a str> {
        let mut v: Vec<&str> = c.files.iter().map(|s| s.rfilename.as_str()).collect();
        v.sort();
        v
    }

    const SD: &[&str] = &[
        "model_index.json",
        "README.md",
        "v1-5-pruned-emaonly.safetensors",
        "v1-5-pruned.ckpt",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "text_encoder/model.fp16.safetensors",
        "text_encoder/pytorch_model.bin",
        "text_encoder/flax_model.msgpack",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "tokenizer/tokenizer_config.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "unet/diffusion_pytorch_model.non_ema.bin",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.fp16.safetensors",
        "feature_extractor/preprocessor_config.json",
        "safety_checker/model.safetensors",
        "onnx/unet/model.onnx",
    ];

    fn index() -> serde_json::Value {
        serde_json::json!({
            "_class_name": "StableDiffusionPipeline",
            "scheduler": ["diffusers", "PNDMScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "feature_extractor": [null, null],
            "safety_checker": [null, null]
        })
    }

    #[test]
    fn a_diffusers_repo_gives_its_components_in_one_precision_and_no_pickles() {
        let l = listing(SD);
        let c = select("sd", &l, Some(&index()), &Selection::default()).unwrap();
        assert_eq!(
            names(&c),
            [
                "README.md",
                "model_index.json",
                "scheduler/scheduler_config.json",
                "text_encoder/config.json",
                "text_encoder/model.safetensors",
                "tokenizer/merges.txt",
                "tokenizer/tokenizer_config.json",
                "tokenizer/vocab.json",
                "unet/config.json",
                "unet/diffusion_pytorch_model.safetensors",
                "vae/config.json",
                "vae/diffusion_pytorch_model.safetensors",
            ]
        );
        let why = |f: &str| c.skipped.iter().find(|(s, _)| s.rfilename == f).map(|(_, k)| *k);
        assert_eq!(why("v1-5-pruned-emaonly.safetensors"), Some(Skip::NotInModel));
        assert_eq!(why("text_encoder/pytorch_model.bin"), Some(Skip::Pickle));
        assert_eq!(
            why("unet/diffusion_pytorch_model.fp16.safetensors"),
            Some(Skip::OtherPrecision)
        );
        assert_eq!(why("text_encoder/flax_model.msgpack"), Some(Skip::OtherFormat));
        assert_eq!(why("safety_checker/model.safetensors"), Some(Skip::NotInModel));
        assert_eq!(c.files.len() + c.skipped.len(), SD.len());

        let fp16 = Selection {
            variant: Some("fp16".into()),
            ..Default::default()
        };
        let c = select("sd", &l, Some(&index()), &fp16).unwrap();
        assert!(names(&c).contains(&"unet/diffusion_pytorch_model.fp16.safetensors"));
        assert!(!names(&c).contains(&"unet/diffusion_pytorch_model.safetensors"));

        let configs = Selection {
            configs_only: true,
            ..Default::default()
        };
        let c = select("sd", &l, Some(&index()), &configs).unwrap();
        assert!(
            names(&c).iter().all(|f| !f.ends_with(".safetensors")),
            "{:?}",
            names(&c)
        );
        assert!(names(&c).contains(&"tokenizer/vocab.json"));
    }

    /// A FLUX.1 repository as black-forest-labs lays it out: the diffusers components (the
    /// transformer and T5 sharded, T5's tokenizer as `tokenizer.json` and `spiece.model`), and
    /// at its root the original single file and autoencoder, which the folder does not need.
    #[test]
    fn a_flux_repo_gives_its_sharded_components_and_not_the_root_single_files() {
        let files = [
            "model_index.json",
            "flux1-schnell.safetensors",
            "ae.safetensors",
            "scheduler/scheduler_config.json",
            "text_encoder/config.json",
            "text_encoder/model.safetensors",
            "text_encoder_2/config.json",
            "text_encoder_2/model.safetensors.index.json",
            "text_encoder_2/model-00001-of-00002.safetensors",
            "text_encoder_2/model-00002-of-00002.safetensors",
            "tokenizer/vocab.json",
            "tokenizer/merges.txt",
            "tokenizer_2/spiece.model",
            "tokenizer_2/tokenizer.json",
            "tokenizer_2/tokenizer_config.json",
            "transformer/config.json",
            "transformer/diffusion_pytorch_model.safetensors.index.json",
            "transformer/diffusion_pytorch_model-00001-of-00003.safetensors",
            "transformer/diffusion_pytorch_model-00002-of-00003.safetensors",
            "transformer/diffusion_pytorch_model-00003-of-00003.safetensors",
            "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors",
        ];
        let flux = serde_json::json!({
            "_class_name": "FluxPipeline",
            "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "text_encoder_2": ["transformers", "T5EncoderModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "tokenizer_2": ["transformers", "T5TokenizerFast"],
            "transformer": ["diffusers", "FluxTransformer2DModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        });
        let l = listing(&files);
        let c = select("flux", &l, Some(&flux), &Selection::default()).unwrap();
        let got = names(&c);
        for f in &files[3..] {
            assert!(got.contains(f), "{f} missing from {got:?}");
        }
        let why = |f: &str| c.skipped.iter().find(|(s, _)| s.rfilename == f).map(|(_, k)| *k);
        assert_eq!(why("flux1-schnell.safetensors"), Some(Skip::NotInModel));
        assert_eq!(why("ae.safetensors"), Some(Skip::NotInModel));
    }

    #[test]
    fn a_tiny_vae_brings_the_unlisted_vae_large_along() {
        let l = listing(&[
            "model_index.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors",
            "vae_large/config.json",
            "vae_large/diffusion_pytorch_model.safetensors",
            "vae_large/diffusion_pytorch_model.bin",
        ]);
        let mut sdxs = index();
        sdxs["vae"] = serde_json::json!(["diffusers", "AutoencoderTiny"]);
        let c = select("sdxs", &l, Some(&sdxs), &Selection::default()).unwrap();
        assert!(names(&c).contains(&"vae_large/diffusion_pytorch_model.safetensors"));
        assert!(names(&c).contains(&"vae_large/config.json"));
        // With a full `vae`, a stray `vae_large` stays behind.
        let c = select("sd", &l, Some(&index()), &Selection::default()).unwrap();
        assert!(!names(&c).iter().any(|f| f.starts_with("vae_large/")));
    }

    #[test]
    fn shards_keep_their_index_and_a_pickle_only_component_is_refused() {
        let l = listing(&[
            "model_index.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors.index.json",
            "unet/diffusion_pytorch_model-00001-of-00002.safetensors",
            "unet/diffusion_pytorch_model-00002-of-00002.safetensors",
            "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
            "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
            "unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
            "vae/config.json",
            "vae/diffusion_pytorch_model.bin",
        ]);
        let idx = serde_json::json!({"unet": ["diffusers", "UNet2DConditionModel"]});
        let c = select("x", &l, Some(&idx), &Selection::default()).unwrap();
        assert_eq!(
            names(&c),
            [
                "model_index.json",
                "unet/config.json",
                "unet/diffusion_pytorch_model-00001-of-00002.safetensors",
                "unet/diffusion_pytorch_model-00002-of-00002.safetensors",
                "unet/diffusion_pytorch_model.safetensors.index.json",
            ]
        );
        let idx = serde_json::json!({"vae": ["diffusers", "AutoencoderKL"]});
        let e = select("x", &l, Some(&idx), &Selection::default()).unwrap_err();
        assert!(e.to_string().contains("pickled weights only"), "{e}");
    }

    #[test]
    fn a_single_file_repo_gives_its_checkpoint_or_asks_which() {
        let l = listing(&[
            "model.safetensors",
            "model.yaml",
            "model.vae.safetensors",
            "README.md",
            "old.ckpt",
        ]);
        let c = select("x", &l, None, &Selection::default()).unwrap();
        assert_eq!(
            names(&c),
            [
                "README.md",
                "model.safetensors",
                "model.vae.safetensors",
                "model.yaml"
            ]
        );
        let l = listing(&["a.safetensors", "b.safetensors"]);
        let e = select("x", &l, None, &Selection::default()).unwrap_err();
        assert!(e.to_string().contains("--file"), "{e}");
        let named = Selection {
            files: vec!["b.safetensors".into()],
            ..Default::default()
        };
        assert_eq!(names(&select("x", &l, None, &named).unwrap()), ["b.safetensors"]);
        let l = listing(&["old.ckpt"]);
        let e = select("x", &l, None, &Selection::default()).unwrap_err();
        assert!(e.to_string().contains("only pickles"), "{e}");
    }

    #[test]
    fn variants_are_read_from_names() {
        assert_eq!(variant_of("model.safetensors"), None);
        assert_eq!(variant_of("model.fp16.safetensors"), Some("fp16"));
        assert_eq!(
            variant_of("diffusion_pytorch_model-00001-of-00002.safetensors"),
            None
        );
        assert_eq!(
            variant_of("diffusion_pytorch_model.fp16-00001-of-00002.safetensors"),
            Some("fp16")
        );
        assert_eq!(variant_of("diffusion_pytorch_model.safetensors.index.json"), None);
        assert_eq!(
            variant_of("diffusion_pytorch_model.safetensors.index.bf16.json"),
            Some("bf16")
        );
    }
}
