//! Edit sessions: an image and the versions that instructions made of it, turn by turn.
//!
//! Versions form a tree: each has one parent (the root none), so branching from an old version
//! is just another child. The session's `head` is the version the next instruction applies to;
//! undo moves it to the parent and pushes the old head on the session's redo stack, redo pops it
//! back, and anything that moves the head another way (a new version, a checkout) clears the
//! stack. Every change to a session is one statement or one transaction that starts by writing,
//! so two clients racing on one session see each other's change or a conflict, never half of it.

use crate::error::{corrupt, Result, StoreError};
use crate::ids::{looks_like_id, new_id, now_ms};
use crate::keys_at_rest::FieldKey;
use crate::Scoped;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

/// A session and its versions (oldest first).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EditSession {
    pub id: String,
    #[serde(skip)]
    pub tenant_id: String,
    /// The version the next instruction applies to.
    pub head: String,
    /// Versions that undo stepped back from; redo goes to the last.
    pub redo: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub versions: Vec<EditVersion>,
}

impl EditSession {
    /// The head version.
    pub fn head_version(&self) -> Option<&EditVersion> {
        self.version(&self.head)
    }

    /// One of this session's versions.
    pub fn version(&self, id: &str) -> Option<&EditVersion> {
        self.versions.iter().find(|v| v.id == id)
    }

    /// Whether undo has somewhere to go.
    pub fn can_undo(&self) -> bool {
        self.head_version().is_some_and(|v| v.parent_id.is_some())
    }
}

/// One version of the image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EditVersion {
    pub id: String,
    /// 0 for the root, then 1, 2, … in the order versions were made.
    pub seq: i64,
    pub parent_id: Option<String>,
    /// The image: an asset of the same tenant.
    pub asset_id: String,
    /// What the user asked for (none for the root).
    pub instruction: Option<String>,
    /// The validated plan that ran (none for the root).
    pub plan: Option<serde_json::Value>,
    /// The job that ran it.
    pub job_id: Option<String>,
    pub created_at: i64,
}

/// What to record about a new version.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub parent_id: String,
    pub asset_id: String,
    pub instruction: String,
    pub plan: serde_json::Value,
    pub job_id: Option<String>,
}

const VERSION_COLUMNS: &str = "id, seq, parent_id, asset_id, instruction, plan, job_id, created_at";

const INSTRUCTION: &str = "edit_versions.instruction";
const PLAN: &str = "edit_versions.plan";

/// A version row; `key` is its tenant's (instruction and plan are sealed with it).
fn version_from(row: &AnyRow, key: &FieldKey) -> Result<EditVersion> {
    let id: String = row.try_get("id")?;
    let plan = key.open_opt(PLAN, &id, row.try_get("plan")?)?;
    let instruction = key.open_opt(INSTRUCTION, &id, row.try_get("instruction")?)?;
    Ok(EditVersion {
        id,
        seq: row.try_get("seq")?,
        parent_id: row.try_get("parent_id")?,
        asset_id: row.try_get("asset_id")?,
        instruction,
        plan: plan
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt(format!("version plan: {e}")))?,
        job_id: row.try_get("job_id")?,
        created_at: row.try_get("created_at")?,
    })
}

fn redo_from(text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|e| corrupt(format!("session redo stack: {e}")))
}

fn redo_text(redo: &[String]) -> String {
    serde_json::to_string(redo).expect("a list of strings serialises")
}

const NOT_FOUND: StoreError = StoreError::NotFound("edit session");

