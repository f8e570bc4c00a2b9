//! The Automatic1111 API (`/sdapi/v1/*`) against a real server, through the contract proxy: the
//! real `webuiapi` package (pinned in tests/python/requirements.txt) draws, edits and inpaints
//! with Basic auth; settings NanoImg cannot honour are refused by name; the model choice is the
//! tenant's.

use crate::common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_webuiapi_package_works_unchanged() {
    let s = start(|_| {}).await;
    let (_, key) = s.tenant("a1111-app", ALL_SCOPES).await;
    run_python_check("a1111_client.py", vec![s.base.clone(), key, "tiny".into()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_would_change_the_picture_are_refused_by_name() {
    let s = start(|_| {}).await;
    let (tenant, key) = s.tenant("a1111-strict", ALL_SCOPES).await;
    let post =
        |path: &'static str, body: Value| s.http.post(s.url(path)).bearer_auth(&key).json(&body).send();
    for (field, value, says) in [
        ("restore_faces", json!(true), "face restoration"),
        ("styles", json!(["cinematic"]), "styles"),
        ("subseed_strength", json!(0.3), "variation seeds"),
        ("script_name", json!("x/y/z plot"), "scripts"),
        (
            "alwayson_scripts",
            json!({"ADetailer": {"args": [true]}}),
            "extensions",
        ),
    ] {
        let mut body = json!({"prompt": "a cat", "width": 64, "height": 64, "steps": 2});
        body[field] = value;
        let r = post("/sdapi/v1/txt2img", body).await.unwrap();
        assert_eq!(r.status(), 400, "{field}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["param"], field);
        assert!(e["error"]["message"].as_str().unwrap().contains(says), "{e}");
    }
    let r = post(
        "/sdapi/v1/txt2img",
        json!({"prompt": "a cat", "sampler_name": "Euler", "scheduler": "Karras"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let r = post("/sdapi/v1/img2img", json!({"prompt": "a cat"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Only the model can be set, and only to one this server has.
    let r = post(
        "/sdapi/v1/options",
        json!({"sd_model_checkpoint": "nope.safetensors [abc]"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let r = post("/sdapi/v1/options", json!({"CLIP_stop_at_last_layers": 2}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["param"], "CLIP_stop_at_last_layers");
    let r = post("/sdapi/v1/options", json!({"sd_model_checkpoint": "tiny"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A read-only key cannot set it.
    let (_, reader) = s.tenant("a1111-reader", &["assets:read"]).await;
    let r = s
        .http
        .post(s.url("/sdapi/v1/options"))
        .bearer_auth(&reader)
        .json(&json!({"sd_model_checkpoint": "tiny"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // The choice is audited, in the tenant that made it.
    let audit = s
        .get_json(
            &s.admin_key,
            &format!("/v1/admin/audit?tenant={tenant}&limit=100"),
        )
        .await;
    assert!(audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "tenant.model_set" && e["detail"]["model"] == "tiny"));
}

/// A1111's refiner (`refiner_checkpoint`, `refiner_switch_at`) and NanoImg's own `refiner`:
/// an SDXL base drawn and finished by its refiner, said in the infotext as A1111 says it; a
/// refiner that cannot continue the base is refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdxl_refiner_finishes_the_base_models_run() {
    use nanoimg_engine::synthetic::{write_model, SyntheticSpec};
    use nanoimg_engine::Family;
    let s = start_with_model(
        |_| {},
        |tiny| {
            let models = tiny.parent().unwrap();
            write_model(&models.join("xl"), &SyntheticSpec::tiny(Family::Sdxl), 5).unwrap();
            write_model(&models.join("xl-refiner"), &SyntheticSpec::tiny_sdxl_refiner(), 6).unwrap();
        },
    )
    .await;
    let (_, key) = s.tenant("a1111-refiner", ALL_SCOPES).await;
    let post =
        |path: &'static str, body: Value| s.http.post(s.url(path)).bearer_auth(&key).json(&body).send();
    let body = |extra: Value| {
        let mut b = json!({
            "prompt": "a cat", "width": 64, "height": 64, "steps": 4, "seed": 3,
            "override_settings": {"sd_model_checkpoint": "xl.safetensors [0123abcd]"},
        });
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    let r = post(
        "/sdapi/v1/txt2img",
        body(json!({"refiner_checkpoint": "xl-refiner.safetensors [89abcdef]", "refiner_switch_at": 0.5})),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let out: Value = r.json().await.unwrap();
    let info: Value = serde_json::from_str(out["info"].as_str().unwrap()).unwrap();
    let text = info["infotexts"][0].as_str().unwrap();
    assert!(
        text.contains("Model: xl, Refiner: xl-refiner, Refiner switch at: 0.5"),
        "{text}"
    );
    // No refiner, as A1111's UI sends it, with its default switch.
    let r = post(
        "/sdapi/v1/txt2img",
        body(json!({"refiner_checkpoint": "None", "refiner_switch_at": 0.8})),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let out: Value = r.json().await.unwrap();
    assert!(!out["info"].as_str().unwrap().contains("Refiner"));
    // NanoImg's own API (extra_body for the OpenAI SDK), with the default switch.
    let r = post(
        "/v1/images/generations",
        json!({"prompt": "a cat", "model": "xl", "size": "64x64", "steps": 4, "refiner": "xl-refiner"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // Refused by name: a model that is not there, an SD 1 model under an SDXL base, a switch
    // outside 0–1, a switch without a refiner.
    for (extra, param, says) in [
        (json!({"refiner_checkpoint": "nope"}), "refiner", "no model named"),
        (
            json!({"refiner_checkpoint": "tiny"}),
            "refiner",
            "another latent space",
        ),
        (
            json!({"refiner_checkpoint": "xl-refiner", "refiner_switch_at": 1.5}),
            "refiner_switch_at",
            "0 to 1",
        ),
    ] {
        let r = post("/sdapi/v1/txt2img", body(extra.clone())).await.unwrap();
        assert_eq!(r.status(), 400, "{extra}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["param"], param, "{e}");
        assert!(e["error"]["message"].as_str().unwrap().contains(says), "{e}");
    }
    let r = post(
        "/v1/images/generations",
        json!({"prompt": "a cat", "model": "xl", "refiner_switch_at": 0.5}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
}

/// A1111's Stop (`POST /sdapi/v1/interrupt`) ends the tenant's queued and running jobs, and
/// only the tenant's: another tenant's job runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interrupt_stops_the_tenants_jobs_and_only_its_own() {
    let s = start(|_| {}).await;
    let (_, key) = s.tenant("a1111-stop", ALL_SCOPES).await;
    let (_, other) = s.tenant("a1111-bystander", ALL_SCOPES).await;
    let long = || tiny_request(json!({"steps": 100, "n": 4}));
    let mine = s.submit_id(&key, long()).await;
    let theirs = s.submit_id(&other, tiny_request(json!({"steps": 4}))).await;
    let r = s
        .http
        .post(s.url("/sdapi/v1/interrupt"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), Value::Null);
    s.wait_for(&key, &mine, "cancelled").await;
    s.wait_for(&other, &theirs, "succeeded").await;
    let events = audit_of(&s, "job.cancel", 1).await;
    assert_eq!(events[0]["target"], mine.as_str(), "{events:?}");
}
