//! Signed, expiring links for `response_format: "url"`: `/v1/files/{id}?expires=…&sig=…` where
//! `sig` is HMAC-SHA256 over the tenant, the asset and the expiry with a server secret. Anyone
//! holding the link can fetch that one image until it expires, and nothing else.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::Path;

type HmacSha256 = Hmac<Sha256>;

pub struct UrlSigner {
    secret: Vec<u8>,
}

impl UrlSigner {
    /// Reads the secret from `path`, creating a random one (mode 0600) on first start.
    pub fn load_or_create(path: &Path) -> std::io::Result<Self> {
        match std::fs::read(path) {
            Ok(secret) if secret.len() >= 32 => return Ok(Self { secret }),
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "{}: the URL signing secret is shorter than 32 bytes",
                    path.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut secret = vec![0u8; 32];
        getrandom_fill(&mut secret)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        use std::io::Write;
        opts.open(path)?.write_all(&secret)?;
        Ok(Self { secret })
    }

    fn mac(&self, tenant: &str, asset: &str, expires: i64) -> HmacSha256 {
        let mut m = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key length");
        m.update(tenant.as_bytes());
        m.update(b"\0");
        m.update(asset.as_bytes());
        m.update(b"\0");
        m.update(&expires.to_be_bytes());
        m
    }

    /// The query string for a link to `asset` valid until `expires` (Unix seconds).
    pub fn sign(&self, tenant: &str, asset: &str, expires: i64) -> String {
        let sig = hex::encode(self.mac(tenant, asset, expires).finalize().into_bytes());
        format!("expires={expires}&sig={sig}&t={tenant}")
    }

    /// Whether `sig` is valid for these values (constant-time) and not expired at `now`.
    pub fn verify(&self, tenant: &str, asset: &str, expires: i64, sig: &str, now: i64) -> bool {
        let Ok(sig) = hex::decode(sig) else {
            return false;
        };
        now < expires && self.mac(tenant, asset, expires).verify_slice(&sig).is_ok()
    }
}

fn getrandom_fill(buf: &mut [u8]) -> std::io::Result<()> {
    getrandom::fill(buf).map_err(|e| std::io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_verify_until_they_expire_and_only_for_their_asset() {
        let d = tempfile::tempdir().unwrap();
        let s = UrlSigner::load_or_create(&d.path().join("k")).unwrap();
        let q = s.sign("ten_a", "img_1", 1000);
        let sig = q.split("sig=").nth(1).unwrap().split('&').next().unwrap();
        assert!(s.verify("ten_a", "img_1", 1000, sig, 999));
        assert!(!s.verify("ten_a", "img_1", 1000, sig, 1000), "expired");
        assert!(!s.verify("ten_a", "img_2", 1000, sig, 0), "other asset");
        assert!(!s.verify("ten_b", "img_1", 1000, sig, 0), "other tenant");
        assert!(!s.verify("ten_a", "img_1", 2000, sig, 0), "extended expiry");
        assert!(!s.verify("ten_a", "img_1", 1000, "zz", 0));
        // The secret persists.
        let again = UrlSigner::load_or_create(&d.path().join("k")).unwrap();
        assert!(again.verify("ten_a", "img_1", 1000, sig, 999));
    }
}
