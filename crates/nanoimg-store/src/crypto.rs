//! Encryption at rest: envelope encryption with AES-256-GCM (`ring`).
//!
//! Each tenant has a random 256-bit **data key**. It encrypts everything of that tenant's that
//! is stored (blobs: uploads, outputs, references, LoRAs). The data key is stored only
//! **wrapped** (encrypted) by the **master key**, which comes from the operator's config and is
//! never stored in the database; the wrapped key records which master key wrapped it, so the
//! master key can be rotated by re-wrapping the tenant keys alone. Destroying a tenant's data
//! key makes everything encrypted under it unreadable (crypto-shredding).
//!
//! Every ciphertext is bound to where it belongs by its associated data (the tenant, and the
//! blob's name), so a blob copied under another name or tenant fails to decrypt, as does a
//! flipped byte: GCM authenticates, it never returns garbage.

use crate::blobs::create_private_dir;
use crate::error::{corrupt, Result, StoreError};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

/// The first bytes of every sealed value; the version of this format.
pub(crate) const MAGIC: &[u8; 4] = b"NIE1";
const TAG_LEN: usize = 16;
/// Bytes a sealed value adds to its plaintext.
pub const OVERHEAD: usize = MAGIC.len() + NONCE_LEN + TAG_LEN;

/// A 256-bit AES-GCM key (a tenant's data key). Its bytes are not kept once the key is built.
pub struct Key(LessSafeKey);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(***)")
    }
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| corrupt(format!("no randomness: {e}")))?;
    Ok(b)
}

impl Key {
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self(LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, bytes).expect("32 bytes is an AES-256 key"),
        ))
    }

    /// `MAGIC || nonce || ciphertext || tag`, with a fresh random nonce.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
        let nonce = random::<NONCE_LEN>()?;
        let mut out = Vec::with_capacity(plain.len() + OVERHEAD);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self
            .0
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[MAGIC.len() + NONCE_LEN..],
            )
            .map_err(|_| corrupt("encryption failed"))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// The plaintext of a [`Key::seal`]ed value; any change to it, or the wrong key or
    /// associated data, is an error.
    pub fn open(&self, aad: &[u8], mut sealed: Vec<u8>, what: &str) -> Result<Vec<u8>> {
        if sealed.len() < OVERHEAD || &sealed[..MAGIC.len()] != MAGIC {
            return Err(corrupt(format!("{what}: not encrypted by NanoImg")));
        }
        let nonce = Nonce::try_assume_unique_for_key(&sealed[MAGIC.len()..MAGIC.len() + NONCE_LEN])
            .map_err(|_| corrupt(format!("{what}: bad nonce")))?;
        let start = MAGIC.len() + NONCE_LEN;
        let len = self
            .0
            .open_in_place(nonce, Aad::from(aad), &mut sealed[start..])
            .map_err(|_| {
                corrupt(format!(
                    "{what}: authentication failed (altered, moved, or its key is gone)"
                ))
            })?
            .len();
        sealed.copy_within(start..start + len, 0);
        sealed.truncate(len);
        Ok(sealed)
    }
}

/// Associated data binding a blob to its tenant and name.
pub(crate) fn blob_aad(tenant: &str, name: &str) -> Vec<u8> {
    [b"nanoimg.blob.v1\0", tenant.as_bytes(), b"\0", name.as_bytes()].concat()
}

fn key_aad(tenant: &str) -> Vec<u8> {
    [b"nanoimg.tenant-key.v1\0", tenant.as_bytes()].concat()
}

/// The operator's master key: wraps tenant data keys. Its id (a hash of the key) is stored
/// beside each wrapped key.
pub struct MasterKey {
    id: String,
    key: Key,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish()
    }
}

