//! The OpenAPI document is a contract, and every test checks it. A [`Contract`] is a proxy in
//! front of the test's server (the tests' `base` URL is the proxy's): each answer is checked
//! against `/openapi.json` as the server serves it — a success's status must be one the route
//! documents, in a documented media type, and its JSON must match the route's schema; an error
//! must be the `Error` shape — and anything else fails the test that got it, at the end of the
//! test, with every violation listed. Server-sent events and bytes pass through unread.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::sync::{Arc, Mutex};

pub struct Contract {
    pub addr: std::net::SocketAddr,
    proxy: Arc<Proxy>,
    task: tokio::task::JoinHandle<()>,
}

struct Proxy {
    doc: Value,
    upstream: Mutex<String>,
    http: reqwest::Client,
    violations: Mutex<Vec<String>>,
}

impl Contract {
    /// A proxy on 127.0.0.1:0 in front of `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> Contract {
        let proxy = Arc::new(Proxy {
            doc: nanoimg_server::openapi::document(),
            upstream: Mutex::new(upstream.to_owned()),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .unwrap(),
            violations: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(forward).with_state(proxy.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Contract { addr, proxy, task }
    }

    /// Sends what follows to a new upstream (a restarted server).
    pub fn point_at(&self, upstream: &str) {
        *self.proxy.upstream.lock().unwrap() = upstream.to_owned();
    }

    /// What the server answered that the document does not describe, so far.
    pub fn violations(&self) -> Vec<String> {
        self.proxy.violations.lock().unwrap().clone()
    }
}

impl Drop for Contract {
    fn drop(&mut self) {
        self.task.abort();
        let v = self.violations();
        if !v.is_empty() && !std::thread::panicking() {
            panic!(
                "the server answered outside its OpenAPI document:\n{}",
                v.join("\n")
            );
        }
    }
}

/// Headers that belong to one connection, not to the message.
const HOP: [header::HeaderName; 4] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::CONTENT_LENGTH,
    header::UPGRADE,
];

async fn forward(State(p): State<Arc<Proxy>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{target}", p.upstream.lock().unwrap());
    let mut headers = parts.headers.clone();
    HOP.iter().for_each(|h| {
        headers.remove(h);
    });
    let sent = p
        .http
        .request(parts.method.clone(), url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        // A server that is gone (a test stopped it) reads as one that is not there.
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("the proxy's upstream: {e}")).into_response(),
    };
    let status = resp.status();
    let mut headers: HeaderMap = resp.headers().clone();
    HOP.iter().for_each(|h| {
        headers.remove(h);
    });
    let media = essence(&headers);
    let mut out = if media == "text/event-stream" {
        // Streamed as it comes; events are not checked.
        let mut r = Response::new(Body::from_stream(resp.bytes_stream()));
        *r.status_mut() = status;
        if let Some(problem) = check_status(
            &p.doc,
            parts.method.as_str(),
            parts.uri.path(),
            status.as_u16(),
            &media,
        ) {
            p.violate(&parts, status, problem);
        }
        r
    } else {
        let bytes = resp.bytes().await.unwrap_or_default();
        let problems = check(
            &p.doc,
            parts.method.as_str(),
            parts.uri.path(),
            status.as_u16(),
            &media,
            &bytes,
        );
        for problem in problems {
            p.violate(&parts, status, problem);
        }
        let mut r = Response::new(Body::from(bytes));
        *r.status_mut() = status;
        r
    };
    *out.headers_mut() = headers;
    out
}

impl Proxy {
    fn violate(&self, req: &axum::http::request::Parts, status: StatusCode, problem: String) {
        let line = format!(
            "{} {} → {}: {problem}",
            req.method,
            req.uri.path(),
            status.as_u16()
        );
        eprintln!("contract: {line}");
        self.violations.lock().unwrap().push(line);
    }
}

/// The media type without its parameters, lower case; empty when there is none.
fn essence(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// The document's operation for a request, by its path template.
fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> Option<&'a Value> {
    let segments: Vec<&str> = path.split('/').collect();
    let paths = doc["paths"].as_object()?;
    paths
        .iter()
        .filter(|(template, _)| {
            let t: Vec<&str> = template.split('/').collect();
            t.len() == segments.len()
                && t.iter()
                    .zip(&segments)
                    .all(|(t, s)| (t.starts_with('{') && t.ends_with('}') && !s.is_empty()) || t == s)
        })
        // The most literal template wins.
        .max_by_key(|(template, _)| template.split('/').filter(|t| !t.starts_with('{')).count())
        .and_then(|(_, item)| item.get(method.to_ascii_lowercase()))
}

