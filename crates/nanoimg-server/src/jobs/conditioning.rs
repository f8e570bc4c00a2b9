//! What a job's characters add to its model passes, read when the job runs (a character deleted
//! after the job was queued fails it with `input_unavailable`): the reference images, decoded
//! with the upload limits, become one [`Reference`]; the LoRAs (the characters' and the
//! request's, from the library) are merged into a copy of the model that the catalog keeps for
//! the next job with the same ones.

use super::{Context, JobError};
use crate::models::Loaded;
use crate::spec::JobSpec;
use nanoimg_engine::codec;
use nanoimg_engine::lora::Lora;
use nanoimg_engine::reference::{Reference, ReferenceSettings, MAX_REFERENCES};
use nanoimg_engine::StableDiffusion;
use std::sync::Arc;

/// The model and reference a job runs with.
pub struct Conditioned {
    pub model: Arc<StableDiffusion>,
    pub reference: Option<Arc<Reference>>,
}

/// Reads the spec's characters for `tenant` and conditions `base` with them.
pub(super) async fn prepare(
    ctx: &Context,
    tenant: &str,
    spec: &JobSpec,
    base: Loaded,
) -> Result<Conditioned, JobError> {
    if spec.characters.is_empty() && spec.references.is_empty() {
        let model = if spec.loras.is_empty() {
            base.model
        } else {
            merged(ctx, spec, base.model, Vec::new()).await?.model
        };
        return Ok(Conditioned {
            model,
            reference: None,
        });
    }
    let scoped = ctx.store.scoped(tenant);
    let unavailable = JobError::InputUnavailable;
    let mut files = Vec::new();
    // The request's own reference images first (admission left room for them) ...
    for (i, id) in spec.references.iter().enumerate() {
        let (_, bytes) = scoped
            .asset_bytes(id)
            .await
            .map_err(|e| unavailable(format!("reference image {}: {e}", i + 1)))?;
        files.push((format!("reference image {}", i + 1), bytes));
    }
    // ... then the characters share what is left of the engine's budget evenly.
    let per_character =
        (MAX_REFERENCES.saturating_sub(spec.references.len()) / spec.characters.len().max(1)).max(1);
    let mut loras = Vec::new();
    for c in &spec.characters {
        let ch = scoped
            .character(&c.id)
            .await
            .map_err(|e| unavailable(format!("character {}: {e}", c.id)))?;
        for r in ch.references.iter().take(per_character) {
            let (_, bytes) = scoped
                .asset_bytes(&r.asset_id)
                .await
                .map_err(|e| unavailable(format!("character {} reference {}: {e}", c.id, r.position)))?;
            files.push((format!("character {}", c.id), bytes));
        }
        if let Some(bytes) = scoped
            .character_lora(&ch)
            .await
            .map_err(|e| unavailable(format!("character {} LoRA: {e}", c.id)))?
        {
            loras.push((ch.id.clone(), c.strength, bytes));
        }
    }
    let limits = ctx.settings.upload_limits;
    let images = tokio::task::spawn_blocking(move || {
        files
            .iter()
            .map(|(id, bytes)| {
                codec::decode(bytes, &limits, "reference")
                    .map(|img| img.to_rgb8())
                    .map_err(|e| JobError::InvalidImage(format!("{id}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(JobError::internal)??;
    let model = if loras.is_empty() && spec.loras.is_empty() {
        base
    } else {
        merged(ctx, spec, base.model, loras).await?
    };
    let strength = if spec.characters.is_empty() {
        ReferenceSettings::default().strength
    } else {
        spec.characters.iter().map(|c| c.strength).sum::<f64>() / spec.characters.len() as f64
    };
    // Banks of a request's own images are not kept: no later job has the same ones.
    let cache = spec.references.is_empty().then_some(model.banks);
    let reference = Reference {
        key: spec
            .characters
            .iter()
            .map(|c| c.id.as_str())
            .chain(spec.references.iter().map(String::as_str))
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
        seed: spec.characters.first().map_or(spec.seed, |c| c.seed),
        settings: ReferenceSettings {
            strength,
            ..ReferenceSettings::default()
        },
        cache,
    };
    Ok(Conditioned {
        model: model.model,
        reference: Some(Arc::new(reference)),
    })
}

/// The base model with the request's library LoRAs and the characters' LoRAs merged in: the
/// catalog's copy when it has one, else merged now (on a blocking thread: it is tensor work).
/// The cache key names each library file as it is now, so a replaced file is merged anew.
async fn merged(
    ctx: &Context,
    spec: &JobSpec,
    base: Arc<StableDiffusion>,
    loras: Vec<(String, f64, Vec<u8>)>,
) -> Result<Loaded, JobError> {
    let (catalog, model_name) = (ctx.catalog.clone(), spec.model.clone());
    let asked = spec.loras.clone();
    tokio::task::spawn_blocking(move || {
        let library = asked
            .iter()
            .map(|l| {
                catalog
                    .loras()
                    .find(&l.name)
                    .map(|e| (e, l.weight))
                    .map_err(|e| JobError::InputUnavailable(format!("LoRA {}: {e}", l.name)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let key = std::iter::once(model_name.clone())
            .chain(library.iter().map(|(e, w)| format!("lora:{}@{w}", e.cache_key())))
            .chain(loras.iter().map(|(id, s, _)| format!("{id}@{s}")))
            .collect::<Vec<_>>()
            .join("|");
        let ids: Vec<String> = loras.iter().map(|(id, _, _)| id.clone()).collect();
        catalog.derived(&key, &ids, || {
            let mut parsed = library
                .iter()
                .map(|(e, w)| {
                    e.load_lora()
                        .map(|l| (l, *w))
                        .map_err(|err| JobError::InvalidValue(format!("LoRA {}: {err}", e.name)))
                })
                .collect::<Result<Vec<_>, _>>()?;
            for (id, s, bytes) in &loras {
                let l = Lora::from_safetensors(bytes)
                    .map_err(|e| JobError::InvalidValue(format!("character {id}'s LoRA: {e}")))?;
                parsed.push((l, *s));
            }
            let pairs: Vec<(&Lora, f64)> = parsed.iter().map(|(l, s)| (l, *s)).collect();
            base.with_loras(&pairs)
                .map_err(|e| JobError::InvalidValue(format!("the LoRAs do not fit model {model_name}: {e}")))
        })
    })
    .await
    .map_err(JobError::internal)?
}
