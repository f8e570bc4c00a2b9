//! Characters: a person, creature or mascot defined once (a name, a description, reference
//! images, an optional LoRA) and used in many generations.
//!
//! The reference images are assets of kind `reference`: they are written with the character and
//! deleted with it, and cannot be deleted on their own. The LoRA is a blob beside them. Creating
//! writes the blobs first and the rows in one transaction, removing the blobs again if the rows
//! cannot be written, so a listed character always has its files and a failed one leaves none.

use crate::assets::NewAsset;
use crate::error::{Result, StoreError};
use crate::ids::{looks_like_id, new_id, now_ms};
use crate::keys_at_rest::FieldKey;
use crate::Scoped;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

/// Most reference images a character has.
pub const MAX_REFERENCES: usize = 8;
/// Longest name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest description, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 1000;

/// A character and its references (in order).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Character {
    pub id: String,
    #[serde(skip)]
    pub tenant_id: String,
    pub name: String,
    pub description: String,
    /// Default reference strength (0–1).
    pub strength: f64,
    /// Seed of the reference pass.
    pub seed: u64,
    /// Size of the LoRA file, if it has one.
    pub lora_bytes: Option<i64>,
    pub references: Vec<CharacterReference>,
    pub created_at: i64,
}

/// One reference image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CharacterReference {
    pub position: i64,
    pub asset_id: String,
    /// Faces the detector found; `None` when the face layer was off.
    pub faces: Option<i64>,
    /// Whether the uploader attested that the people shown consented.
    pub consent: bool,
}

/// A reference image to store: its PNG bytes and what the checks found.
#[derive(Debug, Clone)]
pub struct NewReference {
    pub png: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub faces: Option<u32>,
    pub consent: bool,
}

/// What to record about a new character.
#[derive(Debug, Clone)]
pub struct NewCharacter {
    pub name: String,
    pub description: String,
    pub strength: f64,
    pub seed: u64,
    pub references: Vec<NewReference>,
    pub lora: Option<Vec<u8>>,
}

impl NewCharacter {
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(StoreError::Invalid(m));
        let chars = self.name.chars().count();
        if chars == 0 || chars > MAX_NAME_CHARS || self.name.trim() != self.name {
            return bad(format!(
                "name: 1 to {MAX_NAME_CHARS} characters without leading or trailing spaces"
            ));
        }
        if self.name.chars().any(char::is_control)
            || self.description.chars().any(|c| c.is_control() && c != '\n')
        {
            return bad("name and description may not contain control characters".into());
        }
        if self.description.len() > MAX_DESCRIPTION_BYTES {
            return bad(format!("description: at most {MAX_DESCRIPTION_BYTES} bytes"));
        }
        if !(0.0..=1.0).contains(&self.strength) {
            return bad("strength: 0 to 1".into());
        }
        if self.references.is_empty() || self.references.len() > MAX_REFERENCES {
            return bad(format!("references: 1 to {MAX_REFERENCES} images"));
        }
        Ok(())
    }
}

const NOT_FOUND: StoreError = StoreError::NotFound("character");

fn lora_blob(id: &str) -> String {
    format!("{id}_lora")
}

const DESCRIPTION: &str = "characters.description";

/// A character row; `key` is its tenant's (the description is sealed with it).
fn character_from(row: &AnyRow, key: &FieldKey) -> Result<Character> {
    let seed: i64 = row.try_get("seed")?;
    let id: String = row.try_get("id")?;
    let description = key.open(DESCRIPTION, &id, &row.try_get::<String, _>("description")?)?;
    Ok(Character {
        id,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        description,
        strength: row.try_get("strength")?,
        seed: seed as u64,
        lora_bytes: row.try_get("lora_bytes")?,
        references: Vec::new(),
        created_at: row.try_get("created_at")?,
    })
}

const COLUMNS: &str = "id, tenant_id, name, description, strength, seed, lora_bytes, created_at";

