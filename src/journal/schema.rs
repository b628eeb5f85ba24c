//! The journal's tables, and the timestamps written into them.

use std::path::{Path, PathBuf};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    params TEXT NOT NULL,
    runs INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    invalid INTEGER NOT NULL DEFAULT 0,
    duplicate INTEGER NOT NULL DEFAULT 0,
    suppressed INTEGER NOT NULL DEFAULT 0,
    retries INTEGER NOT NULL DEFAULT 0,
    duration_s REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS recipients (
    job_id TEXT NOT NULL,
    phone TEXT NOT NULL,
    line INTEGER NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    seen_run INTEGER NOT NULL,
    channel TEXT,
    reason TEXT NOT NULL DEFAULT '',
    message_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (job_id, phone)
) WITHOUT ROWID;
";

/// The changes to [`SCHEMA`] since its first version, in order: a journal at `user_version`
/// N has had the first N applied. Append only; never edit one that shipped.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: costs and SMS sizes per recipient, consent counts per job (SPEC section 10).
    "ALTER TABLE recipients ADD COLUMN cost INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE recipients ADD COLUMN sms_class TEXT;
     ALTER TABLE jobs ADD COLUMN no_consent INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE jobs ADD COLUMN consent_expired INTEGER NOT NULL DEFAULT 0;",
    // 2: where a later run may start reading the job's CSV file (`source::resume`), as JSON.
    "ALTER TABLE jobs ADD COLUMN resume_point TEXT;",
    // 3: every run with its host and process (`status --json` lists them, SPEC section 9), the
    // run a recipient in flight belongs to, and the values a joined run renders from (written
    // on PostgreSQL only, where runs join; the columns keep both backends' tables alike).
    "CREATE TABLE runs (
         job_id TEXT NOT NULL,
         run INTEGER NOT NULL,
         host TEXT NOT NULL,
         pid INTEGER NOT NULL,
         started TEXT NOT NULL,
         ended TEXT,
         status TEXT NOT NULL,
         joined INTEGER NOT NULL DEFAULT 0,
         read_all INTEGER NOT NULL DEFAULT 0,
         backend_pid INTEGER,
         PRIMARY KEY (job_id, run)
     );
     ALTER TABLE recipients ADD COLUMN run INTEGER;
     ALTER TABLE recipients ADD COLUMN fields TEXT;",
];

/// The time written into `updated_at` columns, to the second.
pub(super) fn now() -> String {
    let now = jiff::Timestamp::now();
    now.round(jiff::Unit::Second).unwrap_or(now).to_string()
}

/// The journal file of a state directory.
pub fn journal_path(state_dir: &Path) -> PathBuf {
    state_dir.join("journal.sqlite")
}