impl Scoped<'_> {
    /// Starts a session on one of the tenant's images (an upload or an output): the root version.
    pub async fn create_session(&self, asset_id: &str) -> Result<EditSession> {
        let asset = self.asset(asset_id).await?;
        let (sid, vid, now) = (new_id("ses"), new_id("ver"), now_ms());
        let mut tx = self.store.db.pool.begin().await?;
        sqlx::query(
            "INSERT INTO edit_sessions (id, tenant_id, head, redo, created_at, updated_at) \
             VALUES ($1, $2, $3, '[]', $4, $5)",
        )
        .bind(&sid)
        .bind(self.tenant_id)
        .bind(&vid)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO edit_versions (id, session_id, tenant_id, seq, asset_id, created_at) \
             VALUES ($1, $2, $3, 0, $4, $5)",
        )
        .bind(&vid)
        .bind(&sid)
        .bind(self.tenant_id)
        .bind(&asset.id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.session(&sid).await
    }

    /// One session with its versions.
    pub async fn session(&self, id: &str) -> Result<EditSession> {
        if !looks_like_id(id, "ses") {
            return Err(NOT_FOUND);
        }
        let row = sqlx::query(
            "SELECT id, tenant_id, head, redo, created_at, updated_at FROM edit_sessions \
             WHERE id = $1 AND tenant_id = $2",
        )
        .bind(id)
        .bind(self.tenant_id)
        .fetch_optional(&self.store.db.pool)
        .await?
        .ok_or(NOT_FOUND)?;
        let key = self.store.field_key(self.tenant_id).await?;
        let versions = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM edit_versions WHERE session_id = $1 AND tenant_id = $2 \
             ORDER BY seq"
        ))
        .bind(id)
        .bind(self.tenant_id)
        .fetch_all(&self.store.db.pool)
        .await?
        .iter()
        .map(|r| version_from(r, &key))
        .collect::<Result<Vec<_>>>()?;
        let redo: String = row.try_get("redo")?;
        Ok(EditSession {
            id: row.try_get("id")?,
            tenant_id: row.try_get("tenant_id")?,
            head: row.try_get("head")?,
            redo: redo_from(&redo)?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            versions,
        })
    }

    /// The tenant's sessions, most recently changed first.
    pub async fn sessions(&self, limit: u32) -> Result<Vec<EditSession>> {
        let ids: Vec<String> = sqlx::query(
            "SELECT id FROM edit_sessions WHERE tenant_id = $1 \
             ORDER BY updated_at DESC, id DESC LIMIT $2",
        )
        .bind(self.tenant_id)
        .bind(i64::from(limit.clamp(1, 100)))
        .fetch_all(&self.store.db.pool)
        .await?
        .iter()
        .map(|r| r.try_get("id"))
        .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.session(&id).await?);
        }
        Ok(out)
    }

    /// Adds a version made from `new.parent_id` and makes it the head (clearing redo). The
    /// parent must be a version of this session and the image an asset of this tenant.
    pub async fn add_version(&self, session_id: &str, new: NewVersion) -> Result<EditVersion> {
        if !looks_like_id(session_id, "ses") {
            return Err(NOT_FOUND);
        }
        let (vid, now) = (new_id("ver"), now_ms());
        // The key before the transaction: making it writes, and the transaction holds the lock.
        let key = self.store.field_key(self.tenant_id).await?;
        let instruction = key.seal(INSTRUCTION, &vid, &new.instruction)?;
        let plan = key.seal(PLAN, &vid, &new.plan.to_string())?;
        let mut tx = self.store.db.pool.begin().await?;
        // Writing first takes the write lock, so the checks below cannot go stale.
        let moved = sqlx::query(
            "UPDATE edit_sessions SET head = $1, redo = '[]', updated_at = $2 \
             WHERE id = $3 AND tenant_id = $4",
        )
        .bind(&vid)
        .bind(now)
        .bind(session_id)
        .bind(self.tenant_id)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 0 {
            return Err(NOT_FOUND);
        }
        let parent = sqlx::query(
            "SELECT 1 AS one FROM edit_versions WHERE id = $1 AND session_id = $2 AND tenant_id = $3",
        )
        .bind(&new.parent_id)
        .bind(session_id)
        .bind(self.tenant_id)
        .fetch_optional(&mut *tx)
        .await?;
        if parent.is_none() {
            return Err(StoreError::NotFound("version"));
        }
        let asset = sqlx::query("SELECT 1 AS one FROM assets WHERE id = $1 AND tenant_id = $2")
            .bind(&new.asset_id)
            .bind(self.tenant_id)
            .fetch_optional(&mut *tx)
            .await?;
        if asset.is_none() {
            return Err(StoreError::NotFound("image"));
        }
        sqlx::query(
            "INSERT INTO edit_versions \
             (id, session_id, tenant_id, seq, parent_id, asset_id, instruction, plan, job_id, created_at) \
             SELECT $1, $2, $3, COALESCE(MAX(seq), 0) + 1, $4, $5, $6, $7, $8, $9 \
             FROM edit_versions WHERE session_id = $10",
        )
        .bind(&vid)
        .bind(session_id)
        .bind(self.tenant_id)
        .bind(&new.parent_id)
        .bind(&new.asset_id)
        .bind(instruction)
        .bind(plan)
        .bind(&new.job_id)
        .bind(now)
        .bind(session_id)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM edit_versions WHERE id = $1"
        ))
        .bind(&vid)
        .fetch_one(&mut *tx)
        .await?;
        let version = version_from(&row, &key)?;
        tx.commit().await?;
        Ok(version)
    }

    /// Steps the head back to its parent. Conflict if the head is the root.
    pub async fn undo(&self, session_id: &str) -> Result<EditSession> {
        let s = self.session(session_id).await?;
        let parent = s
            .head_version()
            .and_then(|v| v.parent_id.clone())
            .ok_or_else(|| StoreError::Conflict("nothing to undo: this is the first version".into()))?;
        let mut redo = s.redo.clone();
        redo.push(s.head.clone());
        self.move_head(&s, &parent, &redo).await
    }

    /// Steps the head forward to the version undo last left. Conflict if there is none.
    pub async fn redo(&self, session_id: &str) -> Result<EditSession> {
        let s = self.session(session_id).await?;
        let mut redo = s.redo.clone();
        let next = redo
            .pop()
            .ok_or_else(|| StoreError::Conflict("nothing to redo".into()))?;
        self.move_head(&s, &next, &redo).await
    }

    /// Makes any version of the session the head: the next instruction branches from it.
    pub async fn checkout(&self, session_id: &str, version_id: &str) -> Result<EditSession> {
        let s = self.session(session_id).await?;
        if s.version(version_id).is_none() {
            return Err(StoreError::NotFound("version"));
        }
        self.move_head(&s, version_id, &[]).await
    }

    /// Moves the head if the session is still as `s` saw it.
    async fn move_head(&self, s: &EditSession, head: &str, redo: &[String]) -> Result<EditSession> {
        let r = sqlx::query(
            "UPDATE edit_sessions SET head = $1, redo = $2, updated_at = $3 \
             WHERE id = $4 AND tenant_id = $5 AND head = $6 AND redo = $7",
        )
        .bind(head)
        .bind(redo_text(redo))
        .bind(now_ms())
        .bind(&s.id)
        .bind(self.tenant_id)
        .bind(&s.head)
        .bind(redo_text(&s.redo))
        .execute(&self.store.db.pool)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::Conflict(
                "the session changed while this request was made; look at it again and retry".into(),
            ));
        }
        self.session(&s.id).await
    }

    /// Deletes a session and its versions. Returns the ids of the images its instructions made
    /// (the root image is the caller's and stays), for the caller to delete.
    pub async fn delete_session(&self, session_id: &str) -> Result<Vec<String>> {
        let s = self.session(session_id).await?;
        let mut tx = self.store.db.pool.begin().await?;
        sqlx::query("DELETE FROM edit_sessions WHERE id = $1 AND tenant_id = $2")
            .bind(&s.id)
            .bind(self.tenant_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM edit_versions WHERE session_id = $1 AND tenant_id = $2")
            .bind(&s.id)
            .bind(self.tenant_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(s.versions
            .into_iter()
            .filter(|v| v.parent_id.is_some())
            .map(|v| v.asset_id)
            .collect())
    }
}
