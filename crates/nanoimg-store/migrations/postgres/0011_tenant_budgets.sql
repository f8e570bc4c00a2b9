-- Per-tenant overrides of the server's compute and storage budgets and key quota; NULL = the
-- server's default (rate.megapixel_steps_per_minute, rate.max_job_megapixel_steps,
-- rate.max_stored_bytes_per_tenant, rate.keys_per_tenant).
ALTER TABLE tenants ADD COLUMN megapixel_steps_per_minute BIGINT;
ALTER TABLE tenants ADD COLUMN max_job_megapixel_steps BIGINT;
ALTER TABLE tenants ADD COLUMN max_stored_bytes BIGINT;
ALTER TABLE tenants ADD COLUMN max_keys BIGINT;