impl Scoped<'_> {
    /// Creates a character with its references and LoRA; see the module notes for the order.
    pub async fn create_character(&self, new: NewCharacter) -> Result<Character> {
        new.validate()?;
        let id = new_id("chr");
        let mut assets = Vec::with_capacity(new.references.len());
        let lora_name = lora_blob(&id);
        let cleanup = |assets: Vec<String>| {
            let lora_name = lora_name.clone();
            async move {
                for a in assets {
                    let _ = self.delete_asset_unchecked(&a).await;
                }
                let _ = self.store.blobs.delete(self.tenant_id, &lora_name).await;
            }
        };
        for (i, r) in new.references.iter().enumerate() {
            let put = self
                .put_asset(
                    NewAsset {
                        kind: "reference",
                        media_type: "image/png".into(),
                        width: r.width,
                        height: r.height,
                        job_id: None,
                        metadata: serde_json::json!({"character_id": id, "position": i}),
                    },
                    &r.png,
                )
                .await;
            match put {
                Ok(a) => assets.push(a.id),
                Err(e) => {
                    cleanup(assets).await;
                    return Err(e);
                }
            }
        }
        if let Some(lora) = &new.lora {
            if let Err(e) = self.put_blob(&lora_name, lora).await {
                cleanup(assets).await;
                return Err(e);
            }
        }
        let written = self.insert_character(&id, &new, &assets).await;
        if let Err(e) = written {
            cleanup(assets).await;
            return Err(e);
        }
        self.character(&id).await
    }

    async fn insert_character(&self, id: &str, new: &NewCharacter, assets: &[String]) -> Result<()> {
        let description =
            self.store
                .field_key(self.tenant_id)
                .await?
                .seal(DESCRIPTION, id, &new.description)?;
        let mut tx = self.store.db.pool.begin().await?;
        let r = sqlx::query(&format!(
            "INSERT INTO characters ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(id)
        .bind(self.tenant_id)
        .bind(&new.name)
        .bind(description)
        .bind(new.strength)
        .bind(new.seed as i64)
        .bind(new.lora.as_ref().map(|l| l.len() as i64))
        .bind(now_ms())
        .execute(&mut *tx)
        .await;
        if let Err(e) = r {
            let unique = e.as_database_error().is_some_and(|d| d.is_unique_violation());
            return Err(if unique {
                StoreError::Conflict(format!("a character named {:?} already exists", new.name))
            } else {
                e.into()
            });
        }
        for (i, (r, asset)) in new.references.iter().zip(assets).enumerate() {
            sqlx::query(
                "INSERT INTO character_references (character_id, tenant_id, position, asset_id, faces, consent) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
            .bind(self.tenant_id)
            .bind(i as i64)
            .bind(asset)
            .bind(r.faces.map(i64::from))
            .bind(i64::from(r.consent))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn references(&self, c: &mut Character) -> Result<()> {
        let rows = sqlx::query(
            "SELECT position, asset_id, faces, consent FROM character_references \
             WHERE character_id = $1 AND tenant_id = $2 ORDER BY position",
        )
        .bind(&c.id)
        .bind(self.tenant_id)
        .fetch_all(&self.store.db.pool)
        .await?;
        c.references = rows
            .iter()
            .map(|r| {
                let consent: i64 = r.try_get("consent")?;
                Ok(CharacterReference {
                    position: r.try_get("position")?,
                    asset_id: r.try_get("asset_id")?,
                    faces: r.try_get("faces")?,
                    consent: consent != 0,
                })
            })
            .collect::<Result<_>>()?;
        Ok(())
    }

    /// One character with its references.
    pub async fn character(&self, id: &str) -> Result<Character> {
        if !looks_like_id(id, "chr") {
            return Err(NOT_FOUND);
        }
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM characters WHERE id = $1 AND tenant_id = $2"
        ))
        .bind(id)
        .bind(self.tenant_id)
        .fetch_optional(&self.store.db.pool)
        .await?
        .ok_or(NOT_FOUND)?;
        let mut c = character_from(&row, &self.store.field_key(self.tenant_id).await?)?;
        self.references(&mut c).await?;
        Ok(c)
    }

    /// The ids of all the tenant's characters.
    pub async fn character_ids(&self) -> Result<Vec<String>> {
        sqlx::query("SELECT id FROM characters WHERE tenant_id = $1")
            .bind(self.tenant_id)
            .fetch_all(&self.store.db.pool)
            .await?
            .iter()
            .map(|r| Ok(r.try_get("id")?))
            .collect()
    }

    /// The tenant's characters, newest first.
    pub async fn characters(&self, limit: u32) -> Result<Vec<Character>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM characters WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
        ))
        .bind(self.tenant_id)
        .bind(i64::from(limit.clamp(1, 100)))
        .fetch_all(&self.store.db.pool)
        .await?;
        let key = self.store.field_key(self.tenant_id).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut c = character_from(row, &key)?;
            self.references(&mut c).await?;
            out.push(c);
        }
        Ok(out)
    }

    /// The character's LoRA file, if it has one.
    pub async fn character_lora(&self, c: &Character) -> Result<Option<Vec<u8>>> {
        if c.lora_bytes.is_none() || c.tenant_id != self.tenant_id {
            return Ok(None);
        }
        Ok(Some(self.get_blob(&lora_blob(&c.id)).await?))
    }

    /// Deletes a character: its rows, then its reference images and LoRA. Returns the deleted
    /// character.
    pub async fn delete_character(&self, id: &str) -> Result<Character> {
        let c = self.character(id).await?;
        let mut tx = self.store.db.pool.begin().await?;
        sqlx::query("DELETE FROM character_references WHERE character_id = $1 AND tenant_id = $2")
            .bind(&c.id)
            .bind(self.tenant_id)
            .execute(&mut *tx)
            .await?;
        let gone = sqlx::query("DELETE FROM characters WHERE id = $1 AND tenant_id = $2")
            .bind(&c.id)
            .bind(self.tenant_id)
            .execute(&mut *tx)
            .await?;
        if gone.rows_affected() == 0 {
            return Err(NOT_FOUND);
        }
        tx.commit().await?;
        for r in &c.references {
            self.delete_asset_unchecked(&r.asset_id).await?;
        }
        self.store.blobs.delete(self.tenant_id, &lora_blob(&c.id)).await?;
        Ok(c)
    }
}
