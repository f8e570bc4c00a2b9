//! C2PA signing and verification latency on encoded outputs of the sizes the server makes, with
//! a local CA made as on first start. `cargo bench -p nanoimg-safety --bench provenance`.

use image::{ImageFormat, Rgb, RgbImage};
use nanoimg_safety::provenance::{ca, Origin, Provenance};
use std::io::Cursor;
use std::time::{Duration, Instant};

fn encoded(side: u32, f: ImageFormat) -> Vec<u8> {
    let img = RgbImage::from_fn(side, side, |x, y| {
        Rgb([(x % 251) as u8, (y % 241) as u8, ((x ^ y) % 256) as u8])
    });
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), f).unwrap();
    out
}

fn main() {
    let t = Instant::now();
    let creds = ca::local_ca().unwrap();
    let made = t.elapsed();
    let t = Instant::now();
    let p = Provenance::new(&creds, "").unwrap();
    println!(
        "local CA made in {:.1} ms; signer loaded and self-checked in {:.1} ms",
        made.as_secs_f64() * 1e3,
        t.elapsed().as_secs_f64() * 1e3
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for (f, mt) in [(ImageFormat::Png, "image/png"), (ImageFormat::Jpeg, "image/jpeg")] {
        for side in [64u32, 512, 1024] {
            let plain = encoded(side, f);
            let (mut sign, mut verify) = (vec![], vec![]);
            let mut added = 0;
            for _ in 0..30 {
                let t = Instant::now();
                let signed = p.sign(&plain, mt, Origin::Created, "bench").unwrap();
                sign.push(t.elapsed());
                added = signed.len() - plain.len();
                let t = Instant::now();
                assert!(std::hint::black_box(p.verify(&signed).unwrap()).trusted);
                verify.push(t.elapsed());
            }
            sign.sort();
            verify.sort();
            println!(
                "{mt} {side}×{side} ({} KB): sign p50 {:.2} ms, p99 {:.2} ms; verify p50 {:.2} ms, p99 {:.2} ms; manifest adds {added} bytes",
                plain.len() / 1024,
                ms(sign[15]),
                ms(sign[29]),
                ms(verify[15]),
                ms(verify[29]),
            );
        }
    }
}
