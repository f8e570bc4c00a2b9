//! `nanoimg serve` as a process: first start prints the admin key once; `keys`/`tenants` work
//! on the same data directory; a job running when the process is killed is failed with a reason
//! after restart; the official `openai` Python package works against it unchanged.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) struct Serve {
    pub child: Child,
    pub base: String,
    pub key: Option<String>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(home: &std::path::Path) -> Serve {
    serve_with(home, &[])
}

fn serve_with(home: &std::path::Path, env: &[(&str, &str)]) -> Serve {
    start(&["serve"], home, env)
}

/// Starts `nanoimg ARGS --bind 127.0.0.1:0 --data-dir HOME/data` and waits until it says where
/// it listens (`serve`) or where its health routes are (`worker`).
// The child is killed and waited for when `Serve` drops.
#[allow(clippy::zombie_processes)]
pub(crate) fn start(args: &[&str], home: &std::path::Path, env: &[(&str, &str)]) -> Serve {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nanoimg"))
        .args(args)
        .args(["--bind", "127.0.0.1:0", "--data-dir"])
        .arg(home.join("data"))
        .envs(env.iter().copied())
        .env("NANOIMG_HOME", home)
        .env("NANOIMG_MODELS", home.join("no-models"))
        // Without the safety models (the word lists only), said explicitly: the default refuses.
        .env("NANOIMG_SAFETY_REQUIRE_ALL_LAYERS", "false")
        .env("NANOIMG_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut key = None;
    loop {
        let line = lines.next().expect("serve printed its address").unwrap();
        if let Some(k) = line.trim().strip_prefix("nimg_") {
            key = Some(format!("nimg_{k}"));
        }
        let worker = line
            .strip_prefix("NanoImg worker ")
            .and_then(|l| l.split_once("(health on "))
            .map(|(_, addr)| addr.trim_end_matches(')'));
        if let Some(addr) = line.strip_prefix("NanoImg listening on ").or(worker) {
            // Keep draining stdout so the server never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return Serve {
                child,
                base: addr.trim().to_owned(),
                key,
            };
        }
    }
}

