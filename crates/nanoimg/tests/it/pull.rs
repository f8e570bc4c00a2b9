//! `nanoimg models pull` against a hub on 127.0.0.1 that answers as the Hugging Face hub does:
//! the listing at `/api/models/{id}/revision/{rev}?blobs=true` (sizes, git blob hashes, LFS
//! SHA-256s), files at `/{id}/resolve/{commit}/{path}`, LFS files redirected to a CDN on
//! another port that honours `Range`, `X-Error-Code` on a 404. The repositories hold a tiny
//! random model written by `nanoimg models synth`, plus what real repositories carry beside
//! it (pickles, an fp16 copy, the single-file checkpoint) that a pull must leave behind.

use crate::common::{bin, mean_abs_diff, ok};
use crate::server::{curl, start};
use sha1::Digest as _;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const COMMIT: &str = "4c8f2f0b6d0c4f1e9a7b3d2e1f0a9b8c7d6e5f4a";

fn sha256(b: &[u8]) -> String {
    hex(&sha2::Sha256::digest(b))
}

fn git_sha1(b: &[u8]) -> String {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", b.len()));
    h.update(b);
    hex(&h.finalize())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn is_lfs(name: &str) -> bool {
    [".safetensors", ".bin", ".ckpt"]
        .iter()
        .any(|e| name.ends_with(e))
}

/// One request as the hub saw it.
#[derive(Debug, Clone)]
struct Seen {
    port: u16,
    path: String,
    range: Option<String>,
    auth: Option<String>,
}

/// Repositories by id, each its files by path.
type Repos = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

#[derive(Default)]
struct State {
    repos: Repos,
    /// Serve LFS files with one byte changed (the listing keeps the real hashes).
    tamper: bool,
    /// Send only the first half of the blob with this SHA-256, then hold the connection.
    stall: Option<String>,
    seen: Vec<Seen>,
}

/// The fake hub: the API and resolve URLs on one port, the CDN on another.
struct FakeHub {
    state: Arc<(Mutex<State>, Condvar)>,
    hub: String,
    cdn_port: u16,
}

impl FakeHub {
    fn start(repos: Repos) -> Self {
        let state = Arc::new((
            Mutex::new(State {
                repos,
                ..Default::default()
            }),
            Condvar::new(),
        ));
        let hub = TcpListener::bind("127.0.0.1:0").unwrap();
        let cdn = TcpListener::bind("127.0.0.1:0").unwrap();
        let cdn_port = cdn.local_addr().unwrap().port();
        let hub_url = format!("http://{}", hub.local_addr().unwrap());
        for listener in [hub, cdn] {
            let state = state.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    let Ok(conn) = conn else { break };
                    let state = state.clone();
                    std::thread::spawn(move || serve(conn, &state, cdn_port));
                }
            });
        }
        Self {
            state,
            hub: hub_url,
            cdn_port,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let out = f(&mut self.state.0.lock().unwrap());
        self.state.1.notify_all();
        out
    }

    fn seen(&self) -> Vec<Seen> {
        self.with(|s| std::mem::take(&mut s.seen))
    }
}

