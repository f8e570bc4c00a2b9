-- Tamper evidence for the audit log. Each event carries the SHA-256 of its detail and a hash
-- over its fields and the previous event's hash (a chain); signed checkpoints of the chain's head
-- make removing the newest events detectable too. Events written before this migration are
-- chained by the store when it opens (in order, once).
ALTER TABLE audit_events ADD COLUMN detail_hash TEXT;
ALTER TABLE audit_events ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_events ADD COLUMN hash TEXT;

-- One row, updated by every append before it reads the head: appenders (threads or processes)
-- queue on its lock, so two events never chain to the same predecessor.
CREATE TABLE audit_chain (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    appends INTEGER NOT NULL
);
INSERT INTO audit_chain (id, appends) VALUES (1, 0);

-- (seq, hash) of the chain's head, signed with the operator's Ed25519 key.
CREATE TABLE audit_checkpoints (
    seq         INTEGER PRIMARY KEY,
    hash        TEXT NOT NULL,
    at          INTEGER NOT NULL,
    public_key  TEXT NOT NULL,
    signature   TEXT NOT NULL
);
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;

-- Two updates are allowed, nothing else: chaining an event written before this migration, and
-- erasure replacing a detail with {"redacted":true} (its detail_hash stays, so the chain holds).
DROP TRIGGER audit_events_no_update;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
WHEN NOT (
    NEW.seq = OLD.seq AND NEW.at = OLD.at AND NEW.request_id IS OLD.request_id
    AND NEW.tenant_id IS OLD.tenant_id AND NEW.key_id IS OLD.key_id AND NEW.action = OLD.action
    AND NEW.target IS OLD.target AND NEW.outcome = OLD.outcome
    AND (
        (OLD.hash IS NULL AND NEW.detail = OLD.detail)
        OR (OLD.hash IS NOT NULL AND NEW.hash = OLD.hash AND NEW.prev_hash = OLD.prev_hash
            AND NEW.detail_hash = OLD.detail_hash AND NEW.detail = '{"redacted":true}')
    )
)
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
