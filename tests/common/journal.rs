//! Reading a test's journal directly (read-only) — the SQLite file of its `state_dir`, or the
//! schema `msgsend` of its `state_database` when the world sets one — and a small seeded random
//! generator for the tests that interrupt campaigns at random moments.

use std::collections::BTreeMap;
use std::str::FromStr as _;

use sqlx::ConnectOptions as _;
use sqlx::sqlite::SqliteConnectOptions;

use super::World;

/// A small deterministic generator (xorshift); the seed is printed so a failure can be replayed.
pub struct Random(pub u64);

impl Random {
    /// Seeded from the clock (never zero).
    pub fn from_clock() -> Random {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        Random(nanos | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A read-only connection to the world's journal, if one was created.
pub async fn journal(world: &World) -> Option<sqlx::SqliteConnection> {
    let path = world.path("state/journal.sqlite");
    if !path.exists() {
        return None;
    }
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .unwrap()
        .read_only(true);
    Some(options.connect().await.unwrap())
}

/// The world's `state_database`, if it sets one.
fn state_database(world: &World) -> Option<String> {
    Some(world.config.get("state_database")?.as_str()?.to_string())
}

async fn postgres_state(url: &str) -> sqlx::PgConnection {
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    options
        .options([("search_path", "msgsend")])
        .connect()
        .await
        .unwrap()
}

pub async fn job_exists(world: &World, job: &str) -> bool {
    if let Some(url) = state_database(world) {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE id = $1")
            .bind(job)
            .fetch_one(&mut postgres_state(&url).await)
            .await
            // No table yet: no job yet.
            .unwrap_or(0);
        return n == 1;
    }
    let Some(mut db) = journal(world).await else {
        return false;
    };
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE id = $1")
        .bind(job)
        .fetch_one(&mut db)
        .await
        .unwrap_or(0);
    n == 1
}

pub async fn job_status(world: &World, job: &str) -> Option<String> {
    if let Some(url) = state_database(world) {
        return sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
            .bind(job)
            .fetch_optional(&mut postgres_state(&url).await)
            .await
            .unwrap();
    }
    let mut db = journal(world).await?;
    sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
        .bind(job)
        .fetch_optional(&mut db)
        .await
        .unwrap()
}

/// SQLite's integrity check of the journal file (PostgreSQL keeps its own).
pub async fn integrity_ok(world: &World) {
    if state_database(world).is_some() {
        return;
    }
    if let Some(mut db) = journal(world).await {
        let verdict: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&mut db)
            .await
            .unwrap();
        assert_eq!(verdict, "ok");
    }
}

/// Each recipient of `job` and its state.
pub async fn journal_states(world: &World, job: &str) -> BTreeMap<String, String> {
    if let Some(url) = state_database(world) {
        return sqlx::query_as::<_, (String, String)>(
            "SELECT phone, state FROM recipients WHERE job_id = $1",
        )
        .bind(job)
        .fetch_all(&mut postgres_state(&url).await)
        .await
        .unwrap_or_default()
        .into_iter()
        .collect();
    }
    let Some(mut db) = journal(world).await else {
        return BTreeMap::new();
    };
    sqlx::query_as::<_, (String, String)>("SELECT phone, state FROM recipients WHERE job_id = $1")
        .bind(job)
        .fetch_all(&mut db)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// How often the sandbox received each phone.
pub fn receipts(world: &World) -> BTreeMap<String, usize> {
    let mut received = BTreeMap::new();
    for message in world.recorded() {
        *received.entry(message.phone).or_default() += 1;
    }
    received
}
