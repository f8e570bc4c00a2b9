//! Characters through the API against a real server: create from uploads (references, a LoRA,
//! the consent attestation audited), generate with the character through every door (OpenAI
//! generations, native jobs, edit-session instructions), delete — and its reference images, LoRA
//! and cached banks are gone. Bad and hostile requests are refused and leave nothing behind.

use crate::common::*;
use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};
use std::collections::HashMap;

/// A picture with a clear structure, unlike what the tiny model paints by itself.
fn stripes(w: u32, h: u32, phase: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, _| {
        if ((x + phase) / 4).is_multiple_of(2) {
            image::Rgb([230, 40, 40])
        } else {
            image::Rgb([20, 20, 200])
        }
    });
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// A kohya LoRA for the tiny SD1 model's first self-attention query (32×32), rank 4.
pub(crate) fn tiny_lora(module: &str, inner: usize) -> Vec<u8> {
    let dev = candle_core::Device::Cpu;
    let mut noise = nanoimg_engine::pipeline::SeededNoise::new(4);
    let name = format!("lora_unet_{}", module.replace('.', "_"));
    let tensors: HashMap<String, candle_core::Tensor> = HashMap::from([
        (
            format!("{name}.lora_down.weight"),
            noise.sample(&[4, inner], &dev, candle_core::DType::F32).unwrap(),
        ),
        (
            format!("{name}.lora_up.weight"),
            noise.sample(&[32, 4], &dev, candle_core::DType::F32).unwrap(),
        ),
        (
            format!("{name}.alpha"),
            candle_core::Tensor::new(4f32, &dev).unwrap(),
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    std::fs::read(path).unwrap()
}

pub(crate) const SD1_QUERY: &str = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q";

fn character_form(name: &str, refs: Vec<Vec<u8>>, lora: Option<Vec<u8>>, extra: &[(&str, &str)]) -> Form {
    let mut f = Form::new()
        .text("name", name.to_owned())
        .text("description", "a small red and blue striped robot".to_owned());
    for (k, v) in extra {
        f = f.text(k.to_string(), v.to_string());
    }
    for (i, r) in refs.into_iter().enumerate() {
        f = f.part("reference", Part::bytes(r).file_name(format!("ref{i}.png")));
    }
    if let Some(l) = lora {
        f = f.part("lora", Part::bytes(l).file_name("robo.safetensors"));
    }
    f
}

/// Every file under the server's blob directory for a tenant.
fn blobs_of(s: &TestServer, tenant: &str) -> Vec<String> {
    let dir = s.config.data_dir.join("blobs").join(tenant);
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn image_of(v: &Value) -> image::RgbImage {
    image::load_from_memory(&b64(&v["data"][0]["b64_json"]))
        .unwrap()
        .to_rgb8()
}

#[tokio::test]
async fn a_character_is_created_used_three_ways_and_deleted_with_everything_it_made() {
    let s = start(|_| {}).await;
    let (tenant, key) = s.tenant("acme", ALL_SCOPES).await;
    let form = character_form(
        "Robo",
        vec![stripes(64, 64, 0), stripes(80, 48, 2)],
        Some(tiny_lora(SD1_QUERY, 32)),
        &[("consent", "true"), ("strength", "0.9"), ("seed", "77")],
    );
    let (st, c) = s.post_form(&key, "/v1/characters", form).await;
    assert_eq!(st, 201, "{c}");
    let id = c["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("chr_"));
    assert_eq!(c["name"], "Robo");
    assert_eq!(
        (c["strength"].as_f64(), c["seed"].as_u64()),
        (Some(0.9), Some(77))
    );
    assert!(c["lora"]["bytes"].as_u64().unwrap() > 0);
    let refs = c["references"].as_array().unwrap();
    assert_eq!(refs.len(), 2);
    assert!(refs.iter().all(|r| r["consent"] == true && r["faces"].is_null()));
    // The references are sanitised PNGs of the tenant, readable like any asset.
    let r0 = refs[0]["image_id"].as_str().unwrap();
    let a = s.get_json(&key, &format!("/v1/assets/{r0}")).await;
    assert_eq!(
        (a["kind"].as_str(), a["media_type"].as_str()),
        (Some("reference"), Some("image/png"))
    );
    let listed = s.get_json(&key, "/v1/characters").await;
    assert_eq!(listed["data"][0]["id"], id.as_str());
    // The consent attestation is in the audit log.
    let created = audit_of(&s, "character.create", 1).await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["detail"]["consent_attested"], true);
    assert_eq!(created[0]["target"], id.as_str());

    // 1: OpenAI-style generation with an extra field, against the same request without it.
    let plain = s.generate(&key, tiny_request(json!({"seed": 5}))).await;
    assert_eq!(plain.status(), 200);
    let plain = image_of(&plain.json().await.unwrap());
    let r = s
        .generate(&key, tiny_request(json!({"seed": 5, "character_id": id})))
        .await;
    assert_eq!(r.status(), 200);
    let with = image_of(&r.json().await.unwrap());
    let d = mean_abs_diff(&plain, &with);
    assert!(d > 1.0, "the character changed the image by only {d} levels");

    // 2: a native job with character_ids and a strength of its own.
    let job = s
        .submit_id(
            &key,
            tiny_request(json!({"character_ids": [id], "character_strength": 0.5})),
        )
        .await;
    let rec = s.wait_for(&key, &job, "succeeded").await;
    assert_eq!(rec["status"], "succeeded", "{rec}");

    // 3: an edit-session instruction with the character.
    let up = s
        .post_form(
            &key,
            "/v1/assets",
            TestServer::file_form("file", png(64, 64, None)),
        )
        .await;
    assert_eq!(up.0, 201, "{}", up.1);
    let (st, ses) = s
        .http
        .post(s.url("/v1/edit-sessions"))
        .bearer_auth(&key)
        .json(&json!({"image_id": up.1["id"]}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(st, 201);
    let ses: Value = ses.json().await.unwrap();
    let r = s
        .http
        .post(s.url(&format!(
            "/v1/edit-sessions/{}/instructions",
            ses["id"].as_str().unwrap()
        )))
        .bearer_auth(&key)
        .json(&json!({"instruction": "make it look like a robot", "character_id": id, "steps": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    // Delete: the character, its references, its LoRA and its banks are gone.
    let before = blobs_of(&s, &tenant);
    for r in refs {
        assert!(before.contains(&r["image_id"].as_str().unwrap().to_owned()));
    }
    assert!(before.contains(&format!("{id}_lora")));
    let r = s
        .http
        .delete(s.url(&format!("/v1/characters/{id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let gone: Value = r.json().await.unwrap();
    assert_eq!(gone["deleted"], true);
    assert!(gone["banks_dropped"].as_u64().unwrap() >= 1, "{gone}");
    // Two LoRA-merged models: at the character's strength (0.9) and at the job's (0.5).
    assert_eq!(gone["models_dropped"], 2, "{gone}");
    let after = blobs_of(&s, &tenant);
    for r in refs {
        let rid = r["image_id"].as_str().unwrap();
        assert!(!after.iter().any(|b| b == rid), "{rid} still on disk");
        let st = s
            .http
            .get(s.url(&format!("/v1/assets/{rid}")))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(st, 404);
    }
    assert!(!after.iter().any(|b| b.starts_with(&id)), "{after:?}");
    assert_eq!(
        after.len(),
        before.len() - 3,
        "only the character's files went: {before:?} → {after:?}"
    );
    let st = s
        .http
        .get(s.url(&format!("/v1/characters/{id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(st, 404);
    let r = s.generate(&key, tiny_request(json!({"character_id": id}))).await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["param"], "character_id", "{e}");
    assert_eq!(audit_of(&s, "character.delete", 1).await.len(), 1);
}

#[tokio::test]
async fn bad_character_requests_are_refused_and_leave_nothing() {
    let s = start(|_| {}).await;
    let (tenant, key) = s.tenant("acme", ALL_SCOPES).await;
    let (_, other) = s.tenant("other", ALL_SCOPES).await;
    let ok = || vec![stripes(64, 64, 0)];
    let cases: Vec<(Form, u16, &str, &str)> = vec![
        (
            character_form("A", ok(), None, &[]),
            400,
            "consent",
            "consent_required",
        ),
        (
            character_form("A", vec![], None, &[("consent", "true")]),
            400,
            "reference",
            "invalid_value",
        ),
        (
            character_form("A", vec![stripes(8, 8, 0); 9], None, &[("consent", "true")]),
            400,
            "reference",
            "invalid_value",
        ),
        (
            character_form("A", vec![b"not an image".to_vec()], None, &[("consent", "true")]),
            400,
            "reference",
            "",
        ),
        (
            character_form(
                "A",
                vec![b"<svg xmlns='http://www.w3.org/2000/svg'/>".to_vec()],
                None,
                &[("consent", "true")],
            ),
            400,
            "reference",
            "",
        ),
        (
            character_form("A", ok(), Some(b"garbage".to_vec()), &[("consent", "true")]),
            400,
            "lora",
            "invalid_value",
        ),
        (
            character_form("A", ok(), None, &[("consent", "true"), ("strength", "2")]),
            400,
            "strength",
            "invalid_value",
        ),
        (
            character_form("A", ok(), None, &[("consent", "true"), ("colour", "red")]),
            400,
            "colour",
            "",
        ),
        (
            character_form(" A", ok(), None, &[("consent", "true")]),
            400,
            "name",
            "invalid_value",
        ),
    ];
    for (form, status, param, code) in cases {
        let (st, v) = s.post_form(&key, "/v1/characters", form).await;
        assert_eq!(st, status, "{param}: {v}");
        assert_eq!(v["error"]["param"], param, "{v}");
        if !code.is_empty() {
            assert_eq!(v["error"]["code"], code, "{v}");
        }
    }
    // A description the prompt layer blocks.
    let form = Form::new()
        .text("name", "B")
        .text("description", "a naked woman")
        .text("consent", "true")
        .part("reference", Part::bytes(stripes(64, 64, 0)).file_name("r.png"));
    let (st, v) = s.post_form(&key, "/v1/characters", form).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("moderation_blocked")),
        "{v}"
    );
    assert_eq!(v["error"]["param"], "description");
    // Nothing was stored by any of them.
    assert!(blobs_of(&s, &tenant).is_empty(), "{:?}", blobs_of(&s, &tenant));
    assert!(s.get_json(&key, "/v1/assets").await["data"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(s.get_json(&key, "/v1/characters").await["data"]
        .as_array()
        .unwrap()
        .is_empty());

    // A real one, then: a duplicate name is a conflict.
    let (st, c) = s
        .post_form(
            &key,
            "/v1/characters",
            character_form("Robo", ok(), None, &[("consent", "true")]),
        )
        .await;
    assert_eq!(st, 201, "{c}");
    let id = c["id"].as_str().unwrap();
    let (st, v) = s
        .post_form(
            &key,
            "/v1/characters",
            character_form("Robo", ok(), None, &[("consent", "true")]),
        )
        .await;
    assert_eq!(st, 409, "{v}");
    // Its reference image cannot be deleted alone.
    let rid = c["references"][0]["image_id"].as_str().unwrap();
    let r = s
        .http
        .delete(s.url(&format!("/v1/assets/{rid}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    // Another tenant sees nothing and cannot use it.
    for path in [format!("/v1/characters/{id}"), format!("/v1/assets/{rid}")] {
        let st = s
            .http
            .get(s.url(&path))
            .bearer_auth(&other)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(st, 404, "{path}");
    }
    let st = s
        .http
        .delete(s.url(&format!("/v1/characters/{id}")))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(st.status(), 404);
    let r = s
        .generate(&other, tiny_request(json!({"character_id": id})))
        .await;
    assert_eq!(r.status(), 400);
    // Malformed uses.
    for (body, param) in [
        (
            json!({"character_id": id, "character_ids": [id]}),
            "character_ids",
        ),
        (json!({"character_ids": [id, id]}), "character_ids"),
        (
            json!({"character_ids": ["chr_a", "chr_b", "chr_c", "chr_d", "chr_e"]}),
            "character_ids",
        ),
        (json!({"character_strength": 0.5}), "character_strength"),
        (
            json!({"character_id": id, "character_strength": 1.5}),
            "character_strength",
        ),
        (json!({"character_id": "../../etc/passwd"}), "character_id"),
    ] {
        let r = s.generate(&key, tiny_request(body.clone())).await;
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["param"], param, "{body}: {v}");
    }
    // A key without the `characters` scope cannot manage characters.
    let narrow = s.key(&tenant, &["images:generate"], None).await;
    let (st, _) = s
        .post_form(
            &narrow,
            "/v1/characters",
            character_form("C", ok(), None, &[("consent", "true")]),
        )
        .await;
    assert_eq!(st, 403);

    // A LoRA made for another architecture parses, and the job using it fails with the reason.
    let (st, c) = s
        .post_form(
            &key,
            "/v1/characters",
            character_form(
                "Wrong",
                ok(),
                Some(tiny_lora("down_blocks.7.attentions.0.proj_in", 32)),
                &[("consent", "true")],
            ),
        )
        .await;
    assert_eq!(st, 201, "{c}");
    let r = s
        .generate(&key, tiny_request(json!({"character_id": c["id"]})))
        .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("do not fit"),
        "{v}"
    );
}
