//! The original (LDM/SGM) UNet layout — `input_blocks.{i}.{j}`, `middle_block.{i}`,
//! `output_blocks.{i}.{j}`, `time_embed`, `label_emb`, `out` — and its translation to diffusers'
//! module names. Single-file checkpoints store the UNet this way, and so do kohya's SDXL LoRAs
//! (with every `.` written `_`).
//!
//! The numbered blocks mean nothing on their own: which diffusers block `input_blocks.4` is
//! depends on how many resnets each level has and where the downsamplers are. A layout is read
//! either from diffusers' module names (a LoRA applied to a loaded model) or from the original
//! names themselves (a checkpoint being loaded); both give the same table.

use std::collections::{BTreeMap, BTreeSet};

/// Names that are not in a numbered block.
const FIXED: [(&str, &str); 6] = [
    ("time_embed.0", "time_embedding.linear_1"),
    ("time_embed.2", "time_embedding.linear_2"),
    ("label_emb.0.0", "add_embedding.linear_1"),
    ("label_emb.0.2", "add_embedding.linear_2"),
    ("out.0", "conv_norm_out"),
    ("out.2", "conv_out"),
];

/// A resnet's original sub-module names and diffusers' names for them.
const RESNET: [(&str, &str); 6] = [
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1"),
    ("emb_layers.1", "time_emb_proj"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2"),
    ("skip_connection", "conv_shortcut"),
];

/// The middle block's three parts.
const MIDDLE: [&str; 3] = [
    "mid_block.resnets.0",
    "mid_block.attentions.0",
    "mid_block.resnets.1",
];

/// The original UNet's numbered blocks, each as the diffusers module prefixes (dotted) of its
/// parts: `input[i][j]` is `input_blocks.{i}.{j}`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LdmLayout {
    input: Vec<Vec<String>>,
    output: Vec<Vec<String>>,
}

impl LdmLayout {
    /// Reads the block structure from diffusers module names (weight names without `.weight`):
    /// resnets per block, which blocks have attentions, downsamplers and upsamplers.
    pub fn from_modules(modules: &BTreeSet<String>) -> Self {
        let count = |prefix: &str| -> usize {
            (0..)
                .take_while(|k| {
                    let p = format!("{prefix}.{k}.");
                    modules.iter().any(|m| m.starts_with(&p))
                })
                .count()
        };
        let has = |prefix: &str| {
            let p = format!("{prefix}.");
            modules.iter().any(|m| m.starts_with(&p))
        };
        let mut layout = LdmLayout {
            input: vec![vec!["conv_in".into()]],
            output: Vec::new(),
        };
        for d in 0..count("down_blocks") {
            for k in 0..count(&format!("down_blocks.{d}.resnets")) {
                let mut entry = vec![format!("down_blocks.{d}.resnets.{k}")];
                if has(&format!("down_blocks.{d}.attentions.{k}")) {
                    entry.push(format!("down_blocks.{d}.attentions.{k}"));
                }
                layout.input.push(entry);
            }
            if has(&format!("down_blocks.{d}.downsamplers.0")) {
                layout.input.push(vec![format!("down_blocks.{d}.downsamplers.0")]);
            }
        }
        for u in 0..count("up_blocks") {
            let resnets = count(&format!("up_blocks.{u}.resnets"));
            for k in 0..resnets {
                let mut entry = vec![format!("up_blocks.{u}.resnets.{k}")];
                if has(&format!("up_blocks.{u}.attentions.{k}")) {
                    entry.push(format!("up_blocks.{u}.attentions.{k}"));
                }
                if k + 1 == resnets && has(&format!("up_blocks.{u}.upsamplers.0")) {
                    entry.push(format!("up_blocks.{u}.upsamplers.0"));
                }
                layout.output.push(entry);
            }
        }
        layout
    }

