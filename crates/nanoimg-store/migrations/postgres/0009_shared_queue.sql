-- The shared job queue for separate worker processes: which worker holds a running job, when it
-- last said it is alive, how many times the job was started, the progress it reports (numbers
-- only: step counts) and whether someone asked to cancel it.
ALTER TABLE jobs ADD COLUMN worker_id TEXT;
ALTER TABLE jobs ADD COLUMN heartbeat_at BIGINT;
ALTER TABLE jobs ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN progress TEXT;
ALTER TABLE jobs ADD COLUMN cancel_requested BIGINT NOT NULL DEFAULT 0;
CREATE INDEX jobs_queue ON jobs(status, created_at);
