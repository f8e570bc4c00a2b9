//! `nanoimg keys …`, `nanoimg tenants …` and `nanoimg audit`: the same store the server uses,
//! from the shell.

use crate::serve::data_dir;
use anyhow::{bail, Result};
use clap::Subcommand;
use nanoimg_store::{AuditEvent, CheckpointKey, NewKey, Outcome, Scope, Store, TenantLimits};
use std::path::PathBuf;
use std::process::ExitCode;

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
        /// Comma-separated scopes [default: images:generate, images:edit, assets:read, assets:write,
        /// characters; add `account` for the tenant's owner, `admin` on the operator's tenant].
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
    /// Show a tenant's limits, or change them: a number, or `default` for the server's.
    Limits {
        /// Tenant name or id.
        tenant: String,
        /// Requests a minute, for all the tenant's keys together.
        #[arg(long)]
        requests_per_minute: Option<LimitArg>,
        /// Images a minute, for all the tenant's keys together.
        #[arg(long)]
        images_per_minute: Option<LimitArg>,
        /// Jobs queued or running at once, for the tenant.
        #[arg(long)]
        concurrent_jobs: Option<LimitArg>,
        /// Compute a minute, in megapixel-steps (pixels × steps × images × passes / 10^6).
        #[arg(long)]
        megapixel_steps_per_minute: Option<LimitArg>,
        /// The most one job may cost, in megapixel-steps.
        #[arg(long)]
        max_job_megapixel_steps: Option<LimitArg>,
        /// Bytes of images the tenant may keep.
        #[arg(long)]
        max_stored_bytes: Option<LimitArg<u64>>,
        /// Live keys the tenant may make for itself.
        #[arg(long)]
        max_keys: Option<LimitArg>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Let a tenant's requests use `moderation: low`, or stop them (they then get `auto`).
    Moderation {
        /// Tenant name or id.
        tenant: String,
        /// `true` or `false`.
        #[arg(long, action = clap::ArgAction::Set)]
        allow_low: bool,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Set how long a tenant's outputs, uploads, finished jobs (and their prompts) and edit
    /// sessions are kept: a number of days, or `off` to keep them. Applied hourly by the server.
    Retention {
        /// Tenant name or id.
        tenant: String,
        /// Days (1 to 3650) or `off`.
        #[arg(long)]
        days: String,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Erase a tenant and everything it owns, for real: its data key first, then its rows,
    /// images and the detail of its audit events. Cannot be undone. While the server runs,
    /// prefer `DELETE /v1/admin/tenants/{id}`, which also cancels the tenant's jobs.
    Erase {
        /// Tenant name or id.
        tenant: String,
        /// Confirm: nothing is erased without it.
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// A limit given on the command line: a number, or `default`.
#[derive(Debug, Clone, Copy)]
pub enum LimitArg<T = u32> {
    Default,
    Value(T),
}

impl<T: std::str::FromStr> std::str::FromStr for LimitArg<T> {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "default" {
            return Ok(LimitArg::Default);
        }
        s.parse()
            .map(LimitArg::Value)
            .map_err(|_| format!("{s:?}: expected a positive number or `default`"))
    }
}

impl<T> LimitArg<T> {
    fn apply(arg: Option<LimitArg<T>>, current: Option<T>) -> Option<T> {
        match arg {
            None => current,
            Some(LimitArg::Default) => None,
            Some(LimitArg::Value(v)) => Some(v),
        }
    }
}

/// `nanoimg audit`: the audit log, oldest first; `nanoimg audit verify` checks it.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: Option<AuditCommand>,
    #[command(flatten)]
    list: AuditListArgs,
}

#[derive(clap::Subcommand, Debug)]
enum AuditCommand {
    /// Walk the hash chain and check every signed checkpoint; exit 1 at the first bad entry.
    Verify(AuditVerifyArgs),
}

#[derive(clap::Args, Debug)]
struct AuditVerifyArgs {
    /// Check checkpoint signatures against this Ed25519 public key (hex) instead of the data
    /// directory's signing key (an auditor's copy of the key, kept elsewhere, is stronger).
    #[arg(long)]
    public_key: Option<String>,
    /// The witness file of checkpoints [default: the server's, `<data dir>/audit/checkpoints.jsonl`].
    #[arg(long)]
    witness: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct AuditListArgs {
    /// Only events of this tenant (name or id).
    #[arg(long)]
    tenant: Option<String>,
    /// Only events after this sequence number (to page on, oldest first).
    #[arg(long, default_value_t = 0, conflicts_with_all = ["newest", "before"])]
    after: i64,
    /// The end of the log, newest first.
    #[arg(long)]
    newest: bool,
    /// Newest first, from just before this sequence number (to page back; implies --newest).
    #[arg(long)]
    before: Option<i64>,
    /// At most this many events (1 to 1000).
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// One JSON object a line instead of a table.
    #[arg(long)]
    json: bool,
    #[arg(long)]
    data_dir: Option<PathBuf>,
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
    let options = crate::serve::config_for(&dir)?.store_options()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let store = Store::open_in(&dir, options).await?;
        let r = f(store.clone()).await;
        store.close().await;
        r
    })
}

fn fmt_time(ms: Option<i64>) -> String {
    ms.map_or("-".into(), utc)
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
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
            let t = s.system().tenant(&tenant).await?;
            let scopes = match scopes {
                Some(list) => Scope::parse_list(&list)?,
                None => Scope::defaults(),
            };
            let expires_at = expires_in
                .map(|e| parse_duration(&e).map(|d| nanoimg_store::ids::now_ms() + d))
                .transpose()?;
            let (rec, secret) = s
                .system()
                .create_key(
                    &t.id,
                    &NewKey {
                        name,
                        scopes,
                        expires_at,
                    },
                )
                .await?;
            s.system()
                .audit(cli_event(
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
                Some(t) => Some(s.system().tenant(&t).await?.id),
                None => None,
            };
            println!(
                "{:<32} {:<32} {:<12} {:<16} {:<11} {:<11} scopes",
                "id", "tenant", "prefix", "name", "expires", "revoked"
            );
            for k in s.system().keys(tid.as_deref()).await? {
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
            let k = s.system().revoke_key(&id, None).await?;
            s.system()
                .audit(cli_event(
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
            let (k, secret) = s.system().rotate_key(&id, None).await?;
            s.system()
                .audit(cli_event(
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
            let t = s.system().create_tenant(&name, false).await?;
            s.system()
                .audit(cli_event(
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
            for t in s.system().tenants().await? {
                println!(
                    "{:<32} {:<24} {}",
                    t.id,
                    t.name,
                    if t.is_admin { "admin" } else { "" }
                );
            }
            Ok(())
        }),
        TenantsCommand::Moderation {
            tenant,
            allow_low,
            data_dir,
        } => set_moderation(tenant, allow_low, data_dir),
        TenantsCommand::Retention {
            tenant,
            days,
            data_dir,
        } => {
            let days =
                match days.as_str() {
                    "off" => None,
                    d => Some(d.parse::<u32>().map_err(|_| {
                        anyhow::anyhow!("--days {d:?}: a number of days (1 to 3650) or `off`")
                    })?),
                };
            with_store(data_dir, |s| async move {
                let t = s.system().set_tenant_retention(&tenant, days).await?;
                s.system()
                    .audit(cli_event(
                        "tenant.retention",
                        Some(t.id.clone()),
                        t.id.clone(),
                        serde_json::json!({"days": days}),
                    ))
                    .await?;
                match t.retention_days {
                    Some(d) => println!("{}: retention {d} days", t.name),
                    None => println!("{}: retention off (kept until deleted)", t.name),
                }
                Ok(())
            })
        }
        TenantsCommand::Erase {
            tenant,
            yes,
            data_dir,
        } => with_store(data_dir, |s| async move {
            let t = s.system().tenant(&tenant).await?;
            if !yes {
                bail!(
                    "this erases tenant {} ({}) and everything it owns, for good; add --yes to do it",
                    t.name,
                    t.id
                );
            }
            let e = s.system().erase_tenant(&t.id).await?;
            s.system()
                .audit(cli_event(
                    "tenant.erase",
                    None,
                    e.tenant_id.clone(),
                    serde_json::json!({"rows": e.rows, "blobs": e.blobs, "audit_redacted": e.audit_redacted}),
                ))
                .await?;
            println!(
                "erased {}: {} rows, {} files, {} audit details redacted",
                e.tenant_id, e.rows, e.blobs, e.audit_redacted
            );
            Ok(())
        }),
        TenantsCommand::Limits {
            tenant,
            requests_per_minute,
            images_per_minute,
            concurrent_jobs,
            megapixel_steps_per_minute,
            max_job_megapixel_steps,
            max_stored_bytes,
            max_keys,
            data_dir,
        } => with_store(data_dir, |s| async move {
            let mut t = s.system().tenant(&tenant).await?;
            let now = t.limits;
            let limits = TenantLimits {
                requests_per_minute: LimitArg::apply(requests_per_minute, now.requests_per_minute),
                images_per_minute: LimitArg::apply(images_per_minute, now.images_per_minute),
                concurrent_jobs: LimitArg::apply(concurrent_jobs, now.concurrent_jobs),
                megapixel_steps_per_minute: LimitArg::apply(
                    megapixel_steps_per_minute,
                    now.megapixel_steps_per_minute,
                ),
                max_job_megapixel_steps: LimitArg::apply(
                    max_job_megapixel_steps,
                    now.max_job_megapixel_steps,
                ),
                max_stored_bytes: LimitArg::apply(max_stored_bytes, now.max_stored_bytes),
                max_keys: LimitArg::apply(max_keys, now.max_keys),
            };
            if limits != now {
                t = s.system().set_tenant_limits(&t.id, &limits).await?;
                s.system()
                    .audit(cli_event(
                        "tenant.limits",
                        Some(t.id.clone()),
                        t.id.clone(),
                        serde_json::to_value(limits)?,
                    ))
                    .await?;
            }
            let show = |v: Option<u64>| v.map_or("default".to_owned(), |v| v.to_string());
            let l = &t.limits;
            println!("allow_low_moderation {}", t.allow_low_moderation);
            for (name, v) in [
                ("requests_per_minute", l.requests_per_minute.map(u64::from)),
                ("images_per_minute", l.images_per_minute.map(u64::from)),
                ("concurrent_jobs", l.concurrent_jobs.map(u64::from)),
                (
                    "megapixel_steps_per_minute",
                    l.megapixel_steps_per_minute.map(u64::from),
                ),
                (
                    "max_job_megapixel_steps",
                    l.max_job_megapixel_steps.map(u64::from),
                ),
                ("max_stored_bytes", l.max_stored_bytes),
                ("max_keys", l.max_keys.map(u64::from)),
            ] {
                println!("{name:<26} {}", show(v));
            }
            Ok(())
        }),
    }
}

fn set_moderation(tenant: String, allow_low: bool, data_dir: Option<PathBuf>) -> Result<()> {
    with_store(data_dir, |s| async move {
        let t = s.system().set_tenant_low_moderation(&tenant, allow_low).await?;
        s.system()
            .audit(cli_event(
                "tenant.moderation",
                Some(t.id.clone()),
                t.id.clone(),
                serde_json::json!({"allow_low": allow_low}),
            ))
            .await?;
        println!("{}: allow_low_moderation {}", t.name, t.allow_low_moderation);
        Ok(())
    })
}

pub fn audit(args: AuditArgs) -> Result<ExitCode> {
    match args.command {
        Some(AuditCommand::Verify(v)) => verify_audit(v),
        None => list_audit(args.list).map(|()| ExitCode::SUCCESS),
    }
}

fn verify_audit(args: AuditVerifyArgs) -> Result<ExitCode> {
    let dir = data_dir(args.data_dir.as_deref())?;
    let witness_path = match args.witness {
        Some(w) => Some(w),
        None => crate::serve::config_for(&dir)?.audit_options().witness,
    };
    let witness = match &witness_path {
        Some(p) => nanoimg_store::read_witness(p)?,
        None => Vec::new(),
    };
    let key = args
        .public_key
        .as_deref()
        .map(CheckpointKey::from_hex)
        .transpose()?;
    let mut ok = true;
    with_store(args.data_dir, |s| {
        let ok = &mut ok;
        async move {
            let key = key.unwrap_or_else(|| s.system().audit_public_key());
            let r = s.system().verify_audit(&key, &witness).await?;
            *ok = r.ok();
            if args.json {
                println!("{}", serde_json::to_string(&r)?);
                return Ok(());
            }
            let checkpoints = match r.last_checkpoint {
                Some(seq) => format!(
                    "{} signed checkpoints verified (the newest covers event {seq})",
                    r.checkpoints_verified
                ),
                None => "no signed checkpoints yet".into(),
            };
            match &r.first_break {
                None => {
                    println!(
                        "audit log OK: {} events, head {}, {checkpoints}, {} redacted by erasure",
                        r.events,
                        r.head.as_deref().unwrap_or("-"),
                        r.redacted
                    );
                    println!("key {}", key.to_hex());
                }
                Some(b) => println!(
                    "audit log TAMPERED at event {} ({:?}): {}\n{} events verified before it",
                    b.seq, b.problem, b.message, r.events
                ),
            }
            Ok(())
        }
    })?;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn list_audit(args: AuditListArgs) -> Result<()> {
    with_store(args.data_dir, |s| async move {
        let tenant = match &args.tenant {
            Some(t) => Some(s.system().tenant(t).await?.id),
            None => None,
        };
        if !(1..=1000).contains(&args.limit) {
            bail!("--limit must be 1 to 1000");
        }
        let events = if args.newest || args.before.is_some() {
            s.system()
                .audit_events_newest(tenant.as_deref(), args.before, args.limit)
                .await?
        } else {
            s.system()
                .audit_events(tenant.as_deref(), args.after, args.limit)
                .await?
        };
        if args.json {
            for e in &events {
                println!("{}", serde_json::to_string(e)?);
            }
            return Ok(());
        }
        let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        for e in &events {
            println!(
                "{:>6}  {}  {:<16} {:<8} tenant={} key={} target={} {}",
                e.seq,
                utc(e.at),
                e.action,
                e.outcome,
                dash(&e.tenant_id),
                dash(&e.key_id),
                dash(&e.target),
                e.detail
            );
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(super::utc(1_795_521_599_999), "2026-11-24T11:59:59Z");
        assert_eq!(super::utc(-1000), "1969-12-31T23:59:59Z");
    }
}
