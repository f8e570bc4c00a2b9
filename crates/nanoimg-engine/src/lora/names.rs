//! The names LoRA files give their layers, and the checkpoint module each one changes.
//!
//! Three families of names are read:
//! - kohya (`lora_unet_…`, `lora_te_…`, `lora_te1_…`/`lora_te2_…` for SDXL): the module path
//!   with every `.` written `_`, so it is resolved against the model's own module names. SDXL
//!   files from kohya's trainer use the original (LDM/SGM) UNet layout — `input_blocks_4_1_…`,
//!   `middle_block_…`, `output_blocks_…` — which is translated to diffusers' blocks first.
//! - diffusers/PEFT (`unet.….lora_A.weight`, `text_encoder.…`, `text_encoder_2.…`, with or
//!   without `base_model.model.`), and diffusers' older `….lora.down.weight` and attention
//!   processor (`attn1.processor.to_q_lora.down.weight`) forms: dotted paths.

use crate::ldm::LdmLayout;
use std::collections::{BTreeSet, HashMap};

/// Which part of the model a LoRA layer changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    Unet,
    /// The first (0) or second (1, SDXL) text encoder.
    TextEncoder(usize),
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Component::Unet => write!(f, "unet"),
            Component::TextEncoder(0) => write!(f, "text_encoder"),
            Component::TextEncoder(i) => write!(f, "text_encoder_{}", i + 1),
        }
    }
}

/// Which tensor of a LoRA pair, or its alpha.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Down,
    Up,
    Alpha,
}

/// A file's key split into the layer it belongs to and the part it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The layer as the file names it, without the part suffix.
    pub layer: String,
    pub part: Part,
}

/// Why a file's key is not one this engine reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A layer of a LoRA-like kind (LoHa, LoKr, DoRA, …) that is not a plain LoRA.
    #[error("{key:?}: {kind} layers are not supported; use a plain LoRA")]
    UnsupportedKind { key: String, kind: &'static str },
    /// Not a LoRA tensor at all.
    #[error("{key:?} is not a LoRA tensor (expected lora_down/lora_up/alpha or lora_A/lora_B)")]
    NotLora { key: String },
}

/// Splits a key, or says why it is not one this engine reads.
pub fn split_key(key: &str) -> Result<Key, KeyError> {
    const SUFFIXES: [(&str, Part); 10] = [
        (".lora_down.weight", Part::Down),
        (".lora_up.weight", Part::Up),
        (".lora_A.weight", Part::Down),
        (".lora_B.weight", Part::Up),
        (".lora_A.default.weight", Part::Down),
        (".lora_B.default.weight", Part::Up),
        (".lora.down.weight", Part::Down),
        (".lora.up.weight", Part::Up),
        ("_lora.down.weight", Part::Down),
        ("_lora.up.weight", Part::Up),
    ];
    for (suffix, part) in SUFFIXES {
        if let Some(layer) = key.strip_suffix(suffix) {
            return Ok(Key {
                layer: layer.to_owned(),
                part,
            });
        }
    }
    if let Some(layer) = key.strip_suffix(".alpha") {
        return Ok(Key {
            layer: layer.to_owned(),
            part: Part::Alpha,
        });
    }
    let unsupported = [
        ("hada_", "LyCORIS LoHa"),
        ("lokr_", "LyCORIS LoKr"),
        (".lora_mid.", "LoCon with a Tucker middle (lora_mid)"),
        ("dora_scale", "DoRA"),
        (".oft_", "OFT"),
    ];
    let key = key.to_owned();
    match unsupported.into_iter().find(|(needle, _)| key.contains(needle)) {
        Some((_, kind)) => Err(KeyError::UnsupportedKind { key, kind }),
        None => Err(KeyError::NotLora { key }),
    }
}

/// The module names of one component (weight names without `.weight`), and the same names with
/// `.` written `_`, for kohya's flat names.
#[derive(Debug, Default)]
pub struct ModuleIndex {
    modules: BTreeSet<String>,
    flat: HashMap<String, String>,
    ldm: Option<LdmLayout>,
}

impl ModuleIndex {
    /// Indexes the `.weight` tensors among `names`. `unet` adds the LDM → diffusers layout.
    pub fn new<'a>(names: impl Iterator<Item = &'a String>, unet: bool) -> Self {
        let modules: BTreeSet<String> = names
            .filter_map(|n| n.strip_suffix(".weight"))
            .map(str::to_owned)
            .collect();
        let flat = modules.iter().map(|m| (m.replace('.', "_"), m.clone())).collect();
        let ldm = unet.then(|| LdmLayout::from_modules(&modules));
        Self { modules, flat, ldm }
    }

    /// The module a dotted path names, if there is one.
    pub fn dotted(&self, path: &str) -> Option<String> {
        let path = path.replace(".processor.", ".");
        let path = fix_processor_out(&path);
        if self.modules.contains(&path) {
            return Some(path);
        }
        self.flat(&path.replace('.', "_"))
    }

    /// The module a kohya flat name names, if there is one.
    pub fn flat(&self, flat: &str) -> Option<String> {
        if let Some(m) = self.flat.get(flat) {
            return Some(m.clone());
        }
        let translated = self.ldm.as_ref()?.translate_flat(flat)?;
        self.flat.get(&translated).cloned()
    }
}

/// diffusers' attention processors name the output projection `to_out` (the module is
/// `to_out.0`).
fn fix_processor_out(path: &str) -> String {
    match path.strip_suffix(".to_out") {
        Some(head) => format!("{head}.to_out.0"),
        None => path.to_owned(),
    }
}

