//! `nanoimg moderation …`: check a prompt, or measure moderation on a labelled set.

use anyhow::{Context, Result};
use clap::Subcommand;
use nanoimg_safety::{eval, PromptModerator, Strictness};
use std::path::PathBuf;

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
    },
}

pub fn run(cmd: Command) -> Result<std::process::ExitCode> {
    let m = PromptModerator::default();
    match cmd {
        Command::Check {
            prompt,
            negative_prompt,
            strictness,
        } => {
            let mut texts = vec![prompt.as_str()];
            texts.extend(negative_prompt.as_deref());
            let v = m.check(&texts, strictness);
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
        } => {
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let set = eval::parse(&text).with_context(|| file.display().to_string())?;
            let started = std::time::Instant::now();
            let r = eval::evaluate(&m, &set, strictness);
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
