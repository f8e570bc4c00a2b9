//! `nanoimg serve`: the HTTP API on the built-in defaults (SQLite and files under the data
//! directory, 127.0.0.1:8080, the bundled model), or as configured.

use crate::catalog;
use anyhow::{Context, Result};
use clap::Args as ClapArgs;
use nanoimg_engine::registry::Listing;
use nanoimg_engine::{bundled, ModelInfo};
use nanoimg_server::config::Role;
use nanoimg_server::{Config, ModelCatalog};
use std::path::{Path, PathBuf};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Data directory: SQLite file, blobs, secrets [default: $NANOIMG_HOME/server, else
    /// ~/.local/share/nanoimg/server].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free one) [default: 127.0.0.1:8080].
    #[arg(long)]
    pub bind: Option<String>,
    /// A TOML config file [default: <data dir>/nanoimg.toml if it exists]. See docs/config.md.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Model directories to offer besides the built-in model (colon-separated).
    #[arg(long)]
    pub models_dir: Option<String>,
    /// A model pulled into the hub cache to offer too, by its id (`org/name[@revision]`,
    /// `nanoimg models pull`); repeatable, or comma-separated in $NANOIMG_HUB_MODELS.
    #[arg(long = "hub-model", env = "NANOIMG_HUB_MODELS", value_delimiter = ',')]
    pub hub_models: Vec<String>,
    /// The LoRA library requests may name (colon-separated folders). Default: $NANOIMG_LORAS,
    /// else `loras/` in each models directory.
    #[arg(long)]
    pub lora_dir: Option<String>,
    /// Textual-inversion embeddings every model knows by name (colon-separated folders).
    /// Default: $NANOIMG_EMBEDDINGS, else `embeddings/` in each models directory.
    #[arg(long)]
    pub embedding_dir: Option<String>,
    /// `all`: serve and run jobs here [default]; `api`: serve only, with `nanoimg worker`
    /// processes on the shared database running the jobs (docs/deploy.md).
    #[arg(long, value_parser = ["all", "api"])]
    pub role: Option<String>,
}

/// The data directory for `serve`, `keys` and `tenants`.
pub fn data_dir(flag: Option<&Path>) -> Result<PathBuf> {
    if let Some(d) = flag {
        return Ok(d.to_owned());
    }
    if let Some(d) = std::env::var_os("NANOIMG_DATA_DIR").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    Ok(catalog::data_dir()?.join("server"))
}

/// Settings: defaults < config file < environment < flags.
pub fn config(args: &Args) -> Result<Config> {
    let dir = data_dir(args.data_dir.as_deref())?;
    let file = match &args.config {
        Some(f) => Some(f.clone()),
        None => Some(dir.join("nanoimg.toml")).filter(|f| f.is_file()),
    };
    let mut cfg = Config::load(file.as_deref(), |k| std::env::var(k).ok())?;
    // The flag wins; then a data_dir from the file or environment; then the default location.
    if args.data_dir.is_some() || cfg.data_dir == Config::default().data_dir {
        cfg.data_dir = dir;
    }
    if cfg.safety.models_dir.is_none() {
        // Where `nanoimg models fetch safety` puts them.
        cfg.safety.models_dir = Some(crate::fetch::safety_dir(None)?);
    }
    if cfg.provenance.dir.is_none() {
        // One local CA per installation, shared with `nanoimg generate`.
        cfg.provenance.dir = Some(catalog::data_dir()?.join("provenance"));
    }
    if let Some(b) = &args.bind {
        cfg.bind = b
            .parse()
            .with_context(|| format!("--bind {b:?}: expected HOST:PORT"))?;
    }
    match args.role.as_deref() {
        Some("api") => cfg.role = Role::Api,
        Some(_) => cfg.role = Role::All,
        None => {}
    }
    Ok(cfg)
}

