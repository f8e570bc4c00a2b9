//! The studio's files as served: from the binary, with a strict CSP and the usual security
//! headers, nothing inline and nothing from another origin. (The browser tests drive it in
//! Chromium: `tests/studio`.)

use crate::common::*;

#[tokio::test]
async fn the_studio_is_served_from_the_binary_with_a_strict_policy() {
    let s = start(|_| {}).await;
    let mut bodies = Vec::new();
    let mut files = vec![("/".to_owned(), "text/html")];
    for (name, ty, _) in nanoimg_server::STUDIO_FILES {
        files.push((format!("/studio/{name}"), ty.split(';').next().unwrap()));
    }
    for (path, ty) in &files {
        let path = path.as_str();
        let r = reqwest::get(s.url(path)).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers().clone();
        assert!(h["content-type"].to_str().unwrap().starts_with(*ty), "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        for rule in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(rule), "{path}: {csp}");
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
        bodies.push(r.text().await.unwrap());
    }
    let html = &bodies[0];
    // Every script is a file of ours; no inline script, style or handler; no other origin.
    assert_eq!(html.matches("<script").count(), 1);
    assert!(html.contains(r#"<script type="module" src="/studio/studio.js"></script>"#));
    assert!(!html.contains("<style") && !html.contains(" style=") && !html.contains(" onclick="));
    for b in &bodies {
        assert!(
            !b.contains("http://") && !b.contains("https://"),
            "no other origin"
        );
    }
    // The key is kept in session storage only, and sent as a header; no script evaluates
    // strings or writes HTML.
    let js = bodies[1..].join("\n");
    assert!(js.contains("sessionStorage") && !js.contains("localStorage"));
    assert!(js.contains("Authorization"));
    for banned in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "eval(",
        "new Function",
        "document.write",
    ] {
        assert!(!js.contains(banned), "{banned} in the studio's scripts");
    }
    // Every module the page imports is served, and nothing else answers under /studio/.
    for b in &bodies[1..] {
        for line in b.lines().filter(|l| l.contains(" from './")) {
            let name = line.split("from './").nth(1).unwrap().split('\'').next().unwrap();
            assert!(
                files.iter().any(|(p, _)| p == &format!("/studio/{name}")),
                "{name} is not served"
            );
        }
    }
    assert_eq!(
        reqwest::get(s.url("/studio/../Cargo.toml"))
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        reqwest::get(s.url("/studio/nope.js")).await.unwrap().status(),
        404
    );
}

#[tokio::test]
async fn a_worker_serves_no_studio() {
    let s = start(|c| c.role = nanoimg_server::config::Role::Worker).await;
    assert_eq!(reqwest::get(s.url("/")).await.unwrap().status(), 404);
    assert_eq!(reqwest::get(s.url("/healthz")).await.unwrap().status(), 200);
}
