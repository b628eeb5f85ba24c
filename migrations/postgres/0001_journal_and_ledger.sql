-- The journal (jobs and their recipients) and the quota ledger, as the SQLite state keeps them
-- (its schema at user_version 2). Times are text (RFC 3339, UTC, to the second) as there.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    params TEXT NOT NULL,
    runs BIGINT NOT NULL DEFAULT 0,
    total BIGINT NOT NULL DEFAULT 0,
    invalid BIGINT NOT NULL DEFAULT 0,
    duplicate BIGINT NOT NULL DEFAULT 0,
    suppressed BIGINT NOT NULL DEFAULT 0,
    retries BIGINT NOT NULL DEFAULT 0,
    duration_s DOUBLE PRECISION NOT NULL DEFAULT 0,
    no_consent BIGINT NOT NULL DEFAULT 0,
    consent_expired BIGINT NOT NULL DEFAULT 0,
    resume_point TEXT
);

CREATE TABLE recipients (
    job_id TEXT NOT NULL,
    phone TEXT NOT NULL,
    line BIGINT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    seen_run BIGINT NOT NULL,
    channel TEXT,
    reason TEXT NOT NULL DEFAULT '',
    message_id TEXT,
    attempts BIGINT NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL,
    cost BIGINT NOT NULL DEFAULT 0,
    sms_class TEXT,
    PRIMARY KEY (job_id, phone)
);

-- One row per group of requests that still counts in a credential's windows (ledger/mod.rs).
CREATE TABLE quota_rows (
    credential TEXT NOT NULL,
    lease BIGINT NOT NULL,
    arrived_by BIGINT NOT NULL,
    count BIGINT NOT NULL
);
CREATE INDEX quota_rows_of_credential ON quota_rows (credential, lease);

CREATE TABLE quota_pace (
    credential TEXT PRIMARY KEY,
    allowance BIGINT,
    last_cut BIGINT,
    last_change BIGINT,
    paused_until BIGINT
);
