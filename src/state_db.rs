//! The PostgreSQL state database (`state_database`, SPEC section 9): where the journal, the
//! `bulk` locks and the quota ledger live when several hosts share one state. Connecting to it,
//! the schema `msgsend` and its versioned migrations, and the advisory-lock keys msgsend uses.
//!
//! The tables live in their own schema, `msgsend`: every connection sets `search_path` to it,
//! so the statements name tables unqualified, as they do on the embedded SQLite state. The
//! schema is created and migrated on first use, under sqlx's migration advisory lock, so two
//! processes starting on an empty database at once apply each migration once. A database that
//! has a migration this binary does not know was migrated by a newer msgsend: it is refused
//! ([`StateDbError::TooNew`]), not guessed at.

use std::borrow::Cow;
use std::str::FromStr as _;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _};

/// The schema that holds every msgsend table.
pub const SCHEMA: &str = "msgsend";

/// The migrations, in order (`migrations/postgres/`). Append only; never edit one that shipped:
/// sqlx checks the checksum of every applied one.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "journal and quota ledger",
        include_str!("../migrations/postgres/0001_journal_and_ledger.sql"),
    ),
    (
        2,
        "runs of several hosts",
        include_str!("../migrations/postgres/0002_runs.sql"),
    ),
];

/// How long opening the state waits for another process's schema migration (the migrator's
/// lock) before it fails.
const MIGRATION_PATIENCE: Duration = Duration::from_secs(10);

/// The first key of every advisory lock msgsend takes (the second names the job or the
/// credential), so msgsend's locks never meet another application's single-key ones. A job's
/// lock in this space is held (shared) by every live run of the job.
pub const LOCK_SPACE: i32 = 0x6d73_6773; // "msgs"

/// The space of a job's *leader* lock: held (exclusive) by the one run that reads the job's
/// source; joined runs wait for it to end before they end.
pub const LEADER_SPACE: i32 = 0x6d73_676c; // "msgl"

/// How `pg_locks` shows a two-key advisory lock's keys (`classid`, `objid`: unsigned oids).
pub fn lock_key_as_oid(key: i32) -> i64 {
    i64::from(key.cast_unsigned())
}

/// The second key of a job's lock: 32 bits of the job id's SHA-256 (`Journal::latest_unfinished`
/// computes the same in SQL, to tell the jobs that a run holds). Two jobs whose keys meet
/// (about one pair in four billion) would only wait for each other, never share a run.
pub fn job_lock_key(job_id: &str) -> i32 {
    lock_key("job", job_id)
}

/// The second key of the lock a quota ledger visit takes for a credential.
pub fn credential_lock_key(credential: &str) -> i32 {
    lock_key("credential", credential)
}

/// The second key of the lock under which a `--retry-failed` run admits recipients of the
/// family whose first campaign is `root`: two retries of one family admitting at once (two
/// hosts, two operators) would each miss the other's uncommitted rows and both send.
pub fn retry_family_lock_key(root: &str) -> i32 {
    lock_key("retry family", root)
}

fn lock_key(kind: &str, name: &str) -> i32 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("{kind}\n{name}").as_bytes());
    i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

#[derive(Debug, thiserror::Error)]
pub enum StateDbError {
    // The cause is the error's source: `{:#}` prints it once, after this text.
    #[error("state database {url}")]
    Database {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("state database {url}: migrating the schema {SCHEMA}")]
    Migrate {
        url: String,
        #[source]
        source: MigrateError,
    },
    #[error(
        "state database {url}: the schema {SCHEMA} was migrated by a newer msgsend (migration {version} is unknown to this one); use the newer msgsend"
    )]
    TooNew { url: String, version: i64 },
}

/// An open state database: a small pool for the journal and the ledger, and the means to open
/// a connection of its own for a lock.
#[derive(Clone)]
pub struct StateDatabase {
    pool: PgPool,
    /// Shared: the options are large, and every clone of the database (the ledger's) needs them.
    options: std::sync::Arc<PgConnectOptions>,
    /// The URL with its password redacted: what errors and logs show.
    shown: String,
}

impl std::fmt::Debug for StateDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StateDatabase({})", self.shown)
    }
}

impl StateDatabase {
    /// Connects to `url` (shown as `shown`, its password redacted), creating and migrating the
    /// schema when needed.
    pub async fn open(url: &str, shown: &str) -> Result<StateDatabase, StateDbError> {
        let database = Self::connect(url, shown).await?;
        database.migrate(None).await?;
        Ok(database)
    }

    /// Opens `url` migrated only up to `version`: how the tests build a database of an older
    /// msgsend.
    #[doc(hidden)]
    pub async fn open_at_version(url: &str, version: i64) -> Result<StateDatabase, StateDbError> {
        let database = Self::connect(url, "(test)").await?;
        database.migrate(Some(version)).await?;
        Ok(database)
    }