/// For a success: its status must be documented, in a documented media type.
fn check_status(doc: &Value, method: &str, path: &str, status: u16, media: &str) -> Option<String> {
    if !(200..300).contains(&status) {
        return None;
    }
    let Some(op) = operation(doc, method, path) else {
        return Some("a success on a route the document does not list".into());
    };
    let Some(documented) = op["responses"].get(status.to_string()) else {
        let listed: Vec<&String> = op["responses"]
            .as_object()
            .map(|r| r.keys().filter(|k| k.starts_with('2')).collect())
            .unwrap_or_default();
        return Some(format!(
            "status {status} is not documented (the route documents {listed:?})"
        ));
    };
    let content = documented.get("content").and_then(Value::as_object);
    match content {
        None if media.is_empty() => None,
        None => Some(format!("documented without a body, answered {media}")),
        Some(c) if c.keys().any(|k| media_matches(k, media)) => None,
        Some(c) => Some(format!(
            "answered {media:?}, documented {:?}",
            c.keys().collect::<Vec<_>>()
        )),
    }
}

/// Whether `media` is the documented `range` (`image/*` ranges too).
fn media_matches(range: &str, media: &str) -> bool {
    match range.strip_suffix("/*") {
        Some(kind) => media.split('/').next() == Some(kind),
        None => range == media,
    }
}

/// Every way an answer breaks the document.
fn check(doc: &Value, method: &str, path: &str, status: u16, media: &str, body: &[u8]) -> Vec<String> {
    // A status the route documents with its own JSON (a success, or readiness's 503) has its
    // schema; any other error is the Error shape.
    let own = operation(doc, method, path)
        .map(|op| &op["responses"][status.to_string()]["content"]["application/json"]["schema"])
        .filter(|s| !s.is_null());
    let schema = if (200..300).contains(&status) {
        if let Some(problem) = check_status(doc, method, path, status, media) {
            return vec![problem];
        }
        match own {
            Some(schema) if media == "application/json" => schema.clone(),
            _ => return Vec::new(),
        }
    } else if status >= 400 {
        if media != "application/json" {
            return vec![format!("an error as {media:?}, not the JSON Error shape")];
        }
        own.cloned()
            .unwrap_or_else(|| serde_json::json!({"$ref": "#/components/schemas/Error"}))
    } else {
        return Vec::new();
    };
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return vec![format!("the body is not JSON: {e}")],
    };
    let mut problems = Vec::new();
    validate(doc, &schema, &value, "$", &mut problems);
    problems
}

/// Checks `v` against `schema` (JSON Schema 2020-12, the keywords the document uses; any other
/// keyword is reported, so a schema never passes for want of a check), adding each problem.
pub fn validate(doc: &Value, schema: &Value, v: &Value, at: &str, out: &mut Vec<String>) {
    let Some(s) = schema.as_object() else {
        if schema != &Value::Bool(true) {
            out.push(format!("{at}: a schema that is not an object: {schema}"));
        }
        return;
    };
    for (keyword, arg) in s {
        match keyword.as_str() {
            "$ref" => {
                let target = arg
                    .as_str()
                    .and_then(|r| r.strip_prefix("#/"))
                    .map(|r| r.split('/').fold(doc, |node, part| &node[part]));
                match target {
                    Some(t) if !t.is_null() => validate(doc, t, v, at, out),
                    _ => out.push(format!("{at}: unresolved $ref {arg}")),
                }
            }
            "type" => {
                let types: Vec<&str> = match arg {
                    Value::String(t) => vec![t.as_str()],
                    Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                    _ => vec![],
                };
                if !types.iter().any(|t| is_type(v, t)) {
                    out.push(format!("{at}: {} is not {}", short(v), types.join(" or ")));
                }
            }
            "enum" => {
                if !arg.as_array().is_some_and(|a| a.contains(v)) {
                    out.push(format!("{at}: {} is not one of {arg}", short(v)));
                }
            }
            "const" => {
                if arg != v {
                    out.push(format!("{at}: {} is not {arg}", short(v)));
                }
            }
            "properties" => {
                if let (Some(props), Some(o)) = (arg.as_object(), v.as_object()) {
                    for (name, sub) in props {
                        if let Some(field) = o.get(name) {
                            validate(doc, sub, field, &format!("{at}.{name}"), out);
                        }
                    }
                }
            }
            "required" => {
                if let (Some(req), Some(o)) = (arg.as_array(), v.as_object()) {
                    for name in req.iter().filter_map(Value::as_str) {
                        if !o.contains_key(name) {
                            out.push(format!("{at}: the required field {name:?} is missing"));
                        }
                    }
                }
            }
            "additionalProperties" => {
                if let Some(o) = v.as_object() {
                    let known = s.get("properties").and_then(Value::as_object);
                    for (name, field) in o {
                        if known.is_some_and(|k| k.contains_key(name)) {
                            continue;
                        }
                        match arg {
                            Value::Bool(false) => {
                                out.push(format!("{at}: the field {name:?} is not documented"))
                            }
                            sub => validate(doc, sub, field, &format!("{at}.{name}"), out),
                        }
                    }
                }
            }
            "items" => {
                if let Some(a) = v.as_array() {
                    for (i, item) in a.iter().enumerate() {
                        validate(doc, arg, item, &format!("{at}[{i}]"), out);
                    }
                }
            }
            "minItems" | "maxItems" => {
                if let (Some(a), Some(n)) = (v.as_array(), arg.as_u64()) {
                    let len = a.len() as u64;
                    if (keyword == "minItems" && len < n) || (keyword == "maxItems" && len > n) {
                        out.push(format!("{at}: {len} items breaks {keyword} {n}"));
                    }
                }
            }
            "minLength" | "maxLength" => {
                if let (Some(t), Some(n)) = (v.as_str(), arg.as_u64()) {
                    let len = t.chars().count() as u64;
                    if (keyword == "minLength" && len < n) || (keyword == "maxLength" && len > n) {
                        out.push(format!("{at}: length {len} breaks {keyword} {n}"));
                    }
                }
            }
            "minimum" | "maximum" => {
                if let (Some(x), Some(bound)) = (v.as_f64(), arg.as_f64()) {
                    if (keyword == "minimum" && x < bound) || (keyword == "maximum" && x > bound) {
                        out.push(format!("{at}: {x} breaks {keyword} {bound}"));
                    }
                }
            }
            "oneOf" | "anyOf" => {
                let branches = arg.as_array().map_or(&[][..], Vec::as_slice);
                let mut failures = Vec::new();
                let mut passed = 0;
                for (i, b) in branches.iter().enumerate() {
                    let mut p = Vec::new();
                    validate(doc, b, v, at, &mut p);
                    if p.is_empty() {
                        passed += 1;
                    } else {
                        failures.push(format!("[{i}] {}", p.join("; ")));
                    }
                }
                if passed == 0 {
                    out.push(format!(
                        "{at}: matches none of {keyword}: {}",
                        failures.join(" | ")
                    ));
                } else if keyword == "oneOf" && passed > 1 {
                    out.push(format!("{at}: matches {passed} branches of oneOf"));
                }
            }
            // Annotations.
            "description" | "title" | "default" | "format" | "examples" => {}
            other => out.push(format!(
                "{at}: the schema uses {other:?}, which this check does not know"
            )),
        }
    }
}

