//! `pull`: a model's files from the hub into the cache. The listing is read at the revision
//! asked for and every file is then fetched at the commit it named, so a branch that moves
//! mid-pull cannot mix two versions. Each file is checked against the size and hash the listing
//! gives (SHA-256 for LFS files, the git blob hash for small ones) before it becomes a blob; a
//! broken-off download stays as `blobs/<hash>.incomplete` and the next pull asks only for the
//! rest. The snapshot's links are made once every file is there, and the ref last, so the model
//! is found offline only when all of it is.

use crate::cache::HubCache;
use crate::client::{http_error, Hub};
use crate::repo::{is_commit, HubRef, RepoId};
use crate::select::{select, Digest, Selection, Sibling, Skip};
use crate::{HubError, Result};
use futures_util::StreamExt;
use sha1::Digest as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// What a pull reports as it goes (drawn as progress bars by the CLI).
pub trait Progress: Sync {
    /// A download of `path` (`size` bytes) starts, `have` of them already on disk.
    fn start(&self, _path: &str, _size: u64, _have: u64) {}
    /// `bytes` more arrived.
    fn advance(&self, _bytes: u64) {}
    /// `path` is in the cache, checked.
    fn done(&self, _path: &str, _how: Fetched) {}
}

/// No reports.
impl Progress for () {}

/// How a file got into the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// Downloaded whole.
    Downloaded,
    /// A broken-off download, finished from this byte on.
    Resumed { from: u64 },
    /// Already there (checked again).
    Cached,
}

/// The outcome of a pull.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The commit pulled.
    pub commit: String,
    /// Its snapshot folder: the model.
    pub snapshot: PathBuf,
    /// The files pulled, with how each arrived.
    pub files: Vec<(String, u64, Fetched)>,
    /// The files left on the hub, with why.
    pub skipped: Vec<(String, Skip)>,
}

