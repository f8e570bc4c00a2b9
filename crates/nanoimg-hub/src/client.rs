//! The hub's HTTP API, as far as pulling needs it: a repository's listing at a revision, and
//! its files at a commit. `HF_ENDPOINT` names the hub (a mirror, or a local one in tests);
//! `HF_TOKEN` (else the token file `huggingface-cli login` writes) opens private and gated
//! repositories. The token is sent to the hub only: redirects to another host (the CDN's signed
//! URLs) go without it.

use crate::repo::{HubRef, RepoId};
use crate::select::Sibling;
use crate::{HubError, Result};
use reqwest::header::{HeaderMap, AUTHORIZATION, RANGE};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// A client of one hub.
#[derive(Debug, Clone)]
pub struct Hub {
    endpoint: Url,
    token: Option<String>,
    http: reqwest::Client,
}

/// A repository at a revision, as the hub lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct RepoInfo {
    /// The commit the revision stands for now.
    pub sha: String,
    #[serde(default)]
    pub siblings: Vec<Sibling>,
}

fn env(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

/// `HF_TOKEN`, else the file `HF_TOKEN_PATH` names, else `$HF_HOME/token`
/// (`~/.cache/huggingface/token`).
fn token_from_env() -> Option<String> {
    if let Some(t) = env("HF_TOKEN") {
        return Some(t.trim().to_owned());
    }
    let path = env("HF_TOKEN_PATH").map(PathBuf::from).or_else(|| {
        env("HF_HOME")
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface")))
            .map(|h| h.join("token"))
    })?;
    let t = std::fs::read_to_string(path).ok()?;
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

fn offline() -> bool {
    env("HF_HUB_OFFLINE")
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
}

impl Hub {
    /// A client of the hub at `endpoint`.
    pub fn new(endpoint: &str, token: Option<String>) -> Result<Self> {
        let endpoint = Url::parse(endpoint.trim_end_matches('/')).map_err(|e| HubError::Http {
            url: endpoint.to_owned(),
            message: format!("not a URL: {e}"),
        })?;
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err(HubError::Http {
                url: endpoint.to_string(),
                message: "the hub is reached over http or https".into(),
            });
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("nanoimg/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| HubError::Http {
                url: endpoint.to_string(),
                message: e.to_string(),
            })?;
        Ok(Self {
            endpoint,
            token,
            http,
        })
    }

    /// The hub the environment names: `HF_ENDPOINT` (default https://huggingface.co) and the
    /// token. Refused when `HF_HUB_OFFLINE` is set.
    pub fn from_env() -> Result<Self> {
        if offline() {
            return Err(HubError::Offline);
        }
        Self::new(
            &env("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".into()),
            token_from_env(),
        )
    }

    /// The hub's address.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.endpoint.clone();
        {
            let mut path = url.path_segments_mut().expect("an http URL has a path");
            path.pop_if_empty();
            // Each segment is percent-encoded, '/' included: a revision such as refs/pr/1 stays
            // one segment.
            path.extend(segments);
        }
        url
    }

    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(t) = &self.token {
            if let Ok(v) = format!("Bearer {t}").parse() {
                h.insert(AUTHORIZATION, v);
            }
        }
        h
    }

    /// The repository's files and sizes and hashes at the revision `r` asks for.
    pub async fn info(&self, r: &HubRef) -> Result<RepoInfo> {
        let mut url = self.url(&[
            "api",
            "models",
            r.repo.owner(),
            r.repo.name(),
            "revision",
            r.revision(),
        ]);
        url.set_query(Some("blobs=true"));
        let resp = self
            .send(
                self.http.get(url.clone()),
                &url,
                &r.repo,
                "the repository or revision",
            )
            .await?;
        let text = resp.text().await.map_err(|e| http_error(&url, e))?;
        serde_json::from_str(&text).map_err(|e| HubError::Listing {
            repo: r.repo.to_string(),
            message: format!("{url} did not answer a listing: {e}"),
        })
    }

    /// A file at a commit, from byte `from` on (a resumed download). The answer is 206 when the
    /// hub honoured the range, 200 when it sent the whole file.
    pub(crate) async fn file(
        &self,
        repo: &RepoId,
        commit: &str,
        path: &str,
        from: u64,
    ) -> Result<reqwest::Response> {
        let mut segments = vec![repo.owner(), repo.name(), "resolve", commit];
        segments.extend(path.split('/'));
        let url = self.url(&segments);
        let mut req = self.http.get(url.clone()).header("accept-encoding", "identity");
        if from > 0 {
            req = req.header(RANGE, format!("bytes={from}-"));
        }
        self.send(req, &url, repo, &format!("the file {path}")).await
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        url: &Url,
        repo: &RepoId,
        what: &str,
    ) -> Result<reqwest::Response> {
        let resp = req
            .headers(self.headers())
            .send()
            .await
            .map_err(|e| http_error(url, e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        // The hub says what is missing in X-Error-Code.
        let code = resp
            .headers()
            .get("x-error-code")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let message = resp
            .headers()
            .get("x-error-message")
            .and_then(|v| v.to_str().ok())
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        Err(match (status, code.as_str()) {
            (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) | (_, "GatedRepo") => {
                HubError::Unauthorized {
                    repo: repo.to_string(),
                    reason: if self.token.is_some() {
                        "the token given is not allowed in".to_owned()
                    } else {
                        "no token is set".to_owned()
                    },
                }
            }
            (StatusCode::NOT_FOUND, "RevisionNotFound") => HubError::NotFound {
                what: "the revision".into(),
                url: url.to_string(),
            },
            (StatusCode::NOT_FOUND, "EntryNotFound") => HubError::NotFound {
                what: what.to_owned(),
                url: url.to_string(),
            },
            (StatusCode::NOT_FOUND, _) => HubError::NotFound {
                what: format!("the repository {repo}"),
                url: url.to_string(),
            },
            _ => HubError::Status {
                url: url.to_string(),
                status: status.as_u16(),
                message,
            },
        })
    }
}

pub(crate) fn http_error(url: &Url, e: reqwest::Error) -> HubError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    HubError::Http {
        url: url.to_string(),
        message,
    }
}
