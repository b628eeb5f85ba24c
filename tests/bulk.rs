//! `msgsend bulk` end to end: the binary against the sandbox on 127.0.0.1, recipients from a
//! CSV file, a SQLite file and a real PostgreSQL server, judged by what the sandbox recorded.

mod common;

use std::collections::BTreeMap;
use std::process::Output;
use std::time::{Duration, Instant};

use common::crowd::{Crowd, crowd};
use common::{World, count, stderr, stdout};

const MESSAGE: &str = "{name}님, {city} 매장 이벤트 안내입니다.";

/// The summary JSON a run printed with `--summary-json -`.
fn summary(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "no summary JSON ({e}):\n{}\n{}",
            stdout(output),
            stderr(output)
        )
    })
}

fn bulk_args<'a>(source: &'a [&'a str], extra: &'a [&'a str]) -> Vec<&'a str> {
    let mut args = vec!["bulk", "--age-group", "20s", "--message", MESSAGE];
    args.extend_from_slice(source);
    args.extend_from_slice(extra);
    args
}

/// A world whose KakaoTalk (sandbox and config alike) takes `rate` and answers after
/// `latency`, so that a campaign lasts long enough to be interrupted or watched.
async fn slow_world(rate: &str, latency: Duration) -> World {
    let mut world = World::start(|config| {
        config.kakaotalk.rate = rate.parse().unwrap();
        config.kakaotalk.faults.latency = latency;
    })
    .await;
    world.set("providers.kakaotalk.rate_limit", rate);
    world
}

/// Messages recorded per normalised phone, across both providers.
fn deliveries(world: &World) -> BTreeMap<String, Vec<String>> {
    let mut by_phone: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for message in world.recorded() {
        by_phone
            .entry(message.phone)
            .or_default()
            .push(message.provider);
    }
    by_phone
}

/// Every eligible phone got exactly one message, nobody else got any, and the summary's
/// delivered counts agree with the record, provider by provider.
fn assert_exactly_once(world: &World, crowd: &Crowd, summary: &serde_json::Value) {
    let deliveries = deliveries(world);
    for (phone, providers) in &deliveries {
        assert_eq!(providers.len(), 1, "{phone} got {providers:?}");
        assert!(!crowd.excluded.contains(phone), "{phone} is excluded");
    }
    let delivered: Vec<&String> = deliveries.keys().collect();
    let eligible: Vec<&String> = crowd.eligible.iter().collect();
    assert_eq!(delivered, eligible);
    let by = |provider: &str| deliveries.values().filter(|p| p[0] == provider).count() as u64;
    assert_eq!(summary["sent"], by("kakaotalk"));
    assert_eq!(summary["fallback"], by("sms"));
    assert_eq!(summary["eligible"], crowd.eligible.len() as u64);
    assert_eq!(summary["failed"], 0);
    assert_eq!(summary["uncertain"], 0);
    assert_eq!(summary["status"], "DONE");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_csv_campaign_with_faults_reaches_every_eligible_recipient_exactly_once() {
    let crowd = crowd(120);
    let rejected = "010-5000-0007";
    let mut world = World::start(|config| {
        config.kakaotalk.faults.fail_rate = 0.2;
        config.kakaotalk.faults.reject_phones = [rejected.to_string()].into();
        config.sms.faults.fail_rate = 0.1;
    })
    .await;
    let csv = world.with_crowd(&crowd);
    let output = world
        .msgsend(&bulk_args(&["--csv", &csv], &["--summary-json", "-"]))
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let summary = summary(&output);
    assert_exactly_once(&world, &crowd, &summary);
    assert_eq!(summary["total"], crowd.total());
    assert_eq!(summary["invalid"], crowd.invalid);
    assert_eq!(summary["duplicate"], crowd.duplicate);
    assert_eq!(summary["suppressed"], 2);
    assert!(summary["retries"].as_u64().unwrap() > 0);
    assert_eq!(
        deliveries(&world)[rejected],
        ["sms"],
        "a rejected phone goes to SMS"
    );
    for key in [
        "job_id",
        "status",
        "total",
        "eligible",
        "sent",
        "fallback",
        "failed",
        "invalid",
        "duplicate",
        "suppressed",
        "uncertain",
        "retries",
        "duration_s",
        "providers",
    ] {
        assert!(summary.get(key).is_some(), "summary lacks {key}");
    }
    // Messages carry the header line and the source's columns.
    let message = world
        .recorded()
        .into_iter()
        .find(|m| m.phone == "010-5000-0010")
        .unwrap()
        .message;
    assert_eq!(
        message,
        "사람10님, 안녕하세요. 현대 오토에버입니다.\n사람10님, 서울 매장 이벤트 안내입니다."
    );
    // Bad rows are reported with their line and field; no phone appears in the log.
    let log = stderr(&output);
    assert!(log.contains("line="), "{log}");
    assert!(!log.contains("010-5000-0010"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sqlite_campaign_under_spillover_uses_both_quotas_and_sends_once() {
    let crowd = crowd(80);
    let mut world = World::start(|config| {
        config.kakaotalk.rate = "20/s".parse().unwrap();
    })
    .await;
    world
        .set("providers.kakaotalk.rate_limit", "20/s")
        .set("routing.acquire_timeout", "50ms");
    world.with_crowd(&crowd);
    crowd.write_sqlite(&world.path("people.sqlite")).await;
    let output = world
        .msgsend(&bulk_args(
            &[
                "--db",
                "sqlite://people.sqlite",
                "--query",
                "SELECT name, phone, birth_date, city FROM users",
            ],
            &["--summary-json", "-", "--strategy", "spillover"],
        ))
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let summary = summary(&output);
    assert_exactly_once(&world, &crowd, &summary);
    assert!(summary["fallback"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(count(&world.sandbox.kakaotalk.stats.rate_limited), 0);
    // SQL counts only the rows the age-filtered query returned: no outsiders in `total`.
    let returned = crowd.eligible.len() as u64 + crowd.invalid + crowd.duplicate + 2;
    assert_eq!(summary["total"], returned);
    assert_eq!(summary["invalid"], crowd.invalid);
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(postgres_available),
    ignore = "no PostgreSQL server: apt-get install postgresql, or set MSGSEND_TEST_POSTGRES_URL"
)]
async fn a_postgres_campaign_reads_dates_and_sends_once() {
    let Some(url) = common::postgres_url() else {
        return;
    };
    let crowd = crowd(60);
    let mut world = World::start(|_| {}).await;
    world.with_crowd(&crowd);
    let table = format!("users_{}", std::process::id());
    crowd.write_postgres(&url, &table).await;
    let query = format!("SELECT name, phone, birth_date, city FROM {table}");
    let output = world
        .msgsend(&bulk_args(
            &["--db", &url, "--query", &query],
            &["--summary-json", "-"],
        ))
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let summary = summary(&output);
    assert_exactly_once(&world, &crowd, &summary);
    // PostgreSQL refused the impossible date when the table was filled (stored NULL): the age
    // filter lets a missing date through, so that row is counted invalid as in the CSV.
    assert_eq!(summary["invalid"], crowd.invalid);
    assert!(
        !stdout(&output).contains(common::POSTGRES_TEST_PASSWORD)
            && !stderr(&output).contains(common::POSTGRES_TEST_PASSWORD)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_with_130_and_resume_finishes_without_sending_twice() {
    let crowd = crowd(100);
    let mut world = slow_world("25/s", Duration::from_millis(50)).await;
    let csv = world.with_crowd(&crowd);
    let child = world
        .command(&bulk_args(
            &["--csv", &csv],
            &["--job-id", "spring", "--summary-json", "-"],
        ))
        .spawn()
        .unwrap();
    wait_for_records(&world, 20).await;
    common::signal(child.id(), "TERM");
    let first = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(first.status.code(), Some(130), "{}", stderr(&first));
    let interrupted = summary(&first);
    assert_eq!(interrupted["status"], "INTERRUPTED");
    // The source was still read to its end: the counts are complete, the rest is pending.
    assert_eq!(interrupted["eligible"], crowd.eligible.len() as u64);
    assert_eq!(interrupted["total"], crowd.total());
    let delivered_before = deliveries(&world).len() as u64;
    assert!(delivered_before < crowd.eligible.len() as u64);
    assert_eq!(
        interrupted["pending"].as_u64().unwrap()
            + interrupted["sent"].as_u64().unwrap()
            + interrupted["fallback"].as_u64().unwrap(),
        crowd.eligible.len() as u64,
        "{interrupted}"
    );

    let status = world.msgsend(&["status", "spring", "--json"]).await;
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["status"], "INTERRUPTED");

    let second = world
        .msgsend(&["bulk", "--resume", "spring", "--summary-json", "-"])
        .await;
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert_exactly_once(&world, &crowd, &summary(&second));
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_hard_kill_resume_never_sends_twice_and_counts_the_unknown_as_uncertain() {
    let crowd = crowd(100);
    let mut world = slow_world("40/s", Duration::from_millis(300)).await;
    let csv = world.with_crowd(&crowd);
    let mut child = world
        .command(&bulk_args(
            &["--csv", &csv],
            &["--job-id", "killed", "--concurrency", "10"],
        ))
        .spawn()
        .unwrap();
    wait_for_records(&world, 15).await;
    child.kill().unwrap(); // SIGKILL: no grace, no last journal write
    child.wait().unwrap();

    let second = world
        .msgsend(&["bulk", "--resume", "killed", "--summary-json", "-"])
        .await;
    let summary = summary(&second);
    // Requests in flight at the kill are `uncertain`: not resent, so exit 3 (0 in the rare
    // case that the kill fell between two requests).
    let uncertain = summary["uncertain"].as_u64().unwrap();
    let expected = if uncertain > 0 { 3 } else { 0 };
    assert_eq!(second.status.code(), Some(expected), "{}", stderr(&second));
    let deliveries = deliveries(&world);
    for (phone, providers) in &deliveries {
        assert_eq!(providers.len(), 1, "{phone} got {providers:?}");
    }
    let delivered = summary["sent"].as_u64().unwrap() + summary["fallback"].as_u64().unwrap();
    assert_eq!(
        delivered + uncertain,
        crowd.eligible.len() as u64,
        "{summary}"
    );
    // Everyone the journal says was delivered was; the uncertain ones may or may not be.
    assert!(deliveries.len() as u64 >= delivered);
    assert!(deliveries.len() as u64 <= delivered + uncertain);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_bulk_on_the_same_state_dir_is_refused_within_two_seconds() {
    let crowd = crowd(60);
    let mut world = slow_world("10/s", Duration::ZERO).await;
    let csv = world.with_crowd(&crowd);
    let mut first = world
        .command(&bulk_args(&["--csv", &csv], &[]))
        .spawn()
        .unwrap();
    wait_for_records(&world, 3).await;
    let started = Instant::now();
    let second = world.msgsend(&bulk_args(&["--csv", &csv], &[])).await;
    let took = started.elapsed();
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(
        stderr(&second).contains("another msgsend bulk is running"),
        "{}",
        stderr(&second)
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_counts_and_renders_but_sends_nothing() {
    let crowd = crowd(30);
    let mut world = World::start(|_| {}).await;
    let csv = world.with_crowd(&crowd);
    let output = world
        .msgsend(&bulk_args(&["--csv", &csv], &["--dry-run"]))
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    let figure = |label: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap();
        line.split_whitespace().last().unwrap().parse().unwrap()
    };
    assert_eq!(figure("eligible"), crowd.eligible.len() as u64, "{text}");
    assert_eq!(figure("duplicate"), crowd.duplicate, "{text}");
    assert_eq!(figure("total read"), crowd.total(), "{text}");
    assert!(text.contains("님, 서울 매장 이벤트 안내입니다."), "{text}");
    assert!(text.contains("010-****-"), "{text}");
    for sim in [&world.sandbox.kakaotalk, &world.sandbox.sms] {
        assert_eq!(count(&sim.stats.requests), 0);
        assert_eq!(count(&sim.stats.health_checks), 0);
    }
    let jobs = world.msgsend(&["jobs", "--json"]).await;
    assert_eq!(stdout(&jobs).trim(), "[]");
}

#[tokio::test(flavor = "multi_thread")]
async fn off_a_terminal_there_is_no_bar_but_a_progress_line_every_ten_seconds() {
    let crowd = crowd(50);
    let mut world = slow_world("4/s", Duration::ZERO).await;
    let csv = world.with_crowd(&crowd);
    let output = world.msgsend(&bulk_args(&["--csv", &csv], &[])).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let log = stderr(&output);
    let progress_lines = log.lines().filter(|l| l.contains("progress:")).count();
    assert!(progress_lines >= 1, "{log}");
    assert!(!log.contains('\r') && !log.contains("ETA"), "{log}");
    // The table goes to stdout.
    assert!(stdout(&output).contains("eligible"));
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_recipients_land_in_the_failed_csv_and_retry_failed_sends_only_them() {
    let crowd = crowd(20);
    let rejected = ["010-5000-0005", "010-5000-0006"];
    let mut world = World::start(|config| {
        config.kakaotalk.faults.reject_phones = rejected.iter().map(|p| p.to_string()).collect();
    })
    .await;
    // SMS's circuit stays closed, so both reasons name its answer.
    world.set("circuit_breaker.failure_threshold", 100);
    let csv = world.with_crowd(&crowd);
    world
        .sandbox
        .sms
        .control
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let failed_csv = world.path("failed.csv");
    let output = world
        .msgsend(&bulk_args(
            &["--csv", &csv],
            &[
                "--job-id",
                "first",
                "--failed-csv",
                failed_csv.to_str().unwrap(),
            ],
        ))
        .await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let mut reader = csv::Reader::from_path(&failed_csv).unwrap();
    assert_eq!(
        reader.headers().unwrap(),
        vec!["phone", "name", "reason", "line"]
    );
    let failed: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let phones: Vec<&str> = failed.iter().map(|r| &r[0]).collect();
    assert_eq!(phones, rejected);
    assert!(
        failed[0][2].starts_with("kakaotalk: HTTP 400; sms: HTTP 503"),
        "{:?}",
        &failed[0]
    );
    assert_eq!(&failed[0][3], "7"); // the header is line 1, person 5 is line 7

    world
        .sandbox
        .sms
        .control
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let before = world.recorded().len();
    let retry = world
        .msgsend(&["bulk", "--retry-failed", "first", "--summary-json", "-"])
        .await;
    assert_eq!(retry.status.code(), Some(0), "{}", stderr(&retry));
    let summary = summary(&retry);
    assert_eq!(summary["eligible"], 2);
    assert_eq!(summary["fallback"], 2);
    let new: Vec<String> = world.recorded()[before..]
        .iter()
        .map(|m| m.phone.clone())
        .collect();
    assert_eq!(new.len(), 2);
    assert!(new.iter().all(|p| rejected.contains(&p.as_str())));
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_and_source_errors_send_nothing() {
    let crowd = crowd(10);
    let mut world = World::start(|_| {}).await;
    let csv = world.with_crowd(&crowd);
    std::fs::write(
        world.path("no_phone.csv"),
        "name,birth_date\n홍길동,2000-01-01\n",
    )
    .unwrap();
    std::fs::write(world.path("empty.csv"), "").unwrap();
    let cases: [(Vec<&str>, i32, &str); 8] = [
        (
            vec![
                "bulk",
                "--age-group",
                "25s",
                "--csv",
                &csv,
                "--message",
                "hi",
            ],
            2,
            "25s",
        ),
        (
            vec![
                "bulk",
                "--age-group",
                "2Os",
                "--csv",
                &csv,
                "--message",
                "hi",
            ],
            2,
            "2Os",
        ),
        (
            vec!["bulk", "--csv", &csv, "--message", "hi"],
            2,
            "--age-group",
        ),
        (
            vec![
                "bulk",
                "--age-group",
                "20s",
                "--csv",
                &csv,
                "--message",
                "{nope}",
            ],
            2,
            "nope",
        ),
        (
            vec![
                "bulk",
                "--age-group",
                "20s",
                "--csv",
                "no_phone.csv",
                "--message",
                "hi",
            ],
            1,
            "phone",
        ),
        (
            vec![
                "bulk",
                "--age-group",
                "20s",
                "--csv",
                "empty.csv",
                "--message",
                "hi",
            ],
            1,
            "header",
        ),
        (
            vec![
                "bulk",
                "--age-group",
                "20s",
                "--db",
                "sqlite://missing.sqlite",
                "--message",
                "hi",
            ],
            1,
            "missing.sqlite",
        ),
        (
            vec![
                "bulk",
                "--age-group",
                "20s",
                "--csv",
                &csv,
                "--message",
                "{name",
            ],
            2,
            "unclosed",
        ),
    ];
    for (args, code, mentions) in cases {
        let output = world.msgsend(&args).await;
        assert_eq!(
            output.status.code(),
            Some(code),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(mentions),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    for sim in [&world.sandbox.kakaotalk, &world.sandbox.sms] {
        assert_eq!(count(&sim.stats.requests), 0);
    }
}

/// Waits (at most 20 s) until the sandbox recorded `n` messages.
async fn wait_for_records(world: &World, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while world.recorded().len() < n {
        assert!(Instant::now() < deadline, "the campaign did not get going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_campaign_failing_above_max_failure_rate_aborts_after_a_hundred_attempts() {
    let crowd = crowd(200);
    let mut world = World::start(|_| {}).await;
    // Circuits that never open: every recipient is really attempted and fails.
    world.set("circuit_breaker.failure_threshold", 100_000);
    let csv = world.with_crowd(&crowd);
    for sim in [&world.sandbox.kakaotalk, &world.sandbox.sms] {
        sim.control
            .down
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
    let output = world
        .msgsend(&bulk_args(
            &["--csv", &csv],
            &[
                "--max-failure-rate",
                "0.5",
                "--concurrency",
                "5",
                "--summary-json",
                "-",
                "--job-id",
                "doomed",
            ],
        ))
        .await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let summary = summary(&output);
    assert_eq!(summary["status"], "ABORTED");
    let failed = summary["failed"].as_u64().unwrap();
    assert!((100..=110).contains(&failed), "{summary}");
    assert!(summary["pending"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(summary["eligible"], crowd.eligible.len() as u64);
    let jobs = world.msgsend(&["jobs", "--json"]).await;
    let jobs: serde_json::Value = serde_json::from_slice(&jobs.stdout).unwrap();
    assert_eq!(jobs[0]["job_id"], "doomed");
    assert_eq!(jobs[0]["status"], "ABORTED");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_every_channel_down_a_campaign_waits_then_stops_resumable_instead_of_failing_everyone()
{
    let crowd = crowd(100);
    let mut world = World::start(|_| {}).await;
    world
        .set("circuit_breaker.failure_threshold", 2)
        .set("circuit_breaker.open_timeout", "200ms")
        .set("circuit_breaker.all_open_wait", "1s")
        .set("retry.max_attempts", 1);
    let csv = world.with_crowd(&crowd);
    let down = |world: &World, down: bool| {
        for sim in [&world.sandbox.kakaotalk, &world.sandbox.sms] {
            sim.control
                .down
                .store(down, std::sync::atomic::Ordering::SeqCst);
        }
    };
    down(&world, true);
    let started = Instant::now();
    let output = world
        .msgsend(&bulk_args(
            &["--csv", &csv],
            &[
                "--job-id",
                "blackout",
                "--concurrency",
                "5",
                "--summary-json",
                "-",
            ],
        ))
        .await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let first = summary(&output);
    assert_eq!(first["status"], "INTERRUPTED");
    assert!(
        first["reason"]
            .as_str()
            .unwrap()
            .contains("every channel is unusable"),
        "{first}"
    );
    // Only the sends that met the outage before the circuits opened failed; the rest wait.
    let failed = first["failed"].as_u64().unwrap();
    assert!(failed <= 10, "{first}");
    assert_eq!(
        first["pending"].as_u64().unwrap() + failed,
        crowd.eligible.len() as u64,
        "{first}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));

    down(&world, false);
    let resumed = world
        .msgsend(&["bulk", "--resume", "blackout", "--summary-json", "-"])
        .await;
    let second = summary(&resumed);
    assert_eq!(second["status"], "DONE", "{}", stderr(&resumed));
    assert_eq!(second["failed"].as_u64().unwrap(), failed);
    assert_eq!(
        second["sent"].as_u64().unwrap() + second["fallback"].as_u64().unwrap() + failed,
        crowd.eligible.len() as u64,
        "{second}"
    );
    assert_eq!(resumed.status.code(), Some(if failed > 0 { 3 } else { 0 }));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unusable_state_dir_stops_before_any_request() {
    let crowd = crowd(5);
    let mut world = World::start(|_| {}).await;
    let csv = world.with_crowd(&crowd);
    // A regular file where the state directory should be.
    let not_a_dir = world.path("state-is-a-file");
    std::fs::write(&not_a_dir, "").unwrap();
    world.set("state_dir", not_a_dir.display().to_string());
    let output = world.msgsend(&bulk_args(&["--csv", &csv], &[])).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!("state directory {}", not_a_dir.display())),
        "{}",
        stderr(&output)
    );
    assert_eq!(count(&world.sandbox.kakaotalk.stats.requests), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_too_long_for_every_provider_fails_that_recipient_without_a_request() {
    let world = World::start(|_| {}).await;
    let long_city = "가".repeat(1200);
    std::fs::write(
        world.path("people.csv"),
        format!(
            "name,phone,birth_date,city\n짧은,010-6000-0001,{0},서울\n긴,010-6000-0002,{0},{long_city}\n",
            common::crowd::today_in_seoul()
                .checked_sub(jiff::Span::new().years(25))
                .unwrap()
        ),
    )
    .unwrap();
    let output = world
        .msgsend(&bulk_args(
            &["--csv", "people.csv"],
            &["--summary-json", "-", "--failed-csv", "failed.csv"],
        ))
        .await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let summary = summary(&output);
    assert_eq!(
        (summary["sent"].as_u64(), summary["failed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(count(&world.sandbox.kakaotalk.stats.requests), 1);
    assert_eq!(count(&world.sandbox.sms.stats.requests), 0);
    let failed = std::fs::read_to_string(world.path("failed.csv")).unwrap();
    assert!(
        failed.contains(
            "kakaotalk: message too long (1241 > 1000 characters); sms: message too long"
        ),
        "{failed}"
    );

    // A body too long before any placeholder is filled is refused before anything is sent.
    let too_long = "x".repeat(1001);
    let refused = world
        .msgsend(&[
            "bulk",
            "--age-group",
            "20s",
            "--csv",
            "people.csv",
            "--message",
            &too_long,
        ])
        .await;
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("max_message_length"));
    assert_eq!(count(&world.sandbox.kakaotalk.stats.requests), 1);
}