/// A path from the hub's listing, taken only if it stays inside the snapshot.
fn safe_path(p: &str) -> bool {
    !p.is_empty()
        && p.len() < 1024
        && !p.starts_with('/')
        && !p.contains(['\\', '\0'])
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Pulls what `sel` asks for of `r` into `cache`.
pub async fn pull(
    hub: &Hub,
    cache: &HubCache,
    r: &HubRef,
    sel: &Selection,
    progress: &dyn Progress,
) -> Result<Pulled> {
    let repo = &r.repo;
    let listing_error = |message: String| HubError::Listing {
        repo: repo.to_string(),
        message,
    };
    let info = hub.info(r).await?;
    let commit = info.sha.to_ascii_lowercase();
    if !is_commit(&commit) {
        return Err(listing_error(format!("{:?} is not a commit hash", info.sha)));
    }
    if r.is_commit() && r.revision() != commit {
        return Err(listing_error(format!(
            "asked for commit {}, listed {commit}",
            r.revision()
        )));
    }
    let checked = |s: &Sibling| -> Result<(u64, Digest)> {
        if !safe_path(&s.rfilename) {
            return Err(listing_error(format!(
                "{:?} is not a path inside the repository",
                s.rfilename
            )));
        }
        s.expected().ok_or_else(|| {
            listing_error(format!(
                "{} has no size and hash to check it against",
                s.rfilename
            ))
        })
    };
    let mut files = Vec::new();
    let index_entry = info.siblings.iter().find(|s| s.rfilename == "model_index.json");
    let index = match index_entry {
        Some(s) if sel.files.is_empty() => {
            let expected = checked(s)?;
            let how = fetch(hub, cache, repo, &commit, s, &expected, progress).await?;
            files.push((s.rfilename.clone(), expected.0, how));
            let path = cache.blob(repo, expected.1.hex());
            let text = std::fs::read_to_string(&path).map_err(HubError::io(&path))?;
            Some(
                serde_json::from_str::<serde_json::Value>(&text)
                    .map_err(|e| listing_error(format!("model_index.json does not parse: {e}")))?,
            )
        }
        _ => None,
    };
    let chosen = select(&repo.to_string(), &info.siblings, index.as_ref(), sel)?;
    let mut links = Vec::new();
    for s in &chosen.files {
        let expected = checked(s)?;
        if s.rfilename != "model_index.json" || index.is_none() {
            let how = fetch(hub, cache, repo, &commit, s, &expected, progress).await?;
            files.push((s.rfilename.clone(), expected.0, how));
        }
        links.push((s.rfilename.as_str(), expected.1));
    }
    // Publish: every link, then the ref.
    for (path, digest) in &links {
        cache.link(repo, &commit, path, digest.hex())?;
    }
    if !r.is_commit() {
        cache.set_ref(repo, r.revision(), &commit)?;
    }
    Ok(Pulled {
        snapshot: cache.repo_dir(repo).join("snapshots").join(&commit),
        commit,
        files,
        skipped: chosen
            .skipped
            .iter()
            .map(|(s, k)| (s.rfilename.clone(), *k))
            .collect(),
    })
}

/// The hash of a file as it streams in.
enum Hasher {
    Sha256(sha2::Sha256),
    GitSha1(sha1::Sha1),
}

impl Hasher {
    fn new(d: &Digest, size: u64) -> Self {
        match d {
            Digest::Sha256(_) => Hasher::Sha256(sha2::Sha256::new()),
            Digest::GitSha1(_) => {
                let mut h = sha1::Sha1::new();
                h.update(format!("blob {size}\0"));
                Hasher::GitSha1(h)
            }
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::GitSha1(h) => h.update(bytes),
        }
    }

    fn hex(self) -> String {
        let bytes: Vec<u8> = match self {
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::GitSha1(h) => h.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Feeds a file's first `len` bytes to `hasher`.
fn hash_prefix(path: &Path, len: u64, hasher: &mut Hasher) -> Result<()> {
    let mut f = std::fs::File::open(path).map_err(HubError::io(path))?.take(len);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(HubError::io(path))?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
    }
}

/// Whether the file at `path` is the one listed.
fn matches(path: &Path, size: u64, digest: &Digest) -> Result<bool> {
    let len = std::fs::metadata(path).map_err(HubError::io(path))?.len();
    if len != size {
        return Ok(false);
    }
    let mut h = Hasher::new(digest, size);
    hash_prefix(path, len, &mut h)?;
    Ok(h.hex() == digest.hex())
}

/// Makes sure the blob for `s` is in the cache and is the file listed.
async fn fetch(
    hub: &Hub,
    cache: &HubCache,
    repo: &RepoId,
    commit: &str,
    s: &Sibling,
    (size, digest): &(u64, Digest),
    progress: &dyn Progress,
) -> Result<Fetched> {
    let (size, path) = (*size, s.rfilename.as_str());
    let blob = cache.blob(repo, digest.hex());
    if blob.is_file() {
        if matches(&blob, size, digest)? {
            progress.done(path, Fetched::Cached);
            return Ok(Fetched::Cached);
        }
        // Changed since it was checked: fetch it again.
        std::fs::remove_file(&blob).map_err(HubError::io(&blob))?;
    }
    let part = cache.incomplete(repo, digest.hex());
    let dir = part.parent().expect("a blob has a folder");
    std::fs::create_dir_all(dir).map_err(HubError::io(dir))?;
    let mut have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    if have > size {
        have = 0;
    }
    let resp = hub.file(repo, commit, path, have).await?;
    let url = resp.url().clone();
    let mut hasher = Hasher::new(digest, size);
    // 206: the rest, after what is on disk; 200: the whole file again.
    let resumed = have > 0 && resp.status() == reqwest::StatusCode::PARTIAL_CONTENT && {
        let range = resp
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        range.starts_with(&format!("bytes {have}-"))
    };
    if resumed {
        hash_prefix(&part, have, &mut hasher)?;
    } else {
        have = 0;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(resumed)
        .truncate(!resumed)
        .open(&part)
        .map_err(HubError::io(&part))?;
    let from = have;
    progress.start(path, size, have);
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        // A broken-off transfer keeps what arrived, for the next pull to resume.
        let chunk = chunk.map_err(|e| http_error(&url, e))?;
        have += chunk.len() as u64;
        if have > size {
            drop(file);
            let _ = std::fs::remove_file(&part);
            return Err(HubError::Mismatch {
                file: path.to_owned(),
                expected: format!("{size} bytes"),
                actual: "more".into(),
            });
        }
        file.write_all(&chunk).map_err(HubError::io(&part))?;
        hasher.update(&chunk);
        progress.advance(chunk.len() as u64);
    }
    file.sync_all().map_err(HubError::io(&part))?;
    drop(file);
    if have < size {
        return Err(HubError::Http {
            url: url.to_string(),
            message: format!("the transfer ended after {have} of {size} bytes; pull again to resume"),
        });
    }
    let actual = hasher.hex();
    if actual != digest.hex() {
        let _ = std::fs::remove_file(&part);
        return Err(HubError::Mismatch {
            file: path.to_owned(),
            expected: digest.hex().to_owned(),
            actual,
        });
    }
    std::fs::rename(&part, &blob).map_err(HubError::io(&blob))?;
    let how = if from > 0 {
        Fetched::Resumed { from }
    } else {
        Fetched::Downloaded
    };
    progress.done(path, how);
    Ok(how)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_paths_must_stay_inside() {
        for ok in ["model_index.json", "unet/config.json", "a/b/c.safetensors"] {
            assert!(safe_path(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a\\b",
            "./a",
            "a/.",
        ] {
            assert!(!safe_path(bad), "{bad}");
        }
    }

    #[test]
    fn git_blob_hashes_match_git() {
        // `printf 'hello\n' | git hash-object --stdin`
        let d = Digest::GitSha1("ce013625030ba8dba906f756967f9e9ca394464a".into());
        let mut h = Hasher::new(&d, 6);
        h.update(b"hello\n");
        assert_eq!(h.hex(), d.hex());
    }
}
