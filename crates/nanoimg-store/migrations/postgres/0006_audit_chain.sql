-- The PostgreSQL twin of sqlite/0006_audit_chain.sql: the chain's columns, its lock row, signed
-- checkpoints, and the two updates the append-only rule allows.
ALTER TABLE audit_events ADD COLUMN detail_hash TEXT;
ALTER TABLE audit_events ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_events ADD COLUMN hash TEXT;

CREATE TABLE audit_chain (
    id      BIGINT PRIMARY KEY CHECK (id = 1),
    appends BIGINT NOT NULL
);
INSERT INTO audit_chain (id, appends) VALUES (1, 0);

CREATE TABLE audit_checkpoints (
    seq         BIGINT PRIMARY KEY,
    hash        TEXT NOT NULL,
    at          BIGINT NOT NULL,
    public_key  TEXT NOT NULL,
    signature   TEXT NOT NULL
);
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION nanoimg_append_only();
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION nanoimg_append_only();

-- Chaining an event written before this migration, and erasure's redaction, nothing else.
CREATE FUNCTION nanoimg_audit_update_allowed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.seq = OLD.seq AND NEW.at = OLD.at AND NEW.request_id IS NOT DISTINCT FROM OLD.request_id
        AND NEW.tenant_id IS NOT DISTINCT FROM OLD.tenant_id
        AND NEW.key_id IS NOT DISTINCT FROM OLD.key_id AND NEW.action = OLD.action
        AND NEW.target IS NOT DISTINCT FROM OLD.target AND NEW.outcome = OLD.outcome
        AND (
            (OLD.hash IS NULL AND NEW.detail = OLD.detail)
            OR (OLD.hash IS NOT NULL AND NEW.hash = OLD.hash AND NEW.prev_hash = OLD.prev_hash
                AND NEW.detail_hash = OLD.detail_hash AND NEW.detail = '{"redacted":true}')
        )
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_events is append-only';
END $$;
DROP TRIGGER audit_events_no_update ON audit_events;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION nanoimg_audit_update_allowed();
