//! Tenants, their API keys, and turning a presented key into a [`Principal`].

use crate::error::{corrupt, Result, StoreError};
use crate::ids::{new_id, now_ms};
use crate::keys::{self, Scope, SecretKey};
use crate::System;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;
use subtle::ConstantTimeEq;

/// A customer of the service; everything else belongs to one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    /// The operator tenant: its `admin`-scoped keys manage every tenant.
    pub is_admin: bool,
    pub created_at: i64,
    /// Overrides of the server's limits for this tenant.
    pub limits: TenantLimits,
    /// Whether requests may ask for `moderation: low` (otherwise they get `auto`).
    pub allow_low_moderation: bool,
    /// Days after which outputs, uploads, finished jobs and edit sessions are deleted; `None`
    /// keeps them (see [`crate::retention`]).
    pub retention_days: Option<u32>,
}

/// A tenant's own limits; `None` = the server's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    /// Requests a minute, for all the tenant's keys together.
    pub requests_per_minute: Option<u32>,
    /// Images a minute, for all the tenant's keys together.
    pub images_per_minute: Option<u32>,
    /// Jobs queued or running at once, for the whole tenant.
    pub concurrent_jobs: Option<u32>,
    /// Compute a minute, in megapixel-steps, for all the tenant's keys together.
    pub megapixel_steps_per_minute: Option<u32>,
    /// The most one job may cost, in megapixel-steps.
    pub max_job_megapixel_steps: Option<u32>,
    /// Bytes of images the tenant may keep.
    pub max_stored_bytes: Option<u64>,
    /// Live keys the tenant may make for itself.
    pub max_keys: Option<u32>,
}

impl TenantLimits {
    /// The most any override may be: beyond this a limit is no limit.
    pub const MAX_RATE: u32 = 1_000_000;
    pub const MAX_CONCURRENT: u32 = 10_000;
    /// A pebibyte.
    pub const MAX_STORED_BYTES: u64 = 1 << 50;
    pub const MAX_KEYS: u32 = 10_000;

    fn check(&self) -> Result<()> {
        let wide = |v: Option<u32>| v.map(u64::from);
        let rates = [
            (
                "requests_per_minute",
                wide(self.requests_per_minute),
                u64::from(Self::MAX_RATE),
            ),
            (
                "images_per_minute",
                wide(self.images_per_minute),
                u64::from(Self::MAX_RATE),
            ),
            (
                "concurrent_jobs",
                wide(self.concurrent_jobs),
                u64::from(Self::MAX_CONCURRENT),
            ),
            (
                "megapixel_steps_per_minute",
                wide(self.megapixel_steps_per_minute),
                u64::from(Self::MAX_RATE),
            ),
            (
                "max_job_megapixel_steps",
                wide(self.max_job_megapixel_steps),
                u64::from(Self::MAX_RATE),
            ),
            ("max_stored_bytes", self.max_stored_bytes, Self::MAX_STORED_BYTES),
            ("max_keys", wide(self.max_keys), u64::from(Self::MAX_KEYS)),
        ];
        for (name, v, max) in rates {
            if v.is_some_and(|v| v == 0 || v > max) {
                return Err(StoreError::Invalid(format!(
                    "{name} must be 1 to {max}, or null for the server's default"
                )));
            }
        }
        Ok(())
    }
}

/// An API key as stored: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRecord {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// `nimg_` and the first characters of the key, to tell keys apart.
    pub prefix: String,
    pub scopes: Vec<Scope>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    /// The key this one replaced, for keys made by rotation.
    pub rotated_from: Option<String>,
}

impl KeyRecord {
    /// Whether the key is valid at `now` (ms).
    pub fn active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }

    /// Whether the key carries `scope`.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// What a new key should be.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub name: String,
    pub scopes: Vec<Scope>,
    /// Expiry in ms since the epoch; `None` never expires.
    pub expires_at: Option<i64>,
}

/// Who is calling: the key and its tenant.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: Tenant,
    pub key: KeyRecord,
}

impl Principal {
    /// Whether the key carries `scope`; `admin` counts only on the operator tenant.
    pub fn can(&self, scope: Scope) -> bool {
        self.key.has(scope) && (scope != Scope::Admin || self.tenant.is_admin)
    }
}

/// Why a presented key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// Not shaped like a NanoImg key, or its checksum is wrong.
    Malformed,
    /// Well formed but not ours.
    Unknown,
    Revoked,
    Expired,
}