/// The server's settings for the data directory `dir` (its `nanoimg.toml` and the
/// environment), so that admin commands use the server's keys.
pub fn config_for(dir: &Path) -> Result<Config> {
    let file = Some(dir.join("nanoimg.toml")).filter(|f| f.is_file());
    let mut cfg = Config::load(file.as_deref(), |k| std::env::var(k).ok())?;
    cfg.data_dir = dir.to_owned();
    Ok(cfg)
}

/// The built-in model, every usable model in the models directories, and the hub models asked
/// for (which must be there: they were named).
fn models(args: &Args, cfg: &Config) -> Result<ModelCatalog> {
    let registry = catalog::registry(args.models_dir.as_deref());
    let mut list: Vec<(String, ModelInfo)> = Vec::new();
    for entry in registry.list() {
        match entry {
            Listing::Ready(info) => list.push((info.name.clone(), *info)),
            Listing::Broken { path, error } => {
                tracing::warn!(path = %path.display(), %error, "not serving a model that cannot be used")
            }
        }
    }
    for id in &args.hub_models {
        let mut info = registry
            .resolve(id)
            .and_then(|path| ModelInfo::inspect(&path))
            .with_context(|| format!("--hub-model {id}"))?;
        info.name = id.clone();
        list.push((id.clone(), info));
    }
    if !list.iter().any(|(n, _)| n == bundled::NAME) {
        let info = ModelInfo::inspect(&catalog::bundled_model()?)?;
        list.push((bundled::NAME.to_owned(), info));
    }
    let default = cfg
        .default_model
        .clone()
        .unwrap_or_else(|| bundled::NAME.to_owned());
    Ok(ModelCatalog::new(list, &default, cfg.max_loaded_models)
        .map_err(anyhow::Error::msg)?
        .with_reference_cache(cfg.reference_cache_mib.saturating_mul(1 << 20))
        .with_after_load(crate::allocator::release_freed)
        .with_loras(catalog::lora_library(
            args.models_dir.as_deref(),
            args.lora_dir.as_deref(),
        ))
        .with_embeddings(catalog::embedding_library(
            args.models_dir.as_deref(),
            args.embedding_dir.as_deref(),
        )))
}

pub fn run(args: Args) -> Result<()> {
    let cfg = config(&args)?;
    if cfg.role == Role::Worker {
        anyhow::bail!("role = worker is for `nanoimg worker`; `serve` takes all or api");
    }
    serve(args, cfg)
}

/// `nanoimg worker`: runs jobs from the shared queue (a PostgreSQL or SQLite database that a
/// `serve --role api` process writes), with `/healthz`, `/readyz` and `/metrics` on `--bind`.
pub fn worker(args: Args) -> Result<()> {
    if args.role.is_some() {
        anyhow::bail!("--role is for `serve`; a worker is a worker");
    }
    let mut cfg = config(&args)?;
    cfg.role = Role::Worker;
    if args.bind.is_none() && cfg.bind == Config::default().bind {
        // Beside a server on the default port.
        cfg.bind = "127.0.0.1:0".parse().expect("a valid address");
    }
    serve(args, cfg)
}

fn serve(args: Args, cfg: Config) -> Result<()> {
    init_logging(&cfg.log_format);
    let catalog = models(&args, &cfg)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let (server, first) = nanoimg_server::start(cfg.clone(), catalog)
            .await
            .map_err(anyhow::Error::msg)?;
        if let Some(first) = first {
            println!("Created the admin tenant. Its API key (shown once, keep it safe):");
            println!("  {}", first.admin_key);
        }
        match server.worker_id() {
            Some(id) => println!("NanoImg worker {id} (health on http://{})", server.addr),
            None => println!("NanoImg listening on http://{}", server.addr),
        }
        println!("data directory: {}", cfg.data_dir.display());
        shutdown_signal().await;
        server.shutdown().await;
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NANOIMG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        b.json().flatten_event(true).init();
    } else {
        b.init();
    }
}
