//! What a request asks for, as the routes receive it and as the job system takes it.
//!
//! [`ImageRequest`] is the wire form of the OpenAI image endpoints and `/v1/jobs` (unknown fields
//! refused by name). [`GenerationParams`] is the typed core every route builds — the OpenAI
//! routes from an `ImageRequest`, edit sessions from an instruction — and
//! [`GenerationParams::into_spec`] is the one place a request becomes a [`JobSpec`], checked
//! against the model and the limits. [`Delivery`] is how the client wants the images back.

use crate::error::{ApiError, ApiResult};
use crate::spec::{CharacterUse, InitSpec, JobKind, JobSpec, LoraSpec, RefinerSpec};
use crate::state::AppState;
use axum::http::HeaderMap;
use nanoimg_core::{ImageSize, SchedulerName};
use nanoimg_engine::codec::OutputFormat;
use nanoimg_engine::lora::prompt::LoraUse;
use nanoimg_engine::pipeline::{DEFAULT_SWITCH_AT, MAX_PROMPT_BYTES};
use nanoimg_engine::{ModelInfo, VaeChoice};
use serde::Deserialize;

/// Most characters one request may use.
pub const MAX_CHARACTERS: usize = 4;

/// Every field the three endpoints accept: OpenAI's, then NanoImg's extras (sent by the SDKs
/// through `extra_body`). Unknown fields are refused by name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRequest {
    pub prompt: Option<String>,
    pub model: Option<String>,
    pub n: Option<u32>,
    pub size: Option<String>,
    pub quality: Option<String>,
    pub response_format: Option<String>,
    pub output_format: Option<String>,
    pub output_compression: Option<u8>,
    pub background: Option<String>,
    pub moderation: Option<String>,
    pub user: Option<String>,
    /// OpenAI's newer name for an end user's id (a stable hash of it); checked like `user`.
    pub safety_identifier: Option<String>,
    pub stream: Option<bool>,
    pub partial_images: Option<u32>,
    /// DALL·E 3's `vivid` / `natural`: accepted for compatibility, no effect.
    pub style: Option<String>,
    /// gpt-image's `input_fidelity` for edits: accepted for compatibility, no effect.
    pub input_fidelity: Option<String>,
    pub seed: Option<u64>,
    pub negative_prompt: Option<String>,
    pub steps: Option<u32>,
    pub guidance: Option<f64>,
    pub scheduler: Option<String>,
    pub strength: Option<f64>,
    /// A character (`chr_…`) that conditions the images; `character_ids` takes several.
    pub character_id: Option<String>,
    pub character_ids: Option<Vec<String>>,
    /// How strongly the characters' references condition the images (0–1); each character's
    /// own default otherwise.
    pub character_strength: Option<f64>,
    /// Edits: answer with the plan the prompt makes, without running it.
    pub dry_run: Option<bool>,
    /// LoRAs from the server's library: `[{"name": "ink", "weight": 0.8}]`, `["ink:0.8"]`, or
    /// (in forms) `"ink:0.8,other"`.
    pub loras: Option<LorasParam>,
    /// A model that draws the last steps (an SDXL refiner after an SDXL base).
    pub refiner: Option<String>,
    /// The fraction of the schedule drawn before the refiner takes over, 0–1 (default 0.8).
    pub refiner_switch_at: Option<f64>,
    /// `full` (the model's VAE, the default) or `tiny` (its tiny autoencoder: faster, less detail).
    pub vae: Option<String>,
}

/// Most LoRAs one request may merge.
pub const MAX_LORAS: usize = 8;

/// The `loras` field in the shapes clients send it.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum LorasParam {
    /// `"ink:0.8,other"`, or a JSON array in a form field.
    Text(String),
    List(Vec<LoraItem>),
}

/// One entry of `loras`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum LoraItem {
    Text(String),
    Object { name: String, weight: Option<f64> },
}

impl LorasParam {
    /// The LoRAs named, checked (names, weights), in order.
    pub fn uses(&self) -> ApiResult<Vec<LoraUse>> {
        let bad = |m: String| ApiError::invalid("loras", m);
        let items: Vec<LoraItem> = match self {
            LorasParam::Text(t) if t.trim_start().starts_with('[') => {
                serde_json::from_str(t).map_err(|e| bad(format!("not a list of LoRAs: {e}")))?
            }
            LorasParam::Text(t) => t
                .split(',')
                .filter(|p| !p.trim().is_empty())
                .map(|p| LoraItem::Text(p.trim().to_owned()))
                .collect(),
            LorasParam::List(l) => l.clone(),
        };
        items
            .into_iter()
            .map(|i| match i {
                LoraItem::Text(t) => t.parse::<LoraUse>().map_err(|e| bad(e.to_string())),
                LoraItem::Object { name, weight } => {
                    LoraUse::new(&name, weight.unwrap_or(1.0)).map_err(|e| bad(e.to_string()))
                }
            })
            .collect()
    }
}

