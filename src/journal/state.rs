//! Where the state lives — the journal, the `bulk` lock and the quota ledger (SPEC section 9):
//! the SQLite files of `state_dir` (the embedded default, one host) or the PostgreSQL state
//! database (`state_database`, any number of hosts). Commands open a [`State`] and take the
//! journal, the lock and the ledger from it; nothing after that knows which it is.
//!
//! The locks differ in what they cover. On `state_dir`, one `bulk` at a time (a file lock,
//! released by the OS when the process dies). On PostgreSQL, one run of each *job* at a time:
//! a session-level advisory lock on a connection of its own, released by the server when the
//! session ends — at once when the process dies (the kernel closes its socket), and within
//! about 25 s when the whole host vanishes (TCP keepalives the lock's session sets, well inside
//! `shutdown_grace` + 30 s). Different jobs run at once and share the quotas through the ledger.
//!
//! A run whose lock connection breaks has lost its lock: another host may start the job. A
//! watchdog pings the connection every few seconds and stops the run when it fails, and every
//! group of journal writes is fenced by the run's own status ([`super::Batch::fence`]): once
//! another run has found it dead (`KILLED`), it records nothing more, so it starts nobody new
//! and writes nothing over the run that took the job.

use std::path::PathBuf;
use std::time::Duration;

use sqlx::postgres::PgConnection;
use tokio_util::sync::CancellationToken;

use super::lock::{FileLock, lock};
use super::{Journal, JournalError};
use crate::config::Settings;
use crate::ledger::{Ledger, LedgerError};
use crate::state_db::{LEADER_SPACE, LOCK_SPACE, StateDatabase, job_lock_key};

/// How often a held PostgreSQL lock's connection is checked.
const LOCK_CHECK_EVERY: Duration = Duration::from_secs(5);

/// How long a `bulk` tries for a job's lock before it is refused (SPEC: within 2 seconds).
const LOCK_PATIENCE: Duration = Duration::from_millis(1_200);

/// The state of this configuration.
#[derive(Debug, Clone)]
pub enum State {
    /// `state_dir`: SQLite files, one host.
    Dir(PathBuf),
    /// `state_database`: PostgreSQL, shared by every host that names it.
    Database(StateDatabase),
}

/// The host and process of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    pub host: String,
    pub pid: u32,
}

impl RunInfo {
    pub fn this_process() -> RunInfo {
        RunInfo {
            host: host_name(),
            pid: std::process::id(),
        }
    }
}

/// One run of a job as the journal recorded it (`status --json`'s `runs`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunRecord {
    pub run: u32,
    pub host: String,
    pub pid: u32,
    pub started: String,
    /// `None` while it runs, or when its process died without recording its end.
    pub ended: Option<String>,
    /// The job status the run ended with; `RUNNING` while it runs; `KILLED` when a later run
    /// found it never ended.
    pub status: String,
}

/// A held lock; released when dropped (and by the OS or the server when the process dies).
pub enum StateLock {
    /// `state_dir`'s `bulk.lock`.
    File(FileLock),
    /// A job's advisory lock on PostgreSQL, its connection watched by a task.
    Job {
        watchdog: tokio::task::JoinHandle<()>,
        lost: CancellationToken,
        /// The server process of the lock's session: the run is live while it holds the lock.
        backend_pid: i32,
    },
}

/// What a run of a job on PostgreSQL is to the job's other runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Reads the job's source (a new job, `--resume`, or `--join` with no run live).
    Leader,
    /// `--join`: claims queued recipients beside the live runs, reads no source.
    Joined,
}

/// How a run starts, for the journal's record of it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunStart {
    pub joined: bool,
    /// The server process of the run's lock session (PostgreSQL).
    pub backend_pid: Option<i32>,
}

impl std::fmt::Debug for StateLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateLock::File(_) => f.write_str("StateLock::File"),
            StateLock::Job { .. } => f.write_str("StateLock::Job"),
        }
    }
}

impl StateLock {
    /// How a run under this lock starts.
    pub fn run_start(&self, role: Role) -> RunStart {
        RunStart {
            joined: role == Role::Joined,
            backend_pid: match self {
                StateLock::File(_) => None,
                StateLock::Job { backend_pid, .. } => Some(*backend_pid),
            },
        }
    }

    /// Resolves if the lock is lost (its connection broke); never for a file lock.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let lost = match self {
            StateLock::File(_) => None,
            StateLock::Job { lost, .. } => Some(lost.clone()),
        };
        async move {
            match lost {
                Some(lost) => lost.cancelled_owned().await,
                None => std::future::pending().await,
            }
        }
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        if let StateLock::Job { watchdog, .. } = self {
            // The task owns the connection: ending it closes the session, which frees the lock.
            watchdog.abort();
        }
    }
}

impl State {
    /// The state `settings` name: `state_database` when set, else `state_dir`.
    pub async fn open(settings: &Settings) -> Result<State, JournalError> {
        match &settings.state_database {
            Some(url) => Ok(State::Database(
                StateDatabase::open(url.expose(), &url.to_string()).await?,
            )),
            None => Ok(State::Dir(settings.state_dir.clone())),
        }
    }

    /// What the state is, for messages ("every job in … is done").
    pub fn describe(&self) -> String {
        match self {
            State::Dir(dir) => dir.display().to_string(),
            State::Database(database) => database.shown().to_string(),
        }
    }