impl MasterKey {
    /// From 32 bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        let digest = Sha256::digest([b"nanoimg.master-key-id\0".as_slice(), bytes].concat());
        Self {
            id: hex::encode(&digest[..8]),
            key: Key::from_bytes(bytes),
        }
    }

    /// From text: 64 hex digits or 44 characters of standard base64 (surrounding whitespace
    /// ignored). `what` names the source in errors, which never echo the value.
    pub fn parse(text: &str, what: &str) -> Result<Self> {
        use base64::Engine;
        let t = text.trim();
        let mut b = [0u8; 32];
        let ok = if t.len() == 64 {
            hex::decode_to_slice(t, &mut b).is_ok()
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .ok()
                .filter(|v| v.len() == 32)
                .map(|v| b.copy_from_slice(&v))
                .is_some()
        };
        if !ok {
            return Err(StoreError::Invalid(format!(
                "{what}: a master key is 32 bytes, written as 64 hex digits or in base64"
            )));
        }
        Ok(Self::from_bytes(&b))
    }

    /// Reads the key file, or makes one (0600, under a temporary name renamed into place) when
    /// it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self> {
        let io = |source| StoreError::Blob {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => return Self::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        create_private_dir(dir)?;
        let bytes = random::<32>()?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(dir)
            .map_err(io)?;
        tmp.write_all(format!("{}\n", hex::encode(bytes)).as_bytes())
            .map_err(io)?;
        tmp.as_file().sync_data().map_err(io)?;
        match tmp.persist_noclobber(path) {
            Ok(_) => Ok(Self::from_bytes(&bytes)),
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(path).map_err(io)?;
                Self::parse(&text, &path.display().to_string())
            }
            Err(e) => Err(io(e.error)),
        }
    }

    /// This key's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A fresh data key for `tenant`: the key, and its wrapped form to store.
    pub(crate) fn new_data_key(&self, tenant: &str) -> Result<(Key, Vec<u8>)> {
        let bytes = random::<32>()?;
        let wrapped = self.key.seal(&key_aad(tenant), &bytes)?;
        Ok((Key::from_bytes(&bytes), wrapped))
    }

    /// Unwraps a stored data key of `tenant`.
    pub(crate) fn unwrap(&self, tenant: &str, wrapped: Vec<u8>) -> Result<Key> {
        let bytes = self.key.open(&key_aad(tenant), wrapped, "a tenant key")?;
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| corrupt("a tenant key is not 32 bytes"))?;
        Ok(Key::from_bytes(&arr))
    }

    /// Re-wraps a data key wrapped by `old` under this key (master key rotation).
    pub(crate) fn rewrap(&self, old: &MasterKey, tenant: &str, wrapped: Vec<u8>) -> Result<Vec<u8>> {
        let bytes = old.key.open(&key_aad(tenant), wrapped, "a tenant key")?;
        self.key.seal(&key_aad(tenant), &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_unchanged_with_their_key_and_place() {
        let k = Key::from_bytes(&[7; 32]);
        let aad = blob_aad("t1", "a1");
        let sealed = k.seal(&aad, b"hello pixels").unwrap();
        assert_eq!(sealed.len(), 12 + OVERHEAD);
        assert!(
            !sealed.windows(5).any(|w| w == b"hello"),
            "no plaintext in the ciphertext"
        );
        assert_eq!(k.open(&aad, sealed.clone(), "x").unwrap(), b"hello pixels");
        // Every single flipped bit is caught.
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(k.open(&aad, bad, "x").is_err(), "byte {i}");
        }
        // Another name, tenant or key: refused.
        assert!(k.open(&blob_aad("t1", "a2"), sealed.clone(), "x").is_err());
        assert!(k.open(&blob_aad("t2", "a1"), sealed.clone(), "x").is_err());
        assert!(Key::from_bytes(&[8; 32]).open(&aad, sealed.clone(), "x").is_err());
        // Two seals of the same bytes differ (fresh nonces).
        assert_ne!(k.seal(&aad, b"hello pixels").unwrap(), sealed);
    }

    #[test]
    fn data_keys_unwrap_only_for_their_tenant_and_survive_rotation() {
        let m1 = MasterKey::from_bytes(&[1; 32]);
        let m2 = MasterKey::parse(&hex::encode([2u8; 32]), "test").unwrap();
        assert_ne!(m1.id(), m2.id());
        let (dk, wrapped) = m1.new_data_key("t1").unwrap();
        let sealed = dk.seal(b"aad", b"secret").unwrap();
        assert!(m1.unwrap("t2", wrapped.clone()).is_err());
        assert!(m2.unwrap("t1", wrapped.clone()).is_err());
        let rewrapped = m2.rewrap(&m1, "t1", wrapped).unwrap();
        let dk2 = m2.unwrap("t1", rewrapped).unwrap();
        assert_eq!(dk2.open(b"aad", sealed, "x").unwrap(), b"secret");
    }

    #[test]
    fn master_keys_parse_hex_or_base64_and_errors_never_echo_them() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        assert_eq!(
            MasterKey::parse(&b64, "env").unwrap().id(),
            MasterKey::from_bytes(&[9; 32]).id()
        );
        let e = MasterKey::parse("deadbeefsecret", "NANOIMG_MASTER_KEY").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("NANOIMG_MASTER_KEY") && !msg.contains("deadbeef"),
            "{msg}"
        );
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k/master.key");
        let a = MasterKey::load_or_create(&p).unwrap();
        let b = MasterKey::load_or_create(&p).unwrap();
        assert_eq!(a.id(), b.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o077, 0);
        }
    }
}
