//! The safety layers for the CLI: loaded like the server loads them (`nanoimg_safety::setup`),
//! with the models in `$NANOIMG_HOME/safety` and the local signing CA in
//! `$NANOIMG_HOME/provenance`, shared with `nanoimg serve`. `nanoimg verify` lives here too.

use crate::catalog;
use anyhow::{Context, Result};
use nanoimg_engine::codec::{self, DecodeLimits};
use nanoimg_safety::setup::{CredentialSource, Options};
use nanoimg_safety::{nsfw, Safety};
use std::path::PathBuf;

/// Where the safety models are; shared by the commands that load the layers.
#[derive(clap::Args, Debug, Clone)]
pub struct SafetyArgs {
    /// Where the safety models are [default: $NANOIMG_HOME/safety].
    #[arg(long, value_name = "DIR")]
    pub safety_models_dir: Option<PathBuf>,
}

impl SafetyArgs {
    /// Every layer whose model is installed, the watermark and C2PA signing. A layer that is off
    /// is named on stderr with the reason.
    pub fn load(&self) -> Result<Safety> {
        let safety = Safety::load(&Options {
            models_dir: crate::fetch::safety_dir(self.safety_models_dir.clone())?,
            require_all_layers: false,
            nsfw_threshold: nsfw::DEFAULT_THRESHOLD,
            block_characters: true,
            credentials: CredentialSource::Local(catalog::data_dir()?.join("provenance")),
            trust_anchors: None,
        })?;
        for l in safety.layers.iter().filter(|l| !l.on) {
            eprintln!("warning: safety layer {} is off: {}", l.layer, l.detail);
        }
        Ok(safety)
    }
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The image to check (PNG, JPEG or WebP), as received: a re-saved copy has lost its manifest.
    pub image: PathBuf,
    /// Print the whole report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub safety: SafetyArgs,
}

/// `nanoimg verify IMAGE`: exit 0 when the check ran and found nothing wrong, 1 when the image
/// carries a manifest that does not validate (tampered, or signed by a rejected credential).
pub fn verify(a: VerifyArgs) -> Result<std::process::ExitCode> {
    let limits = DecodeLimits::default();
    let bytes = crate::images::read_limited(&a.image, &limits)?;
    let pixels = codec::decode(&bytes, &limits, "image")
        .map_err(|e| anyhow::anyhow!("{}: {}", a.image.display(), e.message))?
        .to_rgb8();
    let safety = a.safety.load()?;
    let report = nanoimg_safety::verify::verify(&safety.provenance, &safety.watermark, &bytes, &pixels)
        .with_context(|| a.image.display().to_string())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let m = &report.c2pa;
        println!("{}: {}", a.image.display(), report.summary());
        if m.present {
            if let Some(g) = &m.claim_generator {
                println!("  made by:   {g}");
            }
            for act in &m.actions {
                let source = act
                    .digital_source_type
                    .as_deref()
                    .and_then(|s| s.rsplit('/').next());
                println!(
                    "  action:    {}{}",
                    act.action,
                    source.map(|s| format!(" ({s})")).unwrap_or_default()
                );
            }
            if let (Some(s), Some(i)) = (&m.signer, &m.issuer) {
                println!("  signed by: {s} (issuer {i})");
            }
            for f in &m.failures {
                println!("  problem:   {f}");
            }
        }
        println!(
            "  watermark: {} (confidence {:.2})",
            if report.watermark.present {
                "present"
            } else {
                "not found"
            },
            report.watermark.confidence
        );
    }
    let failed = report.c2pa.present && !report.c2pa.valid;
    Ok(if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    })
}
