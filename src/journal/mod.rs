//! The journal: every campaign (job) and every recipient's state, recorded durably in a SQLite
//! file under `state_dir` (`journal.sqlite`, WAL mode, `synchronous = FULL`), and the lock that
//! keeps a second `bulk` off the same `state_dir`.
//!
//! What makes "never twice, never skipped" hold across interruptions and hard kills:
//! - A recipient is recorded `queued` when the campaign admits it (this is also where
//!   duplicates are caught: one row per job and phone, so the check costs no memory).
//! - It is recorded `in_flight`, and that record committed, *before* its first request goes out.
//! - Its outcome (`sent`, `fallback`, `failed`) is recorded after the answer.
//! - A run that starts finds rows left `in_flight` by a killed run and makes them `uncertain`:
//!   the message may or may not have reached the person, so it is not sent again unless the
//!   operator asks (`--resend-uncertain`). `queued` rows were never attempted and are sent.
//!
//! Writes are grouped: the pipeline's collector applies everything that arrived since its last
//! commit in one transaction ([`Journal::batch`]), so a commit (and its fsync) serves many sends.

mod batch;
mod lock;

pub use batch::{Batch, Candidate};
use lock::create_state_dir;
pub use lock::{StateLock, lock};

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use jiff::civil::Date;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions as _, Connection as _, Row as _};

use crate::phone::Phone;
use crate::policy::routing::Strategy;
use crate::recipient::AgeRange;

/// The journal or its lock failed: the run stops (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Database {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("state directory {path}: {source}")]
    StateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another msgsend bulk is running on the state directory {path} (lock file {lock}); \
         wait for it to finish or use another state_dir"
    )]
    Locked { path: String, lock: String },
    #[error("no job {0:?} in the journal (`msgsend jobs` lists them)")]
    UnknownJob(String),
    #[error("a job {0:?} already exists; pick another --job-id or --resume it")]
    JobExists(String),
    #[error("journal: job {job:?} has unreadable parameters: {message}")]
    BadParams { job: String, message: String },
}

/// Where a recipient of a job stands. Stored as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecipientState {
    /// Admitted, no request made yet.
    Queued,
    /// A request may be on its way (recorded before it went).
    InFlight,
    /// Delivered by the primary channel.
    Sent,
    /// Delivered by the fallback channel.
    Fallback,
    /// Neither channel could deliver it.
    Failed,
    /// A request was in flight when the run stopped: not known whether it arrived.
    Uncertain,
}

impl RecipientState {
    pub fn name(self) -> &'static str {
        match self {
            RecipientState::Queued => "queued",
            RecipientState::InFlight => "in_flight",
            RecipientState::Sent => "sent",
            RecipientState::Fallback => "fallback",
            RecipientState::Failed => "failed",
            RecipientState::Uncertain => "uncertain",
        }
    }

    fn parse(text: &str) -> RecipientState {
        match text {
            "queued" => RecipientState::Queued,
            "in_flight" => RecipientState::InFlight,
            "sent" => RecipientState::Sent,
            "fallback" => RecipientState::Fallback,
            "failed" => RecipientState::Failed,
            // Only `uncertain` is left; an unknown word is treated the safe way.
            _ => RecipientState::Uncertain,
        }
    }
}

/// Where a job stands. Stored as its uppercase name (SPEC section 3 says `PAUSED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    /// A run is going on, or was killed (a later run turns its in-flight rows `uncertain`).
    Running,
    /// Every admitted recipient has an outcome.
    Done,
    /// Stopped by Ctrl-C / SIGTERM; `--resume` continues it.
    Interrupted,
    /// Stopped at quiet hours; `--resume` continues it.
    Paused,
    /// Stopped by `--max-failure-rate`; `--resume` continues it once the cause is fixed.
    Aborted,
}

impl JobStatus {
    pub fn name(self) -> &'static str {
        match self {
            JobStatus::Running => "RUNNING",
            JobStatus::Done => "DONE",
            JobStatus::Interrupted => "INTERRUPTED",
            JobStatus::Paused => "PAUSED",
            JobStatus::Aborted => "ABORTED",
        }
    }

    fn parse(text: &str) -> JobStatus {
        match text {
            "DONE" => JobStatus::Done,
            "INTERRUPTED" => JobStatus::Interrupted,
            "PAUSED" => JobStatus::Paused,
            "ABORTED" => JobStatus::Aborted,
            _ => JobStatus::Running,
        }
    }
}

