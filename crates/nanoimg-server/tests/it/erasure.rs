//! Erasure through the API: what a tenant wrote is nowhere in the data directory's files after
//! `DELETE /v1/admin/tenants/{id}`, nor (being encrypted) in a copy taken before it; its jobs
//! stop, its key stops working, and the audit chain still verifies.

use crate::common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const MARKER: &str = "QUARTZMARKER";

/// The files under `dir` whose raw bytes contain the marker.
fn with_marker(dir: &Path) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|f| {
            let b = std::fs::read(f).unwrap_or_default();
            b.windows(MARKER.len()).any(|w| w == MARKER.as_bytes())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_tenant_leaves_no_plaintext_and_its_jobs_and_keys_stop() {
    let s = start(|c| c.workers = 1).await;
    let (tenant, key) = s.tenant("leaving-co", ALL_SCOPES).await;
    let (_, stays) = s.tenant("staying-co", ALL_SCOPES).await;

    // What the tenant leaves behind: a generation, an upload, a character, an edit session.
    let r = s
        .generate(
            &key,
            tiny_request(json!({"prompt": format!("a fox called {MARKER}")})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let form = reqwest::multipart::Form::new()
        .text("name", "Robo")
        .text("description", format!("a robot called {MARKER}"))
        .text("consent", "true")
        .part(
            "reference",
            reqwest::multipart::Part::bytes(png(64, 64, None)).file_name("r.png"),
        );
    let (st, c) = s.post_form(&key, "/v1/characters", form).await;
    assert_eq!(st, 201, "{c}");
    let (st, a) = s
        .post_form(
            &key,
            "/v1/assets",
            TestServer::file_form("file", png(48, 48, None)),
        )
        .await;
    assert_eq!(st, 201, "{a}");
    let session: Value = json_of(
        s.http
            .post(s.url("/v1/edit-sessions"))
            .bearer_auth(&key)
            .json(&json!({"image_id": a["id"]})),
    )
    .await;
    let v: Value = json_of(
        s.http
            .post(s.url(&format!(
                "/v1/edit-sessions/{}/instructions",
                session["id"].as_str().unwrap()
            )))
            .bearer_auth(&key)
            .json(&json!({"instruction": "make it brighter"})),
    )
    .await;
    assert!(v["version"]["id"].is_string(), "{v}");
    let kept = s
        .generate(&stays, tiny_request(json!({"prompt": "a kept cat"})))
        .await;
    assert_eq!(kept.status(), 200);

    // Encrypted at rest: the marker is in no file now. Take a copy (a backup).
    let data = s.config.data_dir.clone();
    assert_eq!(with_marker(&data), Vec::<PathBuf>::new());
    let backup = s.dir.path().join("backup");
    for f in files(&data) {
        let dest = backup.join(f.strip_prefix(&data).unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        let _ = std::fs::copy(&f, &dest);
    }

    // A long job running when the erasure comes is cancelled and writes nothing after.
    let job = s
        .submit_id(&key, tiny_request(json!({"steps": 100, "n": 4})))
        .await;
    let _ = s.wait_for(&key, &job, "running").await;

    // Only an admin may erase; the operator's own tenant is refused.
    let r = s
        .http
        .delete(s.url(&format!("/v1/admin/tenants/{tenant}")))
        .bearer_auth(&stays)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = s
        .http
        .delete(s.url("/v1/admin/tenants/admin"))
        .bearer_auth(&s.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);

    let e: Value = json_of(
        s.http
            .delete(s.url(&format!("/v1/admin/tenants/{tenant}")))
            .bearer_auth(&s.admin_key),
    )
    .await;
    assert_eq!(e["erased"], true, "{e}");
    assert_eq!(e["removed"]["jobs_cancelled"], 1, "{e}");
    assert_eq!(e["removed"]["characters"], 1, "{e}");
    assert!(e["removed"]["blobs"].as_u64().unwrap() >= 4, "{e}");

    assert_eq!(with_marker(&data), Vec::<PathBuf>::new());
    assert_eq!(with_marker(&backup), Vec::<PathBuf>::new());
    assert!(!data.join("blobs").join(&tenant).exists());
    // The key is gone with the tenant; the other tenant carries on.
    let r = s
        .http
        .get(s.url("/v1/me"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = s.generate(&stays, tiny_request(json!({}))).await;
    assert_eq!(r.status(), 200);
    let r = s
        .http
        .get(s.url(&format!("/v1/admin/tenants/{tenant}")))
        .bearer_auth(&s.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // The audit log: the erasure recorded, the tenant's events still there but without detail,
    // and the chain whole.
    let v = s.get_json(&s.admin_key, "/v1/admin/audit/verify").await;
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["report"]["redacted"].as_u64().unwrap() >= 3, "{v}");
    let audit = s.get_json(&s.admin_key, "/v1/admin/audit?limit=1000").await;
    let events = audit["data"].as_array().unwrap();
    assert!(events
        .iter()
        .any(|e| e["action"] == "tenant.erase" && e["target"] == tenant.as_str()));
    for ev in events.iter().filter(|e| e["tenant_id"] == tenant.as_str()) {
        assert_eq!(ev["detail"], json!({"redacted": true}), "{ev}");
    }
    // The operator's events about it (making it and its keys) keep no detail naming it either.
    for ev in events.iter().filter(|e| e["action"] != "tenant.erase") {
        assert!(!ev["detail"].to_string().contains(tenant.as_str()), "{ev}");
    }
    assert!(events
        .iter()
        .any(|e| e["action"] == "key.create" && e["detail"] == json!({"redacted": true})));
}

#[tokio::test]
async fn a_tenant_exports_everything_it_has_and_nothing_of_anyone_else() {
    let s = start(|_| {}).await;
    let (tenant, key) = s.tenant("exporter", ALL_SCOPES).await;
    let (_, other) = s.tenant("bystander", ALL_SCOPES).await;
    let r = s
        .generate(&key, tiny_request(json!({"prompt": "an exported fox"})))
        .await;
    assert_eq!(r.status(), 200);
    let (st, up) = s
        .post_form(
            &key,
            "/v1/assets",
            TestServer::file_form("file", png(40, 30, None)),
        )
        .await;
    assert_eq!(st, 201, "{up}");
    let form = reqwest::multipart::Form::new()
        .text("name", "Robo")
        .text("description", "an exported robot")
        .text("consent", "true")
        .part(
            "reference",
            reqwest::multipart::Part::bytes(png(64, 64, None)).file_name("r.png"),
        );
    let (st, c) = s.post_form(&key, "/v1/characters", form).await;
    assert_eq!(st, 201, "{c}");
    let r = s
        .generate(&other, tiny_request(json!({"prompt": "a bystander's secret"})))
        .await;
    assert_eq!(r.status(), 200);

    // The export holds key records, the audit log and LoRA weights: it is the account holder's,
    // not any reading key's.
    let reader = s.key("exporter", &["assets:read"], None).await;
    let defaults = s
        .key(
            "exporter",
            &[
                "images:generate",
                "images:edit",
                "assets:read",
                "assets:write",
                "characters",
            ],
            None,
        )
        .await;
    for k in [&reader, &defaults] {
        let r = s
            .http
            .get(s.url("/v1/me/export"))
            .bearer_auth(k)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let e: Value = r.json().await.unwrap();
        assert!(e["error"]["message"].as_str().unwrap().contains("account"), "{e}");
    }
    let owner = s.key("exporter", &["assets:read", "account"], None).await;
    let r = s
        .http
        .get(s.url("/v1/me/export"))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/zip");
    let bytes = r.bytes().await.unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let mut read = |name: &str| -> Vec<u8> {
        let mut f = zip
            .by_name(name)
            .unwrap_or_else(|_| panic!("{name} in the export"));
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut out).unwrap();
        out
    };
    let manifest: Value = serde_json::from_slice(&read("manifest.json")).unwrap();
    assert_eq!(manifest["tenant_id"], tenant.as_str());
    // One generated image, one upload, one reference image.
    assert_eq!(manifest["counts"]["assets"], 3, "{manifest}");
    assert_eq!(manifest["counts"]["characters"], 1, "{manifest}");
    let jobs = String::from_utf8(read("jobs.json")).unwrap();
    assert!(jobs.contains("an exported fox"), "the prompts are in the export");
    let characters = String::from_utf8(read("characters.json")).unwrap();
    assert!(characters.contains("an exported robot"));
    let upload = read(&format!("assets/{}.png", up["id"].as_str().unwrap()));
    assert_eq!(image::load_from_memory(&upload).unwrap().width(), 40);
    let keys = String::from_utf8(read("keys.json")).unwrap();
    assert!(!keys.contains(&key), "no key secret in the export");
    let everything: String = (0..zip.len())
        .map(|i| {
            let mut f = zip.by_index(i).unwrap();
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut out).unwrap();
            String::from_utf8_lossy(&out).into_owned()
        })
        .collect();
    assert!(
        !everything.contains("bystander"),
        "another tenant's data in the export"
    );

    // Retention is set by an admin, within bounds.
    let put = |body: Value| {
        s.http
            .put(s.url(&format!("/v1/admin/tenants/{tenant}/retention")))
            .bearer_auth(&s.admin_key)
            .json(&body)
    };
    let r = put(json!({"days": 0})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let t: Value = put(json!({"days": 30}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(t["retention_days"], 30, "{t}");
    let t: Value = put(json!({"days": null}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(t["retention_days"], Value::Null, "{t}");
}
