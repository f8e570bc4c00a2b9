-- Per-tenant overrides of the server's rate limits; NULL = the server's default.
ALTER TABLE tenants ADD COLUMN requests_per_minute BIGINT;
ALTER TABLE tenants ADD COLUMN images_per_minute BIGINT;
ALTER TABLE tenants ADD COLUMN concurrent_jobs BIGINT;
