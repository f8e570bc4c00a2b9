//! A client of a running NanoImg server's API, for the subcommands that work through it
//! (`session`, `character`): `--server` and `--key` (or `NANOIMG_URL`, `NANOIMG_API_KEY`) say
//! where and who; errors are the server's own messages.

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// Where the server is and which key to use.
#[derive(clap::Args)]
pub struct Remote {
    /// The server's address.
    #[arg(
        long,
        env = "NANOIMG_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub server: String,
    /// An API key with the scopes the command needs.
    #[arg(long, env = "NANOIMG_API_KEY", hide_env_values = true, global = true)]
    pub key: Option<String>,
    /// Print the server's JSON answer instead of a summary.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Remote {
    /// A client for this server and key.
    pub fn client(&self) -> Result<Client> {
        let key = self
            .key
            .clone()
            .context("an API key is needed: --key or NANOIMG_API_KEY")?;
        Ok(Client {
            http: reqwest::Client::new(),
            base: self.server.clone(),
            key,
        })
    }
}

/// A single-threaded runtime for one command.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// The API of one server, as one key.
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub key: String,
}

impl Client {
    /// Sends a request; the JSON answer, or the server's error message.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value> {
        let r = req
            .bearer_auth(&self.key)
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        let status = r.status();
        let body = r.bytes().await?;
        let v: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)
                .with_context(|| format!("the server answered {status} with non-JSON"))?
        };
        if !status.is_success() {
            let msg = v["error"]["message"].as_str().unwrap_or("no message");
            bail!("{msg} ({status})");
        }
        Ok(v)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.trim_end_matches('/'))
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> Result<Value> {
        let mut req = self.http.post(self.url(path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req).await
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.send(self.http.get(self.url(path))).await
    }
}
