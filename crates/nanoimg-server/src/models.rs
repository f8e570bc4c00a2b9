//! The models the server offers, and the ones it has loaded. Folders arrive inspected (configs
//! only, by the caller's registry); weights load on first use, in a worker, and the least recently used
//! model is dropped when more than `max_loaded` are in memory.

use nanoimg_engine::library::Library;
use nanoimg_engine::reference::BankCache;
use nanoimg_engine::{LoadOptions, ModelInfo, StableDiffusion};
use std::sync::{Arc, Mutex};

/// A model the server can run.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    pub name: String,
    pub info: ModelInfo,
    /// When the model's files were written, in seconds since the Unix epoch (OpenAI's
    /// `created`), read once when the catalog is made.
    pub created: u64,
    /// The tiny autoencoder requests may choose (`vae: "tiny"`): a `taesd`/`taesdxl` folder
    /// beside the model, else the one in the hub cache.
    pub tiny_vae: Option<std::path::PathBuf>,
}

/// A loaded model and the character reference banks computed with its weights. The model is
/// shared and read-only; the banks are the catalog's cache, handed to each job through its
/// [`Reference`](nanoimg_engine::reference::Reference). A LoRA-merged copy has other weights,
/// so it has its own banks.
#[derive(Clone)]
pub struct Loaded {
    pub model: Arc<StableDiffusion>,
    pub banks: Arc<BankCache>,
}

/// Prefixes of OpenAI's image model names, present and to come (`dall-e-3`, `gpt-image-1.5`,
/// `chatgpt-image-latest`): a client written for OpenAI gets this server's default model.
pub const OPENAI_MODELS: &[&str] = &["dall-e", "gpt-image", "chatgpt-image"];

/// The models on offer and the loaded ones.
pub struct ModelCatalog {
    entries: Vec<ModelEntry>,
    default: String,
    max_loaded: usize,
    /// Most recently used last.
    loaded: Mutex<Vec<(String, Loaded)>>,
    /// Held while loading, so two workers never load the same weights twice at once.
    loading: Mutex<()>,
    /// LoRA-merged copies of loaded models, most recently used last (see [`Self::derived`]).
    derived: Mutex<Vec<Derived>>,
    /// Bytes of character reference banks kept for each loaded model.
    reference_cache_bytes: usize,
    /// The LoRAs requests may name.
    loras: Library,
    /// Textual-inversion embeddings every loaded model knows by name.
    embeddings: Library,
    /// Run after each load ([`ModelCatalog::with_after_load`]).
    after_load: fn(),
}

/// A loaded model with characters' LoRAs merged in.
struct Derived {
    key: String,
    characters: Vec<String>,
    loaded: Loaded,
}

/// How many LoRA-merged models are kept: each holds copies of the weights its LoRAs change.
const MAX_DERIVED: usize = 2;

/// Why the catalog could not make or load a model.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("the default model {0:?} is not installed")]
    NoDefault(String),
    #[error("no model named {0:?}")]
    Unknown(String),
    #[error(transparent)]
    Load(#[from] nanoimg_engine::EngineError),
}

/// A cache's lock: a panic while it was held leaves the list itself intact.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What forgetting a character dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forgotten {
    pub banks: usize,
    pub models: usize,
}

impl std::fmt::Debug for ModelCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelCatalog")
            .field(
                "entries",
                &self.entries.iter().map(|e| &e.name).collect::<Vec<_>>(),
            )
            .field("default", &self.default)
            .finish()
    }
}

impl ModelCatalog {
    /// A catalog of inspected models, each under the name clients use; `default` must be one.
    pub fn new(
        models: Vec<(String, ModelInfo)>,
        default: &str,
        max_loaded: usize,
    ) -> Result<Self, CatalogError> {
        let entries: Vec<ModelEntry> = models
            .into_iter()
            .map(|(name, info)| {
                let created = std::fs::metadata(&info.path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs());
                let tiny_vae = nanoimg_engine::tiny_vae::find(&info);
                ModelEntry {
                    name,
                    info,
                    created,
                    tiny_vae,
                }
            })
            .collect();
        if !entries.iter().any(|e| e.name == default) {
            return Err(CatalogError::NoDefault(default.to_owned()));
        }
        Ok(Self {
            entries,
            default: default.to_owned(),
            max_loaded: max_loaded.max(1),
            loaded: Mutex::new(Vec::new()),
            loading: Mutex::new(()),
            derived: Mutex::new(Vec::new()),
            reference_cache_bytes: nanoimg_engine::reference::DEFAULT_CACHE_BYTES,
            loras: Library::default(),
            embeddings: Library::default(),
            after_load: || {},
        })
    }

    /// Runs `hook` after every model load (the binary gives what a load freed back to the OS:
    /// an int8 UNet frees its f32 weights).
    pub fn with_after_load(mut self, hook: fn()) -> Self {
        self.after_load = hook;
        self
    }

    /// Textual-inversion embeddings in `library` become words every model loaded from now on
    /// knows (those that fit it).
    pub fn with_embeddings(mut self, library: Library) -> Self {
        self.embeddings = library;
        self
    }

