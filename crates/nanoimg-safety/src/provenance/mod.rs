//! C2PA Content Credentials: every output is signed with a manifest that says an AI model made it
//! (`c2pa.created`, digital source type `trainedAlgorithmicMedia`), or, for edits, which input it
//! was made from (`c2pa.opened` on a `parentOf` ingredient, then `c2pa.edited` with
//! `compositeWithTrainedAlgorithmicMedia`). Signing is the last step before storing: any
//! re-encode afterwards would strip the manifest.
//!
//! The manifest carries no prompt, tenant or key: it travels with the image to whoever gets it.

pub mod ca;

use crate::SafetyError;
use c2pa::crypto::raw_signature::SigningAlg;
use c2pa::settings::Settings;
use c2pa::validation_results::ValidationState;
use c2pa::{BoxedSigner, Builder, Context, Reader};
pub use ca::Credentials;
use serde::Serialize;
use serde_json::{json, Value};
use std::io::Cursor;
use std::sync::Arc;

/// IPTC digital source types (the vocabulary C2PA uses).
pub const TRAINED_ALGORITHMIC_MEDIA: &str =
    "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia";
pub const COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA: &str =
    "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia";

/// How an output came to be.
#[derive(Debug, Clone, Copy)]
pub enum Origin<'a> {
    /// Made from text alone.
    Created,
    /// Made from an input image (edit, inpaint, outpaint, img2img, variation): the input becomes
    /// the manifest's parent ingredient, with its own manifest if it has one.
    Edited {
        input: &'a [u8],
        input_media_type: &'a str,
    },
}

/// Signs outputs and reads manifests.
pub struct Provenance {
    signer: BoxedSigner,
    context: Arc<Context>,
    /// Where the credentials came from (for `/readyz` and logs).
    pub source: String,
}

/// The media types NanoImg signs and verifies.
pub fn media_type_of(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

fn c2pa_err(what: &str) -> impl Fn(c2pa::Error) -> SafetyError + '_ {
    move |e| SafetyError::Provenance(format!("{what}: {e}"))
}

