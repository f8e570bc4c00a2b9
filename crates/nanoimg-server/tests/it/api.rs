//! The HTTP API against a real server: OpenAI-compatible shapes and errors, edits, jobs with
//! server-sent events and cancellation, signed links, limits and overload.

use crate::common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// `vae: "tiny"` decodes with the tiny autoencoder found beside the model (`models/taesd`); a
/// server without one, or a name it does not know, is refused naming `vae`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tiny_autoencoder_is_chosen_per_request() {
    use nanoimg_engine::synthetic::{tiny_taesd_config, write_taesd};
    let s = start_with_model(
        |_| {},
        |tiny| write_taesd(&tiny.parent().unwrap().join("taesd"), &tiny_taesd_config(), 4).unwrap(),
    )
    .await;
    let (_, key) = s.tenant("tiny-vae", ALL_SCOPES).await;
    let picture = |v: &Value| {
        image::load_from_memory(&b64(&v["data"][0]["b64_json"]))
            .unwrap()
            .to_rgb8()
    };
    let r = s.generate(&key, tiny_request(json!({"vae": "tiny"}))).await;
    assert_eq!(r.status(), 200);
    let quick = picture(&r.json().await.unwrap());
    let r = s.generate(&key, tiny_request(json!({}))).await;
    let full = picture(&r.json().await.unwrap());
    assert_eq!(quick.dimensions(), (64, 64));
    // Far beyond the watermark's difference: another decoder drew it.
    assert!(mean_abs_diff(&quick, &full) > 5.0);
    let r = s.generate(&key, tiny_request(json!({"vae": "huge"}))).await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["param"], "vae");

    // A watched job's previews: the tiny autoencoder's full-size pictures at four evenly
    // spaced steps (12, 24, 36 and 48 of 60), whichever decoder the result uses; cheap
    // latent-sized ones at the other steps (the stream may start a few steps in).
    let id = s.submit_id(&key, tiny_request(json!({"steps": 60}))).await;
    let seen = previews(&watch(&s, &key, &id).await);
    assert!(seen.iter().any(|(_, size)| *size == (64, 64)), "{seen:?}");
    for (step, size) in &seen {
        let decoded = [12, 24, 36, 48].contains(step);
        assert_eq!(
            *size,
            if decoded { (64, 64) } else { (8, 8) },
            "step {step}: {seen:?}"
        );
    }

    let plain = start(|_| {}).await;
    let (_, key) = plain.tenant("no-tiny-vae", ALL_SCOPES).await;
    let r = plain.generate(&key, tiny_request(json!({"vae": "tiny"}))).await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no tiny autoencoder"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generations_answer_in_the_openai_shape() {
    let s = start(|_| {}).await;
    let (_, key) = s.tenant("acme", ALL_SCOPES).await;
    let r = s
        .generate(&key, tiny_request(json!({"n": 2, "model": "gpt-image-1"})))
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    assert!(r.headers().contains_key("x-ratelimit-remaining-requests"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        (v["size"].as_str(), v["output_format"].as_str()),
        (Some("64x64"), Some("png"))
    );
    assert!(v["created"].as_i64().unwrap() > 1_700_000_000);
    assert!(v["usage"]["output_tokens"].as_u64().unwrap() > 0);
    let a = image::load_from_memory(&b64(&v["data"][0]["b64_json"])).unwrap();
    assert_eq!((a.width(), a.height()), (64, 64));
    // Seeds: image i uses seed + i, so the same request again gives the same picture, apart
    // from the invisible watermark, whose id is new for every image.
    assert_eq!(v["data"][1]["seed"], 2);
    let again: Value = s
        .generate(&key, tiny_request(json!({"n": 2})))
        .await
        .json()
        .await
        .unwrap();
    let pixels = |v: &Value| {
        image::load_from_memory(&b64(&v["data"][1]["b64_json"]))
            .unwrap()
            .to_rgb8()
    };
    assert!(mean_abs_diff(&pixels(&again), &pixels(&v)) < 3.0);
    assert_ne!(again["data"][1]["b64_json"], v["data"][1]["b64_json"]);

    // Other formats decode as what they claim to be.
    for (fmt, magic) in [("jpeg", &b"\xff\xd8"[..]), ("webp", &b"RIFF"[..])] {
        let v: Value = s
            .generate(
                &key,
                tiny_request(json!({"output_format": fmt, "output_compression": 80})),
            )
            .await
            .json()
            .await
            .unwrap();
        assert!(b64(&v["data"][0]["b64_json"]).starts_with(magic), "{fmt}");
    }

    // A signed link works without a key, and only as signed.
    let v: Value = s
        .generate(&key, tiny_request(json!({"response_format": "url"})))
        .await
        .json()
        .await
        .unwrap();
    let url = v["data"][0]["url"].as_str().unwrap().to_owned();
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert!(image::load_from_memory(&r.bytes().await.unwrap()).is_ok());
    let tampered = url.replace("expires=", "expires=9");
    assert_eq!(reqwest::get(&tampered).await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_precise_error_and_nothing_is_stored() {
    let s = start(|c| c.max_body_bytes = 256 * 1024).await;
    let (_, key) = s.tenant("acme", ALL_SCOPES).await;
    let cases = [
        (json!({"prompt": "x", "size": "banana"}), "size"),
        (json!({"prompt": "x", "size": "4096x4096"}), "size"),
        (json!({"prompt": "x", "n": 50}), "n"),
        (json!({"prompt": "x", "steps": 1000}), "steps"),
        // A near miss of a known field; a field that is simply unknown is ignored and named.
        (json!({"prompt": "x", "negative_promt": "red"}), "negative_promt"),
        (json!({"size": "64x64"}), "prompt"),
        (json!({"prompt": "  "}), "prompt"),
        (json!({"prompt": "x", "output_format": "gif"}), "output_format"),
        (json!({"prompt": "x", "background": "transparent"}), "background"),
        (json!({"prompt": "x", "model": "sdxl-9000"}), "model"),
        (json!({"prompt": "x", "scheduler": "plms"}), "scheduler"),
        (json!({"prompt": "x", "partial_images": 2}), "partial_images"),
        (json!({"prompt": "x", "character_id": "chr_1"}), "character_id"),
        (json!({"prompt": "x".repeat(5000)}), "prompt"),
        (json!({"prompt": 7}), "prompt"),
    ];
    for (body, param) in cases {
        let r = s.generate(&key, body.clone()).await;
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["type"], "invalid_request_error", "{e}");
        assert_eq!(e["error"]["param"], param, "{body} → {e}");
        assert!(e["error"]["message"].as_str().unwrap().len() > 10);
    }
    // Not JSON at all; too large.
    let r = s
        .http
        .post(s.url("/v1/images/generations"))
        .bearer_auth(&key)
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let big = json!({"prompt": "x".repeat(300 * 1024)});
    let r = s.generate(&key, big).await;
    assert_eq!(r.status(), 413);
    // None of it made a job or an asset.
    let jobs = s.get_json(&key, "/v1/jobs").await;
    assert_eq!(jobs["data"].as_array().unwrap().len(), 0);
    let assets = s.get_json(&key, "/v1/assets").await;
    assert_eq!(assets["data"].as_array().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_take_an_image_and_an_alpha_mask() {
    let s = start(|_| {}).await;
    let (_, key) = s.tenant("acme", ALL_SCOPES).await;
    let edit = |image: Vec<u8>, mask: Option<Vec<u8>>, field: &'static str| {
        let mut form = reqwest::multipart::Form::new()
            .text("prompt", "a dog")
            .text("steps", "2")
            .text("seed", "5")
            .part(
                field,
                reqwest::multipart::Part::bytes(image)
                    .file_name("in.png")
                    .mime_str("image/png")
                    .unwrap(),
            );
        if let Some(m) = mask {
            form = form.part(
                "mask",
                reqwest::multipart::Part::bytes(m)
                    .file_name("m.png")
                    .mime_str("image/png")
                    .unwrap(),
            );
        }
        s.http
            .post(s.url("/v1/images/edits"))
            .bearer_auth(&key)
            .multipart(form)
            .send()
    };
    // Mask: transparent = repaint.
    let mut mask = image::RgbaImage::from_pixel(64, 64, image::Rgba([0, 0, 0, 255]));
    for y in 0..64 {
        for x in 32..64 {
            mask.put_pixel(x, y, image::Rgba([0, 0, 0, 0]));
        }
    }
    let mut mask_png = Vec::new();
    image::DynamicImage::ImageRgba8(mask)
        .write_to(&mut std::io::Cursor::new(&mut mask_png), image::ImageFormat::Png)
        .unwrap();
    let r = edit(png(64, 64, None), Some(mask_png.clone()), "image[]")
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // The form was read to its end, so the connection stays open for the next request.
    assert!(r.headers().get("connection").is_none(), "{:?}", r.headers());
    let v: Value = r.json().await.unwrap();
    let out = image::load_from_memory(&b64(&v["data"][0]["b64_json"]))
        .unwrap()
        .to_rgb8();
    let input = image::load_from_memory(&png(64, 64, None)).unwrap().to_rgb8();
    // The kept (opaque) half is the input's pixels, plus the watermark (a few levels).
    let kept = |img: &image::RgbImage| image::imageops::crop_imm(img, 0, 0, 28, 64).to_image();
    assert!(mean_abs_diff(&kept(&out), &kept(&input)) < 3.0);
    for (a, b) in kept(&out).pixels().zip(kept(&input).pixels()) {
        for c in 0..3 {
            assert!(a[c].abs_diff(b[c]) <= 24, "{a:?} vs {b:?}");
        }
    }
    let r = edit(png(64, 64, None), Some(png(32, 32, Some(0))), "image")
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["param"], "mask");
    let r = edit(b"GIF89a not an image".to_vec(), None, "image")
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["param"], "image");
    // The refused edits stored nothing: only the first edit's image, mask and output exist.
    let assets = s.get_json(&key, "/v1/assets").await;
    assert_eq!(assets["data"].as_array().unwrap().len(), 3, "{assets}");
    // Variations need no prompt; a prompt is refused.
    let form = reqwest::multipart::Form::new().text("steps", "4").part(
        "image",
        reqwest::multipart::Part::bytes(png(64, 64, None)).file_name("a.png"),
    );
    let r = s
        .http
        .post(s.url("/v1/images/variations"))
        .bearer_auth(&key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_stream_progress_and_can_be_cancelled() {
    let s = start(|_| {}).await;
    let (_, key) = s.tenant("acme", ALL_SCOPES).await;
    let id = s.submit_id(&key, tiny_request(json!({"steps": 6}))).await;
    let ev = s
        .http
        .get(s.url(&format!("/v1/jobs/{id}/events")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(ev.headers()["content-type"], "text/event-stream");
    let events = sse_events(ev, |n| FINAL.contains(&n)).await;
    assert_eq!(events[0].0, "status");
    let last = events.last().unwrap();
    // The stream may start after the job finished; then `status` says so and is the end.
    if events.len() > 1 {
        assert_eq!(last.0, "succeeded", "{events:?}");
        let progress = events.iter().filter(|(n, _)| n == "progress").count();
        assert!(progress >= 1, "{events:?}");
    }
    let rec = s.get_json(&key, &format!("/v1/jobs/{id}")).await;
    assert_eq!(rec["status"], "succeeded");
    let out_id = rec["result"]["images"][0]["id"].as_str().unwrap();
    let r = s
        .http
        .get(s.url(&format!("/v1/assets/{out_id}/content")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A long job is cancelled mid-run.
    let id = s
        .submit_id(&key, tiny_request(json!({"steps": 100, "n": 4})))
        .await;
    assert_eq!(s.cancel(&key, &id).await, 200);
    s.wait_for(&key, &id, "cancelled").await;
    assert_eq!(s.cancel(&key, &id).await, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_rate_limit_answers_429_with_retry_after() {
    let s = start(|c| c.rate.images_per_minute = 3).await;
    let (_, key) = s.tenant("acme", ALL_SCOPES).await;
    assert_eq!(
        s.generate(&key, tiny_request(json!({"n": 3}))).await.status(),
        200
    );
    let r = s.generate(&key, tiny_request(json!({}))).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "rate_limit_error"
    );
    // Another key has its own budget.
    let (_, other) = s.tenant("other", ALL_SCOPES).await;
    assert_eq!(s.generate(&other, tiny_request(json!({}))).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_can_have_its_own_limits() {
    let s = start(|c| {
        c.rate.images_per_minute = 3;
        c.rate.requests_per_minute = 1000;
    })
    .await;
    let (big, big_key) = s.tenant("big-co", ALL_SCOPES).await;
    let (_, small_key) = s.tenant("small-co", ALL_SCOPES).await;
    let put_limits = |tenant: &str, body: Value| {
        let req = s
            .http
            .put(s.url(&format!("/v1/admin/tenants/{tenant}/limits")))
            .bearer_auth(&s.admin_key)
            .json(&body);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, t) = put_limits(&big, json!({"images_per_minute": 10, "requests_per_minute": 7})).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["limits"]["images_per_minute"], 10);
    assert_eq!(t["limits"]["concurrent_jobs"], Value::Null);
    // Refused with a reason, and nothing changes.
    for (body, needle) in [
        (json!({"images_per_minute": 0}), "images_per_minute must be 1 to"),
        (json!({"images_per_minute": -3}), "images_per_minute"),
        (json!({"images_per_day": 3}), "images_per_day"),
    ] {
        let (status, e) = put_limits(&big, body).await;
        assert_eq!(status, 400, "{e}");
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{msg}");
    }
    let (status, _) = put_limits("nobody", json!({})).await;
    assert_eq!(status, 404);

    // The caller sees its own limits.
    let me = s.get_json(&big_key, "/v1/me").await;
    assert_eq!(me["limits"]["images_per_minute"], 10, "{me}");
    assert_eq!(me["limits"]["concurrent_jobs"], 4, "{me}");
    // 4 images pass for big-co, where the default (3) would refuse them.
    assert_eq!(
        s.generate(&big_key, tiny_request(json!({"n": 4}))).await.status(),
        200
    );
    let r = s.generate(&small_key, tiny_request(json!({"n": 4}))).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-ratelimit-limit-images"], "3");
    // Its request rate is 7 a minute: /v1/me, the generation, then 5 more, then refused.
    let me = || s.http.get(s.url("/v1/me")).bearer_auth(&big_key).send();
    for _ in 0..5 {
        assert_eq!(me().await.unwrap().status(), 200);
    }
    let r = me().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-ratelimit-limit-requests"], "7");

    // A cap of one job at a time for small-co.
    let (status, _) = put_limits("small-co", json!({"concurrent_jobs": 1})).await;
    assert_eq!(status, 200);
    let long = tiny_request(json!({"steps": 100}));
    let id = s.submit_id(&small_key, long.clone()).await;
    let r = s.submit(&small_key, long).await;
    assert_eq!(r.status(), 429);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with("the limit is 1"),
        "{e}"
    );
    assert_eq!(s.cancel(&small_key, &id).await, 200);

    // Back to the defaults.
    let (_, t) = put_limits("big-co", json!({})).await;
    assert_eq!(
        t["limits"],
        json!({
            "requests_per_minute": null, "images_per_minute": null, "concurrent_jobs": null,
            "megapixel_steps_per_minute": null, "max_job_megapixel_steps": null,
            "max_stored_bytes": null, "max_keys": null,
        })
    );
    let audit = s.get_json(&s.admin_key, "/v1/admin/audit?limit=1000").await;
    let changes = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "tenant.limits")
        .count();
    assert_eq!(changes, 3, "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overload_is_refused_fast_and_every_admitted_job_finishes() {
    let s = start(|c| {
        c.workers = 1;
        c.queue_capacity = 3;
        c.rate.concurrent_jobs_per_tenant = 2;
    })
    .await;
    let mut keys = vec![];
    for t in 0..4 {
        keys.push(s.tenant(&format!("t{t}"), ALL_SCOPES).await.1);
    }
    // Tenant t0 fills its cap with two long jobs: one running on the only worker, one waiting.
    // That leaves the queue two free places, whatever the timing of the burst below.
    let long = tiny_request(json!({"steps": 100, "n": 4}));
    let blockers = [
        s.submit_id(&keys[0], long.clone()).await,
        s.submit_id(&keys[0], long).await,
    ];
    s.wait_for(&keys[0], &blockers[0], "running").await;

    // 40 requests at once, 10 from each tenant; answers arrive on a channel as they come.
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..40 {
        let (tenant, key, tx) = (i % 4, keys[i % 4].clone(), tx.clone());
        let (http, url) = (s.http.clone(), s.url("/v1/images/generations"));
        tokio::spawn(async move {
            let t0 = Instant::now();
            let r = http
                .post(url)
                .bearer_auth(key)
                .json(&tiny_request(json!({"steps": 4})))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let retry = r.headers().get("retry-after").is_some();
            let body: Value = r.json().await.unwrap();
            let _ = tx.send((tenant, status, retry, body, t0.elapsed()));
        });
    }
    drop(tx);
    // While that runs, health and auth answer quickly.
    let t0 = Instant::now();
    assert_eq!(reqwest::get(s.url("/healthz")).await.unwrap().status(), 200);
    let me = s
        .http
        .get(s.url("/v1/me"))
        .bearer_auth(&keys[0])
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let fast = t0.elapsed();

    // t0 is at its cap, so its 10 get 429. The queue has room for 2 more; a tenant that got
    // both is then at its cap too (429), everyone else finds the queue full (503). All 38
    // refusals come back while the first long job still holds the worker.
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..38 {
        let (tenant, status, retry, body, took) = rx.recv().await.unwrap();
        *counts.entry(status).or_insert(0) += 1;
        assert!(retry, "{status} without Retry-After: {body}");
        assert!(took < Duration::from_secs(2), "a refusal took {took:?}");
        let code = &body["error"]["code"];
        match status {
            429 => assert_eq!(code, "concurrent_jobs_exceeded"),
            503 => assert_eq!(code, "queue_full"),
            _ => panic!("unexpected {status} while the queue was full: {body}"),
        }
        if tenant == 0 {
            assert_eq!(status, 429, "{body}");
        }
    }
    let refused_in = started.elapsed();
    let first = s.get_json(&keys[0], &format!("/v1/jobs/{}", blockers[0])).await;
    assert_eq!(
        first["status"], "running",
        "the first job ended before the burst was answered; make it longer"
    );
    let (limited, full) = (counts[&429], counts.get(&503).copied().unwrap_or(0));
    assert!(limited >= 10 && full >= 20, "{counts:?}");
    assert!(
        fast < Duration::from_secs(1),
        "health and auth took {fast:?} under load"
    );

    // Cancel the long jobs; the two admitted requests then run and return images.
    for id in blockers.iter().rev() {
        assert_eq!(s.cancel(&keys[0], id).await, 200);
    }
    for _ in 0..2 {
        let (tenant, status, _, body, _) = rx.recv().await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_ne!(tenant, 0);
        assert!(image::load_from_memory(&b64(&body["data"][0]["b64_json"])).is_ok());
    }
    println!(
        "overload: {counts:?} refused in {refused_in:?}, 2 admitted and finished; \
         health+auth during it: {fast:?}"
    );
    // Still up, and the metrics saw it.
    let m = reqwest::get(s.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (reason, n) in [("queue_full", full), ("concurrent_jobs", limited)] {
        let line = format!("nanoimg_rejections_total{{reason=\"{reason}\"}} {n}\n");
        assert!(m.contains(&line), "{line} not in {m}");
    }
    assert!(m.contains("nanoimg_queue_depth 0"), "{m}");
    assert!(m.contains("nanoimg_jobs_running 0"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_every_route_and_every_route_is_served() {
    let s = start(|_| {}).await;
    let doc: Value = reqwest::get(s.url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for r in nanoimg_server::openapi::ROUTES {
        assert!(
            doc["paths"][r.path][r.method].is_object(),
            "{} {}",
            r.method,
            r.path
        );
        let path = r
            .path
            .replace("{id}", "img_00000000000000000000000000")
            .replace("{name}", "studio.js");
        let req = s
            .http
            .request(r.method.to_uppercase().parse().unwrap(), s.url(&path));
        let res = req.send().await.unwrap();
        let body: Value = res.json().await.unwrap_or(json!({}));
        assert_ne!(body["error"]["code"], "unknown_route", "{} {path}", r.method);
    }
    // Every documented image field is one the server accepts.
    for (field, ty, _) in nanoimg_server::openapi::IMAGE_FIELDS {
        let _ = ty;
        let r = s
            .generate(&s.admin_key, json!({"prompt": "x", "n": 999, *field: null}))
            .await
            .json::<Value>()
            .await
            .unwrap();
        let msg = r["error"]["message"].as_str().unwrap_or_default();
        assert!(!msg.contains("unknown field"), "{field}: {msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_valid_openapi_3_1_with_a_schema_for_every_answer() {
    let s = start(|_| {}).await;
    let doc: Value = s.get_json("", "/openapi.json").await;
    // Every route says what it answers: a schema for each JSON success, a media type otherwise.
    for r in nanoimg_server::openapi::ROUTES {
        let responses = doc["paths"][r.path][r.method]["responses"].as_object().unwrap();
        let successes: Vec<_> = responses.iter().filter(|(k, _)| k.starts_with('2')).collect();
        assert!(!successes.is_empty(), "{} {}", r.method, r.path);
        for (status, resp) in successes {
            if let Some(schema) = resp["content"]["application/json"]["schema"]["$ref"].as_str() {
                let name = schema.trim_start_matches("#/components/schemas/");
                assert!(
                    doc["components"]["schemas"][name].is_object(),
                    "{} {} {status}: {schema}",
                    r.method,
                    r.path
                );
            }
        }
    }
    // And a real OpenAPI 3.1 validator (openapi-spec-validator) accepts the whole document.
    let file = s.dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    run_python_check("openapi_check.py", vec![file.display().to_string()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_lets_the_running_job_finish_fails_waiting_requests_and_keeps_detached_jobs() {
    let mut s = start(|c| {
        c.workers = 1;
        c.shutdown_grace_secs = 60;
    })
    .await;
    let (_, key) = s.tenant("acme", ALL_SCOPES).await;
    // A running job, then a client waiting on its connection, then a detached job.
    let running = s.submit_id(&key, tiny_request(json!({"steps": 100}))).await;
    s.wait_for(&key, &running, "running").await;
    let waiting = {
        let req = s
            .http
            .post(s.url("/v1/images/generations"))
            .bearer_auth(&key)
            .json(&tiny_request(json!({})));
        tokio::spawn(async move { req.send().await.unwrap() })
    };
    let detached = s.submit_id(&key, tiny_request(json!({}))).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.get_json("", "/readyz").await["queued"] != 2 {
        assert!(Instant::now() < deadline, "the requests were not queued");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let server = s.server.take().unwrap();
    let (addr, http) = (s.base.clone(), s.http.clone());
    let stopping = tokio::spawn(server.shutdown());
    // The waiting client is told at once, with a status it can retry on.
    let r = waiting.await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "shutting_down", "{body}");
    // While the running job finishes, load balancers see "not ready" and new work is refused.
    let ready = http.get(format!("{addr}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.json::<Value>().await.unwrap()["stopping"], true);
    let r = http
        .post(format!("{addr}/v1/jobs"))
        .bearer_auth(&key)
        .json(&tiny_request(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    stopping.await.unwrap();

    s.restart().await;
    let rec = s.get_json(&key, &format!("/v1/jobs/{running}")).await;
    assert_eq!(
        rec["status"], "succeeded",
        "finished within the grace period: {rec}"
    );
    // The detached job waited in the store and runs after the restart.
    s.wait_for(&key, &detached, "succeeded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_that_outlives_the_grace_period_is_failed_with_a_reason() {
    let mut s = start(|c| {
        c.workers = 1;
        c.shutdown_grace_secs = 0;
    })
    .await;
    let (_, key) = s.tenant("acme", ALL_SCOPES).await;
    let id = s
        .submit_id(&key, tiny_request(json!({"steps": 100, "n": 4})))
        .await;
    let events = s
        .http
        .get(s.url(&format!("/v1/jobs/{id}/events")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    s.wait_for(&key, &id, "running").await;
    let t0 = Instant::now();
    s.server.take().unwrap().shutdown().await;
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    // The watcher hears why, then the stream ends.
    let events = sse_events(events, |n| n == "failed").await;
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "failed", "{events:?}");
    assert_eq!(data["code"], "shutting_down", "{data}");

    s.restart().await;
    let rec = s.get_json(&key, &format!("/v1/jobs/{id}")).await;
    assert_eq!(rec["status"], "failed", "{rec}");
    assert_eq!(
        rec["error"],
        "interrupted: the server shut down while this job was running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderation_blocks_before_anything_is_queued_and_audits_it() {
    let s = start(|_| {}).await;
    let (_, key) = s.tenant("acme", ALL_SCOPES).await;
    let cases = [
        (json!({"prompt": "a n.u.d.e woman"}), vec!["sexual"]),
        // A word split by a hyphen, and by spaces, next to a child: the hard block.
        (
            json!({"prompt": "a na-ked child"}),
            vec!["sexual", "sexual/minors"],
        ),
        (
            json!({"prompt": "a chi ld on a bed, nu de"}),
            vec!["sexual", "sexual/minors"],
        ),
        // Avoiding clothes asks for nudity: with a child, the hard block.
        (
            json!({"prompt": "a little girl on a beach", "negative_prompt": "clothes, swimsuit"}),
            vec!["sexual", "sexual/minors"],
        ),
        (
            json!({"prompt": "news photo of Barack Obama in handcuffs"}),
            vec!["real-person"],
        ),
    ];
    for (body, want) in cases {
        let r = s.generate(&key, tiny_request(body.clone())).await;
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], "moderation_blocked", "{e}");
        assert_eq!(e["error"]["param"], "prompt");
        assert_eq!(e["error"]["categories"], json!(want), "{body} → {e}");
    }
    // The async endpoint refuses the same way.
    let r = s.submit(&key, tiny_request(json!({"prompt": "p0rn"}))).await;
    assert_eq!(r.status(), 400);
    // What a negative prompt avoids blocks nothing: a harmless request that avoids gore and
    // nudity runs.
    let avoids = json!({"prompt": "a cat", "negative_prompt": "nude, g0re, decapitated"});
    let r = s.generate(&key, tiny_request(avoids)).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // `low` counts only where the operator allows it for the tenant; then it lets mild content
    // through, never sexual content with a child. An unknown strictness is refused by name.
    let generate = |body: Value| s.generate(&key, tiny_request(body));
    let low = json!({"prompt": "a nude figure study", "moderation": "low"});
    assert_eq!(generate(low.clone()).await.status(), 400);
    let r = s
        .http
        .put(s.url("/v1/admin/tenants/acme/moderation"))
        .bearer_auth(&s.admin_key)
        .json(&json!({"allow_low": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["allow_low_moderation"], true);
    assert_eq!(generate(low).await.status(), 200);
    // Avoiding an adult body asks for a child's.
    let mut with_child = json!({"prompt": "a nude figure study", "moderation": "low"});
    with_child["negative_prompt"] = json!("adult body");
    let r = generate(with_child).await;
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["categories"], json!(["sexual/minors"]), "{e}");
    let r = generate(json!({"prompt": "a cat", "moderation": "off"})).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["param"], "moderation");

    // Nothing from the blocked requests was kept: two jobs (the one avoiding gore and the `low`
    // one).
    let jobs = s.get_json(&key, "/v1/jobs").await;
    assert_eq!(jobs["data"].as_array().unwrap().len(), 2, "{jobs}");
    // Counted and audited with the categories, never the key.
    let m = reqwest::get(s.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("nanoimg_rejections_total{reason=\"moderation\"} 8"),
        "{m}"
    );
    let blocked = audit_of(&s, "moderation.blocked", 8).await;
    assert_eq!(blocked.len(), 8, "{blocked:?}");
    assert_eq!(
        blocked[1]["detail"]["categories"],
        json!(["sexual", "sexual/minors"])
    );
    assert_eq!(blocked[1]["detail"]["flags"][0]["layer"], "lexicon");
    // Asked for low before it was allowed: moderated at auto, and the record says both.
    assert_eq!(blocked[6]["detail"]["asked"], "low");
    assert_eq!(blocked[6]["detail"]["strictness"], "auto");
    let audit = s.get_json(&s.admin_key, "/v1/admin/audit?limit=1000").await;
    assert!(!audit.to_string().contains(&key));
}

#[tokio::test]
async fn the_audit_log_verifies_over_http_signs_its_head_at_shutdown_and_reports_tampering() {
    let mut s = start(|c| c.audit.checkpoint_every = 3).await;
    for t in 0..4 {
        s.tenant(&format!("audited-{t}"), &["images:generate"]).await;
    }
    let v = s.get_json(&s.admin_key, "/v1/admin/audit/verify").await;
    assert_eq!(v["ok"], true, "{v}");
    let events = v["report"]["events"].as_i64().unwrap();
    assert!(events >= 8, "tenants and keys are audited: {v}");

    // The end of the log, newest first, and pages back from it: together the whole log.
    let all = audit_seqs(&s, "limit=1000").await;
    assert_eq!(all.len() as i64, events);
    let newest = audit_seqs(&s, "order=desc&limit=3").await;
    assert_eq!(newest, all.iter().rev().take(3).copied().collect::<Vec<_>>());
    let (mut back, mut cursor) = (newest.clone(), *newest.last().unwrap());
    loop {
        let page = audit_seqs(&s, &format!("order=desc&before={cursor}&limit=3")).await;
        let Some(&last) = page.last() else { break };
        back.extend(page);
        cursor = last;
    }
    back.reverse();
    assert_eq!(back, all);
    for (q, param) in [
        ("order=sideways", "order"),
        ("before=5", "before"),
        ("order=desc&after=5", "after"),
    ] {
        let r = s
            .http
            .get(s.url(&format!("/v1/admin/audit?{q}")))
            .bearer_auth(&s.admin_key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{q}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["param"], param, "{q}: {body}");
    }
    assert_eq!(
        v["report"]["checkpoints_verified"].as_i64().unwrap(),
        events / 3,
        "{v}"
    );

    // Only an admin may ask.
    let (_, user) = s.tenant("nosy", &["images:generate"]).await;
    let r = s
        .http
        .get(s.url("/v1/admin/audit/verify"))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // A shutdown signs the head, so nothing written before it can be cut off unseen.
    s.restart().await;
    let v = s.get_json(&s.admin_key, "/v1/admin/audit/verify").await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["report"]["last_checkpoint"], v["report"]["last_seq"], "{v}");

    // Someone with the database file drops the guard and edits an event.
    sqlx::any::install_default_drivers();
    let db = format!("sqlite://{}", s.config.data_dir.join("nanoimg.db").display());
    let pool = sqlx::AnyPool::connect(&db).await.unwrap();
    for q in [
        "DROP TRIGGER audit_events_no_update",
        "UPDATE audit_events SET outcome = 'rejected' WHERE seq = 2",
    ] {
        sqlx::query(q).execute(&pool).await.unwrap();
    }
    pool.close().await;
    let v = s.get_json(&s.admin_key, "/v1/admin/audit/verify").await;
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["report"]["first_break"]["seq"], 2, "{v}");
    assert_eq!(v["report"]["first_break"]["problem"], "modified", "{v}");
}

/// The `seq`s of `GET /v1/admin/audit?{query}`, in the order given.
async fn audit_seqs(s: &TestServer, query: &str) -> Vec<i64> {
    let v = s
        .get_json(&s.admin_key, &format!("/v1/admin/audit?{query}"))
        .await;
    v["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{query}: {v}"))
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compute_is_priced_before_any_work_and_charged_to_the_tenant() {
    // A 1024² image at 10 unguided steps costs 10.5 megapixel-steps.
    let s = start(|c| {
        c.rate.max_job_megapixel_steps = 10;
        c.rate.megapixel_steps_per_minute = 10;
    })
    .await;
    let (_, key) = s.tenant("spender", ALL_SCOPES).await;
    let costly = tiny_request(json!({"size": "1024x1024", "steps": 10, "guidance": 1.0}));
    for r in [
        s.generate(&key, costly.clone()).await,
        s.submit(&key, costly).await,
    ] {
        assert_eq!(r.status(), 400);
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], "job_too_costly", "{e}");
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("10.5 megapixel-steps") && msg.contains("rate.max_job_megapixel_steps"),
            "{msg}"
        );
    }
    // Four images at 512² and 10 steps: at least 10.5 megapixel-steps, where one is 2.6.
    let four = tiny_request(json!({"size": "512x512", "steps": 10, "n": 4}));
    let r = s.generate(&key, four).await;
    assert_eq!(r.status(), 400, "n counts: {}", r.text().await.unwrap());
    // Within the cap (5.2 each) but over what is left of 10 a minute: 429, naming the budget.
    let half = tiny_request(json!({"size": "512x512", "steps": 10, "guidance": 1.0, "n": 2}));
    let r = s.submit(&key, half.clone()).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let r = s.submit(&key, half).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "compute_budget_exceeded", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rate.megapixel_steps_per_minute"),
        "{e}"
    );
    // Nothing was queued or run for the refused requests: one job.
    let jobs = s.get_json(&key, "/v1/jobs").await;
    assert_eq!(jobs["data"].as_array().unwrap().len(), 1, "{jobs}");
    // A 16-operation restyle plan is priced as sixteen passes: refused where one passes.
    let (st, asset) = s
        .post_form(
            &key,
            "/v1/assets",
            TestServer::file_form("file", png(704, 704, None)),
        )
        .await;
    assert_eq!(st, 201, "{asset}");
    let session = json_of(
        s.http
            .post(s.url("/v1/edit-sessions"))
            .bearer_auth(&key)
            .json(&json!({"image_id": asset["id"]})),
    )
    .await;
    let restyle = json!({"op": "restyle", "prompt": "a watercolor", "strength": 1.0});
    let plan = |n: usize| json!({"plan": {"version": 1, "ops": vec![restyle.clone(); n]}, "steps": 2, "dry_run": true});
    let url = s.url(&format!(
        "/v1/edit-sessions/{}/instructions",
        session["id"].as_str().unwrap()
    ));
    let one = json_of(s.http.post(&url).bearer_auth(&key).json(&plan(1))).await;
    assert!(one["megapixel_steps"].as_u64().unwrap() <= 10, "{one}");
    let r = s
        .http
        .post(&url)
        .bearer_auth(&key)
        .json(&plan(16))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "job_too_costly", "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_sets_a_tenants_own_budgets_and_quotas() {
    let s = start(|c| {
        c.rate.max_job_megapixel_steps = 10;
        c.rate.megapixel_steps_per_minute = 10;
    })
    .await;
    let (big, big_key) = s.tenant("big-co", ALL_SCOPES).await;
    let (small, small_key) = s.tenant("small-co", ALL_SCOPES).await;
    let set = |tenant: String, limits: Value| {
        let req = s
            .http
            .put(s.url(&format!("/v1/admin/tenants/{tenant}/limits")))
            .bearer_auth(&s.admin_key)
            .json(&limits);
        async move { req.send().await.unwrap() }
    };
    // One tenant may run bigger jobs and more of them; another keeps almost nothing.
    let r = set(
        big.clone(),
        json!({"max_job_megapixel_steps": 40, "megapixel_steps_per_minute": 100}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["limits"]["max_job_megapixel_steps"], 40, "{t}");
    let r = set(small.clone(), json!({"max_stored_bytes": 1, "max_keys": 1})).await;
    assert_eq!(r.status(), 200);
    // Out of range: refused, nothing changed.
    let r = set(small.clone(), json!({"megapixel_steps_per_minute": 0})).await;
    assert_eq!(r.status(), 400);
    let me = s.get_json(&small_key, "/v1/me").await;
    assert_eq!(me["limits"]["max_stored_bytes"], 1, "{me}");
    assert_eq!(
        me["limits"]["megapixel_steps_per_minute"], 10,
        "the server's: {me}"
    );

    // 10.5 megapixel-steps: over the server's cap, within big-co's.
    let costly = tiny_request(json!({"size": "1024x1024", "steps": 10, "guidance": 1.0}));
    let r = s.submit(&small_key, costly.clone()).await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rate.max_job_megapixel_steps"),
        "{e}"
    );
    let id = s.submit_id(&big_key, costly.clone()).await;
    s.cancel(&big_key, &id).await;
    let usage = s.get_json(&big_key, "/v1/me/usage").await;
    assert_eq!(usage["megapixel_steps_per_minute"]["limit"], 100, "{usage}");
    assert!(
        usage["megapixel_steps_per_minute"]["remaining"].as_u64().unwrap() <= 89,
        "{usage}"
    );

    // small-co's storage quota of one byte: its first upload is the last.
    let upload = || TestServer::file_form("file", png(64, 64, None));
    assert_eq!(s.post_form(&small_key, "/v1/assets", upload()).await.0, 201);
    let (st, e) = s.post_form(&small_key, "/v1/assets", upload()).await;
    assert_eq!(st, 507, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the tenant's max_stored_bytes"),
        "{e}"
    );
    assert_eq!(s.post_form(&big_key, "/v1/assets", upload()).await.0, 201);
    let usage = s.get_json(&small_key, "/v1/me/usage").await;
    assert_eq!(usage["stored_bytes"]["limit"], 1, "{usage}");
    assert!(usage["stored_bytes"]["used"].as_u64().unwrap() > 1, "{usage}");

    // And one live key: the one it has.
    let account = s.key(&small, &["account"], None).await;
    let r = s
        .http
        .post(s.url("/v1/me/keys"))
        .bearer_auth(&account)
        .json(&json!({"name": "third", "scopes": ["account"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "key_quota_exceeded", "{e}");
    // Back to the server's defaults.
    let r = set(small, json!({})).await;
    let t: Value = r.json().await.unwrap();
    assert!(t["limits"]["max_keys"].is_null(), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_with_a_largest_size_is_priced_at_what_it_draws() {
    // The model draws at most 64×64; a job may cost one megapixel-step.
    let s = start_with_model(
        |c| c.rate.max_job_megapixel_steps = 1,
        |m| std::fs::write(m.join("nanoimg.json"), r#"{"max_size": "64x64"}"#).unwrap(),
    )
    .await;
    let (_, key) = s.tenant("artist", ALL_SCOPES).await;
    let models = s.get_json(&key, "/v1/models").await;
    assert_eq!(
        models["data"][0]["max_size"],
        json!({"width": 64, "height": 64}),
        "{models}"
    );
    // 512² at 10 steps would cost 2.6 megapixel-steps; drawn at 64² it costs 0.04.
    let r = s
        .generate(
            &key,
            tiny_request(json!({"size": "512x512", "steps": 10, "guidance": 1.0})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["size"], "512x512", "the size asked");
    let id = body["data"][0]["id"].as_str().unwrap();
    let asset = s.get_json(&key, &format!("/v1/assets/{id}")).await;
    assert_eq!(
        (asset["width"].as_u64(), asset["height"].as_u64()),
        (Some(512), Some(512))
    );
    // An edit plan's generative steps are drawn within it too.
    let (st, up) = s
        .post_form(
            &key,
            "/v1/assets",
            TestServer::file_form("file", png(512, 512, None)),
        )
        .await;
    assert_eq!(st, 201, "{up}");
    let session = json_of(
        s.http
            .post(s.url("/v1/edit-sessions"))
            .bearer_auth(&key)
            .json(&json!({"image_id": up["id"]})),
    )
    .await;
    let plan = json!({"plan": {"version": 1, "ops": [{"op": "restyle", "prompt": "ink", "strength": 1.0}]}, "steps": 10});
    let url = s.url(&format!(
        "/v1/edit-sessions/{}/instructions",
        session["id"].as_str().unwrap()
    ));
    let mut dry = plan.clone();
    dry["dry_run"] = true.into();
    let priced = json_of(s.http.post(&url).bearer_auth(&key).json(&dry)).await;
    assert_eq!(priced["megapixel_steps"], 1, "{priced}");
    let r = s
        .http
        .post(&url)
        .bearer_auth(&key)
        .json(&plan)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_openai_sdk_is_served_and_typos_are_still_refused() {
    let s = start(|c| c.public_url = Some("https://images.example.com/".into())).await;
    let (tenant, key) = s.tenant("newer-sdk", ALL_SCOPES).await;
    // Fields a newer SDK sends: an end user's id under its newer name, a field from the future,
    // a quality value this server does not know, a model name to come.
    let r = s
        .generate(
            &key,
            tiny_request(json!({
                "safety_identifier": "user-hash-1", "image_tokens_budget": {"max": 9},
                "quality": "ultra", "model": "chatgpt-image-latest", "response_format": "url",
            })),
        )
        .await;
    assert_eq!(r.status(), 200);
    let ignored = r.headers()["x-nanoimg-ignored-fields"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(ignored, "image_tokens_budget, quality");
    let body: Value = r.json().await.unwrap();
    // Signed links start with the public address, not the Host the request came to.
    let url = body["data"][0]["url"].as_str().unwrap();
    assert!(url.starts_with("https://images.example.com/v1/files/"), "{url}");
    // The end user is in the audit log.
    let audit = s
        .get_json(
            &s.admin_key,
            &format!("/v1/admin/audit?tenant={tenant}&limit=100"),
        )
        .await;
    let generated = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "image.generate")
        .unwrap();
    assert_eq!(generated["detail"]["end_user"], "user-hash-1", "{generated}");
    // A near miss of a field this server knows would silently lose a setting: refused by name.
    for (typo, meant) in [
        ("negative_promt", "negative_prompt"),
        ("Steps", "steps"),
        ("guidence", "guidance"),
    ] {
        let r = s.generate(&key, tiny_request(json!({typo: 3}))).await;
        assert_eq!(r.status(), 400);
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["param"], typo, "{e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("did you mean `{meant}`")),
            "{e}"
        );
    }
    // Forms too: an edit with a field from the future.
    let form = reqwest::multipart::Form::new()
        .part(
            "image",
            reqwest::multipart::Part::bytes(png(64, 64, None)).file_name("a.png"),
        )
        .text("prompt", "a hat")
        .text("steps", "2")
        .text("future_field", "x");
    let r = s.edit(&key, form).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-nanoimg-ignored-fields"], "future_field");
    // Models carry OpenAI's `created`.
    let models = s.get_json(&key, "/v1/models").await;
    assert!(
        models["data"][0]["created"].as_u64().unwrap() > 1_700_000_000,
        "{models}"
    );
    // The native job API stays strict.
    let r = s.submit(&key, tiny_request(json!({"future_field": 1}))).await;
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_time_limit_is_stopped_and_fails_with_the_reason() {
    let s = start(|c| c.job_timeout_secs = 1).await;
    let (_, key) = s.tenant("slow", ALL_SCOPES).await;
    let long = tiny_request(json!({"size": "256x256", "steps": 100, "n": 4}));
    // Waiting on the connection: 504 with the reason.
    let started = Instant::now();
    let r = s.generate(&key, long.clone()).await;
    assert_eq!(r.status(), 504);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "job_timeout", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("job_timeout_secs"),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    // Detached: the record says failed, with the reason; nothing was kept.
    let id = s.submit_id(&key, long).await;
    let rec = s.wait_for(&key, &id, "failed").await;
    assert!(
        rec["error"].as_str().unwrap().contains("time limit of 1 s"),
        "{rec}"
    );
    assert_eq!(s.get_json(&key, "/v1/assets").await["data"], json!([]));
    // The worker lives on.
    assert_eq!(s.generate(&key, tiny_request(json!({}))).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_the_servers_and_a_clients_own_is_kept_only_when_plain() {
    let s = start(|_| {}).await;
    let (_, key) = s.tenant("ids", ALL_SCOPES).await;
    let me = |client: &'static str| {
        s.http
            .get(s.url("/v1/me"))
            .bearer_auth(&key)
            .header("x-request-id", client)
            .send()
    };
    let r = me("trace-42:a.b").await.unwrap();
    let ours = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(ours.starts_with("req_"), "{ours}");
    assert_eq!(r.headers()["x-client-request-id"], "trace-42:a.b");
    // An id another request had, or one with markup, is never taken as ours.
    let r = me("\"}{<script>").await.unwrap();
    assert!(r.headers()["x-request-id"].to_str().unwrap().starts_with("req_"));
    assert!(!r.headers().contains_key("x-client-request-id"));
    let leaked = ours.clone();
    let r = s
        .http
        .get(s.url("/v1/me"))
        .bearer_auth(&key)
        .header("x-request-id", leaked.as_str())
        .send()
        .await
        .unwrap();
    assert_ne!(r.headers()["x-request-id"].to_str().unwrap(), leaked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_at_its_storage_quota_stores_nothing_more_until_it_deletes() {
    let s = start(|c| c.rate.max_stored_bytes_per_tenant = 1).await;
    let (_, key) = s.tenant("hoarder", ALL_SCOPES).await;
    let (_, other) = s.tenant("neighbour", ALL_SCOPES).await;
    let srv = &s;
    let upload = move |k: String| async move {
        srv.post_form(&k, "/v1/assets", TestServer::file_form("file", png(64, 64, None)))
            .await
    };
    let (st, first) = upload(key.clone()).await;
    assert_eq!(st, 201, "{first}");
    // At the quota: uploads and jobs are refused, naming it; nothing is kept.
    let (st, e) = upload(key.clone()).await;
    assert_eq!(st, 507, "{e}");
    assert_eq!(e["error"]["code"], "storage_quota_exceeded", "{e}");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("rate.max_stored_bytes_per_tenant"));
    let r = s.generate(&key, tiny_request(json!({}))).await;
    assert_eq!(r.status(), 507);
    assert_eq!(
        s.get_json(&key, "/v1/assets").await["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(s.get_json(&key, "/v1/jobs").await["data"], json!([]));
    // Another tenant has its own quota.
    assert_eq!(upload(other.clone()).await.0, 201);
    // Deleting makes room.
    let id = first["id"].as_str().unwrap();
    let r = s
        .http
        .delete(s.url(&format!("/v1/assets/{id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(upload(key.clone()).await.0, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_cannot_hold_every_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = start(|c| {
        c.header_timeout_secs = 1;
        c.max_connections = 3;
    })
    .await;
    // The server's own socket: this is about its connections, not what it answers.
    let addr = s.direct.trim_start_matches("http://").to_owned();
    // As many clients as connections, each starting a request and never finishing its headers.
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: nanoimg\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(c);
    }
    // A well-behaved client waits for a free connection while they hold them all, and is
    // served once the server has cut them off.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let r = reqwest::get(format!("{}/healthz", s.direct)).await.unwrap();
    assert_eq!(r.status(), 200);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "served after {waited:?}: no cap held it"
    );
    assert!(waited < Duration::from_secs(10), "served after {waited:?}");
    // Each slow connection was closed by the server (end of stream, a reset or a 408).
    for mut c in slow {
        let mut buf = [0u8; 512];
        let read = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await;
        match read.expect("the server closed the slow connection") {
            Ok(0) | Err(_) => {}
            Ok(n) => assert!(String::from_utf8_lossy(&buf[..n]).contains("408"), "{n} bytes"),
        }
    }
}
