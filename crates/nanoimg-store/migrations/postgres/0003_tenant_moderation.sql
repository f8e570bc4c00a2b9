-- Whether the operator lets a tenant ask for `moderation: low`. Off by default: such requests
-- are moderated at `auto`.
ALTER TABLE tenants ADD COLUMN allow_low_moderation BIGINT NOT NULL DEFAULT 0;