impl Provenance {
    /// A signer for these credentials. Verification trusts the credentials' anchors plus
    /// `extra_anchors_pem` (a PEM bundle, possibly empty). The credentials are checked by signing
    /// and verifying a small image, so a chain that validators would reject (wrong EKU, missing
    /// AKI, expired, key not matching) stops the start with the reason instead of failing jobs.
    pub fn new(creds: &Credentials, extra_anchors_pem: &str) -> Result<Self, SafetyError> {
        if !creds.chain_pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(SafetyError::Provenance(format!(
                "no PEM certificate in the signing chain from {}",
                creds.source
            )));
        }
        let signer = c2pa::create_signer::from_keys(
            creds.chain_pem.as_bytes(),
            creds.key_pem.as_bytes(),
            SigningAlg::Es256,
            None,
        )
        .map_err(|e| {
            SafetyError::Provenance(format!(
                "signing credentials from {} (an ES256 chain and PKCS#8 key in PEM are expected): {e}",
                creds.source
            ))
        })?;
        let anchors = format!("{}\n{}", creds.anchors_pem.trim(), extra_anchors_pem.trim());
        let mut settings = Settings::new();
        let set = |s: &mut Settings, k: &str, v: Value| {
            s.set_value(k, v)
                .map_err(|e| SafetyError::Provenance(format!("c2pa setting {k}: {e}")))
        };
        if !anchors.trim().is_empty() {
            set(&mut settings, "trust.user_anchors", json!(anchors.trim()))?;
        }
        // Offline by design: no remote manifests, no OCSP.
        set(&mut settings, "verify.remote_manifest_fetch", json!(false))?;
        set(&mut settings, "verify.ocsp_fetch", json!(false))?;
        let context = Context::new()
            .with_settings(settings)
            .map_err(c2pa_err("c2pa settings"))?
            .into_shared();
        let p = Self {
            signer,
            context,
            source: creds.source.clone(),
        };
        p.self_check(creds)?;
        Ok(p)
    }

    fn self_check(&self, creds: &Credentials) -> Result<(), SafetyError> {
        let mut png = Vec::new();
        image::RgbImage::from_pixel(8, 8, image::Rgb([128, 64, 32]))
            .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| SafetyError::Provenance(e.to_string()))?;
        let fail = |e: SafetyError| {
            SafetyError::Provenance(format!(
                "the signing credentials from {} fail a test signature: {e}",
                creds.source
            ))
        };
        let signed = self
            .sign(&png, "image/png", Origin::Created, "self-check")
            .map_err(fail)?;
        let r = self.verify(&signed).map_err(fail)?;
        if !r.valid {
            let codes: Vec<String> = r.failures.iter().map(|f| f.to_string()).collect();
            return Err(SafetyError::Provenance(format!(
                "the signing credentials from {} make manifests that do not validate: {}",
                creds.source,
                codes.join("; ")
            )));
        }
        Ok(())
    }

    /// Signs `bytes` (an encoded PNG, JPEG or WebP) and returns the file with its manifest.
    pub fn sign(
        &self,
        bytes: &[u8],
        media_type: &str,
        origin: Origin<'_>,
        model: &str,
    ) -> Result<Vec<u8>, SafetyError> {
        let agent = json!({ "name": "NanoImg", "version": env!("CARGO_PKG_VERSION") });
        let actions = match origin {
            Origin::Created => json!([{
                "action": "c2pa.created",
                "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                "softwareAgent": agent,
                "description": format!("generated by the model {model}"),
            }]),
            Origin::Edited { .. } => json!([
                { "action": "c2pa.opened", "parameters": { "ingredientIds": ["input"] } },
                {
                    "action": "c2pa.edited",
                    "digitalSourceType": COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
                    "softwareAgent": agent,
                    "description": format!("edited by the model {model}"),
                },
            ]),
        };
        let definition = json!({
            "claim_generator_info": [agent],
            "title": format!("NanoImg output ({model})"),
            "format": media_type,
            "assertions": [{ "label": "c2pa.actions", "data": { "actions": actions } }],
        });
        let mut builder = Builder::from_shared_context(&self.context)
            .with_definition(definition.to_string())
            .map_err(c2pa_err("manifest definition"))?;
        if let Origin::Edited {
            input,
            input_media_type,
        } = origin
        {
            let ingredient = json!({ "title": "input image", "relationship": "parentOf", "label": "input" });
            builder
                .add_ingredient_from_stream(ingredient.to_string(), input_media_type, &mut Cursor::new(input))
                .map_err(c2pa_err("the input image as an ingredient"))?;
        }
        let mut out = Cursor::new(Vec::with_capacity(bytes.len() + 32 * 1024));
        builder
            .sign(
                self.signer.as_ref(),
                media_type,
                &mut Cursor::new(bytes),
                &mut out,
            )
            .map_err(c2pa_err("signing"))?;
        Ok(out.into_inner())
    }

    /// Reads and validates the manifest in `bytes`. A file without one is not an error.
    pub fn verify(&self, bytes: &[u8]) -> Result<ManifestReport, SafetyError> {
        let Some(media_type) = media_type_of(bytes) else {
            return Err(SafetyError::Provenance(
                "not a PNG, JPEG or WebP file (judged from its first bytes)".into(),
            ));
        };
        let reader =
            match Reader::from_shared_context(&self.context).with_stream(media_type, Cursor::new(bytes)) {
                Ok(r) => r,
                Err(c2pa::Error::JumbfNotFound) | Err(c2pa::Error::ProvenanceMissing) => {
                    return Ok(ManifestReport::absent(media_type))
                }
                Err(e) => {
                    // A manifest that cannot even be parsed: present, and invalid.
                    return Ok(ManifestReport {
                        failures: vec![Failure {
                            code: "manifest.unreadable".into(),
                            explanation: Some(e.to_string()),
                        }],
                        tampered: true,
                        ..ManifestReport::absent(media_type)
                    }
                    .present());
                }
            };
        Ok(ManifestReport::from_reader(&reader, media_type))
    }
}

