//! The face detector (MTCNN on candle, facenet-pytorch's weights) on real photographs from a
//! package registry: faces where there are faces, none where there are none.

use nanoimg_safety::faces::FaceDetector;
use nanoimg_safety::models::MTCNN;
use nanoimg_safety::testing::{models_dir, picture};

fn detector() -> FaceDetector {
    FaceDetector::load(&MTCNN.path(&models_dir())).expect("MTCNN loads")
}

#[test]
fn faces_are_found_where_they_are() {
    let d = detector();
    // The astronaut portrait (512×512): one face, high on the picture's left of centre.
    let faces = d.detect(&picture("astronaut.png")).unwrap();
    println!("astronaut.png: {faces:?}");
    assert_eq!(faces.len(), 1, "{faces:?}");
    let f = faces[0];
    assert!(f.score > 0.95, "{f:?}");
    let (cx, cy) = (f.x + f.width / 2.0, f.y + f.height / 2.0);
    assert!(
        (150.0..300.0).contains(&cx) && (50.0..180.0).contains(&cy),
        "{f:?}"
    );
    assert!((50.0..160.0).contains(&f.width), "{f:?}");
    // The same face at a quarter of the size is still found.
    let small = image::imageops::resize(
        &picture("astronaut.png"),
        128,
        128,
        image::imageops::FilterType::Triangle,
    );
    assert_eq!(d.detect(&small).unwrap().len(), 1);
    // The cameraman (grayscale, a face in profile to three-quarters).
    let faces = d.detect(&picture("camera.png")).unwrap();
    println!("camera.png: {faces:?}");
    assert_eq!(faces.len(), 1, "{faces:?}");
}

#[test]
fn no_face_is_found_where_there_is_none() {
    let d = detector();
    for name in ["coffee.png", "rocket.jpg", "chelsea.png"] {
        let faces = d.detect(&picture(name)).unwrap();
        assert!(faces.is_empty(), "{name}: {faces:?}");
    }
    // Flat and tiny pictures are answered, not refused.
    assert!(d.detect(&image::RgbImage::new(8, 8)).unwrap().is_empty());
    assert!(d
        .detect(&image::RgbImage::from_pixel(200, 100, image::Rgb([200, 30, 30])))
        .unwrap()
        .is_empty());
}

#[test]
fn a_damaged_weights_file_is_an_error_not_a_panic() {
    use nanoimg_safety::faces::torch_legacy::read;
    let good = std::fs::read(MTCNN.path(&models_dir()).join("pnet.pt")).unwrap();
    let tensors = read(&good).unwrap();
    assert_eq!(tensors.len(), 13);
    assert_eq!(tensors["conv4_2.weight"].dims(), &[4, 32, 1, 1]);
    for bad in [
        &b"not a PyTorch file"[..],
        &good[..good.len() - 100],
        &good[..good.len() / 2],
        &good[..30],
    ] {
        let e = read(bad).unwrap_err().to_string();
        assert!(e.contains("legacy PyTorch file"), "{e}");
    }
}
