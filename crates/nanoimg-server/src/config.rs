//! Server settings: built-in defaults, then a TOML file, then `NANOIMG_*` environment variables,
//! then command-line flags (applied by the CLI). Every option is listed in `docs/config.md`.

use nanoimg_core::Limits;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything `nanoimg serve` can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// Where the SQLite file, the blobs and the secrets live.
    pub data_dir: PathBuf,
    /// The metadata database when it is not the SQLite file in `data_dir`: `postgres://…`
    /// (or `sqlite://PATH`). May hold a password, so it is never logged.
    pub database_url: Option<Secret>,
    /// Where image bytes go when not `<data_dir>/blobs`: `s3://BUCKET[/PREFIX]`, with the
    /// endpoint and credentials in the usual `AWS_*` environment variables. Blobs are encrypted
    /// before they leave the process.
    pub blob_url: Option<String>,
    /// Model used when a request names none (a name from the model catalog).
    pub default_model: Option<String>,
    /// Generation workers. Each runs one job at a time; on a CPU one worker already uses every
    /// core, so more only helps on machines with several GPUs or many cores.
    pub workers: usize,
    /// Models kept loaded at once (least recently used is dropped).
    pub max_loaded_models: usize,
    /// MiB of character reference banks each loaded model keeps between requests (a 20-step
    /// SD 1.5 bank at 512² is about 0.9 GiB; see docs/characters.md).
    pub reference_cache_mib: usize,
    /// Jobs waiting in the global queue before new ones get 503.
    pub queue_capacity: usize,
    /// Largest request body in bytes (uploads included).
    pub max_body_bytes: usize,
    /// Largest uploaded image, in pixels a side and in all.
    pub max_upload_side: u32,
    pub max_upload_pixels: u64,
    /// Seconds a request may take before it is answered 504 (synchronous generation included).
    pub request_timeout_secs: u64,
    /// Seconds a signed `url` response link stays valid.
    pub url_ttl_secs: u64,
    /// The address clients reach this server at (`https://images.example.com`), for signed
    /// links behind a TLS proxy; without it, links are `http://` and the request's `Host`.
    pub public_url: Option<String>,
    /// Seconds running jobs get to finish on shutdown before they are cancelled.
    pub shutdown_grace_secs: u64,
    /// Seconds one job may run; past it the job is stopped and fails with `job_timeout`.
    pub job_timeout_secs: u64,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers before its connection is closed.
    pub header_timeout_secs: u64,
    /// Default per-key and per-tenant rates.
    pub rate: RateConfig,
    /// Caps on one generation request.
    pub limits: Limits,
    /// Log format: `json` (one object a line) or `text`.
    pub log_format: String,
    /// The safety layers.
    pub safety: SafetyConfig,
    /// C2PA signing of outputs.
    pub provenance: ProvenanceConfig,
    /// The optional LLM planner for edit instructions.
    pub planner: PlannerConfig,
    /// The audit log's signed checkpoints.
    pub audit: AuditConfig,
    /// Encryption at rest.
    pub encryption: EncryptionConfig,
    /// What this process does: `all` (serve and run jobs), `api` (serve; separate workers run
    /// the jobs) or `worker` (run jobs from the shared queue; set by `nanoimg worker`).
    pub role: Role,
    /// The shared queue between API and worker processes.
    pub queue: QueueConfig,
}

/// What a process does with jobs (docs/deploy.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// One process serves the API and runs jobs on its own workers (the default).
    #[default]
    All,
    /// Serves the API; jobs go to the shared queue in the database, for worker processes.
    Api,
    /// Runs jobs from the shared queue; serves no API.
    Worker,
}

/// Timing of the shared queue (roles `api` and `worker`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Seconds between a worker's heartbeats (and between reaper passes).
    pub heartbeat_secs: u64,
    /// Seconds without a heartbeat after which a worker is presumed dead and its jobs are
    /// handed on (or failed, once they have had `max_attempts`).
    pub worker_timeout_secs: u64,
    /// Times a job is started before a lost worker makes it fail instead of retrying.
    pub max_attempts: u32,
    /// Milliseconds between an API node's reads of a job it is streaming or waiting for.
    pub poll_ms: u64,
    /// This worker's name in the queue [default: `wkr_` and random characters].
    pub worker_id: Option<String>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            heartbeat_secs: 2,
            worker_timeout_secs: 30,
            max_attempts: 2,
            poll_ms: 250,
            worker_id: None,
        }
    }
}

