//! `nanoimg models pull ORG/NAME[@REVISION]`: a model from the Hugging Face hub into the hub
//! cache (`nanoimg_hub::pull`), with a progress bar per file, then usable offline as
//! `--model ORG/NAME`.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nanoimg_hub::pull::{Fetched, Progress};
use nanoimg_hub::{Hub, HubCache, HubRef, Selection};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;

/// The flags of `models pull`.
#[derive(clap::Args)]
pub struct PullArgs {
    /// The model: `org/name`, optionally `@revision` (a branch, tag or commit; default main).
    pub id: String,
    /// The precision variant of the weights (e.g. `fp16`, as diffusers' `variant`). Default:
    /// the plain files, or the only variant a component has.
    #[arg(long)]
    pub variant: Option<String>,
    /// Configs and tokenizers only, no weights: the companion of a single-file checkpoint.
    #[arg(long)]
    pub configs_only: bool,
    /// Pull exactly this file (repeatable), for repositories that hold several checkpoints.
    #[arg(long = "file")]
    pub files: Vec<String>,
    /// The hub cache to pull into. Default: $HF_HUB_CACHE, else $HF_HOME/hub, else
    /// ~/.cache/huggingface/hub.
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

/// A bar per file on a terminal; a line per file otherwise.
struct Bars {
    bar: Mutex<Option<ProgressBar>>,
    tty: bool,
}

impl Progress for Bars {
    fn start(&self, path: &str, size: u64, have: u64) {
        let bar = ProgressBar::new(size)
            .with_position(have)
            .with_message(path.to_owned());
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        if !self.tty {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        *self.bar.lock().expect("not poisoned") = Some(bar);
    }

    fn advance(&self, bytes: u64) {
        if let Some(b) = &*self.bar.lock().expect("not poisoned") {
            b.inc(bytes);
        }
    }

    fn done(&self, path: &str, how: Fetched) {
        if let Some(b) = self.bar.lock().expect("not poisoned").take() {
            b.finish_and_clear();
        }
        let how = match how {
            Fetched::Downloaded => "downloaded".to_owned(),
            Fetched::Resumed { from } => format!("resumed from byte {from}"),
            Fetched::Cached => "already in the cache".to_owned(),
        };
        eprintln!("  {path}: {how}, checked");
    }
}

pub fn run(args: PullArgs) -> Result<()> {
    let r: HubRef = args.id.parse()?;
    let cache = match args.cache {
        Some(c) => HubCache::new(c),
        None => HubCache::from_env().context("no hub cache: set HF_HUB_CACHE, HF_HOME or HOME")?,
    };
    let hub = Hub::from_env()?;
    let sel = Selection {
        variant: args.variant,
        configs_only: args.configs_only,
        files: args.files,
    };
    eprintln!(
        "pulling {r} from {} into {}",
        hub.endpoint(),
        cache.root().display()
    );
    let bars = Bars {
        bar: Mutex::new(None),
        tty: std::io::stderr().is_terminal(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let pulled = rt.block_on(nanoimg_hub::pull(&hub, &cache, &r, &sel, &bars))?;
    let bytes: u64 = pulled
        .files
        .iter()
        .filter(|(_, _, how)| *how != Fetched::Cached)
        .map(|(_, size, _)| size)
        .sum();
    for (file, why) in &pulled.skipped {
        eprintln!("  left out {file}: {why}");
    }
    println!(
        "{r}: commit {} ({} files, {:.1} MiB downloaded) in {}",
        pulled.commit,
        pulled.files.len(),
        bytes as f64 / (1024.0 * 1024.0),
        pulled.snapshot.display()
    );
    if !sel.configs_only {
        println!("use it with --model {r}");
    }
    Ok(())
}