    /// Reads the block structure from the original names themselves (module paths, without
    /// `model.diffusion_model.`): an input block holding `0.op` is a level's downsampler and
    /// ends the level; an output block's `1` is an attention when it has transformer blocks,
    /// and a `conv` in its last part is the level's upsampler. Each up level has one resnet
    /// more than a down level.
    pub fn from_ldm<'a>(modules: impl Iterator<Item = &'a str>) -> Self {
        // block index → the parts present and whether each is an attention / sampler.
        let mut input: BTreeMap<usize, BTreeMap<usize, Part>> = BTreeMap::new();
        let mut output: BTreeMap<usize, BTreeMap<usize, Part>> = BTreeMap::new();
        for m in modules {
            let (table, rest) = if let Some(r) = m.strip_prefix("input_blocks.") {
                (&mut input, r)
            } else if let Some(r) = m.strip_prefix("output_blocks.") {
                (&mut output, r)
            } else {
                continue;
            };
            let mut it = rest.splitn(3, '.');
            let (Some(Ok(i)), Some(Ok(j))) = (it.next().map(str::parse), it.next().map(str::parse)) else {
                continue;
            };
            let tail = it.next().unwrap_or("");
            let part = table.entry(i).or_default().entry(j).or_insert(Part::Resnet);
            if tail.starts_with("transformer_blocks") || tail.starts_with("proj_in") {
                *part = Part::Attention;
            } else if tail == "op" || tail == "conv" {
                *part = Part::Sampler;
            }
        }
        let mut layout = LdmLayout {
            input: vec![vec!["conv_in".into()]],
            output: Vec::new(),
        };
        let (mut level, mut k, mut per_level) = (0, 0, None);
        for (_, parts) in input.range(1..) {
            if parts.get(&0) == Some(&Part::Sampler) {
                layout
                    .input
                    .push(vec![format!("down_blocks.{level}.downsamplers.0")]);
                per_level.get_or_insert(k);
                (level, k) = (level + 1, 0);
                continue;
            }
            let mut entry = vec![format!("down_blocks.{level}.resnets.{k}")];
            if parts.values().any(|p| *p == Part::Attention) {
                entry.push(format!("down_blocks.{level}.attentions.{k}"));
            }
            layout.input.push(entry);
            k += 1;
        }
        let resnets_up = per_level.unwrap_or(k) + 1;
        let (mut level, mut k) = (0, 0);
        for (_, parts) in output {
            let mut entry = vec![format!("up_blocks.{level}.resnets.{k}")];
            if parts.values().any(|p| *p == Part::Attention) {
                entry.push(format!("up_blocks.{level}.attentions.{k}"));
            }
            if parts.values().any(|p| *p == Part::Sampler) {
                entry.push(format!("up_blocks.{level}.upsamplers.0"));
            }
            layout.output.push(entry);
            k += 1;
            if k == resnets_up {
                (level, k) = (level + 1, 0);
            }
        }
        layout
    }

    /// An original module path (dotted, without `model.diffusion_model.` and without the
    /// `.weight`/`.bias` ending) as diffusers' module path, or `None` when the layout has no such
    /// module.
    pub fn translate(&self, module: &str) -> Option<String> {
        self.translate_with(module, '.')
    }

    /// The same for kohya's flat names, where every `.` is written `_`: an original flat name as
    /// diffusers' flat name.
    pub fn translate_flat(&self, flat: &str) -> Option<String> {
        self.translate_with(flat, '_')
    }

    fn translate_with(&self, name: &str, sep: char) -> Option<String> {
        let spelled = |dotted: &str| dotted.replace('.', &sep.to_string());
        if let Some((_, d)) = FIXED.iter().find(|(l, _)| spelled(l) == name) {
            return Some(spelled(d));
        }
        let numbers = |r: &str| -> Option<(usize, usize, String)> {
            let (i, r) = r.split_once(sep)?;
            let (j, rest) = r.split_once(sep).unwrap_or((r, ""));
            Some((i.parse().ok()?, j.parse().ok()?, rest.to_owned()))
        };
        let (prefix, rest) = if let Some(r) = name.strip_prefix(&spelled("input_blocks.")) {
            let (i, j, rest) = numbers(r)?;
            (self.input.get(i)?.get(j)?.as_str(), rest)
        } else if let Some(r) = name.strip_prefix(&spelled("output_blocks.")) {
            let (i, j, rest) = numbers(r)?;
            (self.output.get(i)?.get(j)?.as_str(), rest)
        } else if let Some(r) = name.strip_prefix(&spelled("middle_block.")) {
            let (i, rest) = r.split_once(sep).unwrap_or((r, ""));
            (*MIDDLE.get(i.parse::<usize>().ok()?)?, rest.to_owned())
        } else {
            return None;
        };
        if rest.is_empty() {
            // `input_blocks.0.0` is conv_in itself.
            return Some(spelled(prefix));
        }
        let rest = if prefix.contains(".resnets.") {
            RESNET.iter().find(|(l, _)| spelled(l) == rest)?.1.to_owned()
        } else if prefix.contains("samplers.0") {
            match rest.as_str() {
                "op" | "conv" => "conv".to_owned(),
                _ => return None,
            }
        } else {
            rest
        };
        Some(format!("{}{sep}{rest}", spelled(prefix)))
    }
}