/// Encryption at rest: the master key that wraps every tenant's data key. Set one of
/// `master_key` (best from the environment, `NANOIMG_MASTER_KEY`) or `master_key_file`; with
/// neither, a key is made on first start in `<data_dir>/secrets/master.key`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncryptionConfig {
    /// The key itself: 64 hex digits, or 32 bytes in base64. Never logged.
    pub master_key: Option<Secret>,
    /// A file holding the key (same forms).
    pub master_key_file: Option<PathBuf>,
    /// The master key before a rotation (a file): tenant keys it wrapped are re-wrapped under
    /// the new one at start; remove it afterwards.
    pub previous_master_key_file: Option<PathBuf>,
}

/// The audit log's tamper evidence: where the checkpoint signing key and the witness file are,
/// and how often the chain's head is signed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Ed25519 private key, PKCS#8 PEM; made on first start when missing [default:
    /// `<data_dir>/audit/signing-key.pem`].
    pub signing_key: Option<PathBuf>,
    /// File every checkpoint is appended to [default: `<data_dir>/audit/checkpoints.jsonl`];
    /// put it on another volume to survive someone who can rewrite the data directory.
    pub witness: Option<PathBuf>,
    /// Sign the head after this many events.
    pub checkpoint_every: u32,
    /// ... and at least this often (seconds) while there are new events, and at shutdown.
    pub checkpoint_interval_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            signing_key: None,
            witness: None,
            checkpoint_every: nanoimg_store::audit::checkpoint::DEFAULT_CHECKPOINT_EVERY,
            checkpoint_interval_secs: 60,
        }
    }
}

/// The optional LLM planner: any OpenAI-compatible chat-completions endpoint with tool calling.
/// Off unless `llm_url` is set. Its plans are parsed and validated like any other; anything
/// else falls back to the built-in planner, which also reads every instruction first (its
/// refusals stand, and the LLM never sees a refused instruction).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlannerConfig {
    /// The API's base URL, such as `https://api.openai.com/v1` or `http://127.0.0.1:8000/v1`.
    pub llm_url: Option<String>,
    /// The model to ask.
    pub llm_model: String,
    /// Sent as a bearer token; never logged.
    pub llm_api_key: Option<Secret>,
    /// Seconds to wait for the endpoint before falling back.
    pub llm_timeout_secs: u64,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        Self {
            llm_url: None,
            llm_model: "gpt-4o-mini".into(),
            llm_api_key: None,
            llm_timeout_secs: 20,
        }
    }
}

/// A secret setting: kept as given, shown as `***` in logs and debug output.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Where the C2PA signing credentials come from. Without `cert_chain` and `private_key`, a local
/// CA is made in `dir` on first start; its manifests are trusted by this server's verifier only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProvenanceConfig {
    /// Folder of the local CA [default: `$NANOIMG_HOME/provenance` from the CLI, else
    /// `<data_dir>/provenance`].
    pub dir: Option<PathBuf>,
    /// The signing certificate chain, PEM, leaf first (ES256, C2PA certificate profile).
    pub cert_chain: Option<PathBuf>,
    /// The leaf's private key, PKCS#8 PEM.
    pub private_key: Option<PathBuf>,
    /// More root certificates (PEM bundle) to trust when verifying manifests.
    pub trust_anchors: Option<PathBuf>,
}

/// The safety layers: where their models are and how strict they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SafetyConfig {
    /// Folder with the safety models, as `nanoimg models fetch safety` installs them [default:
    /// `$NANOIMG_HOME/safety` from the CLI, else `<data_dir>/safety`].
    pub models_dir: Option<PathBuf>,
    /// Refuse to start while a model-based layer is off (its model is not installed). On by
    /// default: safety fails closed, and an operator who wants the word lists only says so.
    pub require_all_layers: bool,
    /// open_nsfw score (0–1) at or above which an output or upload is refused.
    pub nsfw_threshold: f32,
    /// Refuse prompts naming a listed copyrighted character.
    pub block_characters: bool,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        Self {
            models_dir: None,
            require_all_layers: true,
            nsfw_threshold: nanoimg_safety::nsfw::DEFAULT_THRESHOLD,
            block_characters: true,
        }
    }
}

