//! `nanoimg keys …` and `nanoimg tenants …`: the same store the server uses, from the shell.

use crate::serve::data_dir;
use anyhow::{bail, Result};
use clap::Subcommand;
use nanoimg_store::{AuditEvent, NewKey, Outcome, Scope, Store};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key for a tenant; prints the key once.
    Create {
        /// Tenant name or id.
        #[arg(long)]
        tenant: String,
        /// A name to tell the key apart.
        #[arg(long, default_value = "cli")]
        name: String,
        /// Comma-separated scopes [default: every scope but admin].
        #[arg(long)]
        scopes: Option<String>,
        /// Lifetime, such as 30d, 12h, 90m or 3600 (seconds).
        #[arg(long)]
        expires_in: Option<String>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// List keys (never the keys themselves).
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Revoke a key by id.
    Revoke {
        id: String,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Replace a key with a new one with the same scopes; prints the new key once.
    Rotate {
        id: String,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TenantsCommand {
    /// Create a tenant.
    Create {
        name: String,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// List tenants.
    List {
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

fn parse_duration(s: &str) -> Result<i64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("--expires-in {s:?}: expected a number such as 30d"))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => bail!("--expires-in {s:?}: units are s, m, h, d"),
    };
    if n <= 0 {
        bail!("--expires-in must be positive");
    }
    Ok(n.saturating_mul(secs).saturating_mul(1000))
}

fn cli_event(
    action: &'static str,
    tenant: Option<String>,
    target: String,
    detail: serde_json::Value,
) -> AuditEvent {
    AuditEvent {
        request_id: None,
        tenant_id: tenant,
        key_id: None,
        action,
        target: Some(target),
        outcome: Outcome::Success,
        detail: serde_json::json!({"via": "cli", "detail": detail}),
    }
}

fn with_store<F, Fut>(dir: Option<PathBuf>, f: F) -> Result<()>
where
    F: FnOnce(Store) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let dir = data_dir(dir.as_deref())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let store = Store::open(&dir).await?;
        let r = f(store.clone()).await;
        store.close().await;
        r
    })
}

fn fmt_time(ms: Option<i64>) -> String {
    ms.map_or("-".into(), |t| format!("{}", t / 1000))
}

pub fn keys(cmd: KeysCommand) -> Result<()> {
    match cmd {
        KeysCommand::Create {
            tenant,
            name,
            scopes,
            expires_in,
            data_dir,
        } => with_store(data_dir, |s| async move {
            let t = s.tenant(&tenant).await?;
            let scopes = match scopes {
                Some(list) => Scope::parse_list(&list)?,
                None => Scope::defaults(),
            };
            let expires_at = expires_in
                .map(|e| parse_duration(&e).map(|d| nanoimg_store::ids::now_ms() + d))
                .transpose()?;
            let (rec, secret) = s
                .create_key(
                    &t.id,
                    &NewKey {
                        name,
                        scopes,
                        expires_at,
                    },
                )
                .await?;
            s.audit(cli_event(
                "key.create",
                Some(t.id.clone()),
                rec.id.clone(),
                serde_json::json!({"prefix": rec.prefix, "scopes": Scope::join(&rec.scopes)}),
            ))
            .await?;
            eprintln!("key {} for tenant {} (shown once):", rec.id, t.name);
            println!("{}", secret.expose());
            Ok(())
        }),
        KeysCommand::List { tenant, data_dir } => with_store(data_dir, |s| async move {
            let tid = match tenant {
                Some(t) => Some(s.tenant(&t).await?.id),
                None => None,
            };
            println!(
                "{:<32} {:<32} {:<12} {:<16} {:<11} {:<11} scopes",
                "id", "tenant", "prefix", "name", "expires", "revoked"
            );
            for k in s.keys(tid.as_deref()).await? {
                println!(
                    "{:<32} {:<32} {:<12} {:<16} {:<11} {:<11} {}",
                    k.id,
                    k.tenant_id,
                    k.prefix,
                    k.name,
                    fmt_time(k.expires_at),
                    fmt_time(k.revoked_at),
                    Scope::join(&k.scopes)
                );
            }
            Ok(())
        }),
        KeysCommand::Revoke { id, data_dir } => with_store(data_dir, |s| async move {
            let k = s.revoke_key(&id, None).await?;
            s.audit(cli_event(
                "key.revoke",
                Some(k.tenant_id.clone()),
                k.id.clone(),
                serde_json::json!({}),
            ))
            .await?;
            println!("revoked {}", k.id);
            Ok(())
        }),
        KeysCommand::Rotate { id, data_dir } => with_store(data_dir, |s| async move {
            let (k, secret) = s.rotate_key(&id, None).await?;
            s.audit(cli_event(
                "key.rotate",
                Some(k.tenant_id.clone()),
                k.id.clone(),
                serde_json::json!({"replaces": id}),
            ))
            .await?;
            eprintln!("key {} replaces {id}, which is now revoked (shown once):", k.id);
            println!("{}", secret.expose());
            Ok(())
        }),
    }
}

pub fn tenants(cmd: TenantsCommand) -> Result<()> {
    match cmd {
        TenantsCommand::Create { name, data_dir } => with_store(data_dir, |s| async move {
            let t = s.create_tenant(&name, false).await?;
            s.audit(cli_event(
                "tenant.create",
                Some(t.id.clone()),
                t.id.clone(),
                serde_json::json!({"name": t.name}),
            ))
            .await?;
            println!("{}", t.id);
            Ok(())
        }),
        TenantsCommand::List { data_dir } => with_store(data_dir, |s| async move {
            for t in s.tenants().await? {
                println!(
                    "{:<32} {:<24} {}",
                    t.id,
                    t.name,
                    if t.is_admin { "admin" } else { "" }
                );
            }
            Ok(())
        }),
    }
}
