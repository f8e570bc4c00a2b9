//! The safety layers in the running server, with the real models (from the pinned wheels):
//! which layers are on is reported, the semantic layer refuses paraphrases, and the image layer
//! refuses outputs and uploads without keeping anything.

use crate::common;

use crate::common::{audit_of, png, previews, start, tiny_request, watch, TestServer, ALL_SCOPES};
use serde_json::{json, Value};

fn with_models(c: &mut nanoimg_server::Config) {
    c.safety.models_dir = Some(nanoimg_safety::testing::models_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_which_layers_are_off_and_why() {
    let s = start(|_| {}).await;
    let r: Value = reqwest::get(s.url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let layers = &r["safety"];
    assert_eq!(layers["lexicon"]["on"], true, "{r}");
    for off in ["semantic", "image"] {
        assert_eq!(layers[off]["on"], false, "{r}");
        let why = layers[off]["detail"].as_str().unwrap();
        assert!(why.contains("nanoimg models fetch safety"), "{why}");
    }

    let s = start(with_models).await;
    let r: Value = reqwest::get(s.url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for on in ["lexicon", "semantic", "image"] {
        assert_eq!(r["safety"][on]["on"], true, "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_all_layers_refuses_to_start_without_the_models() {
    let e = match common::try_start(|c| c.safety.require_all_layers = true).await {
        Ok(_) => panic!("started with layers off"),
        Err(e) => e,
    };
    assert!(e.contains("semantic") && e.contains("image"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_semantic_layer_refuses_what_no_word_list_names() {
    let s = start(with_models).await;
    let (_, key) = s.tenant("acme", ALL_SCOPES).await;
    let r = s
        .generate(
            &key,
            tiny_request(json!({"prompt": "castle garden at noon, a lady with not a thread on her, 8k"})),
        )
        .await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "moderation_blocked", "{e}");
    assert_eq!(e["error"]["categories"], json!(["sexual"]));
    // Benign prompts still pass.
    let r = s
        .generate(&key, tiny_request(json!({"prompt": "a woman in a winter coat"})))
        .await;
    assert_eq!(r.status(), 200);
    // The audit event names the layer and the score.
    let ev = audit_of(&s, "moderation.blocked", 1).await;
    assert_eq!(ev.len(), 1);
    let flags = ev[0]["detail"]["flags"].as_array().unwrap();
    assert!(flags.iter().all(|f| f["layer"] == "semantic"), "{flags:?}");
    let flag = &flags[0];
    assert!(flag["score"].as_f64().unwrap() > 0.5, "{flag}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_output_is_neither_stored_nor_returned() {
    // A threshold no image can stay under: every output is refused.
    let s = start(|c| {
        with_models(c);
        c.safety.nsfw_threshold = f32::MIN_POSITIVE;
    })
    .await;
    let (_, key) = s.tenant("acme", ALL_SCOPES).await;
    let r = s.generate(&key, tiny_request(json!({"n": 2}))).await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "moderation_blocked", "{e}");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(msg.contains("nothing was stored"), "{msg}");

    // The async route: the job fails with the code, and no preview was ever sent.
    let id = s.submit_id(&key, tiny_request(json!({"steps": 30}))).await;
    let events = watch(&s, &key, &id).await;
    assert_eq!(previews(&events), vec![], "{events:?}");
    let rec = s.wait_for(&key, &id, "failed").await;
    assert!(rec["error"].as_str().unwrap().contains("safety system"), "{rec}");

    let assets = s.get_json(&key, "/v1/assets").await;
    assert_eq!(assets["data"], json!([]), "{assets}");
    let ev = audit_of(&s, "moderation.blocked", 2).await;
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert_eq!(ev[0]["detail"]["layer"], "image");
    assert_eq!(ev[0]["detail"]["input"], "output");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previews_sent_with_the_image_layer_on_are_few_and_checked() {
    let s = start(with_models).await;
    let (_, key) = s.tenant("acme", ALL_SCOPES).await;
    // Watched live: only the 4 evenly spaced steps (12, 24, 36, 48 of 60) make previews, and
    // those sent passed the layer.
    let id = s.submit_id(&key, tiny_request(json!({"steps": 60}))).await;
    let events = watch(&s, &key, &id).await;
    assert_eq!(events.last().unwrap().0, "succeeded", "{events:?}");
    let seen = previews(&events);
    assert!(!seen.is_empty() && seen.len() <= 4, "{seen:?}");
    assert!(
        seen.iter().all(|(step, _)| [12, 24, 36, 48].contains(step)),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upload_is_not_stored() {
    let s = start(|c| {
        with_models(c);
        c.safety.nsfw_threshold = f32::MIN_POSITIVE;
    })
    .await;
    let (_, key) = s.tenant("acme", ALL_SCOPES).await;
    let (st, e) = s
        .post_form(
            &key,
            "/v1/assets",
            TestServer::file_form("file", png(64, 64, None)),
        )
        .await;
    assert_eq!(st, 400);
    assert_eq!(e["error"]["code"], "moderation_blocked", "{e}");
    assert_eq!(e["error"]["param"], "file");
    // An edit's image too, and its mask: a mask is kept as a readable asset, so it is judged
    // (as the mask it stands for) like any picture.
    let form = TestServer::file_form("image", png(64, 64, None))
        .text("prompt", "a cat")
        .text("size", "64x64");
    let (st, e) = s.post_form(&key, "/v1/images/edits", form).await;
    assert_eq!((st, &e["error"]["param"]), (400, &json!("image")), "{e}");
    let form = TestServer::file_form("image", png(64, 64, None))
        .part(
            "mask",
            reqwest::multipart::Part::bytes(png(64, 64, Some(0))).file_name("mask.png"),
        )
        .text("prompt", "a cat")
        .text("size", "64x64");
    let (st, e) = s.post_form(&key, "/v1/images/edits", form).await;
    assert_eq!((st, &e["error"]["param"]), (400, &json!("mask")), "{e}");
    let assets = s.get_json(&key, "/v1/assets").await;
    assert_eq!(assets["data"], json!([]), "{assets}");
    let ev = audit_of(&s, "moderation.blocked", 3).await;
    assert_eq!(ev.len(), 3);
    assert_eq!(ev[0]["detail"]["input"], "file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_returned_image_carries_a_detectable_watermark() {
    use base64::Engine;
    let s = start(|_| {}).await;
    let (_, key) = s.tenant("acme", ALL_SCOPES).await;
    let wm = nanoimg_safety::watermark::Watermarker::new();
    for format in ["png", "jpeg", "webp"] {
        let r = s
            .generate(
                &key,
                tiny_request(json!({"size": "512x512", "output_format": format})),
            )
            .await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        for d in v["data"].as_array().unwrap() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(d["b64_json"].as_str().unwrap())
                .unwrap();
            let img = image::load_from_memory(&bytes).unwrap().to_rgb8();
            let found = wm.detect(&img);
            // The test model's random weights draw saturated noise with far more energy in the
            // mark's band than any real picture, so the payload does not always decode here
            // (on realistic pictures it does: see benches/watermark.rs); the sync pattern is
            // always clearly there (unmarked pictures stay below 6).
            assert!(found.score >= 8.0, "{format}: {found:?}");
        }
    }
    // The payload is the id kept in the asset's metadata.
    let id = s.submit_id(&key, tiny_request(json!({"size": "512x512"}))).await;
    let rec = s.wait_for(&key, &id, "succeeded").await;
    let asset_id = rec["result"]["images"][0]["id"].as_str().unwrap().to_owned();
    let asset = s.get_json(&key, &format!("/v1/assets/{asset_id}")).await;
    let bytes = s
        .http
        .get(s.url(&format!("/v1/assets/{asset_id}/content")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let found = wm.detect(&image::load_from_memory(&bytes).unwrap().to_rgb8());
    let kept = asset["metadata"]["watermark"].as_str().unwrap();
    assert_eq!(kept.len(), 16, "{asset}");
    assert!(found.score >= 8.0, "{found:?}");
    if let Some(p) = found.payload {
        assert_eq!(format!("{p:016x}"), kept);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_replaces_its_inputs_mark_instead_of_stacking_a_second() {
    use base64::Engine;
    let s = start(|_| {}).await;
    let (_, key) = s.tenant("acme", ALL_SCOPES).await;
    let wm = nanoimg_safety::watermark::Watermarker::new();
    // A photo-like picture carrying a mark, as an earlier output would.
    let mut input = image::RgbImage::from_fn(512, 512, |x, y| {
        let (fx, fy) = (x as f32 / 512.0, y as f32 / 512.0);
        let grain = ((x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) >> 7) % 17;
        let v = 110.0 + 80.0 * (fx * 7.0).sin() * (fy * 3.0).cos() + grain as f32;
        image::Rgb([v as u8, (v * 0.8) as u8, (200.0 - v * 0.5) as u8])
    });
    wm.embed(&mut input, 0x1111_2222_3333_4444);
    let mut png_in = Vec::new();
    input
        .write_to(&mut std::io::Cursor::new(&mut png_in), image::ImageFormat::Png)
        .unwrap();
    // Repaint a small square; the rest is kept.
    let mut mask = image::RgbaImage::from_pixel(512, 512, image::Rgba([0, 0, 0, 255]));
    for y in 200..264 {
        for x in 200..264 {
            mask.put_pixel(x, y, image::Rgba([0, 0, 0, 0]));
        }
    }
    let mut png_mask = Vec::new();
    mask.write_to(&mut std::io::Cursor::new(&mut png_mask), image::ImageFormat::Png)
        .unwrap();
    let part = |b: Vec<u8>, name: &str| reqwest::multipart::Part::bytes(b).file_name(name.to_owned());
    let form = reqwest::multipart::Form::new()
        .text("prompt", "a red ball")
        .text("steps", "2")
        .text("size", "512x512")
        .part("image", part(png_in, "in.png"))
        .part("mask", part(png_mask, "mask.png"));
    let r = s.edit(&key, form).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let job = v["job_id"].as_str().unwrap();
    let rec = s.get_json(&key, &format!("/v1/jobs/{job}")).await;
    let asset_id = rec["result"]["images"][0]["id"].as_str().unwrap();
    let asset = s.get_json(&key, &format!("/v1/assets/{asset_id}")).await;
    assert_eq!(
        asset["metadata"]["replaced_watermark"], "1111222233334444",
        "{asset}"
    );
    let new_id = asset["metadata"]["watermark"].as_str().unwrap();
    let out = base64::engine::general_purpose::STANDARD
        .decode(v["data"][0]["b64_json"].as_str().unwrap())
        .unwrap();
    let found = wm.detect(&image::load_from_memory(&out).unwrap().to_rgb8());
    // One mark, the output's own: the input's is gone, not fighting the new one.
    assert!(found.present, "{found:?}");
    assert_eq!(format!("{:016x}", found.payload.unwrap()), new_id);
}

/// A photograph as PNG bytes.
fn png_of(img: &image::RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img.clone())
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_face_detector_only_references_with_faces_need_consent() {
    use nanoimg_safety::testing::picture;
    let s = start(with_models).await;
    let ready: Value = reqwest::get(s.url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["safety"]["faces"]["on"], true, "{ready}");
    let (_, key) = s.tenant("faces", ALL_SCOPES).await;
    let form = |name: &str, pics: &[&image::RgbImage], consent: bool| {
        let mut f = reqwest::multipart::Form::new()
            .text("name", name.to_owned())
            .text("consent", consent.to_string());
        for (i, p) in pics.iter().enumerate() {
            f = f.part(
                "reference",
                reqwest::multipart::Part::bytes(png_of(p)).file_name(format!("r{i}.png")),
            );
        }
        f
    };
    let (coffee, astronaut) = (picture("coffee.png"), picture("astronaut.png"));
    // No face: no attestation needed, and the character records 0 faces.
    let (st, c) = s
        .post_form(&key, "/v1/characters", form("Cup", &[&coffee], false))
        .await;
    assert_eq!(st, 201, "{c}");
    assert_eq!(c["references"][0]["faces"], 0, "{c}");
    // A face (the second reference): refused without the attestation, and the reason says which.
    let (st, e) = s
        .post_form(
            &key,
            "/v1/characters",
            form("Eileen", &[&coffee, &astronaut], false),
        )
        .await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (400, Some("consent_required")),
        "{e}"
    );
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(msg.contains("reference 2 shows 1 face"), "{msg}");
    let (st, c) = s
        .post_form(
            &key,
            "/v1/characters",
            form("Eileen", &[&coffee, &astronaut], true),
        )
        .await;
    assert_eq!(st, 201, "{c}");
    assert_eq!(c["references"][1]["faces"], 1, "{c}");
    assert_eq!(c["references"][1]["consent"], true, "{c}");
    let created = audit_of(&s, "character.create", 2).await;
    assert!(
        created.iter().any(|e| e["detail"]["faces"] == json!([0, 1])),
        "{created:?}"
    );
    // A LoRA always needs the attestation, even beside face-free references: no layer can see
    // whose likeness it carries.
    let lora = crate::characters::tiny_lora(crate::characters::SD1_QUERY, 32);
    let with_lora = |consent: bool| {
        form("Trained", &[&coffee], consent).part(
            "lora",
            reqwest::multipart::Part::bytes(lora.clone()).file_name("t.safetensors"),
        )
    };
    let (st, e) = s.post_form(&key, "/v1/characters", with_lora(false)).await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (400, Some("consent_required")),
        "{e}"
    );
    assert!(e["error"]["message"].as_str().unwrap().contains("LoRA"), "{e}");
    let (st, c) = s.post_form(&key, "/v1/characters", with_lora(true)).await;
    assert_eq!(st, 201, "{c}");
}
