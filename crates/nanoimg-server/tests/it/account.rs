//! `/v1/me/*`: a tenant's usage, its own keys (never more than the caller's scopes, never
//! outliving the caller's key, within the tenant's key quota, all on the tenant's one budget)
//! and the erasure of its own data, on a real server.

use crate::common::*;
use serde_json::{json, Value};

async fn send(
    s: &TestServer,
    method: reqwest::Method,
    key: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = s.http.request(method, s.url(path)).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_counts_what_the_tenant_did_against_its_limits() {
    // Slow refills (a request token every 10 s), so that a busy machine cannot hide a spend.
    let s = start(|c| {
        c.rate.images_per_minute = 10;
        c.rate.requests_per_minute = 6;
    })
    .await;
    let (_, key) = s.tenant("counted", ALL_SCOPES).await;
    let before = s.get_json(&key, "/v1/me/usage").await;
    assert_eq!(before["stored"]["images"], 0, "{before}");
    assert_eq!(before["images_per_minute"], json!({"limit": 10, "remaining": 10}));
    assert_eq!(before["concurrent_jobs"]["active"], 0);

    let r = s.generate(&key, tiny_request(json!({"n": 2}))).await;
    assert_eq!(r.status(), 200);
    let after = s.get_json(&key, "/v1/me/usage").await;
    assert_eq!(after["stored"]["images"], 2, "{after}");
    assert!(after["stored"]["image_bytes"].as_i64().unwrap() > 100, "{after}");
    assert_eq!(after["stored"]["jobs"], 1);
    assert_eq!(
        after["images_per_minute"]["remaining"], 8,
        "two images were charged"
    );
    // Reading the budget takes nothing from it; each request costs one request token.
    let again = s.get_json(&key, "/v1/me/usage").await;
    assert_eq!(again["images_per_minute"]["remaining"], 8);
    let (a, b) = (
        after["requests_per_minute"]["remaining"].as_i64().unwrap(),
        again["requests_per_minute"]["remaining"].as_i64().unwrap(),
    );
    assert_eq!(b, a - 1, "{a} then {b}");
    // Another tenant counts its own.
    let (_, other) = s.tenant("other", ALL_SCOPES).await;
    assert_eq!(s.get_json(&other, "/v1/me/usage").await["stored"]["images"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_manages_its_own_keys_without_escalating() {
    let s = start(|_| {}).await;
    let (_, owner) = s
        .tenant("self-service", &["images:generate", "assets:read", "account"])
        .await;
    let (_, app) = s.tenant("plain", ALL_SCOPES).await;
    use reqwest::Method;

    // Without the account scope: 403, naming it.
    let (st, body) = send(&s, Method::GET, &app, "/v1/me/keys", None).await;
    assert_eq!(st, 403, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("account"));

    // Defaults: the caller's own non-account scopes.
    let (st, k) = send(
        &s,
        Method::POST,
        &owner,
        "/v1/me/keys",
        Some(json!({"name": "ci"})),
    )
    .await;
    assert_eq!(st, 201, "{k}");
    assert_eq!(k["scopes"], json!(["images:generate", "assets:read"]), "{k}");
    let secret = k["key"].as_str().unwrap().to_owned();
    assert_eq!(
        s.get_json(&secret, "/v1/me").await["tenant"]["name"],
        "self-service"
    );

    // Scopes the caller lacks, admin included, are refused and nothing is made.
    for (scopes, named) in [
        (json!(["images:edit"]), "images:edit"),
        (json!(["admin", "assets:read"]), "admin"),
    ] {
        let (st, body) = send(
            &s,
            Method::POST,
            &owner,
            "/v1/me/keys",
            Some(json!({"name": "x", "scopes": scopes})),
        )
        .await;
        assert_eq!(
            (st, body["error"]["param"].as_str()),
            (400, Some("scopes")),
            "{body}"
        );
        assert!(
            body["error"]["message"].as_str().unwrap().contains(named),
            "{body}"
        );
    }
    let (st, body) = send(
        &s,
        Method::POST,
        &owner,
        "/v1/me/keys",
        Some(json!({"name": "x", "scopes": ["nope"]})),
    )
    .await;
    assert_eq!(st, 400, "{body}");

    // The list: the owner's key and the new one, no secrets.
    let (st, list) = send(&s, Method::GET, &owner, "/v1/me/keys", None).await;
    assert_eq!(st, 200);
    assert_eq!(list["data"].as_array().unwrap().len(), 2, "{list}");
    let text = list.to_string();
    assert!(
        !text.contains(&secret) && !text.contains(&owner),
        "a secret in the list"
    );

    // Another tenant's key is not found, exactly like a missing one.
    let (_, plain_keys) = send(
        &s,
        Method::GET,
        &s.admin_key,
        "/v1/admin/tenants/plain/keys",
        None,
    )
    .await;
    let plain_id = plain_keys["data"][0]["id"].as_str().unwrap();
    let (st, theirs) = send(
        &s,
        Method::DELETE,
        &owner,
        &format!("/v1/me/keys/{plain_id}"),
        None,
    )
    .await;
    let (st2, missing) = send(
        &s,
        Method::DELETE,
        &owner,
        "/v1/me/keys/key_00000000000000000000000000",
        None,
    )
    .await;
    assert_eq!((st, st2), (404, 404));
    assert_eq!(theirs["error"]["message"], missing["error"]["message"]);
    assert_eq!(
        s.get_json(&app, "/v1/me").await["tenant"]["name"],
        "plain",
        "still works"
    );

    // Revoked: the key stops working at once.
    let (st, rec) = send(
        &s,
        Method::DELETE,
        &owner,
        &format!("/v1/me/keys/{}", k["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(st, 200, "{rec}");
    assert!(rec["revoked_at"].is_i64(), "{rec}");
    let (st, _) = send(&s, Method::GET, &secret, "/v1/me", None).await;
    assert_eq!(st, 401);
    assert!(audit_of(&s, "key.revoke", 1)
        .await
        .iter()
        .any(|e| e["target"] == k["id"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_keys_neither_outlive_their_maker_nor_escape_the_tenants_budgets() {
    let s = start(|c| {
        c.rate.images_per_minute = 3;
        c.rate.keys_per_tenant = 4;
    })
    .await;
    use reqwest::Method;
    s.tenant("minter", &["images:generate", "account"]).await;
    // A key that expires in a minute.
    let short = s.key("minter", &["images:generate", "account"], Some(60)).await;
    let mint = |body: Value| send(&s, Method::POST, &short, "/v1/me/keys", Some(body));
    // A longer life is refused, naming what is left; none inherits the maker's expiry.
    let (st, e) = mint(json!({"name": "forever", "expires_in": 100u64 * 365 * 86400})).await;
    assert_eq!(
        (st, e["error"]["param"].as_str()),
        (400, Some("expires_in")),
        "{e}"
    );
    assert!(e["error"]["message"].as_str().unwrap().contains("outlive"), "{e}");
    let (st, k) = mint(json!({"name": "inherits"})).await;
    assert_eq!(st, 201, "{k}");
    let (maker_expiry, own) = (
        s.get_json(&short, "/v1/me").await["key"]["expires_at"].as_i64(),
        k["expires_at"].as_i64(),
    );
    assert!(
        own.is_some() && own == maker_expiry,
        "{own:?} vs {maker_expiry:?}"
    );
    let (st, k2) = mint(json!({"name": "shorter", "expires_in": 30})).await;
    assert_eq!(st, 201, "{k2}");

    // Every key of the tenant draws on one image budget: three images, whichever key asks.
    let keys = [
        short.clone(),
        k["key"].as_str().unwrap().to_owned(),
        k2["key"].as_str().unwrap().to_owned(),
    ];
    for key in &keys {
        let r = s.generate(key, tiny_request(json!({}))).await;
        assert_eq!(r.status(), 200);
    }
    for key in &keys {
        let r = s.generate(key, tiny_request(json!({}))).await;
        assert_eq!(r.status(), 429, "a new key made a new budget");
    }

    // The key quota: the maker's key, the first key and two minted ones make four.
    let (st, e) = mint(json!({"name": "one too many", "expires_in": 10})).await;
    assert_eq!(st, 409, "{e}");
    assert_eq!(e["error"]["code"], "key_quota_exceeded", "{e}");
    // Revoking one makes room.
    let id = k2["id"].as_str().unwrap();
    let (st, _) = send(&s, Method::DELETE, &short, &format!("/v1/me/keys/{id}"), None).await;
    assert_eq!(st, 200);
    let (st, e) = mint(json!({"name": "now fits", "expires_in": 10})).await;
    assert_eq!(st, 201, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_erases_itself_only_when_it_confirms() {
    let s = start(|_| {}).await;
    let (_, owner) = s
        .tenant("leaving", &["images:generate", "assets:read", "account"])
        .await;
    let r = s.generate(&owner, tiny_request(json!({}))).await;
    assert_eq!(r.status(), 200);
    use reqwest::Method;

    for body in [
        json!({"confirm": "Leaving"}),
        json!({}),
        json!({"confirm": "leaving", "x": 1}),
    ] {
        let (st, e) = send(&s, Method::DELETE, &owner, "/v1/me", Some(body)).await;
        assert_eq!(st, 400, "{e}");
    }
    assert_eq!(
        s.get_json(&owner, "/v1/me/usage").await["stored"]["images"],
        1,
        "nothing erased"
    );

    let (st, e) = send(
        &s,
        Method::DELETE,
        &owner,
        "/v1/me",
        Some(json!({"confirm": "leaving"})),
    )
    .await;
    assert_eq!(st, 200, "{e}");
    assert_eq!(e["erased"], true);
    assert_eq!(e["removed"]["blobs"], 1, "{e}");
    let (st, _) = send(&s, Method::GET, &owner, "/v1/me", None).await;
    assert_eq!(st, 401, "the erased tenant's key is gone");
    let (st, _) = send(&s, Method::GET, &s.admin_key, "/v1/admin/tenants/leaving", None).await;
    assert_eq!(st, 404);
    assert_eq!(audit_of(&s, "tenant.erase", 1).await.len(), 1);

    // The operator's tenant cannot erase itself (its first key has the account scope).
    let (st, e) = send(
        &s,
        Method::DELETE,
        &s.admin_key,
        "/v1/me",
        Some(json!({"confirm": "admin"})),
    )
    .await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (409, Some("tenant_protected")),
        "{e}"
    );
}
