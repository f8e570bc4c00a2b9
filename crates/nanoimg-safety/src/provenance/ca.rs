//! Signing credentials: a certificate chain and its private key, either the operator's (from
//! files) or a local CA made on first start.
//!
//! The local CA follows the C2PA certificate profile (spec §14.5): ES256 keys on P-256, a root →
//! intermediate → leaf chain, the leaf with `digitalSignature`, the C2PA claim-signing EKU (never
//! anyEKU), an authority key identifier, and no CA bit. Only the leaf's key is kept; the root and
//! intermediate keys are dropped once the chain is signed, so the CA cannot issue anything else.

use crate::SafetyError;
use p256::ecdsa::{DerSignature, SigningKey};
use p256::elliptic_curve::zeroize::Zeroizing;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime};
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::EncodePem;
use x509_cert::ext::pkix::ExtendedKeyUsage;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::{Time, Validity};
use x509_cert::Certificate;

/// `c2pa-kp-claimSigning`, the EKU the C2PA specification defines for claim signers.
pub const C2PA_CLAIM_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.62558.2.1");

/// Years the local leaf is valid. Without a time-stamp authority (none is reachable offline) a
/// validator checks the leaf against *its* clock, so a manifest stops verifying when the leaf
/// expires; a long life keeps old images verifiable.
const LEAF_YEARS: u64 = 10;
const CA_YEARS: u64 = 20;

/// File names inside the credentials folder.
pub const ROOT_FILE: &str = "root.pem";
pub const CHAIN_FILE: &str = "chain.pem";
pub const KEY_FILE: &str = "signer.key";

/// A signing chain and its key, in PEM.
pub struct Credentials {
    /// The leaf first, then its issuers (the root is not included).
    pub chain_pem: String,
    /// PKCS#8 private key of the leaf.
    pub key_pem: Zeroizing<String>,
    /// Roots a verifier should trust for this chain (the local root; empty for operator
    /// credentials unless `trust_anchors` names a file).
    pub anchors_pem: String,
    /// Where they came from, for logs and `/readyz`.
    pub source: String,
}

impl Credentials {
    /// The operator's chain and key.
    pub fn from_files(chain: &Path, key: &Path, anchors: Option<&Path>) -> Result<Self, SafetyError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map_err(|e| SafetyError::Provenance(format!("cannot read {}: {e}", p.display())))
        };
        Ok(Self {
            chain_pem: read(chain)?,
            key_pem: Zeroizing::new(read(key)?),
            anchors_pem: anchors.map(read).transpose()?.unwrap_or_default(),
            source: format!("{} (key {})", chain.display(), key.display()),
        })
    }

    /// The local CA in `dir`, made there on first use. The folder is written whole under a
    /// temporary name and renamed into place, so a crash never leaves half a CA behind.
    pub fn load_or_create(dir: &Path) -> Result<(Self, bool), SafetyError> {
        if !dir.exists() {
            let parent = dir.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
            let tmp = tempfile::Builder::new()
                .prefix(".provenance-")
                .tempdir_in(parent)
                .map_err(|e| io_err(parent, e))?;
            let creds = local_ca()?;
            creds.write(tmp.path())?;
            // Another process may have won the race; then its CA is used.
            if std::fs::rename(tmp.path(), dir).is_ok() {
                let _ = tmp.keep();
                return Ok((Self::load_local(dir)?, true));
            }
        }
        Ok((Self::load_local(dir)?, false))
    }

    fn load_local(dir: &Path) -> Result<Self, SafetyError> {
        let mut c = Self::from_files(
            &dir.join(CHAIN_FILE),
            &dir.join(KEY_FILE),
            Some(&dir.join(ROOT_FILE)),
        )?;
        c.source = format!("local CA in {}", dir.display());
        Ok(c)
    }

    fn write(&self, dir: &Path) -> Result<(), SafetyError> {
        let put = |name: &str, text: &str, private: bool| -> Result<(), SafetyError> {
            let path = dir.join(name);
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            if private {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            #[cfg(not(unix))]
            let _ = private;
            let mut f = opts.open(&path).map_err(|e| io_err(&path, e))?;
            std::io::Write::write_all(&mut f, text.as_bytes()).map_err(|e| io_err(&path, e))?;
            f.sync_all().map_err(|e| io_err(&path, e))
        };
        put(KEY_FILE, &self.key_pem, true)?;
        put(CHAIN_FILE, &self.chain_pem, false)?;
        put(ROOT_FILE, &self.anchors_pem, false)
    }
}

