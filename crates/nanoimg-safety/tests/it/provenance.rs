//! C2PA signing and verification with the real `c2pa` crate: a local CA made like the server makes
//! it, outputs in every format we write, edits with an ingredient, tampering, untrusted signers
//! and credentials a validator would reject.

use image::{DynamicImage, ImageFormat, RgbImage};
use nanoimg_safety::provenance::{
    ca, Credentials, Origin, Provenance, COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA, TRAINED_ALGORITHMIC_MEDIA,
};
use std::io::Cursor;

fn picture(seed: u8) -> RgbImage {
    RgbImage::from_fn(96, 64, |x, y| {
        image::Rgb([
            (x * 2) as u8 ^ seed,
            (y * 3) as u8,
            ((x + y) as u8).wrapping_mul(seed | 1),
        ])
    })
}

fn encode(img: &RgbImage, f: ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    DynamicImage::ImageRgb8(img.clone())
        .write_to(&mut Cursor::new(&mut out), f)
        .unwrap();
    out
}

/// A PNG of `picture(seed)` signed as a new creation.
fn signed_png(p: &Provenance, seed: u8) -> Vec<u8> {
    p.sign(
        &encode(&picture(seed), ImageFormat::Png),
        "image/png",
        Origin::Created,
        "tiny",
    )
    .unwrap()
}

fn local() -> Provenance {
    Provenance::new(&ca::local_ca().unwrap(), "").unwrap()
}

#[test]
fn a_generated_png_jpeg_and_webp_carry_a_trusted_created_manifest() {
    let p = local();
    for (f, mt) in [
        (ImageFormat::Png, "image/png"),
        (ImageFormat::Jpeg, "image/jpeg"),
        (ImageFormat::WebP, "image/webp"),
    ] {
        let plain = encode(&picture(7), f);
        let signed = p.sign(&plain, mt, Origin::Created, "tiny").unwrap();
        assert!(signed.len() > plain.len());
        // The picture is unchanged: only the manifest was added.
        let a = image::load_from_memory(&plain).unwrap().to_rgb8();
        let b = image::load_from_memory(&signed).unwrap().to_rgb8();
        assert_eq!(a, b, "{mt}: signing changed pixels");

        let r = p.verify(&signed).unwrap();
        assert!(r.present && r.valid && r.trusted && !r.tampered, "{mt}: {r:?}");
        assert_eq!(r.state, Some("trusted"));
        assert_eq!(r.media_type, mt);
        assert!(r.failures.is_empty(), "{mt}: {:?}", r.failures);
        let created = r
            .actions
            .iter()
            .find(|a| a.action == "c2pa.created")
            .expect("c2pa.created");
        assert_eq!(
            created.digital_source_type.as_deref(),
            Some(TRAINED_ALGORITHMIC_MEDIA)
        );
        assert_eq!(created.software_agent.as_deref(), Some("NanoImg"));
        assert_eq!(r.signer.as_deref(), Some("NanoImg content credentials"));
        assert!(r.ingredients.is_empty());
    }
}

#[test]
fn an_unsigned_file_has_no_manifest_and_garbage_is_refused() {
    let p = local();
    let r = p.verify(&encode(&picture(1), ImageFormat::Png)).unwrap();
    assert!(!r.present && !r.valid && !r.trusted && !r.tampered);
    assert_eq!(r.state, None);
    let e = p.verify(b"GIF89a not a format we sign").unwrap_err().to_string();
    assert!(e.contains("not a PNG, JPEG or WebP"), "{e}");
}

/// Overwrites bytes inside the first chunk of image data, leaving the manifest alone.
fn tamper(signed: &mut [u8], media_type: &str) {
    let at = match media_type {
        "image/png" => signed.windows(4).position(|w| w == b"IDAT").unwrap() + 20,
        // After the start-of-scan marker: entropy-coded data.
        _ => signed.windows(2).rposition(|w| w == [0xff, 0xda]).unwrap() + 40,
    };
    for b in &mut signed[at..at + 8] {
        *b ^= 0x5a;
    }
}

#[test]
fn changed_pixels_are_reported_as_tampered() {
    let p = local();
    for (f, mt) in [(ImageFormat::Png, "image/png"), (ImageFormat::Jpeg, "image/jpeg")] {
        let mut signed = p
            .sign(&encode(&picture(3), f), mt, Origin::Created, "tiny")
            .unwrap();
        tamper(&mut signed, mt);
        let r = p.verify(&signed).unwrap();
        assert!(r.present, "{mt}");
        assert!(r.tampered && !r.valid && !r.trusted, "{mt}: {r:?}");
        assert_eq!(r.state, Some("invalid"));
        assert!(
            r.failures.iter().any(|f| f.code == "assertion.dataHash.mismatch"),
            "{mt}: {:?}",
            r.failures
        );
    }
}