impl AuthFailure {
    /// A message for the caller.
    pub fn message(self) -> &'static str {
        match self {
            AuthFailure::Malformed => {
                "the API key is malformed: NanoImg keys look like nimg_<32 characters>_<6 characters>"
            }
            AuthFailure::Unknown => "the API key is not valid",
            AuthFailure::Revoked => "the API key has been revoked",
            AuthFailure::Expired => "the API key has expired",
        }
    }

    /// A short machine-readable reason (metrics labels, audit).
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::Malformed => "malformed_key",
            AuthFailure::Unknown => "unknown_key",
            AuthFailure::Revoked => "revoked_key",
            AuthFailure::Expired => "expired_key",
        }
    }
}

const MAX_NAME: usize = 100;

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.trim().is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(StoreError::Invalid(format!(
            "{what} name must be 1 to {MAX_NAME} bytes of printable text"
        )));
    }
    Ok(())
}

/// A tenant from a row whose tenant columns are named `{prefix}id`, `{prefix}name`, ….
fn tenant_from(row: &AnyRow, prefix: &str) -> Result<Tenant> {
    let col = |c: &str| format!("{prefix}{c}");
    let wide = |c: &str| -> Result<Option<u64>> {
        row.try_get::<Option<i64>, _>(col(c).as_str())?
            .map(|v| u64::try_from(v).map_err(|_| corrupt(format!("tenant {c}: {v}"))))
            .transpose()
    };
    let limit = |c: &str| -> Result<Option<u32>> {
        wide(c)?
            .map(|v| u32::try_from(v).map_err(|_| corrupt(format!("tenant {c}: {v}"))))
            .transpose()
    };
    Ok(Tenant {
        id: row.try_get(col("id").as_str())?,
        name: row.try_get(col("name").as_str())?,
        is_admin: row.try_get::<i64, _>(col("is_admin").as_str())? != 0,
        created_at: row.try_get(col("created_at").as_str())?,
        allow_low_moderation: row.try_get::<i64, _>(col("allow_low_moderation").as_str())? != 0,
        retention_days: limit("retention_days")?,
        limits: TenantLimits {
            requests_per_minute: limit("requests_per_minute")?,
            images_per_minute: limit("images_per_minute")?,
            concurrent_jobs: limit("concurrent_jobs")?,
            megapixel_steps_per_minute: limit("megapixel_steps_per_minute")?,
            max_job_megapixel_steps: limit("max_job_megapixel_steps")?,
            max_stored_bytes: wide("max_stored_bytes")?,
            max_keys: limit("max_keys")?,
        },
    })
}

const TENANT_COLUMNS: [&str; 13] = [
    "id",
    "name",
    "is_admin",
    "created_at",
    "requests_per_minute",
    "images_per_minute",
    "concurrent_jobs",
    "megapixel_steps_per_minute",
    "max_job_megapixel_steps",
    "max_stored_bytes",
    "max_keys",
    "allow_low_moderation",
    "retention_days",
];

