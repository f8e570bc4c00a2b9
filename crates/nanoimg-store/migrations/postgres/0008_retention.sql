-- Per-tenant retention: outputs, uploads, finished jobs (with their prompts) and edit sessions
-- older than this many days are deleted. NULL keeps them until the tenant deletes them.
ALTER TABLE tenants ADD COLUMN retention_days BIGINT;
