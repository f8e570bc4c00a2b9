//! `nanoimg moderation …`: check a prompt, or measure moderation on a labelled set.

use anyhow::{Context, Result};
use clap::Subcommand;
use nanoimg_safety::semantic::SemanticLayer;
use nanoimg_safety::{eval, models, PromptModerator, Strictness};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check one prompt (and optionally a negative prompt); prints the verdict as JSON and
    /// exits 1 if it is blocked.
    Check {
        prompt: String,
        #[arg(long)]
        negative_prompt: Option<String>,
        /// `auto` (default) or `low`.
        #[arg(long, default_value = "auto")]
        strictness: Strictness,
        #[command(flatten)]
        layers: Layers,
    },
    /// Recall per category and the false-positive rate on a TSV of CATEGORY<TAB>PROMPT lines
    /// (`safe` for prompts that must pass).
    Eval {
        file: PathBuf,
        #[arg(long, default_value = "auto")]
        strictness: Strictness,
        /// List every prompt let through or wrongly blocked.
        #[arg(long)]
        mistakes: bool,
        #[command(flatten)]
        layers: Layers,
    },
}

/// Which layers to run.
#[derive(clap::Args, Debug)]
pub struct Layers {
    /// Where the safety models are [default: $NANOIMG_HOME/safety].
    #[arg(long)]
    models_dir: Option<PathBuf>,
    /// The word lists only, even if the semantic model is installed.
    #[arg(long)]
    lexicon_only: bool,
}

impl Layers {
    /// The moderator with every layer asked for; says on stderr which one is off and why.
    fn moderator(&self) -> Result<PromptModerator> {
        let m = PromptModerator::default();
        if self.lexicon_only {
            eprintln!("layers: lexicon (semantic off: --lexicon-only)");
            return Ok(m);
        }
        let root = crate::fetch::safety_dir(self.models_dir.clone())?;
        let dir = models::MINILM.path(&root);
        if !models::MINILM.installed(&root) {
            eprintln!(
                "layers: lexicon (semantic off: no model in {}; run `nanoimg models fetch safety`)",
                dir.display()
            );
            return Ok(m);
        }
        let layer = SemanticLayer::load(&dir).with_context(|| dir.display().to_string())?;
        eprintln!("layers: lexicon, semantic ({})", dir.display());
        Ok(m.with_semantic(Arc::new(layer)))
    }
}

pub fn run(cmd: Command) -> Result<std::process::ExitCode> {
    match cmd {
        Command::Check {
            prompt,
            negative_prompt,
            strictness,
            layers,
        } => {
            let m = layers.moderator()?;
            let negative: Vec<&str> = negative_prompt.as_deref().into_iter().collect();
            let v = m.check_request(&[prompt.as_str()], &negative, strictness)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(if v.blocked {
                std::process::ExitCode::from(1)
            } else {
                std::process::ExitCode::SUCCESS
            })
        }
        Command::Eval {
            file,
            strictness,
            mistakes,
            layers,
        } => {
            let m = layers.moderator()?;
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let set = eval::parse(&text).with_context(|| file.display().to_string())?;
            let started = std::time::Instant::now();
            let r = eval::evaluate(&m, &set, strictness)?;
            let per = started.elapsed().as_secs_f64() * 1000.0 / set.len().max(1) as f64;
            println!(
                "{} ({} prompts, strictness {strictness:?}, {per:.3} ms a prompt)\n",
                file.display(),
                set.len()
            );
            print!("{}", r.table());
            if mistakes {
                println!();
                for (line, label, prompt, cats) in &r.mistakes {
                    let got = if cats.is_empty() { "passed" } else { cats.as_str() };
                    println!("line {line}: {label} → {got}: {prompt}");
                }
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}