/// Where a LoRA layer's name points: the component and the name within the file's naming.
pub fn component_of(layer: &str) -> (Component, Naming<'_>) {
    for (prefix, c) in [
        ("lora_unet_", Component::Unet),
        ("lora_te1_", Component::TextEncoder(0)),
        ("lora_te2_", Component::TextEncoder(1)),
        ("lora_te_", Component::TextEncoder(0)),
    ] {
        if let Some(rest) = layer.strip_prefix(prefix) {
            return (c, Naming::Flat(rest));
        }
    }
    let layer = layer.strip_prefix("base_model.model.").unwrap_or(layer);
    for (prefix, c) in [
        ("unet.", Component::Unet),
        ("text_encoder_2.", Component::TextEncoder(1)),
        ("text_encoder.", Component::TextEncoder(0)),
    ] {
        if let Some(rest) = layer.strip_prefix(prefix) {
            return (c, Naming::Dotted(rest));
        }
    }
    (Component::Unet, Naming::Dotted(layer))
}

/// How a layer name spells its module path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming<'a> {
    Flat(&'a str),
    Dotted(&'a str),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdxl_like() -> ModuleIndex {
        let names: Vec<String> = crate::ldm::tests::diffusers_modules()
            .iter()
            .map(|m| format!("{m}.weight"))
            .collect();
        ModuleIndex::new(names.iter(), true)
    }

    #[test]
    fn ldm_names_translate_to_diffusers_modules() {
        let idx = sdxl_like();
        let cases = [
            ("input_blocks_0_0", "conv_in"),
            ("input_blocks_1_0_in_layers_2", "down_blocks.0.resnets.0.conv1"),
            ("input_blocks_3_0_op", "down_blocks.0.downsamplers.0.conv"),
            (
                "input_blocks_4_0_skip_connection",
                "down_blocks.1.resnets.0.conv_shortcut",
            ),
            (
                "input_blocks_4_1_transformer_blocks_0_attn1_to_q",
                "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
            ),
            ("input_blocks_5_1_proj_in", "down_blocks.1.attentions.1.proj_in"),
            ("middle_block_0_emb_layers_1", "mid_block.resnets.0.time_emb_proj"),
            (
                "middle_block_1_transformer_blocks_1_attn2_to_out_0",
                "mid_block.attentions.0.transformer_blocks.1.attn2.to_out.0",
            ),
            ("middle_block_2_out_layers_3", "mid_block.resnets.1.conv2"),
            ("output_blocks_0_1_proj_out", "up_blocks.0.attentions.0.proj_out"),
            ("output_blocks_2_1_proj_out", "up_blocks.0.attentions.2.proj_out"),
            ("output_blocks_2_2_conv", "up_blocks.0.upsamplers.0.conv"),
            ("output_blocks_5_0_in_layers_2", "up_blocks.1.resnets.2.conv1"),
            ("time_embed_0", "time_embedding.linear_1"),
            ("label_emb_0_2", "add_embedding.linear_2"),
            ("out_2", "conv_out"),
        ];
        for (ldm, diffusers) in cases {
            assert_eq!(idx.flat(ldm).as_deref(), Some(diffusers), "{ldm}");
        }
        for bad in [
            "input_blocks_9_0_in_layers_2",
            "middle_block_3_conv",
            "output_blocks_0_0_bogus",
        ] {
            assert_eq!(idx.flat(bad), None, "{bad}");
        }
    }

    #[test]
    fn flat_and_dotted_names_resolve() {
        let idx = sdxl_like();
        assert_eq!(
            idx.flat("down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q")
                .as_deref(),
            Some("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q")
        );
        assert_eq!(
            idx.dotted("mid_block.attentions.0.transformer_blocks.1.attn2.processor.to_out")
                .as_deref(),
            Some("mid_block.attentions.0.transformer_blocks.1.attn2.to_out.0")
        );
        assert_eq!(idx.dotted("mid_block.nothing"), None);
    }

    #[test]
    fn keys_split_or_are_refused_with_the_reason() {
        let k = split_key("lora_unet_a_b.lora_down.weight").unwrap();
        assert_eq!((k.layer.as_str(), k.part), ("lora_unet_a_b", Part::Down));
        let k = split_key("unet.a.b.lora_B.weight").unwrap();
        assert_eq!((k.layer.as_str(), k.part), ("unet.a.b", Part::Up));
        let k = split_key("unet.x.attn1.processor.to_q_lora.up.weight").unwrap();
        assert_eq!(k.layer, "unet.x.attn1.processor.to_q");
        assert_eq!(split_key("lora_te_x.alpha").unwrap().part, Part::Alpha);
        let kind = |key: &str| match split_key(key) {
            Err(KeyError::UnsupportedKind { kind, .. }) => kind,
            other => panic!("{key}: {other:?}"),
        };
        assert_eq!(kind("lora_unet_x.hada_w1_a"), "LyCORIS LoHa");
        assert_eq!(kind("lora_unet_x.dora_scale"), "DoRA");
        let e = split_key("model.diffusion_model.x.weight").unwrap_err();
        assert!(matches!(e, KeyError::NotLora { .. }), "{e:?}");
        assert!(e.to_string().contains("not a LoRA"), "{e}");
    }

    #[test]
    fn components_come_from_prefixes() {
        assert_eq!(component_of("lora_te2_text_model_x").0, Component::TextEncoder(1));
        assert_eq!(component_of("lora_te_text_model_x").0, Component::TextEncoder(0));
        assert_eq!(
            component_of("base_model.model.text_encoder_2.text_model.x"),
            (Component::TextEncoder(1), Naming::Dotted("text_model.x"))
        );
        assert_eq!(
            component_of("down_blocks.0.x"),
            (Component::Unet, Naming::Dotted("down_blocks.0.x"))
        );
    }
}
