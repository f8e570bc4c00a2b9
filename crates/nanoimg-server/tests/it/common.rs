//! A real server on 127.0.0.1:0 with a real SQLite file and a tiny random model, behind the
//! contract proxy ([`crate::contract`]): every answer a test gets is checked against the
//! server's OpenAPI document.

#![allow(dead_code)]

use crate::contract::Contract;
use nanoimg_engine::registry::Family;
use nanoimg_engine::synthetic::{write_model, SyntheticSpec};
use nanoimg_server::{Config, ModelCatalog, Server};
use serde_json::{json, Value};

pub struct TestServer {
    /// The contract proxy's URL: what tests talk to.
    pub base: String,
    /// The server's own address, for tests of the connection itself (timeouts, limits).
    pub direct: String,
    pub admin_key: String,
    pub http: reqwest::Client,
    pub server: Option<Server>,
    pub config: Config,
    pub model: nanoimg_engine::ModelInfo,
    pub dir: tempfile::TempDir,
    pub contract: Contract,
}

pub async fn start(tweak: impl FnOnce(&mut Config)) -> TestServer {
    try_start(tweak)
        .await
        .unwrap_or_else(|e| panic!("the server did not start: {e}"))
}

/// As [`start`], but a refusal to start is returned.
pub async fn try_start(tweak: impl FnOnce(&mut Config)) -> Result<TestServer, String> {
    try_start_with_model(tweak, |_| {}).await
}

/// As [`start`], with `prepare` run on the tiny model's folder first (to add a `nanoimg.json`).
pub async fn start_with_model(
    tweak: impl FnOnce(&mut Config),
    prepare: impl FnOnce(&std::path::Path),
) -> TestServer {
    try_start_with_model(tweak, prepare)
        .await
        .unwrap_or_else(|e| panic!("the server did not start: {e}"))
}

async fn try_start_with_model(
    tweak: impl FnOnce(&mut Config),
    prepare: impl FnOnce(&std::path::Path),
) -> Result<TestServer, String> {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("models/tiny");
    write_model(&model, &SyntheticSpec::tiny(Family::Sd1), 3).unwrap();
    prepare(&model);
    let mut cfg = Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    // Safety fails closed by default; most tests run without the models (the word lists only),
    // and say so. Tests of the model layers set `models_dir`.
    cfg.safety.require_all_layers = false;
    tweak(&mut cfg);
    let info = nanoimg_engine::ModelInfo::inspect(&model).unwrap();
    let (server, first) = nanoimg_server::start(cfg.clone(), catalog(&info))
        .await
        .map_err(|e| e.0)?;
    let direct = format!("http://{}", server.addr);
    let contract = Contract::start(&direct).await;
    Ok(TestServer {
        base: format!("http://{}", contract.addr),
        direct,
        contract,
        // A worker makes no admin key.
        admin_key: first.map(|f| f.admin_key).unwrap_or_default(),
        http: reqwest::Client::new(),
        server: Some(server),
        config: cfg,
        model: info,
        dir,
    })
}

/// The Python of the test packages (tests/python/requirements.txt), which ./scripts/test.sh
/// installs into .venv-test.
pub fn python() -> String {
    std::env::var("NANOIMG_TEST_PYTHON").unwrap_or_else(|_| {
        let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv-test/bin/python");
        assert!(
            std::path::Path::new(venv).exists(),
            "the test packages are not installed: run ./scripts/test.sh, which installs them into .venv-test"
        );
        venv.to_owned()
    })
}

/// Runs one of `tests/python`'s scripts with `args` on a blocking thread and asserts that it
/// succeeded and said `ok` last; its output is the failure message.
pub async fn run_python_check(script: &str, args: Vec<String>) {
    let script = format!("{}/../../tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python())
            .arg(script)
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.trim_end().ends_with("ok"), "{text}");
}