fn is_type(v: &Value, ty: &str) -> bool {
    match ty {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => false,
    }
}

/// A value cut short for a message.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}

#[test]
fn the_check_catches_what_it_is_for() {
    // The proxy's own check, on answers the server must never give: a test that cannot fail
    // would let every answer through.
    let doc = nanoimg_server::openapi::document();
    let job = serde_json::json!({
        "id": "job_1", "object": "job", "kind": "generation", "status": "queued", "params": {},
        "result": null, "error": null, "created_at": 1, "started_at": null, "finished_at": null,
    });
    let body = |v: &Value| serde_json::to_vec(v).unwrap();
    let ok = |status, v: &Value| {
        check(
            &doc,
            "GET",
            "/v1/jobs/job_1",
            status,
            "application/json",
            &body(v),
        )
    };
    assert_eq!(ok(200, &job), Vec::<String>::new());
    // A field the document does not list, one it requires gone, a wrong type, a value outside
    // the enum, an undocumented status.
    let mut extra = job.clone();
    extra["secret"] = "x".into();
    assert!(ok(200, &extra)[0].contains("\"secret\" is not documented"));
    let mut missing = job.clone();
    missing.as_object_mut().unwrap().remove("status");
    assert!(ok(200, &missing)[0].contains("\"status\" is missing"));
    let mut wrong = job.clone();
    wrong["created_at"] = "yesterday".into();
    assert!(ok(200, &wrong)[0].contains("is not integer"));
    let mut status = job.clone();
    status["status"] = "paused".into();
    assert!(ok(200, &status)[0].contains("is not one of"));
    assert!(ok(201, &job)[0].contains("status 201 is not documented"));
    // Errors must be the Error shape, as JSON.
    let error = serde_json::json!({"error": {"message": "m", "type": "t", "param": null, "code": "c"}});
    assert!(ok(404, &error).is_empty());
    assert!(!ok(404, &serde_json::json!({"detail": "nope"})).is_empty());
    assert!(!check(&doc, "GET", "/v1/jobs/job_1", 405, "", b"").is_empty());
    // Media types: a documented range matches, anything else does not.
    let image = check(&doc, "GET", "/v1/assets/a/content", 200, "image/png", b"\x89PNG");
    assert!(image.is_empty(), "{image:?}");
    let text = check(&doc, "GET", "/v1/assets/a/content", 200, "text/plain", b"x");
    assert!(!text.is_empty());
    // An unknown keyword is reported, not passed.
    let mut p = Vec::new();
    validate(
        &doc,
        &serde_json::json!({"pattern": "^a$"}),
        &"b".into(),
        "$",
        &mut p,
    );
    assert_eq!(p.len(), 1);
}
