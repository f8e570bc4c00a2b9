-- Envelope encryption at rest: each tenant's data key, wrapped (AES-256-GCM) by the master key
-- whose id is stored beside it. The master key itself is never stored here. Deleting a row
-- makes everything encrypted under that key unreadable (erasure).
CREATE TABLE tenant_keys (
    tenant_id      TEXT PRIMARY KEY REFERENCES tenants(id),
    master_key_id  TEXT NOT NULL,
    wrapped        TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);

-- One-off tasks the store runs when it opens, until they are done: blobs and text fields
-- written before encryption are encrypted in place.
CREATE TABLE store_tasks (
    name     TEXT PRIMARY KEY,
    done_at  BIGINT
);
INSERT INTO store_tasks (name, done_at) VALUES ('encrypt_blobs', NULL);
INSERT INTO store_tasks (name, done_at) VALUES ('encrypt_fields', NULL);