/// The request's `moderation` field (`auto` when absent), or 400 naming it.
pub(crate) fn strictness(asked: Option<&str>) -> ApiResult<nanoimg_safety::Strictness> {
    asked
        .unwrap_or("auto")
        .parse()
        .map_err(|e: nanoimg_safety::prompt::UnknownStrictness| {
            ApiError::invalid("moderation", e.to_string())
        })
}

/// Form fields that are numbers or booleans.
pub(crate) const TYPED_FIELDS: &[&str] = &[
    "n",
    "output_compression",
    "stream",
    "partial_images",
    "seed",
    "steps",
    "guidance",
    "strength",
    "dry_run",
    "character_strength",
    "refiner_switch_at",
];

/// The parameters of a generation, edit or variation that shape its images.
#[derive(Debug, Clone, Default)]
pub struct GenerationParams {
    pub model: Option<String>,
    pub prompt: Option<String>,
    pub negative_prompt: Option<String>,
    pub n: Option<u32>,
    pub size: Option<String>,
    /// OpenAI's quality: fewer or more steps than the model's default.
    pub quality: Option<String>,
    pub steps: Option<u32>,
    pub guidance: Option<f64>,
    pub scheduler: Option<String>,
    pub seed: Option<u64>,
    pub strength: Option<f64>,
    pub moderation: Option<String>,
    pub output_format: Option<String>,
    pub output_compression: Option<u8>,
    pub partial_images: Option<u32>,
    pub character_id: Option<String>,
    pub character_ids: Option<Vec<String>>,
    pub character_strength: Option<f64>,
    pub loras: Option<LorasParam>,
    pub refiner: Option<String>,
    pub refiner_switch_at: Option<f64>,
    pub vae: Option<String>,
}

/// How the client wants its images.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub url: bool,
    pub stream: bool,
    pub quality: String,
    pub background: String,
    /// The client's end user (`safety_identifier`, else `user`), for the audit log.
    pub end_user: Option<String>,
    /// Base for signed links: the server's `public_url`, else `http://` and the host the client
    /// used.
    pub base_url: String,
}

impl ImageRequest {
    /// The parameters that shape the images.
    pub fn generation(&self) -> GenerationParams {
        GenerationParams {
            model: self.model.clone(),
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            n: self.n,
            size: self.size.clone(),
            quality: self.quality.clone(),
            steps: self.steps,
            guidance: self.guidance,
            scheduler: self.scheduler.clone(),
            seed: self.seed,
            strength: self.strength,
            moderation: self.moderation.clone(),
            output_format: self.output_format.clone(),
            output_compression: self.output_compression,
            partial_images: self.partial_images,
            character_id: self.character_id.clone(),
            character_ids: self.character_ids.clone(),
            character_strength: self.character_strength,
            loras: self.loras.clone(),
            refiner: self.refiner.clone(),
            refiner_switch_at: self.refiner_switch_at,
            vae: self.vae.clone(),
        }
    }

    /// The spec and how to deliver it: every field checked.
    pub(crate) fn build(
        &self,
        state: &AppState,
        kind: JobKind,
        init: Option<(InitSpec, (u32, u32))>,
        headers: &HeaderMap,
    ) -> ApiResult<(JobSpec, Delivery)> {
        let spec = self.generation().into_spec(state, kind, init)?;
        Ok((spec, self.delivery(state, kind, headers)?))
    }

