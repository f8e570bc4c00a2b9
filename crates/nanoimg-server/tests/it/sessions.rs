//! Edit sessions through the API against a real server: create from an upload, instructions
//! turn by turn (pixel and generative), undo, redo, branches, dry runs, tenant isolation and
//! deletion; OpenAI-style edits through the planner; and the injection corpus, after which the
//! server's assets, keys and tenants are as they were.

use crate::common::*;
use serde_json::{json, Value};

/// Uploads an image as an asset; its id.
async fn upload(s: &TestServer, key: &str, bytes: Vec<u8>) -> String {
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(bytes).file_name("in.png"));
    let r = s
        .http
        .post(s.url("/v1/assets"))
        .bearer_auth(key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A picture with structure: a bright top (the "sky"), a dark bottom, a gradient across.
fn scene(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        if y < h / 2 {
            image::Rgb([90, 140, (150 + x * 100 / w) as u8])
        } else {
            image::Rgb([(40 + x * 120 / w) as u8, 70, 30])
        }
    });
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

async fn post(s: &TestServer, key: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = s.http.post(s.url(path)).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn instruct(s: &TestServer, key: &str, session: &str, body: Value) -> (u16, Value) {
    post(
        s,
        key,
        &format!("/v1/edit-sessions/{session}/instructions"),
        Some(body),
    )
    .await
}

/// A version's image, decoded.
async fn image_of(s: &TestServer, key: &str, asset: &str) -> image::RgbImage {
    let r = s
        .http
        .get(s.url(&format!("/v1/assets/{asset}/content")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{asset}");
    image::load_from_memory(&r.bytes().await.unwrap())
        .unwrap()
        .to_rgb8()
}

fn mean(img: &image::RgbImage) -> f64 {
    img.as_raw().iter().map(|&v| f64::from(v)).sum::<f64>() / img.as_raw().len() as f64
}

fn ops(v: &Value) -> Vec<String> {
    v["plan"]["ops"]
        .as_array()
        .unwrap_or_else(|| panic!("no plan: {v}"))
        .iter()
        .map(|o| o["op"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_goes_turn_by_turn_with_undo_redo_and_branches() {
    let s = start(|_| {}).await;
    let (_, key) = s.tenant("acme", ALL_SCOPES).await;
    let root_image = upload(&s, &key, scene(64, 48)).await;

    let (st, session) = post(
        &s,
        &key,
        "/v1/edit-sessions",
        Some(json!({"image_id": root_image})),
    )
    .await;
    assert_eq!(st, 201, "{session}");
    let id = session["id"].as_str().unwrap().to_owned();
    let root = session["head"].as_str().unwrap().to_owned();
    assert_eq!(session["versions"].as_array().unwrap().len(), 1);
    assert_eq!(session["can_undo"], false);
    assert_eq!(session["head_image_id"], root_image.as_str());

    // 1: a pixel edit. The plan is recorded with the version; the image is 48×48 now.
    let (st, v1) = instruct(&s, &key, &id, json!({"instruction": "crop it to a square"})).await;
    assert_eq!(st, 201, "{v1}");
    assert_eq!(ops(&v1["version"]), ["crop_aspect"]);
    assert_eq!(v1["version"]["parent_id"], root.as_str());
    assert_eq!(v1["head"], v1["version"]["id"]);
    let img1 = image_of(&s, &key, v1["version"]["image_id"].as_str().unwrap()).await;
    assert_eq!(img1.dimensions(), (48, 48));

    // 2: brighter than 1.
    let (st, v2) = instruct(&s, &key, &id, json!({"instruction": "make it brighter"})).await;
    assert_eq!(st, 201, "{v2}");
    assert_eq!(ops(&v2["version"]), ["brightness"]);
    let img2 = image_of(&s, &key, v2["version"]["image_id"].as_str().unwrap()).await;
    assert!(
        mean(&img2) > mean(&img1) + 5.0,
        "{} vs {}",
        mean(&img2),
        mean(&img1)
    );

    // 3: a generative edit on the model: the sky is repainted, the ground kept.
    let (st, v3) = instruct(
        &s,
        &key,
        &id,
        json!({"instruction": "turn the sky into a sunset", "steps": 2, "seed": 3}),
    )
    .await;
    assert_eq!(st, 201, "{v3}");
    assert_eq!(ops(&v3["version"]), ["inpaint"]);
    let img3 = image_of(&s, &key, v3["version"]["image_id"].as_str().unwrap()).await;
    assert_eq!(img3.dimensions(), (48, 48));
    let half = |i: &image::RgbImage, top: bool| {
        image::imageops::crop_imm(i, 0, if top { 0 } else { 32 }, 48, 16).to_image()
    };
    assert!(mean_abs_diff(&half(&img3, true), &half(&img2, true)) > 10.0);
    assert!(mean_abs_diff(&half(&img3, false), &half(&img2, false)) < 6.0);
    let (v2_id, v3_id) = (
        v2["version"]["id"].as_str().unwrap().to_owned(),
        v3["version"]["id"].as_str().unwrap().to_owned(),
    );

    // Undo → 2, redo → 3, "undo" typed as an instruction → 2 again.
    let (st, u) = post(&s, &key, &format!("/v1/edit-sessions/{id}/undo"), None).await;
    assert_eq!((st, u["head"].as_str().unwrap()), (200, v2_id.as_str()), "{u}");
    assert_eq!(u["can_redo"], true);
    let (st, r) = post(&s, &key, &format!("/v1/edit-sessions/{id}/redo"), None).await;
    assert_eq!((st, r["head"].as_str().unwrap()), (200, v3_id.as_str()), "{r}");
    let (st, u) = instruct(&s, &key, &id, json!({"instruction": "undo"})).await;
    assert_eq!((st, u["head"].as_str().unwrap()), (200, v2_id.as_str()), "{u}");

    // An instruction after an undo branches from 2 and clears redo.
    let (st, b) = instruct(
        &s,
        &key,
        &id,
        json!({"instruction": "convert to black and white"}),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    assert_eq!(b["version"]["parent_id"], v2_id.as_str());
    assert_eq!(b["can_redo"], false);
    let (st, _) = post(&s, &key, &format!("/v1/edit-sessions/{id}/redo"), None).await;
    assert_eq!(st, 409);
    let gray = image_of(&s, &key, b["version"]["image_id"].as_str().unwrap()).await;
    assert!(gray
        .pixels()
        .all(|p| p[0].abs_diff(p[1]) <= 12 && p[1].abs_diff(p[2]) <= 12));

    // A branch from the root, by `from_version`, and one by checkout.
    let (st, f) = instruct(
        &s,
        &key,
        &id,
        json!({"instruction": "flip it upside down", "from_version": root}),
    )
    .await;
    assert_eq!(st, 201, "{f}");
    assert_eq!(f["version"]["parent_id"], root.as_str());
    let (st, c) = post(
        &s,
        &key,
        &format!("/v1/edit-sessions/{id}/checkout"),
        Some(json!({"version": v3_id})),
    )
    .await;
    assert_eq!((st, c["head"].as_str().unwrap()), (200, v3_id.as_str()), "{c}");
    let (st, g) = instruct(&s, &key, &id, json!({"instruction": "add a vignette"})).await;
    assert_eq!(st, 201, "{g}");
    assert_eq!(g["version"]["parent_id"], v3_id.as_str());

    // The tree: root → 1 → 2 → {3 → vignette, gray}; root → flip.
    let tree = s.get_json(&key, &format!("/v1/edit-sessions/{id}")).await;
    let versions = tree["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 7, "{tree}");
    let seqs: Vec<i64> = versions.iter().map(|v| v["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4, 5, 6]);

    // A dry run shows the plan and changes nothing.
    let (st, d) = instruct(
        &s,
        &key,
        &id,
        json!({"instruction": "crop to 16:9 and sharpen it a bit", "dry_run": true}),
    )
    .await;
    assert_eq!(st, 200, "{d}");
    assert_eq!(ops(&d), ["crop_aspect", "sharpen"]);
    let after = s.get_json(&key, &format!("/v1/edit-sessions/{id}")).await;
    assert_eq!(after["versions"], tree["versions"]);
    assert_eq!(after["head"], tree["head"]);

    // A plan can be sent as JSON; it is validated like a planned one.
    let (st, p) = instruct(
        &s,
        &key,
        &id,
        json!({"plan": {"version": 1, "ops": [{"op": "invert"}]}}),
    )
    .await;
    assert_eq!(st, 201, "{p}");
    // The previewed plan applied as shown, with the words it came from: they are the
    // version's, and the plan is the one sent (the planner is not asked again).
    let (st, p) = instruct(
        &s,
        &key,
        &id,
        json!({"instruction": "crop to 16:9 and sharpen it a bit", "plan": d["plan"]}),
    )
    .await;
    assert_eq!(st, 201, "{p}");
    assert_eq!(
        p["version"]["instruction"], "crop to 16:9 and sharpen it a bit",
        "{p}"
    );
    assert_eq!(p["version"]["plan"], d["plan"], "{p}");
    // Words that do not match the plan only label it: the plan is what runs.
    let (st, p) = instruct(
        &s,
        &key,
        &id,
        json!({"instruction": "rotate it", "plan": {"version": 1, "ops": [{"op": "invert"}]}}),
    )
    .await;
    assert_eq!(st, 201, "{p}");
    assert_eq!(p["version"]["plan"]["ops"][0]["op"], "invert", "{p}");
    let (st, e) = instruct(
        &s,
        &key,
        &id,
        json!({"instruction": "a nude figure study", "plan": {"version": 1, "ops": [{"op": "invert"}]}}),
    )
    .await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (400, Some("moderation_blocked")),
        "{e}"
    );
    let (st, e) = instruct(
        &s,
        &key,
        &id,
        json!({"plan": {"version": 1, "ops": [{"op": "resize", "width": 90000, "height": 10}]}}),
    )
    .await;
    assert_eq!((st, e["error"]["param"].as_str()), (400, Some("plan")), "{e}");
    let (st, e) = instruct(
        &s,
        &key,
        &id,
        json!({"plan": {"version": 1, "ops": [{"op": "delete_assets"}]}}),
    )
    .await;
    assert_eq!(st, 400, "{e}");

    // Undo at the root is a conflict, not a crash.
    post(
        &s,
        &key,
        &format!("/v1/edit-sessions/{id}/checkout"),
        Some(json!({"version": root})),
    )
    .await;
    let (st, e) = post(&s, &key, &format!("/v1/edit-sessions/{id}/undo"), None).await;
    assert_eq!(st, 409, "{e}");

    // Another tenant sees none of it.
    let (_, other) = s.tenant("globex", ALL_SCOPES).await;
    for path in [
        format!("/v1/edit-sessions/{id}/undo"),
        format!("/v1/edit-sessions/{id}/instructions"),
    ] {
        let (st, _) = post(
            &s,
            &other,
            &path,
            Some(json!({"instruction": "make it brighter"})),
        )
        .await;
        assert_eq!(st, 404, "{path}");
    }
    let r = s
        .http
        .get(s.url(&format!("/v1/edit-sessions/{id}")))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let (st, _) = post(
        &s,
        &other,
        "/v1/edit-sessions",
        Some(json!({"image_id": root_image})),
    )
    .await;
    assert_eq!(st, 400);
    let list = s.get_json(&other, "/v1/edit-sessions").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);

    // Deleting the session deletes the images its instructions made, not the one it started from.
    let made: Vec<String> = tree["versions"]
        .as_array()
        .unwrap()
        .iter()
        .skip(1)
        .map(|v| v["image_id"].as_str().unwrap().to_owned())
        .collect();
    let r = s
        .http
        .delete(s.url(&format!("/v1/edit-sessions/{id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let gone = s.get_json(&key, &format!("/v1/edit-sessions/{id}")).await;
    assert_eq!(gone["error"]["code"], "not_found", "{gone}");
    for a in &made {
        let r = s.get_json(&key, &format!("/v1/assets/{a}")).await;
        assert_eq!(r["error"]["code"], "not_found", "{a}: {r}");
    }
    let kept = s.get_json(&key, &format!("/v1/assets/{root_image}")).await;
    assert_eq!(kept["id"], root_image.as_str());
}

/// What the injection corpus must not change: every tenant, every key (and whether it is
/// revoked), every asset and every session of every tenant.
async fn state_of(s: &TestServer, keys: &[&str]) -> Value {
    let tenants = s.get_json(&s.admin_key, "/v1/admin/tenants").await;
    let mut all_keys = Vec::new();
    for t in tenants["data"].as_array().unwrap() {
        let id = t["id"].as_str().unwrap();
        all_keys.push(
            s.get_json(&s.admin_key, &format!("/v1/admin/tenants/{id}/keys"))
                .await,
        );
    }
    let mut owned = Vec::new();
    for k in keys {
        owned.push(json!({
            "assets": s.get_json(k, "/v1/assets?limit=100").await["data"],
            "sessions": s.get_json(k, "/v1/edit-sessions?limit=100").await["data"],
        }));
    }
    json!({"tenants": tenants, "keys": all_keys, "owned": owned})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_injection_corpus_is_refused_and_changes_nothing() {
    let s = start(|_| {}).await;
    let (_, key) = s.tenant("acme", ALL_SCOPES).await;
    let (_, victim) = s.tenant("victim", ALL_SCOPES).await;
    upload(&s, &victim, scene(32, 32)).await;
    let image = upload(&s, &key, scene(64, 48)).await;
    let (_, session) = post(&s, &key, "/v1/edit-sessions", Some(json!({"image_id": image}))).await;
    let id = session["id"].as_str().unwrap().to_owned();
    let before = state_of(&s, &[&key, &victim]).await;

    let corpus: Vec<&str> = include_str!("../../../nanoimg-edit/eval/injection.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(corpus.len() >= 30);
    for line in &corpus {
        // As a session instruction…
        let (st, v) = instruct(&s, &key, &id, json!({"instruction": line, "steps": 2})).await;
        assert_eq!(st, 400, "{line}: {v}");
        let code = v["error"]["code"].as_str().unwrap_or_default();
        assert!(
            code == "instruction_refused" || code == "invalid_value",
            "{line}: {v}"
        );
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
        // …and as an OpenAI edit's prompt.
        let form = TestServer::file_form("image", scene(64, 48))
            .text("prompt", line.to_string())
            .text("steps", "2");
        let (st, v) = s.post_form(&key, "/v1/images/edits", form).await;
        assert_eq!(st, 400, "{line}: {v}");
    }
    assert_eq!(state_of(&s, &[&key, &victim]).await, before);
    // The refusals reach the audit log (written in the background), with their reasons.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let audit = s.get_json(&s.admin_key, "/v1/admin/audit?limit=1000").await;
        let refused: Vec<&Value> = audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "edit.refused")
            .collect();
        if refused.len() >= 2 * corpus.len() {
            assert!(refused.iter().all(|e| e["detail"]["reason"].is_string()));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} refusals audited",
            refused.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_edits_go_through_the_planner() {
    let s = start(|_| {}).await;
    let (_, key) = s.tenant("acme", ALL_SCOPES).await;
    let edit = |prompt: &str, extra: &[(&str, &str)]| {
        let mut form = reqwest::multipart::Form::new()
            .text("prompt", prompt.to_owned())
            .text("steps", "2")
            .text("seed", "1")
            .part(
                "image",
                reqwest::multipart::Part::bytes(scene(64, 48)).file_name("x.png"),
            );
        for (k, v) in extra {
            form = form.text(k.to_string(), v.to_string());
        }
        s.http
            .post(s.url("/v1/images/edits"))
            .bearer_auth(&key)
            .multipart(form)
            .send()
    };
    // An edit instruction runs as a plan: a square crop, and the response says so.
    let r = edit("crop it to a square and make it brighter", &[])
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(ops(&v), ["crop_aspect", "brightness"]);
    assert_eq!(v["size"], "48x48");
    let out = image::load_from_memory(&b64(&v["data"][0]["b64_json"])).unwrap();
    assert_eq!((out.width(), out.height()), (48, 48));
    // A description is the classic edit: one model pass with the whole prompt, no plan.
    let r = edit("a watercolour of a lighthouse at dusk", &[]).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["plan"].is_null(), "{v}");
    // dry_run answers with the plan and runs nothing.
    let jobs_before = s.get_json(&key, "/v1/jobs").await["data"]
        .as_array()
        .unwrap()
        .len();
    let r = edit("rotate it 90 degrees", &[("dry_run", "true")])
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["dry_run"].as_bool(), ops(&v)),
        (Some(true), vec!["rotate".to_owned()])
    );
    let jobs_after = s.get_json(&key, "/v1/jobs").await["data"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(jobs_before, jobs_after);
    // Undo has no history here.
    let r = edit("undo", &[]).await.unwrap();
    assert_eq!(r.status(), 400);
    // dry_run is for edits only.
    let r = s.generate(&key, tiny_request(json!({"dry_run": true}))).await;
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn again_repeats_the_last_instruction_of_the_branch() {
    let s = start(|_| {}).await;
    let (_, key) = s.tenant("acme", ALL_SCOPES).await;
    let image = upload(&s, &key, scene(64, 48)).await;
    let (_, session) = post(&s, &key, "/v1/edit-sessions", Some(json!({"image_id": image}))).await;
    let id = session["id"].as_str().unwrap().to_owned();
    let (st, _) = instruct(&s, &key, &id, json!({"instruction": "again"})).await;
    assert_eq!(st, 400, "nothing to repeat yet");
    let (_, first) = instruct(&s, &key, &id, json!({"instruction": "blur it a little"})).await;
    let (st, again) = instruct(&s, &key, &id, json!({"instruction": "again"})).await;
    assert_eq!(st, 201, "{again}");
    assert_eq!(again["version"]["plan"], first["version"]["plan"]);
    assert_eq!(again["version"]["parent_id"], first["version"]["id"]);
    assert_eq!(again["version"]["instruction"], "again");
}

/// The left `frac` of a `w`×`h` picture white (repaint), the rest black, as a PNG.
fn left_mask(w: u32, h: u32, frac: f32) -> Vec<u8> {
    let img = image::GrayImage::from_fn(w, h, |x, _| {
        image::Luma([if (x as f32) < w as f32 * frac { 255 } else { 0 }])
    });
    let mut out = Vec::new();
    image::DynamicImage::ImageLuma8(img)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brush_mask_limits_what_an_instruction_repaints() {
    let s = start(|_| {}).await;
    let (_, key) = s.tenant("brush", ALL_SCOPES).await;
    let (_, other) = s.tenant("other", ALL_SCOPES).await;
    let img = upload(&s, &key, scene(64, 64)).await;
    let (st, session) = post(&s, &key, "/v1/edit-sessions", Some(json!({"image_id": img}))).await;
    assert_eq!(st, 201, "{session}");
    let id = session["id"].as_str().unwrap().to_owned();
    // A mask at half the size: it is stretched to the image.
    let mask = upload(&s, &key, left_mask(32, 32, 0.5)).await;
    let plan = json!({"version": 1, "ops": [{"op": "restyle", "prompt": "a red balloon", "strength": 1.0}]});

    // A dry run says it is masked; another tenant's mask (or none at all) is refused.
    let (st, dry) = instruct(
        &s,
        &key,
        &id,
        json!({"plan": plan, "mask_id": mask, "dry_run": true}),
    )
    .await;
    assert_eq!((st, &dry["masked"]), (200, &json!(true)), "{dry}");
    let theirs = upload(&s, &other, left_mask(32, 32, 0.5)).await;
    for bad in [theirs.as_str(), "img_00000000000000000000000000"] {
        let (st, e) = instruct(&s, &key, &id, json!({"plan": plan, "mask_id": bad, "steps": 2})).await;
        assert_eq!((st, e["error"]["param"].as_str()), (400, Some("mask_id")), "{e}");
    }
    let (st, e) = instruct(&s, &key, &id, json!({"instruction": "undo", "mask_id": mask})).await;
    assert_eq!((st, e["error"]["param"].as_str()), (400, Some("mask_id")), "{e}");

    let (st, out) = instruct(
        &s,
        &key,
        &id,
        json!({"plan": plan, "mask_id": mask, "steps": 2, "seed": 1}),
    )
    .await;
    assert_eq!(st, 201, "{out}");
    let before = image_of(&s, &key, &img).await;
    let after = image_of(&s, &key, out["version"]["image_id"].as_str().unwrap()).await;
    // Columns well inside each half: the left is repainted, the right kept (the watermark
    // moves every pixel a little, so "kept" is a small mean difference).
    let diff = |x0: u32, x1: u32| {
        let mut sum = 0f64;
        let mut n = 0f64;
        for y in 0..64 {
            for x in x0..x1 {
                for c in 0..3 {
                    sum += (f64::from(before.get_pixel(x, y)[c]) - f64::from(after.get_pixel(x, y)[c])).abs();
                    n += 1.0;
                }
            }
        }
        sum / n
    };
    let (left, right) = (diff(0, 24), diff(40, 64));
    assert!(
        left > 10.0 && right < 4.0,
        "left changed {left:.1}, right {right:.1}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_never_grows_an_image_past_the_servers_output_caps() {
    let s = start(|c| {
        c.limits.max_side = 256;
        c.limits.max_pixels = 256 * 192;
    })
    .await;
    let (_, key) = s.tenant("acme", ALL_SCOPES).await;
    let small = upload(&s, &key, scene(64, 48)).await;
    let (st, session) = post(&s, &key, "/v1/edit-sessions", Some(json!({"image_id": small}))).await;
    assert_eq!(st, 201, "{session}");
    let id = session["id"].as_str().unwrap().to_owned();
    let dry = |instruction: &str| json!({"instruction": instruction, "dry_run": true});
    // Within the caps: a ×4 upscale of 64×48 is 256×192.
    let (st, v) = instruct(&s, &key, &id, dry("upscale it 4x")).await;
    assert_eq!(st, 200, "{v}");
    // Past them, however it is asked: a resize, two upscales, a plan sent as JSON.
    for body in [
        dry("resize to 1024x1024"),
        dry("upscale it 4x, then upscale it 2x"),
        json!({"plan": {"version": 1, "ops": [{"op": "resize", "width": 4096, "height": 4096}]},
               "dry_run": true}),
    ] {
        let (st, e) = instruct(&s, &key, &id, body.clone()).await;
        assert_eq!(st, 400, "{body} → {e}");
        assert!(e["error"]["message"].as_str().unwrap().contains("limit"), "{e}");
    }
    // An upload already larger than the caps may be edited, not enlarged.
    let big = upload(&s, &key, scene(320, 240)).await;
    let (_, session) = post(&s, &key, "/v1/edit-sessions", Some(json!({"image_id": big}))).await;
    let id = session["id"].as_str().unwrap().to_owned();
    let (st, v) = instruct(&s, &key, &id, dry("make it brighter")).await;
    assert_eq!(st, 200, "{v}");
    let (st, e) = instruct(&s, &key, &id, dry("upscale it 2x")).await;
    assert_eq!(st, 400, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_pixel_plan_stops_within_two_seconds_of_its_cancellation() {
    let s = start(|_| {}).await;
    let (_, key) = s.tenant("acme", ALL_SCOPES).await;
    let big = upload(&s, &key, scene(2048, 2048)).await;
    let (st, session) = post(&s, &key, "/v1/edit-sessions", Some(json!({"image_id": big}))).await;
    assert_eq!(st, 201, "{session}");
    let id = session["id"].as_str().unwrap().to_owned();
    // Sixteen wide blurs and captions on four megapixels: far longer than the test waits.
    let ops: Vec<Value> = (0..8)
        .flat_map(|i| {
            [
                json!({"op": "blur", "sigma": 50.0}),
                json!({"op": "caption", "text": format!("line {i}"), "place": "center", "size": 0.3,
                       "color": [255, 255, 255]}),
            ]
        })
        .collect();
    let body = json!({"plan": {"version": 1, "ops": ops}});
    let waiting = {
        let req = s
            .http
            .post(s.url(&format!("/v1/edit-sessions/{id}/instructions")))
            .bearer_auth(&key)
            .json(&body);
        tokio::spawn(async move { req.send().await.unwrap() })
    };
    let job = loop {
        let jobs = s.get_json(&key, "/v1/jobs").await;
        if let Some(j) = jobs["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["status"] == "running")
        {
            break j["id"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    // Let it get into its operations, then cancel.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let asked = std::time::Instant::now();
    assert_eq!(s.cancel(&key, &job).await, 200);
    s.wait_for(&key, &job, "cancelled").await;
    let took = asked.elapsed();
    assert!(
        took < std::time::Duration::from_secs(2),
        "stopped {took:?} after the cancel"
    );
    let r = waiting.await.unwrap();
    assert_eq!(r.status(), 409, "{}", r.text().await.unwrap());
    // No version came of it.
    let tree = s.get_json(&key, &format!("/v1/edit-sessions/{id}")).await;
    assert_eq!(tree["versions"].as_array().unwrap().len(), 1, "{tree}");
}
