//! The quota ledger: what every msgsend process that shares a state knows of each credential's
//! quota (SPEC section 8) — the requests that still count in one of its windows, and its
//! adaptive allowance and pause after 429s. The rate limiter ([`crate::policy::rate_limit`])
//! holds the rules; the ledger only keeps the facts, and lets one process at a time read and
//! change one credential's facts ([`Ledger::visit`]).
//!
//! A request is a row: the *latest moment it can have reached the provider* (`arrived_by`,
//! unix microseconds) and how many requests share that moment (`count`), under the *lease*
//! that granted it. A process takes slots in leases of one or more; while a slot is unused or
//! its request is out, its row says the worst case (the lease's last moment of use plus twice
//! the provider's timeout), so a process that dies leaves rows that stay counted long enough.
//! When the process learns better (the answer came back, the slot went unused), it replaces
//! the lease's rows with the real moments on its next visit.
//!
//! Three stores keep the same facts: a SQLite file under `state_dir` (`quota.sqlite`), shared by
//! every process on the host; the PostgreSQL state database (`state_database`), shared by every
//! process on every host that names it; and one in memory, shared by the limiters of one process, which
//! the limiter's own tests use to play several processes under tokio's paused clock.

mod postgres;
mod sqlite;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use sha2::Digest as _;

pub use sqlite::LedgerError;

/// Unix time in microseconds: the ledger is read by several processes, so its times are the
/// machine's wall clock, not one process's monotonic clock.
pub type Micros = i64;

/// One group of requests of one lease that reached (or can reach) the provider by `arrived_by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub lease: i64,
    pub arrived_by: Micros,
    pub count: u32,
}

/// A credential's adaptive pace, shared like its rows (SPEC section 8: "the adaptive allowance
/// after 429s live in the state").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pace {
    /// Requests allowed in the tightest window, when a 429 cut it below the quota.
    pub allowance: Option<u32>,
    /// When the allowance was last cut (one cut per window).
    pub last_cut: Option<Micros>,
    /// When the allowance was last cut or raised.
    pub last_change: Option<Micros>,
    /// The provider asked (`Retry-After`) not to be called before then.
    pub paused_until: Option<Micros>,
}

/// One credential's facts as a visit sees them; the changes a visit makes are replayed on the
/// store when it ends.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    rows: Vec<Row>,
    pub pace: Pace,
    changes: Vec<Change>,
}

#[derive(Debug, Clone)]
enum Change {
    /// Every row of the lease replaced by these `(arrived_by, count)`.
    ReplaceLease(i64, Vec<(Micros, u32)>),
    /// Rows that arrived before this moment dropped: they count in no window any more.
    ExpireBefore(Micros),
}

impl Entry {
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// Replaces every row of `lease` by `rows` (none: the lease is gone).
    pub fn replace_lease(&mut self, lease: i64, rows: Vec<(Micros, u32)>) {
        self.rows.retain(|row| row.lease != lease);
        self.rows
            .extend(
                rows.iter()
                    .filter(|&&(_, count)| count > 0)
                    .map(|&(arrived_by, count)| Row {
                        lease,
                        arrived_by,
                        count,
                    }),
            );
        self.changes.push(Change::ReplaceLease(lease, rows));
    }

    /// Drops the rows that arrived before `before`.
    pub fn expire_before(&mut self, before: Micros) {
        self.rows.retain(|row| row.arrived_by >= before);
        self.changes.push(Change::ExpireBefore(before));
    }
}

/// Where the facts live.
#[derive(Debug, Clone)]
pub enum Ledger {
    /// Every process on this host that uses the same `state_dir`.
    Sqlite(sqlite::SqliteLedger),
    /// Every process on every host that uses the same `state_database`.
    Postgres(postgres::PostgresLedger),
    /// This process only.
    Memory(Arc<std::sync::Mutex<HashMap<String, Entry>>>),
}

impl Ledger {
    /// The ledger of `state_dir` (`quota.sqlite`, created when missing).
    pub async fn open(state_dir: &Path) -> Result<Ledger, LedgerError> {
        sqlite::SqliteLedger::open(state_dir)
            .await
            .map(Ledger::Sqlite)
    }

