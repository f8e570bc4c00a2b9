//! FLUX.1 models behind the server, on no route of their own: listed by `/v1/models` with what
//! they are, drawn by `/v1/images/generations`, and a Kontext model editing an edit session's
//! image from the user's words (`instruct`) while the planner keeps exact pixel work exact; a
//! plan that asks a model for what it cannot do is refused before it runs.

use crate::common::*;
use nanoimg_engine::synthetic::{write_flux_model, FluxSpec};
use serde_json::{json, Value};

async fn flux_server() -> TestServer {
    start_with_model(
        |_| {},
        |tiny| {
            let models = tiny.parent().unwrap();
            write_flux_model(&models.join("flux-schnell"), &FluxSpec::tiny(false, false), 5).unwrap();
            write_flux_model(&models.join("kontext"), &FluxSpec::tiny(true, true), 6).unwrap();
        },
    )
    .await
}

/// A picture with a bright top and a dark bottom, as PNG.
fn scene(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| match y < h / 2 {
        true => image::Rgb([90, 140, (150 + x * 100 / w) as u8]),
        false => image::Rgb([(40 + x * 120 / w) as u8, 70, 30]),
    });
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

async fn post(s: &TestServer, key: &str, path: &str, body: Value) -> (u16, Value) {
    let r = s
        .http
        .post(s.url(path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn decoded(b64: &Value) -> image::RgbImage {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.as_str().unwrap())
        .unwrap();
    image::load_from_memory(&bytes).unwrap().to_rgb8()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flux_models_are_listed_and_draw_through_the_openai_route() {
    let s = flux_server().await;
    let (_, key) = s.tenant("flux", ALL_SCOPES).await;
    let models = s.get_json(&key, "/v1/models").await;
    let entry = |id: &str| -> Value {
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("{id} not in {models}"))
            .clone()
    };
    let (schnell, kontext) = (entry("flux-schnell"), entry("kontext"));
    assert_eq!(
        (schnell["family"].as_str(), schnell["kontext"].as_bool()),
        (Some("flux"), Some(false))
    );
    assert_eq!(schnell["defaults"]["steps"], 4);
    assert_eq!(
        (
            kontext["kontext"].as_bool(),
            kontext["embedded_guidance"].as_bool()
        ),
        (Some(true), Some(true))
    );

    let (st, v) = post(
        &s,
        &key,
        "/v1/images/generations",
        json!({"model": "flux-schnell", "prompt": "a lighthouse at dusk", "n": 2, "size": "64x64",
               "response_format": "b64_json"}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let images: Vec<_> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| decoded(&d["b64_json"]))
        .collect();
    assert_eq!(images.len(), 2);
    assert_eq!(images[0].dimensions(), (64, 64));
    assert_ne!(images[0], images[1]);

    // What FLUX does not take is refused by name.
    let (st, v) = post(
        &s,
        &key,
        "/v1/images/generations",
        json!({"model": "flux-schnell", "prompt": "a lighthouse", "negative_prompt": "fog", "size": "64x64"}),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"]["param"], "negative_prompt", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kontext_model_edits_a_session_in_the_users_words() {
    let s = flux_server().await;
    let (_, key) = s.tenant("kontext", ALL_SCOPES).await;
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(scene(64, 64)).file_name("in.png"),
    );
    let r = s
        .http
        .post(s.url("/v1/assets"))
        .bearer_auth(&key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let image: Value = r.json().await.unwrap();
    let (st, session) = post(&s, &key, "/v1/edit-sessions", json!({"image_id": image["id"]})).await;
    assert_eq!(st, 201, "{session}");
    let id = session["id"].as_str().unwrap().to_owned();
    let at = format!("/v1/edit-sessions/{id}/instructions");
    let ops = |v: &Value| -> Vec<String> {
        v["version"]["plan"]["ops"]
            .as_array()
            .unwrap_or_else(|| panic!("no plan: {v}"))
            .iter()
            .map(|o| o["op"].as_str().unwrap().to_owned())
            .collect()
    };

    // On the Kontext model: the generative clauses reach it as one instruction, in the words
    // said; the flip stays an exact pixel operation.
    let said = "make the sky a sunset, add a red kite and flip it";
    let (st, v) = post(
        &s,
        &key,
        &at,
        json!({"instruction": said, "model": "kontext", "steps": 2, "seed": 4}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(ops(&v), ["instruct", "flip"]);
    assert_eq!(
        v["version"]["plan"]["ops"][0]["instruction"],
        "make the sky a sunset, add a red kite"
    );
    let r = s
        .http
        .get(s.url(&format!(
            "/v1/assets/{}/content",
            v["version"]["image_id"].as_str().unwrap()
        )))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let edited = image::load_from_memory(&r.bytes().await.unwrap())
        .unwrap()
        .to_rgb8();
    assert_eq!(edited.dimensions(), (64, 64));

    // The same words on a UNet model make prompts of their own.
    let (st, v) = post(
        &s,
        &key,
        &at,
        json!({"instruction": said, "model": "tiny", "steps": 2, "dry_run": true}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let planned: Vec<&str> = v["plan"]["ops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["op"].as_str().unwrap())
        .collect();
    assert!(!planned.contains(&"instruct"), "{v}");

    // A plan that hands an instruction to a model that cannot follow one is refused before it
    // runs; moderation still reads the instruction's words.
    let plan = json!({"version": 1, "ops": [{"op": "instruct", "instruction": "add a hat"}]});
    let (st, v) = post(&s, &key, &at, json!({"plan": plan, "model": "tiny"})).await;
    assert_eq!((st, v["error"]["param"].as_str()), (400, Some("plan")), "{v}");
    assert!(v.to_string().contains("FLUX.1 Kontext"), "{v}");
    let blocked = json!({"version": 1, "ops": [{"op": "instruct", "instruction": "make her a nude child"}]});
    let (st, v) = post(&s, &key, &at, json!({"plan": blocked, "model": "kontext"})).await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"]["code"], "moderation_blocked", "{v}");
}