/// One validation failure, by its C2PA status code.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Failure {
    pub code: String,
    pub explanation: Option<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.explanation {
            Some(e) => write!(f, "{} ({e})", self.code),
            None => f.write_str(&self.code),
        }
    }
}

/// One action from the active manifest.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ActionSummary {
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digital_source_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub software_agent: Option<String>,
}

/// What a file's C2PA manifest says, and whether it holds.
#[derive(Debug, Clone, Serialize)]
pub struct ManifestReport {
    pub media_type: &'static str,
    /// A manifest store is embedded.
    pub present: bool,
    /// Signature and hashes check out (the chain need not be trusted).
    pub valid: bool,
    /// Valid, and the signer chains to a trusted root.
    pub trusted: bool,
    /// The file or the manifest was changed after signing (a hash or signature mismatch).
    pub tampered: bool,
    /// `trusted`, `valid` or `invalid` as C2PA defines them; absent without a manifest.
    pub state: Option<&'static str>,
    pub failures: Vec<Failure>,
    pub claim_generator: Option<String>,
    pub title: Option<String>,
    pub signer: Option<String>,
    pub issuer: Option<String>,
    pub signed_at: Option<String>,
    pub actions: Vec<ActionSummary>,
    pub ingredients: Vec<String>,
}

/// Codes that mean the bytes or the manifest changed after signing.
fn is_tamper_code(code: &str) -> bool {
    code.ends_with(".mismatch") || code == "claimSignature.mismatch" || code.starts_with("assertion.dataHash")
}

impl ManifestReport {
    fn absent(media_type: &'static str) -> Self {
        Self {
            media_type,
            present: false,
            valid: false,
            trusted: false,
            tampered: false,
            state: None,
            failures: vec![],
            claim_generator: None,
            title: None,
            signer: None,
            issuer: None,
            signed_at: None,
            actions: vec![],
            ingredients: vec![],
        }
    }

    fn present(mut self) -> Self {
        self.present = true;
        self.state = Some("invalid");
        self
    }

    fn from_reader(reader: &Reader, media_type: &'static str) -> Self {
        let mut r = Self::absent(media_type).present();
        let state = reader.validation_state();
        r.state = Some(match state {
            ValidationState::Trusted => "trusted",
            ValidationState::Valid => "valid",
            ValidationState::Invalid => "invalid",
        });
        r.trusted = state == ValidationState::Trusted;
        r.valid = r.trusted || state == ValidationState::Valid;
        if let Some(results) = reader.validation_results() {
            let active = results
                .active_manifest()
                .map(|s| s.failure().iter())
                .into_iter()
                .flatten();
            let deltas = results
                .ingredient_deltas()
                .into_iter()
                .flatten()
                .flat_map(|d| d.validation_deltas().failure().iter());
            for s in active.chain(deltas) {
                r.failures.push(Failure {
                    code: s.code().to_string(),
                    explanation: s.explanation().map(str::to_string),
                });
            }
        }
        r.tampered = r.failures.iter().any(|f| is_tamper_code(&f.code));
        if let Some(m) = reader.active_manifest() {
            r.claim_generator = m.claim_generator().map(str::to_string);
            r.title = m.title().map(str::to_string);
            if let Some(s) = m.signature_info() {
                r.signer = s.common_name.clone();
                r.issuer = s.issuer.clone();
                r.signed_at = s.time.clone();
            }
            for a in m.assertions() {
                if !a.label().starts_with("c2pa.actions") {
                    continue;
                }
                let Ok(v) = a.value() else { continue };
                for act in v["actions"].as_array().into_iter().flatten() {
                    r.actions.push(ActionSummary {
                        action: act["action"].as_str().unwrap_or_default().to_string(),
                        digital_source_type: act["digitalSourceType"].as_str().map(str::to_string),
                        software_agent: act["softwareAgent"]["name"]
                            .as_str()
                            .or_else(|| act["softwareAgent"].as_str())
                            .map(str::to_string),
                    });
                }
            }
            r.ingredients = m
                .ingredients()
                .iter()
                .map(|i| i.title().unwrap_or("untitled").to_string())
                .collect();
        }
        r
    }
}
