//! The ledger in the PostgreSQL state database (`state_database`, SPEC section 9): every msgsend
//! process on every host that names the database reads and writes it. A visit is one
//! transaction that first takes the credential's transaction-level advisory lock, so visits of
//! all processes to one credential take turns, and visits to different credentials do not wait
//! for each other.
//!
//! Times are kept on the database server's clock. Each process learns how far its own clock is
//! from the server's (the sample with the shortest round trip of a few, so within half of it)
//! and translates every time it reads and writes: hosts whose clocks disagree by a second still
//! agree on which requests count in a window.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::Row as _;
use tokio::sync::OnceCell;

use super::{Change, Entry, LedgerError, Micros, Pace, Row};
use crate::state_db::{LOCK_SPACE, StateDatabase, credential_lock_key};

/// How many round trips the clock offset is measured over.
const CLOCK_SAMPLES: usize = 5;

/// A clock offset above this is logged: the host's clock should be fixed (NTP), although the
/// ledger itself is not misled by it.
const CLOCK_WARNING: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct PostgresLedger {
    database: StateDatabase,
    /// The server's clock minus this host's, in microseconds; measured on the first visit.
    offset: std::sync::Arc<OnceCell<Micros>>,
}

impl PostgresLedger {
    pub fn new(database: StateDatabase) -> PostgresLedger {
        PostgresLedger {
            database,
            offset: Default::default(),
        }
    }

    fn fail(&self) -> impl Fn(sqlx::Error) -> LedgerError + '_ {
        |source| LedgerError::Database {
            path: self.database.shown().to_string(),
            source,
        }
    }

    /// The server's clock minus this host's.
    async fn offset(&self) -> Result<Micros, LedgerError> {
        self.offset
            .get_or_try_init(|| async {
                let mut best: Option<(Duration, Micros)> = None;
                for _ in 0..CLOCK_SAMPLES {
                    let before = SystemTime::now();
                    let server: i64 = sqlx::query_scalar(
                        "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint",
                    )
                    .fetch_one(self.database.pool())
                    .await
                    .map_err(self.fail())?;
                    let round_trip = before.elapsed().unwrap_or_default();
                    let middle = micros(before) + Micros::try_from(round_trip.as_micros() / 2).unwrap_or(0);
                    if best.is_none_or(|(shortest, _)| round_trip < shortest) {
                        best = Some((round_trip, server - middle));
                    }
                }
                let offset = best.map_or(0, |(_, offset)| offset);
                if offset.unsigned_abs() > CLOCK_WARNING.as_micros() as u64 {
                    tracing::warn!(
                        offset_ms = offset / 1000,
                        "this host's clock differs from the state database's; the shared quotas use the database's clock, but fix this host's (NTP)"
                    );
                }
                Ok(offset)
            })
            .await
            .copied()
    }

    pub async fn visit<R>(
        &self,
        credential: &str,
        change: impl FnOnce(&mut Entry) -> R,
    ) -> Result<R, LedgerError> {
        let offset = self.offset().await?;
        let fail = self.fail();
        let mut tx = self.database.pool().begin().await.map_err(&fail)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(LOCK_SPACE)
            .bind(credential_lock_key(credential))
            .execute(&mut *tx)
            .await
            .map_err(&fail)?;
        let rows =
            sqlx::query("SELECT lease, arrived_by, count FROM quota_rows WHERE credential = $1")
                .bind(credential)
                .fetch_all(&mut *tx)
                .await
                .map_err(&fail)?;
        let rows = rows
            .iter()
            .map(|row| {
                Ok(Row {
                    lease: row.try_get(0)?,
                    arrived_by: row.try_get::<i64, _>(1)?.saturating_sub(offset),
                    count: u32::try_from(row.try_get::<i64, _>(2)?).unwrap_or(u32::MAX),
                })
            })
            .collect::<Result<Vec<Row>, sqlx::Error>>()
            .map_err(&fail)?;
        let local = |at: Option<i64>| at.map(|at| at.saturating_sub(offset));
        let pace = sqlx::query(
            "SELECT allowance, last_cut, last_change, paused_until FROM quota_pace \
             WHERE credential = $1",
        )
        .bind(credential)
        .fetch_optional(&mut *tx)
        .await
        .map_err(&fail)?
        .map(|row| {
            Ok::<_, sqlx::Error>(Pace {
                allowance: row
                    .try_get::<Option<i64>, _>(0)?
                    .map(|a| u32::try_from(a).unwrap_or(u32::MAX)),
                last_cut: local(row.try_get(1)?),
                last_change: local(row.try_get(2)?),
                paused_until: local(row.try_get(3)?),
            })
        })
        .transpose()
        .map_err(&fail)?
        .unwrap_or_default();
        let mut entry = Entry {
            rows,
            pace,
            changes: Vec::new(),
        };
        let result = change(&mut entry);
        let server = |at: Micros| at.saturating_add(offset);
        for change in &entry.changes {
            match change {
                Change::ReplaceLease(lease, rows) => {
                    sqlx::query("DELETE FROM quota_rows WHERE credential = $1 AND lease = $2")
                        .bind(credential)
                        .bind(lease)
                        .execute(&mut *tx)
                        .await
                        .map_err(&fail)?;
                    let live: Vec<(i64, i64)> = rows
                        .iter()
                        .filter(|(_, count)| *count > 0)
                        .map(|&(arrived_by, count)| (server(arrived_by), i64::from(count)))
                        .collect();
                    if !live.is_empty() {
                        // One statement for the lease's rows, whatever their number.
                        let (times, counts): (Vec<i64>, Vec<i64>) = live.into_iter().unzip();
                        sqlx::query(
                            "INSERT INTO quota_rows (credential, lease, arrived_by, count) \
                             SELECT $1, $2, arrived_by, count FROM UNNEST($3::bigint[], $4::bigint[]) \
                             AS r(arrived_by, count)",
                        )
                        .bind(credential)
                        .bind(lease)
                        .bind(&times)
                        .bind(&counts)
                        .execute(&mut *tx)
                        .await
                        .map_err(&fail)?;
                    }
                }
                Change::ExpireBefore(before) => {
                    sqlx::query("DELETE FROM quota_rows WHERE credential = $1 AND arrived_by < $2")
                        .bind(credential)
                        .bind(server(*before))
                        .execute(&mut *tx)
                        .await
                        .map_err(&fail)?;
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
            .bind(entry.pace.last_cut.map(server))
            .bind(entry.pace.last_change.map(server))
            .bind(entry.pace.paused_until.map(server))
            .execute(&mut *tx)
            .await
            .map_err(&fail)?;
        }
        tx.commit().await.map_err(&fail)?;
        Ok(result)
    }
}

fn micros(at: SystemTime) -> Micros {
    at.duration_since(UNIX_EPOCH).map_or(0, |since| {
        Micros::try_from(since.as_micros()).unwrap_or(Micros::MAX)
    })
}
