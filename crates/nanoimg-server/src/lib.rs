//! NanoImg's HTTP API server.
//!
//! `POST /v1/images/generations|edits|variations` speak the OpenAI Images API so the official
//! SDKs work unchanged; `/v1/jobs` (async jobs with SSE progress), `/v1/assets`, `/v1/models` and
//! `/v1/admin/*` are NanoImg's own. Every request gets an id (`x-request-id`), a JSON log line and
//! metrics; every authenticated one passes the key check, the tenant's rate limit and a scope
//! check; every object lookup is tenant-scoped in the store.
//!
//! Handlers are thin: the route table ([`ROUTES`]) authorises, they parse, and hand over to
//! [`jobs::Jobs`] or the store.

pub mod admission;
pub mod audit;
pub mod auth;
pub mod config;
pub mod cost;
pub mod error;
pub mod jobs;
pub mod limits;
pub mod metrics;
pub mod models;
pub mod moderation;
pub mod openapi;
pub mod params;
pub mod planner;
mod routes;
pub mod signing;
pub mod spec;
pub mod state;
mod tenancy;
mod uploads;

pub use config::Config;
pub use models::ModelCatalog;
pub use routes::studio::FILES as STUDIO_FILES;
pub use routes::{Access, Route, ROUTES};

use crate::auth::{RateHeaders, RequestId};
use crate::jobs::{JobSettings, Jobs};
use crate::limits::RateLimiter;
use crate::metrics::Metrics;
use crate::state::{AppState, Shared};
use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use nanoimg_engine::codec::DecodeLimits;
use nanoimg_store::{AuditEvent, NewKey, Outcome, Scope, Store};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The name of the tenant created on first start.
pub const ADMIN_TENANT: &str = "admin";

/// What the first start created: the admin key, to be shown once.
pub struct FirstStart {
    pub admin_key: String,
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    state: AppState,
    shutdown: tokio::sync::watch::Sender<bool>,
    serve: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Opens the store (creating the admin tenant and key on first start), starts the workers and
/// begins serving on `config.bind` (port 0 picks a free port; see [`Server::addr`]).
pub async fn start(
    config: Config,
    catalog: ModelCatalog,
) -> Result<(Server, Option<FirstStart>), StartError> {
    let options = config.store_options().map_err(|e| StartError(e.0))?;
    let blobs = options.blob_url.clone();
    let store = Store::open_in(&config.data_dir, options).await?;
    // The database URL may hold a password: only its kind is logged.
    tracing::info!(
        database = ?store.backend(),
        blobs = blobs.as_deref().unwrap_or("data directory"),
        "store open"
    );
    // Workers make nothing: the API node's first start does.
    let first = match config.role {
        config::Role::Worker => None,
        _ => bootstrap(&store).await?,
    };
    let mut queue = config.queue.clone();
    if config.role == config::Role::Worker && queue.worker_id.is_none() {
        queue.worker_id = Some(nanoimg_store::ids::new_id("wkr"));
    }
    let metrics = Arc::new(Metrics::default());
    let catalog = Arc::new(catalog);
    let safety = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || moderation::load(&config))
            .await
            .map_err(|e| StartError(e.to_string()))??
    };
    let audit = audit::Auditor::start(
        store.clone(),
        metrics.clone(),
        Duration::from_secs(config.audit.checkpoint_interval_secs.max(1)),
    );
    let jobs = Jobs::start(
        store.clone(),
        catalog.clone(),
        metrics.clone(),
        JobSettings {
            workers: config.workers,
            queue_capacity: config.queue_capacity,
            limits: config.limits.clone(),
            upload_limits: upload_limits(&config),
            image_check: safety.image.clone(),
            audit: audit.clone(),
            sealer: safety.sealer(),
            role: config.role,
            queue,
            job_timeout: std::time::Duration::from_secs(config.job_timeout_secs),
        },
    )
    .await
    .map(Arc::new)?;
    let signer = signing::UrlSigner::load_or_create(&config.data_dir.join("secrets/url-signing.key"))?;
    let planner = planner::Planner::new(&config.planner)
        .map_err(|e| StartError(format!("the LLM planner's HTTP client: {e}")))?;
    let state = AppState(Arc::new(Shared {
        planner,
        safety,
        request_limiter: RateLimiter::new(),
        image_limiter: RateLimiter::new(),
        compute_limiter: RateLimiter::new(),
        failure_audit_limiter: RateLimiter::new(),
        audit,
        config,
        store,
        jobs,
        catalog,
        metrics,
        signer,
    }));
    if state.config.role != config::Role::Worker {
        housekeeping(state.clone());
    }
    let listener = tokio::net::TcpListener::bind(state.config.bind).await?;
    let addr = listener.local_addr()?;
    let app = router(state.clone());
    let (tx, rx) = tokio::sync::watch::channel(false);
    let guards = ConnectionGuards {
        max_connections: state.config.max_connections,
        header_timeout: Duration::from_secs(state.config.header_timeout_secs),
    };
    let serve = tokio::spawn(serve_guarded(listener, app, guards, rx));
    tracing::info!(%addr, "listening");
    Ok((
        Server {
            addr,
            state,
            shutdown: tx,
            serve,
        },
        first,
    ))
}

