//! Every image that enters NanoImg goes through `codec::decode`. Whatever the bytes, it must
//! return (never panic, hang or allocate past its limits), and what it returns must be inside
//! the limits. libFuzzer's `-rss_limit_mb` turns an allocation past them into a failure.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nanoimg_engine::codec::{decode, mask_from, DecodeLimits};

const LIMITS: DecodeLimits = DecodeLimits {
    max_bytes: 1 << 20,
    max_side: 1024,
    max_pixels: 512 * 512,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = decode(data, &LIMITS, "image") {
        assert!(img.width() <= LIMITS.max_side && img.height() <= LIMITS.max_side);
        assert!(u64::from(img.width()) * u64::from(img.height()) <= LIMITS.max_pixels);
        let _ = mask_from(&img);
    }
});
