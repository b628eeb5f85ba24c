//! Attacks on the PostgreSQL state (SPEC section 9) by a careless operator and a hostile
//! environment: runs on several "hosts" at once, wrong `state_database` values, a database
//! that misbehaves. Each test is one promise that broke, kept here so it stays fixed. A "host"
//! is a msgsend process with a `HOME`, a `state_dir` and a config of its own, naming the same
//! `state_database` (a fresh database per test), as in tests/hosts.rs.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::hosts::{Hosts, output_of};
use common::{POSTGRES_TEST_PASSWORD, stderr, stdout};

/// The hosts of a sandbox answering after `latency`, circuits that do not open.
async fn hosts(test: &str, latency: Duration) -> Option<Hosts> {
    hosts_with(test, |config| config.kakaotalk.faults.latency = latency).await
}

async fn hosts_with(
    test: &str,
    adjust: impl FnOnce(&mut msgsend::sandbox::SandboxConfig),
) -> Option<Hosts> {
    let mut hosts = Hosts::start(test, adjust).await?;
    hosts.world.set("circuit_breaker.failure_threshold", 1000);
    Some(hosts)
}

/// Every provider down (`true`) or back.
fn providers_down(hosts: &Hosts, down: bool) {
    for sim in [&hosts.world.sandbox.kakaotalk, &hosts.world.sandbox.sms] {
        sim.control.down.store(down, Ordering::SeqCst);
    }
}