impl Config {
    /// Where the local signing CA lives.
    pub fn provenance_dir(&self) -> PathBuf {
        self.provenance
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("provenance"))
    }

    /// The store's audit settings: the configured paths, else the data directory's.
    pub fn audit_options(&self) -> nanoimg_store::AuditOptions {
        let default = nanoimg_store::AuditOptions::in_data_dir(&self.data_dir);
        nanoimg_store::AuditOptions {
            signing_key: self.audit.signing_key.clone().unwrap_or(default.signing_key),
            witness: self.audit.witness.clone().or(default.witness),
            checkpoint_every: self.audit.checkpoint_every.max(1),
        }
    }

    /// Everything the store needs to open: the audit settings and the master keys.
    pub fn store_options(&self) -> Result<nanoimg_store::StoreOptions, ConfigError> {
        use nanoimg_store::MasterKey;
        let bad = |e: nanoimg_store::StoreError| ConfigError(e.to_string());
        let read = |path: &std::path::Path| -> Result<MasterKey, ConfigError> {
            let text =
                std::fs::read_to_string(path).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
            MasterKey::parse(&text, &path.display().to_string()).map_err(bad)
        };
        let master_key = match (&self.encryption.master_key, &self.encryption.master_key_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError(
                    "set encryption.master_key or encryption.master_key_file, not both".into(),
                ))
            }
            (Some(k), None) => MasterKey::parse(&k.0, "encryption.master_key").map_err(bad)?,
            (None, Some(f)) => read(f)?,
            (None, None) => {
                MasterKey::load_or_create(&self.data_dir.join("secrets").join("master.key")).map_err(bad)?
            }
        };
        let previous_master_key = self
            .encryption
            .previous_master_key_file
            .as_deref()
            .map(read)
            .transpose()?;
        Ok(nanoimg_store::StoreOptions {
            database_url: self.database_url.as_ref().map(|u| u.0.clone()),
            blob_url: self.blob_url.clone(),
            audit: self.audit_options(),
            master_key,
            previous_master_key,
        })
    }

    /// Where the safety models are looked for.
    pub fn safety_models_dir(&self) -> PathBuf {
        self.safety
            .models_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("safety"))
    }
}

/// Per-key and per-tenant rates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateConfig {
    /// Authenticated requests a tenant's keys may make per minute, together.
    pub requests_per_minute: u32,
    /// Images a tenant's keys may ask for per minute, together (`n` counts).
    pub images_per_minute: u32,
    /// Jobs a tenant may have queued or running at once.
    pub concurrent_jobs_per_tenant: usize,
    /// Live keys a tenant may hold when it makes its own (`POST /v1/me/keys`); the operator's
    /// `keys create` is not counted against it.
    pub keys_per_tenant: u32,
    /// Compute a tenant's jobs may take per minute, in megapixel-steps (`crate::cost`).
    pub megapixel_steps_per_minute: u32,
    /// The most one job may cost, in megapixel-steps; a request over it is refused before any
    /// work.
    pub max_job_megapixel_steps: u32,
    /// Bytes of images a tenant may keep (outputs, uploads, references); at it, new jobs and
    /// uploads are refused until images are deleted or expire.
    pub max_stored_bytes_per_tenant: u64,
}

impl Default for RateConfig {
    fn default() -> Self {
        Self {
            requests_per_minute: 600,
            images_per_minute: 60,
            concurrent_jobs_per_tenant: 4,
            keys_per_tenant: 20,
            // Four guided 1024² images at 30 steps cost 252; a 512² image at 30 steps, 16.
            megapixel_steps_per_minute: 600,
            max_job_megapixel_steps: 300,
            max_stored_bytes_per_tenant: 10 << 30,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".parse().expect("valid address"),
            data_dir: PathBuf::from("nanoimg-data"),
            database_url: None,
            blob_url: None,
            default_model: None,
            workers: 1,
            max_loaded_models: 2,
            reference_cache_mib: 1024,
            queue_capacity: 64,
            max_body_bytes: 32 * 1024 * 1024,
            max_upload_side: 4096,
            max_upload_pixels: 4096 * 4096,
            request_timeout_secs: 600,
            url_ttl_secs: 3600,
            public_url: None,
            shutdown_grace_secs: 30,
            job_timeout_secs: 600,
            max_connections: 1024,
            header_timeout_secs: 10,
            rate: RateConfig::default(),
            limits: Limits {
                max_side: 1536,
                max_pixels: 1536 * 1536,
                max_steps: 100,
                max_images: 4,
                ..Limits::default()
            },
            log_format: "json".into(),
            safety: SafetyConfig::default(),
            provenance: ProvenanceConfig::default(),
            planner: PlannerConfig::default(),
            audit: AuditConfig::default(),
            encryption: EncryptionConfig::default(),
            role: Role::All,
            queue: QueueConfig::default(),
        }
    }
}

