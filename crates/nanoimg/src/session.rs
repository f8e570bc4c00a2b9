//! `nanoimg session …`: edit sessions on a running NanoImg server, through its API (so the
//! planner, moderation, provenance and tenant scoping are the server's, exactly as for any
//! client). `--server` and `--key` (or `NANOIMG_URL`, `NANOIMG_API_KEY`) say where and who.

use crate::remote::{Client, Remote};
use anyhow::{Context, Result};
use serde_json::{json, Value};
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
    /// Upload an image and start a session on it.
    Start { image: PathBuf },
    /// Your sessions, most recently changed first.
    List,
    /// A session's versions as a tree; `*` marks the head.
    Show { session: String },
    /// Apply an instruction to the head (or to `--from` a version, which branches).
    Edit {
        session: String,
        instruction: String,
        /// Branch from this version instead of the head.
        #[arg(long)]
        from: Option<String>,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Denoising steps for generative operations.
        #[arg(long)]
        steps: Option<u32>,
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Move the head back to its parent.
    Undo { session: String },
    /// Move the head forward again after an undo.
    Redo { session: String },
    /// Make a version the head; the next edit branches from it.
    Checkout { session: String, version: String },
    /// Save the head's image (or a version's) to a file.
    Get {
        session: String,
        #[arg(long)]
        version: Option<String>,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Delete a session and the images its edits made.
    Delete { session: String },
}

pub fn run(a: Args) -> Result<()> {
    let client = a.remote.client()?;
    crate::remote::runtime()?.block_on(run_async(&client, &a))
}

async fn run_async(c: &Client, a: &Args) -> Result<()> {
    let path = |s: &str, rest: &str| format!("/v1/edit-sessions/{s}{rest}");
    let v = match &a.command {
        Command::Start { image } => {
            let bytes = std::fs::read(image).with_context(|| format!("cannot read {}", image.display()))?;
            let form = reqwest::multipart::Form::new()
                .part("file", reqwest::multipart::Part::bytes(bytes).file_name("upload"));
            let asset = c.send(c.http.post(c.url("/v1/assets")).multipart(form)).await?;
            c.post("/v1/edit-sessions", Some(json!({"image_id": asset["id"]})))
                .await?
        }
        Command::List => c.get("/v1/edit-sessions").await?,
        Command::Show { session } => c.get(&path(session, "")).await?,
        Command::Edit {
            session,
            instruction,
            from,
            dry_run,
            steps,
            seed,
        } => {
            let mut body = json!({"instruction": instruction, "dry_run": dry_run});
            for (k, v) in [
                ("from_version", from.as_ref().map(|f| json!(f))),
                ("steps", steps.map(|s| json!(s))),
                ("seed", seed.map(|s| json!(s))),
            ] {
                if let Some(v) = v {
                    body[k] = v;
                }
            }
            c.post(&path(session, "/instructions"), Some(body)).await?
        }
        Command::Undo { session } => c.post(&path(session, "/undo"), None).await?,
        Command::Redo { session } => c.post(&path(session, "/redo"), None).await?,
        Command::Checkout { session, version } => {
            c.post(&path(session, "/checkout"), Some(json!({"version": version})))
                .await?
        }
        Command::Get {
            session,
            version,
            output,
        } => {
            let s = c.get(&path(session, "")).await?;
            let want = version.as_deref().or(s["head"].as_str()).unwrap_or_default();
            let image = s["versions"]
                .as_array()
                .and_then(|vs| vs.iter().find(|v| v["id"] == want))
                .and_then(|v| v["image_id"].as_str())
                .with_context(|| format!("no version {want:?} in session {session}"))?;
            let r = c
                .http
                .get(c.url(&format!("/v1/assets/{image}/content")))
                .bearer_auth(&c.key)
                .send()
                .await?
                .error_for_status()?;
            crate::images::write_atomic(output, &r.bytes().await?)?;
            println!("wrote {} (version {want})", output.display());
            return Ok(());
        }
        Command::Delete { session } => {
            c.send(c.http.delete(c.url(&path(session, "")))).await?;
            println!("deleted {session}");
            return Ok(());
        }
    };
    if a.remote.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if let Command::List = a.command {
        for s in v["data"].as_array().into_iter().flatten() {
            println!(
                "{}  {} versions",
                s["id"].as_str().unwrap_or_default(),
                s["versions"].as_array().map_or(0, Vec::len)
            );
        }
    } else if v["dry_run"] == true {
        // Undo and redo dry runs have an `action`, not a plan.
        let shown = if v["plan"].is_null() { &v } else { &v["plan"] };
        println!("{}", serde_json::to_string_pretty(shown)?);
    } else {
        print_tree(&v);
    }
    Ok(())
}

/// A session's versions as an indented tree, oldest first; `*` marks the head.
fn print_tree(s: &Value) {
    let versions = s["versions"].as_array().cloned().unwrap_or_default();
    println!("session {}", s["id"].as_str().unwrap_or_default());
    fn walk(vs: &[Value], head: &str, parent: Option<&str>, depth: usize) {
        for v in vs.iter().filter(|v| v["parent_id"].as_str() == parent) {
            let id = v["id"].as_str().unwrap_or_default();
            let mark = if id == head { "*" } else { " " };
            let what = v["instruction"].as_str().unwrap_or("(original)");
            println!("{mark} {}{id}  {what}", "  ".repeat(depth));
            walk(vs, head, Some(id), depth + 1);
        }
    }
    walk(&versions, s["head"].as_str().unwrap_or_default(), None, 0);
}
