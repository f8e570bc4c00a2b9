-- Characters: a name, a description and 1–8 reference images (assets of kind `reference`,
-- deleted with the character), an optional LoRA (a blob named `<id>_lora`), a default strength
-- and seed. Names are unique per tenant.
CREATE TABLE characters (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    name          TEXT NOT NULL,
    description   TEXT NOT NULL,
    strength      DOUBLE PRECISION NOT NULL,
    seed          BIGINT NOT NULL,
    lora_bytes    BIGINT,
    created_at    BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE INDEX characters_tenant ON characters(tenant_id, created_at);

-- One reference image: its place, its asset, how many faces the detector saw (NULL when the
-- face layer was off) and whether the uploader attested consent.
CREATE TABLE character_references (
    character_id  TEXT NOT NULL REFERENCES characters(id) ON DELETE CASCADE,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    position      BIGINT NOT NULL,
    asset_id      TEXT NOT NULL,
    faces         BIGINT,
    consent       BIGINT NOT NULL,
    PRIMARY KEY (character_id, position)
);