/// Everything `--resume` needs to run a job again without other flags (SPEC section 7).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CampaignParams {
    pub source: StoredSource,
    pub ages: AgeRange,
    /// The campaign's date: ages are judged on it in every run, so a resume on another day
    /// neither drops nor adds anyone.
    pub date: Date,
    /// The message body template.
    pub message: String,
    /// The `[message] header` template when the job started.
    pub header: Option<String>,
    pub strategy: Strategy,
    pub concurrency: usize,
    pub max_failure_rate: Option<f64>,
    /// `--retry-failed`: only the recipients this job recorded `failed`.
    pub retry_of: Option<String>,
}

/// A job's source as stored. A database URL is stored with any password redacted: the
/// journal is not a place for secrets; a resume takes the password from the config.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoredSource {
    Csv { path: PathBuf },
    Database { url: String, query: String },
}

/// Counts of a job's recipients by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StateCounts {
    pub queued: u64,
    pub sent: u64,
    pub fallback: u64,
    pub failed: u64,
    /// `uncertain`, and `in_flight` left by a run that was killed.
    pub uncertain: u64,
}

impl StateCounts {
    pub fn eligible(&self) -> u64 {
        self.queued + self.sent + self.fallback + self.failed + self.uncertain
    }
}

/// What the source side of the latest run counted (SPEC section 7's summary counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SourceCounts {
    pub total: u64,
    pub invalid: u64,
    pub duplicate: u64,
    pub suppressed: u64,
}

/// One job as the journal holds it.
#[derive(Debug, Clone)]
pub struct JobRecord {
    pub id: String,
    pub status: JobStatus,
    pub created_at: String,
    pub updated_at: String,
    pub params: CampaignParams,
    pub runs: u32,
    pub source: SourceCounts,
    pub retries: u64,
    pub duration_s: f64,
    pub states: StateCounts,
}

/// What admitting a recipient to a run found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// To be sent in this run.
    Send,
    /// The phone was already seen in this run.
    Duplicate,
    /// Recorded by an earlier run and not to be sent again (sent, fallback, failed,
    /// uncertain without `--resend-uncertain`).
    AlreadyDone,
    /// `--retry-failed`: the original job did not record this phone `failed`.
    NotToRetry,
}

/// A recipient's outcome, as the collector records it.
#[derive(Debug, Clone)]
pub struct OutcomeRecord<'a> {
    pub phone: &'a Phone,
    pub state: RecipientState,
    pub channel: Option<&'a str>,
    pub reason: String,
    pub message_id: Option<&'a str>,
    pub attempts: u32,
}

/// A recipient not delivered, for `--failed-csv`.
#[derive(Debug, Clone)]
pub struct Undelivered {
    pub phone: String,
    pub name: String,
    pub reason: String,
    pub line: u64,
}

const SCHEMA: &str = "
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

/// The time written into `updated_at` columns, to the second.
fn now() -> String {
    let now = jiff::Timestamp::now();
    now.round(jiff::Unit::Second).unwrap_or(now).to_string()
}

/// The journal file of a state directory.
pub fn journal_path(state_dir: &Path) -> PathBuf {
    state_dir.join("journal.sqlite")
}

/// The open journal. One connection: the pipeline's collector is its only writer.
pub struct Journal {
    connection: SqliteConnection,
    path: String,
}

impl Journal {
    /// Opens (creating when needed) the journal of `state_dir`.
    pub async fn open(state_dir: &Path) -> Result<Journal, JournalError> {
        create_state_dir(state_dir)?;
        let path = journal_path(state_dir);
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        Self::connect(options, path.display().to_string()).await
    }

