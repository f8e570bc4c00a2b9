//! `nanoimg`: the command line. Each subcommand is a module; they parse arguments, call the
//! library crates and print. No generation logic lives here.

mod admin;
mod allocator;
mod bench;
mod bench_flux;
mod catalog;
mod character;
mod character_eval;
mod edit;
mod fetch;
mod generate;
mod images;
mod models;
mod moderation;
mod pull;
mod remote;
mod safety;
mod serve;
mod session;

use clap::{Parser, Subcommand};

use std::process::ExitCode;

/// NanoImg: self-hostable image generation and editing.
#[derive(Parser)]
#[command(name = "nanoimg", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate images from a prompt (txt2img, img2img, inpaint, outpaint).
    Generate(Box<generate::Args>),
    /// Edit an image with a plain-language instruction (or a JSON plan).
    Edit(edit::Args),
    /// Edit sessions on a running server: start, edit turn by turn, undo, redo, branch.
    Session(session::Args),
    /// Characters on a running server: create from reference images, list, show, delete.
    Character(character::Args),
    /// List, inspect and create model folders.
    #[command(subcommand)]
    Models(models::Command),
    /// Run the HTTP API server.
    Serve(serve::Args),
    /// Run jobs from the shared queue, for `serve --role api` (docs/deploy.md).
    Worker(serve::Args),
    /// Create, list, revoke and rotate API keys.
    #[command(subcommand)]
    Keys(admin::KeysCommand),
    /// Create and list tenants, and set their limits.
    #[command(subcommand)]
    Tenants(admin::TenantsCommand),
    /// Read the audit log, or verify its hash chain and signed checkpoints (`audit verify`).
    Audit(admin::AuditArgs),
    /// Check prompts against moderation, or measure it on a labelled set.
    #[command(subcommand)]
    Moderation(moderation::Command),
    /// Check an image's C2PA Content Credentials and invisible watermark.
    Verify(safety::VerifyArgs),
    /// Time text encoding, UNet steps and VAE decoding on real-size architectures.
    Bench(bench::Args),
}

fn main() -> ExitCode {
    allocator::configure();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(a) => generate::run(*a).map(ok),
        Command::Edit(a) => edit::run(a).map(ok),
        Command::Session(a) => session::run(a).map(ok),
        Command::Character(a) => character::run(a).map(ok),
        Command::Models(c) => models::run(c).map(ok),
        Command::Bench(a) => bench::run(a).map(ok),
        Command::Serve(a) => serve::run(a).map(ok),
        Command::Worker(a) => serve::worker(a).map(ok),
        Command::Keys(c) => admin::keys(c).map(ok),
        Command::Tenants(c) => admin::tenants(c).map(ok),
        Command::Audit(a) => admin::audit(a),
        Command::Moderation(c) => moderation::run(c),
        Command::Verify(a) => safety::verify(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            ExitCode::from(2)
        }
    }
}

fn ok(_: ()) -> ExitCode {
    ExitCode::SUCCESS
}

/// The error and its causes, `: `-separated, skipping a cause whose text the message before it
/// already contains (our error types print their source inline).
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}
