//! The hub cache, in the layout every hub client shares:
//!
//! ```text
//! <root>/models--owner--name/
//!   blobs/<etag>                     each file once, named by its hash (SHA-256 for LFS files,
//!                                    the git blob SHA-1 for small ones)
//!   blobs/<etag>.incomplete          a download in progress, resumed from its length
//!   snapshots/<commit>/<path>        links to ../../blobs/<etag>, one tree per commit
//!   refs/<revision>                  the commit a branch or tag pointed to when last pulled
//! ```

use crate::repo::{is_commit, HubRef, RepoId};
use crate::{HubError, Result};
use std::path::{Path, PathBuf};

/// The hub cache at one root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubCache {
    root: PathBuf,
}

/// The cache the hub's clients use: `HF_HUB_CACHE`, else `HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`.
pub fn root_from_env() -> Option<PathBuf> {
    let var = |v: &str| std::env::var_os(v).filter(|p| !p.is_empty()).map(PathBuf::from);
    var("HF_HUB_CACHE")
        .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| var("HOME").map(|h| h.join(".cache/huggingface/hub")))
}

/// The commit `refs/<revision>` of a repository folder names, if it is a well-formed hash.
pub fn read_ref(entry: &Path, revision: &str) -> Option<String> {
    let rev = std::fs::read_to_string(entry.join("refs").join(revision)).ok()?;
    let rev = rev.trim();
    // Anything but a hash could name a path outside the entry.
    is_commit(rev).then(|| rev.to_owned())
}

/// The repository whose snapshot `path` is (`…/models--owner--name/snapshots/<commit>`).
pub fn repo_of_snapshot(path: &Path) -> Option<RepoId> {
    let commit = path.file_name()?.to_str()?;
    let snapshots = path.parent()?;
    let folder = snapshots.parent()?.file_name()?.to_str()?;
    if !is_commit(commit) || snapshots.file_name()? != "snapshots" {
        return None;
    }
    RepoId::from_cache_folder(folder)
}

impl HubCache {
    /// The cache at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The cache the environment names (see [`root_from_env`]).
    pub fn from_env() -> Option<Self> {
        root_from_env().map(Self::new)
    }

    /// Its root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A repository's folder.
    pub fn repo_dir(&self, repo: &RepoId) -> PathBuf {
        self.root.join(repo.cache_folder())
    }

    /// The commit a reference stands for in the cache: the revision itself when it is a commit
    /// with a snapshot, else what `refs/<revision>` says.
    pub fn commit(&self, r: &HubRef) -> Option<String> {
        let dir = self.repo_dir(&r.repo);
        if r.is_commit() {
            let rev = r.revision().to_owned();
            return dir.join("snapshots").join(&rev).is_dir().then_some(rev);
        }
        read_ref(&dir, r.revision())
    }

    /// The snapshot folder a reference stands for, if it was pulled: found without the network.
    pub fn snapshot(&self, r: &HubRef) -> Option<PathBuf> {
        let commit = self.commit(r)?;
        let p = self.repo_dir(&r.repo).join("snapshots").join(commit);
        p.is_dir().then_some(p)
    }

    /// Where a finished blob lives.
    pub fn blob(&self, repo: &RepoId, etag: &str) -> PathBuf {
        self.repo_dir(repo).join("blobs").join(etag)
    }

    /// Where a blob is written while it downloads.
    pub fn incomplete(&self, repo: &RepoId, etag: &str) -> PathBuf {
        self.repo_dir(repo)
            .join("blobs")
            .join(format!("{etag}.incomplete"))
    }

    /// Puts `path` (relative, checked by the caller) into the snapshot of `commit` as a link to
    /// its blob, replacing what was there in one rename.
    pub fn link(&self, repo: &RepoId, commit: &str, path: &str, etag: &str) -> Result<PathBuf> {
        let dest = self.repo_dir(repo).join("snapshots").join(commit).join(path);
        let parent = dest.parent().expect("a snapshot path has a parent");
        std::fs::create_dir_all(parent).map_err(HubError::io(parent))?;
        let tmp = parent.join(format!(
            ".{}.{}.tmp",
            dest.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        let _ = std::fs::remove_file(&tmp);
        // snapshots/<commit>/<path> is 2 + (components of path - 1) folders below the repo's.
        let up = "../".repeat(2 + path.matches('/').count());
        let target = format!("{up}blobs/{etag}");
        #[cfg(unix)]
        std::os::unix::fs::symlink(&target, &tmp).map_err(HubError::io(&tmp))?;
        #[cfg(not(unix))]
        std::fs::copy(self.blob(repo, etag), &tmp).map_err(HubError::io(&tmp))?;
        std::fs::rename(&tmp, &dest).map_err(HubError::io(&dest))?;
        Ok(dest)
    }

    /// Records that `revision` stands for `commit` (written whole, then renamed).
    pub fn set_ref(&self, repo: &RepoId, revision: &str, commit: &str) -> Result<()> {
        let dest = self.repo_dir(repo).join("refs").join(revision);
        let parent = dest.parent().expect("a ref has a parent");
        std::fs::create_dir_all(parent).map_err(HubError::io(parent))?;
        let tmp = parent.join(format!(".ref.{}.tmp", std::process::id()));
        std::fs::write(&tmp, commit).map_err(HubError::io(&tmp))?;
        std::fs::rename(&tmp, &dest).map_err(HubError::io(&dest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_resolves_through_refs_or_as_a_commit() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = HubCache::new(tmp.path());
        let r: HubRef = "org/model".parse().unwrap();
        assert_eq!(cache.snapshot(&r), None);
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let blobs = cache.repo_dir(&r.repo).join("blobs");
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::write(blobs.join("abc"), "{}").unwrap();
        let linked = cache.link(&r.repo, commit, "unet/config.json", "abc").unwrap();
        assert_eq!(std::fs::read_to_string(&linked).unwrap(), "{}");
        // Not published until the ref names it.
        assert_eq!(cache.snapshot(&r), None);
        cache.set_ref(&r.repo, "main", commit).unwrap();
        let snap = cache.snapshot(&r).unwrap();
        assert_eq!(snap, cache.repo_dir(&r.repo).join("snapshots").join(commit));
        let pinned: HubRef = format!("org/model@{commit}").parse().unwrap();
        assert_eq!(cache.snapshot(&pinned), Some(snap.clone()));
        assert_eq!(repo_of_snapshot(&snap), Some(r.repo.clone()));
        assert_eq!(repo_of_snapshot(&cache.repo_dir(&r.repo)), None);
        // A ref that is not a hash is ignored, not followed.
        std::fs::write(cache.repo_dir(&r.repo).join("refs/main"), "../../../etc").unwrap();
        assert_eq!(cache.snapshot(&r), None);
    }
}