    async fn connect(url: &str, shown: &str) -> Result<StateDatabase, StateDbError> {
        let fail = |source| StateDbError::Database {
            url: shown.to_string(),
            source,
        };
        // No statement logging: sqlx would log a slow statement with its parameters' shapes at
        // WARN (cron mails every WARN), and a summary's counts over millions of rows are slow.
        let options = PgConnectOptions::from_str(url)
            .map_err(fail)?
            .options([("search_path", SCHEMA)])
            .application_name("msgsend")
            .disable_statement_logging();
        let pool = PgPoolOptions::new()
            // The journal's writer, the ledger's visits, a report's reads: a few at most.
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .map_err(fail)?;
        Ok(StateDatabase {
            pool,
            options: options.into(),
            shown: shown.to_string(),
        })
    }

    /// A connection that belongs to no pool, with these session settings.
    async fn connection_with(
        &self,
        settings: &[(&str, &str)],
    ) -> Result<PgConnection, StateDbError> {
        let options = (*self.options).clone().options(settings.iter().copied());
        PgConnection::connect_with(&options)
            .await
            .map_err(|source| self.error(source))
    }

    /// Applies the migrations up to `target` (all when `None`).
    async fn migrate(&self, target: Option<i64>) -> Result<(), StateDbError> {
        let mut migrator = Migrator::with_migrations(
            MIGRATIONS
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        sqlx::SqlSafeStr::into_sql_str(sql),
                        false,
                    )
                })
                .collect(),
        );
        // Created only when missing: `CREATE SCHEMA IF NOT EXISTS` needs the right to create
        // schemas in the database even when the schema is there, which a role given a schema
        // of its own (and not the database) lacks. Two processes that both find it missing
        // create it under the migrator's lock, once.
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(SCHEMA)
                .fetch_one(&self.pool)
                .await
                .map_err(|source| self.error(source))?;
        if !exists {
            migrator.create_schema(SCHEMA);
        }
        migrator.dangerous_set_table_name(format!("{SCHEMA}._sqlx_migrations"));
        // The migrator waits for its lock without end; a process frozen while migrating (or
        // another sqlx application's long migration: the lock is per database) would hang every
        // msgsend on every host. The wait is bounded instead: the command fails, saying so.
        let mut connection = self
            .pool
            .acquire()
            .await
            .map_err(|source| self.error(source))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SET lock_timeout = '{}ms'",
            MIGRATION_PATIENCE.as_millis()
        )))
        .execute(&mut *connection)
        .await
        .map_err(|source| self.error(source))?;
        let result = match target {
            Some(target) => migrator.run_to(target, &mut *connection).await,
            None => migrator.run(&mut *connection).await,
        };
        if sqlx::raw_sql("RESET lock_timeout")
            .execute(&mut *connection)
            .await
            .is_err()
        {
            connection.close_on_drop();
        }
        result.map_err(|source| match source {
            MigrateError::VersionMissing(version) => StateDbError::TooNew {
                url: self.shown.clone(),
                version,
            },
            source => StateDbError::Migrate {
                url: self.shown.clone(),
                source,
            },
        })
    }

    /// The pool the journal and the ledger borrow connections from.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The journal's own connection (its collector is the only writer). Its statements are
    /// planned once (`plan_cache_mode`): each names its rows by primary key, so the generic
    /// plan is the right one, and planning them again for every group cost more than running
    /// them. A plan made while a job's rows are young (empty statistics) must still look each
    /// of a group's rows up by its key, never scan the job and hash it, and the plan outlives
    /// those statistics: scans, hash and merge joins are off for this connection (measured: a
    /// first run on a fresh database otherwise went at a fifth of the speed of the next).
    pub async fn journal_connection(&self) -> Result<PgConnection, StateDbError> {
        self.connection_with(&[
            ("plan_cache_mode", "force_generic_plan"),
            ("enable_seqscan", "off"),
            ("enable_bitmapscan", "off"),
            ("enable_hashjoin", "off"),
            ("enable_mergejoin", "off"),
        ])
        .await
    }

    /// A connection of its own for a lock, whose session the server ends within about 25 s of
    /// its host vanishing (TCP keepalives; the defaults wait two hours), so a dead host's lock
    /// is freed well inside `shutdown_grace` + 30 s.
    pub async fn lock_connection(&self) -> Result<PgConnection, StateDbError> {
        self.connection_with(&[
            ("tcp_keepalives_idle", "10"),
            ("tcp_keepalives_interval", "5"),
            ("tcp_keepalives_count", "3"),
            // Keepalives probe an idle connection only: one with data the vanished host never
            // acknowledged is given up after this long instead (milliseconds).
            ("tcp_user_timeout", "25000"),
        ])
        .await
    }

    /// The URL with its password redacted.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    pub fn error(&self, source: sqlx::Error) -> StateDbError {
        StateDbError::Database {
            url: self.shown.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_tell_jobs_and_credentials_apart() {
        assert_eq!(job_lock_key("a"), job_lock_key("a"));
        assert_ne!(job_lock_key("a"), job_lock_key("b"));
        assert_ne!(job_lock_key("a"), credential_lock_key("a"));
    }
}