fn people(n: usize) -> String {
    common::people_csv("7100", n, "\n")
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(postgres_available),
    ignore = "no PostgreSQL server: apt-get install postgresql, or set MSGSEND_TEST_POSTGRES_URL"
)]
async fn two_retries_of_one_failed_campaign_started_at_once_on_two_hosts_send_nobody_twice() {
    let Some(hosts) = hosts("retry_race", Duration::ZERO).await else {
        return;
    };
    let csv = hosts.world.path("people.csv");
    std::fs::write(&csv, people(10)).unwrap();
    let csv = csv.display().to_string();
    // Every provider down: the whole campaign fails, for certain.
    providers_down(&hosts, true);
    let first = hosts
        .run("a", &common::campaign_args(&csv, &["--job-id", "first"]))
        .await;
    assert_ne!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_eq!(hosts.in_state("first", "failed").await, 10);
    providers_down(&hosts, false);
    // A database under load: each insert of recipients takes a moment (the window in which
    // another process's admission cannot see this one's yet).
    sqlx::raw_sql(
        "CREATE FUNCTION msgsend.slow_insert() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN PERFORM pg_sleep(0.5); RETURN NULL; END $$; \
         CREATE TRIGGER slow_insert BEFORE INSERT ON msgsend.recipients \
           FOR EACH STATEMENT EXECUTE FUNCTION msgsend.slow_insert();",
    )
    .execute(&mut hosts.db().await)
    .await
    .unwrap();
    // Two operators (or two hosts' cron lines) retry the failed campaign at once: different
    // jobs, so both run (SPEC section 9); `--retry-failed` twice must send nobody twice.
    let a = hosts
        .command(
            "a",
            &["bulk", "--retry-failed", "first", "--job-id", "again-a"],
        )
        .spawn()
        .unwrap();
    let b = hosts
        .command(
            "b",
            &["bulk", "--retry-failed", "first", "--job-id", "again-b"],
        )
        .spawn()
        .unwrap();
    let (a, b) = tokio::join!(output_of(a), output_of(b));
    assert_eq!(a.status.code(), Some(0), "{}", stderr(&a));
    assert_eq!(b.status.code(), Some(0), "{}", stderr(&b));
    let received = hosts.deliveries();
    assert_eq!(received.len(), 10, "somebody was skipped: {received:?}");
    assert!(
        received.values().all(|&n| n == 1),
        "somebody got the campaign twice: {received:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(postgres_available),
    ignore = "no PostgreSQL server: apt-get install postgresql, or set MSGSEND_TEST_POSTGRES_URL"
)]
async fn the_refusal_of_a_second_run_suggests_only_options_that_exist() {
    let Some(hosts) = hosts("refusal_words", Duration::from_millis(300)).await else {
        return;
    };
    let csv = hosts.world.path("people.csv");
    std::fs::write(&csv, people(20)).unwrap();
    let csv = csv.display().to_string();
    let mut a = hosts
        .command(
            "a",
            &common::campaign_args(&csv, &["--job-id", "busy", "--concurrency", "1"]),
        )
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while hosts.in_state("busy", "sent").await == 0 {
        assert!(Instant::now() < deadline, "the campaign did not get going");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = hosts.run("b", &["bulk", "--resume", "busy"]).await;
    let help = hosts.run("b", &["bulk", "--help"]).await;
    a.kill().unwrap();
    a.wait().unwrap();
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    let refusal = stderr(&second);
    for word in refusal.split_whitespace() {
        let option = word.trim_matches(|c: char| !(c.is_alphanumeric() || c == '-'));
        if option.starts_with("--") {
            assert!(
                stdout(&help).contains(option),
                "the refusal suggests {option}, which `bulk` does not have:\n{refusal}"
            );
        }
    }
}

/// Ends the session that holds a job's lock (a session-level advisory lock in msgsend's key
/// space), as a database restart, a failover or a network cut would; the process lives on.
async fn cut_lock_connection(hosts: &Hosts) -> usize {
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_locks \
         WHERE locktype = 'advisory' AND objsubid = 2 AND granted AND classid = $1 \
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .bind(msgsend::state_db::LOCK_SPACE as u32 as i64)
    .fetch_all(&mut hosts.db().await)
    .await
    .unwrap();
    cut.len()
}

async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(postgres_available),
    ignore = "no PostgreSQL server: apt-get install postgresql, or set MSGSEND_TEST_POSTGRES_URL"
)]
async fn a_run_that_lost_its_lock_writes_nothing_over_the_run_that_took_the_job_over() {
    // The first three requests fail (500); every answer takes a moment.
    let Some(mut hosts) = hosts_with("lost_lock", |config| {
        config.kakaotalk.faults.fail_first = 3;
        config.kakaotalk.faults.latency = Duration::from_millis(800);
    })
    .await
    else {
        return;
    };
    // Host A's first three recipients wait long between attempts.
    hosts
        .world
        .set("retry.initial_delay", "30s")
        .set("retry.max_delay", "30s")
        .set("routing.fallback", "sms");
    let csv = hosts.world.path("people.csv");
    std::fs::write(&csv, people(30)).unwrap();
    let csv = csv.display().to_string();
    let a = hosts
        .command(
            "a",
            &common::campaign_args(&csv, &["--job-id", "taken", "--concurrency", "3"]),
        )
        .spawn()
        .unwrap();
    let errors = hosts.world.sandbox.kakaotalk.stats.clone();
    wait_until("A's first attempts", async || {
        common::count(&errors.server_errors) >= 3
    })
    .await;
    // A's lock is gone (its process lives on); host B takes the job over at once, and sends
    // to the others for longer than A takes to notice (its watchdog looks every 5 s).
    assert_eq!(cut_lock_connection(&hosts).await, 1);
    let b = hosts
        .command("b", &["bulk", "--resume", "taken"])
        .spawn()
        .unwrap();
    let (a, b) = tokio::join!(output_of(a), output_of(b));
    // B ends DONE; the three A had in flight are `uncertain` (exit 3), nobody else undelivered.
    assert!(matches!(b.status.code(), Some(0 | 3)), "{}", stderr(&b));
    assert_ne!(a.status.code(), Some(0), "{}", stderr(&a));
    // Whatever the job now says, a resume by its id reaches everyone not reached yet.
    let c = hosts.run("c", &["bulk", "--resume", "taken"]).await;
    assert!(matches!(c.status.code(), Some(0 | 3)), "{}", stderr(&c));
    let failed: Vec<(String, String)> = sqlx::query_as(
        "SELECT phone, reason FROM recipients WHERE job_id = 'taken' AND state = 'failed'",
    )
    .fetch_all(&mut hosts.db().await)
    .await
    .unwrap();
    let received = hosts.deliveries();
    assert!(received.values().all(|&n| n == 1), "twice: {received:?}");
    let uncertain: Vec<String> = sqlx::query_scalar(
        "SELECT phone FROM recipients WHERE job_id = 'taken' AND state = 'uncertain'",
    )
    .fetch_all(&mut hosts.db().await)
    .await
    .unwrap();
    let mut accounted: std::collections::BTreeSet<String> = received.keys().cloned().collect();
    accounted.extend(uncertain);
    assert_eq!(
        accounted.len(),
        30,
        "somebody was skipped: recorded failed {failed:?}; A said {}; B said {}",
        stderr(&a),
        stdout(&b)
    );
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(postgres_available),
    ignore = "no PostgreSQL server: apt-get install postgresql, or set MSGSEND_TEST_POSTGRES_URL"
)]
async fn every_connection_killed_mid_run_stops_the_run_and_a_resume_elsewhere_sends_nobody_twice() {
    let Some(mut hosts) = hosts("cut_all", Duration::from_millis(100)).await else {
        return;
    };
    let people = common::crowd::crowd(40);
    let csv = hosts.world.with_crowd(&people);
    let mut a = hosts
        .command(
            "a",
            &common::campaign_args(&csv, &["--job-id", "cut", "--concurrency", "2"]),
        )
        .spawn()
        .unwrap();
    wait_until("A's first sends", async || {
        hosts.world.recorded().len() >= 5
    })
    .await;
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'msgsend' AND datname = current_database()",
    )
    .fetch_all(&mut hosts.db().await)
    .await
    .unwrap();
    assert!(killed.len() >= 2, "{killed:?}");
    let cut_at = Instant::now();
    let a_status = tokio::task::spawn_blocking(move || {
        let status = a.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(a.stderr.as_mut().unwrap(), &mut err).unwrap();
        (status, err)
    })
    .await
    .unwrap();
    assert!(cut_at.elapsed() < Duration::from_secs(15), "A kept going");
    assert_ne!(a_status.0.code(), Some(0), "{}", a_status.1);
    assert!(
        !a_status.1.contains(POSTGRES_TEST_PASSWORD),
        "{}",
        a_status.1
    );
    let b = hosts.run("b", &["bulk", "--resume", "cut"]).await;
    assert!(matches!(b.status.code(), Some(0 | 3)), "{}", stderr(&b));
    let received = hosts.deliveries();
    assert!(received.values().all(|&n| n == 1), "twice: {received:?}");
    // Reached, or recorded `uncertain` (in flight when the connections broke).
    let uncertain: Vec<String> = sqlx::query_scalar(
        "SELECT phone FROM recipients WHERE job_id = 'cut' AND state = 'uncertain'",
    )
    .fetch_all(&mut hosts.db().await)
    .await
    .unwrap();
    let mut accounted: std::collections::BTreeSet<String> = received.keys().cloned().collect();
    accounted.extend(uncertain);
    assert_eq!(accounted, people.eligible, "somebody was skipped");
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(postgres_available),
    ignore = "no PostgreSQL server: apt-get install postgresql, or set MSGSEND_TEST_POSTGRES_URL"
)]
async fn resume_without_a_job_on_another_host_continues_the_interrupted_job_not_the_running_one() {
    let Some(hosts) = hosts("resume_alone", Duration::from_millis(150)).await else {
        return;
    };
    let first_csv = hosts.world.path("first.csv");
    std::fs::write(&first_csv, common::people_csv("7201", 12, "\n")).unwrap();
    let second_csv = hosts.world.path("second.csv");
    std::fs::write(&second_csv, common::people_csv("7202", 60, "\n")).unwrap();
    let (first_csv, second_csv) = (
        first_csv.display().to_string(),
        second_csv.display().to_string(),
    );
    // Job `first` is interrupted (SIGTERM) on host A after a few sends.
    let first = hosts
        .command(
            "a",
            &common::campaign_args(&first_csv, &["--job-id", "first", "--concurrency", "1"]),
        )
        .spawn()
        .unwrap();
    wait_until("first's sends", async || {
        hosts.in_state("first", "sent").await >= 2
    })
    .await;
    common::signal(first.id(), "TERM");
    let first = output_of(first).await;
    assert_eq!(first.status.code(), Some(130), "{}", stderr(&first));
    // Then host A runs job `second`, a long one.
    let mut second = hosts
        .command(
            "a",
            &common::campaign_args(&second_csv, &["--job-id", "second", "--concurrency", "1"]),
        )
        .spawn()
        .unwrap();
    wait_until("second's sends", async || {
        hosts.in_state("second", "sent").await >= 1
    })
    .await;
    // Host B's cron line continues whatever is unfinished: `first`, which nobody runs.
    let resumed = hosts.run("b", &["bulk", "--resume"]).await;
    second.kill().unwrap();
    second.wait().unwrap();
    assert_eq!(resumed.status.code(), Some(0), "{}", stderr(&resumed));
    assert!(stdout(&resumed).contains("first"), "{}", stdout(&resumed));
    assert_eq!(hosts.in_state("first", "queued").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(postgres_available),
    ignore = "no PostgreSQL server: apt-get install postgresql, or set MSGSEND_TEST_POSTGRES_URL"
)]
async fn a_role_that_owns_the_schema_but_may_not_create_schemas_can_use_the_state() {
    let Some(mut hosts) = hosts("least_privilege", Duration::ZERO).await else {
        return;
    };
    // As a DBA provisions it: the schema made for the application's role, which does not own
    // the database (and so may not create schemas in it).
    let role = format!("msgsend_app_{}", std::process::id());
    let password = "app-pw-3f9a";
    let database = hosts.state.rsplit_once('/').unwrap().1.to_string();
    let mut admin = hosts.db().await;
    for statement in [
        format!("DROP ROLE IF EXISTS {role}"),
        format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"),
        format!("REVOKE CREATE ON DATABASE {database} FROM PUBLIC"),
        format!("CREATE SCHEMA msgsend AUTHORIZATION {role}"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    let (_, server) = hosts.state.split_once('@').unwrap();
    let url = format!("postgres://{role}:{password}@{server}");
    hosts.world.set("state_database", url);
    let jobs = hosts.run("a", &["jobs"]).await;
    assert_eq!(jobs.status.code(), Some(0), "{}", stderr(&jobs));
    assert!(stdout(&jobs).contains("No jobs"), "{}", stdout(&jobs));
}

/// The key of sqlx's migration lock on database `name` (sqlx-postgres `generate_lock_id`):
/// every sqlx-migrated application on that database takes it while it migrates.
fn sqlx_migration_lock(name: &str) -> i64 {
    let mut crc = 0xffff_ffffu32;
    for byte in name.bytes() {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    0x3d32ad9e * i64::from(!crc)
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(postgres_available),
    ignore = "no PostgreSQL server: apt-get install postgresql, or set MSGSEND_TEST_POSTGRES_URL"
)]
async fn a_migration_that_never_ends_elsewhere_does_not_hang_every_msgsend() {
    let Some(hosts) = hosts("stuck_migration", Duration::ZERO).await else {
        return;
    };
    let database = hosts.state.rsplit_once('/').unwrap().1.to_string();
    // Another process migrating this database froze (a suspended msgsend, another sqlx
    // application's long migration) while holding the migration lock.
    let mut other = hosts.db().await;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(sqlx_migration_lock(&database))
        .execute(&mut other)
        .await
        .unwrap();
    let mut jobs = hosts.command("a", &["jobs"]);
    let started = Instant::now();
    let mut child = jobs.spawn().unwrap();
    let ended = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let output = output_of(child).await;
    assert!(ended.is_some(), "`jobs` still waits after 20 s");
    assert_eq!(ended.unwrap().code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("migrat"), "{}", stderr(&output));
}