/// The tiny model (the default), any other model folder a test's `prepare` wrote beside it,
/// and a LoRA library and an embeddings folder there too (`models/loras`, `models/embeddings`,
/// empty until a test writes there).
fn catalog(tiny: &nanoimg_engine::ModelInfo) -> ModelCatalog {
    let models = tiny.path.parent().expect("models/tiny has a parent");
    let library = |sub: &str| nanoimg_engine::library::Library::new(vec![models.join(sub)]);
    let mut entries = vec![("tiny".to_owned(), tiny.clone())];
    let mut others: Vec<_> = std::fs::read_dir(models)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("model_index.json").is_file() && *p != tiny.path)
        .collect();
    others.sort();
    for p in others {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        entries.push((name, nanoimg_engine::ModelInfo::inspect(&p).unwrap()));
    }
    ModelCatalog::new(entries, "tiny", 1)
        .unwrap()
        .with_loras(library("loras"))
        .with_embeddings(library("embeddings"))
}

impl TestServer {
    /// Starts the server again on the same data directory (after `shutdown`, or a drop).
    pub async fn restart(&mut self) {
        if let Some(old) = self.server.take() {
            old.shutdown().await;
        }
        let (server, first) = nanoimg_server::start(self.config.clone(), catalog(&self.model))
            .await
            .unwrap();
        assert!(first.is_none(), "a restart does not make a new admin key");
        self.direct = format!("http://{}", server.addr);
        self.contract.point_at(&self.direct);
        self.server = Some(server);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Creates a tenant and a key with `scopes`; returns (tenant id, key).
    pub async fn tenant(&self, name: &str, scopes: &[&str]) -> (String, String) {
        let t = json_of(
            self.http
                .post(self.url("/v1/admin/tenants"))
                .bearer_auth(&self.admin_key)
                .json(&json!({"name": name})),
        )
        .await;
        let id = t["id"].as_str().expect("tenant id").to_owned();
        let key = self.key(&id, scopes, None).await;
        (id, key)
    }

    pub async fn key(&self, tenant: &str, scopes: &[&str], expires_in: Option<u64>) -> String {
        self.key_with_id(tenant, scopes, expires_in).await.1
    }

    /// As [`TestServer::key`]; returns (key id, key).
    pub async fn key_with_id(
        &self,
        tenant: &str,
        scopes: &[&str],
        expires_in: Option<u64>,
    ) -> (String, String) {
        let k = json_of(
            self.http
                .post(self.url(&format!("/v1/admin/tenants/{tenant}/keys")))
                .bearer_auth(&self.admin_key)
                .json(&json!({"name": "test", "scopes": scopes, "expires_in": expires_in})),
        )
        .await;
        let key = k["key"].as_str().unwrap_or_else(|| panic!("{k}")).to_owned();
        (k["id"].as_str().unwrap_or_else(|| panic!("{k}")).to_owned(), key)
    }

    /// `GET path` with `key`, as JSON.
    pub async fn get_json(&self, key: &str, path: &str) -> Value {
        json_of(self.http.get(self.url(path)).bearer_auth(key)).await
    }

    /// `POST /v1/jobs`; the response.
    pub async fn submit(&self, key: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url("/v1/jobs"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// `POST /v1/jobs`, which must be accepted; the job id.
    pub async fn submit_id(&self, key: &str, body: Value) -> String {
        let r = self.submit(key, body).await;
        assert_eq!(r.status(), 202);
        let v: Value = r.json().await.unwrap();
        v["id"].as_str().unwrap_or_else(|| panic!("{v}")).to_owned()
    }

    /// `DELETE /v1/jobs/{id}`; the status code.
    pub async fn cancel(&self, key: &str, id: &str) -> u16 {
        self.http
            .delete(self.url(&format!("/v1/jobs/{id}")))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Polls the job until its status is `status` (30 s at most); the record.
    pub async fn wait_for(&self, key: &str, id: &str, status: &str) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let rec = self.get_json(key, &format!("/v1/jobs/{id}")).await;
            if rec["status"] == status {
                return rec;
            }
            assert!(std::time::Instant::now() < deadline, "never {status}: {rec}");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Revokes a key as the operator; the status.
    pub async fn revoke(&self, key_id: &str) -> u16 {
        self.http
            .delete(self.url(&format!("/v1/admin/keys/{key_id}")))
            .bearer_auth(&self.admin_key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// `POST path` with a multipart form; the status and the JSON answer (null if none).
    pub async fn post_form(&self, key: &str, path: &str, form: reqwest::multipart::Form) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(key)
            .multipart(form)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// A form with one file field.
    pub fn file_form(field: &'static str, bytes: Vec<u8>) -> reqwest::multipart::Form {
        reqwest::multipart::Form::new()
            .part(field, reqwest::multipart::Part::bytes(bytes).file_name("in.png"))
    }

    /// `POST /v1/images/edits` with a multipart form; the response.
    pub async fn edit(&self, key: &str, form: reqwest::multipart::Form) -> reqwest::Response {
        self.http
            .post(self.url("/v1/images/edits"))
            .bearer_auth(key)
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    pub async fn generate(&self, key: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url("/v1/images/generations"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }
}

/// Sends a request and reads its JSON body.
pub async fn json_of(req: reqwest::RequestBuilder) -> Value {
    req.send().await.unwrap().json().await.unwrap()
}

/// A small PNG (RGBA when `alpha`), as uploads.
pub fn png(w: u32, h: u32, alpha: Option<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    let img = image::RgbaImage::from_fn(w, h, |x, y| {
        image::Rgba([(x * 4) as u8, (y * 4) as u8, 128, alpha.unwrap_or(255)])
    });
    image::DynamicImage::ImageRgba8(img)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

pub const ALL_SCOPES: &[&str] = &[
    "images:generate",
    "images:edit",
    "assets:read",
    "assets:write",
    "characters",
];

/// A fast request for the tiny model.
/// Reads SSE events (name, data) until `stop` says so or the stream ends.
pub async fn sse_events(resp: reqwest::Response, stop: impl Fn(&str) -> bool) -> Vec<(String, Value)> {
    use futures_util::StreamExt;
    let mut out = vec![];
    let mut buf = String::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = tokio::time::timeout(std::time::Duration::from_secs(60), stream.next())
        .await
        .expect("events keep coming")
    {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut name = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event:") {
                    name = n.trim().to_owned();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            if name.is_empty() {
                continue;
            }
            let done = stop(&name);
            out.push((name, serde_json::from_str(&data).unwrap()));
            if done {
                return out;
            }
        }
    }
    out
}

/// The events that end a job.
pub const FINAL: [&str; 3] = ["succeeded", "failed", "cancelled"];

/// A job's events (name, data) from now until it ends: call right after submitting. A job
/// that ended before the stream opened gives its `status` alone.
pub async fn watch(s: &TestServer, key: &str, id: &str) -> Vec<(String, Value)> {
    let r = s
        .http
        .get(s.url(&format!("/v1/jobs/{id}/events")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    sse_events(r, |n| FINAL.contains(&n)).await
}

/// The (step, size) of every progress preview among `events`.
pub fn previews(events: &[(String, Value)]) -> Vec<(u64, (u32, u32))> {
    events
        .iter()
        .filter(|(name, v)| name == "progress" && v["preview_png_b64"].is_string())
        .map(|(_, v)| {
            let p = image::load_from_memory(&b64(&v["preview_png_b64"])).unwrap();
            (v["step"].as_u64().unwrap(), (p.width(), p.height()))
        })
        .collect()
}

pub fn tiny_request(extra: Value) -> Value {
    let mut v = json!({"prompt": "a cat", "size": "64x64", "steps": 2, "seed": 1});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

/// The bytes of a `b64_json` field (raw base64, not a data URL).
pub fn b64(v: &Value) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().expect("b64_json is a string"))
        .expect("raw base64, not a data URL")
}

/// Mean absolute difference per channel of two images of one size.
pub fn mean_abs_diff(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / a.as_raw().len() as f64
}

/// The audit events of `action`, once there are `expected` of them (refusals are written by a
/// background writer, so they land shortly after the answer) or 10 s have passed.
pub async fn audit_of(s: &TestServer, action: &str, expected: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let audit = s.get_json(&s.admin_key, "/v1/admin/audit?limit=1000").await;
        let found: Vec<Value> = audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == action)
            .cloned()
            .collect();
        if found.len() >= expected || std::time::Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

pub use nanoimg_store::testing::files;
