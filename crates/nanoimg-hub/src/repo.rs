//! Hub ids: `owner/name` and a revision, checked by the hub's own rules before either becomes
//! part of a path in the cache or of a URL.

use crate::{HubError, Result};
use std::fmt;
use std::str::FromStr;

/// A model repository on the hub: `owner/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoId {
    owner: String,
    name: String,
}

impl RepoId {
    /// `owner`.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// `name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The repository's folder in the hub cache: `models--owner--name`.
    pub fn cache_folder(&self) -> String {
        format!("models--{}--{}", self.owner, self.name)
    }

    /// The repository a hub cache folder (`models--owner--name`) holds, if it is one.
    pub fn from_cache_folder(folder: &str) -> Option<Self> {
        let (owner, name) = folder.strip_prefix("models--")?.split_once("--")?;
        format!("{owner}/{name}").parse::<HubRef>().ok().map(|r| r.repo)
    }
}

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// A repository and the revision asked for (a branch, a tag or a commit; `main` when none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRef {
    pub repo: RepoId,
    revision: Option<String>,
}

impl HubRef {
    /// The revision asked for, `main` by default.
    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }

    /// Whether the revision is a full commit hash, which needs no ref to find.
    pub fn is_commit(&self) -> bool {
        is_commit(self.revision())
    }

    /// Whether `s` looks like a hub id rather than a name or a path: one `/`, both sides valid.
    pub fn looks_like(s: &str) -> bool {
        s.parse::<HubRef>().is_ok()
    }
}

impl From<RepoId> for HubRef {
    /// The repository at `main`.
    fn from(repo: RepoId) -> Self {
        Self { repo, revision: None }
    }
}

impl fmt::Display for HubRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.revision {
            Some(r) => write!(f, "{}@{r}", self.repo),
            None => write!(f, "{}", self.repo),
        }
    }
}

/// A full commit hash (40 lowercase hex digits).
pub fn is_commit(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The hub's rule for owner and repository names: letters, digits, `-`, `_`, `.`; no `--` or
/// `..`; not starting or ending with `-` or `.`; at most 96 characters.
fn check_part(part: &str, what: &str) -> Result<(), String> {
    if part.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if part.len() > 96 {
        return Err(format!("the {what} is longer than 96 characters"));
    }
    if let Some(c) = part
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!("the {what} holds {c:?}"));
    }
    if part.contains("--") || part.contains("..") {
        return Err(format!("the {what} holds \"--\" or \"..\""));
    }
    if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
        return Err(format!("the {what} starts or ends with '-' or '.'"));
    }
    Ok(())
}

/// A revision: a branch or tag name (which may hold `/`, as `refs/pr/1` does) or a commit. It
/// becomes a file under `refs/`, so no empty, `.` or `..` component.
fn check_revision(rev: &str) -> Result<(), String> {
    if rev.is_empty() || rev.len() > 255 {
        return Err("the revision is empty or too long".into());
    }
    if let Some(c) = rev
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')))
    {
        return Err(format!("the revision holds {c:?}"));
    }
    if rev.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err("the revision has an empty, '.' or '..' part".into());
    }
    Ok(())
}

impl FromStr for HubRef {
    type Err = HubError;

    fn from_str(input: &str) -> Result<Self> {
        let bad = |reason: String| HubError::BadRef {
            input: input.to_owned(),
            reason,
        };
        let (id, revision) = match input.split_once('@') {
            Some((id, rev)) => {
                check_revision(rev).map_err(bad)?;
                (id, Some(rev.to_owned()))
            }
            None => (input, None),
        };
        let Some((owner, name)) = id.split_once('/') else {
            return Err(bad("no '/' between owner and name".into()));
        };
        check_part(owner, "owner").map_err(bad)?;
        check_part(name, "name").map_err(bad)?;
        Ok(Self {
            repo: RepoId {
                owner: owner.to_owned(),
                name: name.to_owned(),
            },
            revision,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_and_bad_ones_say_why() {
        let r: HubRef = "stabilityai/sd-turbo".parse().unwrap();
        assert_eq!(r.repo.to_string(), "stabilityai/sd-turbo");
        assert_eq!(r.revision(), "main");
        assert_eq!(r.repo.cache_folder(), "models--stabilityai--sd-turbo");
        assert_eq!(
            RepoId::from_cache_folder(&r.repo.cache_folder()),
            Some(r.repo.clone())
        );
        assert_eq!(RepoId::from_cache_folder("datasets--a--b"), None);
        let r: HubRef = "a/b@refs/pr/1".parse().unwrap();
        assert_eq!(r.revision(), "refs/pr/1");
        assert!(!r.is_commit());
        let c = "0123456789abcdef0123456789abcdef01234567";
        assert!(format!("a/b@{c}").parse::<HubRef>().unwrap().is_commit());
        for bad in [
            "plain",
            "a/b/c",
            "../x",
            "a/..",
            "a/.b",
            "a/b@",
            "a/b@../../etc",
            "a/b@x//y",
            "/b",
            "a/",
            "a b/c",
            "a/b--c",
            "a/b@x\\y",
            "a/-b",
        ] {
            let e = bad.parse::<HubRef>().unwrap_err();
            assert!(matches!(e, HubError::BadRef { .. }), "{bad}: {e}");
        }
        assert!(!HubRef::looks_like("models/x.safetensors/extra"));
        assert!(HubRef::looks_like("org/model.v1"));
    }
}
