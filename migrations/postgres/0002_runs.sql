-- Every run of a job, with the host and process that ran it (`status --json` lists them), and
-- which run a recipient in flight or claimed belongs to, so that one host's start never takes
-- another live host's sends for a dead run's.
CREATE TABLE runs (
    job_id TEXT NOT NULL,
    run BIGINT NOT NULL,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    started TEXT NOT NULL,
    ended TEXT,
    status TEXT NOT NULL,
    joined BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (job_id, run)
);

ALTER TABLE recipients ADD COLUMN run BIGINT;
CREATE INDEX recipients_by_state ON recipients (job_id, state);

-- Who holds a job's lock (the advisory lock itself is the truth; this row only lets a refused
-- `bulk` name the host and process that hold it).
CREATE TABLE job_locks (
    job_id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    since TEXT NOT NULL
);
