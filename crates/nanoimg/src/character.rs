//! `nanoimg character …`: characters on a running NanoImg server, through its API (moderation,
//! consent, storage and scoping are the server's). `--server` and `--key` (or `NANOIMG_URL`,
//! `NANOIMG_API_KEY`) say where and who; the key needs the `characters` scope. `eval` runs on
//! the local model instead (see `character_eval`).

use crate::remote::{Client, Remote};
use anyhow::{Context, Result};
use serde_json::Value;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub remote: Remote,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Create a character from 1–8 reference images.
    Create {
        /// A name, unique among your characters.
        name: String,
        /// Reference images (PNG, JPEG or WebP), 1 to 8.
        #[arg(required = true, num_args = 1..=8)]
        references: Vec<PathBuf>,
        /// What the character looks like; added to every prompt that uses it.
        #[arg(long, default_value = "")]
        description: String,
        /// Default reference strength, 0–1.
        #[arg(long)]
        strength: Option<f64>,
        /// Seed of the reference pass.
        #[arg(long)]
        seed: Option<u64>,
        /// A LoRA (.safetensors, kohya or diffusers/PEFT names) trained on the character.
        #[arg(long)]
        lora: Option<PathBuf>,
        /// Attest that every person shown in the references agreed to this use (needed for
        /// references that may show a real person).
        #[arg(long)]
        consent: bool,
    },
    /// Your characters, newest first.
    List,
    /// A character and its reference images.
    Show { id: String },
    /// Delete a character, its reference images, its LoRA and every bank computed from them.
    Delete { id: String },
    /// Measure consistency on the local model: identity and prompt retention with and without
    /// reference conditioning (no server needed).
    Eval(Box<crate::character_eval::EvalArgs>),
}

pub fn run(a: Args) -> Result<()> {
    if let Command::Eval(e) = a.command {
        return crate::character_eval::run(*e);
    }
    let client = a.remote.client()?;
    crate::remote::runtime()?.block_on(run_async(&client, &a))
}

fn file_part(path: &PathBuf) -> Result<reqwest::multipart::Part> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    Ok(reqwest::multipart::Part::bytes(bytes).file_name(name))
}

async fn run_async(c: &Client, a: &Args) -> Result<()> {
    let v = match &a.command {
        Command::Create {
            name,
            references,
            description,
            strength,
            seed,
            lora,
            consent,
        } => {
            let mut form = reqwest::multipart::Form::new()
                .text("name", name.clone())
                .text("description", description.clone())
                .text("consent", consent.to_string());
            if let Some(s) = strength {
                form = form.text("strength", s.to_string());
            }
            if let Some(s) = seed {
                form = form.text("seed", s.to_string());
            }
            for r in references {
                form = form.part("reference", file_part(r)?);
            }
            if let Some(l) = lora {
                form = form.part("lora", file_part(l)?);
            }
            c.send(c.http.post(c.url("/v1/characters")).multipart(form))
                .await?
        }
        Command::List => c.get("/v1/characters").await?,
        Command::Show { id } => c.get(&format!("/v1/characters/{id}")).await?,
        Command::Delete { id } => {
            c.send(c.http.delete(c.url(&format!("/v1/characters/{id}"))))
                .await?
        }
        Command::Eval(_) => unreachable!("eval runs locally"),
    };
    if a.remote.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    match &a.command {
        Command::List => {
            for ch in v["data"].as_array().into_iter().flatten() {
                print_line(ch);
            }
        }
        Command::Delete { id } => println!("deleted {id}"),
        _ => {
            print_line(&v);
            for r in v["references"].as_array().into_iter().flatten() {
                println!(
                    "  reference {}  {}",
                    r["position"],
                    r["image_id"].as_str().unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

fn print_line(ch: &Value) {
    println!(
        "{}  {:?}  {} references{}  strength {}",
        ch["id"].as_str().unwrap_or_default(),
        ch["name"].as_str().unwrap_or_default(),
        ch["references"].as_array().map_or(0, Vec::len),
        if ch["lora"].is_null() { "" } else { ", LoRA" },
        ch["strength"]
    );
}