    /// How the client wants the images, and the fields that only shape the answer.
    pub(crate) fn delivery(
        &self,
        state: &AppState,
        kind: JobKind,
        headers: &HeaderMap,
    ) -> ApiResult<Delivery> {
        let quality = one_of("quality", self.quality.as_deref(), QUALITIES, "auto")?;
        let response_format = one_of(
            "response_format",
            self.response_format.as_deref(),
            &["b64_json", "url"],
            "b64_json",
        )?;
        let background = one_of(
            "background",
            self.background.as_deref(),
            &["auto", "opaque", "transparent"],
            "auto",
        )?;
        if background == "transparent" {
            return Err(ApiError::invalid(
                "background",
                "NanoImg's models paint opaque images; use \"opaque\" or \"auto\"",
            ));
        }
        one_of("style", self.style.as_deref(), &["vivid", "natural"], "vivid")?;
        one_of(
            "input_fidelity",
            self.input_fidelity.as_deref(),
            &["low", "high"],
            "low",
        )?;
        for (name, id) in [
            ("user", &self.user),
            ("safety_identifier", &self.safety_identifier),
        ] {
            if id.as_deref().is_some_and(|u| u.len() > 256) {
                return Err(ApiError::invalid(name, "at most 256 bytes"));
            }
        }
        let stream = self.stream.unwrap_or(false);
        if self.partial_images.unwrap_or(0) > 0 && !stream {
            return Err(ApiError::invalid(
                "partial_images",
                "partial images need stream: true",
            ));
        }
        if stream && response_format == "url" {
            return Err(ApiError::invalid(
                "response_format",
                "streamed images come as b64_json",
            ));
        }
        if self.dry_run.is_some() && kind != JobKind::Edit {
            return Err(ApiError::invalid("dry_run", "dry_run applies to edits"));
        }
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| h.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_owned)
            .unwrap_or_else(|| state.config.bind.to_string());
        Ok(Delivery {
            url: response_format == "url",
            stream,
            quality,
            background,
            end_user: self.safety_identifier.clone().or_else(|| self.user.clone()),
            base_url: match &state.config.public_url {
                Some(url) => url.trim_end_matches('/').to_owned(),
                None => format!("http://{host}"),
            },
        })
    }
}

const QUALITIES: &[&str] = &["auto", "low", "medium", "high", "standard", "hd"];

/// The OpenAI routes' body as a newer SDK may send it. Every field this server knows is parsed
/// strictly afterwards; a field it does not know is taken out and named in the answer's
/// [`IGNORED_HEADER`], so a field an SDK adds later does not break requests. A near miss of a
/// known field (`negative_promt`, `Steps`) is refused naming the field meant: ignoring it would
/// silently lose a setting. A `quality` this server does not know is read as `auto` and named.
pub(crate) fn lenient(mut body: serde_json::Value) -> ApiResult<(serde_json::Value, Vec<String>)> {
    let Some(fields) = body.as_object_mut() else {
        return Ok((body, Vec::new()));
    };
    let known: Vec<&str> = crate::openapi::IMAGE_FIELDS.iter().map(|f| f.0).collect();
    let mut ignored = Vec::new();
    let names: Vec<String> = fields.keys().cloned().collect();
    for name in names {
        if known.contains(&name.as_str()) {
            continue;
        }
        if let Some(meant) = known.iter().find(|k| near_miss(&name, k)) {
            return Err(ApiError::invalid(
                name.clone(),
                format!("unknown field `{name}`; did you mean `{meant}`?"),
            ));
        }
        fields.remove(&name);
        ignored.push(name);
    }
    if let Some(q) = fields.get("quality").and_then(|q| q.as_str()) {
        if !QUALITIES.contains(&q) {
            fields.remove("quality");
            ignored.push("quality".into());
        }
    }
    Ok((body, ignored))
}

/// The answer header naming the fields a request sent that changed nothing.
pub const IGNORED_HEADER: &str = "x-nanoimg-ignored-fields";

/// Whether `name` looks like a mistyped `known`: the same but for case, `-` and `_`, or (for
/// names of five letters or more) at most two edits away.
fn near_miss(name: &str, known: &str) -> bool {
    let plain = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let (a, b) = (plain(name), plain(known));
    a == b || (a.chars().count() >= 5 && edits(&a, &b) <= 2)
}

/// Levenshtein distance.
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
}

