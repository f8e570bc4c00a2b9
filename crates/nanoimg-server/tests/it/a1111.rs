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