/// One HTTP/1.1 request over a plain socket (no client library, no curl), JSON back.
pub(crate) fn request(method: &str, url: &str, key: &str, content_type: &str, body: &[u8]) -> Value {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut sock = std::net::TcpStream::connect(host).unwrap();
    write!(
        sock,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    sock.write_all(body).unwrap();
    let mut resp = String::new();
    sock.read_to_string(&mut resp).unwrap();
    let (_, payload) = resp.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(payload).unwrap_or_else(|_| panic!("{resp}"))
}

/// A JSON request.
pub(crate) fn curl(method: &str, url: &str, key: &str, body: Option<&str>) -> Value {
    request(
        method,
        url,
        key,
        "application/json",
        body.unwrap_or("").as_bytes(),
    )
}

/// The peak resident memory of a process, in KiB (`VmHWM`).
#[test]
fn safety_fails_closed_a_fresh_serve_without_the_safety_models_refuses_to_start() {
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nanoimg"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(home.path().join("data"))
        .env("NANOIMG_HOME", home.path())
        .env("NANOIMG_MODELS", home.path().join("no-models"))
        .env("NANOIMG_LOG", "warn")
        .env_remove("NANOIMG_SAFETY_REQUIRE_ALL_LAYERS")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("nanoimg serve started without the safety models");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    for needed in [
        "semantic",
        "image",
        "nanoimg models fetch safety",
        "NANOIMG_SAFETY_REQUIRE_ALL_LAYERS",
    ] {
        assert!(err.contains(needed), "{needed:?} not in {err}");
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A grey PNG of `side`² pixels, all zero: a few hundred KiB that decode to `side`² bytes.
fn png_bomb(side: u32) -> Vec<u8> {
    let file = tempfile::tempfile().unwrap();
    let mut enc = png::Encoder::new(file.try_clone().unwrap(), side, side);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_compression(png::Compression::Fast);
    let mut w = enc.write_header().unwrap().into_stream_writer().unwrap();
    let row = vec![0u8; side as usize];
    for _ in 0..side {
        std::io::Write::write_all(&mut w, &row).unwrap();
    }
    w.finish().unwrap();
    let mut out = Vec::new();
    let mut file = file;
    std::io::Seek::rewind(&mut file).unwrap();
    std::io::Read::read_to_end(&mut file, &mut out).unwrap();
    out
}

#[test]
fn a_decompression_bomb_is_refused_without_the_memory_to_decode_it() {
    let home = tempfile::tempdir().unwrap();
    let s = serve(home.path());
    let key = s.key.clone().unwrap();
    let bomb = png_bomb(20_000); // 400 MB of pixels
    assert!(bomb.len() < 2 << 20, "{} bytes", bomb.len());
    // Warm up the paths the bombs take with a small image that is refused for its prompt.
    let small = png_bomb(64);
    let mut warm = b"--B\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\n \r\n".to_vec();
    warm.extend_from_slice(
        b"--B\r\nContent-Disposition: form-data; name=\"image\"; filename=\"s.png\"\r\n\r\n",
    );
    warm.extend_from_slice(&small);
    warm.extend_from_slice(b"\r\n--B--\r\n");
    let url = format!("{}/v1/images/edits", s.base);
    let r = request("POST", &url, &key, "multipart/form-data; boundary=B", &warm);
    assert_eq!(r["error"]["param"], "prompt", "{r}");
    let before = peak_rss_kib(s.child.id());
    for (path, field, extra) in [
        ("/v1/assets", "file", ""),
        (
            "/v1/images/edits",
            "image",
            "--B\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\na cat\r\n",
        ),
    ]
    .iter()
    .cycle()
    .take(6)
    {
        let mut body = extra.as_bytes().to_vec();
        body.extend_from_slice(
            format!(
                "--B\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"b.png\"\r\n\
                 Content-Type: image/png\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(&bomb);
        body.extend_from_slice(b"\r\n--B--\r\n");
        let url = format!("{}{path}", s.base);
        let r = request("POST", &url, &key, "multipart/form-data; boundary=B", &body);
        assert_eq!(r["error"]["param"], *field, "{path}: {r}");
        let msg = r["error"]["message"].as_str().unwrap();
        assert!(msg.contains("20000x20000"), "{path}: {msg}");
    }
    let grew_mib = (peak_rss_kib(s.child.id()) - before) / 1024;
    println!("peak RSS grew {grew_mib} MiB while refusing six 400 MB bombs");
    // Allocator warm-up moves it a little; decoding one bomb would take 400 MB.
    assert!(grew_mib < 100, "the server's peak memory grew {grew_mib} MiB");
    // Nothing was stored.
    let assets = curl("GET", &format!("{}/v1/assets", s.base), &key, None);
    assert_eq!(assets["data"].as_array().unwrap().len(), 0, "{assets}");
}

/// Submits a job long enough to be caught running and waits until it runs; returns its id.
fn long_running_job(s: &Serve, key: &str) -> String {
    let job = curl(
        "POST",
        &format!("{}/v1/jobs", s.base),
        key,
        Some(r#"{"prompt":"a cat face","steps":100,"n":4}"#),
    );
    let id = job["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let j = curl("GET", &format!("{}/v1/jobs/{id}", s.base), key, None);
        if j["status"] == "running" {
            return id;
        }
        assert_eq!(j["status"], "queued", "{j}");
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_stops_cleanly_and_a_job_past_the_grace_period_is_failed_with_a_reason() {
    let home = tempfile::tempdir().unwrap();
    let mut s = serve_with(home.path(), &[("NANOIMG_SHUTDOWN_GRACE_SECS", "1")]);
    let key = s.key.clone().unwrap();
    let id = long_running_job(&s, &key);
    let t0 = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "the grace period was not given"
    );
    drop(s);

    let s = serve(home.path());
    let j = curl("GET", &format!("{}/v1/jobs/{id}", s.base), &key, None);
    assert_eq!(j["status"], "failed", "{j}");
    assert_eq!(
        j["error"], "interrupted: the server shut down while this job was running",
        "{j}"
    );
}

#[test]
fn a_job_running_at_a_crash_is_failed_with_a_reason_after_restart() {
    let home = tempfile::tempdir().unwrap();
    let s = serve(home.path());
    let key = s.key.clone().expect("the first start prints the admin key");
    let id = long_running_job(&s, &key);
    drop(s); // SIGKILL: no chance to clean up.

    let s = serve(home.path());
    assert!(
        s.key.is_none(),
        "the admin key is printed on the first start only"
    );
    let j = curl("GET", &format!("{}/v1/jobs/{id}", s.base), &key, None);
    assert_eq!(j["status"], "failed", "{j}");
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains("server stopped while this job was running"),
        "{j}"
    );

    // keys/tenants from the shell, on the same store, while it runs.
    let nanoimg = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_nanoimg"))
            .args(args)
            .arg("--data-dir")
            .arg(home.path().join("data"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    nanoimg(&["tenants", "create", "shell-co"]);
    let new_key = nanoimg(&[
        "keys",
        "create",
        "--tenant",
        "shell-co",
        "--scopes",
        "images:generate,assets:read",
    ])
    .trim()
    .to_owned();
    let me = curl("GET", &format!("{}/v1/me", s.base), &new_key, None);
    assert_eq!(me["tenant"]["name"], "shell-co", "{me}");
    let list = nanoimg(&["keys", "list", "--tenant", "shell-co"]);
    assert!(
        !list.contains(&new_key) && list.contains(&new_key[..11]),
        "{list}"
    );
    // Limits from the shell apply to the running server's next request.
    let setting = |shown: &str, name: &str| -> String {
        let line = shown.lines().find(|l| l.split_whitespace().next() == Some(name));
        line.and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_default()
            .to_owned()
    };
    let shown = nanoimg(&[
        "tenants",
        "limits",
        "shell-co",
        "--images-per-minute",
        "7",
        "--megapixel-steps-per-minute",
        "900",
        "--max-stored-bytes",
        "8000000000",
    ]);
    assert_eq!(setting(&shown, "images_per_minute"), "7", "{shown}");
    assert_eq!(setting(&shown, "concurrent_jobs"), "default", "{shown}");
    assert_eq!(setting(&shown, "max_stored_bytes"), "8000000000", "{shown}");
    let me = curl("GET", &format!("{}/v1/me", s.base), &new_key, None);
    assert_eq!(me["limits"]["images_per_minute"], 7, "{me}");
    assert_eq!(me["limits"]["megapixel_steps_per_minute"], 900, "{me}");
    assert_eq!(me["limits"]["max_stored_bytes"], 8_000_000_000_u64, "{me}");
    nanoimg(&["tenants", "moderation", "shell-co", "--allow-low", "true"]);
    let me = curl("GET", &format!("{}/v1/me", s.base), &new_key, None);
    assert_eq!(me["tenant"]["allow_low_moderation"], true, "{me}");
    let shown = nanoimg(&["tenants", "limits", "shell-co", "--images-per-minute", "default"]);
    assert_eq!(setting(&shown, "images_per_minute"), "default", "{shown}");
    assert_eq!(setting(&shown, "megapixel_steps_per_minute"), "900", "{shown}");

    let key_id = me["key"]["id"].as_str().unwrap();
    nanoimg(&["keys", "revoke", key_id]);
    let me = curl("GET", &format!("{}/v1/me", s.base), &new_key, None);
    assert_eq!(me["error"]["message"], "the API key has been revoked", "{me}");

    // The audit log from the shell: the admin actions above, oldest first, never a key. The
    // refused key's `auth.failed` is written in the background: wait for it, so that no event
    // lands between the listings compared below.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let log = loop {
        let log = nanoimg(&["audit", "--json", "--limit", "1000"]);
        if log.contains("\"auth.failed\"") || std::time::Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let events: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let actions: Vec<&str> = events.iter().map(|e| e["action"].as_str().unwrap()).collect();
    for want in [
        "tenant.create",
        "key.create",
        "tenant.limits",
        "tenant.moderation",
        "key.revoke",
    ] {
        assert!(actions.contains(&want), "{want} not in {actions:?}");
    }
    assert!(events
        .windows(2)
        .all(|w| w[0]["seq"].as_i64() < w[1]["seq"].as_i64()));
    assert!(
        !log.contains(&new_key) && !log.contains(&key),
        "a key in the audit log"
    );
    // The end of the log, newest first, and the page before it.
    let seqs = |out: String| -> Vec<i64> {
        out.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["seq"].as_i64().unwrap())
            .collect()
    };
    let all: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    let newest = seqs(nanoimg(&["audit", "--newest", "--limit", "2", "--json"]));
    assert_eq!(newest, all.iter().rev().take(2).copied().collect::<Vec<_>>());
    let before = newest[1].to_string();
    let back = seqs(nanoimg(&["audit", "--before", &before, "--limit", "2", "--json"]));
    assert_eq!(
        back,
        all.iter().rev().skip(2).take(2).copied().collect::<Vec<_>>()
    );
    let table = nanoimg(&["audit", "--tenant", "shell-co"]);
    assert!(table.contains("key.revoke") && table.contains("T"), "{table}");
    let out = Command::new(env!("CARGO_BIN_EXE_nanoimg"))
        .args(["audit", "--limit", "0", "--data-dir"])
        .arg(home.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--limit must be 1 to 1000"));

    // The chain verifies from the shell; the shell's events chain onto the server's, and with
    // a checkpoint after every event the head is signed with the server's key.
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_nanoimg"))
            .args(args)
            .arg("--data-dir")
            .arg(home.path().join("data"))
            .env("NANOIMG_AUDIT_CHECKPOINT_EVERY", "1")
            .output()
            .unwrap()
    };
    assert!(cli(&["tenants", "create", "signed-co"]).status.success());
    let verified = nanoimg(&["audit", "verify"]);
    assert!(verified.starts_with("audit log OK:"), "{verified}");
    assert!(verified.contains("signed checkpoints verified"), "{verified}");
    // Against a key that did not sign it (the Ed25519 base point): exit 1, and why.
    let wrong = "5866666666666666666666666666666666666666666666666666666666666666";
    let out = cli(&["audit", "verify", "--public-key", wrong]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("TAMPERED") && text.contains("signed with another key"),
        "{text}"
    );

    // Retention and erasure from the shell.
    let shown = nanoimg(&["tenants", "retention", "shell-co", "--days", "30"]);
    assert_eq!(shown.trim(), "shell-co: retention 30 days");
    let out = cli(&["tenants", "retention", "shell-co", "--days", "forever"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`off`"));
    let out = cli(&["tenants", "erase", "signed-co"]);
    assert!(!out.status.success(), "nothing is erased without --yes");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    let erased = nanoimg(&["tenants", "erase", "signed-co", "--yes"]);
    assert!(erased.starts_with("erased ten_"), "{erased}");
    assert!(!nanoimg(&["tenants", "list"]).contains("signed-co"));
    let out = cli(&["tenants", "erase", "admin", "--yes"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be erased"));
    assert!(nanoimg(&["audit", "verify"]).starts_with("audit log OK:"));
}

#[test]
fn the_official_openai_python_package_works_unchanged() {
    let python = std::env::var("NANOIMG_TEST_PYTHON").unwrap_or_else(|_| {
        let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv-test/bin/python");
        assert!(
            std::path::Path::new(venv).exists(),
            "the openai package is not installed: run ./scripts/test.sh, which installs it into .venv-test"
        );
        venv.to_owned()
    });
    let home = tempfile::tempdir().unwrap();
    // With the real safety models, so the SDK also sees what only the semantic layer refuses.
    let models = nanoimg_safety::testing::models_dir();
    let s = serve_with(
        home.path(),
        &[("NANOIMG_SAFETY_MODELS_DIR", models.to_str().unwrap())],
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/python/openai_client.py");
    let run = |python: &str, extra: &[&str]| {
        let out = Command::new(python)
            .arg(script)
            .arg(&s.base)
            .arg(s.key.as_ref().unwrap())
            .args(extra)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{python}: {text}");
        assert!(text.contains("\nok"), "{text}");
        text
    };
    let text = run(&python, &["--semantic"]);
    assert!(text.contains("semantic layer: paraphrase refused"), "{text}");
    assert!(text.contains("openai 3.54.0\n"), "the pinned package: {text}");
    // The newest release on PyPI (scripts/test.sh upgrades it each run), which is how an SDK
    // change that breaks the API is caught before users meet it.
    let latest = std::env::var("NANOIMG_TEST_PYTHON_OPENAI_LATEST").unwrap_or_else(|_| {
        let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv-openai-latest/bin/python");
        assert!(
            std::path::Path::new(venv).exists(),
            "the newest openai package is not installed: run ./scripts/test.sh, which keeps it in .venv-openai-latest"
        );
        venv.to_owned()
    });
    let text = run(&latest, &[]);
    eprintln!(
        "newest openai package: {}",
        text.lines().rev().nth(1).unwrap_or_default()
    );
}

/// `nanoimg session` drives an edit session on the running server as a client: start from a
/// file, two instructions, undo, a branch from the original, the tree, the head saved to a file,
/// and a refused instruction that exits non-zero with the reason.
#[test]
fn edit_sessions_from_the_command_line() {
    let home = tempfile::tempdir().unwrap();
    let s = serve(home.path());
    let key = s.key.clone().unwrap();
    let input = home.path().join("in.png");
    image::RgbImage::from_fn(96, 64, |x, y| image::Rgb([(x * 2) as u8, (y * 3) as u8, 90]))
        .save(&input)
        .unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_nanoimg"))
            .arg("session")
            .args(args)
            .env("NANOIMG_URL", &s.base)
            .env("NANOIMG_API_KEY", &key)
            .output()
            .unwrap()
    };
    let json = |args: &[&str]| -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = run(&all);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let started = json(&["start", input.to_str().unwrap()]);
    let id = started["id"].as_str().unwrap().to_owned();
    let root = started["head"].as_str().unwrap().to_owned();
    let v1 = json(&["edit", &id, "crop it to a square"]);
    assert_eq!(v1["version"]["plan"]["ops"][0]["op"], "crop_aspect", "{v1}");
    let v2 = json(&["edit", &id, "make it a bit darker"]);
    assert_eq!(v2["version"]["parent_id"], v1["version"]["id"]);
    let u = json(&["undo", &id]);
    assert_eq!(u["head"], v1["version"]["id"]);
    let plan = json(&["edit", &id, "crop to 16:9", "--dry-run"]);
    assert_eq!(plan["plan"]["ops"][0]["op"], "crop_aspect", "{plan}");
    let b = json(&["edit", &id, "rotate it 90 degrees", "--from", &root]);
    assert_eq!(b["version"]["parent_id"], root.as_str());

    let out = home.path().join("head.png");
    let got = run(&["get", &id, "-o", out.to_str().unwrap()]);
    assert!(got.status.success(), "{}", String::from_utf8_lossy(&got.stderr));
    let head = image::open(&out).unwrap();
    assert_eq!((head.width(), head.height()), (64, 96));

    let shown = run(&["show", &id]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("* ") && text.contains("rotate it 90 degrees"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 5, "{text}");

    let refused = run(&["edit", &id, "delete all my images"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("cannot be carried out"), "{err}");
}

#[test]
fn characters_from_the_command_line() {
    let home = tempfile::tempdir().unwrap();
    let s = serve(home.path());
    let key = s.key.clone().unwrap();
    let refs: Vec<String> = (0..2)
        .map(|i| {
            let p = home.path().join(format!("ref{i}.png"));
            image::RgbImage::from_fn(64, 64, |x, _| image::Rgb([((x + i * 8) * 4) as u8, 40, 200]))
                .save(&p)
                .unwrap();
            p.to_string_lossy().into_owned()
        })
        .collect();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_nanoimg"))
            .arg("character")
            .args(args)
            .env("NANOIMG_URL", &s.base)
            .env("NANOIMG_API_KEY", &key)
            .output()
            .unwrap()
    };
    // Without the consent attestation the server refuses, and says why.
    let refused = run(&["create", "Robo", &refs[0]]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("consent"), "{err}");

    let out = run(&[
        "create",
        "Robo",
        &refs[0],
        &refs[1],
        "--description",
        "a blue robot",
        "--consent",
        "--strength",
        "0.6",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let c: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = c["id"].as_str().unwrap().to_owned();
    assert_eq!(c["references"].as_array().unwrap().len(), 2);
    assert_eq!(c["strength"], 0.6);

    let listed = run(&["list"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains(&id) && text.contains("2 references"), "{text}");
    let shown = run(&["show", &id]);
    assert_eq!(String::from_utf8_lossy(&shown.stdout).lines().count(), 3);

    let gone = run(&["delete", &id]);
    assert!(gone.status.success(), "{}", String::from_utf8_lossy(&gone.stderr));
    let missing = run(&["show", &id]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));
}