/// A setting that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The environment variables read, with the setting each one sets.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("NANOIMG_BIND", "bind"),
    ("NANOIMG_DATA_DIR", "data_dir"),
    ("NANOIMG_DATABASE_URL", "database_url"),
    ("NANOIMG_BLOB_URL", "blob_url"),
    ("NANOIMG_DEFAULT_MODEL", "default_model"),
    ("NANOIMG_WORKERS", "workers"),
    ("NANOIMG_MAX_LOADED_MODELS", "max_loaded_models"),
    ("NANOIMG_REFERENCE_CACHE_MIB", "reference_cache_mib"),
    ("NANOIMG_QUEUE_CAPACITY", "queue_capacity"),
    ("NANOIMG_MAX_BODY_BYTES", "max_body_bytes"),
    ("NANOIMG_MAX_UPLOAD_SIDE", "max_upload_side"),
    ("NANOIMG_MAX_UPLOAD_PIXELS", "max_upload_pixels"),
    ("NANOIMG_REQUEST_TIMEOUT_SECS", "request_timeout_secs"),
    ("NANOIMG_URL_TTL_SECS", "url_ttl_secs"),
    ("NANOIMG_PUBLIC_URL", "public_url"),
    ("NANOIMG_SHUTDOWN_GRACE_SECS", "shutdown_grace_secs"),
    ("NANOIMG_JOB_TIMEOUT_SECS", "job_timeout_secs"),
    ("NANOIMG_MAX_CONNECTIONS", "max_connections"),
    ("NANOIMG_HEADER_TIMEOUT_SECS", "header_timeout_secs"),
    ("NANOIMG_REQUESTS_PER_MINUTE", "rate.requests_per_minute"),
    ("NANOIMG_IMAGES_PER_MINUTE", "rate.images_per_minute"),
    (
        "NANOIMG_CONCURRENT_JOBS_PER_TENANT",
        "rate.concurrent_jobs_per_tenant",
    ),
    ("NANOIMG_KEYS_PER_TENANT", "rate.keys_per_tenant"),
    (
        "NANOIMG_MEGAPIXEL_STEPS_PER_MINUTE",
        "rate.megapixel_steps_per_minute",
    ),
    ("NANOIMG_MAX_JOB_MEGAPIXEL_STEPS", "rate.max_job_megapixel_steps"),
    (
        "NANOIMG_MAX_STORED_BYTES_PER_TENANT",
        "rate.max_stored_bytes_per_tenant",
    ),
    ("NANOIMG_MAX_SIDE", "limits.max_side"),
    ("NANOIMG_MAX_PIXELS", "limits.max_pixels"),
    ("NANOIMG_MAX_STEPS", "limits.max_steps"),
    ("NANOIMG_MAX_IMAGES", "limits.max_images"),
    ("NANOIMG_LOG_FORMAT", "log_format"),
    ("NANOIMG_SAFETY_MODELS_DIR", "safety.models_dir"),
    ("NANOIMG_SAFETY_REQUIRE_ALL_LAYERS", "safety.require_all_layers"),
    ("NANOIMG_NSFW_THRESHOLD", "safety.nsfw_threshold"),
    ("NANOIMG_BLOCK_CHARACTERS", "safety.block_characters"),
    ("NANOIMG_PROVENANCE_DIR", "provenance.dir"),
    ("NANOIMG_PROVENANCE_CERT_CHAIN", "provenance.cert_chain"),
    ("NANOIMG_PROVENANCE_PRIVATE_KEY", "provenance.private_key"),
    ("NANOIMG_PROVENANCE_TRUST_ANCHORS", "provenance.trust_anchors"),
    ("NANOIMG_PLANNER_LLM_URL", "planner.llm_url"),
    ("NANOIMG_PLANNER_LLM_MODEL", "planner.llm_model"),
    ("NANOIMG_PLANNER_LLM_API_KEY", "planner.llm_api_key"),
    ("NANOIMG_PLANNER_LLM_TIMEOUT_SECS", "planner.llm_timeout_secs"),
    ("NANOIMG_MASTER_KEY", "encryption.master_key"),
    ("NANOIMG_MASTER_KEY_FILE", "encryption.master_key_file"),
    (
        "NANOIMG_PREVIOUS_MASTER_KEY_FILE",
        "encryption.previous_master_key_file",
    ),
    ("NANOIMG_ROLE", "role"),
    ("NANOIMG_HEARTBEAT_SECS", "queue.heartbeat_secs"),
    ("NANOIMG_WORKER_TIMEOUT_SECS", "queue.worker_timeout_secs"),
    ("NANOIMG_MAX_ATTEMPTS", "queue.max_attempts"),
    ("NANOIMG_QUEUE_POLL_MS", "queue.poll_ms"),
    ("NANOIMG_WORKER_ID", "queue.worker_id"),
    ("NANOIMG_AUDIT_SIGNING_KEY", "audit.signing_key"),
    ("NANOIMG_AUDIT_WITNESS", "audit.witness"),
    ("NANOIMG_AUDIT_CHECKPOINT_EVERY", "audit.checkpoint_every"),
    (
        "NANOIMG_AUDIT_CHECKPOINT_INTERVAL_SECS",
        "audit.checkpoint_interval_secs",
    ),
];

