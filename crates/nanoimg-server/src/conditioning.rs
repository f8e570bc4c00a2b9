//! What a job's characters add to its model passes, read when the job runs (a character deleted
//! after the job was queued fails it with `input_unavailable`): the reference images, decoded
//! with the upload limits, become one [`Reference`]; the LoRAs are merged into a copy of the
//! model that the catalog keeps for the next job with the same characters.

use crate::models::ModelCatalog;
use crate::spec::JobSpec;
use nanoimg_engine::codec::{self, DecodeLimits};
use nanoimg_engine::lora::Lora;
use nanoimg_engine::reference::{Reference, ReferenceSettings, MAX_REFERENCES};
use nanoimg_engine::StableDiffusion;
use nanoimg_store::Store;
use std::sync::Arc;
use tokio::runtime::Handle;

/// The model and reference a job runs with.
pub struct Conditioned {
    pub model: Arc<StableDiffusion>,
    pub reference: Option<Arc<Reference>>,
}

/// A failed preparation: the job's error code and message.
pub type Failure = (&'static str, String);

/// Where a job's characters are read from.
pub struct Sources<'a> {
    pub store: &'a Store,
    pub rt: &'a Handle,
    pub catalog: &'a ModelCatalog,
    pub upload_limits: &'a DecodeLimits,
}

/// Reads the spec's characters for `tenant` and conditions `base` with them.
pub fn prepare(
    src: &Sources,
    tenant: &str,
    spec: &JobSpec,
    base: Arc<StableDiffusion>,
) -> Result<Conditioned, Failure> {
    if spec.characters.is_empty() {
        return Ok(Conditioned {
            model: base,
            reference: None,
        });
    }
    let scoped = src.store.scoped(tenant);
    let unavailable = |what: String| ("input_unavailable", what);
    // Several characters share the engine's reference budget evenly.
    let per_character = (MAX_REFERENCES / spec.characters.len()).max(1);
    let mut images = Vec::new();
    let mut loras = Vec::new();
    for c in &spec.characters {
        let ch = src
            .rt
            .block_on(scoped.character(&c.id))
            .map_err(|e| unavailable(format!("character {}: {e}", c.id)))?;
        for r in ch.references.iter().take(per_character) {
            let (_, bytes) = src
                .rt
                .block_on(scoped.asset_bytes(&r.asset_id))
                .map_err(|e| unavailable(format!("character {} reference {}: {e}", c.id, r.position)))?;
            let img = codec::decode(&bytes, src.upload_limits, "reference")
                .map_err(|e| ("invalid_image", format!("character {}: {e}", c.id)))?;
            images.push(img.to_rgb8());
        }
        if let Some(bytes) = src
            .rt
            .block_on(scoped.character_lora(&ch))
            .map_err(|e| unavailable(format!("character {} LoRA: {e}", c.id)))?
        {
            loras.push((ch.id.clone(), c.strength, bytes));
        }
    }
    let model = if loras.is_empty() {
        base
    } else {
        let key = std::iter::once(spec.model.clone())
            .chain(loras.iter().map(|(id, s, _)| format!("{id}@{s}")))
            .collect::<Vec<_>>()
            .join("|");
        let ids: Vec<String> = loras.iter().map(|(id, _, _)| id.clone()).collect();
        src.catalog
            .derived(&key, &ids, || {
                let parsed = loras
                    .iter()
                    .map(|(id, _, bytes)| {
                        Lora::from_safetensors(bytes).map_err(|e| format!("character {id}'s LoRA: {e}"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let pairs: Vec<(&Lora, f64)> =
                    parsed.iter().zip(&loras).map(|(l, (_, s, _))| (l, *s)).collect();
                base.with_loras(&pairs)
                    .map_err(|e| format!("the characters' LoRAs do not fit model {}: {e}", spec.model))
            })
            .map_err(|m| ("invalid_value", m))?
    };
    let strength = spec.characters.iter().map(|c| c.strength).sum::<f64>() / spec.characters.len() as f64;
    let reference = Reference {
        key: spec
            .characters
            .iter()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>()
            .join("+"),
        images,
        prompt: spec
            .characters
            .iter()
            .map(|c| c.description.trim())
            .filter(|d| !d.is_empty())
            .collect::<Vec<_>>()
            .join(", "),
        seed: spec.characters[0].seed,
        settings: ReferenceSettings {
            strength,
            ..ReferenceSettings::default()
        },
    };
    Ok(Conditioned {
        model,
        reference: Some(Arc::new(reference)),
    })
}
