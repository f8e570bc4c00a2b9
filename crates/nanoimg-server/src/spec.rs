//! A job's parameters after validation: what the worker runs and what the job record keeps.
//! Images are referred to by asset id, never embedded, so a queued job survives a restart.

use nanoimg_core::{ImageSize, SchedulerName};
use nanoimg_engine::codec::OutputFormat;
use nanoimg_engine::reference::Reference;
use nanoimg_engine::{GenerateRequest, InitImage, Refiner, VaeChoice};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One validated generation, edit or variation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub model: String,
    pub prompt: String,
    pub negative_prompt: String,
    pub size: ImageSize,
    pub steps: u32,
    pub guidance: f64,
    pub scheduler: SchedulerName,
    pub seed: u64,
    pub n: u32,
    pub output_format: OutputFormat,
    /// JPEG quality 0–100.
    pub output_compression: Option<u8>,
    /// Starting image for edits and variations.
    pub init: Option<InitSpec>,
    /// Partial images to stream (OpenAI `partial_images`, 0–3).
    #[serde(default)]
    pub partial_images: u32,
    /// Moderation strictness (OpenAI `moderation`).
    #[serde(default)]
    pub moderation: nanoimg_safety::Strictness,
    /// A validated edit plan to run on `init.image` instead of one model pass (planned edits
    /// and edit-session instructions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanSpec>,
    /// Characters that condition every model pass (references, LoRA, description).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub characters: Vec<CharacterUse>,
    /// LoRAs from the server's library merged for every model pass: the request's `loras` and
    /// the prompt's `<lora:…>` tags (which `prompt` no longer holds).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loras: Vec<LoraSpec>,
    /// Reference images (asset ids) that condition the edit, as a character's references do:
    /// the second and later `image[]` of an OpenAI edit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<String>,
    /// A second model that draws the last steps of every model pass (SDXL's refiner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refiner: Option<RefinerSpec>,
    /// The autoencoder that decodes (and encodes the init image): the full VAE, or the tiny one.
    #[serde(default, skip_serializing_if = "is_full")]
    pub vae: VaeChoice,
}

fn is_full(v: &VaeChoice) -> bool {
    *v == VaeChoice::Full
}

/// The model that finishes each pass, and the fraction of the schedule drawn before it takes
/// over (see [`nanoimg_engine::Refiner`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefinerSpec {
    pub model: String,
    pub switch_at: f64,
}

/// A library LoRA as a job uses it; its trigger words are read when the job is admitted, for
/// moderation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraSpec {
    pub name: String,
    pub weight: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trigger_words: Vec<String>,
}

impl LoraSpec {
    /// Its `<lora:name:weight>` tag.
    pub fn tag(&self) -> String {
        nanoimg_engine::lora::prompt::LoraUse {
            name: self.name.clone(),
            weight: self.weight,
        }
        .tag()
    }
}

/// A character as a job uses it, resolved when the job is admitted: the description and
/// strength are fixed then; the references and LoRA are read when the job runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CharacterUse {
    pub id: String,
    pub name: String,
    pub description: String,
    /// Reference strength (the request's `character_strength`, else the character's own).
    pub strength: f64,
    pub seed: u64,
}

impl JobSpec {
    /// The one mapping from a job to a model pass: `prompt` (the job's, or a plan step's) with
    /// the characters' descriptions, the job's sampling settings, and what the pass starts from
    /// and is conditioned and finished by. A plan step passes its own size, seed and single
    /// image.
    pub fn request(
        &self,
        prompt: &str,
        pass: Pass,
        init: Option<InitImage>,
        reference: Option<Arc<Reference>>,
        refiner: Option<Refiner>,
    ) -> GenerateRequest {
        GenerateRequest {
            prompt: self.model_prompt(prompt),
            negative_prompt: self.negative_prompt.clone(),
            size: pass.size,
            steps: self.steps,
            guidance: self.guidance,
            scheduler: self.scheduler,
            seed: pass.seed,
            n: pass.n,
            init,
            reference,
            hooks: None,
            refiner,
            vae: self.vae,
        }
    }

    /// The whole job as one pass: its size, seed and `n`.
    pub fn whole(&self) -> Pass {
        Pass {
            size: self.size,
            seed: self.seed,
            n: self.n,
        }
    }

    /// The prompt the model sees: the user's, then each character's description.
    pub fn model_prompt(&self, prompt: &str) -> String {
        let mut out = prompt.to_owned();
        for c in self
            .characters
            .iter()
            .filter(|c| !c.description.trim().is_empty())
        {
            out.push_str(", ");
            out.push_str(c.description.trim());
        }
        out
    }
}

/// The size, seed and image count of one model pass.
#[derive(Debug, Clone, Copy)]
pub struct Pass {
    pub size: ImageSize,
    pub seed: u64,
    pub n: u32,
}

/// An edit plan and where its result goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanSpec {
    pub plan: nanoimg_edit::EditPlan,
    /// What the user asked for, kept with the result.
    pub instruction: String,
    /// The session version the result continues, for edit-session instructions.
    pub session: Option<SessionTarget>,
}

/// A place in an edit session: the new version's session and parent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionTarget {
    pub session_id: String,
    pub parent_version: String,
}

/// The starting image of an edit: uploaded assets and how much to change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitSpec {
    pub image: String,
    pub mask: Option<String>,
    pub strength: f64,
}

/// What kind of job a spec is, for records and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Generation,
    Edit,
    Variation,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Generation => "generation",
            JobKind::Edit => "edit",
            JobKind::Variation => "variation",
        }
    }
}