fn serve(mut conn: TcpStream, state: &(Mutex<State>, Condvar), cdn_port: u16) {
    let port = conn.local_addr().unwrap().port();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let path = path.replace("%2F", "/");
    let mut st = state.0.lock().unwrap();
    st.seen.push(Seen {
        port,
        path: path.clone(),
        range: headers.get("range").cloned(),
        auth: headers.get("authorization").cloned(),
    });
    let reply = |conn: &mut TcpStream, status: &str, extra: &[(&str, String)], body: &[u8]| {
        let mut head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (k, v) in extra {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let _ = conn.write_all(head.as_bytes());
        let _ = conn.write_all(body);
    };
    let not_found = |conn: &mut TcpStream, code: &str| {
        reply(
            conn,
            "404 Not Found",
            &[("X-Error-Code", code.to_owned())],
            b"not found",
        )
    };
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let Some((id, rev)) = rest.split_once("/revision/") else {
            return not_found(&mut conn, "RepoNotFound");
        };
        let Some(files) = st.repos.get(id) else {
            return not_found(&mut conn, "RepoNotFound");
        };
        if rev != "main" && rev != COMMIT {
            return not_found(&mut conn, "RevisionNotFound");
        }
        assert_eq!(query, "blobs=true");
        let siblings: Vec<serde_json::Value> = files
            .iter()
            .map(|(name, b)| {
                let mut s = serde_json::json!({"rfilename": name, "size": b.len(), "blobId": git_sha1(b)});
                if is_lfs(name) {
                    s["lfs"] = serde_json::json!({"sha256": sha256(b), "size": b.len(), "pointerSize": 134});
                }
                s
            })
            .collect();
        let body = serde_json::json!({"id": id, "sha": COMMIT, "siblings": siblings}).to_string();
        return reply(
            &mut conn,
            "200 OK",
            &[("Content-Type", "application/json".into())],
            body.as_bytes(),
        );
    }
    if let Some(sha) = path.strip_prefix("/cdn/") {
        let blob = st
            .repos
            .values()
            .flat_map(|f| f.values())
            .find(|b| sha256(b) == sha)
            .cloned();
        let Some(mut blob) = blob else {
            return not_found(&mut conn, "EntryNotFound");
        };
        if st.tamper {
            let mid = blob.len() / 2;
            blob[mid] ^= 0x55;
        }
        let from: usize = headers
            .get("range")
            .and_then(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok())
            .unwrap_or(0);
        if st.stall.as_deref() == Some(sha) {
            let half = blob.len() / 2;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                blob.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&blob[..half]);
            let _ = conn.flush();
            // Hold the connection open, as a stalled transfer does, until released.
            let _st = state.1.wait_while(st, |s| s.stall.is_some()).unwrap();
            return;
        }
        drop(st);
        if from > 0 {
            let range = format!("bytes {from}-{}/{}", blob.len() - 1, blob.len());
            return reply(
                &mut conn,
                "206 Partial Content",
                &[("Content-Range", range)],
                &blob[from..],
            );
        }
        return reply(&mut conn, "200 OK", &[], &blob);
    }
    // /{owner}/{name}/resolve/{commit}/{path}
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    if let [owner, name, "resolve", commit, file] = parts[..] {
        let id = format!("{owner}/{name}");
        let Some(b) = st.repos.get(&id).and_then(|f| f.get(file)).cloned() else {
            return not_found(&mut conn, "EntryNotFound");
        };
        assert_eq!(commit, COMMIT, "files are fetched at the listed commit");
        let common = [("X-Repo-Commit", COMMIT.to_owned())];
        if is_lfs(file) {
            let location = format!("http://127.0.0.1:{cdn_port}/cdn/{}", sha256(&b));
            let mut h = common.to_vec();
            h.extend([
                ("Location", location),
                ("X-Linked-Etag", format!("\"{}\"", sha256(&b))),
                ("X-Linked-Size", b.len().to_string()),
            ]);
            return reply(&mut conn, "302 Found", &h, b"");
        }
        let mut h = common.to_vec();
        h.push(("ETag", format!("\"{}\"", git_sha1(&b))));
        return reply(&mut conn, "200 OK", &h, &b);
    }
    not_found(&mut conn, "RepoNotFound")
}

