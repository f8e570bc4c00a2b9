-- The model a tenant's A1111-API clients draw with when a request names none: what
-- POST /sdapi/v1/options sets as sd_model_checkpoint. NULL = the server's default model.
ALTER TABLE tenants ADD COLUMN default_model TEXT;