    /// A journal that lives in memory and is gone at exit: `--dry-run` uses the same
    /// de-duplication and admission as a real run without leaving a job behind.
    pub async fn in_memory() -> Result<Journal, JournalError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:").map_err(|source| {
            JournalError::Database {
                path: ":memory:".into(),
                source,
            }
        })?;
        Self::connect(options, ":memory:".into()).await
    }

    async fn connect(options: SqliteConnectOptions, path: String) -> Result<Journal, JournalError> {
        let fail = |source| JournalError::Database {
            path: path.clone(),
            source,
        };
        // sqlx logs any statement over 1 s at WARN: on a journal of millions of rows the
        // summary's counts legitimately take that long, and cron mails every WARN.
        let mut connection = options
            .disable_statement_logging()
            .connect()
            .await
            .map_err(fail)?;
        sqlx::raw_sql(SCHEMA)
            .execute(&mut connection)
            .await
            .map_err(fail)?;
        Ok(Journal { connection, path })
    }

    fn fail(&self) -> impl Fn(sqlx::Error) -> JournalError + use<> {
        database_error(&self.path)
    }

    /// Records a new job; fails when the id is taken.
    pub async fn create_job(
        &mut self,
        id: &str,
        params: &CampaignParams,
    ) -> Result<(), JournalError> {
        let params = serde_json::to_string(params).expect("params serialize");
        let at = now();
        let result = sqlx::query(
            "INSERT INTO jobs (id, status, created_at, updated_at, params) VALUES ($1, $2, $3, $3, $4)",
        )
        .bind(id)
        .bind(JobStatus::Running.name())
        .bind(&at)
        .bind(params)
        .execute(&mut self.connection)
        .await;
        match result {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(JournalError::JobExists(id.to_string()))
            }
            other => other.map(drop).map_err(self.fail()),
        }
    }

    /// Starts a run of a job: counts the run, marks the job running, and turns rows left
    /// `in_flight` by a killed run into `uncertain` (or, with `resend_uncertain`, every
    /// uncertain row back into `queued`). Returns the run's number.
    pub async fn begin_run(
        &mut self,
        id: &str,
        resend_uncertain: bool,
    ) -> Result<u32, JournalError> {
        let fail = self.fail();
        let mut tx = self.connection.begin().await.map_err(&fail)?;
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(&fail)?;
        // Only a killed run (still `RUNNING`) can leave rows in flight; a run that ended resolved
        // its own. Skipping the scan saves seconds when resuming a job of millions.
        if status.as_deref() == Some(JobStatus::Running.name()) {
            resolve_in_flight(&mut tx, id).await.map_err(&fail)?;
        }
        if resend_uncertain {
            sqlx::query(
                "UPDATE recipients SET state = 'queued' WHERE job_id = $1 AND state = 'uncertain'",
            )
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(&fail)?;
        }
        let run: i64 = sqlx::query_scalar(
            "UPDATE jobs SET runs = runs + 1, status = 'RUNNING', updated_at = $2 WHERE id = $1 RETURNING runs",
        )
        .bind(id)
        .bind(now())
        .fetch_one(&mut *tx)
        .await
        .map_err(&fail)?;
        tx.commit().await.map_err(&fail)?;
        Ok(u32::try_from(run).unwrap_or(u32::MAX))
    }

    /// Ends a run: the job's status, the source counts of this run, its retries and duration.
    pub async fn end_run(
        &mut self,
        id: &str,
        status: JobStatus,
        source: SourceCounts,
        retries: u64,
        duration: Duration,
    ) -> Result<(), JournalError> {
        sqlx::query(
            "UPDATE jobs SET status = $2, updated_at = $3, total = $4, invalid = $5, duplicate = $6, \
             suppressed = $7, retries = retries + $8, duration_s = duration_s + $9 WHERE id = $1",
        )
        .bind(id)
        .bind(status.name())
        .bind(now())
        .bind(to_i64(source.total))
        .bind(to_i64(source.invalid))
        .bind(to_i64(source.duplicate))
        .bind(to_i64(source.suppressed))
        .bind(to_i64(retries))
        .bind(duration.as_secs_f64())
        .execute(&mut self.connection)
        .await
        .map_err(self.fail())?;
        Ok(())
    }

    /// Sets a job's status alone (a start refused in quiet hours, a run broken by an error).
    pub async fn set_status(&mut self, id: &str, status: JobStatus) -> Result<(), JournalError> {
        sqlx::query("UPDATE jobs SET status = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(status.name())
            .bind(now())
            .execute(&mut self.connection)
            .await
            .map_err(self.fail())?;
        Ok(())
    }

    /// The newest job that is not done (interrupted, paused, aborted, or killed while running).
    pub async fn latest_unfinished(&mut self) -> Result<Option<String>, JournalError> {
        sqlx::query_scalar(
            "SELECT id FROM jobs WHERE status != 'DONE' ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .fetch_optional(&mut self.connection)
        .await
        .map_err(self.fail())
    }

    pub async fn job(&mut self, id: &str) -> Result<JobRecord, JournalError> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut self.connection)
            .await
            .map_err(self.fail())?
            .ok_or_else(|| JournalError::UnknownJob(id.to_string()))?;
        self.job_record(&row).await
    }

    /// After a run that failed (journal or source error): rows left in flight become
    /// `uncertain`, so the job can be recorded as stopped (see [`begin_run`](Self::begin_run)).
    pub async fn resolve_in_flight(&mut self, id: &str) -> Result<(), JournalError> {
        resolve_in_flight(&mut self.connection, id)
            .await
            .map_err(self.fail())
    }

    /// A job's campaign parameters only: what `--resume` and `--retry-failed` need, without
    /// counting the job's recipients by state (seconds on a job of ten million).
    pub async fn params(&mut self, id: &str) -> Result<CampaignParams, JournalError> {
        let params: String = sqlx::query_scalar("SELECT params FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut self.connection)
            .await
            .map_err(self.fail())?
            .ok_or_else(|| JournalError::UnknownJob(id.to_string()))?;
        parse_params(id, &params)
    }

    /// Every job, the newest first.
    pub async fn jobs(&mut self) -> Result<Vec<JobRecord>, JournalError> {
        let rows = sqlx::query("SELECT * FROM jobs ORDER BY created_at DESC, id DESC")
            .fetch_all(&mut self.connection)
            .await
            .map_err(self.fail())?;
        let mut jobs = Vec::with_capacity(rows.len());
        for row in &rows {
            jobs.push(self.job_record(row).await?);
        }
        Ok(jobs)
    }

    async fn job_record(
        &mut self,
        row: &sqlx::sqlite::SqliteRow,
    ) -> Result<JobRecord, JournalError> {
        let fail = self.fail();
        let id: String = row.try_get("id").map_err(&fail)?;
        let params = parse_params(&id, &row.try_get::<String, _>("params").map_err(&fail)?)?;
        let get = |name: &str| -> Result<u64, JournalError> {
            Ok(u64::try_from(row.try_get::<i64, _>(name).map_err(&fail)?).unwrap_or(0))
        };
        let record = JobRecord {
            status: JobStatus::parse(&row.try_get::<String, _>("status").map_err(&fail)?),
            created_at: row.try_get("created_at").map_err(&fail)?,
            updated_at: row.try_get("updated_at").map_err(&fail)?,
            params,
            runs: u32::try_from(get("runs")?).unwrap_or(u32::MAX),
            source: SourceCounts {
                total: get("total")?,
                invalid: get("invalid")?,
                duplicate: get("duplicate")?,
                suppressed: get("suppressed")?,
            },
            retries: get("retries")?,
            duration_s: row.try_get("duration_s").map_err(&fail)?,
            states: StateCounts::default(),
            id,
        };
        drop(fail);
        let states = self.state_counts(&record.id).await?;
        Ok(JobRecord { states, ..record })
    }

    pub async fn state_counts(&mut self, id: &str) -> Result<StateCounts, JournalError> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM recipients WHERE job_id = $1 GROUP BY state",
        )
        .bind(id)
        .fetch_all(&mut self.connection)
        .await
        .map_err(self.fail())?;
        let mut counts = StateCounts::default();
        for row in rows {
            let n = u64::try_from(row.get::<i64, _>("n")).unwrap_or(0);
            match RecipientState::parse(&row.get::<String, _>("state")) {
                RecipientState::Queued => counts.queued += n,
                RecipientState::Sent => counts.sent += n,
                RecipientState::Fallback => counts.fallback += n,
                RecipientState::Failed => counts.failed += n,
                RecipientState::InFlight | RecipientState::Uncertain => counts.uncertain += n,
            }
        }
        Ok(counts)
    }

    /// The job's recipients that were not delivered (failed or uncertain), in source order.
    pub async fn undelivered(&mut self, id: &str) -> Result<Vec<Undelivered>, JournalError> {
        let rows = sqlx::query(
            "SELECT phone, name, state, reason, line FROM recipients \
             WHERE job_id = $1 AND state IN ('failed', 'uncertain', 'in_flight') ORDER BY line",
        )
        .bind(id)
        .fetch_all(&mut self.connection)
        .await
        .map_err(self.fail())?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let state = RecipientState::parse(&row.get::<String, _>("state"));
                let reason: String = row.get("reason");
                Undelivered {
                    phone: row.get("phone"),
                    name: row.get("name"),
                    reason: match state {
                        RecipientState::Failed => reason,
                        _ => format!("uncertain: {reason}"),
                    },
                    line: u64::try_from(row.get::<i64, _>("line")).unwrap_or(0),
                }
            })
            .collect())
    }

    /// Opens a transaction for one group of writes of job `job`, run `run`.
    pub async fn batch<'j>(
        &'j mut self,
        job: &'j str,
        run: u32,
    ) -> Result<Batch<'j>, JournalError> {
        let fail = self.fail();
        let tx = self.connection.begin().await.map_err(fail)?;
        // One timestamp for the whole group: the writes of one commit happen together, and
        // formatting it per recipient would put that work on every send.
        Ok(Batch {
            tx,
            job,
            run,
            path: self.path.clone(),
            at: now(),
        })
    }
}

