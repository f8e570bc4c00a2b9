//! LoRAs per request from the server's library: `loras` in the body and `<lora:name:weight>`
//! in the prompt draw the same (the tag is not text the encoder sees), visibly not the base
//! model's; unknown names and malformed tags are 400s naming the field; the trigger words are
//! moderated; the A1111 API lists the library and writes the tags back in its infotexts.
//! Textual-inversion embeddings in the embeddings folder are words every model knows.

use crate::common::*;
use serde_json::{json, Value};

async fn draw(s: &TestServer, key: &str, extra: Value) -> reqwest::Response {
    s.http
        .post(s.url("/v1/images/generations"))
        .bearer_auth(key)
        .json(&tiny_request(extra))
        .send()
        .await
        .unwrap()
}

async fn image(s: &TestServer, key: &str, extra: Value) -> image::RgbImage {
    let r = draw(s, key, extra).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    image::load_from_memory(&b64(&v["data"][0]["b64_json"]))
        .unwrap()
        .to_rgb8()
}

async fn refused(s: &TestServer, key: &str, extra: Value) -> Value {
    let r = draw(s, key, extra).await;
    assert_eq!(r.status(), 400);
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn library_loras_by_field_or_prompt_tag() {
    let s = start(|_| {}).await;
    let (_, key) = s.tenant("lora-user", ALL_SCOPES).await;
    let library = s.model.path.parent().unwrap().join("loras");
    nanoimg_engine::synthetic::write_lora(&s.model.path, &library.join("ink.safetensors"), 1).unwrap();

    let base = image(&s, &key, json!({"response_format": "b64_json"})).await;
    let by_field = image(
        &s,
        &key,
        json!({"response_format": "b64_json", "loras": [{"name": "ink", "weight": 0.9}]}),
    )
    .await;
    let by_tag = image(
        &s,
        &key,
        json!({"response_format": "b64_json", "prompt": "a cat <lora:ink:0.9>"}),
    )
    .await;
    let by_string = image(
        &s,
        &key,
        json!({"response_format": "b64_json", "loras": "ink:0.9"}),
    )
    .await;
    assert!(mean_abs_diff(&by_field, &base) > 10.0);
    // The same drawing but for the watermark: the tag is not text.
    assert!(mean_abs_diff(&by_field, &by_tag) < 5.0);
    assert!(mean_abs_diff(&by_field, &by_string) < 5.0);

    let e = refused(&s, &key, json!({"loras": ["nope"]})).await;
    assert_eq!(e["error"]["param"], "loras", "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("available: ink"),
        "{e}"
    );
    let e = refused(&s, &key, json!({"prompt": "a cat <lora:ink:lots>"})).await;
    assert_eq!(e["error"]["param"], "prompt", "{e}");
    let e = refused(&s, &key, json!({"loras": [{"name": "ink", "weight": 40}]})).await;
    assert_eq!(e["error"]["param"], "loras", "{e}");
    let e = refused(&s, &key, json!({"negative_prompt": "<lora:ink:1>"})).await;
    assert_eq!(e["error"]["param"], "negative_prompt", "{e}");
    let e = refused(&s, &key, json!({"loras": vec!["ink"; 9]})).await;
    assert_eq!(e["error"]["param"], "loras", "{e}");
    // A name cannot reach outside the library.
    let e = refused(
        &s,
        &key,
        json!({"loras": ["../tiny/unet/diffusion_pytorch_model"]}),
    )
    .await;
    assert_eq!(e["error"]["param"], "loras", "{e}");

    // In a form (an edit, as the SDKs send extra_body there): the string form.
    let form = reqwest::multipart::Form::new()
        .text("prompt", "a cat")
        .text("steps", "2")
        .text("seed", "1")
        .text("response_format", "b64_json")
        .text("loras", "ink:0.9")
        .part(
            "image",
            reqwest::multipart::Part::bytes(png(64, 64, None)).file_name("in.png"),
        );
    let r = s.edit(&key, form).await;
    assert_eq!(r.status(), 200);
    let form = reqwest::multipart::Form::new()
        .text("prompt", "a cat")
        .text("loras", "nope:0.9")
        .part(
            "image",
            reqwest::multipart::Part::bytes(png(64, 64, None)).file_name("in.png"),
        );
    let r = s.edit(&key, form).await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["param"], "loras", "{e}");

    // The A1111 API: the library, and the tags written back into the infotext.
    let listed = s.get_json(&key, "/sdapi/v1/loras").await;
    assert_eq!(listed[0]["name"], "ink", "{listed}");
    assert_eq!(listed[0]["path"], "ink.safetensors", "{listed}");
    let r = s
        .http
        .post(s.url("/sdapi/v1/txt2img"))
        .bearer_auth(&key)
        .json(&json!({"prompt": "a cat <lora:ink:0.9>", "width": 64, "height": 64, "steps": 2, "seed": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let info: Value = serde_json::from_str(v["info"].as_str().unwrap()).unwrap();
    assert!(
        info["infotexts"][0]
            .as_str()
            .unwrap()
            .starts_with("a cat <lora:ink:0.9>\n"),
        "{info}"
    );
    let a1111 = image::load_from_memory(&b64(&v["images"][0])).unwrap().to_rgb8();
    assert!(mean_abs_diff(&a1111, &by_tag) < 5.0);

    // Trigger words (A1111's sidecar) are moderated with the prompt, which alone passes.
    std::fs::write(
        library.join("ink.json"),
        r#"{"activation text": "n.u.d.e woman"}"#,
    )
    .unwrap();
    let e = refused(&s, &key, json!({"loras": ["ink"]})).await;
    assert_eq!(e["error"]["code"], "moderation_blocked", "{e}");
    let listed = s.get_json(&key, "/sdapi/v1/loras").await;
    assert_eq!(
        listed[0]["metadata"]["activation text"], "n.u.d.e woman",
        "{listed}"
    );
    image(&s, &key, json!({"response_format": "b64_json"})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_are_words_the_served_model_knows() {
    let s = start(|_| {}).await;
    let (_, key) = s.tenant("embedding-user", ALL_SCOPES).await;
    let file = s
        .model
        .path
        .parent()
        .unwrap()
        .join("embeddings/redcat.safetensors");
    // Before the model's first use: it is read when the model loads.
    nanoimg_engine::synthetic::write_embedding(&s.model.path, "red cat", &file).unwrap();
    let by_name = image(
        &s,
        &key,
        json!({"response_format": "b64_json", "prompt": "a redcat"}),
    )
    .await;
    let by_words = image(
        &s,
        &key,
        json!({"response_format": "b64_json", "prompt": "a red cat"}),
    )
    .await;
    let other = image(
        &s,
        &key,
        json!({"response_format": "b64_json", "prompt": "a green dog"}),
    )
    .await;
    let same = mean_abs_diff(&by_name, &by_words);
    assert!(same < 5.0, "{same}");
    assert!(mean_abs_diff(&by_name, &other) > same);
}
