//! API keys: `nimg_<32 base62 characters>_<6 base62 characters of CRC-32>`.
//!
//! The random part carries 190 bits. The checksum lets secret scanners (and our own parser)
//! recognise a key without a database: a typo or a truncated key fails before any lookup. Only
//! the SHA-256 of the whole key is stored; the key itself is shown once, when created.

use crate::error::{Result, StoreError};
use crate::ids::{random_bytes, BASE62};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

const PREFIX: &str = "nimg_";
const RANDOM_LEN: usize = 32;
const CHECK_LEN: usize = 6;
/// Length of a well-formed key.
pub const KEY_LEN: usize = PREFIX.len() + RANDOM_LEN + 1 + CHECK_LEN;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Scope {
    /// `POST /v1/images/generations`, `POST /v1/jobs`.
    ImagesGenerate,
    /// `POST /v1/images/edits`, `/v1/images/variations`.
    ImagesEdit,
    /// Read assets and jobs.
    AssetsRead,
    /// Upload and delete assets.
    AssetsWrite,
    /// Manage characters.
    Characters,
    /// Manage this tenant's own keys (never with more scopes than the caller has) and erase
    /// its data. Not a default: a key handed to an app cannot mint keys or erase the account.
    Account,
    /// Manage tenants and keys (only on the operator tenant).
    Admin,
}

impl Scope {
    /// Every scope, in a stable order.
    pub const ALL: [Scope; 7] = [
        Scope::ImagesGenerate,
        Scope::ImagesEdit,
        Scope::AssetsRead,
        Scope::AssetsWrite,
        Scope::Characters,
        Scope::Account,
        Scope::Admin,
    ];

    /// The wire name, such as `images:generate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ImagesGenerate => "images:generate",
            Scope::ImagesEdit => "images:edit",
            Scope::AssetsRead => "assets:read",
            Scope::AssetsWrite => "assets:write",
            Scope::Characters => "characters",
            Scope::Account => "account",
            Scope::Admin => "admin",
        }
    }

    /// The scopes a new key gets when none are named: everything but `account` and `admin`.
    pub fn defaults() -> Vec<Scope> {
        Scope::ALL
            .into_iter()
            .filter(|s| !matches!(s, Scope::Account | Scope::Admin))
            .collect()
    }

    /// Parses a comma- or space-separated list; an empty list is an error.
    pub fn parse_list(s: &str) -> Result<Vec<Scope>> {
        let mut out: Vec<Scope> = s
            .split([',', ' '])
            .filter(|p| !p.is_empty())
            .map(str::parse)
            .collect::<Result<_>>()?;
        out.sort();
        out.dedup();
        if out.is_empty() {
            return Err(StoreError::Invalid("a key needs at least one scope".into()));
        }
        Ok(out)
    }

    /// The space-separated form stored in the database.
    pub fn join(scopes: &[Scope]) -> String {
        scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s).ok_or_else(|| {
            StoreError::Invalid(format!(
                "unknown scope {s:?}; scopes are {}",
                Scope::join(&Scope::ALL).replace(' ', ", ")
            ))
        })
    }
}

impl TryFrom<String> for Scope {
    type Error = StoreError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Scope> for String {
    fn from(s: Scope) -> String {
        s.as_str().to_owned()
    }
}

/// A freshly made key. Its text is available once, to show to its owner; [`Debug`] hides it.
pub struct SecretKey(String);

impl SecretKey {
    /// Makes a new random key.
    pub fn generate() -> Self {
        // 32 characters from 62 by rejection sampling, so every character is uniform.
        let mut random = String::with_capacity(RANDOM_LEN);
        while random.len() < RANDOM_LEN {
            for b in random_bytes::<48>() {
                if (b as usize) < 62 * 4 && random.len() < RANDOM_LEN {
                    random.push(BASE62[(b as usize) % 62] as char);
                }
            }
        }
        let check = checksum(&random);
        SecretKey(format!("{PREFIX}{random}_{check}"))
    }

    /// The key's text: print it once, never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({}…)", display_prefix(&self.0))
    }
}

fn checksum(random: &str) -> String {
    let mut v = crc32fast::hash(random.as_bytes()) as u64;
    let mut out = [b'0'; CHECK_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(v % 62) as usize];
        v /= 62;
    }
    String::from_utf8(out.to_vec()).expect("base62 is ASCII")
}

/// Whether `s` is shaped like a NanoImg key with a correct checksum. Cheap, no database.
pub fn well_formed(s: &str) -> bool {
    if s.len() != KEY_LEN || !s.starts_with(PREFIX) {
        return false;
    }
    let body = &s[PREFIX.len()..];
    let (random, check) = body.split_at(RANDOM_LEN);
    let Some(check) = check.strip_prefix('_') else {
        return false;
    };
    random.bytes().all(|b| b.is_ascii_alphanumeric()) && checksum(random) == check
}

/// The SHA-256 of a key, hex, as stored.
pub fn fingerprint(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The part of a key shown in listings: `nimg_` and the first 6 random characters.
pub fn display_prefix(key: &str) -> &str {
    &key[..key.len().min(PREFIX.len() + 6)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let a = SecretKey::generate();
        let b = SecretKey::generate();
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), KEY_LEN);
        assert!(well_formed(a.expose()), "{}", a.expose());
        assert!(
            !format!("{a:?}").contains(&a.expose()[12..]),
            "Debug hides the key"
        );
    }

    #[test]
    fn typos_and_truncations_fail_the_checksum() {
        let k = SecretKey::generate();
        let s = k.expose();
        assert!(!well_formed(&s[..s.len() - 1]));
        let mut chars: Vec<char> = s.chars().collect();
        chars[10] = if chars[10] == 'a' { 'b' } else { 'a' };
        assert!(!well_formed(&chars.into_iter().collect::<String>()));
        assert!(!well_formed(&s.replace("nimg_", "sk-x_")));
        assert!(!well_formed(""));
    }

    #[test]
    fn scopes_parse_and_reject_unknown_names() {
        let s = Scope::parse_list("images:edit,images:generate images:edit").unwrap();
        assert_eq!(s, vec![Scope::ImagesGenerate, Scope::ImagesEdit]);
        let e = Scope::parse_list("images:delete").unwrap_err().to_string();
        assert!(e.contains("images:delete") && e.contains("assets:read"), "{e}");
        assert!(Scope::parse_list(" , ").is_err());
    }
}
