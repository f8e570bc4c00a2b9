//! The upload decoder against mutated images, on stable Rust and in every test run: bit flips,
//! inserted and deleted bytes, spliced and repeated chunks, rewritten dimensions. Whatever comes
//! in, `decode` returns, and what it returns is inside the limits. (The libFuzzer target in
//! `fuzz/` explores further; see docs/safety.md.)

use nanoimg_engine::codec::{decode, encode, DecodeLimits, OutputFormat};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const LIMITS: DecodeLimits = DecodeLimits {
    max_bytes: 1 << 20,
    max_side: 256,
    max_pixels: 128 * 128,
};

fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..rng.random_range(1..6) {
        if b.is_empty() {
            b.push(rng.random());
        }
        let at = rng.random_range(0..b.len());
        match rng.random_range(0..7) {
            0 => b[at] ^= 1 << rng.random_range(0..8),
            1 => b[at] = rng.random(),
            2 => b.insert(at, rng.random()),
            3 => {
                b.remove(at);
            }
            4 => {
                // Repeat a slice (chunk duplication).
                let end = (at + rng.random_range(1..64)).min(b.len());
                let piece = b[at..end].to_vec();
                let to = rng.random_range(0..=b.len());
                b.splice(to..to, piece);
            }
            5 => b.truncate(at),
            _ => {
                // Big numbers where sizes live (PNG IHDR width/height, WebP/JPEG headers).
                let to = rng.random_range(0..b.len().min(40));
                let v: u32 = *[0xFFFF_FFFF, 0x7FFF_FFFF, 0, 65_535, 100_000]
                    .get(rng.random_range(0..5))
                    .unwrap();
                for (i, byte) in v.to_be_bytes().iter().enumerate() {
                    if let Some(x) = b.get_mut(to + i) {
                        *x = *byte;
                    }
                }
            }
        }
    }
    b
}

#[test]
fn mutated_images_never_panic_or_exceed_the_limits() {
    let img = image::RgbImage::from_fn(40, 24, |x, y| image::Rgb([x as u8 * 6, y as u8 * 9, 77]));
    let seeds: Vec<Vec<u8>> = [OutputFormat::Png, OutputFormat::Jpeg, OutputFormat::Webp]
        .into_iter()
        .map(|f| encode(&img, f, Some(80), &[]).unwrap())
        .collect();
    let mut rng = StdRng::seed_from_u64(0xdec0de);
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..3000 {
        let seed = &seeds[rng.random_range(0..seeds.len())];
        let data = mutate(&mut rng, seed);
        match decode(&data, &LIMITS, "image") {
            Ok(out) => {
                ok += 1;
                assert!(out.width() <= LIMITS.max_side && out.height() <= LIMITS.max_side);
                assert!(u64::from(out.width()) * u64::from(out.height()) <= LIMITS.max_pixels);
            }
            Err(e) => {
                refused += 1;
                assert_eq!(e.param, "image");
                assert!(!e.message.is_empty());
            }
        }
    }
    println!("3000 mutated images: {ok} decoded, {refused} refused");
    assert!(ok > 0 && refused > 0);
}
