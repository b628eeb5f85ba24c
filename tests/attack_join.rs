//! Attacks on `bulk --resume JOB --join` (SPEC section 9): several runs of one job at once on
//! the PostgreSQL state, one of them killed or stopped while the others work. Each test is one
//! promise that broke, kept here so it stays fixed. A "host" is a msgsend process with a `HOME`,
//! a `state_dir` and a config of its own, naming the same `state_database`, as in tests/hosts.rs.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::crowd::crowd;
use common::hosts::{Hosts, output_of};
use common::{campaign_args, stderr};

/// A sandbox whose KakaoTalk allows `rate` (and the config saying so), answering after
/// `latency`; small batches and few sends at once, so that runs meet mid-job.
async fn hosts(test: &str, rate: &str, latency: Duration) -> Option<Hosts> {
    let mut hosts = Hosts::start(test, |config| {
        config.kakaotalk.rate = rate.parse().unwrap();
        config.kakaotalk.faults.latency = latency;
    })
    .await?;
    hosts
        .world
        .set("providers.kakaotalk.rate_limit", rate)
        .set("bulk.batch_size", 20)
        .set("bulk.concurrency", 8);
    Some(hosts)
}

/// Waits until `n` joined runs of `job` are recorded running.
async fn wait_for_joined(hosts: &Hosts, job: &str, n: i64) {
    let mut db = hosts.db().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let joined: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM runs WHERE job_id = $1 AND joined AND status = 'RUNNING'",
        )
        .bind(job)
        .fetch_one(&mut db)
        .await
        .unwrap_or(0);
        if joined >= n {
            return;
        }
        assert!(Instant::now() < deadline, "the joined run did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `status JOB --json`, as host a sees it.
async fn status_of(hosts: &Hosts, job: &str) -> serde_json::Value {
    let output = hosts.run("a", &["status", job, "--json"]).await;
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

fn assert_once(received: &BTreeMap<String, usize>) {
    for (phone, times) in received {
        assert_eq!(*times, 1, "{phone} received {times} times");
    }
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(postgres_available),
    ignore = "no PostgreSQL server: apt-get install postgresql, or set MSGSEND_TEST_POSTGRES_URL"
)]
async fn a_leader_killed_while_a_joined_run_works_leaves_its_unread_recipients_to_a_resume_not_a_done_job()
 {
    let Some(mut hosts) = hosts("join_leader_killed", "100/s", Duration::from_millis(20)).await
    else {
        return;
    };
    let people = crowd(400);
    let csv = hosts.world.with_crowd(&people);
    let a = hosts
        .command("a", &campaign_args(&csv, &["--job-id", "killed"]))
        .spawn()
        .unwrap();
    hosts.wait_for_records(20).await;
    let b = hosts
        .command("b", &["bulk", "--resume", "killed", "--join"])
        .spawn()
        .unwrap();
    wait_for_joined(&hosts, "killed", 1).await;
    hosts.wait_for_records(60).await;
    common::signal(a.id(), "KILL");
    let _ = output_of(a).await;
    let b = output_of(b).await;
    assert!(matches!(b.status.code(), Some(0 | 3)), "{}", stderr(&b));
    let unreached = people.eligible.len() - hosts.deliveries().len();
    assert!(
        unreached > 0,
        "the leader read its whole source before the kill: no test"
    );
    // The leader never read the rest of its source: the job is not done, and the cron line's
    // `--resume` (the newest job not done) continues it.
    let status = status_of(&hosts, "killed").await;
    assert_ne!(
        status["status"], "DONE",
        "{unreached} eligible recipients never read, yet the job is DONE: {status}"
    );
    let c = hosts.run("c", &["bulk", "--resume"]).await;
    assert!(matches!(c.status.code(), Some(0 | 3)), "{}", stderr(&c));
    let received = hosts.deliveries();
    assert_once(&received);
    let uncertain = hosts.in_state("killed", "uncertain").await as usize;
    assert_eq!(
        received.len() + uncertain,
        people.eligible.len(),
        "somebody was skipped"
    );
    assert_eq!(hosts.rate_limited(), 0, "a provider answered 429");
    assert_eq!(status_of(&hosts, "killed").await["status"], "DONE");
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(postgres_available),
    ignore = "no PostgreSQL server: apt-get install postgresql, or set MSGSEND_TEST_POSTGRES_URL"
)]
async fn a_leader_stopped_by_sigterm_whose_queue_a_joined_run_sent_to_the_end_leaves_the_job_done()
{
    let Some(mut hosts) = hosts("join_leader_term", "100/s", Duration::from_millis(20)).await
    else {
        return;
    };
    let people = crowd(300);
    let csv = hosts.world.with_crowd(&people);
    let a = hosts
        .command("a", &campaign_args(&csv, &["--job-id", "termed"]))
        .spawn()
        .unwrap();
    hosts.wait_for_records(20).await;
    let b = hosts
        .command("b", &["bulk", "--resume", "termed", "--join"])
        .spawn()
        .unwrap();
    wait_for_joined(&hosts, "termed", 1).await;
    hosts.wait_for_records(60).await;
    common::signal(a.id(), "TERM");
    let a = output_of(a).await;
    assert_eq!(a.status.code(), Some(130), "{}", stderr(&a));
    let b = output_of(b).await;
    assert_eq!(b.status.code(), Some(0), "{}", stderr(&b));
    let received = hosts.deliveries();
    assert_once(&received);
    assert_eq!(
        received.len(),
        people.eligible.len(),
        "somebody was skipped"
    );
    assert_eq!(hosts.in_state("termed", "queued").await, 0);
    // SPEC section 9: the job is DONE when the last run ends with nothing queued.
    let status = status_of(&hosts, "termed").await;
    assert_eq!(status["status"], "DONE", "{status}");
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(postgres_available),
    ignore = "no PostgreSQL server: apt-get install postgresql, or set MSGSEND_TEST_POSTGRES_URL"
)]
async fn a_joined_run_killed_beside_a_leader_and_another_joined_run_has_its_claims_sent_by_them() {
    let Some(mut hosts) = hosts("join_three", "100/s", Duration::from_millis(20)).await else {
        return;
    };
    let people = crowd(300);
    let csv = hosts.world.with_crowd(&people);
    let a = hosts
        .command("a", &campaign_args(&csv, &["--job-id", "three"]))
        .spawn()
        .unwrap();
    hosts.wait_for_records(10).await;
    let b = hosts
        .command("b", &["bulk", "--resume", "three", "--join"])
        .spawn()
        .unwrap();
    let c = hosts
        .command("c", &["bulk", "--resume", "three", "--join"])
        .spawn()
        .unwrap();
    wait_for_joined(&hosts, "three", 2).await;
    hosts.wait_for_records(80).await;
    common::signal(b.id(), "KILL");
    let _ = output_of(b).await;
    let a = output_of(a).await;
    let c = output_of(c).await;
    assert!(matches!(a.status.code(), Some(0 | 3)), "{}", stderr(&a));
    assert!(matches!(c.status.code(), Some(0 | 3)), "{}", stderr(&c));
    let received = hosts.deliveries();
    assert_once(&received);
    let uncertain = hosts.in_state("three", "uncertain").await as usize;
    assert_eq!(hosts.in_state("three", "queued").await, 0);
    assert_eq!(hosts.in_state("three", "in_flight").await, 0);
    assert_eq!(
        received.len() + uncertain,
        people.eligible.len(),
        "somebody was skipped"
    );
    assert_eq!(hosts.rate_limited(), 0, "a provider answered 429");
    let status = status_of(&hosts, "three").await;
    assert_eq!(status["status"], "DONE", "{status}");
}
