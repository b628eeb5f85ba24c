//! Running msgsend unattended: quiet hours (with an injected clock), webhook alerts once per
//! episode, the metrics textfile (checked by promtool) and the Pushgateway, cron-style resume
//! and JSON logs. Everything talks to the sandbox and loopback receivers on 127.0.0.1.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::clock::{bulk, run_at};
use common::crowd::crowd;
use common::receiver::Receiver;
use common::{World, count, stderr, stdout};
use msgsend::error::ExitStatus;
use msgsend::job::JobStatus;
use msgsend::journal::Journal;

async fn job_status(world: &World, id: &str) -> JobStatus {
    let mut journal = Journal::open(&world.path("state")).await.unwrap();
    journal.job(id).await.unwrap().status
}

#[tokio::test(flavor = "multi_thread")]
async fn a_campaign_reaching_quiet_hours_pauses_with_75_and_resume_finishes_it() {
    let crowd = crowd(60);
    let mut world = World::start(|config| config.kakaotalk.rate = "10/s".parse().unwrap()).await;
    world
        .set("providers.kakaotalk.rate_limit", "10/s")
        .set("schedule.quiet_hours", "21:00-08:00");
    let csv = world.with_crowd(&crowd);
    let settings = world.settings();
    let args = bulk(&[
        "--age-group",
        "20s",
        "--csv",
        &csv,
        "--message",
        "hi {name}",
        "--job-id",
        "evening",
    ]);
    // Two seconds before quiet hours: the campaign starts, then pauses.
    let status = run_at(&settings, args, "20:59:58").await;
    assert_eq!(status, ExitStatus::Paused);
    assert_eq!(job_status(&world, "evening").await, JobStatus::Paused);
    let before = world.recorded().len();
    assert!(before > 0 && before < crowd.eligible.len(), "{before}");

    // Inside quiet hours a resume refuses to start, sending nothing.
    let status = run_at(&settings, bulk(&["--resume", "evening"]), "23:30:00").await;
    assert_eq!(status, ExitStatus::Paused);
    assert_eq!(world.recorded().len(), before);

    // The next morning `--resume` alone (as a cron line would run it) finishes the job.
    let status = run_at(&settings, bulk(&["--resume"]), "09:00:00").await;
    assert_eq!(status, ExitStatus::Success);
    assert_eq!(job_status(&world, "evening").await, JobStatus::Done);
    let mut phones: Vec<String> = world.recorded().into_iter().map(|m| m.phone).collect();
    phones.sort();
    let eligible: Vec<String> = crowd.eligible.iter().cloned().collect();
    assert_eq!(phones, eligible, "each eligible phone exactly once");
}