/// Every file under `dir`, by its path relative to it.
fn files_of(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// A tiny model's folder and its single-file checkpoint, and the hub's repositories made of
/// them.
fn model(dir: &Path) -> (PathBuf, PathBuf, Repos) {
    let (folder, file) = (dir.join("tiny"), dir.join("tiny-mix.safetensors"));
    ok(&bin()
        .args(["models", "synth", "--arch", "tiny-sd1", "--seed", "3"])
        .arg(&folder)
        .arg("--single-file")
        .arg(&file)
        .output()
        .unwrap());
    let mut diffusers = files_of(&folder);
    let unet = diffusers["unet/diffusion_pytorch_model.safetensors"].clone();
    // What real repositories carry beside the model, which a pull leaves on the hub.
    diffusers.insert("unet/diffusion_pytorch_model.bin".into(), b"pickle".repeat(100));
    diffusers.insert(
        "unet/diffusion_pytorch_model.fp16.safetensors".into(),
        unet[..unet.len() / 2].to_vec(),
    );
    diffusers.insert("tiny-pruned.ckpt".into(), b"pickle".repeat(50));
    diffusers.insert("tiny-pruned.safetensors".into(), std::fs::read(&file).unwrap());
    let single: BTreeMap<String, Vec<u8>> = [
        ("mix.safetensors".to_owned(), std::fs::read(&file).unwrap()),
        ("mix.ckpt".to_owned(), b"pickle".repeat(10)),
        ("README.md".to_owned(), b"# mix".to_vec()),
    ]
    .into();
    let repos = [
        ("org/tiny".to_owned(), diffusers.clone()),
        (
            "stable-diffusion-v1-5/stable-diffusion-v1-5".to_owned(),
            diffusers,
        ),
        ("someone/mix".to_owned(), single),
    ]
    .into();
    (folder, file, repos)
}

fn pull(hub: &FakeHub, cache: &Path) -> Command {
    let mut c = bin();
    c.args(["models", "pull"])
        .env("HF_ENDPOINT", &hub.hub)
        .env("HF_HUB_CACHE", cache)
        .env("HF_TOKEN", "hf_secret")
        .env_remove("HF_HUB_OFFLINE");
    c
}

fn err(o: &std::process::Output) -> String {
    assert!(!o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The blob files and the incomplete ones in a repository's cache folder.
fn blobs(cache: &Path, folder: &str) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(cache.join(folder).join("blobs")) else {
        return Default::default();
    };
    rd.flatten()
        .map(|e| e.path())
        .partition(|p| p.extension().is_none_or(|e| e != "incomplete"))
}

fn generate(model: &str, out: &Path, cache: &Path, seed: &str) {
    ok(&bin()
        .args([
            "generate", "a cat", "--steps", "2", "--seed", seed, "--size", "64x64", "--model", model,
        ])
        .arg("-o")
        .arg(out)
        .env("HF_HUB_CACHE", cache)
        // Offline: nothing may reach for the hub.
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .unwrap());
}

fn rgb(p: &Path) -> image::RgbImage {
    image::open(p).unwrap().to_rgb8()
}

/// A pull broken off mid-file (the process killed) leaves nothing usable and is resumed from
/// where it stopped; the model then loads offline and draws what its source folder draws; a
/// second pull downloads nothing; the token goes to the hub and never to the CDN.
#[test]
fn a_killed_pull_resumes_and_the_model_then_runs_offline() {
    let dir = tempfile::tempdir().unwrap();
    let (folder, _, repos) = model(dir.path());
    let unet = repos["org/tiny"]["unet/diffusion_pytorch_model.safetensors"].clone();
    let hub = FakeHub::start(repos);
    let cache = dir.path().join("hub");
    hub.with(|s| s.stall = Some(sha256(&unet)));

    let mut child = pull(&hub, &cache)
        .arg("org/tiny")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let began = Instant::now();
    // The stalled file's own partial blob (small files pass through theirs too, briefly).
    let partial = cache.join(format!("models--org--tiny/blobs/{}.incomplete", sha256(&unet)));
    loop {
        if std::fs::metadata(&partial).is_ok_and(|m| m.len() > 0) {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "the download never started"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the pull ended before the stall"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let have = std::fs::metadata(&partial).unwrap().len();
    assert!(have > 0 && have < unet.len() as u64, "{have}");
    // Nothing is published: no ref, so the id does not resolve.
    assert!(!cache.join("models--org--tiny/refs/main").exists());
    let o = bin()
        .args(["models", "info", "org/tiny"])
        .env("HF_HUB_CACHE", &cache)
        .output()
        .unwrap();
    assert!(err(&o).contains("nanoimg models pull org/tiny"), "{}", err(&o));

    hub.with(|s| s.stall = None);
    hub.seen();
    let o = pull(&hub, &cache).arg("org/tiny").output().unwrap();
    let out = ok(&o);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(out.contains(COMMIT) && out.contains("--model org/tiny"), "{out}");
    assert!(
        log.contains(&format!(
            "unet/diffusion_pytorch_model.safetensors: resumed from byte {have}"
        )),
        "{log}"
    );
    assert!(
        log.contains("left out unet/diffusion_pytorch_model.bin: a pickle"),
        "{log}"
    );
    let seen = hub.seen();
    let unet_gets: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.path == format!("/cdn/{}", sha256(&unet)))
        .collect();
    assert_eq!(unet_gets.len(), 1, "{seen:?}");
    assert_eq!(
        unet_gets[0].range.as_deref(),
        Some(format!("bytes={have}-").as_str())
    );
    // The token goes to the hub, never to the CDN the hub redirects to.
    for s in &seen {
        let to_cdn = s.port == hub.cdn_port;
        assert_eq!(s.auth.is_none(), to_cdn, "{s:?}");
        if !to_cdn {
            assert_eq!(s.auth.as_deref(), Some("Bearer hf_secret"));
        }
    }

    // Exactly the model's files, linked from the snapshot; no pickles, no second precision,
    // no single-file copy.
    let snapshot = cache.join("models--org--tiny/snapshots").join(COMMIT);
    let mut pulled: Vec<String> = files_of(&snapshot).into_keys().collect();
    let mut expected: Vec<String> = files_of(&folder).into_keys().collect();
    pulled.sort();
    expected.sort();
    assert_eq!(pulled, expected);
    assert!(std::fs::symlink_metadata(snapshot.join("unet/config.json"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(blobs(&cache, "models--org--tiny").1, Vec::<PathBuf>::new());
    assert_eq!(
        std::fs::read_to_string(cache.join("models--org--tiny/refs/main")).unwrap(),
        COMMIT
    );

    // Offline, by id (and by commit), it draws what its source folder draws.
    let (by_id, by_commit, by_path) = (
        dir.path().join("id.png"),
        dir.path().join("c.png"),
        dir.path().join("f.png"),
    );
    generate("org/tiny", &by_id, &cache, "5");
    generate(&format!("org/tiny@{COMMIT}"), &by_commit, &cache, "5");
    generate(folder.to_str().unwrap(), &by_path, &cache, "5");
    let other = dir.path().join("o.png");
    generate("org/tiny", &other, &cache, "6");
    // Only the invisible watermark (a few levels) tells the same drawing apart; another seed
    // moves pixels by tens of levels.
    assert!(mean_abs_diff(&rgb(&by_id), &rgb(&by_path)) < 5.0);
    assert!(mean_abs_diff(&rgb(&by_commit), &rgb(&by_path)) < 5.0);
    assert!(mean_abs_diff(&rgb(&other), &rgb(&by_path)) > 10.0);

    // Listed by its id (the companion pulled with configs only is not a model).
    let o = bin()
        .args(["models", "list"])
        .env("HF_HUB_CACHE", &cache)
        .output()
        .unwrap();
    assert!(ok(&o).lines().any(|l| l.starts_with("org/tiny ")), "{}", ok(&o));
    // Named by its id, with the repository's name, and served by id.
    let o = bin()
        .args(["models", "info", "org/tiny"])
        .env("HF_HUB_CACHE", &cache)
        .output()
        .unwrap();
    assert!(ok(&o).starts_with("org/tiny\n"), "{}", ok(&o));
    let home = dir.path().join("serve");
    let cache_env = cache.to_str().unwrap();
    let s = start(
        &["serve", "--hub-model", "org/tiny"],
        &home,
        &[("HF_HUB_CACHE", cache_env), ("HF_HUB_OFFLINE", "1")],
    );
    let key = s.key.clone().unwrap();
    let models = curl("GET", &format!("{}/v1/models", s.base), &key, None);
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "org/tiny"),
        "{models}"
    );
    let body = r#"{"model": "org/tiny", "prompt": "a cat", "response_format": "b64_json"}"#;
    let made = curl(
        "POST",
        &format!("{}/v1/images/generations", s.base),
        &key,
        Some(body),
    );
    assert!(
        made["data"][0]["b64_json"]
            .as_str()
            .is_some_and(|b| b.len() > 100),
        "{made}"
    );
    drop(s);

    // Pulled again: everything checked in place, nothing downloaded.
    let o = pull(&hub, &cache).arg("org/tiny").output().unwrap();
    ok(&o);
    assert!(hub.seen().iter().all(|s| !s.path.starts_with("/cdn/")));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already in the cache"));

    // Offline, a pull says why it cannot.
    let o = pull(&hub, &cache)
        .arg("org/tiny")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(err(&o).contains("HF_HUB_OFFLINE"), "{}", err(&o));
}

/// A file whose bytes are not the ones the hub lists is refused and nothing of it kept;
/// unknown repositories and revisions say so; a single-file repository gives its checkpoint,
/// which finds its companion pulled with `--configs-only`.
#[test]
fn tampered_files_are_refused_and_companions_pull_configs_only() {
    let dir = tempfile::tempdir().unwrap();
    let (folder, _, repos) = model(dir.path());
    let hub = FakeHub::start(repos);
    let cache = dir.path().join("hub");

    hub.with(|s| s.tamper = true);
    let e = err(&pull(&hub, &cache).arg("org/tiny").output().unwrap());
    assert!(e.contains("does not match the hub's listing"), "{e}");
    let (done, incomplete) = blobs(&cache, "models--org--tiny");
    assert!(incomplete.is_empty(), "{incomplete:?}");
    // Only the small files served straight from the hub got in; no LFS blob did.
    assert!(
        done.iter().all(|p| p.file_name().unwrap().len() == 40),
        "{done:?}"
    );
    assert!(!cache.join("models--org--tiny/refs/main").exists());
    hub.with(|s| s.tamper = false);

    let e = err(&pull(&hub, &cache).arg("org/nothing").output().unwrap());
    assert!(e.contains("the repository org/nothing not found"), "{e}");
    let e = err(&pull(&hub, &cache).arg("org/tiny@v9").output().unwrap());
    assert!(e.contains("the revision not found"), "{e}");
    let e = err(&pull(&hub, &cache).arg("../etc").output().unwrap());
    assert!(e.contains("not a hub model id"), "{e}");

    // The single-file repository: its checkpoint (not the pickle) ...
    let o = pull(&hub, &cache).arg("someone/mix").output().unwrap();
    ok(&o);
    let snapshot = cache.join("models--someone--mix/snapshots").join(COMMIT);
    let mut got: Vec<String> = files_of(&snapshot).into_keys().collect();
    got.sort();
    assert_eq!(got, ["README.md", "mix.safetensors"]);
    // ... which needs a companion: without one the error says how to pull it.
    let out = dir.path().join("mix.png");
    let o = bin()
        .args([
            "generate",
            "a cat",
            "--steps",
            "2",
            "--size",
            "64x64",
            "--model",
            "someone/mix",
            "-o",
        ])
        .arg(&out)
        .env("HF_HUB_CACHE", &cache)
        .output()
        .unwrap();
    let e = err(&o);
    assert!(
        e.contains("models pull stable-diffusion-v1-5/stable-diffusion-v1-5 --configs-only"),
        "{e}"
    );
    let o = pull(&hub, &cache)
        .args(["stable-diffusion-v1-5/stable-diffusion-v1-5", "--configs-only"])
        .output()
        .unwrap();
    ok(&o);
    let companion = cache
        .join("models--stable-diffusion-v1-5--stable-diffusion-v1-5/snapshots")
        .join(COMMIT);
    let files = files_of(&companion);
    assert!(files.contains_key("tokenizer/vocab.json") && files.contains_key("unet/config.json"));
    assert!(
        files.keys().all(|f| !f.ends_with(".safetensors")),
        "{:?}",
        files.keys()
    );
    let (by_id, by_path) = (dir.path().join("id.png"), dir.path().join("f.png"));
    generate("someone/mix", &by_id, &cache, "5");
    generate(folder.to_str().unwrap(), &by_path, &cache, "5");
    assert!(mean_abs_diff(&rgb(&by_id), &rgb(&by_path)) < 5.0);
}
