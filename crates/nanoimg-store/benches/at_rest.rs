//! Encryption-at-rest overhead on a 4-megapixel PNG's worth of bytes: AES-256-GCM seal and open
//! with a tenant data key, as the store does for every blob.
//!
//! `cargo bench -p nanoimg-store --bench at_rest`

use nanoimg_store::crypto::Key;
use std::time::Instant;

fn main() {
    // A 2048×2048 RGB PNG of a photo is 6–12 MB; use 12 MiB of incompressible bytes.
    let len = 12 * 1024 * 1024;
    let mut data = vec![0u8; len];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let key = Key::from_bytes(&[7; 32]);
    let aad = b"nanoimg.blob.v1\0tenant\0img_x";
    let runs = 20;
    let (mut seal, mut open) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        let sealed = key.seal(aad, &data).unwrap();
        seal.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let plain = key.open(aad, sealed, "bench").unwrap();
        open.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(plain.len(), len);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (s, o) = (median(&mut seal), median(&mut open));
    let mb = len as f64 / 1e6;
    println!(
        "12 MiB blob, median of {runs}: seal {s:.1} ms ({:.0} MB/s), open {o:.1} ms ({:.0} MB/s)",
        mb / s * 1e3,
        mb / o * 1e3
    );
}
