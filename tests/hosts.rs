//! SPEC section 9 across real processes: the whole state — journal, locks, quota ledger — in
//! PostgreSQL, shared by several hosts. A "host" here is a msgsend process with a `HOME`, a
//! `state_dir` and a config file of its own, naming the same `state_database` (a fresh database
//! per test on the test server). Two jobs at once share one credential's quota; a host killed
//! mid-campaign is resumed by another; a second run of a running job is refused naming its
//! holder; the schema is created, migrated from the previous version, and refused when newer.

mod common;

use std::collections::BTreeMap;
use std::process::Output;
use std::time::{Duration, Instant};

use common::crowd::crowd;
use common::hosts::{Hosts, output_of};
use common::{campaign_args, stderr};

/// A sandbox whose KakaoTalk allows `rate` (and the config saying so), answering after
/// `latency`, and a fresh state database.
async fn hosts(test: &str, rate: &str, latency: Duration) -> Option<Hosts> {
    let mut hosts = Hosts::start(test, |config| {
        config.kakaotalk.rate = rate.parse().unwrap();
        config.kakaotalk.faults.latency = latency;
    })
    .await?;
    hosts.world.set("providers.kakaotalk.rate_limit", rate);
    Some(hosts)
}

fn status_json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(postgres_available),
    ignore = "no PostgreSQL server: apt-get install postgresql, or set MSGSEND_TEST_POSTGRES_URL"
)]
async fn two_jobs_on_two_hosts_share_one_quota_send_everyone_once_and_use_the_quota() {
    let Some(mut hosts) = hosts("two_jobs", "20/s", Duration::ZERO).await else {
        return;
    };
    let people = crowd(60);
    let csv = hosts.world.with_crowd(&people);
    // Both start at once on an empty database: the schema is created once, under its lock.
    let north = hosts
        .command("a", &campaign_args(&csv, &["--job-id", "north"]))
        .spawn()
        .unwrap();
    let south = hosts
        .command("b", &campaign_args(&csv, &["--job-id", "south"]))
        .spawn()
        .unwrap();
    let (north, south) = tokio::join!(output_of(north), output_of(south));
    assert_eq!(north.status.code(), Some(0), "{}", stderr(&north));
    assert_eq!(south.status.code(), Some(0), "{}", stderr(&south));
    assert_eq!(hosts.rate_limited(), 0, "a provider answered 429");
    let received = hosts.deliveries();
    assert_eq!(received.len(), people.eligible.len());
    assert!(
        received.values().all(|&n| n == 2),
        "once per job: {received:?}"
    );
    // The quota was used, not only kept: arrivals over their span, against 20 per second.
    let mut arrivals: Vec<jiff::Timestamp> = hosts
        .world
        .recorded()
        .iter()
        .map(|m| m.at.parse().unwrap())
        .collect();
    arrivals.sort();
    let span = arrivals.last().unwrap().duration_since(arrivals[0]);
    let rate = (arrivals.len() - 1) as f64 / span.as_secs_f64();
    assert!(
        rate >= 0.95 * 20.0,
        "{} messages in {span:?}: {rate:.1}/s",
        arrivals.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(postgres_available),
    ignore = "no PostgreSQL server: apt-get install postgresql, or set MSGSEND_TEST_POSTGRES_URL"
)]
async fn a_host_killed_mid_campaign_is_resumed_by_another_without_twice_or_skipped() {
    let Some(mut hosts) = hosts("failover", "20/s", Duration::from_millis(50)).await else {
        return;
    };
    let people = crowd(80);
    let csv = hosts.world.with_crowd(&people);
    let mut a = hosts
        .command("a", &campaign_args(&csv, &["--job-id", "cut"]))
        .spawn()
        .unwrap();
    let a_pid = a.id();
    hosts.wait_for_records(15).await;
    a.kill().unwrap(); // SIGKILL: host A is gone, its lock with it.
    a.wait().unwrap();
    let started = Instant::now();
    let resumed = hosts
        .run("b", &["bulk", "--resume", "cut", "--resend-uncertain"])
        .await;
    assert_eq!(resumed.status.code(), Some(0), "{}", stderr(&resumed));
    // Not held up by the dead host's lock (the lease is shutdown_grace + 30 s at most).
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(hosts.rate_limited(), 0, "a provider answered 429");
    let received = hosts.deliveries();
    assert_eq!(
        received.len(),
        people.eligible.len(),
        "somebody was skipped"
    );
    assert!(received.values().all(|&n| n == 1), "{received:?}");
    // Both runs, with their hosts' processes: A's never ended.
    let status = hosts.run("b", &["status", "cut", "--json"]).await;
    let status = status_json(&status);
    assert_eq!(status["status"], "DONE");
    let runs = status["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0]["pid"], a_pid);
    assert_eq!(runs[0]["status"], "KILLED");
    assert_eq!(runs[0]["ended"], serde_json::Value::Null);
    assert_eq!(runs[1]["status"], "DONE");
    assert_ne!(runs[1]["pid"], a_pid);
    assert!(runs[1]["host"].as_str().is_some_and(|h| !h.is_empty()));
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(postgres_available),
    ignore = "no PostgreSQL server: apt-get install postgresql, or set MSGSEND_TEST_POSTGRES_URL"
)]
async fn a_second_run_of_a_running_job_on_another_host_is_refused_within_two_seconds_naming_the_holder()
 {
    let Some(mut hosts) = hosts("second_run", "10/s", Duration::ZERO).await else {
        return;
    };
    let people = crowd(60);
    let csv = hosts.world.with_crowd(&people);
    let mut a = hosts
        .command("a", &campaign_args(&csv, &["--job-id", "busy"]))
        .spawn()
        .unwrap();
    hosts.wait_for_records(3).await;
    let started = Instant::now();
    let second = hosts.run("b", &["bulk", "--resume", "busy"]).await;
    let took = started.elapsed();
    let a_pid = a.id();
    a.kill().unwrap();
    a.wait().unwrap();
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    let text = stderr(&second);
    assert!(
        text.contains(&format!("msgsend process {a_pid} on host")),
        "{text}"
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(!text.contains(common::POSTGRES_TEST_PASSWORD));
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(postgres_available),
    ignore = "no PostgreSQL server: apt-get install postgresql, or set MSGSEND_TEST_POSTGRES_URL"
)]
async fn the_schema_migrates_from_the_previous_version_and_a_newer_one_is_refused() {
    use msgsend::journal::Journal;
    use msgsend::state_db::StateDatabase;
    let Some(url) = common::postgres_url() else {
        return;
    };
    let state = common::postgres::fresh_database(&url, "migrations").await;
    // A database as the previous msgsend left it: version 1, a job with a sent recipient.
    let old = StateDatabase::open_at_version(&state, 1).await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO jobs (id, status, created_at, updated_at, params, runs) VALUES \
         ('old', 'DONE', '2026-11-01T00:00:00Z', '2026-11-01T00:00:00Z', \
          '{\"source\":{\"csv\":{\"path\":\"u.csv\"}},\"ages\":{\"min\":20,\"max\":29},\
          \"date\":\"2026-11-01\",\"message\":\"hi\",\"header\":null,\"strategy\":\"failover\",\
          \"concurrency\":4,\"max_failure_rate\":null,\"retry_of\":null}', 1); \
         INSERT INTO recipients (job_id, phone, line, name, state, seen_run, channel, updated_at) \
         VALUES ('old', '010-1111-1111', 2, 'a', 'sent', 1, 'kakaotalk', '2026-11-01T00:00:00Z');",
    )
    .execute(old.pool())
    .await
    .unwrap();
    drop(old);
    let database = StateDatabase::open(&state, "(test)").await.unwrap();
    let mut journal = Journal::open_postgres(&database).await.unwrap();
    let job = journal.job("old").await.unwrap();
    assert_eq!(job.states.sent, 1);
    assert_eq!(journal.runs("old").await.unwrap(), vec![]);
    // Opened again: nothing applied twice.
    StateDatabase::open(&state, "(test)").await.unwrap();
    // A migration this binary does not know: a newer msgsend's database.
    sqlx::raw_sql(
        "INSERT INTO msgsend._sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99, 'from the future', true, '\\x00', 0)",
    )
    .execute(database.pool())
    .await
    .unwrap();
    let newer = StateDatabase::open(&state, "(test)").await.err().unwrap();
    assert!(newer.to_string().contains("newer msgsend"), "{newer}");
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(postgres_available),
    ignore = "no PostgreSQL server: apt-get install postgresql, or set MSGSEND_TEST_POSTGRES_URL"
)]
async fn the_postgresql_ledger_keeps_leases_like_the_file_one() {
    use msgsend::ledger::Ledger;
    use msgsend::state_db::StateDatabase;
    let Some(url) = common::postgres_url() else {
        return;
    };
    let state = common::postgres::fresh_database(&url, "ledger").await;
    let ledger = Ledger::postgres(StateDatabase::open(&state, "(test)").await.unwrap());
    let now = jiff::Timestamp::now().as_microsecond();
    ledger
        .visit("c", |entry| {
            entry.replace_lease(1, vec![(now + 100, 3)]);
            entry.replace_lease(2, vec![(now + 200, 1)]);
            entry.pace.allowance = Some(7);
            entry.pace.paused_until = Some(now + 1_000);
        })
        .await
        .unwrap();
    ledger
        .visit("c", |entry| {
            entry.replace_lease(1, vec![(now + 50, 1), (now + 150, 2)]);
            entry.expire_before(now + 100);
        })
        .await
        .unwrap();
    // Another process (a second ledger on the same database) sees the same facts, in its own
    // clock's terms (here the same clock, so within the offset's measuring error).
    let other = Ledger::postgres(StateDatabase::open(&state, "(test)").await.unwrap());
    let (rows, pace) = other
        .visit("c", |entry| (entry.rows().to_vec(), entry.pace))
        .await
        .unwrap();
    let mut seen: Vec<_> = rows
        .iter()
        .map(|r| (r.lease, r.arrived_by - now, r.count))
        .collect();
    seen.sort();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!((seen[0].0, seen[0].2, seen[1].0, seen[1].2), (1, 2, 2, 1));
    let close = |got: i64, want: i64| (got - want).abs() < 20_000;
    assert!(close(seen[0].1, 150) && close(seen[1].1, 200), "{seen:?}");
    assert_eq!(pace.allowance, Some(7));
    assert!(close(pace.paused_until.unwrap() - now, 1_000));
    assert_eq!(
        other.visit("d", |entry| entry.rows().len()).await.unwrap(),
        0
    );
}

