//! The ledger in a SQLite file under `state_dir` (`quota.sqlite`): every msgsend process on the
//! host that uses the same `state_dir` reads and writes it. A visit is one `BEGIN IMMEDIATE`
//! transaction, so visits of several processes take turns (SQLite's write lock, waited for up to
//! `busy_timeout`). WAL mode, `synchronous = NORMAL`: a process that is killed loses nothing it
//! committed; only a crash of the machine itself may lose the last visits, and after a reboot
//! the provider's windows have long passed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};
use sqlx::{ConnectOptions as _, Connection as _, Row as _};

use super::{Change, Entry, Pace, Row};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS quota_rows (
    credential TEXT NOT NULL,
    lease INTEGER NOT NULL,
    arrived_by INTEGER NOT NULL,
    count INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS quota_rows_of_credential ON quota_rows (credential, lease);
CREATE TABLE IF NOT EXISTS quota_pace (
    credential TEXT PRIMARY KEY,
    allowance INTEGER,
    last_cut INTEGER,
    last_change INTEGER,
    paused_until INTEGER
);
";

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("quota ledger {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("quota ledger {path}: {source}")]
    Database { path: String, source: sqlx::Error },
    #[error(
        "quota ledger {path}: {rows} row(s) hold a value of the wrong type; \
         the file was changed by something other than msgsend (remove it once no msgsend runs)"
    )]
    Damaged { path: String, rows: i64 },
}

#[derive(Debug, Clone)]
pub struct SqliteLedger {
    pool: SqlitePool,
    path: PathBuf,
}

impl SqliteLedger {
    pub async fn open(state_dir: &Path) -> Result<Self, LedgerError> {
        let path = state_dir.join("quota.sqlite");
        create_private(state_dir, &path).map_err(|source| LedgerError::File {
            path: path.display().to_string(),
            source,
        })?;
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            // Visits are short (a few rows); a long wait means another process is stuck.
            .busy_timeout(Duration::from_secs(10))
            .disable_statement_logging();
        let fail = |source| LedgerError::Database {
            path: path.display().to_string(),
            source,
        };
        // One connection: a process's visits take turns anyway (the limiter's), and SQLite
        // serialises writers.
        let pool = sqlx::pool::PoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(fail)?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await.map_err(fail)?;
        // A value of the wrong type would stop every visit later, mid-run: the command fails
        // now instead, before anything is sent.
        let damaged: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM quota_rows WHERE typeof(lease) != 'integer' \
             OR typeof(arrived_by) != 'integer' OR typeof(count) != 'integer') \
             + (SELECT COUNT(*) FROM quota_pace WHERE typeof(allowance) NOT IN ('integer', 'null') \
             OR typeof(last_cut) NOT IN ('integer', 'null') \
             OR typeof(last_change) NOT IN ('integer', 'null') \
             OR typeof(paused_until) NOT IN ('integer', 'null'))",
        )
        .fetch_one(&pool)
        .await
        .map_err(fail)?;
        if damaged > 0 {
            return Err(LedgerError::Damaged {
                path: path.display().to_string(),
                rows: damaged,
            });
        }
        Ok(SqliteLedger { pool, path })
    }

    pub async fn visit<R>(
        &self,
        credential: &str,
        change: impl FnOnce(&mut Entry) -> R,
    ) -> Result<R, LedgerError> {
        let fail = |source| LedgerError::Database {
            path: self.path.display().to_string(),
            source,
        };
        let mut connection = self.pool.acquire().await.map_err(fail)?;
        // IMMEDIATE takes the write lock at once: two processes that read the same free slots
        // and then both wrote would break the quota.
        let mut tx = connection
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(fail)?;
        let rows =
            sqlx::query("SELECT lease, arrived_by, count FROM quota_rows WHERE credential = $1")
                .bind(credential)
                .fetch_all(&mut *tx)
                .await
                .map_err(fail)?;
        // A row of the wrong type (the file edited by hand, or damaged) is an error, never a
        // panic: `get` would panic on it.
        let rows = rows
            .iter()
            .map(|row| {
                Ok(Row {
                    lease: row.try_get(0)?,
                    arrived_by: row.try_get(1)?,
                    count: u32::try_from(row.try_get::<i64, _>(2)?).unwrap_or(u32::MAX),
                })
            })
            .collect::<Result<Vec<Row>, sqlx::Error>>()
            .map_err(fail)?;
        let pace = sqlx::query(
            "SELECT allowance, last_cut, last_change, paused_until FROM quota_pace \
             WHERE credential = $1",
        )
        .bind(credential)
        .fetch_optional(&mut *tx)
        .await
        .map_err(fail)?
        .map(|row| {
            Ok::<_, sqlx::Error>(Pace {
                allowance: row
                    .try_get::<Option<i64>, _>(0)?
                    .map(|a| u32::try_from(a).unwrap_or(u32::MAX)),
                last_cut: row.try_get(1)?,
                last_change: row.try_get(2)?,
                paused_until: row.try_get(3)?,
            })
        })
        .transpose()
        .map_err(fail)?
        .unwrap_or_default();
        let mut entry = Entry {
            rows,
            pace,
            changes: Vec::new(),
        };
        let result = change(&mut entry);
        for change in &entry.changes {
            match change {
                Change::ReplaceLease(lease, rows) => {
                    sqlx::query("DELETE FROM quota_rows WHERE credential = $1 AND lease = $2")
                        .bind(credential)
                        .bind(lease)
                        .execute(&mut *tx)
                        .await
                        .map_err(fail)?;
                    // One statement per few hundred rows: a busy lease settles into many
                    // rows, and a statement each would hold every waiter of the process.
                    let live: Vec<&(i64, u32)> =
                        rows.iter().filter(|(_, count)| *count > 0).collect();
                    for chunk in live.chunks(200) {
                        let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                            "INSERT INTO quota_rows (credential, lease, arrived_by, count) ",
                        );
                        insert.push_values(chunk, |mut row, &&(arrived_by, count)| {
                            row.push_bind(credential)
                                .push_bind(*lease)
                                .push_bind(arrived_by)
                                .push_bind(i64::from(count));
                        });
                        insert.build().execute(&mut *tx).await.map_err(fail)?;
                    }
                }
                Change::ExpireBefore(before) => {
                    sqlx::query("DELETE FROM quota_rows WHERE credential = $1 AND arrived_by < $2")
                        .bind(credential)
                        .bind(before)
                        .execute(&mut *tx)
                        .await
                        .map_err(fail)?;
                }
            }
        }
        if entry.pace != pace {
            sqlx::query(
                "INSERT INTO quota_pace (credential, allowance, last_cut, last_change, paused_until) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (credential) DO UPDATE SET allowance = $2, last_cut = $3, \
                 last_change = $4, paused_until = $5",
            )
            .bind(credential)
            .bind(entry.pace.allowance.map(i64::from))
            .bind(entry.pace.last_cut)
            .bind(entry.pace.last_change)
            .bind(entry.pace.paused_until)
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        }
        tx.commit().await.map_err(fail)?;
        Ok(result)
    }
}

/// The state directory (0700) and the ledger file (0600), never through a symlink: the file
/// names no person, but it steers every process's sends.
fn create_private(state_dir: &Path, path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(state_dir)?;
    }
    Ok(())
}
