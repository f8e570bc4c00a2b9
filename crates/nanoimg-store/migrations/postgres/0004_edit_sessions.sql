-- Edit sessions: an image and the versions instructions made of it. Versions form a tree (each
-- has one parent, the root none); `head` is the version the next instruction applies to, and
-- `redo` is a JSON array used as a stack: the versions undo stepped back from, newest last.
CREATE TABLE edit_sessions (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    head        TEXT NOT NULL,
    redo        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX edit_sessions_tenant ON edit_sessions(tenant_id, created_at);

-- One version: its image (an asset of the same tenant), the instruction and the plan that made
-- it from its parent, and the job that ran the plan. `seq` orders versions within a session.
CREATE TABLE edit_versions (
    id          TEXT PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES edit_sessions(id) ON DELETE CASCADE,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    seq         BIGINT NOT NULL,
    parent_id   TEXT REFERENCES edit_versions(id),
    asset_id    TEXT NOT NULL,
    instruction TEXT,
    plan        TEXT,
    job_id      TEXT,
    created_at  BIGINT NOT NULL,
    UNIQUE (session_id, seq)
);
CREATE INDEX edit_versions_session ON edit_versions(session_id, seq);