impl Config {
    /// Defaults, overlaid with the TOML file (if any), then the environment.
    pub fn load(
        file: Option<&std::path::Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut value =
            toml::Value::try_from(Config::default()).map_err(|e| ConfigError(format!("defaults: {e}")))?;
        if let Some(path) = file {
            let text =
                std::fs::read_to_string(path).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
            let overlay: toml::Value =
                toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
            merge(&mut value, overlay);
        }
        for (var, key) in ENV_VARS {
            if let Some(raw) = env(var) {
                set_path(&mut value, key, &raw).map_err(|e| ConfigError(format!("{var}={raw:?}: {e}")))?;
            }
        }
        let cfg: Config = value
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError(format!("configuration: {e}")))?;
        cfg.check()?;
        Ok(cfg)
    }

    /// Rejects settings that cannot work.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError(m.to_owned()));
        if self.job_timeout_secs == 0 {
            return bad("job_timeout_secs must be at least 1");
        }
        if let Some(url) = &self.public_url {
            let rest = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"))
                .unwrap_or_default();
            let host = rest.split('/').next().unwrap_or_default();
            if host.is_empty() || !url.bytes().all(|b| b.is_ascii_graphic()) || url.contains(['?', '#']) {
                return bad("public_url must be an http:// or https:// address with a host, such as https://images.example.com");
            }
        }
        if self.header_timeout_secs == 0 || self.max_connections == 0 {
            return bad("header_timeout_secs and max_connections must be at least 1");
        }
        if self.workers == 0 {
            return bad("workers must be at least 1");
        }
        if self.queue_capacity == 0 {
            return bad("queue_capacity must be at least 1");
        }
        if self.max_loaded_models == 0 {
            return bad("max_loaded_models must be at least 1");
        }
        if self.rate.concurrent_jobs_per_tenant == 0
            || self.rate.requests_per_minute == 0
            || self.rate.images_per_minute == 0
        {
            return bad("rate limits must be at least 1");
        }
        if !matches!(self.log_format.as_str(), "json" | "text") {
            return bad("log_format must be json or text");
        }
        if self.max_body_bytes < 1024 {
            return bad("max_body_bytes must be at least 1024");
        }
        let t = self.safety.nsfw_threshold;
        if !(t > 0.0 && t <= 1.0) {
            return bad("safety.nsfw_threshold must be above 0 and at most 1");
        }
        if let Some(u) = &self.planner.llm_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return bad("planner.llm_url must be an http:// or https:// URL");
            }
        }
        if self.planner.llm_timeout_secs == 0 {
            return bad("planner.llm_timeout_secs must be at least 1");
        }
        if self.provenance.cert_chain.is_some() != self.provenance.private_key.is_some() {
            return bad("provenance.cert_chain and provenance.private_key go together: set both or neither");
        }
        Ok(())
    }
}

