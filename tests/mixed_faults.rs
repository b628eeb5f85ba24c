//! A property test over whole campaigns: for each seed, a sandbox with a random mix of faults
//! (500s, connections reset after the answer's status, 200s with garbage bodies, 429 storms with
//! and without `Retry-After`, latency), and the campaign interrupted by SIGTERM or SIGKILL at
//! random moments, resumed after each, then finished. Checked after every process:
//!
//! - the journal is intact, and a process that exited (not killed) left no row `in_flight` and
//!   no job `RUNNING`;
//! - its exit code matches the job: 130 for a stop, 0 only when everyone was delivered, 3 when
//!   some ended failed or uncertain;
//!
//! and at the end: every eligible recipient in exactly one final state, nobody queued, nobody
//! delivered twice (the sandbox's record), nobody failed who got it, nobody skipped.
//!
//! CI-sized by default; `MSGSEND_MIXED_SEEDS` (default 3) and `MSGSEND_MIXED_STOPS` (default
//! 3) make it larger, `MSGSEND_MIXED_SEED` replays one seed.

mod common;

use std::time::Duration;

use common::crowd::crowd;
use common::journal::{Random, integrity_ok, job_exists, job_status, journal_states, receipts};
use common::{World, stderr};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const JOB: &str = "mixed";

/// A random mix of faults for one seed, described for the failure message.
fn faults(random: &mut Random, config: &mut msgsend::sandbox::SandboxConfig) -> String {
    let mut described = Vec::new();
    for (name, sim) in [
        ("kakaotalk", &mut config.kakaotalk),
        ("sms", &mut config.sms),
    ] {
        let faults = &mut sim.faults;
        faults.fail_rate = random.below(20) as f64 / 100.0;
        faults.reset_rate = random.below(8) as f64 / 100.0;
        faults.garbage_rate = random.below(8) as f64 / 100.0;
        faults.latency = Duration::from_millis(random.below(30));
        if random.below(3) == 0 {
            faults.storm_for = Duration::from_millis(random.below(400));
            faults.storm_without_retry_after = random.below(2) == 0;
        }
        described.push(format!("{name}: {faults:?}"));
    }
    described.join("; ")
}

#[tokio::test(flavor = "multi_thread")]
async fn campaigns_under_mixed_faults_and_signals_keep_every_promise() {
    let seeds = env_number("MSGSEND_MIXED_SEEDS", 3);
    let stops = env_number("MSGSEND_MIXED_STOPS", 3);
    for round in 0..seeds {
        let seed = match std::env::var("MSGSEND_MIXED_SEED") {
            Ok(seed) => seed.parse().unwrap(),
            Err(_) => Random::from_clock().0.wrapping_add(round) | 1,
        };
        one_seed(seed, stops).await;
    }
}

async fn one_seed(seed: u64, stops: u64) {
    let mut random = Random(seed);
    let mut described = String::new();
    let crowd = crowd(40 + random.below(40) as usize);
    let mut world = World::start(|config| {
        config.kakaotalk.rate = "200/s".parse().unwrap();
        config.sms.rate = "200/s".parse().unwrap();
        described = faults(&mut random, config);
    })
    .await;
    let context = format!("seed {seed} ({described})");
    eprintln!("mixed faults: {context}");
    world
        .set("providers.kakaotalk.rate_limit", "200/s")
        .set("providers.sms.rate_limit", "200/s")
        .set("bulk.shutdown_grace", "2s")
        .set("circuit_breaker.open_timeout", "200ms")
        .set("routing.preflight", true);
    let csv = world.with_crowd(&crowd);
    let start = common::campaign_args(&csv, &["--job-id", JOB, "--concurrency", "8"]);
    let resume = ["bulk", "--resume", JOB];

    for _ in 0..stops {
        let args: &[&str] = if job_exists(&world, JOB).await {
            &resume
        } else {
            &start
        };
        let mut child = world.command(args).spawn().unwrap();
        tokio::time::sleep(Duration::from_millis(10 + random.below(300))).await;
        let hard = random.below(3) == 0;
        let code = if hard {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            None
        } else {
            let status = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
                .await
                .unwrap();
            let code = output.status.code();
            assert!(
                matches!(code, Some(0 | 3 | 130)),
                "{context}: exit {code:?} after SIGTERM: {}",
                stderr(&output)
            );
            code
        };
        integrity_ok(&world).await;
        if code.is_some() {
            check_exited(&world, code, &context).await;
        }
    }

    // Finish without an interruption.
    let args: &[&str] = if job_exists(&world, JOB).await {
        &resume
    } else {
        &start
    };
    let finished = world.msgsend(args).await;
    let code = finished.status.code();
    assert!(
        matches!(code, Some(0 | 3)),
        "{context}: final exit {code:?}: {}",
        stderr(&finished)
    );
    integrity_ok(&world).await;
    check_exited(&world, code, &context).await;
    assert_eq!(
        job_status(&world, JOB).await.as_deref(),
        Some("DONE"),
        "{context}"
    );

    let states = journal_states(&world, JOB).await;
    let received = receipts(&world);
    let eligible: Vec<&String> = crowd.eligible.iter().collect();
    assert_eq!(
        states.keys().collect::<Vec<_>>(),
        eligible,
        "{context}: one row per eligible phone, nobody skipped"
    );
    for (phone, state) in &states {
        let got = received.get(phone).copied().unwrap_or(0);
        match state.as_str() {
            "sent" | "fallback" => assert_eq!(got, 1, "{context}: {phone} ({state}) got {got}"),
            "uncertain" => assert!(got <= 1, "{context}: {phone} (uncertain) got {got}"),
            "failed" => assert_eq!(got, 0, "{context}: {phone} failed but got {got}"),
            other => panic!("{context}: {phone} left {other}"),
        }
    }
    for phone in received.keys() {
        assert!(
            states.contains_key(phone),
            "{context}: {phone} is not eligible"
        );
    }
}

/// After a process that exited on its own: no row in flight, the job not `RUNNING`, and the
/// exit code saying what the journal holds.
async fn check_exited(world: &World, code: Option<i32>, context: &str) {
    let states = journal_states(world, JOB).await;
    assert!(
        states.values().all(|state| state != "in_flight"),
        "{context}: a row left in_flight after exit {code:?}"
    );
    let status = job_status(world, JOB).await;
    assert_ne!(
        status.as_deref(),
        Some("RUNNING"),
        "{context}: exit {code:?}"
    );
    let undelivered = states
        .values()
        .any(|state| state == "failed" || state == "uncertain");
    match code {
        Some(0) => {
            assert_eq!(status.as_deref(), Some("DONE"), "{context}");
            assert!(
                !undelivered,
                "{context}: exit 0 with failed or uncertain rows"
            );
        }
        Some(3) => assert!(undelivered, "{context}: exit 3 with everyone delivered"),
        Some(130) => assert_eq!(status.as_deref(), Some("INTERRUPTED"), "{context}"),
        other => panic!("{context}: exit {other:?}"),
    }
}
