//! Reading a test's journal directly (read-only), and a small seeded random generator for the
//! tests that interrupt campaigns at random moments.

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

pub async fn job_exists(world: &World, job: &str) -> bool {
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
    let mut db = journal(world).await?;
    sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
        .bind(job)
        .fetch_optional(&mut db)
        .await
        .unwrap()
}

pub async fn integrity_ok(world: &World) {
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
