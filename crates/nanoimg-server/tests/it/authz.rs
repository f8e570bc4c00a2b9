//! The authorisation matrix: every route that needs a key × {no key, malformed key, revoked key,
//! expired key, a key without the route's scope, another tenant's key}. Object routes must answer
//! 404 to another tenant, exactly as for an id that does not exist.

use crate::common::*;
use nanoimg_server::openapi::ROUTES;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Clone)]
struct Objects {
    asset: String,
    job: String,
    key: String,
    tenant: String,
    session: String,
    /// The session's root version.
    version: String,
    character: String,
    /// Tenant A's name, which `DELETE /v1/me` must be sent to confirm.
    tenant_name: String,
}

async fn request(
    s: &TestServer,
    method: &str,
    path: &str,
    body: &str,
    key: Option<&str>,
    o: &Objects,
) -> (u16, Value) {
    let mut req = s
        .http
        .request(method.to_uppercase().parse::<Method>().unwrap(), s.url(path));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req = match (path, body) {
        ("/v1/images/edits" | "/v1/images/variations", _) => {
            let mut form = reqwest::multipart::Form::new().text("steps", "2").part(
                "image",
                reqwest::multipart::Part::bytes(png(64, 64, None)).file_name("a.png"),
            );
            if path.ends_with("edits") {
                form = form.text("prompt", "a dog");
            }
            req.multipart(form)
        }
        ("/v1/provenance/verify", _) => req.multipart(reqwest::multipart::Form::new().part(
            "image",
            reqwest::multipart::Part::bytes(png(8, 8, None)).file_name("a.png"),
        )),
        ("/v1/characters", "multipart") => req.multipart(
            reqwest::multipart::Form::new()
                .text("name", nanoimg_store::ids::new_id("c"))
                .text("consent", "true")
                .part(
                    "reference",
                    reqwest::multipart::Part::bytes(png(8, 8, None)).file_name("a.png"),
                ),
        ),
        ("/v1/assets", "multipart") => req.multipart(reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(png(8, 8, None)).file_name("a.png"),
        )),
        ("/sdapi/v1/txt2img", _) => {
            req.json(&json!({"prompt": "a cat", "width": 64, "height": 64, "steps": 2}))
        }
        ("/sdapi/v1/img2img", _) => {
            use base64::Engine as _;
            let image = base64::engine::general_purpose::STANDARD.encode(png(64, 64, None));
            req.json(
                &json!({"prompt": "a dog", "init_images": [image], "width": 64, "height": 64, "steps": 2}),
            )
        }
        ("/sdapi/v1/options", "json") => req.json(&json!({"sd_model_checkpoint": "tiny"})),
        ("/v1/me", "json") => req.json(&json!({"confirm": o.tenant_name})),
        ("/v1/edit-sessions", "json") => req.json(&json!({"image_id": o.asset})),
        (p, "json") if p.ends_with("/instructions") => req.json(&json!({"instruction": "make it brighter"})),
        (p, "json") if p.ends_with("/checkout") => req.json(&json!({"version": o.version})),
        ("/v1/admin/tenants", "json") => req.json(&json!({"name": nanoimg_store::ids::new_id("t")})),
        (p, "json") if p.ends_with("/keys") => req.json(&json!({"name": "k"})),
        (p, "json") if p.ends_with("/limits") => req.json(&json!({"images_per_minute": 1000})),
        (p, "json") if p.ends_with("/moderation") => req.json(&json!({"allow_low": false})),
        (p, "json") if p.ends_with("/retention") => req.json(&json!({"days": 30})),
        (_, "json") => req.json(&tiny_request(json!({}))),
        _ => req,
    };
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(json!(null));
    (status, body)
}