impl GenerationParams {
    /// The job spec these parameters make, checked against the model and the limits. `init` is
    /// the starting image (its asset ids may be filled in later) and its size.
    pub fn into_spec(
        &self,
        state: &AppState,
        kind: JobKind,
        init: Option<(InitSpec, (u32, u32))>,
    ) -> ApiResult<JobSpec> {
        let limits = &state.config.limits;
        let entry = state.catalog.pick(self.model.as_deref()).ok_or_else(|| {
            let names: Vec<_> = state.catalog.entries().iter().map(|e| e.name.as_str()).collect();
            ApiError::invalid(
                "model",
                format!(
                    "no model named {:?}; available: {}",
                    self.model.as_deref().unwrap_or_default(),
                    names.join(", ")
                ),
            )
        })?;
        let defaults = &entry.info.defaults;
        let prompt = match (kind, &self.prompt) {
            (JobKind::Variation, Some(_)) => {
                return Err(ApiError::invalid("prompt", "variations take no prompt"))
            }
            (JobKind::Variation, None) => String::new(),
            (_, None) => return Err(ApiError::invalid("prompt", "a prompt is required")),
            (_, Some(p)) if p.trim().is_empty() => {
                return Err(ApiError::invalid("prompt", "the prompt is empty"))
            }
            (_, Some(p)) => p.clone(),
        };
        let negative_prompt = self.negative_prompt.clone().unwrap_or_default();
        let (prompt, loras) = self.loras(&prompt, &negative_prompt)?;
        for (param, text) in [("prompt", &prompt), ("negative_prompt", &negative_prompt)] {
            if text.len() > MAX_PROMPT_BYTES {
                return Err(ApiError::invalid(
                    param,
                    format!("{} bytes; the limit is {MAX_PROMPT_BYTES}", text.len()),
                ));
            }
        }
        let n = self.n.unwrap_or(1);
        limits.check_images(n)?;
        let size = match (self.size.as_deref(), &init) {
            (None | Some("auto"), Some((_, (w, h)))) => auto_size(*w, *h, limits),
            (None | Some("auto"), None) => defaults.size,
            (Some(s), _) => s.parse::<ImageSize>()?,
        };
        limits.check_size(size)?;
        let quality = one_of("quality", self.quality.as_deref(), QUALITIES, "auto")?;
        let steps = match self.steps {
            Some(s) => s,
            None => match quality.as_str() {
                "low" => (defaults.steps / 2).max(1),
                "high" | "hd" => (defaults.steps * 3 / 2).min(limits.max_steps),
                _ => defaults.steps,
            },
        };
        limits.check_steps(steps)?;
        let guidance = self.guidance.unwrap_or(defaults.guidance);
        limits.check_guidance(guidance)?;
        let scheduler = match &self.scheduler {
            Some(s) => s.parse::<SchedulerName>()?,
            None => defaults.scheduler,
        };
        let output_format: OutputFormat = self.output_format.as_deref().unwrap_or("png").parse()?;
        if let Some(c) = self.output_compression {
            if c > 100 {
                return Err(ApiError::invalid("output_compression", "must be 0 to 100"));
            }
        }
        let moderation = strictness(self.moderation.as_deref())?;
        let partial_images = self.partial_images.unwrap_or(0);
        if partial_images > 3 {
            return Err(ApiError::invalid("partial_images", "must be 0 to 3"));
        }
        let characters = requested(self)?;
        let refiner = self.refiner(state, &entry.info)?;
        let vae: VaeChoice = match self.vae.as_deref() {
            None => VaeChoice::Full,
            Some(v) => v.parse()?,
        };
        if vae == VaeChoice::Tiny && entry.tiny_vae.is_none() {
            return Err(ApiError::invalid(
                "vae",
                format!("{} has no tiny autoencoder on this server", entry.name),
            ));
        }
        entry.info.check_features(&nanoimg_engine::Asked {
            scheduler,
            negative_prompt: &negative_prompt,
            loras: !loras.is_empty(),
            refiner: refiner.is_some(),
            references: !characters.is_empty(),
        })?;
        let init = match (init, self.strength) {
            (Some((mut i, _)), s) => {
                if let Some(s) = s {
                    limits.check_strength(s)?;
                    i.strength = s;
                }
                Some(i)
            }
            (None, Some(_)) => {
                return Err(ApiError::invalid(
                    "strength",
                    "strength applies to edits and variations",
                ))
            }
            (None, None) => None,
        };
        Ok(JobSpec {
            model: entry.name.clone(),
            prompt,
            negative_prompt,
            size,
            steps,
            guidance,
            scheduler,
            seed: self.seed.unwrap_or_else(random_seed),
            n,
            output_format,
            output_compression: self.output_compression,
            init,
            partial_images,
            moderation,
            plan: None,
            characters,
            loras,
            references: Vec::new(),
            refiner,
            vae,
        })
    }

