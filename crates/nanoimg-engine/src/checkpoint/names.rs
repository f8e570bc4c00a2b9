//! Where each tensor of a single-file checkpoint goes: the original names of the UNet (through
//! [`LdmLayout`]), the VAE and the text encoders (transformers' CLIP under a prefix, or
//! OpenCLIP's `resblocks` with fused attention projections), as our modules' names.

use crate::ldm::LdmLayout;
use std::collections::BTreeMap;

/// How a stored tensor becomes ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// As stored.
    Same,
    /// A 1×1 convolution `[o, i, 1, 1]` used as a linear layer `[o, i]`.
    Squeeze,
    /// Part `k` of three along the first axis (OpenCLIP's fused q/k/v projection).
    Third(usize),
    /// Transposed (OpenCLIP's `text_projection` is applied as `x @ P`, a linear layer's weight
    /// is `Pᵀ`).
    Transpose,
}

/// The stored tensor one of ours is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub stored: String,
    pub how: Transform,
}

/// Our tensor name → where it is stored, for one component.
pub type Plan = BTreeMap<String, Source>;

/// A stored name that has no place in the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tensor {0:?} has no place in the model")]
pub struct Unplaced(pub String);

fn same(stored: &str) -> Source {
    Source {
        stored: stored.to_owned(),
        how: Transform::Same,
    }
}

/// The UNet's tensors under `prefix` (`model.diffusion_model.`).
pub fn unet<'a>(names: impl Iterator<Item = &'a str> + Clone, prefix: &str) -> Result<Plan, Unplaced> {
    let local = names.filter_map(|n| n.strip_prefix(prefix));
    let layout = LdmLayout::from_ldm(local.clone().filter_map(|n| n.rsplit_once('.').map(|(m, _)| m)));
    let mut plan = Plan::new();
    for name in local {
        let placed = name
            .rsplit_once('.')
            .and_then(|(module, leaf)| Some(format!("{}.{leaf}", layout.translate(module)?)));
        let ours = placed.ok_or_else(|| Unplaced(format!("{prefix}{name}")))?;
        plan.insert(ours, same(&format!("{prefix}{name}")));
    }
    Ok(plan)
}

