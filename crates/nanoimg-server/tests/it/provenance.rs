//! C2PA Content Credentials in the running server: every image it returns (each output format,
//! `url` and `b64_json`, partial images in streams, edits) carries a manifest that
//! `POST /v1/provenance/verify` reports as trusted, an edit names its input as the parent
//! ingredient, a changed file is reported as tampered, and hostile input gets a precise 4xx.

use crate::common::{b64, png, start, tiny_request, TestServer, ALL_SCOPES};
use serde_json::{json, Value};

async fn verify(s: &TestServer, key: &str, bytes: Vec<u8>) -> (u16, Value) {
    s.post_form(
        key,
        "/v1/provenance/verify",
        TestServer::file_form("image", bytes),
    )
    .await
}

/// A deterministic picture with smooth shapes and some texture, like a photo's.
fn picture(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let grain = ((x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) >> 7) % 17;
        let r = 110.0 + 80.0 * (fx * 7.0).sin() * (fy * 3.0).cos() + grain as f32;
        let g = 100.0 + 70.0 * ((fx + fy) * 5.0).cos() + grain as f32;
        let b = 90.0 + 60.0 * (fy * 9.0).sin() + grain as f32;
        image::Rgb([r as u8, g as u8, b as u8])
    })
}

fn assert_created(v: &Value) {
    let c = &v["c2pa"];
    assert_eq!(c["present"], true, "{v}");
    assert_eq!(c["trusted"], true, "{v}");
    assert_eq!(c["tampered"], false, "{v}");
    assert_eq!(c["state"], "trusted", "{v}");
    let created = c["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "c2pa.created")
        .unwrap_or_else(|| panic!("no c2pa.created: {v}"));
    assert_eq!(
        created["digital_source_type"],
        nanoimg_safety::provenance::TRAINED_ALGORITHMIC_MEDIA
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_output_format_and_delivery_carries_a_trusted_manifest() {
    let s = start(|_| {}).await;
    let (_, key) = s.tenant("acme", ALL_SCOPES).await;
    for format in ["png", "jpeg", "webp"] {
        let r = s
            .generate(&key, tiny_request(json!({"output_format": format, "n": 2})))
            .await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        for d in v["data"].as_array().unwrap() {
            let (status, rep) = verify(&s, &key, b64(&d["b64_json"])).await;
            assert_eq!(status, 200, "{rep}");
            assert_created(&rep);
            assert_eq!(rep["object"], "provenance.verification");
            assert_eq!(rep["c2pa"]["media_type"], format!("image/{format}"));
        }
    }
    // A signed link serves the same signed file.
    let r = s
        .generate(&key, tiny_request(json!({"response_format": "url"})))
        .await;
    let v: Value = r.json().await.unwrap();
    let file = s
        .http
        .get(v["data"][0]["url"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_created(&verify(&s, &key, file.to_vec()).await.1);
    // So does an asset's content.
    let id = s.submit_id(&key, tiny_request(json!({}))).await;
    let rec = s.wait_for(&key, &id, "succeeded").await;
    let asset = rec["result"]["images"][0]["id"].as_str().unwrap().to_owned();
    let bytes = s
        .http
        .get(s.url(&format!("/v1/assets/{asset}/content")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_created(&verify(&s, &key, bytes.to_vec()).await.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_images_in_a_stream_are_signed_too() {
    let s = start(|_| {}).await;
    let (_, key) = s.tenant("acme", ALL_SCOPES).await;
    let text = s
        .http
        .post(s.url("/v1/images/generations"))
        .bearer_auth(&key)
        .json(&tiny_request(
            json!({"stream": true, "partial_images": 1, "steps": 4}),
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut kinds = vec![];
    for line in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        let ev: Value = serde_json::from_str(line).unwrap();
        if let Some(img) = ev.get("b64_json") {
            kinds.push(ev["type"].as_str().unwrap().to_owned());
            assert_created(&verify(&s, &key, b64(img)).await.1);
        }
    }
    assert_eq!(
        kinds,
        ["image_generation.partial_image", "image_generation.completed"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_names_its_input_as_the_parent_ingredient() {
    let s = start(|_| {}).await;
    let (_, key) = s.tenant("acme", ALL_SCOPES).await;
    let form = reqwest::multipart::Form::new()
        .text("prompt", "a dog")
        .text("steps", "2")
        .part(
            "image",
            reqwest::multipart::Part::bytes(png(64, 64, None)).file_name("in.png"),
        );
    let r = s.edit(&key, form).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let (_, rep) = verify(&s, &key, b64(&v["data"][0]["b64_json"])).await;
    let c = &rep["c2pa"];
    assert_eq!(c["trusted"], true, "{rep}");
    let actions: Vec<&str> = c["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["c2pa.opened", "c2pa.edited"], "{rep}");
    assert_eq!(
        c["actions"][1]["digital_source_type"],
        nanoimg_safety::provenance::COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
    );
    assert_eq!(c["ingredients"], json!(["input image"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_is_tampered_an_unsigned_one_has_no_manifest_and_the_mark_is_read() {
    let s = start(|_| {}).await;
    let (_, key) = s.tenant("acme", ALL_SCOPES).await;
    let r = s.generate(&key, tiny_request(json!({}))).await;
    let v: Value = r.json().await.unwrap();
    let mut signed = b64(&v["data"][0]["b64_json"]);
    let at = signed.windows(4).position(|w| w == b"IDAT").unwrap() + 12;
    signed[at] ^= 0x01;
    signed[at + 1] ^= 0x01;
    let (status, rep) = verify(&s, &key, signed).await;
    // Flipped bits may break the PNG's compressed stream; then the decode refuses it with 400.
    if status == 200 {
        assert_eq!(rep["c2pa"]["tampered"], true, "{rep}");
        assert_eq!(rep["c2pa"]["valid"], false, "{rep}");
        assert!(rep["summary"].as_str().unwrap().contains("tampered"), "{rep}");
    } else {
        assert_eq!(status, 400, "{rep}");
    }

    // A picture marked by the watermark alone (no manifest): the payload is read back.
    let wm = nanoimg_safety::watermark::Watermarker::new();
    let mut img = picture(512, 512);
    wm.embed(&mut img, 0x0123_4567_89ab_cdef);
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .unwrap();
    let (status, rep) = verify(&s, &key, bytes).await;
    assert_eq!(status, 200, "{rep}");
    assert_eq!(rep["c2pa"]["present"], false, "{rep}");
    assert_eq!(rep["c2pa"]["state"], Value::Null, "{rep}");
    assert_eq!(rep["watermark"]["present"], true, "{rep}");
    assert_eq!(rep["watermark"]["payload"], "0123456789abcdef", "{rep}");
    // The detector's score is not told: it would guide an attack on the mark.
    assert!(rep["watermark"].get("confidence").is_none(), "{rep}");

    // An unmarked, unsigned picture: neither.
    let (_, rep) = verify(&s, &key, png(64, 64, None)).await;
    assert_eq!(rep["c2pa"]["present"], false);
    assert_eq!(rep["watermark"]["present"], false);
    assert_eq!(rep["watermark"]["payload"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_verify_requests_get_a_precise_4xx() {
    let s = start(|_| {}).await;
    let (_, key) = s.tenant("acme", ALL_SCOPES).await;
    let (status, e) = verify(&s, &key, b"<svg xmlns='http://www.w3.org/2000/svg'/>".to_vec()).await;
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["error"]["param"], "image", "{e}");

    // A GIF decodes, but is not a format C2PA manifests are read from here.
    let mut gif = Vec::new();
    image::DynamicImage::ImageRgb8(image::RgbImage::new(8, 8))
        .write_to(&mut std::io::Cursor::new(&mut gif), image::ImageFormat::Gif)
        .ok();
    if !gif.is_empty() {
        let (status, e) = verify(&s, &key, gif).await;
        assert_eq!(status, 400, "{e}");
    }

    // Wrong field name, extra text field, no key.
    let file = || reqwest::multipart::Part::bytes(png(8, 8, None)).file_name("a.png");
    let forms = [
        (
            Some(&key),
            reqwest::multipart::Form::new().part("file", file()),
            400,
        ),
        (
            Some(&key),
            reqwest::multipart::Form::new()
                .text("note", "hi")
                .part("image", file()),
            400,
        ),
        (None, reqwest::multipart::Form::new().part("image", file()), 401),
    ];
    for (key, form, want) in forms {
        let mut req = s.http.post(s.url("/v1/provenance/verify")).multipart(form);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), want);
        let e: Value = r.json().await.unwrap();
        if want == 400 {
            assert!(
                e["error"]["param"] == "image" || e["error"]["param"] == "note",
                "{e}"
            );
        }
    }
    // Decompression bombs and other hostile files: tests/hostile.rs walks this route too.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_ca_survives_a_restart_and_readyz_names_it() {
    let mut s = start(|_| {}).await;
    let (_, key) = s.tenant("acme", ALL_SCOPES).await;
    let r = s.generate(&key, tiny_request(json!({}))).await;
    let v: Value = r.json().await.unwrap();
    let before = b64(&v["data"][0]["b64_json"]);
    s.restart().await;
    // Made before the restart, still trusted after it: the CA was kept, not remade.
    assert_created(&verify(&s, &key, before).await.1);
    let r: Value = reqwest::get(s.url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["safety"]["provenance"]["on"], true, "{r}");
    assert!(
        r["safety"]["provenance"]["detail"]
            .as_str()
            .unwrap()
            .contains("local CA"),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_is_charged_to_the_tenants_compute_budget() {
    // 512² is a quarter megapixel: two megapixel-steps a check (four a megapixel, rounded up);
    // five a minute.
    let s = start(|c| c.rate.megapixel_steps_per_minute = 5).await;
    let (_, key) = s.tenant("checker", ALL_SCOPES).await;
    let mut bytes = Vec::new();
    picture(512, 512)
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .unwrap();
    for _ in 0..2 {
        let (status, rep) = verify(&s, &key, bytes.clone()).await;
        assert_eq!(status, 200, "{rep}");
    }
    let (status, e) = verify(&s, &key, bytes).await;
    assert_eq!(status, 429, "{e}");
    assert_eq!(e["error"]["code"], "compute_budget_exceeded", "{e}");
}