#[tokio::test(flavor = "multi_thread")]
async fn inside_quiet_hours_bulk_exits_75_with_nothing_sent_unless_told_to_ignore_them() {
    let crowd = crowd(5);
    let mut world = World::start(|_| {}).await;
    world.set("schedule.quiet_hours", "00:00-23:59");
    let csv = world.with_crowd(&crowd);
    let args = common::campaign_args(&csv, &[]);
    let refused = world.msgsend(&args).await;
    assert_eq!(refused.status.code(), Some(75), "{}", stderr(&refused));
    assert!(stdout(&refused).contains("PAUSED"));
    assert_eq!(count(&world.sandbox.kakaotalk.stats.requests), 0);
    let ignoring = common::campaign_args(&csv, &["--ignore-quiet-hours"]);
    let sent = world.msgsend(&ignoring).await;
    assert_eq!(sent.status.code(), Some(0), "{}", stderr(&sent));
    assert_eq!(world.recorded().len(), crowd.eligible.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_alerts_the_webhook_once_down_and_once_recovered() {
    let crowd = crowd(60);
    let hook = Receiver::start(StatusCode::OK).await;
    let mut world = World::start(|config| {
        config.kakaotalk.rate = "20/s".parse().unwrap();
        config.sms.rate = "20/s".parse().unwrap();
        config.kakaotalk.faults.outage_for = Duration::from_millis(400);
    })
    .await;
    // Both channels slow enough that the campaign outlasts the outage and the open timeout.
    world
        .set("providers.kakaotalk.rate_limit", "20/s")
        .set("providers.sms.rate_limit", "20/s")
        .set("circuit_breaker.failure_threshold", 2)
        .set("circuit_breaker.open_timeout", "300ms")
        .set("alerts.webhook", hook.url());
    let csv = world.with_crowd(&crowd);
    let output = world
        .msgsend(&common::campaign_args(&csv, &["--job-id", "hooked"]))
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let alerts = hook.json();
    let names: Vec<&str> = alerts
        .iter()
        .map(|a| a["alert"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["provider_down", "provider_recovered"],
        "{alerts:?}\n{}",
        stderr(&output)
    );
    for alert in &alerts {
        assert_eq!(alert["provider"], "kakaotalk");
        assert_eq!(alert["job_id"], "hooked");
        assert!(alert["message"].as_str().unwrap().contains("kakaotalk"));
        assert!(alert.get("value").is_some() && alert.get("threshold").is_some());
        alert["at"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap();
    }
    assert_eq!(alerts[0]["threshold"], 2.0);
    assert!(hook.received().iter().all(|r| r.method == "POST"));
    let log = stderr(&output);
    assert_eq!(log.matches("alert=\"provider_down\"").count(), 1, "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn low_success_and_a_long_queue_alert_once_each_even_through_a_failing_webhook() {
    let crowd = crowd(40);
    let hook = Receiver::start(StatusCode::INTERNAL_SERVER_ERROR).await;
    let mut world = World::start(|_| {}).await;
    world
        .set("alerts.webhook", hook.url())
        .set("alerts.max_queue", 5)
        .set("retry.max_attempts", 1)
        .set("circuit_breaker.failure_threshold", 100_000);
    for sim in [&world.sandbox.kakaotalk, &world.sandbox.sms] {
        sim.control
            .down
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
    let csv = world.with_crowd(&crowd);
    let output = world.msgsend(&common::campaign_args(&csv, &[])).await;
    // Everyone failed, and the webhook answered 500 to every alert: the campaign still ran
    // to its end and reported.
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let mut names: Vec<String> = hook
        .json()
        .iter()
        .map(|a| a["alert"].as_str().unwrap().to_string())
        .filter(|name| name != "provider_down")
        .collect();
    names.sort();
    assert_eq!(names, ["high_queue", "low_success_rate"]);
    assert!(stderr(&output).contains("the alert webhook failed (HTTP 500)"));
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_responses_alert_once_and_an_unreachable_webhook_changes_nothing() {
    let crowd = crowd(40);
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/", dead.local_addr().unwrap());
    drop(dead);
    let mut world = World::start(|config| {
        config.kakaotalk.faults.latency = Duration::from_millis(30);
    })
    .await;
    world
        .set("alerts.webhook", dead_url)
        .set("alerts.max_response_time", "10ms");
    let csv = world.with_crowd(&crowd);
    let output = world.msgsend(&common::campaign_args(&csv, &[])).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let log = stderr(&output);
    assert_eq!(log.matches("p95 response time").count(), 1, "{log}");
    assert!(
        log.contains("the alert webhook failed (connection failed)"),
        "{log}"
    );
    assert_eq!(world.recorded().len(), crowd.eligible.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_metrics_textfile_passes_promtool_and_the_pushgateway_gets_the_run() {
    let crowd = crowd(30);
    let gateway = Receiver::start(StatusCode::OK).await;
    let mut world = World::start(|config| {
        config.kakaotalk.faults.reject_phones = ["010-5000-0001".to_string()].into();
    })
    .await;
    let textfile = world.path("textfile/msgsend.prom");
    std::fs::create_dir_all(textfile.parent().unwrap()).unwrap();
    world
        .set("metrics.textfile", textfile.display().to_string())
        .set("metrics.pushgateway", gateway.url());
    let csv = world.with_crowd(&crowd);
    let output = world
        .msgsend(&common::campaign_args(&csv, &["--job-id", "metered"]))
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = std::fs::read_to_string(&textfile).unwrap();
    let sent = crowd.eligible.len() - 1; // one phone KakaoTalk rejects goes to SMS
    for expected in [
        format!("msgsend_messages_total{{channel=\"kakaotalk\",outcome=\"sent\"}} {sent}"),
        "msgsend_messages_total{channel=\"sms\",outcome=\"fallback\"} 1".to_string(),
        "msgsend_fallbacks_total 1".to_string(),
        "msgsend_recipients_skipped_total{reason=\"invalid\"} 3".to_string(),
        "msgsend_provider_request_duration_seconds_count{provider=\"kakaotalk\"}".to_string(),
        "msgsend_success_ratio 1".to_string(),
        "msgsend_queue_size 0".to_string(),
        "msgsend_circuit_open{provider=\"kakaotalk\"} 0".to_string(),
    ] {
        assert!(text.contains(&expected), "{expected} missing:\n{text}");
    }
    // Written by rename: nothing else is left in the collector's directory.
    assert_eq!(
        std::fs::read_dir(textfile.parent().unwrap())
            .unwrap()
            .count(),
        1
    );
    common::promtool_check(&text);

    let pushes = gateway.received();
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].method, "PUT");
    assert_eq!(pushes[0].path, "/metrics/job/msgsend/job_id/metered");
    assert!(pushes[0].body.contains("msgsend_messages_total"));
}

#[tokio::test(flavor = "multi_thread")]
async fn from_cron_resume_alone_continues_the_newest_unfinished_job_with_json_logs() {
    let crowd = crowd(60);
    let mut world = World::start(|config| config.kakaotalk.rate = "20/s".parse().unwrap()).await;
    world.set("providers.kakaotalk.rate_limit", "20/s");
    let csv = world.with_crowd(&crowd);
    let child = world
        .command(&[
            "--log-format",
            "json",
            "bulk",
            "--age-group",
            "20s",
            "--csv",
            &csv,
            "--message",
            "hi",
            "--job-id",
            "nightly",
        ])
        .spawn()
        .unwrap();
    while world.recorded().len() < 10 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let first = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(first.status.code(), Some(130));

    let resumed = world
        .msgsend(&["--log-format", "json", "bulk", "--resume"])
        .await;
    assert_eq!(resumed.status.code(), Some(0), "{}", stderr(&resumed));
    assert!(stdout(&resumed).contains("nightly: DONE"));
    for output in [&first, &resumed] {
        let log = stderr(output);
        assert!(!log.contains('\u{1b}'), "colour off a terminal:\n{log}");
        for line in log.lines() {
            let object: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
            assert!(object.is_object());
        }
        assert!(!log.contains(common::KAKAOTALK_PASSWORD) && !log.contains("010-5000-0010"));
    }
    assert_eq!(world.recorded().len(), crowd.eligible.len());

    let nothing = world.msgsend(&["bulk", "--resume"]).await;
    assert_eq!(nothing.status.code(), Some(0));
    assert!(stdout(&nothing).contains("Nothing to resume"));
}
