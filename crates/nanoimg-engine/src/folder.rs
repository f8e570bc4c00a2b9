//! The diffusers folder layout: `model_index.json` naming the components, one subfolder per
//! component with its `config.json` and `.safetensors` weights (single, variant or sharded).

use crate::error::{EngineError, Result};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// A model folder, opened but not loaded.
#[derive(Debug, Clone)]
pub struct ModelFolder {
    path: PathBuf,
    index: serde_json::Value,
}

impl ModelFolder {
    /// Opens `path`, which must hold a readable `model_index.json`.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.is_dir() {
            return Err(EngineError::IncompleteModel {
                path: path.to_owned(),
                message: "not a directory".into(),
            });
        }
        let index_path = path.join("model_index.json");
        if !index_path.is_file() {
            return Err(EngineError::IncompleteModel {
                path: path.to_owned(),
                message: "missing model_index.json (is this a diffusers-layout folder?)".into(),
            });
        }
        let index = read_json(&index_path)?;
        if !index.is_object() {
            return Err(EngineError::IncompleteModel {
                path: index_path,
                message: "model_index.json is not a JSON object".into(),
            });
        }
        Ok(Self {
            path: path.to_owned(),
            index,
        })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed `model_index.json`.
    pub fn index(&self) -> &serde_json::Value {
        &self.index
    }

    /// Whether `model_index.json` lists `component` with a library and class (not `[null, null]`).
    pub fn has(&self, component: &str) -> bool {
        self.index
            .get(component)
            .and_then(|v| v.as_array())
            .is_some_and(|a| a.len() == 2 && a.iter().all(|x| x.is_string()))
    }

    /// The class name `model_index.json` gives for `component`.
    pub fn class_of(&self, component: &str) -> Option<&str> {
        self.index.get(component)?.as_array()?.get(1)?.as_str()
    }

    /// The component's subfolder, which must exist.
    pub fn component_dir(&self, component: &str) -> Result<PathBuf> {
        let dir = self.path.join(component);
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(EngineError::IncompleteModel {
                path: self.path.clone(),
                message: format!("missing the {component}/ folder"),
            })
        }
    }

    /// Parses the component's `config.json` (or `scheduler_config.json`).
    pub fn config<T: DeserializeOwned>(&self, component: &str) -> Result<T> {
        let dir = self.component_dir(component)?;
        let path = ["config.json", "scheduler_config.json"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
            .ok_or_else(|| EngineError::IncompleteModel {
                path: dir.clone(),
                message: "missing config.json".into(),
            })?;
        serde_json::from_value(read_json(&path)?).map_err(|source| EngineError::Json { path, source })
    }

    /// The `.safetensors` files holding the component's weights. A sharded checkpoint's
    /// `*.safetensors.index.json` names its shards; otherwise the plain file is preferred over
    /// precision variants (`model.fp16.safetensors`).
    pub fn weights(&self, component: &str) -> Result<Vec<PathBuf>> {
        safetensors_in(&self.component_dir(component)?)
    }

    /// Total size of the files under the folder, in bytes.
    pub fn size_bytes(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            std::fs::read_dir(p)
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .map(|e| match e.file_type() {
                            Ok(t) if t.is_dir() => walk(&e.path()),
                            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
                            _ => 0,
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        walk(&self.path)
    }
}

/// Reads and parses a JSON file, naming it in errors.
pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|source| EngineError::Io {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| EngineError::Json {
        path: path.to_owned(),
        source,
    })
}

/// The `.safetensors` files of a folder in the transformers/diffusers layout: the shards a
/// `*.safetensors.index.json` names, or else the plain file, preferred over precision variants
/// (`model.fp16.safetensors`).
pub(crate) fn safetensors_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|source| EngineError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    if let Some(index) = names.iter().find(|n| n.ends_with(".safetensors.index.json")) {
        let index_path = dir.join(index);
        let parsed = read_json(&index_path)?;
        let map = parsed
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| EngineError::IncompleteModel {
                path: index_path.clone(),
                message: "no weight_map".into(),
            })?;
        let mut shards: Vec<String> = map
            .values()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        shards.sort();
        shards.dedup();
        return shards
            .into_iter()
            .map(|s| {
                // Shard names come from the file; refuse anything that leaves the folder.
                if s.contains('/') || s.contains('\\') || s.starts_with('.') {
                    return Err(EngineError::IncompleteModel {
                        path: index_path.clone(),
                        message: format!("shard name {s:?} is not a plain file name"),
                    });
                }
                let p = dir.join(&s);
                if p.is_file() {
                    Ok(p)
                } else {
                    Err(EngineError::IncompleteModel {
                        path: dir.to_owned(),
                        message: format!("missing shard {s}"),
                    })
                }
            })
            .collect();
    }
    let files: Vec<&String> = names.iter().filter(|n| n.ends_with(".safetensors")).collect();
    let plain: Vec<&String> = files
        .iter()
        .copied()
        .filter(|n| n.trim_end_matches(".safetensors").matches('.').count() == 0)
        .collect();
    let chosen = if plain.is_empty() { files } else { plain };
    match chosen.first() {
        Some(first) => Ok(vec![dir.join(first)]),
        None => Err(EngineError::IncompleteModel {
            path: dir.to_owned(),
            message:
                "no .safetensors weights (only safetensors are loaded: .bin/.ckpt pickles are refused; convert it to safetensors)"
                    .into(),
        }),
    }
}

/// Folders as a user reads them in a message: `a, b, c`.
pub fn display_paths(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