    /// Offers the LoRAs in `library` to requests (`loras`, `<lora:…>` tags).
    pub fn with_loras(mut self, library: Library) -> Self {
        self.loras = library;
        self
    }

    /// The LoRA library.
    pub fn loras(&self) -> &Library {
        &self.loras
    }

    /// Sets how many bytes of character reference banks are kept for each loaded model
    /// (computing a bank costs an extra UNet pass per step; see docs/characters.md).
    pub fn with_reference_cache(mut self, bytes: usize) -> Self {
        self.reference_cache_bytes = bytes;
        self
    }

    pub fn entries(&self) -> &[ModelEntry] {
        &self.entries
    }

    pub fn default_name(&self) -> &str {
        &self.default
    }

    /// The entry for a requested name; `None` and the OpenAI model names ([`OPENAI_MODELS`],
    /// which mean "whatever the server runs") select the default.
    pub fn pick(&self, requested: Option<&str>) -> Option<&ModelEntry> {
        let name = match requested {
            None | Some("") => self.default.as_str(),
            Some(n) if OPENAI_MODELS.iter().any(|p| n.starts_with(p)) => self.default.as_str(),
            Some(n) => n,
        };
        self.entries.iter().find(|e| e.name == name)
    }

    /// The loaded model, loading it if needed. Blocking: call from a worker thread.
    pub fn load(&self, name: &str) -> Result<Loaded, CatalogError> {
        if let Some(m) = self.touch(name) {
            return Ok(m);
        }
        let _guard = lock(&self.loading);
        if let Some(m) = self.touch(name) {
            return Ok(m);
        }
        let entry = self
            .entries
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| CatalogError::Unknown(name.to_owned()))?;
        let opts = LoadOptions {
            device: nanoimg_engine::default_device(),
            ..LoadOptions::default()
        };
        let started = std::time::Instant::now();
        let (mut model, skipped) =
            StableDiffusion::load(&entry.info.path, &opts)?.with_embedding_library(&self.embeddings)?;
        if let Some(path) = &entry.tiny_vae {
            let tiny = nanoimg_engine::tiny_vae::load(path, model.device(), model.dtype())?;
            model = model.with_tiny_vae(tiny)?;
        }
        if model.int8_is_slow() {
            tracing::warn!(model = %name, "int8 weights on a CPU without AVX-512 VNNI: slower than f32 here");
        }
        for (embedding, why) in skipped {
            tracing::warn!(model = %name, %embedding, %why, "textual-inversion embedding left out");
        }
        (self.after_load)();
        let model = self.with_banks(model);
        tracing::info!(model = %name, secs = started.elapsed().as_secs_f64(), "model loaded");
        let mut loaded = lock(&self.loaded);
        loaded.push((name.to_owned(), model.clone()));
        while loaded.len() > self.max_loaded {
            loaded.remove(0);
        }
        Ok(model)
    }

    /// A newly made model with an empty bank cache of the configured size.
    fn with_banks(&self, model: StableDiffusion) -> Loaded {
        Loaded {
            model: Arc::new(model),
            banks: Arc::new(BankCache::new(self.reference_cache_bytes)),
        }
    }

    /// A model derived from a loaded one (characters' LoRAs merged in), made by `make` on first
    /// use and kept under `key` (which must name the base model, the LoRAs and their
    /// strengths) among the [`MAX_DERIVED`] most recent. Blocking: call from a worker thread.
    pub fn derived<E>(
        &self,
        key: &str,
        characters: &[String],
        make: impl FnOnce() -> Result<StableDiffusion, E>,
    ) -> Result<Loaded, E> {
        {
            let mut d = lock(&self.derived);
            if let Some(i) = d.iter().position(|x| x.key == key) {
                let entry = d.remove(i);
                let m = entry.loaded.clone();
                d.push(entry);
                return Ok(m);
            }
        }
        let model = self.with_banks(make()?);
        let mut d = lock(&self.derived);
        d.push(Derived {
            key: key.to_owned(),
            characters: characters.to_vec(),
            loaded: model.clone(),
        });
        while d.len() > MAX_DERIVED {
            d.remove(0);
        }
        Ok(model)
    }

    /// Drops everything computed from a deleted character: its reference banks in every loaded
    /// model, and the models its LoRA was merged into.
    pub fn forget_character(&self, id: &str) -> Forgotten {
        let mut out = Forgotten::default();
        {
            let mut d = lock(&self.derived);
            for x in d.iter() {
                out.banks += x.loaded.banks.forget(id);
            }
            let before = d.len();
            d.retain(|x| !x.characters.iter().any(|c| c == id));
            out.models = before - d.len();
        }
        for (_, m) in lock(&self.loaded).iter() {
            out.banks += m.banks.forget(id);
        }
        out
    }

    fn touch(&self, name: &str) -> Option<Loaded> {
        let mut loaded = lock(&self.loaded);
        let i = loaded.iter().position(|(n, _)| n == name)?;
        let entry = loaded.remove(i);
        let m = entry.1.clone();
        loaded.push(entry);
        Some(m)
    }
}