/// What an original block's part is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Resnet,
    Attention,
    Sampler,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// SDXL's shape in miniature, as diffusers names its modules: level 0 without attention,
    /// level 1 with; two resnets each. (The LoRA name tests use it too.)
    pub(crate) fn diffusers_modules() -> BTreeSet<String> {
        [
            "conv_in",
            "time_embedding.linear_1",
            "add_embedding.linear_2",
            "conv_out",
            "down_blocks.0.resnets.0.conv1",
            "down_blocks.0.resnets.1.conv1",
            "down_blocks.0.downsamplers.0.conv",
            "down_blocks.1.resnets.0.conv1",
            "down_blocks.1.resnets.0.conv_shortcut",
            "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
            "down_blocks.1.resnets.1.conv1",
            "down_blocks.1.attentions.1.proj_in",
            "mid_block.resnets.0.time_emb_proj",
            "mid_block.attentions.0.transformer_blocks.1.attn2.to_out.0",
            "mid_block.resnets.1.conv2",
            "up_blocks.0.resnets.0.conv1",
            "up_blocks.0.attentions.0.proj_in",
            "up_blocks.0.attentions.0.proj_out",
            "up_blocks.0.resnets.1.conv1",
            "up_blocks.0.attentions.1.proj_in",
            "up_blocks.0.resnets.2.conv1",
            "up_blocks.0.attentions.2.proj_out",
            "up_blocks.0.upsamplers.0.conv",
            "up_blocks.1.resnets.0.conv1",
            "up_blocks.1.resnets.1.conv1",
            "up_blocks.1.resnets.2.conv1",
        ]
        .iter()
        .map(|m| m.to_string())
        .collect()
    }

    /// The same model's original names.
    fn ldm_modules() -> Vec<&'static str> {
        vec![
            "input_blocks.0.0",
            "input_blocks.1.0.in_layers.2",
            "input_blocks.2.0.in_layers.2",
            "input_blocks.3.0.op",
            "input_blocks.4.0.in_layers.2",
            "input_blocks.4.0.skip_connection",
            "input_blocks.4.1.transformer_blocks.0.attn1.to_q",
            "input_blocks.5.0.in_layers.2",
            "input_blocks.5.1.proj_in",
            "middle_block.0.emb_layers.1",
            "output_blocks.0.0.in_layers.2",
            "output_blocks.0.1.proj_in",
            "output_blocks.1.0.in_layers.2",
            "output_blocks.1.1.proj_in",
            "output_blocks.2.0.in_layers.2",
            "output_blocks.2.1.proj_out",
            "output_blocks.2.1.transformer_blocks.0.attn1.to_q",
            "output_blocks.2.2.conv",
            "output_blocks.3.0.in_layers.2",
            "output_blocks.4.0.in_layers.2",
            "output_blocks.5.0.in_layers.2",
        ]
    }

    #[test]
    fn both_readings_give_the_same_layout() {
        let a = LdmLayout::from_modules(&diffusers_modules());
        let b = LdmLayout::from_ldm(ldm_modules().into_iter());
        assert_eq!(a, b);
    }

    #[test]
    fn dotted_and_flat_names_translate() {
        let l = LdmLayout::from_ldm(ldm_modules().into_iter());
        let cases = [
            ("input_blocks.0.0", "conv_in"),
            ("input_blocks.1.0.in_layers.2", "down_blocks.0.resnets.0.conv1"),
            ("input_blocks.3.0.op", "down_blocks.0.downsamplers.0.conv"),
            (
                "input_blocks.4.0.skip_connection",
                "down_blocks.1.resnets.0.conv_shortcut",
            ),
            (
                "input_blocks.4.1.transformer_blocks.0.attn1.to_q",
                "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
            ),
            ("middle_block.0.emb_layers.1", "mid_block.resnets.0.time_emb_proj"),
            (
                "middle_block.1.transformer_blocks.1.attn2.to_out.0",
                "mid_block.attentions.0.transformer_blocks.1.attn2.to_out.0",
            ),
            ("output_blocks.2.1.proj_out", "up_blocks.0.attentions.2.proj_out"),
            ("output_blocks.2.2.conv", "up_blocks.0.upsamplers.0.conv"),
            ("output_blocks.5.0.in_layers.2", "up_blocks.1.resnets.2.conv1"),
            ("time_embed.0", "time_embedding.linear_1"),
            ("label_emb.0.2", "add_embedding.linear_2"),
            ("out.2", "conv_out"),
        ];
        for (ldm, diffusers) in cases {
            assert_eq!(l.translate(ldm).as_deref(), Some(diffusers), "{ldm}");
            let flat = ldm.replace('.', "_");
            assert_eq!(
                l.translate_flat(&flat),
                Some(diffusers.replace('.', "_")),
                "{flat}"
            );
        }
        for bad in [
            "input_blocks.9.0.in_layers.2",
            "middle_block.3.conv",
            "output_blocks.0.0.bogus",
        ] {
            assert_eq!(l.translate(bad), None, "{bad}");
        }
    }
}