/// The VAE's tensors under `prefix` (`first_stage_model.`, or nothing in a VAE file), in the
/// original layout. `loss.*` (training-only discriminator weights some files keep) is skipped.
pub fn vae<'a>(names: impl Iterator<Item = &'a str> + Clone, prefix: &str) -> Result<Plan, Unplaced> {
    let local = names
        .filter_map(|n| n.strip_prefix(prefix))
        .filter(|n| !n.starts_with("loss."));
    // The decoder's `up.{i}` count from the lowest resolution in diffusers' `up_blocks`.
    let levels = local
        .clone()
        .filter_map(|n| {
            n.strip_prefix("decoder.up.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(0, |m| m + 1);
    let mut plan = Plan::new();
    for name in local {
        let (ours, how) = vae_name(name, levels).ok_or_else(|| Unplaced(format!("{prefix}{name}")))?;
        plan.insert(
            ours,
            Source {
                stored: format!("{prefix}{name}"),
                how,
            },
        );
    }
    Ok(plan)
}

fn vae_name(name: &str, levels: usize) -> Option<(String, Transform)> {
    let (coder, rest) = name.split_once('.')?;
    if !matches!(coder, "encoder" | "decoder") {
        return matches!(coder, "quant_conv" | "post_quant_conv").then(|| (name.to_owned(), Transform::Same));
    }
    let resnet = |r: &str| -> Option<String> {
        let (part, leaf) = r.split_once('.')?;
        let part = match part {
            "norm1" | "conv1" | "norm2" | "conv2" => part,
            "nin_shortcut" => "conv_shortcut",
            _ => return None,
        };
        Some(format!("{part}.{leaf}"))
    };
    let mut how = Transform::Same;
    let ours = if let Some(r) = rest.strip_prefix("mid.") {
        let (part, r) = r.split_once('.')?;
        match part {
            "block_1" => format!("mid_block.resnets.0.{}", resnet(r)?),
            "block_2" => format!("mid_block.resnets.1.{}", resnet(r)?),
            "attn_1" => {
                let (p, leaf) = r.split_once('.')?;
                let p = match p {
                    "norm" => "group_norm",
                    "q" => "to_q",
                    "k" => "to_k",
                    "v" => "to_v",
                    "proj_out" => "to_out.0",
                    _ => return None,
                };
                if p != "group_norm" && leaf == "weight" {
                    how = Transform::Squeeze;
                }
                format!("mid_block.attentions.0.{p}.{leaf}")
            }
            _ => return None,
        }
    } else if let Some(r) = rest.strip_prefix("down.").or_else(|| rest.strip_prefix("up.")) {
        let (i, r) = r.split_once('.')?;
        let i: usize = i.parse().ok()?;
        let (blocks, level) = if coder == "encoder" {
            ("down_blocks", i)
        } else {
            ("up_blocks", levels.checked_sub(i + 1)?)
        };
        if let Some(r) = r.strip_prefix("block.") {
            let (j, r) = r.split_once('.')?;
            format!("{blocks}.{level}.resnets.{j}.{}", resnet(r)?)
        } else if let Some(leaf) = r
            .strip_prefix("downsample.conv.")
            .or_else(|| r.strip_prefix("upsample.conv."))
        {
            let samplers = if coder == "encoder" {
                "downsamplers"
            } else {
                "upsamplers"
            };
            format!("{blocks}.{level}.{samplers}.0.conv.{leaf}")
        } else {
            return None;
        }
    } else {
        let (part, leaf) = rest.split_once('.')?;
        let part = match part {
            "conv_in" | "conv_out" => part,
            "norm_out" => "conv_norm_out",
            _ => return None,
        };
        format!("{part}.{leaf}")
    };
    Some((format!("{coder}.{ours}"), how))
}

/// A transformers CLIP text model stored under `prefix` (`cond_stage_model.transformer.`):
/// our names are its own. `position_ids` (a buffer) is skipped.
pub fn clip<'a>(names: impl Iterator<Item = &'a str>, prefix: &str) -> Plan {
    names
        .filter_map(|n| Some((n, n.strip_prefix(prefix)?)))
        .filter(|(_, local)| !local.ends_with("position_ids"))
        .map(|(n, local)| {
            // Files from older transformers lack the `text_model.` level.
            let ours = if local.starts_with("text_model.") {
                local.to_owned()
            } else {
                format!("text_model.{local}")
            };
            (ours, same(n))
        })
        .collect()
}

/// An OpenCLIP text tower stored under `prefix` (`cond_stage_model.model.`), as a transformers
/// CLIP text model of `layers` layers: SD 2.x conditions on the penultimate layer, so its
/// converted encoder has one layer fewer than the file, and the last is not read.
/// `with_projection` reads `text_projection` (SDXL's second encoder pools through it).
pub fn open_clip<'a>(
    names: impl Iterator<Item = &'a str>,
    prefix: &str,
    layers: usize,
    with_projection: bool,
) -> Result<Plan, Unplaced> {
    let mut plan = Plan::new();
    for name in names {
        let Some(local) = name.strip_prefix(prefix) else {
            continue;
        };
        let put = |plan: &mut Plan, ours: String, how| {
            plan.insert(
                ours,
                Source {
                    stored: name.to_owned(),
                    how,
                },
            );
        };
        match local {
            "token_embedding.weight" => put(
                &mut plan,
                "text_model.embeddings.token_embedding.weight".into(),
                Transform::Same,
            ),
            "positional_embedding" => put(
                &mut plan,
                "text_model.embeddings.position_embedding.weight".into(),
                Transform::Same,
            ),
            "text_projection" if with_projection => {
                put(&mut plan, "text_projection.weight".into(), Transform::Transpose)
            }
            "text_projection" | "logit_scale" | "attn_mask" => {}
            _ => {
                if let Some(leaf) = local.strip_prefix("ln_final.") {
                    put(
                        &mut plan,
                        format!("text_model.final_layer_norm.{leaf}"),
                        Transform::Same,
                    );
                    continue;
                }
                let placed = local
                    .strip_prefix("transformer.resblocks.")
                    .and_then(|r| r.split_once('.'))
                    .and_then(|(i, r)| Some((i.parse::<usize>().ok()?, r)));
                let Some((i, r)) = placed else {
                    return Err(Unplaced(name.to_owned()));
                };
                if i >= layers {
                    continue;
                }
                let layer = format!("text_model.encoder.layers.{i}");
                let projections = ["q_proj", "k_proj", "v_proj"];
                match r {
                    "attn.in_proj_weight" | "attn.in_proj_bias" => {
                        let leaf = if r.ends_with("weight") { "weight" } else { "bias" };
                        for (k, p) in projections.iter().enumerate() {
                            put(
                                &mut plan,
                                format!("{layer}.self_attn.{p}.{leaf}"),
                                Transform::Third(k),
                            );
                        }
                    }
                    _ => {
                        let (part, leaf) = r.rsplit_once('.').ok_or_else(|| Unplaced(name.to_owned()))?;
                        let part = match part {
                            "ln_1" => "layer_norm1",
                            "ln_2" => "layer_norm2",
                            "attn.out_proj" => "self_attn.out_proj",
                            "mlp.c_fc" => "mlp.fc1",
                            "mlp.c_proj" => "mlp.fc2",
                            _ => return Err(Unplaced(name.to_owned())),
                        };
                        put(&mut plan, format!("{layer}.{part}.{leaf}"), Transform::Same);
                    }
                }
            }
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A few names as SD 1.5's released checkpoint spells them, and where diffusers puts them.
    #[test]
    fn sd15_names_land_where_diffusers_puts_them() {
        let vae_names = [
            "first_stage_model.encoder.down.0.block.1.nin_shortcut.weight",
            "first_stage_model.encoder.down.3.block.0.conv1.bias",
            "first_stage_model.encoder.down.2.downsample.conv.weight",
            "first_stage_model.encoder.mid.attn_1.q.weight",
            "first_stage_model.encoder.norm_out.weight",
            "first_stage_model.decoder.up.3.block.2.conv2.weight",
            "first_stage_model.decoder.up.1.upsample.conv.bias",
            "first_stage_model.decoder.up.0.block.0.conv1.weight",
            "first_stage_model.decoder.mid.block_2.norm1.weight",
            "first_stage_model.decoder.mid.attn_1.proj_out.bias",
            "first_stage_model.post_quant_conv.weight",
        ];
        let plan = vae(vae_names.iter().copied(), "first_stage_model.").unwrap();
        let at = |ours: &str| plan.get(ours).map(|s| (s.stored.as_str(), s.how));
        assert_eq!(
            at("encoder.down_blocks.0.resnets.1.conv_shortcut.weight"),
            Some((vae_names[0], Transform::Same))
        );
        assert_eq!(
            at("encoder.down_blocks.2.downsamplers.0.conv.weight").unwrap().0,
            vae_names[2]
        );
        assert_eq!(
            at("encoder.mid_block.attentions.0.to_q.weight"),
            Some((vae_names[3], Transform::Squeeze))
        );
        assert_eq!(at("encoder.conv_norm_out.weight").unwrap().0, vae_names[4]);
        // The decoder counts its levels the other way round.
        assert_eq!(
            at("decoder.up_blocks.0.resnets.2.conv2.weight").unwrap().0,
            vae_names[5]
        );
        assert_eq!(
            at("decoder.up_blocks.2.upsamplers.0.conv.bias").unwrap().0,
            vae_names[6]
        );
        assert_eq!(
            at("decoder.up_blocks.3.resnets.0.conv1.weight").unwrap().0,
            vae_names[7]
        );
        assert_eq!(
            at("decoder.mid_block.resnets.1.norm1.weight").unwrap().0,
            vae_names[8]
        );
        assert_eq!(
            at("decoder.mid_block.attentions.0.to_out.0.bias"),
            Some((vae_names[9], Transform::Same))
        );
        assert_eq!(at("post_quant_conv.weight").unwrap().0, vae_names[10]);
        let bad = vae(
            ["first_stage_model.encoder.bogus.weight"].into_iter(),
            "first_stage_model.",
        );
        assert_eq!(
            bad,
            Err(Unplaced("first_stage_model.encoder.bogus.weight".into()))
        );
    }

    #[test]
    fn open_clip_splits_attention_and_drops_layers_past_the_count() {
        let names = [
            "m.transformer.resblocks.0.attn.in_proj_weight",
            "m.transformer.resblocks.0.attn.in_proj_bias",
            "m.transformer.resblocks.0.mlp.c_fc.weight",
            "m.transformer.resblocks.1.ln_2.bias",
            "m.ln_final.weight",
            "m.text_projection",
            "m.logit_scale",
        ];
        let plan = open_clip(names.iter().copied(), "m.", 1, true).unwrap();
        let l0 = "text_model.encoder.layers.0";
        assert_eq!(
            plan[&format!("{l0}.self_attn.k_proj.weight")].how,
            Transform::Third(1)
        );
        assert_eq!(
            plan[&format!("{l0}.self_attn.v_proj.bias")].how,
            Transform::Third(2)
        );
        assert_eq!(plan[&format!("{l0}.mlp.fc1.weight")].stored, names[2]);
        assert!(!plan.keys().any(|k| k.contains("layers.1")), "{plan:?}");
        assert_eq!(plan["text_projection.weight"].how, Transform::Transpose);
        assert_eq!(plan["text_model.final_layer_norm.weight"].stored, names[4]);
        let without = open_clip(names.iter().copied(), "m.", 2, false).unwrap();
        assert!(!without.contains_key("text_projection.weight"));
        assert!(without.contains_key("text_model.encoder.layers.1.layer_norm2.bias"));
    }
}