/// Overlays `b` onto `a`, table by table.
fn merge(a: &mut toml::Value, b: toml::Value) {
    match (a, b) {
        (toml::Value::Table(a), toml::Value::Table(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (a, b) => *a = b,
    }
}

/// Why an environment string cannot set its key.
#[derive(Debug, thiserror::Error)]
enum EnvValueError {
    #[error("the key is not in a table")]
    NotATable,
    #[error("expected a whole number")]
    WholeNumber,
    #[error("expected a number")]
    Number,
    #[error("expected true or false")]
    Boolean,
}

/// Sets a dotted key from an environment string, keeping the type of the default.
fn set_path(root: &mut toml::Value, key: &str, raw: &str) -> Result<(), EnvValueError> {
    let mut slot = root;
    for part in key.split('.') {
        let table = slot.as_table_mut().ok_or(EnvValueError::NotATable)?;
        slot = table
            .entry(part.to_owned())
            .or_insert(toml::Value::String(String::new()));
    }
    let raw_t = raw.trim();
    *slot = match slot {
        toml::Value::Integer(_) => {
            toml::Value::Integer(raw_t.parse().map_err(|_| EnvValueError::WholeNumber)?)
        }
        toml::Value::Float(_) => toml::Value::Float(raw_t.parse().map_err(|_| EnvValueError::Number)?),
        toml::Value::Boolean(_) => toml::Value::Boolean(raw_t.parse().map_err(|_| EnvValueError::Boolean)?),
        _ => toml::Value::String(raw.to_owned()),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_setting_is_documented() {
        let doc = include_str!("../../../docs/config.md");
        for (var, key) in super::ENV_VARS {
            let row = format!("| `{key}` | `{var}` |");
            assert!(
                doc.contains(&row),
                "docs/config.md lacks the row for {key} ({var})"
            );
        }
    }

    use super::*;

    #[test]
    fn file_then_environment_override_defaults() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("nanoimg.toml");
        std::fs::write(
            &f,
            "workers = 3\n[rate]\nimages_per_minute = 7\n[limits]\nmax_steps = 20\n",
        )
        .unwrap();
        let env = |k: &str| match k {
            "NANOIMG_WORKERS" => Some("5".to_owned()),
            "NANOIMG_BIND" => Some("0.0.0.0:9000".to_owned()),
            _ => None,
        };
        let c = Config::load(Some(&f), env).unwrap();
        assert_eq!(c.workers, 5);
        assert_eq!(c.bind.port(), 9000);
        assert_eq!(c.rate.images_per_minute, 7);
        assert_eq!(c.rate.requests_per_minute, 600);
        assert_eq!(c.limits.max_steps, 20);
        assert_eq!(c.limits.max_images, 4);
    }

    #[test]
    fn bad_settings_are_named() {
        let e = Config::load(None, |k| (k == "NANOIMG_WORKERS").then(|| "many".into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("NANOIMG_WORKERS") && e.contains("whole number"), "{e}");
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("c.toml");
        std::fs::write(&f, "wrokers = 2\n").unwrap();
        let e = Config::load(Some(&f), |_| None).unwrap_err().to_string();
        assert!(e.contains("wrokers"), "{e}");
        let e = Config::load(None, |k| (k == "NANOIMG_QUEUE_CAPACITY").then(|| "0".into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("queue_capacity"), "{e}");
    }

    #[test]
    fn every_setting_has_an_environment_variable() {
        let v = toml::Value::try_from(Config::default()).unwrap();
        let mut keys = vec![];
        for (k, v) in v.as_table().unwrap() {
            match v.as_table() {
                Some(t)
                    if [
                        "rate",
                        "limits",
                        "safety",
                        "provenance",
                        "planner",
                        "audit",
                        "encryption",
                        "queue",
                    ]
                    .contains(&k.as_str()) =>
                {
                    keys.extend(t.keys().map(|s| format!("{k}.{s}")))
                }
                _ => keys.push(k.clone()),
            }
        }
        // min_side and max_guidance are engine-level caps left to the file.
        for k in keys {
            if k == "limits.min_side" || k == "limits.max_guidance" {
                continue;
            }
            assert!(ENV_VARS.iter().any(|(_, key)| *key == k), "no env var for {k}");
        }
    }
}