/// `SELECT` list of the tenant columns of table alias `t`, each renamed `{prefix}{column}`.
fn tenant_select(prefix: &str) -> String {
    TENANT_COLUMNS
        .iter()
        .map(|c| format!("t.{c} AS {prefix}{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn key_from(row: &AnyRow) -> Result<KeyRecord> {
    let scopes: String = row.try_get("scopes")?;
    Ok(KeyRecord {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        scopes: Scope::parse_list(&scopes).map_err(|e| corrupt(format!("key scopes: {e}")))?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        last_used_at: row.try_get("last_used_at")?,
        rotated_from: row.try_get("rotated_from")?,
    })
}

const KEY_COLUMNS: &str = "id, tenant_id, name, prefix, scopes, created_at, expires_at, \
                           revoked_at, last_used_at, rotated_from";

/// How often `last_used_at` is refreshed: once a minute per key is enough to be useful and
/// keeps authentication from writing on every request.
const LAST_USED_RESOLUTION_MS: i64 = 60_000;

impl System<'_> {
    /// Creates a tenant. Names are unique.
    pub async fn create_tenant(&self, name: &str, is_admin: bool) -> Result<Tenant> {
        check_name("tenant", name)?;
        if crate::ids::looks_like_id(name, "ten") {
            return Err(StoreError::Invalid(
                "a tenant name cannot look like a tenant id".into(),
            ));
        }
        let t = Tenant {
            id: new_id("ten"),
            name: name.to_owned(),
            is_admin,
            created_at: now_ms(),
            limits: TenantLimits::default(),
            allow_low_moderation: false,
            retention_days: None,
        };
        let r = sqlx::query("INSERT INTO tenants (id, name, is_admin, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&t.id)
            .bind(&t.name)
            .bind(i64::from(is_admin))
            .bind(t.created_at)
            .execute(&self.store.db.pool)
            .await;
        match r {
            Ok(_) => Ok(t),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict(format!(
                "a tenant named {name:?} already exists"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// All tenants, oldest first.
    pub async fn tenants(&self) -> Result<Vec<Tenant>> {
        sqlx::query(&format!(
            "SELECT {} FROM tenants t ORDER BY t.created_at, t.id",
            tenant_select("")
        ))
        .fetch_all(&self.store.db.pool)
        .await?
        .iter()
        .map(|r| tenant_from(r, ""))
        .collect()
    }

    /// One tenant by id or by name.
    pub async fn tenant(&self, id_or_name: &str) -> Result<Tenant> {
        let row = sqlx::query(&format!(
            "SELECT {} FROM tenants t WHERE t.id = $1 OR t.name = $2",
            tenant_select("")
        ))
        .bind(id_or_name)
        .bind(id_or_name)
        .fetch_optional(&self.store.db.pool)
        .await?;
        row.as_ref()
            .map(|r| tenant_from(r, ""))
            .transpose()?
            .ok_or(StoreError::NotFound("tenant"))
    }

    /// Lets a tenant's requests use `moderation: low`, or stops them; returns the tenant.
    pub async fn set_tenant_low_moderation(&self, id_or_name: &str, allow: bool) -> Result<Tenant> {
        let t = self.tenant(id_or_name).await?;
        sqlx::query("UPDATE tenants SET allow_low_moderation = $1 WHERE id = $2")
            .bind(i64::from(allow))
            .bind(&t.id)
            .execute(&self.store.db.pool)
            .await?;
        self.tenant(&t.id).await
    }

    /// Replaces a tenant's limit overrides; returns the tenant as it now is.
    pub async fn set_tenant_limits(&self, id_or_name: &str, limits: &TenantLimits) -> Result<Tenant> {
        limits.check()?;
        let t = self.tenant(id_or_name).await?;
        sqlx::query(
            "UPDATE tenants SET requests_per_minute = $1, images_per_minute = $2, \
             concurrent_jobs = $3, megapixel_steps_per_minute = $4, \
             max_job_megapixel_steps = $5, max_stored_bytes = $6, max_keys = $7 WHERE id = $8",
        )
        .bind(limits.requests_per_minute.map(i64::from))
        .bind(limits.images_per_minute.map(i64::from))
        .bind(limits.concurrent_jobs.map(i64::from))
        .bind(limits.megapixel_steps_per_minute.map(i64::from))
        .bind(limits.max_job_megapixel_steps.map(i64::from))
        // Checked above: at most MAX_STORED_BYTES, which fits.
        .bind(limits.max_stored_bytes.map(|b| b as i64))
        .bind(limits.max_keys.map(i64::from))
        .bind(&t.id)
        .execute(&self.store.db.pool)
        .await?;
        self.tenant(&t.id).await
    }

    /// Creates a key for a tenant; the returned secret is the only copy.
    pub async fn create_key(&self, tenant_id: &str, new: &NewKey) -> Result<(KeyRecord, SecretKey)> {
        self.insert_key(tenant_id, new, None).await
    }

    async fn insert_key(
        &self,
        tenant_id: &str,
        new: &NewKey,
        rotated_from: Option<&str>,
    ) -> Result<(KeyRecord, SecretKey)> {
        check_name("key", &new.name)?;
        if new.scopes.is_empty() {
            return Err(StoreError::Invalid("a key needs at least one scope".into()));
        }
        let tenant = self.tenant(tenant_id).await?;
        if new.scopes.contains(&Scope::Admin) && !tenant.is_admin {
            return Err(StoreError::Invalid(
                "only the operator tenant's keys may have the admin scope".into(),
            ));
        }
        let now = now_ms();
        if new.expires_at.is_some_and(|e| e <= now) {
            return Err(StoreError::Invalid("the expiry is in the past".into()));
        }
        let secret = SecretKey::generate();
        let mut scopes = new.scopes.clone();
        scopes.sort();
        scopes.dedup();
        let rec = KeyRecord {
            id: new_id("key"),
            tenant_id: tenant.id,
            name: new.name.clone(),
            prefix: keys::display_prefix(secret.expose()).to_owned(),
            scopes,
            created_at: now,
            expires_at: new.expires_at,
            revoked_at: None,
            last_used_at: None,
            rotated_from: rotated_from.map(str::to_owned),
        };
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, prefix, secret_sha256, scopes, created_at, \
             expires_at, rotated_from) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&rec.id)
        .bind(&rec.tenant_id)
        .bind(&rec.name)
        .bind(&rec.prefix)
        .bind(keys::fingerprint(secret.expose()))
        .bind(Scope::join(&rec.scopes))
        .bind(rec.created_at)
        .bind(rec.expires_at)
        .bind(&rec.rotated_from)
        .execute(&self.store.db.pool)
        .await?;
        Ok((rec, secret))
    }

    /// Keys, of one tenant or of all, oldest first.
    pub async fn keys(&self, tenant_id: Option<&str>) -> Result<Vec<KeyRecord>> {
        let rows = match tenant_id {
            Some(t) => {
                sqlx::query(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id"
                ))
                .bind(t)
                .fetch_all(&self.store.db.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"
                ))
                .fetch_all(&self.store.db.pool)
                .await?
            }
        };
        rows.iter().map(key_from).collect()
    }

    /// One key by id, limited to a tenant when `tenant_id` is given.
    pub async fn key(&self, id: &str, tenant_id: Option<&str>) -> Result<KeyRecord> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1 AND ($2 IS NULL OR tenant_id = $3)"
        ))
        .bind(id)
        .bind(tenant_id)
        .bind(tenant_id)
        .fetch_optional(&self.store.db.pool)
        .await?;
        row.as_ref()
            .map(key_from)
            .transpose()?
            .ok_or(StoreError::NotFound("key"))
    }

    /// Revokes a key (idempotent); returns it as it now is.
    pub async fn revoke_key(&self, id: &str, tenant_id: Option<&str>) -> Result<KeyRecord> {
        let key = self.key(id, tenant_id).await?;
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now_ms())
            .bind(&key.id)
            .execute(&self.store.db.pool)
            .await?;
        self.key(id, tenant_id).await
    }

    /// Replaces a key with a new one with the same name, scopes and expiry, and revokes the old
    /// one, in one transaction's worth of effect (the new key exists before the old one stops).
    pub async fn rotate_key(&self, id: &str, tenant_id: Option<&str>) -> Result<(KeyRecord, SecretKey)> {
        let old = self.key(id, tenant_id).await?;
        if !old.active(now_ms()) {
            return Err(StoreError::Invalid(
                "this key is revoked or expired; create a new one instead".into(),
            ));
        }
        let new = NewKey {
            name: old.name.clone(),
            scopes: old.scopes.clone(),
            expires_at: old.expires_at,
        };
        let made = self.insert_key(&old.tenant_id, &new, Some(&old.id)).await?;
        self.revoke_key(&old.id, None).await?;
        Ok(made)
    }

    /// Checks a presented key. Malformed keys are refused without a query; otherwise the key is
    /// found by its SHA-256 and the stored hash compared in constant time.
    pub async fn authenticate(&self, presented: &str) -> Result<Result<Principal, AuthFailure>> {
        if !keys::well_formed(presented) {
            return Ok(Err(AuthFailure::Malformed));
        }
        let fp = keys::fingerprint(presented);
        // One query for the key and its tenant: this runs on every request.
        static QUERY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            let key_columns: Vec<String> = KEY_COLUMNS
                .split(',')
                .map(|c| format!("k.{}", c.trim()))
                .collect();
            format!(
                "SELECT {}, k.secret_sha256, {} FROM api_keys k \
                 JOIN tenants t ON t.id = k.tenant_id WHERE k.secret_sha256 = $1",
                key_columns.join(", "),
                tenant_select("t_")
            )
        });
        let row = sqlx::query(&QUERY)
            .bind(&fp)
            .fetch_optional(&self.store.db.pool)
            .await?;
        let Some(row) = row else {
            return Ok(Err(AuthFailure::Unknown));
        };
        let stored: String = row.try_get("secret_sha256")?;
        if !bool::from(stored.as_bytes().ct_eq(fp.as_bytes())) {
            return Ok(Err(AuthFailure::Unknown));
        }
        let key = key_from(&row)?;
        let now = now_ms();
        if key.revoked_at.is_some() {
            return Ok(Err(AuthFailure::Revoked));
        }
        if key.expires_at.is_some_and(|e| e <= now) {
            return Ok(Err(AuthFailure::Expired));
        }
        if key
            .last_used_at
            .is_none_or(|t| now - t >= LAST_USED_RESOLUTION_MS)
        {
            sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(&key.id)
                .execute(&self.store.db.pool)
                .await?;
        }
        let tenant = tenant_from(&row, "t_")?;
        Ok(Ok(Principal { tenant, key }))
    }
}
