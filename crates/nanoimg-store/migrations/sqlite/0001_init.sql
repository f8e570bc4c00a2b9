-- Tenants own everything else. `is_admin` marks the operator tenant created on first start.
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    is_admin    INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);

-- API keys: only the SHA-256 of the secret is kept. `prefix` is the first characters of the key,
-- shown in listings so a user can tell keys apart.
CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL UNIQUE,
    scopes        TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    revoked_at    INTEGER,
    last_used_at  INTEGER,
    rotated_from  TEXT
);
CREATE INDEX api_keys_tenant ON api_keys(tenant_id);

-- Uploaded and generated images. The bytes live in the blob store under (tenant_id, id).
CREATE TABLE assets (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    kind        TEXT NOT NULL,
    media_type  TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    width       INTEGER NOT NULL,
    height      INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    job_id      TEXT,
    metadata    TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX assets_tenant ON assets(tenant_id, created_at);

-- Generation jobs. `params` is the validated request; `result` lists the output asset ids.
CREATE TABLE jobs (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    key_id       TEXT,
    kind         TEXT NOT NULL,
    detached     INTEGER NOT NULL,
    status       TEXT NOT NULL,
    params       TEXT NOT NULL,
    result       TEXT,
    error        TEXT,
    created_at   INTEGER NOT NULL,
    started_at   INTEGER,
    finished_at  INTEGER
);
CREATE INDEX jobs_tenant ON jobs(tenant_id, created_at);
CREATE INDEX jobs_status ON jobs(status);

-- Append-only record of who did what. Never holds key material.
CREATE TABLE audit_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    request_id  TEXT,
    tenant_id   TEXT,
    key_id      TEXT,
    action      TEXT NOT NULL,
    target      TEXT,
    outcome     TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX audit_tenant ON audit_events(tenant_id, seq);

-- The application never changes or removes an audit event; the database refuses to as well.
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
