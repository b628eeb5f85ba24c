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
//!
//! Two backends keep the same tables: the SQLite file of `state_dir` (the embedded default) and
//! the PostgreSQL state database (`state_database`, SPEC section 9, [`crate::state_db`]). The
//! pipeline does not know which: every statement runs through [`either!`], which compiles one
//! text for both drivers, or picks each dialect's text where they differ (SQLite's `json_each`
//! is PostgreSQL's `json_array_elements`, and PostgreSQL wants its casts spelled out).

/// Runs `$body` with `$c` bound to the backend's own connection or transaction, compiled once
/// per driver. With `sqlite:`/`postgres:` texts first, `$sql` is the dialect's text.
macro_rules! either {
    ($backend:expr, |$c:ident| $body:expr) => {
        match $backend {
            $crate::journal::Backend::Sqlite($c) => $body,
            $crate::journal::Backend::Postgres($c) => $body,
        }
    };
    ($backend:expr, sqlite: $sqlite:expr, postgres: $postgres:expr, |$c:ident, $sql:ident| $body:expr) => {
        match $backend {
            $crate::journal::Backend::Sqlite($c) => {
                let $sql = $sqlite;
                $body
            }
            $crate::journal::Backend::Postgres($c) => {
                let $sql = $postgres;
                $body
            }
        }
    };
}

/// The SQL condition "the row belongs to no run of job `$1` that is still `RUNNING`": no run
/// holds it, or the run that did has ended or was found dead. Such a row is free to start or
/// claim, and one left `in_flight` is a dead run's.
macro_rules! held_by_no_running_run {
    () => {
        "(run IS NULL OR run IN (SELECT run FROM runs WHERE job_id = $1 AND status != 'RUNNING'))"
    };
}

mod batch;
mod lock;
mod queries;
mod schema;
mod state;

pub use batch::{Batch, Candidate, Claimed, ClaimedRow};
pub use lock::{FileLock, lock};
use lock::{create_state_dir, private_journal_files};
pub use schema::journal_path;
use schema::{MIGRATIONS, SCHEMA, now};
pub use state::{Role, RunInfo, RunRecord, RunStart, State, StateLock};

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions as _, Connection as _};

use crate::cost::Money;
use crate::job::RecipientState;
use crate::phone::Phone;
use crate::sms_length::SmsClass;
use crate::state_db::StateDatabase;

/// The journal or its lock failed: the run stops (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    // The cause is the error's source: `{:#}` prints it once, after this text.
    #[error("journal {path}")]
    Database {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("state directory {path}")]
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
    #[error(
        "job {job:?} is being run by {holder}; wait for it to finish, or add --join to work it beside that run"
    )]
    JobLocked { job: String, holder: String },
    #[error(transparent)]
    State(#[from] crate::state_db::StateDbError),
    #[error(
        "job {job:?}: another run took the job over while run {run} was sending (this one had lost its lock); it sends nothing more"
    )]
    Superseded { job: String, run: u32 },
    #[error("no job {0:?} in the journal (`msgsend jobs` lists them)")]
    UnknownJob(String),
    #[error("a job {0:?} already exists; pick another --job-id or --resume it")]
    JobExists(String),
    #[error("journal: job {job:?} has unreadable parameters: {message}")]
    BadParams { job: String, message: String },
    /// The journal was written by a newer msgsend, whose tables this one does not know.
    #[error(
        "journal {path}: schema version {version} is newer than this msgsend knows ({known}); use the newer msgsend"
    )]
    TooNew {
        path: String,
        version: i64,
        known: i64,
    },
    /// A stored word this binary does not know (a state, a status): written by a newer
    /// msgsend, or damaged. Never read as some other state.
    #[error("journal {path}: unknown {what} {word:?} (written by a newer msgsend?)")]
    UnknownWord {
        path: String,
        what: &'static str,
        word: String,
    },
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
    /// What the accepted message cost (zero when not delivered).
    pub cost: Money,
    /// Delivered by SMS: whether as a short or a long message.
    pub sms_class: Option<SmsClass>,
}

/// One thing of either backend: a connection, a transaction.
pub(crate) enum Backend<S, P> {
    Sqlite(S),
    Postgres(P),
}

/// The open journal. One connection: the pipeline's collector is its only writer.
pub struct Journal {
    connection: Backend<SqliteConnection, PgConnection>,
    path: String,
    /// Set by a run that opened its source at a resume point ([`Journal::admit_from`]).
    resumed_at: Option<ResumedAt>,
}

