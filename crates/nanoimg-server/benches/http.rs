//! HTTP load on a real server (in-process, 127.0.0.1, real SQLite file, tiny random model):
//! requests a second and latency percentiles for the paths that must stay fast — health,
//! authentication, refusals — alone and while generation keeps the queue full.
//!
//! `cargo bench -p nanoimg-server --bench http [-- SECONDS CONNECTIONS]` (default 5 s, 16).
//! The load generator shares the machine with the server: on a small machine it takes part of
//! the CPU the server would have.

use nanoimg_engine::registry::Family;
use nanoimg_engine::synthetic::{write_model, SyntheticSpec};
use nanoimg_server::{Config, ModelCatalog};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Load {
    name: &'static str,
    method: reqwest::Method,
    path: &'static str,
    key: String,
    body: Option<Value>,
    want: u16,
}

struct Report {
    requests: usize,
    wrong: usize,
    secs: f64,
    latencies: Vec<Duration>,
}

impl Report {
    fn pct(&self, p: f64) -> f64 {
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i].as_secs_f64() * 1000.0
    }
}

/// `connections` clients send `load` back to back for `secs`.
async fn run(base: &str, load: &Load, connections: usize, secs: f64) -> Report {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let http = reqwest::Client::new();
        let url = format!("{base}{}", load.path);
        let (method, key, body, want) = (
            load.method.clone(),
            load.key.clone(),
            load.body.clone(),
            load.want,
        );
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut wrong) = (Vec::new(), 0);
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let mut req = http.request(method.clone(), &url).bearer_auth(&key);
                if let Some(b) = &body {
                    req = req.json(b);
                }
                match req.send().await {
                    Ok(r) => {
                        if r.status().as_u16() != want {
                            wrong += 1;
                        }
                        let _ = r.bytes().await;
                    }
                    Err(_) => wrong += 1,
                }
                lat.push(t0.elapsed());
            }
            (lat, wrong)
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut report = Report {
        requests: 0,
        wrong: 0,
        secs: 0.0,
        latencies: Vec::new(),
    };
    for t in tasks {
        let (lat, wrong) = t.await.unwrap();
        report.requests += lat.len();
        report.wrong += wrong;
        report.latencies.extend(lat);
    }
    report.secs = started.elapsed().as_secs_f64();
    report.latencies.sort();
    report
}

fn row(name: &str, connections: usize, r: &Report) {
    println!(
        "| {name} | {connections} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
        r.requests as f64 / r.secs,
        r.pct(0.5),
        r.pct(0.99),
        r.latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        r.wrong
    );
}

async fn admin_post(http: &reqwest::Client, url: String, key: &str, body: Value) -> Value {
    http.post(url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let secs: f64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let connections: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(16);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(bench(secs, connections));
}

async fn bench(secs: f64, connections: usize) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("models/tiny");
    write_model(&model, &SyntheticSpec::tiny(Family::Sd1), 3).unwrap();
    let info = nanoimg_engine::ModelInfo::inspect(&model).unwrap();
    let cfg = Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        log_format: "text".into(),
        ..Config::default()
    };
    let catalog = ModelCatalog::new(vec![("tiny".into(), info)], "tiny", 1).unwrap();
    let (server, first) = nanoimg_server::start(cfg, catalog).await.unwrap();
    let base = format!("http://{}", server.addr);
    let admin = first.unwrap().admin_key;
    let http = reqwest::Client::new();
    let mut keys = Vec::new();
    for name in ["bench", "limited", "gen"] {
        let t = admin_post(
            &http,
            format!("{base}/v1/admin/tenants"),
            &admin,
            json!({"name": name}),
        )
        .await;
        let id = t["id"].as_str().unwrap().to_owned();
        let limits = match name {
            "limited" => json!({"requests_per_minute": 1}),
            _ => json!({"requests_per_minute": 1_000_000, "images_per_minute": 1_000_000,
                        "concurrent_jobs": 10_000}),
        };
        http.put(format!("{base}/v1/admin/tenants/{id}/limits"))
            .bearer_auth(&admin)
            .json(&limits)
            .send()
            .await
            .unwrap();
        let k = admin_post(
            &http,
            format!("{base}/v1/admin/tenants/{id}/keys"),
            &admin,
            json!({"name": "bench"}),
        )
        .await;
        keys.push(k["key"].as_str().unwrap().to_owned());
    }
    // Spend the limited key's one request.
    http.get(format!("{base}/v1/me"))
        .bearer_auth(&keys[1])
        .send()
        .await
        .unwrap();
    let unknown = nanoimg_store::SecretKey::generate().expose().to_owned();
    let get = |name, path, key: &str, want| Load {
        name,
        method: reqwest::Method::GET,
        path,
        key: key.to_owned(),
        body: None,
        want,
    };
    let generate = Load {
        name: "POST /v1/images/generations (64×64, 2 steps)",
        method: reqwest::Method::POST,
        path: "/v1/images/generations",
        key: keys[2].clone(),
        body: Some(json!({"prompt": "a cat", "size": "64x64", "steps": 2})),
        want: 200,
    };
    let fast = [
        get("GET /healthz", "/healthz", "", 200),
        get("GET /v1/me (authenticated)", "/v1/me", &keys[0], 200),
        get("GET /v1/me, unknown key (401)", "/v1/me", &unknown, 401),
        get("GET /v1/me, rate-limited key (429)", "/v1/me", &keys[1], 429),
    ];
    println!(
        "\n{secs} s per row; {} cores\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| load | connections | requests/s | p50 ms | p99 ms | max ms | unexpected |");
    println!("|---|---|---|---|---|---|---|");
    for load in &fast {
        row(load.name, connections, &run(&base, load, connections, secs).await);
    }
    row(generate.name, 4, &run(&base, &generate, 4, secs).await);
    // The same fast paths while 4 clients keep the worker busy with generations.
    let stop_gen = {
        let base = base.clone();
        tokio::spawn(async move { run(&base, &generate, 4, secs * 5.0).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    for load in &fast[..2] {
        let name = format!("{} — while generating", load.name);
        row(&name, connections, &run(&base, load, connections, secs).await);
    }
    stop_gen.abort();
    server.shutdown().await;
}