#[test]
fn an_edit_records_its_input_as_a_parent_ingredient_with_its_manifest() {
    let p = local();
    let parent = signed_png(&p, 5);
    let edited = p
        .sign(
            &encode(&picture(6), ImageFormat::Png),
            "image/png",
            Origin::Edited {
                input: &parent,
                input_media_type: "image/png",
            },
            "tiny",
        )
        .unwrap();
    let r = p.verify(&edited).unwrap();
    assert!(r.trusted && !r.tampered, "{r:?}");
    let names: Vec<&str> = r.actions.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(names, ["c2pa.opened", "c2pa.edited"]);
    assert_eq!(
        r.actions[1].digital_source_type.as_deref(),
        Some(COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA)
    );
    assert_eq!(r.ingredients, ["input image"]);

    // An input without a manifest is recorded all the same.
    let plain_parent = encode(&picture(8), ImageFormat::Jpeg);
    let edited = p
        .sign(
            &encode(&picture(9), ImageFormat::Jpeg),
            "image/jpeg",
            Origin::Edited {
                input: &plain_parent,
                input_media_type: "image/jpeg",
            },
            "tiny",
        )
        .unwrap();
    let r = p.verify(&edited).unwrap();
    assert!(r.trusted, "{r:?}");
    assert_eq!(r.ingredients, ["input image"]);
}

#[test]
fn a_signer_outside_the_trust_anchors_is_valid_but_not_trusted() {
    let ours = local();
    let theirs = local();
    let signed = signed_png(&theirs, 2);
    let r = ours.verify(&signed).unwrap();
    assert!(r.valid && !r.trusted && !r.tampered, "{r:?}");
    assert_eq!(r.state, Some("valid"));
    assert!(
        r.failures.iter().any(|f| f.code == "signingCredential.untrusted"),
        "{:?}",
        r.failures
    );

    // Adding their root as an extra anchor makes it trusted.
    let their_creds = ca::local_ca().unwrap();
    let theirs = Provenance::new(&their_creds, "").unwrap();
    let signed = signed_png(&theirs, 2);
    let ours = Provenance::new(&ca::local_ca().unwrap(), &their_creds.anchors_pem).unwrap();
    assert!(ours.verify(&signed).unwrap().trusted);
}

#[test]
fn credentials_a_validator_would_reject_stop_the_start_with_a_reason() {
    let a = ca::local_ca().unwrap();
    let b = ca::local_ca().unwrap();
    let creds = |chain: &str, key: &Credentials, source: &str| Credentials {
        chain_pem: chain.to_owned(),
        key_pem: key.key_pem.clone(),
        anchors_pem: a.anchors_pem.clone(),
        source: source.into(),
    };
    // The key of one chain with the certificates of another.
    let e = Provenance::new(&creds(&a.chain_pem, &b, "test"), "")
        .err()
        .expect("mismatched key")
        .to_string();
    assert!(e.contains("the signing credentials from test"), "{e}");

    // The root as the signing certificate: a CA certificate with no claim-signing EKU.
    assert!(Provenance::new(&creds(&a.anchors_pem, &a, "test"), "").is_err());

    let garbage = creds("not a certificate", &b, "garbage.pem");
    let e = Provenance::new(&garbage, "").err().expect("garbage").to_string();
    assert!(e.contains("garbage.pem"), "{e}");
}

#[test]
fn the_local_ca_is_made_once_kept_private_and_reloaded() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("provenance");
    let (first, created) = Credentials::load_or_create(&dir).unwrap();
    assert!(created);
    let (again, created) = Credentials::load_or_create(&dir).unwrap();
    assert!(!created);
    assert_eq!(first.chain_pem, again.chain_pem);
    assert_eq!(*first.key_pem, *again.key_pem);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(ca::KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the signing key must be private");
    }
    // Nothing but the CA folder is left behind (no temporary folders).
    let left: Vec<_> = std::fs::read_dir(home.path()).unwrap().collect();
    assert_eq!(left.len(), 1);
    // The reloaded credentials sign, and their manifests are trusted.
    let p = Provenance::new(&again, "").unwrap();
    let signed = signed_png(&p, 4);
    assert!(p.verify(&signed).unwrap().trusted);
    // The chain meets the C2PA profile: leaf with the claim-signing EKU, then the intermediate.
    assert_eq!(again.chain_pem.matches("BEGIN CERTIFICATE").count(), 2);
}