/// A run that reads its source from a resume point: the rows before `line` were not read
/// again, and a recipient that a run since `base_run` recorded at a line before it first
/// occurs there (see `source::resume`).
#[derive(Debug, Clone, Copy)]
pub struct ResumedAt {
    pub line: u64,
    pub base_run: u32,
}

impl Journal {
    /// Opens (creating when needed) the journal of `state_dir`.
    pub async fn open(state_dir: &Path) -> Result<Journal, JournalError> {
        create_state_dir(state_dir)?;
        let path = journal_path(state_dir);
        private_journal_files(&path)?;
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
            .map_err(&fail)?;
        migrate(&mut connection, &path).await?;
        Ok(Journal {
            connection: Backend::Sqlite(connection),
            path,
            resumed_at: None,
        })
    }

    /// Opens the journal of a PostgreSQL state, on a connection of its own (its tables were
    /// created and migrated when the database was opened).
    pub async fn open_postgres(database: &StateDatabase) -> Result<Journal, JournalError> {
        let connection = database
            .journal_connection()
            .await
            .map_err(JournalError::State)?;
        Ok(Journal {
            connection: Backend::Postgres(connection),
            path: database.shown().to_string(),
            resumed_at: None,
        })
    }

    /// Whether this journal lives in memory (a dry run's), gone at exit.
    pub fn is_in_memory(&self) -> bool {
        self.path == ":memory:"
    }

    fn fail(&self) -> impl Fn(sqlx::Error) -> JournalError + use<> {
        database_error(&self.path)
    }

    /// Opens a transaction for one group of writes of job `job`, run `run`.
    pub async fn batch<'j>(
        &'j mut self,
        job: &'j str,
        run: u32,
    ) -> Result<Batch<'j>, JournalError> {
        let fail = self.fail();
        let tx = match &mut self.connection {
            Backend::Sqlite(c) => Backend::Sqlite(c.begin().await.map_err(fail)?),
            Backend::Postgres(c) => Backend::Postgres(c.begin().await.map_err(fail)?),
        };
        // One timestamp for the whole group: the writes of one commit happen together, and
        // formatting it per recipient would put that work on every send.
        Ok(Batch {
            tx,
            job,
            run,
            path: self.path.clone(),
            at: now(),
            resumed_at: self.resumed_at,
        })
    }

    /// This run reads its source from a resume point: admission counts the rows before it as
    /// read (see [`ResumedAt`]).
    pub fn admit_from(&mut self, resumed_at: ResumedAt) {
        self.resumed_at = Some(resumed_at);
    }
}

/// Brings the journal's tables up to this binary's version ([`MIGRATIONS`]), in one
/// transaction that holds the write lock, so two processes opening an old journal at once
/// apply each change once. A journal newer than the binary is refused, not guessed at.
async fn migrate(connection: &mut SqliteConnection, path: &str) -> Result<(), JournalError> {
    let fail = database_error(path);
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut *connection)
        .await
        .map_err(&fail)?;
    let result = async {
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut *connection)
            .await
            .map_err(&fail)?;
        if version > known {
            return Err(JournalError::TooNew {
                path: path.to_string(),
                version,
                known,
            });
        }
        for (done, migration) in
            (version..).zip(&MIGRATIONS[usize::try_from(version).unwrap_or(0)..])
        {
            sqlx::raw_sql(sqlx::AssertSqlSafe(*migration))
                .execute(&mut *connection)
                .await
                .map_err(&fail)?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "PRAGMA user_version = {}",
                done + 1
            )))
            .execute(&mut *connection)
            .await
            .map_err(&fail)?;
        }
        Ok(())
    }
    .await;
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    sqlx::raw_sql(end)
        .execute(&mut *connection)
        .await
        .map_err(&fail)?;
    result
}

fn database_error(path: &str) -> impl Fn(sqlx::Error) -> JournalError + use<> {
    let path = path.to_string();
    move |source| JournalError::Database {
        path: path.clone(),
        source,
    }
}

/// Reads a stored word (a recipient state, a job status).
fn parse_word<T: FromStr>(path: &str, what: &'static str, word: &str) -> Result<T, JournalError> {
    word.parse().map_err(|_| JournalError::UnknownWord {
        path: path.to_string(),
        what,
        word: word.to_string(),
    })
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
