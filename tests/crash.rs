//! Crash consistency: a campaign killed with SIGKILL at many random points, resumed after each
//! kill, then finished. The sandbox's record (what the providers really received) is checked
//! against the journal: nobody recorded `sent`/`fallback` received the message twice, nobody
//! is left out, the `uncertain` ones are the only doubt, and `--resend-uncertain` closes it.
//! The journal passes SQLite's integrity check after every kill. The same runs against the
//! PostgreSQL state (`state_database`, SPEC section 9).
//!
//! `MSGSEND_KILL_TEST_RECIPIENTS` (default 150) and `MSGSEND_KILL_TEST_KILLS` (default 20)
//! make the run larger.

mod common;

use std::time::Duration;

use common::crowd::crowd;
use common::journal::{Random, integrity_ok, job_exists, journal_states, receipts};
use common::{World, stderr};

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_hard_kills_lose_nothing_and_send_no_one_twice() {
    hard_kills(None).await;
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(postgres_available),
    ignore = "no PostgreSQL server: apt-get install postgresql, or set MSGSEND_TEST_POSTGRES_URL"
)]
async fn twenty_hard_kills_on_the_postgresql_state_lose_nothing_and_send_no_one_twice() {
    let Some(url) = common::postgres_url() else {
        return;
    };
    let state = common::postgres::fresh_database(&url, "crash_state").await;
    hard_kills(Some(state)).await;
}

/// Kills a campaign at random moments, resuming it after each, on `state_database` if given.
async fn hard_kills(state_database: Option<String>) {
    let recipients = env_number("MSGSEND_KILL_TEST_RECIPIENTS", 150);
    let kills = env_number("MSGSEND_KILL_TEST_KILLS", 20);
    let mut random = Random::from_clock();
    eprintln!(
        "kill test: seed {}, {recipients} recipients, {kills} kills",
        random.0
    );
    let crowd = crowd(recipients);
    let mut world = World::start(|config| {
        config.kakaotalk.rate = "60/s".parse().unwrap();
        config.kakaotalk.faults.latency = Duration::from_millis(40);
    })
    .await;
    world.set("providers.kakaotalk.rate_limit", "60/s");
    if let Some(url) = state_database {
        world.set("state_database", url);
    }
    let csv = world.with_crowd(&crowd);
    let start_args = common::campaign_args(&csv, &["--job-id", "killer", "--concurrency", "10"]);
    let resume_args = ["bulk", "--resume", "killer"];

    for _ in 0..kills {
        let args: &[&str] = if job_exists(&world, "killer").await {
            &resume_args
        } else {
            &start_args
        };
        let mut child = world.command(args).spawn().unwrap();
        tokio::time::sleep(Duration::from_millis(20 + random.below(380))).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        integrity_ok(&world).await;
    }

    // Finish without a kill: everything not in doubt gets delivered.
    let args: &[&str] = if job_exists(&world, "killer").await {
        &resume_args
    } else {
        &start_args
    };
    let finished = world.msgsend(args).await;
    assert!(
        matches!(finished.status.code(), Some(0 | 3)),
        "{}",
        stderr(&finished)
    );
    integrity_ok(&world).await;

    let received = receipts(&world);
    let states = journal_states(&world, "killer").await;
    let eligible: Vec<&String> = crowd.eligible.iter().collect();
    assert_eq!(
        states.keys().collect::<Vec<_>>(),
        eligible,
        "one row per eligible phone"
    );
    let mut uncertain = 0;
    for (phone, state) in &states {
        let got = received.get(phone).copied().unwrap_or(0);
        match state.as_str() {
            "sent" | "fallback" => assert_eq!(got, 1, "{phone} ({state}) received {got}"),
            // In flight at a kill: it may or may not have arrived, never twice.
            "uncertain" => {
                uncertain += 1;
                assert!(got <= 1, "{phone} (uncertain) received {got}");
            }
            other => panic!("{phone} left {other}"),
        }
    }
    for phone in received.keys() {
        assert!(
            states.contains_key(phone),
            "{phone} received but not eligible"
        );
    }
    eprintln!(
        "kill test: {} delivered once, {uncertain} uncertain",
        states.len() - uncertain
    );
    // At most `concurrency` requests are in flight at each kill.
    assert!(
        uncertain <= 10 * kills,
        "{uncertain} uncertain after {kills} kills"
    );

    // The operator's choice for the doubtful ones: send again.
    let resent = world
        .msgsend(&["bulk", "--resume", "killer", "--resend-uncertain"])
        .await;
    assert_eq!(resent.status.code(), Some(0), "{}", stderr(&resent));
    let received = receipts(&world);
    for phone in &crowd.eligible {
        assert!(received.contains_key(phone), "{phone} never received it");
    }
    assert!(
        journal_states(&world, "killer")
            .await
            .values()
            .all(|s| s == "sent" || s == "fallback")
    );
}