impl Server {
    /// This process's name in the shared queue, when it is a worker.
    pub fn worker_id(&self) -> Option<&str> {
        self.state.jobs.worker_id()
    }

    /// Stops accepting connections, lets running jobs finish within the grace period (then
    /// cancels them, recording why), and waits for the last responses.
    pub async fn shutdown(self) {
        let grace = Duration::from_secs(self.state.config.shutdown_grace_secs);
        tracing::info!(grace_secs = grace.as_secs(), "shutting down");
        self.state.jobs.shutdown(grace).await;
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.serve).await;
        self.state.audit.checkpoint().await;
        self.state.store.close().await;
    }
}

/// Applies every tenant's retention setting now and then every hour, auditing what each pass
/// deleted.
fn housekeeping(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match state
                .store
                .system()
                .apply_retention(nanoimg_store::ids::now_ms())
                .await
            {
                Ok(done) => {
                    for r in done {
                        tracing::info!(tenant = %r.tenant_id, jobs = r.jobs, sessions = r.sessions, assets = r.assets, "retention applied");
                        state
                            .audit
                            .record(nanoimg_store::AuditEvent {
                                request_id: None,
                                tenant_id: Some(r.tenant_id.clone()),
                                key_id: None,
                                action: "retention.apply",
                                target: Some(r.tenant_id.clone()),
                                outcome: nanoimg_store::Outcome::Success,
                                detail: serde_json::json!({"jobs": r.jobs, "sessions": r.sessions, "assets": r.assets}),
                            })
                            .await;
                    }
                }
                Err(e) => tracing::error!(error = %e, "retention pass failed"),
            }
        }
    });
}

/// Limits on uploaded images.
pub fn upload_limits(config: &Config) -> DecodeLimits {
    DecodeLimits {
        max_bytes: config.max_body_bytes,
        max_side: config.max_upload_side,
        max_pixels: config.max_upload_pixels,
    }
}

/// Creates the admin tenant and its first key if the store has no tenants.
async fn bootstrap(store: &Store) -> nanoimg_store::Result<Option<FirstStart>> {
    if !store.system().tenants().await?.is_empty() {
        return Ok(None);
    }
    let tenant = store.system().create_tenant(ADMIN_TENANT, true).await?;
    let mut scopes = Scope::defaults();
    scopes.extend([Scope::Account, Scope::Admin]);
    let (key, secret) = store
        .system()
        .create_key(
            &tenant.id,
            &NewKey {
                name: "first admin key".into(),
                scopes,
                expires_at: None,
            },
        )
        .await?;
    store
        .system()
        .audit(AuditEvent {
            request_id: None,
            tenant_id: Some(tenant.id.clone()),
            key_id: Some(key.id.clone()),
            action: "server.bootstrap",
            target: Some(tenant.id),
            outcome: Outcome::Success,
            detail: serde_json::json!({"key_prefix": key.prefix}),
        })
        .await?;
    Ok(Some(FirstStart {
        admin_key: secret.expose().to_owned(),
    }))
}

/// The whole API.
pub fn router(state: AppState) -> axum::Router {
    use tower_http::limit::RequestBodyLimitLayer;
    let body_limit = state.config.max_body_bytes;
    let timeout = Duration::from_secs(state.config.request_timeout_secs);
    routes::router(&state, state.config.role == config::Role::Worker)
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            timeout,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            use axum::response::IntoResponse;
            error::ApiError::internal("a handler panicked").into_response()
        }))
        .with_state(state)
}

/// Where the auth extractor leaves the key's rate state for [`observe`] to add as headers.
#[derive(Clone, Default)]
pub(crate) struct RateSlot(pub Arc<Mutex<Option<RateHeaders>>>);

/// Request ids, the log line, metrics, security and rate headers, for every request.
/// Bodies up to this size (by `Content-Length`) are read before the handler runs.
const SMALL_BODY: usize = 64 * 1024;