fn io_err(p: &Path, e: std::io::Error) -> SafetyError {
    SafetyError::Provenance(format!("{}: {e}", p.display()))
}

fn x509_err(e: impl std::fmt::Display) -> SafetyError {
    SafetyError::Provenance(format!("making the local CA: {e}"))
}

/// A fresh P-256 key from the OS's random source.
fn new_key() -> Result<SigningKey, SafetyError> {
    loop {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut()).map_err(x509_err)?;
        // Fails only for the zero scalar or one above the group order (p ≈ 2^-32).
        if let Ok(k) = SigningKey::from_slice(bytes.as_ref()) {
            return Ok(k);
        }
    }
}

fn serial() -> Result<SerialNumber, SafetyError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(x509_err)?;
    b[0] = (b[0] & 0x7f) | 0x01; // positive and of full length
    SerialNumber::new(&b).map_err(x509_err)
}

fn validity(years: u64) -> Result<Validity, SafetyError> {
    let now = SystemTime::now();
    // An hour back, so a verifier whose clock is a little behind still accepts the chain.
    let from = now - Duration::from_secs(3600);
    let to = now + Duration::from_secs(years * 365 * 24 * 3600);
    Ok(Validity {
        not_before: Time::try_from(from).map_err(x509_err)?,
        not_after: Time::try_from(to).map_err(x509_err)?,
    })
}

fn spki(key: &SigningKey) -> Result<SubjectPublicKeyInfoOwned, SafetyError> {
    SubjectPublicKeyInfoOwned::from_key(*key.verifying_key()).map_err(x509_err)
}

fn issue(
    profile: Profile,
    years: u64,
    subject: &Name,
    key: &SigningKey,
    issuer_key: &SigningKey,
    eku: bool,
) -> Result<Certificate, SafetyError> {
    let mut b = CertificateBuilder::new(
        profile,
        serial()?,
        validity(years)?,
        subject.clone(),
        spki(key)?,
        issuer_key,
    )
    .map_err(x509_err)?;
    if eku {
        b.add_extension(&ExtendedKeyUsage(vec![C2PA_CLAIM_SIGNING]))
            .map_err(x509_err)?;
    }
    b.build::<DerSignature>().map_err(x509_err)
}

/// A new root → intermediate → leaf chain; only the leaf's key survives.
pub fn local_ca() -> Result<Credentials, SafetyError> {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty() && h.len() < 48);
    let ou = host
        .map(|h| {
            format!(
                ",OU={}",
                h.replace([',', '=', '+', '"', '\\', '<', '>', ';'], "_")
            )
        })
        .unwrap_or_default();
    let name = |cn: &str| Name::from_str(&format!("CN={cn}{ou},O=NanoImg (self-hosted)")).map_err(x509_err);
    let (root_name, mid_name, leaf_name) = (
        name("NanoImg local root CA")?,
        name("NanoImg local signing CA")?,
        name("NanoImg content credentials")?,
    );
    let (root_key, mid_key, leaf_key) = (new_key()?, new_key()?, new_key()?);
    let root = issue(Profile::Root, CA_YEARS, &root_name, &root_key, &root_key, false)?;
    let mid = issue(
        Profile::SubCA {
            issuer: root_name,
            path_len_constraint: Some(0),
        },
        CA_YEARS,
        &mid_name,
        &mid_key,
        &root_key,
        false,
    )?;
    let leaf = issue(
        Profile::Leaf {
            issuer: mid_name,
            enable_key_agreement: false,
            enable_key_encipherment: false,
        },
        LEAF_YEARS,
        &leaf_name,
        &leaf_key,
        &mid_key,
        true,
    )?;
    let pem = |c: &Certificate| c.to_pem(LineEnding::LF).map_err(x509_err);
    Ok(Credentials {
        chain_pem: format!("{}{}", pem(&leaf)?, pem(&mid)?),
        key_pem: leaf_key.to_pkcs8_pem(LineEnding::LF).map_err(x509_err)?,
        anchors_pem: pem(&root)?,
        source: "local CA (in memory)".into(),
    })
}