    /// The refiner asked for, found in the catalog and able to continue `base`'s latents.
    fn refiner(&self, state: &AppState, base: &ModelInfo) -> ApiResult<Option<RefinerSpec>> {
        let name = match (
            self.refiner.as_deref().filter(|r| !r.is_empty()),
            self.refiner_switch_at,
        ) {
            (None, None) => return Ok(None),
            (None, Some(_)) => {
                return Err(ApiError::invalid(
                    "refiner_switch_at",
                    "refiner_switch_at needs a refiner",
                ))
            }
            (Some(name), _) => name,
        };
        let switch_at = self.refiner_switch_at.unwrap_or(DEFAULT_SWITCH_AT);
        if !(0.0..=1.0).contains(&switch_at) {
            return Err(ApiError::invalid("refiner_switch_at", "must be 0 to 1"));
        }
        let entry = state
            .catalog
            .entries()
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| ApiError::invalid("refiner", format!("no model named {name:?}")))?;
        base.can_refine_with(&entry.info)
            .map_err(|why| ApiError::invalid("refiner", why))?;
        Ok(Some(RefinerSpec {
            model: entry.name.clone(),
            switch_at,
        }))
    }

    /// The prompt the text encoder sees (`<lora:…>` tags taken out) and the LoRAs asked for:
    /// the tags, then `loras`. Their names are looked up at admission.
    fn loras(&self, prompt: &str, negative: &str) -> ApiResult<(String, Vec<LoraSpec>)> {
        if negative.to_ascii_lowercase().contains("<lora:") {
            return Err(ApiError::invalid(
                "negative_prompt",
                "LoRA tags belong in the prompt",
            ));
        }
        let (text, mut uses) = nanoimg_engine::lora::prompt::extract(prompt)?;
        if let Some(l) = &self.loras {
            uses.extend(l.uses()?);
        }
        if uses.len() > MAX_LORAS {
            return Err(ApiError::invalid(
                "loras",
                format!("at most {MAX_LORAS} LoRAs per request"),
            ));
        }
        if !prompt.trim().is_empty() && text.trim().is_empty() {
            return Err(ApiError::invalid("prompt", "the prompt is only LoRA tags"));
        }
        Ok((
            text,
            uses.into_iter()
                .map(|u| LoraSpec {
                    name: u.name,
                    weight: u.weight,
                    trigger_words: Vec::new(),
                })
                .collect(),
        ))
    }
}

/// How much an edit changes when the request does not say: a masked area is repainted fully,
/// an unmasked edit keeps the composition, a variation stays close to its source.
pub(crate) fn default_strength(kind: JobKind, masked: bool) -> f64 {
    match (kind, masked) {
        (JobKind::Variation, _) => 0.5,
        (_, true) => 1.0,
        (_, false) => 0.6,
    }
}

/// The characters a request names (`character_id` or `character_ids`), not yet looked up.
fn requested(req: &GenerationParams) -> ApiResult<Vec<CharacterUse>> {
    let ids: Vec<String> = match (&req.character_id, &req.character_ids) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "character_ids",
                "send character_id or character_ids, not both",
            ))
        }
        (Some(one), None) => vec![one.clone()],
        (None, Some(many)) => many.clone(),
        (None, None) => Vec::new(),
    };
    if ids.len() > MAX_CHARACTERS {
        return Err(ApiError::invalid(
            "character_ids",
            format!("at most {MAX_CHARACTERS} characters per request"),
        ));
    }
    if let Some(s) = req.character_strength {
        if ids.is_empty() {
            return Err(ApiError::invalid(
                "character_strength",
                "name a character_id first",
            ));
        }
        if !(0.0..=1.0).contains(&s) {
            return Err(ApiError::invalid(
                "character_strength",
                format!("{s} is outside 0..=1"),
            ));
        }
    }
    let mut out: Vec<CharacterUse> = Vec::with_capacity(ids.len());
    for id in ids {
        if out.iter().any(|c| c.id == id) {
            return Err(ApiError::invalid(
                "character_ids",
                format!("{id:?} is named twice"),
            ));
        }
        out.push(CharacterUse {
            id,
            name: String::new(),
            description: String::new(),
            strength: 0.0,
            seed: 0,
        });
    }
    Ok(out)
}

fn one_of(param: &str, v: Option<&str>, allowed: &[&str], default: &str) -> ApiResult<String> {
    let v = v.unwrap_or(default);
    if allowed.contains(&v) {
        Ok(v.to_owned())
    } else {
        Err(ApiError::invalid(
            param,
            format!("{v:?} is not one of {}", allowed.join(", ")),
        ))
    }
}

fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the operating system's random source failed");
    // JSON numbers are exact to 2^53; keep seeds inside so every client can echo them back.
    u64::from_le_bytes(b) & ((1 << 53) - 1)
}

/// The size of an edit with `size: auto`: the input's, scaled down to the limits and rounded
/// down to a multiple of 8.
fn auto_size(w: u32, h: u32, limits: &nanoimg_core::Limits) -> ImageSize {
    let (mut w, mut h) = (f64::from(w), f64::from(h));
    let side = f64::from(limits.max_side);
    let s = (side / w.max(h))
        .min((limits.max_pixels as f64 / (w * h)).sqrt())
        .min(1.0);
    w *= s;
    h *= s;
    let fit = |v: f64| ((v as u32) / 8 * 8).max(limits.min_side);
    ImageSize::new(fit(w), fit(h))
}
