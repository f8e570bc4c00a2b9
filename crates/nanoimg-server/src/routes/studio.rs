//! The studio: one page, its script modules and a style sheet, compiled into the binary (no CDN,
//! works offline). Served with a strict Content-Security-Policy: nothing inline, nothing from
//! another origin, images only from this server or the page's own blob:/data: URLs.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../../studio/index.html");

const JS: &str = "text/javascript; charset=utf-8";

/// Every file under `/studio/`: name, content type, contents.
pub const FILES: &[(&str, &str, &str)] = &[
    ("studio.js", JS, include_str!("../../studio/studio.js")),
    ("api.js", JS, include_str!("../../studio/api.js")),
    ("generate.js", JS, include_str!("../../studio/generate.js")),
    ("edit.js", JS, include_str!("../../studio/edit.js")),
    ("characters.js", JS, include_str!("../../studio/characters.js")),
    ("provenance.js", JS, include_str!("../../studio/provenance.js")),
    ("account.js", JS, include_str!("../../studio/account.js")),
    (
        "studio.css",
        "text/css; charset=utf-8",
        include_str!("../../studio/studio.css"),
    ),
];

/// The policy every studio file is served with.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' blob: data:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'";

fn file(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::HeaderName::from_static("permissions-policy"),
                "camera=(), microphone=(), geolocation=()",
            ),
            (
                header::HeaderName::from_static("cross-origin-opener-policy"),
                "same-origin",
            ),
        ],
        body,
    )
        .into_response()
}

/// `GET /`: the studio page.
pub(crate) async fn index() -> Response {
    file(INDEX, "text/html; charset=utf-8")
}

/// `GET /studio/{name}`: one of [`FILES`]; anything else is the API's 404.
pub(crate) async fn asset(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => file(body, content_type),
        None => super::system::not_found().await.into_response(),
    }
}