async fn observe(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    // The request's id is always ours, so no client can choose (or reuse) the id that logs and
    // audit events carry. A client's own id is kept beside it, when it is plain: letters, digits
    // and `._:-`, at most 64 of them.
    let id = nanoimg_store::ids::new_id("req");
    let client_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
        })
        .map(str::to_owned);
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let has_body = req.headers().contains_key(axum::http::header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .is_some_and(|v| v != "0");
    // Notes when the handler has read the body to its end.
    let body_read = Arc::new(std::sync::atomic::AtomicBool::new(!has_body));
    // A small body is read in full first: a handler that refuses without reading it then
    // leaves a clean connection, and the client (still sending) gets the answer rather than a
    // broken pipe.
    let small = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .filter(|n| (1..=SMALL_BODY).contains(n));
    if let Some(len) = small {
        let (parts, body) = req.into_parts();
        match axum::body::to_bytes(body, len).await {
            Ok(bytes) => {
                req = Request::from_parts(parts, axum::body::Body::from(bytes));
                body_read.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => {
                use axum::response::IntoResponse;
                let e = error::ApiError::bad_request(
                    "invalid_body",
                    format!("the request body could not be read: {e}"),
                );
                let mut res = e.into_response();
                res.headers_mut()
                    .insert("connection", HeaderValue::from_static("close"));
                return res;
            }
        }
    } else if has_body {
        use futures_util::StreamExt;
        let flag = body_read.clone();
        let (parts, body) = req.into_parts();
        let end = futures_util::stream::once(async move {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        })
        .filter_map(|()| async { None::<Result<axum::body::Bytes, axum::Error>> });
        let body = axum::body::Body::from_stream(body.into_data_stream().chain(end));
        req = Request::from_parts(parts, body);
    }
    let slot = RateSlot::default();
    req.extensions_mut().insert(RequestId(id.clone()));
    req.extensions_mut().insert(slot.clone());
    let mut res = error::framework_rejection(next.run(req).await).await;
    let status = res.status().as_u16();
    let secs = started.elapsed().as_secs_f64();
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&id) {
        h.insert("x-request-id", v);
    }
    if let Some(v) = client_id.as_deref().and_then(|c| HeaderValue::from_str(c).ok()) {
        h.insert("x-client-request-id", v);
    }
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    if !body_read.load(std::sync::atomic::Ordering::Relaxed) {
        // Answered before the body was read (a refusal, or a route that takes none): the
        // connection cannot carry another request, so say so rather than let the client reuse
        // it and fail.
        h.insert("connection", HeaderValue::from_static("close"));
    }
    if let Some(r) = *slot.0.lock().expect("rate slot") {
        if !h.contains_key("x-ratelimit-limit-requests") {
            h.insert("x-ratelimit-limit-requests", r.limit.into());
            h.insert("x-ratelimit-remaining-requests", r.remaining.into());
            if let Ok(v) = HeaderValue::from_str(&format!("{:.0}s", r.reset.ceil())) {
                h.insert("x-ratelimit-reset-requests", v);
            }
        }
    }
    state
        .metrics
        .requests
        .get_or_create(&vec![
            ("method", method.to_string()),
            ("route", route.clone()),
            ("status", status.to_string()),
        ])
        .inc();
    state
        .metrics
        .latency
        .get_or_create(&vec![("route", route.clone())])
        .observe(secs);
    let client_request_id = client_id.as_deref().unwrap_or("");
    tracing::info!(request_id = %id, client_request_id, %method, route = %route, status, ms = secs * 1000.0, "request");
    res
}

/// What a connection may hold of the server.
#[derive(Debug, Clone, Copy)]
struct ConnectionGuards {
    /// Connections served at once; more wait in the kernel's backlog.
    max_connections: usize,
    /// Time a client has to send a request's headers, on a new connection and between requests
    /// on a kept-alive one.
    header_timeout: Duration,
}

/// Serves `app` on `listener` until `stop` turns true. A client that trickles its headers (or
/// sends none) is cut off after `header_timeout`, and at most `max_connections` are open at
/// once, so slow clients cannot hold the server. On stop no connection is accepted, and open
/// ones finish the request in hand.
async fn serve_guarded(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    guards: ConnectionGuards,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(guards.header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(guards.max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = stopped(&mut stop) => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait, then take connections again.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = http
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    graceful.shutdown().await;
    Ok(())
}

/// Returns once `stop` says true (or its sender is gone).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Anything that stops the server from starting, with its message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

impl From<nanoimg_store::StoreError> for StartError {
    fn from(e: nanoimg_store::StoreError) -> Self {
        StartError(e.to_string())
    }
}

impl From<std::io::Error> for StartError {
    fn from(e: std::io::Error) -> Self {
        StartError(e.to_string())
    }
}
