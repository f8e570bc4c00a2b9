//! OpenAI edits with several images (`image[]`, up to 16): the first is edited, the rest
//! condition the edit as references, as a character's do — so they change the result, and
//! different references change it differently. Variations take one image; more references
//! than the engine conditions on are refused rather than silently dropped; a reference is
//! moderated and stored like any upload.

use crate::common::*;
use serde_json::Value;

/// A PNG of one colour.
fn solid(rgb: [u8; 3]) -> Vec<u8> {
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(64, 64, image::Rgb(rgb)))
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

fn form(images: &[Vec<u8>], extra: &[(&'static str, &'static str)]) -> reqwest::multipart::Form {
    let mut f = reqwest::multipart::Form::new()
        .text("prompt", "a smiling face")
        .text("steps", "3")
        .text("seed", "5")
        .text("response_format", "b64_json");
    for (k, v) in extra {
        f = f.text(*k, *v);
    }
    for (i, img) in images.iter().enumerate() {
        let part = reqwest::multipart::Part::bytes(img.clone())
            .file_name(format!("{i}.png"))
            .mime_str("image/png")
            .unwrap();
        f = f.part("image[]", part);
    }
    f
}

async fn edited(s: &TestServer, key: &str, images: &[Vec<u8>]) -> image::RgbImage {
    let r = s.edit(key, form(images, &[])).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    image::load_from_memory(&b64(&v["data"][0]["b64_json"]))
        .unwrap()
        .to_rgb8()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_first_image_is_edited_and_the_rest_condition_it() {
    let s = start(|_| {}).await;
    let (_, key) = s.tenant("multi", ALL_SCOPES).await;
    let subject = png(64, 64, None);
    let alone = edited(&s, &key, std::slice::from_ref(&subject)).await;
    let red = edited(&s, &key, &[subject.clone(), solid([220, 30, 30])]).await;
    let red_again = edited(&s, &key, &[subject.clone(), solid([220, 30, 30])]).await;
    let blue = edited(
        &s,
        &key,
        &[subject.clone(), solid([30, 30, 220]), solid([20, 60, 200])],
    )
    .await;
    // The references condition the edit; the same ones the same way (only the watermark differs).
    assert!(
        mean_abs_diff(&red, &alone) > 3.0,
        "{}",
        mean_abs_diff(&red, &alone)
    );
    assert!(mean_abs_diff(&red, &blue) > 3.0, "{}", mean_abs_diff(&red, &blue));
    assert!(mean_abs_diff(&red, &red_again) < mean_abs_diff(&red, &blue) / 2.0);
    // The edited image sets the size: the references are cropped to it.
    assert_eq!(red.dimensions(), (64, 64));

    // Each reference is kept as the tenant's upload, like the edited image.
    let assets = s.get_json(&key, "/v1/assets").await;
    let uploads = assets["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "upload")
        .count();
    assert_eq!(uploads, 1 + 2 + 2 + 3, "{assets}");

    // Refused, not dropped: more references than the engine conditions on (8), more than 16
    // images, several images for a variation.
    let too_many: Vec<Vec<u8>> = (0..10).map(|i| solid([i * 20, 0, 0])).collect();
    let r = s.edit(&key, form(&too_many, &[])).await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["param"], "image", "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("at most 8"),
        "{e}"
    );
    let seventeen: Vec<Vec<u8>> = (0..17).map(|i| solid([i * 10, 0, 0])).collect();
    let r = s.edit(&key, form(&seventeen, &[])).await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"].as_str().unwrap().contains("at most 16"),
        "{e}"
    );
    let r = s
        .http
        .post(s.url("/v1/images/variations"))
        .bearer_auth(&key)
        .multipart(form(&[subject.clone(), solid([1, 2, 3])], &[]).text("n", "1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // A reference that is not an image names the field.
    let r = s
        .edit(&key, form(&[subject.clone(), b"not an image".to_vec()], &[]))
        .await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["param"], "image", "{e}");
}
