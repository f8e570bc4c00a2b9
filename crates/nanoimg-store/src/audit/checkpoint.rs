//! Signed checkpoints of the audit chain's head, so that removing the newest events shows.
//!
//! A checkpoint is (seq, hash, time) of the head, signed with the operator's Ed25519 key. It is
//! stored in the database and appended to a witness file (by default beside the database; point
//! it at another volume, or ship it with the logs, to survive someone who can rewrite the whole
//! data directory). The key is a PKCS#8 PEM file (`openssl genpkey -algorithm ed25519`), made on
//! first use when missing.

use crate::blobs::create_private_dir;
use crate::error::{corrupt, Result, StoreError};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;
use std::io::Write;
use std::path::{Path, PathBuf};

const DOMAIN: &[u8] = b"nanoimg.audit.checkpoint.v1";

/// One signed head of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The last event it covers.
    pub seq: i64,
    /// That event's hash (hex).
    pub hash: String,
    /// When it was signed (ms since the epoch).
    pub at: i64,
    /// The signer's Ed25519 public key (hex).
    pub public_key: String,
    /// Ed25519 signature (hex) over the domain tag, seq, hash and time.
    pub signature: String,
}

fn message(seq: i64, hash: &[u8; 32], at: i64) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 48);
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash);
    m.extend_from_slice(&at.to_be_bytes());
    m
}

impl Checkpoint {
    pub(crate) fn read(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            seq: r.try_get("seq")?,
            hash: r.try_get("hash")?,
            at: r.try_get("at")?,
            public_key: r.try_get("public_key")?,
            signature: r.try_get("signature")?,
        })
    }
}

/// Where checkpoints go and how often.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// The Ed25519 signing key (PKCS#8 PEM), created when missing.
    pub signing_key: PathBuf,
    /// The witness file checkpoints are appended to (JSON lines); `None` for the database only.
    pub witness: Option<PathBuf>,
    /// A checkpoint after every this many events (and whenever [`crate::Store::audit_checkpoint`]
    /// is called). At least 1.
    pub checkpoint_every: u32,
}

/// Checkpoints every this many events unless configured.
pub const DEFAULT_CHECKPOINT_EVERY: u32 = 100;

impl AuditOptions {
    /// The defaults for a data directory: `audit/signing-key.pem` and `audit/checkpoints.jsonl`.
    pub fn in_data_dir(dir: &Path) -> Self {
        Self {
            signing_key: dir.join("audit").join("signing-key.pem"),
            witness: Some(dir.join("audit").join("checkpoints.jsonl")),
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
        }
    }
}

/// Signs checkpoints. Never printed: `Debug` shows the public key only.
pub(crate) struct AuditSigner {
    key: SigningKey,
    witness: Option<PathBuf>,
    pub(crate) every: i64,
}

impl std::fmt::Debug for AuditSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSigner")
            .field("public_key", &hex::encode(self.key.verifying_key().as_bytes()))
            .field("witness", &self.witness)
            .field("every", &self.every)
            .finish()
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Blob {
        path: path.display().to_string(),
        source,
    }
}

/// Reads a PKCS#8 PEM Ed25519 key.
fn read_key(path: &Path) -> Result<SigningKey> {
    let pem = std::fs::read_to_string(path).map_err(io_err(path))?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
        StoreError::Invalid(format!(
            "{}: not an Ed25519 private key in PKCS#8 PEM ({e})",
            path.display()
        ))
    })
}

impl AuditSigner {
    pub(crate) fn load(options: &AuditOptions) -> Result<Self> {
        let path = &options.signing_key;
        let key = if path.exists() {
            read_key(path)?
        } else {
            create_key(path)?
        };
        Ok(Self {
            key,
            witness: options.witness.clone(),
            every: i64::from(options.checkpoint_every.max(1)),
        })
    }

    pub(crate) fn public(&self) -> CheckpointKey {
        CheckpointKey(self.key.verifying_key())
    }

    pub(crate) fn sign(&self, seq: i64, hash: &[u8; 32], at: i64) -> Checkpoint {
        let sig = self.key.sign(&message(seq, hash, at));
        Checkpoint {
            seq,
            hash: hex::encode(hash),
            at,
            public_key: hex::encode(self.key.verifying_key().as_bytes()),
            signature: hex::encode(sig.to_bytes()),
        }
    }

    /// Appends to the witness file (one JSON line, synced).
    pub(crate) fn witness(&self, c: &Checkpoint) -> Result<()> {
        let Some(path) = &self.witness else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            create_private_dir(dir)?;
        }
        let mut line = serde_json::to_vec(c).map_err(|e| corrupt(e.to_string()))?;
        line.push(b'\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io_err(path))?;
        f.write_all(&line).map_err(io_err(path))?;
        f.sync_data().map_err(io_err(path))
    }
}

/// A fresh key, written 0600 under a temporary name and renamed into place (two processes
/// starting at once keep the first one's).
fn create_key(path: &Path) -> Result<SigningKey> {
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| corrupt(format!("no randomness: {e}")))?;
    let key = SigningKey::from_bytes(&seed);
    let pem = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| corrupt(format!("encoding the audit key: {e}")))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(io_err(dir))?;
    tmp.write_all(pem.as_bytes()).map_err(io_err(dir))?;
    tmp.as_file().sync_data().map_err(io_err(dir))?;
    match tmp.persist_noclobber(path) {
        Ok(_) => Ok(key),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => read_key(path),
        Err(e) => Err(io_err(path)(e.error)),
    }
}

/// The public key checkpoints must verify under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointKey(VerifyingKey);

impl CheckpointKey {
    /// From the signing key file (the public half).
    pub fn from_signing_key_file(path: &Path) -> Result<Self> {
        Ok(Self(read_key(path)?.verifying_key()))
    }

    /// From a hex public key (for auditors without the private key).
    pub fn from_hex(s: &str) -> Result<Self> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut b)
            .ok()
            .and_then(|()| VerifyingKey::from_bytes(&b).ok())
            .map(Self)
            .ok_or_else(|| StoreError::Invalid(format!("{s:?} is not an Ed25519 public key (64 hex digits)")))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }

    pub(crate) fn verify(&self, c: &Checkpoint) -> std::result::Result<(), CheckpointFault> {
        if c.public_key != self.to_hex() {
            return Err(CheckpointFault::OtherKey(c.public_key.clone()));
        }
        let hash = super::chain::parse_hash(&c.hash).ok_or(CheckpointFault::MalformedHash)?;
        let mut sig = [0u8; 64];
        hex::decode_to_slice(&c.signature, &mut sig).map_err(|_| CheckpointFault::MalformedSignature)?;
        self.0
            .verify_strict(&message(c.seq, &hash, c.at), &Signature::from_bytes(&sig))
            .map_err(|_| CheckpointFault::BadSignature)
    }
}

/// Why a checkpoint does not verify against the audit key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CheckpointFault {
    #[error("signed with another key ({0})")]
    OtherKey(String),
    #[error("its hash is not 64 hex digits")]
    MalformedHash,
    #[error("its signature is not 128 hex digits")]
    MalformedSignature,
    #[error("the signature does not verify (forged or altered)")]
    BadSignature,
}

/// Reads a witness file; a missing file has no checkpoints.
pub fn read_witness(path: &Path) -> Result<Vec<Checkpoint>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(path)(e)),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| corrupt(format!("{} line {}: {e}", path.display(), i + 1)))
        })
        .collect()
}