    /// The ledger of a PostgreSQL state database.
    pub fn postgres(database: crate::state_db::StateDatabase) -> Ledger {
        Ledger::Postgres(postgres::PostgresLedger::new(database))
    }

    /// A ledger of this process alone.
    pub fn in_memory() -> Ledger {
        Ledger::Memory(Arc::default())
    }

    /// Reads `credential`'s facts, lets `change` look at and change them, and stores the result,
    /// with no other process in between.
    pub async fn visit<R>(
        &self,
        credential: &str,
        change: impl FnOnce(&mut Entry) -> R,
    ) -> Result<R, LedgerError> {
        match self {
            Ledger::Sqlite(ledger) => ledger.visit(credential, change).await,
            Ledger::Postgres(ledger) => ledger.visit(credential, change).await,
            Ledger::Memory(entries) => {
                let mut entries = entries.lock().unwrap_or_else(|e| e.into_inner());
                let entry = entries.entry(credential.to_string()).or_default();
                let result = change(entry);
                entry.changes.clear();
                Ok(result)
            }
        }
    }
}

/// The name a credential goes by in the ledger: provider, endpoint and user, hashed, so that the
/// file names no account, and two configs that name the same account share its quota.
pub fn credential_key(provider: &str, base_url: &str, username: &str) -> String {
    let digest = sha2::Sha256::digest(format!("{provider}\n{base_url}\n{username}").as_bytes());
    hex::encode(&digest[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_key_names_no_account_and_tells_accounts_apart() {
        let key = credential_key("kakaotalk", "http://127.0.0.1:8081/", "autoever");
        assert_eq!(key.len(), 32);
        assert!(!key.contains("autoever"));
        assert_ne!(
            key,
            credential_key("kakaotalk", "http://127.0.0.1:8081/", "other")
        );
        assert_ne!(
            key,
            credential_key("sms", "http://127.0.0.1:8081/", "autoever")
        );
    }

    #[tokio::test]
    async fn leases_replace_their_rows_and_old_rows_expire() {
        let dir = tempfile::tempdir().unwrap();
        for ledger in [Ledger::in_memory(), Ledger::open(dir.path()).await.unwrap()] {
            ledger
                .visit("c", |entry| {
                    entry.replace_lease(1, vec![(100, 3)]);
                    entry.replace_lease(2, vec![(200, 1)]);
                    entry.pace.allowance = Some(7);
                })
                .await
                .unwrap();
            let rows = ledger
                .visit("c", |entry| {
                    entry.replace_lease(1, vec![(50, 1), (150, 2)]);
                    entry.expire_before(100);
                    entry.rows().to_vec()
                })
                .await
                .unwrap();
            assert_eq!(rows.len(), 2);
            let (rows, pace) = ledger
                .visit("c", |entry| (entry.rows().to_vec(), entry.pace))
                .await
                .unwrap();
            let mut seen: Vec<_> = rows
                .iter()
                .map(|r| (r.lease, r.arrived_by, r.count))
                .collect();
            seen.sort();
            assert_eq!(seen, vec![(1, 150, 2), (2, 200, 1)]);
            assert_eq!(pace.allowance, Some(7));
            let other = ledger.visit("d", |entry| entry.rows().len()).await.unwrap();
            assert_eq!(other, 0);
        }
    }

    #[tokio::test]
    async fn a_row_of_the_wrong_type_is_an_error_never_a_panic() {
        use sqlx::ConnectOptions as _;
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).await.unwrap();
        ledger
            .visit("c", |entry| entry.replace_lease(1, vec![(100, 1)]))
            .await
            .unwrap();
        let mut db = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("quota.sqlite"))
            .connect()
            .await
            .unwrap();
        sqlx::query("UPDATE quota_rows SET arrived_by = 'soon'")
            .execute(&mut db)
            .await
            .unwrap();
        let visited = ledger.visit("c", |entry| entry.rows().len()).await;
        assert!(visited.is_err(), "{visited:?}");
        let reopened = Ledger::open(dir.path()).await;
        assert!(
            matches!(reopened, Err(LedgerError::Damaged { rows: 1, .. })),
            "{reopened:?}"
        );
    }
}
