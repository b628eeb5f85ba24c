-- Every run of a job, with the host and process that ran it (`status --json` lists them), the
-- server process of the session that holds its lock (a run is live while that session holds
-- the job's lock), and which run a recipient in flight or claimed belongs to, so that one
-- host's start never takes another live host's sends for a dead run's. `fields` keeps the
-- source values a message's placeholders need beyond name and phone, so that a joined run,
-- which reads no source, can render it.
CREATE TABLE runs (
    job_id TEXT NOT NULL,
    run BIGINT NOT NULL,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    started TEXT NOT NULL,
    ended TEXT,
    status TEXT NOT NULL,
    joined BOOLEAN NOT NULL DEFAULT FALSE,
    -- The run read its source to the end (a leader's whole admission happened).
    read_all BOOLEAN NOT NULL DEFAULT FALSE,
    backend_pid BIGINT,
    PRIMARY KEY (job_id, run)
);

ALTER TABLE recipients ADD COLUMN run BIGINT;
ALTER TABLE recipients ADD COLUMN fields TEXT;
-- Claims (`--join`) and dead runs' leftovers look rows up by state. Led by the state, so that
-- no plan takes it for the primary key's job_id prefix: every other statement names its rows
-- by (job_id, phone), and an index led by job_id would let a plan made on young statistics
-- scan a whole job for every group.
CREATE INDEX recipients_by_state ON recipients (state, job_id);

-- Who holds a job's lock (the advisory lock itself is the truth; this row only lets a refused
-- `bulk` name the host and process that hold it).
CREATE TABLE job_locks (
    job_id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    since TEXT NOT NULL
);
