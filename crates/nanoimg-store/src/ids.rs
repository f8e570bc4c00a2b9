//! Identifiers and secrets: 128 random bits from the operating system, so no id can be guessed
//! from another, and a clock for timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

const BASE32: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
pub(crate) const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `n` random bytes from the operating system.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the operating system's random source failed");
    b
}

/// A new id such as `img_01hq…`: the prefix names the kind, then 128 random bits in base32.
pub fn new_id(prefix: &str) -> String {
    let v = u128::from_le_bytes(random_bytes::<16>());
    let mut s = String::with_capacity(prefix.len() + 27);
    s.push_str(prefix);
    s.push('_');
    for i in (0..26).rev() {
        s.push(BASE32[((v >> (i * 5)) & 31) as usize] as char);
    }
    s
}

/// Whether `s` could be an id with `prefix` (so a malformed id is a 404 without a query).
pub fn looks_like_id(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('_'))
        .is_some_and(|r| r.len() == 26 && r.bytes().all(|b| BASE32.contains(&b)))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_recognisable() {
        let a = new_id("img");
        let b = new_id("img");
        assert_ne!(a, b);
        assert!(looks_like_id(&a, "img"), "{a}");
        assert!(!looks_like_id(&a, "job"));
        assert!(!looks_like_id("img_../../etc/passwd", "img"));
        assert!(!looks_like_id("img_0123", "img"));
    }
}