fn fill(path: &str, o: &Objects) -> String {
    let id = if path.starts_with("/v1/jobs/") {
        &o.job
    } else if path.starts_with("/v1/assets/") {
        &o.asset
    } else if path.starts_with("/v1/admin/keys/") || path.starts_with("/v1/me/keys/") {
        &o.key
    } else if path.starts_with("/v1/admin/tenants/") {
        &o.tenant
    } else if path.starts_with("/v1/edit-sessions/") {
        &o.session
    } else if path.starts_with("/v1/characters/") {
        &o.character
    } else {
        return path.to_owned();
    };
    path.replace("{id}", id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_every_wrong_caller() {
    let s = start(|c| c.rate.images_per_minute = 1000).await;
    let owner_scopes = [ALL_SCOPES, &["account"]].concat();
    let (tenant_a, owner) = s.tenant("a", &owner_scopes).await;
    let (_, other) = s.tenant("b", &owner_scopes).await;
    // Keys made in the same second list in no particular order: take the id from the answer.
    let (revoked_id, revoked) = s.key_with_id(&tenant_a, ALL_SCOPES, None).await;
    let expired = s.key(&tenant_a, ALL_SCOPES, Some(1)).await;
    assert_eq!(s.revoke(&revoked_id).await, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // Tenant A's objects.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(png(8, 8, None)).file_name("a.png"),
    );
    let asset = json_of(
        s.http
            .post(s.url("/v1/assets"))
            .bearer_auth(&owner)
            .multipart(form),
    )
    .await;
    let job = json_of(
        s.http
            .post(s.url("/v1/jobs"))
            .bearer_auth(&owner)
            .json(&tiny_request(json!({}))),
    )
    .await;
    let session = json_of(
        s.http
            .post(s.url("/v1/edit-sessions"))
            .bearer_auth(&owner)
            .json(&json!({"image_id": asset["id"]})),
    )
    .await;
    let character = json_of(
        s.http
            .post(s.url("/v1/characters"))
            .bearer_auth(&owner)
            .multipart(
                reqwest::multipart::Form::new()
                    .text("name", "Robo")
                    .text("consent", "true")
                    .part(
                        "reference",
                        reqwest::multipart::Part::bytes(png(8, 8, None)).file_name("a.png"),
                    ),
            ),
    )
    .await;
    // A spare key: the newest, so the key routes (revoke, rotate) act on it last.
    let (spare_id, _) = s.key_with_id(&tenant_a, &["assets:read"], None).await;
    let objects = Objects {
        asset: asset["id"].as_str().unwrap().to_owned(),
        job: job["id"].as_str().unwrap().to_owned(),
        key: spare_id,
        tenant: tenant_a.clone(),
        session: session["id"].as_str().unwrap().to_owned(),
        version: session["head"].as_str().unwrap().to_owned(),
        character: character["id"].as_str().unwrap().to_owned(),
        tenant_name: "a".into(),
    };
    let malformed = "nimg_thisisnotarealkeyatallnotatall0_000000";

    let mut checked = 0;
    for r in ROUTES.iter().filter(|r| r.scope().is_some()) {
        let path = fill(r.path, &objects);
        let scope = r.scope().unwrap();
        let who = format!("{} {}", r.method, r.path);
        for (label, key) in [
            ("no key", None),
            ("malformed", Some(malformed)),
            ("revoked", Some(revoked.as_str())),
            ("expired", Some(expired.as_str())),
        ] {
            let (st, body) = request(&s, r.method, &path, r.body, key, &objects).await;
            assert_eq!(st, 401, "{who} with {label}: {body}");
            assert_eq!(body["error"]["type"], "authentication_error", "{who}");
        }
        // A key of the same tenant lacking the scope (any-key routes have no scope to lack).
        if scope != "key" {
            let others: Vec<&str> = [
                "images:generate",
                "images:edit",
                "assets:read",
                "assets:write",
                "characters",
                "account",
            ]
            .into_iter()
            .filter(|x| *x != scope)
            .collect();
            let k = if scope == "admin" {
                owner.clone()
            } else {
                s.key(&tenant_a, &others, None).await
            };
            let (st, body) = request(&s, r.method, &path, r.body, Some(&k), &objects).await;
            assert_eq!(st, 403, "{who} without {scope}: {body}");
            assert_eq!(body["error"]["code"], "insufficient_scope");
        }
        // Another tenant: objects are not found; admin routes are forbidden.
        if r.path.contains("{id}") || scope == "admin" {
            let (st, body) = request(&s, r.method, &path, r.body, Some(&other), &objects).await;
            let want = if scope == "admin" { 403 } else { 404 };
            assert_eq!(st, want, "{who} as another tenant: {body}");
            if want == 404 {
                // Indistinguishable from an id that does not exist.
                let missing = path
                    .replace(&objects.asset, "img_00000000000000000000000000")
                    .replace(&objects.job, "job_00000000000000000000000000")
                    .replace(&objects.session, "ses_00000000000000000000000000")
                    .replace(&objects.character, "chr_00000000000000000000000000")
                    .replace(&objects.key, "key_00000000000000000000000000");
                let (st2, body2) = request(&s, r.method, &missing, r.body, Some(&owner), &objects).await;
                assert_eq!(
                    (st2, &body2["error"]["message"]),
                    (404, &body["error"]["message"]),
                    "{who}"
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 20, "{checked} routes checked");

    // And the owner can use every one of them (run last, deletions at the very end).
    let mut owned: Vec<_> = ROUTES.iter().filter(|r| r.scope().is_some()).collect();
    // Erasing the tenant comes last of all: it takes every other object with it.
    owned.sort_by_key(|r| (r.method == "delete", r.path == "/v1/admin/tenants/{id}"));
    for r in owned {
        let path = fill(r.path, &objects);
        // Erasing one's own account is tried on a tenant of its own: A is erased by the admin.
        let (key, objects) = if (r.method, r.path) == ("delete", "/v1/me") {
            let (_, k) = s.tenant("erasable", &["account"]).await;
            let mut o = objects.clone();
            o.tenant_name = "erasable".into();
            (k, o)
        } else if r.scope() == Some("admin") {
            (s.admin_key.clone(), objects.clone())
        } else {
            (owner.clone(), objects.clone())
        };
        let (st, body) = request(&s, r.method, &path, r.body, Some(&key), &objects).await;
        assert!(
            (200..300).contains(&st) || st == 409,
            "{} {path} as owner: {st} {body}",
            r.method
        );
    }
    // Rejections were audited without key material.
    let audit = s.get_json(&s.admin_key, "/v1/admin/audit?limit=1000").await;
    let text = audit.to_string();
    assert!(
        text.contains("insufficient_scope") && text.contains("key.revoke"),
        "{text}"
    );
    for k in [&owner, &other, &revoked, &expired, &s.admin_key] {
        assert!(!text.contains(k.as_str()), "a key leaked into the audit log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentication_is_audited_without_the_key_and_without_flooding() {
    let s = start(|_| {}).await;
    let (_, tenant_key) = s.tenant("acme", ALL_SCOPES).await;
    let (revoked_id, revoked) = s.key_with_id("acme", ALL_SCOPES, None).await;
    assert_eq!(s.revoke(&revoked_id).await, 200);
    // The tenant's key with its last character changed (to one it is not: a key ending in `x`
    // would otherwise stay itself, one run in 62).
    let last = if tenant_key.ends_with('x') { 'y' } else { 'x' };
    let unknown = format!("{}{last}", &tenant_key[..tenant_key.len() - 1]);
    let me = |key: String| {
        let req = s.http.get(s.url("/v1/me")).bearer_auth(key);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(me("nimg_garbage".into()).await, 401);
    assert_eq!(me(revoked.clone()).await, 401);
    assert_eq!(me(unknown.clone()).await, 401);
    let events = audit_of(&s, "auth.failed", 3).await;
    let reasons: Vec<&str> = events
        .iter()
        .map(|e| e["detail"]["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.contains(&"malformed_key") && reasons.contains(&"revoked_key"),
        "{reasons:?}"
    );
    let text = serde_json::to_string(&events).unwrap();
    for secret in [&revoked, &unknown] {
        assert!(!text.contains(secret.as_str()), "a key in the audit log: {text}");
    }
    // A flood is counted, but audits sixty a minute at most.
    for _ in 0..100 {
        me("nimg_garbage".into()).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let all = audit_of(&s, "auth.failed", 60).await;
    // Sixty, and the one a second the bucket refills while the test runs.
    assert!((60..=70).contains(&all.len()), "{} of 103 audited", all.len());
}
