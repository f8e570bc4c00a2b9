//! Marks each picture given and says whether the detector reads the mark back, unattacked, with
//! the change in PSNR and the sync z-score: how the watermark fares on a model's real outputs.
//!
//! `cargo run -p nanoimg-safety --example wm_probe -- a.png b.png …` (`S=3` for another
//! strength, `P=32` for the tile drawn at 32 px). Give it unmarked pictures (the model's raw
//! outputs, not files NanoImg wrote: `cargo run -p nanoimg --example raw_outputs -- DIR`).

use nanoimg_safety::watermark::{self, Watermarker};

const PAYLOAD: u64 = 0x1234_5678_9abc_def0;

fn main() {
    let mut wm = Watermarker::new();
    if let Some(s) = std::env::var("S").ok().and_then(|s| s.parse().ok()) {
        wm.strength = s;
    }
    let (mut found, mut n) = (0, 0);
    for f in std::env::args().skip(1) {
        let mut img = match image::open(&f) {
            Ok(i) => i.to_rgb8(),
            Err(e) => {
                eprintln!("{f}: {e}");
                continue;
            }
        };
        let orig = img.clone();
        let side = std::env::var("P")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(watermark::TILE);
        wm.embed_at(&mut img, PAYLOAD, side);
        let psnr = watermark::psnr(&orig, &img);
        let d = wm.detect(&img);
        n += 1;
        let ok = d.payload == Some(PAYLOAD);
        found += usize::from(ok);
        println!(
            "{f}: {}×{} psnr {psnr:.1} dB, sync z {:.2}, period {:.2}, read back: {ok}",
            img.width(),
            img.height(),
            d.score,
            d.period
        );
    }
    println!("read back {found} of {n} at strength {}", wm.strength);
}
