//! Several "hosts" on one PostgreSQL state (SPEC section 9): a sandbox, a fresh state database
//! for the test, and msgsend run as if on another machine — a `HOME`, a `state_dir` and a config
//! file of its own ([`World::host_command`]), the same `state_database`.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use msgsend::sandbox::SandboxConfig;

use super::World;

pub struct Hosts {
    pub world: World,
    /// The state database's URL.
    pub state: String,
}

impl Hosts {
    /// A sandbox changed by `adjust` and a fresh state database named after `test`; `None` (the
    /// test skips, visibly) without a PostgreSQL server.
    pub async fn start(test: &str, adjust: impl FnOnce(&mut SandboxConfig)) -> Option<Hosts> {
        let url = super::postgres_url()?;
        let state = super::postgres::fresh_database(&url, test).await;
        let mut world = World::start(adjust).await;
        world.set("state_database", state.clone());
        Some(Hosts { world, state })
    }

    /// msgsend on `host`: its own `HOME`, `state_dir` and config file, the shared database.
    pub fn command(&self, host: &str, args: &[&str]) -> Command {
        self.world.host_command(host, args)
    }

    /// msgsend on `host`, run to its end.
    pub async fn run(&self, host: &str, args: &[&str]) -> Output {
        output_of(self.command(host, args).spawn().unwrap()).await
    }

    /// How often each phone was delivered, over every job.
    pub fn deliveries(&self) -> BTreeMap<String, usize> {
        let mut received = BTreeMap::new();
        for message in self.world.recorded() {
            *received.entry(message.phone).or_insert(0) += 1;
        }
        received
    }

    /// The 429s both providers answered.
    pub fn rate_limited(&self) -> u64 {
        super::count(&self.world.sandbox.kakaotalk.stats.rate_limited)
            + super::count(&self.world.sandbox.sms.stats.rate_limited)
    }

    pub async fn wait_for_records(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.world.recorded().len() < n {
            assert!(Instant::now() < deadline, "the campaign did not get going");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A connection to the state database, its tables on the search path.
    pub async fn db(&self) -> sqlx::PgConnection {
        let mut db = super::postgres::connect(&self.state).await;
        sqlx::raw_sql("SET search_path = msgsend")
            .execute(&mut db)
            .await
            .unwrap();
        db
    }

    /// How many of the job's recipients are in `state` (0 while the schema is not there yet).
    pub async fn in_state(&self, job: &str, state: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM recipients WHERE job_id = $1 AND state = $2")
            .bind(job)
            .bind(state)
            .fetch_one(&mut self.db().await)
            .await
            .unwrap_or(0)
    }
}

/// A spawned msgsend's output once it ends.
pub async fn output_of(child: std::process::Child) -> Output {
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}