/// Each run of `job` and how many recipients it delivered, read from the shared journal.
async fn delivered_by_run(hosts: &Hosts, job: &str) -> BTreeMap<i64, i64> {
    sqlx::query_as::<_, (i64, i64)>(
        "SELECT run, COUNT(*) FROM recipients WHERE job_id = $1 \
         AND state IN ('sent', 'fallback') GROUP BY run",
    )
    .bind(job)
    .fetch_all(&mut hosts.db().await)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(postgres_available),
    ignore = "no PostgreSQL server: apt-get install postgresql, or set MSGSEND_TEST_POSTGRES_URL"
)]
async fn a_run_joined_on_another_host_sends_beside_the_first_nobody_twice_and_the_job_ends_done() {
    let Some(mut hosts) = hosts("join", "40/s", Duration::from_millis(30)).await else {
        return;
    };
    let people = crowd(200);
    let csv = hosts.world.with_crowd(&people);
    hosts.world.set("bulk.batch_size", 20);
    // A placeholder beyond name and phone: the joined run reads no source, and renders it from
    // what admission stored.
    let args = common::csv_bulk_args(&csv, &["--message", "{city} 이벤트", "--job-id", "shared"]);
    let a = hosts.command("a", &args).spawn().unwrap();
    let a_pid = a.id();
    hosts.wait_for_records(10).await;
    let b = hosts
        .run("b", &["bulk", "--resume", "shared", "--join"])
        .await;
    let a = output_of(a).await;
    assert_eq!(a.status.code(), Some(0), "{}", stderr(&a));
    assert_eq!(b.status.code(), Some(0), "{}", stderr(&b));
    assert_eq!(hosts.rate_limited(), 0, "a provider answered 429");
    let received = hosts.deliveries();
    assert_eq!(
        received.len(),
        people.eligible.len(),
        "somebody was skipped"
    );
    assert!(received.values().all(|&n| n == 1), "{received:?}");
    assert!(
        hosts
            .world
            .recorded()
            .iter()
            .all(|m| m.message.contains("서울 이벤트")),
        "a message rendered without its city"
    );
    let by_run = delivered_by_run(&hosts, "shared").await;
    assert_eq!(by_run.len(), 2, "both hosts sent: {by_run:?}");
    assert!(by_run.values().all(|&n| n > 0), "{by_run:?}");
    let status = status_json(&hosts.run("a", &["status", "shared", "--json"]).await);
    assert_eq!(status["status"], "DONE");
    let runs = status["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0]["pid"], a_pid);
    assert!(runs.iter().all(|run| run["status"] == "DONE"), "{runs:?}");
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(postgres_available),
    ignore = "no PostgreSQL server: apt-get install postgresql, or set MSGSEND_TEST_POSTGRES_URL"
)]
async fn join_with_no_run_live_resumes_the_job_and_a_plain_run_beside_a_joined_one_is_refused() {
    let Some(mut hosts) = hosts("join_alone", "20/s", Duration::from_millis(30)).await else {
        return;
    };
    let people = crowd(80);
    let csv = hosts.world.with_crowd(&people);
    let a = hosts
        .command("a", &campaign_args(&csv, &["--job-id", "alone"]))
        .spawn()
        .unwrap();
    hosts.wait_for_records(10).await;
    common::signal(a.id(), "TERM");
    let a = output_of(a).await;
    assert_eq!(a.status.code(), Some(130), "{}", stderr(&a));
    // Nobody runs the job: --join reads its source like --resume.
    let b = hosts
        .command("b", &["bulk", "--resume", "alone", "--join"])
        .spawn()
        .unwrap();
    hosts.wait_for_records(people.eligible.len().min(30)).await;
    let c = hosts.run("c", &["bulk", "--resume", "alone"]).await;
    let b = output_of(b).await;
    assert_eq!(b.status.code(), Some(0), "{}", stderr(&b));
    assert_eq!(c.status.code(), Some(1), "{}", stderr(&c));
    assert!(stderr(&c).contains("is being run by"), "{}", stderr(&c));
    let received = hosts.deliveries();
    assert_eq!(
        received.len(),
        people.eligible.len(),
        "somebody was skipped"
    );
    assert!(received.values().all(|&n| n == 1), "{received:?}");
    let status = status_json(&hosts.run("a", &["status", "alone", "--json"]).await);
    assert_eq!(status["status"], "DONE");
}