fn database_error(path: &str) -> impl Fn(sqlx::Error) -> JournalError + use<> {
    let path = path.to_string();
    move |source| JournalError::Database {
        path: path.clone(),
        source,
    }
}

async fn resolve_in_flight(connection: &mut SqliteConnection, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE recipients SET state = 'uncertain', \
         reason = 'a request was in flight when the process died' \
         WHERE job_id = $1 AND state = 'in_flight'",
    )
    .bind(id)
    .execute(connection)
    .await?;
    Ok(())
}

fn parse_params(job: &str, text: &str) -> Result<CampaignParams, JournalError> {
    serde_json::from_str(text).map_err(|e| JournalError::BadParams {
        job: job.to_string(),
        message: e.to_string(),
    })
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> CampaignParams {
        CampaignParams {
            source: StoredSource::Csv {
                path: "users.csv".into(),
            },
            ages: AgeRange { min: 20, max: 29 },
            date: jiff::civil::date(2026, 11, 24),
            message: "hi {name}".into(),
            header: None,
            strategy: Strategy::Failover,
            concurrency: 4,
            max_failure_rate: None,
            retry_of: None,
        }
    }

    fn phone(text: &str) -> Phone {
        Phone::parse(text).unwrap()
    }

    async fn admit(journal: &mut Journal, run: u32, p: &Phone) -> Admission {
        let mut batch = journal.batch("job", run).await.unwrap();
        let admission = batch
            .admit(&[(p.clone(), 2, "a".into())], None)
            .await
            .unwrap();
        batch.commit().await.unwrap();
        admission[0]
    }

    #[tokio::test]
    async fn admission_catches_duplicates_and_what_earlier_runs_did() {
        let mut journal = Journal::in_memory().await.unwrap();
        journal.create_job("job", &params()).await.unwrap();
        assert!(matches!(
            journal.create_job("job", &params()).await,
            Err(JournalError::JobExists(_))
        ));
        let (a, b, c) = (
            phone("010-1111-1111"),
            phone("010-2222-2222"),
            phone("010-3333-3333"),
        );
        let run = journal.begin_run("job", false).await.unwrap();
        assert_eq!(admit(&mut journal, run, &a).await, Admission::Send);
        assert_eq!(admit(&mut journal, run, &a).await, Admission::Duplicate);
        assert_eq!(admit(&mut journal, run, &b).await, Admission::Send);
        assert_eq!(admit(&mut journal, run, &c).await, Admission::Send);
        let mut batch = journal.batch("job", run).await.unwrap();
        batch
            .finish(&[OutcomeRecord {
                phone: &a,
                state: RecipientState::Sent,
                channel: Some("kakaotalk"),
                reason: String::new(),
                message_id: None,
                attempts: 1,
            }])
            .await
            .unwrap();
        batch.start(std::slice::from_ref(&b)).await.unwrap(); // then the process dies
        batch.commit().await.unwrap();

        let run = journal.begin_run("job", false).await.unwrap();
        assert_eq!(run, 2);
        assert_eq!(admit(&mut journal, run, &a).await, Admission::AlreadyDone);
        assert_eq!(admit(&mut journal, run, &b).await, Admission::AlreadyDone);
        assert_eq!(admit(&mut journal, run, &c).await, Admission::Send);
        assert_eq!(admit(&mut journal, run, &c).await, Admission::Duplicate);
        let counts = journal.state_counts("job").await.unwrap();
        assert_eq!((counts.sent, counts.uncertain, counts.queued), (1, 1, 1));
        let undelivered = journal.undelivered("job").await.unwrap();
        assert_eq!(undelivered.len(), 1);
        assert!(undelivered[0].reason.starts_with("uncertain: "));

        // --resend-uncertain puts the uncertain one back in the queue.
        let run = journal.begin_run("job", true).await.unwrap();
        assert_eq!(admit(&mut journal, run, &b).await, Admission::Send);
    }

    #[tokio::test]
    async fn a_group_is_admitted_and_recorded_in_a_few_statements_with_the_same_answers() {
        let mut journal = Journal::in_memory().await.unwrap();
        journal.create_job("job", &params()).await.unwrap();
        let phones: Vec<Phone> = (0..600)
            .map(|i| phone(&format!("010-1000-{i:04}")))
            .collect();
        let run = journal.begin_run("job", false).await.unwrap();
        // Each phone twice in one group: the second is the duplicate.
        let candidates: Vec<Candidate> = phones
            .iter()
            .chain(&phones)
            .enumerate()
            .map(|(line, p)| (p.clone(), line as u64 + 2, format!("n{line}")))
            .collect();
        let mut batch = journal.batch("job", run).await.unwrap();
        let answers = batch.admit(&candidates, None).await.unwrap();
        assert!(answers[..600].iter().all(|a| *a == Admission::Send));
        assert!(answers[600..].iter().all(|a| *a == Admission::Duplicate));
        batch.start(&phones[..400]).await.unwrap();
        batch.requeue(&phones[300..400]).await.unwrap();
        let outcomes: Vec<OutcomeRecord> = phones[..300]
            .iter()
            .enumerate()
            .map(|(i, p)| OutcomeRecord {
                phone: p,
                state: if i % 3 == 0 {
                    RecipientState::Failed
                } else {
                    RecipientState::Sent
                },
                channel: Some("sms"),
                reason: if i % 3 == 0 {
                    "rejected".into()
                } else {
                    String::new()
                },
                message_id: None,
                attempts: 2,
            })
            .collect();
        batch.finish(&outcomes).await.unwrap();
        batch.commit().await.unwrap();
        let counts = journal.state_counts("job").await.unwrap();
        assert_eq!(
            (counts.sent, counts.failed, counts.queued, counts.uncertain),
            (200, 100, 300, 0)
        );
        let undelivered = journal.undelivered("job").await.unwrap();
        assert_eq!(undelivered.len(), 100);
        assert!(undelivered.iter().all(|u| u.reason.contains("rejected")));

        // A retry of the failed ones admits exactly those.
        journal.create_job("retry", &params()).await.unwrap();
        let run = journal.begin_run("retry", false).await.unwrap();
        let mut batch = journal.batch("retry", run).await.unwrap();
        let answers = batch.admit(&candidates[..600], Some("job")).await.unwrap();
        let to_send = answers.iter().filter(|a| **a == Admission::Send).count();
        assert_eq!(to_send, 100);
        assert!(
            answers
                .iter()
                .all(|a| matches!(a, Admission::Send | Admission::NotToRetry))
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_new_state_dir_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let _lock = lock(&state).unwrap();
        let mode = std::fs::metadata(&state).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[tokio::test]
    async fn the_lock_is_exclusive_and_released_with_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap();
        assert!(matches!(lock(dir.path()), Err(JournalError::Locked { .. })));
        drop(held);
        lock(dir.path()).unwrap();
    }
}