    pub async fn journal(&self) -> Result<Journal, JournalError> {
        match self {
            State::Dir(dir) => Journal::open(dir).await,
            State::Database(database) => Journal::open_postgres(database).await,
        }
    }

    pub async fn ledger(&self) -> Result<Ledger, LedgerError> {
        match self {
            State::Dir(dir) => Ledger::open(dir).await,
            State::Database(database) => Ok(Ledger::postgres(database.clone())),
        }
    }

    /// The lock a `bulk` takes before anything else: `state_dir`'s (one `bulk` at a time
    /// there). `None` on PostgreSQL, where the lock is the job's ([`State::lock_job`]), taken
    /// once the job is known.
    pub fn lock_first(&self) -> Result<Option<StateLock>, JournalError> {
        match self {
            State::Dir(dir) => lock(dir).map(|file| Some(StateLock::File(file))),
            State::Database(_) => Ok(None),
        }
    }

    /// The job's lock on PostgreSQL: taken at once or refused at once, naming its holder.
    ///
    /// Every live run of a job holds the job's lock shared; the run that reads the source (the
    /// leader: a plain `bulk`, a `--resume`) also holds the leader lock. A plain run first takes
    /// the job's lock exclusive, which fails while any run of the job (leader or joined) is live,
    /// then keeps it shared. `--join` takes it shared beside the live runs, or, when none is
    /// live, becomes the leader like a `--resume` (SPEC section 9).
    pub async fn lock_job(&self, job: &str, join: bool) -> Result<(StateLock, Role), JournalError> {
        let State::Database(database) = self else {
            unreachable!("the state_dir lock is taken first")
        };
        let mut connection = database.lock_connection().await?;
        let fail = |source| JournalError::State(database.error(source));
        let key = job_lock_key(job);
        let mut try_lock = async |sql: &'static str| -> Result<bool, JournalError> {
            sqlx::query_scalar(sql)
                .bind(LOCK_SPACE)
                .bind(key)
                .fetch_one(&mut connection)
                .await
                .map_err(fail)
        };
        // Tried for a moment before refusing: the server frees a killed process's lock when it
        // reads the end of its connection, a few milliseconds after the kill, and a resume
        // started right after the kill should not be refused for that. (A joiner also waits out
        // a leader's moment of holding the lock exclusive.)
        let deadline = tokio::time::Instant::now() + LOCK_PATIENCE;
        let role = loop {
            if try_lock("SELECT pg_try_advisory_lock($1, $2)").await? {
                break Some(Role::Leader);
            }
            if join && try_lock("SELECT pg_try_advisory_lock_shared($1, $2)").await? {
                break Some(Role::Joined);
            }
            if tokio::time::Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let Some(role) = role else {
            let holder: Option<(String, i64, String)> =
                sqlx::query_as("SELECT host, pid, since FROM job_locks WHERE job_id = $1")
                    .bind(job)
                    .fetch_optional(&mut connection)
                    .await
                    .map_err(fail)?;
            return Err(JournalError::JobLocked {
                job: job.to_string(),
                holder: match holder {
                    Some((host, pid, since)) => {
                        format!("msgsend process {pid} on host {host} (since {since})")
                    }
                    None => "another msgsend process".to_string(),
                },
            });
        };
        if role == Role::Leader {
            // Exclusive → shared (joined runs may come now) and the leader's own lock, in one
            // round trip, while no other run can be live.
            sqlx::query(
                "SELECT pg_advisory_lock_shared($1, $3), pg_advisory_lock($2, $3), \
                 pg_advisory_unlock($1, $3)",
            )
            .bind(LOCK_SPACE)
            .bind(LEADER_SPACE)
            .bind(key)
            .execute(&mut connection)
            .await
            .map_err(fail)?;
        }
        let me = RunInfo::this_process();
        sqlx::query(
            "INSERT INTO job_locks (job_id, host, pid, since) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (job_id) DO UPDATE SET host = $2, pid = $3, since = $4",
        )
        .bind(job)
        .bind(&me.host)
        .bind(i64::from(me.pid))
        .bind(super::schema::now())
        .execute(&mut connection)
        .await
        .map_err(fail)?;
        let backend_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut connection)
            .await
            .map_err(fail)?;
        let lost = CancellationToken::new();
        let watchdog = tokio::spawn(watch(connection, lost.clone(), job.to_string()));
        Ok((
            StateLock::Job {
                watchdog,
                lost,
                backend_pid,
            },
            role,
        ))
    }
}

/// Pings the lock's connection until it fails: then the lock is gone, and so is the right to
/// send for the job.
async fn watch(mut connection: PgConnection, lost: CancellationToken, job: String) {
    use sqlx::Connection as _;
    loop {
        tokio::time::sleep(LOCK_CHECK_EVERY).await;
        let ping = tokio::time::timeout(LOCK_CHECK_EVERY, connection.ping()).await;
        if !matches!(ping, Ok(Ok(()))) {
            tracing::error!(
                job_id = %job,
                "lost the job's lock (its connection to the state database broke): stopping; \
                 another host may resume the job"
            );
            lost.cancel();
            return;
        }
    }
}

/// This machine's name (what `status` shows beside a run): the kernel's host name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_string())
}
