//! Libraries of named files: `.safetensors` files in a few folders, offered by name (the
//! file's name without `.safetensors`), as A1111's `models/Lora` and `embeddings` work — the
//! LoRA library and the textual-inversion embeddings. A LoRA's trigger words come
//! with it — A1111's `<name>.json` (`"activation text"`), a model site's `<name>.civitai.info`
//! (`"trainedWords"`), or the file's own `modelspec.trigger_phrase` — because moderation must
//! see them: a LoRA may be trained to draw something its trigger words say.

use crate::checkpoint::Header;
use crate::error::{EngineError, Result};
use crate::lora::Lora;
use std::path::{Path, PathBuf};

/// The folders files are offered from, searched in order.
#[derive(Debug, Clone, Default)]
pub struct Library {
    dirs: Vec<PathBuf>,
}

/// One file of a library.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    /// Seconds since the epoch of the file's last change (part of a merged model's cache key,
    /// so a replaced file is merged anew).
    pub modified: u64,
}

/// A plain LoRA name: no path, nothing hidden.
fn plain(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\', '\0']) && name.len() <= 255
}

impl Library {
    /// The library in `dirs` (missing folders are simply empty).
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        Self { dirs }
    }

    /// Its folders.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Every file, by name (the first folder's wins when two have the same name).
    pub fn list(&self) -> Vec<Entry> {
        let mut out: Vec<Entry> = Vec::new();
        for dir in &self.dirs {
            let Ok(rd) = std::fs::read_dir(dir) else { continue };
            let mut found: Vec<Entry> = rd
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_str()?.strip_suffix(".safetensors")?.to_owned();
                    (plain(&name) && e.path().is_file()).then(|| entry(name, e.path()))
                })
                .collect();
            found.retain(|f| !out.iter().any(|o| o.name == f.name));
            out.extend(found);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The file named `name`, or an error listing the ones there are.
    pub fn find(&self, name: &str) -> Result<Entry> {
        if plain(name) {
            for dir in &self.dirs {
                let p = dir.join(format!("{name}.safetensors"));
                if p.is_file() {
                    return Ok(entry(name.to_owned(), p));
                }
            }
        }
        let names: Vec<String> = self.list().into_iter().map(|e| e.name).collect();
        Err(EngineError::LoraNotFound {
            name: name.to_owned(),
            available: if names.is_empty() {
                format!(
                    "none (the library is {})",
                    if self.dirs.is_empty() {
                        "not set up".to_owned()
                    } else {
                        crate::folder::display_paths(&self.dirs)
                    }
                )
            } else {
                names.join(", ")
            },
        })
    }

    /// `name_or_path`: a file given by path (the command line), else a library name.
    pub fn resolve(&self, name_or_path: &str) -> Result<Entry> {
        let p = Path::new(name_or_path);
        if p.is_file() {
            let name = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| name_or_path.to_owned());
            return Ok(entry(name, p.to_owned()));
        }
        self.find(name_or_path)
    }
}

fn entry(name: String, path: PathBuf) -> Entry {
    let meta = std::fs::metadata(&path).ok();
    Entry {
        name,
        size: meta.as_ref().map_or(0, |m| m.len()),
        modified: meta
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs()),
        path,
    }
}

/// The trigger words of the LoRA at `path`, beside the file or in it.
fn trigger_words(path: &Path) -> Vec<String> {
    let split = |s: &str| -> Vec<String> {
        s.split(',')
            .map(|w| w.trim().to_owned())
            .filter(|w| !w.is_empty())
            .collect()
    };
    let read_json = |p: PathBuf| -> Option<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
    };
    let mut words = Vec::new();
    if let Some(v) = read_json(path.with_extension("json")) {
        if let Some(t) = v["activation text"].as_str() {
            words.extend(split(t));
        }
    }
    if let Some(v) = read_json(path.with_extension("civitai.info")) {
        for w in v["trainedWords"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w.as_str())
        {
            words.extend(split(w));
        }
    }
    if let Ok(h) = Header::read(path) {
        if let Some(t) = h.metadata.get("modelspec.trigger_phrase") {
            words.extend(split(t));
        }
    }
    words.dedup();
    words
}

impl Entry {
    /// Words the LoRA was trained to answer to (read from the files each time: only admission
    /// and listings need them, not a job's run).
    pub fn trigger_words(&self) -> Vec<String> {
        trigger_words(&self.path)
    }

    /// Reads and parses the file as a LoRA.
    pub fn load_lora(&self) -> Result<Lora> {
        let bytes = std::fs::read(&self.path).map_err(|source| EngineError::Io {
            path: self.path.clone(),
            source,
        })?;
        Lora::from_safetensors(&bytes).map_err(|e| EngineError::Checkpoint {
            path: self.path.clone(),
            message: format!("not a LoRA NanoImg reads: {e}"),
        })
    }

    /// Names this file as it is now, for caching what is merged from it.
    pub fn cache_key(&self) -> String {
        format!("{}#{}#{}", self.name, self.size, self.modified)
    }
}
