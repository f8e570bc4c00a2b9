//! Scale-out as processes: one `nanoimg serve --role api` and two `nanoimg worker`s sharing a
//! real PostgreSQL database and a real S3 bucket (both started on loopback by
//! `scripts/test.sh`). A worker is SIGKILLed while it runs a job: every job still ends
//! succeeded, the killed one on the other worker as its second attempt, none is finished twice,
//! and every image it reports is there. Progress reaches the API node's event stream from the
//! worker, and a request that waits for its images works through the API node.

use crate::server::{curl, start, Serve};
use nanoimg_store::{JobStatus, Store, StoreOptions};
use serde_json::Value;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Until `done` returns a value, or panics after `secs` with `what`.
fn wait_for<T>(secs: u64, what: &str, mut done: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = done() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The raw text of a response whose body ends when the server closes it (an event stream).
fn stream(url: &str, key: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut sock = std::net::TcpStream::connect(host).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        sock,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    sock.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn one_api_node_and_two_workers_survive_a_worker_killed_mid_job() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Some(database) = rt.block_on(nanoimg_store::testing::fresh_postgres_database()) else {
        return;
    };
    let Some((bucket, _)) = nanoimg_store::testing::s3_bucket() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let blobs = format!("{bucket}/{}", nanoimg_store::ids::new_id("scale"));
    let shared = [
        ("NANOIMG_DATABASE_URL", database.as_str()),
        ("NANOIMG_BLOB_URL", blobs.as_str()),
        ("NANOIMG_HEARTBEAT_SECS", "1"),
        ("NANOIMG_WORKER_TIMEOUT_SECS", "4"),
        ("NANOIMG_MAX_ATTEMPTS", "2"),
        ("NANOIMG_QUEUE_POLL_MS", "100"),
    ];
    let api = start(&["serve", "--role", "api"], home.path(), &shared);
    let key = api
        .key
        .clone()
        .expect("the API node's first start makes the admin key");
    let worker = |id: &str| -> Serve {
        let mut env = shared.to_vec();
        env.push(("NANOIMG_WORKER_ID", id));
        start(&["worker"], home.path(), &env)
    };
    let mut w1 = worker("w1");
    let w2 = worker("w2");
    let health = curl("GET", &format!("{}/healthz", w2.base), "", None);
    assert_eq!(health["status"], "ok", "{health}");

    // The store as the test's window on the queue (the same database, keys and bucket).
    let store = rt.block_on(async {
        let mut options = StoreOptions::in_data_dir(&home.path().join("data")).unwrap();
        options.database_url = Some(database.clone());
        options.blob_url = Some(blobs.clone());
        Store::open_in(&home.path().join("data"), options).await.unwrap()
    });

    let submit = || -> String {
        let j = curl(
            "POST",
            &format!("{}/v1/jobs", api.base),
            &key,
            Some(r#"{"prompt":"a cat face","steps":40,"n":2}"#),
        );
        j["id"].as_str().unwrap_or_else(|| panic!("{j}")).to_owned()
    };
    let ids: Vec<String> = (0..3).map(|_| submit()).collect();

    // Kill w1 while it runs one of them.
    let victim = wait_for(120, "w1 running a job", || {
        ids.iter().find_map(|id| {
            let (worker, _) = rt.block_on(store.system().job_claim(id)).unwrap();
            let status = rt.block_on(store.system().job_any_tenant(id)).unwrap().status;
            (worker.as_deref() == Some("w1") && status == JobStatus::Running).then(|| id.clone())
        })
    });
    w1.child.kill().unwrap();
    w1.child.wait().unwrap();

    // Progress from w2 reaches the API node's event stream.
    let watched = submit();
    let events = stream(&format!("{}/v1/jobs/{watched}/events", api.base), &key);
    assert!(events.contains("event: progress"), "{events}");
    assert!(events.contains("event: succeeded"), "{events}");

    let mut all = ids.clone();
    all.push(watched);
    let jobs: Vec<Value> = wait_for(300, "every job final", || {
        let jobs: Vec<Value> = all
            .iter()
            .map(|id| curl("GET", &format!("{}/v1/jobs/{id}", api.base), &key, None))
            .collect();
        jobs.iter()
            .all(|j| j["status"] != "queued" && j["status"] != "running")
            .then_some(jobs)
    });
    let mut images = Vec::new();
    for j in &jobs {
        assert_eq!(j["status"], "succeeded", "{j}");
        let result = j["result"]["images"].as_array().unwrap();
        assert_eq!(result.len(), 2, "{j}");
        images.extend(result.iter().map(|i| i["id"].as_str().unwrap().to_owned()));
    }
    let (worker, attempts) = rt.block_on(store.system().job_claim(&victim)).unwrap();
    assert_eq!((worker.as_deref(), attempts), (Some("w2"), 2), "{victim}");

    // Every reported image is stored and readable, and there is no other: nothing ran twice
    // to completion, and the killed attempt left no image.
    let listed = curl("GET", &format!("{}/v1/assets?limit=100", api.base), &key, None);
    let mut stored: Vec<String> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    stored.sort();
    images.sort();
    assert_eq!(stored, images);
    let tenant = rt.block_on(store.system().tenant("admin")).unwrap();
    for id in &images {
        let (_, bytes) = rt.block_on(store.scoped(&tenant.id).asset_bytes(id)).unwrap();
        assert!(image::load_from_memory(&bytes).is_ok(), "{id}");
    }

    // A request that waits for its images works through the API node (w2 runs it).
    let v = curl(
        "POST",
        &format!("{}/v1/images/generations", api.base),
        &key,
        Some(r#"{"prompt":"a dog face","steps":4}"#),
    );
    assert_eq!(v["data"].as_array().map(Vec::len), Some(1), "{v}");
    drop(w2);
    drop(api);
    rt.block_on(store.close());
}
