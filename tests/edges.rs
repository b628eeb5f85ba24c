//! The guarantees at their edges, each test a defect found by a hostile or careless run of the
//! binary against the sandbox on 127.0.0.1: odd files (CRLF, bad dates in SQL), odd timings
//! (a signal in the first milliseconds, between retries), reruns (`--retry-failed` twice, a
//! resume after the source shrank), outputs that cannot be written.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::{World, count, json, stderr, stdout};

fn born_25() -> String {
    common::born(25)
}

/// `n` people in their 20s, phones `010-7000-0000` onwards, as CSV text with `line_end`.
fn people(n: usize, line_end: &str) -> String {
    common::people_csv("7000", n, line_end)
}

fn phone(i: usize) -> String {
    format!("010-7000-{i:04}")
}

fn bulk<'a>(csv: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    common::campaign_args(csv, extra)
}

/// A count line of the dry run's output.
fn count_line(label: &str, value: u64) -> String {
    format!("  {label:<12} {value:>10}")
}

fn summary(output: &Output) -> serde_json::Value {
    json(output)
}

fn recorded_phones(world: &World) -> Vec<String> {
    world.recorded().into_iter().map(|m| m.phone).collect()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A campaign to `people` in a world whose KakaoTalk takes 5/s, stopped by SIGTERM (exit 130)
/// once the first three were delivered; returns the world and the CSV's path.
async fn interrupted_job(people_count: usize, job: &str) -> (World, std::path::PathBuf) {
    let mut world = World::start(|c| {
        c.kakaotalk.rate = "5/s".parse().unwrap();
        c.kakaotalk.faults.latency = Duration::from_millis(50);
    })
    .await;
    world.set("providers.kakaotalk.rate_limit", "5/s");
    let csv = world.path("people.csv");
    std::fs::write(&csv, people(people_count, "\n")).unwrap();
    let child = world
        .command(&bulk(csv.to_str().unwrap(), &["--job-id", job]))
        .spawn()
        .unwrap();
    wait_for("the first deliveries", || world.recorded().len() >= 3).await;
    common::signal(child.id(), "TERM");
    let first = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(first.status.code(), Some(130), "{}", stderr(&first));
    (world, csv)
}

async fn job_status(world: &World, job: &str) -> serde_json::Value {
    let output = world.msgsend(&["status", job, "--json"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    json(&output)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crlf_opt_out_file_with_a_header_suppresses_its_first_phone() {
    let mut world = World::start(|_| {}).await;
    let csv = world.path("people.csv");
    std::fs::write(&csv, people(3, "\r\n")).unwrap();
    let optout = world.path("optout.csv");
    std::fs::write(
        &optout,
        format!("name,phone\r\nA,{}\r\nB,{}\r\n", phone(0), phone(1)),
    )
    .unwrap();
    world.set("source.suppression", optout.display().to_string());
    let output = world
        .msgsend(&bulk(csv.to_str().unwrap(), &["--summary-json", "-"]))
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(summary(&output)["suppressed"], 2);
    assert_eq!(recorded_phones(&world), [phone(2)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn crlf_line_numbers_are_the_lines_an_editor_shows() {
    let world = World::start(|_| {}).await;
    let csv = world.path("people.csv");
    let mut text = people(2, "\r\n");
    text.push_str("bad,010-7000-9999,not-a-date\r\n");
    std::fs::write(&csv, text).unwrap();
    let failed = world.path("failed.csv");
    let output = world
        .msgsend(&bulk(
            csv.to_str().unwrap(),
            &["--failed-csv", failed.to_str().unwrap()],
        ))
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let log = stderr(&output);
    assert!(log.contains("line=4"), "the bad row is line 4: {log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resume_after_the_source_shrank_fails_the_missing_and_never_ends_done_with_queued() {
    let (mut world, csv) = interrupted_job(30, "shrink").await;
    let delivered: Vec<String> = recorded_phones(&world);
    // Those the first run had not reached, and that the shrunk file no longer holds.
    let gone = (5..30).filter(|&i| !delivered.contains(&phone(i))).count() as u64;
    assert!(gone > 0, "the first run reached everyone");
    // The file now holds only the first five people.
    std::fs::write(&csv, people(5, "\n")).unwrap();
    world.set("providers.kakaotalk.rate_limit", "5/s");
    let failed = world.path("failed.csv");
    let second = world
        .msgsend(&[
            "bulk",
            "--resume",
            "shrink",
            "--summary-json",
            "-",
            "--failed-csv",
            failed.to_str().unwrap(),
        ])
        .await;
    assert_eq!(second.status.code(), Some(3), "{}", stderr(&second));
    let result = summary(&second);
    assert_eq!(result["failed"], gone, "{result}");
    let status = job_status(&world, "shrink").await;
    assert_eq!(status["pending"], 0, "{status}");
    let listed = std::fs::read_to_string(&failed).unwrap();
    assert_eq!(
        listed.matches("not in the source any more").count() as u64,
        gone
    );
    // Nobody twice.
    let mut all = recorded_phones(&world);
    let before = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_failed_twice_sends_nobody_twice() {
    let rejected = [phone(1), phone(2)];
    let mut world = World::start(|c| {
        c.kakaotalk.faults.reject_phones = rejected.iter().cloned().collect();
    })
    .await;
    world.set("circuit_breaker.failure_threshold", 100);
    let csv = world.path("people.csv");
    std::fs::write(&csv, people(4, "\n")).unwrap();
    let sms_down = |down: bool| {
        world
            .sandbox
            .sms
            .control
            .down
            .store(down, std::sync::atomic::Ordering::SeqCst)
    };
    sms_down(true);
    let first = world
        .msgsend(&bulk(csv.to_str().unwrap(), &["--job-id", "first"]))
        .await;
    assert_eq!(first.status.code(), Some(3), "{}", stderr(&first));
    sms_down(false);
    for (attempt, expected) in [(1, 2), (2, 0)] {
        let before = world.recorded().len();
        let retry = world
            .msgsend(&["bulk", "--retry-failed", "first", "--summary-json", "-"])
            .await;
        assert_eq!(retry.status.code(), Some(0), "{}", stderr(&retry));
        assert_eq!(summary(&retry)["eligible"], expected, "retry {attempt}");
        assert_eq!(world.recorded().len() - before, expected as usize);
    }
    let mut all = recorded_phones(&world);
    let before = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), before, "someone got the campaign twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_between_retries_puts_the_recipient_back_in_the_queue() {
    let mut world = World::start(|_| {}).await;
    world
        .set("retry.initial_delay", "10s")
        .set("retry.max_delay", "10s")
        .set("circuit_breaker.failure_threshold", 100);
    let kakaotalk_down = |down: bool| {
        world
            .sandbox
            .kakaotalk
            .control
            .down
            .store(down, std::sync::atomic::Ordering::SeqCst)
    };
    kakaotalk_down(true);
    let csv = world.path("people.csv");
    std::fs::write(&csv, people(3, "\n")).unwrap();
    let child = world
        .command(&bulk(
            csv.to_str().unwrap(),
            &["--job-id", "waiting", "--summary-json", "-"],
        ))
        .spawn()
        .unwrap();
    let stats = world.sandbox.kakaotalk.stats.clone();
    wait_for("the first attempts", || count(&stats.server_errors) >= 3).await;
    // All three now wait 10 s for their second attempt.
    tokio::time::sleep(Duration::from_millis(100)).await;
    common::signal(child.id(), "TERM");
    let first = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(first.status.code(), Some(130), "{}", stderr(&first));
    let stopped = summary(&first);
    assert_eq!(stopped["uncertain"], 0, "no request was out: {stopped}");
    assert_eq!(stopped["pending"], 3, "{stopped}");

    kakaotalk_down(false);
    let second = world
        .msgsend(&["bulk", "--resume", "waiting", "--summary-json", "-"])
        .await;
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert_eq!(summary(&second)["sent"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn outputs_that_cannot_be_written_stop_the_campaign_before_any_request() {
    let world = World::start(|_| {}).await;
    let csv = world.path("people.csv");
    std::fs::write(&csv, people(3, "\n")).unwrap();
    for flag in ["--failed-csv", "--summary-json"] {
        let missing = world.path("no/such/folder/out.csv");
        let output = world
            .msgsend(&bulk(
                csv.to_str().unwrap(),
                &[flag, missing.to_str().unwrap()],
            ))
            .await;
        assert_eq!(output.status.code(), Some(2), "{flag}: {}", stderr(&output));
        assert!(stderr(&output).contains(flag), "{}", stderr(&output));
    }
    assert_eq!(count(&world.sandbox.kakaotalk.stats.requests), 0);
    assert_eq!(count(&world.sandbox.sms.stats.requests), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signal_in_the_first_milliseconds_exits_130_and_leaves_no_running_job() {
    let mut world = World::start(|c| c.kakaotalk.faults.latency = Duration::from_millis(200)).await;
    world.set("providers.kakaotalk.rate_limit", "5/s");
    let csv = world.path("people.csv");
    std::fs::write(&csv, people(20, "\n")).unwrap();
    // From 5 ms on (spawn returns once the program is exec'd; the loader takes about 1 ms).
    for (round, delay_ms) in [5u64, 10, 20, 40, 80].into_iter().enumerate() {
        let job = format!("early{round}");
        let child = world
            .command(&bulk(csv.to_str().unwrap(), &["--job-id", &job]))
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        common::signal(child.id(), "TERM");
        let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(130),
            "SIGTERM after {delay_ms} ms: {}",
            stderr(&output)
        );
        let status = world.msgsend(&["status", &job, "--json"]).await;
        if status.status.code() == Some(0) {
            let status = json(&status);
            assert_ne!(status["status"], "RUNNING", "after {delay_ms} ms: {status}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_of_a_resume_counts_what_the_resume_would_send() {
    let (world, _) = interrupted_job(20, "half").await;
    let done = world.recorded().len();
    let dry = world
        .msgsend(&["bulk", "--resume", "half", "--dry-run"])
        .await;
    assert_eq!(dry.status.code(), Some(0), "{}", stderr(&dry));
    let text = stdout(&dry);
    let eligible = count_line("eligible", 20 - done as u64);
    assert!(text.contains(&eligible), "expected `{eligible}`:\n{text}");
    // Nothing was sent or recorded by the dry run: the resume still sends the rest.
    assert_eq!(world.recorded().len(), done);
    let resumed = world
        .msgsend(&["bulk", "--resume", "half", "--summary-json", "-"])
        .await;
    assert_eq!(resumed.status.code(), Some(0), "{}", stderr(&resumed));
    assert_eq!(world.recorded().len(), 20);
}

/// A SQLite source whose `birth_date` column holds what careless databases hold.
async fn careless_sqlite(path: &std::path::Path) {
    let mut db = common::sqlite_file(path).await;
    sqlx::query("CREATE TABLE users (name TEXT, phone TEXT, birth_date)")
        .execute(&mut db)
        .await
        .unwrap();
    let good = born_25();
    let rows: [(&str, &str, Option<String>); 6] = [
        ("fine", "010-7100-0000", Some(good.clone())),
        ("null", "010-7100-0001", None),
        ("garbage", "010-7100-0002", Some("garbage".into())),
        (
            "datetime",
            "010-7100-0003",
            Some(format!("{good} 10:00:00")),
        ),
        ("future", "010-7100-0004", Some("2999-01-01".into())),
        ("old", "010-7100-0005", Some("1950-01-01".into())),
    ];
    for (name, phone, birth) in rows {
        sqlx::query("INSERT INTO users VALUES ($1, $2, $3)")
            .bind(name)
            .bind(phone)
            .bind(birth)
            .execute(&mut db)
            .await
            .unwrap();
    }
    sqlx::query("INSERT INTO users VALUES ('number', '010-7100-0006', 20010101)")
        .execute(&mut db)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_birth_dates_that_do_not_parse_are_counted_invalid_never_dropped() {
    let world = World::start(|_| {}).await;
    careless_sqlite(&world.path("careless.sqlite")).await;
    // A query ending in `;` and a `-- comment` is taken as written.
    for query in [
        "SELECT name, phone, birth_date FROM users",
        "SELECT name, phone, birth_date FROM users;",
        "SELECT name, phone, birth_date FROM users -- everyone",
    ] {
        let output = world
            .dry_run_of_database("sqlite://careless.sqlite", query)
            .await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "{query}: {}",
            stderr(&output)
        );
        let text = stdout(&output);
        // Only the 1950 row is outside the range; every other row is returned and judged.
        assert!(text.contains(&count_line("total read", 6)), "{text}");
        assert!(text.contains(&count_line("invalid", 5)), "{text}");
        assert!(text.contains(&count_line("eligible", 1)), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(postgres_available),
    ignore = "no PostgreSQL server: apt-get install postgresql, or set MSGSEND_TEST_POSTGRES_URL"
)]
async fn postgres_text_birth_dates_that_do_not_parse_are_invalid_not_fatal() {
    let Some(url) = common::postgres_url() else {
        return;
    };
    let table = format!("careless_{}", std::process::id());
    let mut db = common::postgres::connect(&url).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (name TEXT, phone TEXT, birth_date TEXT);\
         INSERT INTO {table} VALUES ('fine', '010-7200-0000', '{good}'), ('garbage', '010-7200-0001', 'garbage'), \
         ('null', '010-7200-0002', NULL), ('impossible', '010-7200-0003', '{year}-02-30')",
        good = born_25(),
        year = &born_25()[..4],
    )))
    .execute(&mut db)
    .await
    .unwrap();
    let world = World::start(|_| {}).await;
    let query = format!("SELECT name, phone, birth_date FROM {table}");
    let output = world.dry_run_of_database(&url, &query).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains(&count_line("total read", 4)), "{text}");
    assert!(text.contains(&count_line("invalid", 3)), "{text}");
    assert!(!stderr(&output).contains("garbage"), "{}", stderr(&output));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_rrn_in_the_birth_date_column_is_never_logged() {
    let world = World::start(|_| {}).await;
    let csv = world.path("people.csv");
    std::fs::write(
        &csv,
        "name,phone,birth_date\na,010-7000-0001,900101-1234567\n",
    )
    .unwrap();
    let mut args = vec!["-vv"];
    args.extend(bulk(csv.to_str().unwrap(), &[]));
    let output = world.msgsend(&args).await;
    for text in [stdout(&output), stderr(&output)] {
        assert!(!text.contains("1234567"), "{text}");
        assert!(!text.contains("900101"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_message_is_a_usage_error_with_nothing_sent() {
    let world = World::start(|_| {}).await;
    let csv = world.path("people.csv");
    std::fs::write(&csv, people(2, "\n")).unwrap();
    let bulk_run = world
        .msgsend(&[
            "bulk",
            "--age-group",
            "20s",
            "--message",
            "  ",
            "--csv",
            csv.to_str().unwrap(),
        ])
        .await;
    assert_eq!(bulk_run.status.code(), Some(2), "{}", stderr(&bulk_run));
    let send = world
        .msgsend(&[
            "send",
            "--to",
            "01012345678",
            "--name",
            "A",
            "--message",
            "",
        ])
        .await;
    assert_eq!(send.status.code(), Some(2), "{}", stderr(&send));
    assert_eq!(count(&world.sandbox.kakaotalk.stats.requests), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_source_names_its_cause_once() {
    let world = World::start(|_| {}).await;
    let output = world
        .msgsend(&bulk(world.path("missing.csv").to_str().unwrap(), &[]))
        .await;
    assert_eq!(output.status.code(), Some(1));
    let log = stderr(&output);
    assert_eq!(log.matches("No such file or directory").count(), 1, "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn many_bad_rows_are_logged_a_few_then_counted_and_listed_in_the_invalid_csv() {
    let world = World::start(|_| {}).await;
    let csv = world.path("people.csv");
    let mut text = people(2, "\n");
    for i in 0..50 {
        text.push_str(&format!(
            "bad{i},010-7000-{:04},900101-12345{i:02}\n",
            100 + i
        ));
    }
    std::fs::write(&csv, text).unwrap();
    let invalid = world.path("invalid.csv");
    let output = world
        .msgsend(&bulk(
            csv.to_str().unwrap(),
            &[
                "--invalid-csv",
                invalid.to_str().unwrap(),
                "--summary-json",
                "-",
            ],
        ))
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(summary(&output)["invalid"], 50);
    let log = stderr(&output);
    assert_eq!(log.matches("skipped an invalid row").count(), 10, "{log}");
    assert_eq!(log.matches("more invalid rows").count(), 1, "{log}");
    let mut reader = csv::Reader::from_path(&invalid).unwrap();
    assert_eq!(reader.headers().unwrap(), vec!["line", "field", "reason"]);
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 50);
    assert_eq!((&rows[0][0], &rows[0][1]), ("4", "birth_date"));
    let listed = std::fs::read_to_string(&invalid).unwrap();
    assert!(!listed.contains("900101"), "no raw value: {listed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blob_column_in_sqlite_is_no_value_not_a_failed_campaign() {
    let world = World::start(|_| {}).await;
    let mut db = common::sqlite_file(&world.path("blob.sqlite")).await;
    sqlx::query("CREATE TABLE users (name TEXT, phone TEXT, birth_date, photo)")
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query("INSERT INTO users VALUES ('a', '010-7400-0000', $1, X'00FF'), ('b', '010-7400-0001', X'00FF', NULL)")
        .bind(born_25())
        .execute(&mut db)
        .await
        .unwrap();
    let output = world
        .msgsend(&[
            "bulk",
            "--age-group",
            "20s",
            "--message",
            "hi",
            "--db",
            "sqlite://blob.sqlite",
            "--query",
            "SELECT * FROM users",
            "--summary-json",
            "-",
        ])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let result = summary(&output);
    assert_eq!(
        (result["total"].as_u64(), result["invalid"].as_u64()),
        (Some(2), Some(1)),
        "{result}"
    );
    assert_eq!(result["sent"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recipient_who_opted_out_since_the_first_run_is_dropped_not_failed() {
    let (mut world, _) = interrupted_job(20, "optout").await;
    let delivered = recorded_phones(&world);
    let opted_out: Vec<String> = (0..20)
        .map(phone)
        .filter(|p| !delivered.contains(p))
        .take(3)
        .collect();
    let optout = world.path("optout.txt");
    std::fs::write(&optout, opted_out.join("\n")).unwrap();
    world.set("source.suppression", optout.display().to_string());
    let second = world
        .msgsend(&["bulk", "--resume", "optout", "--summary-json", "-"])
        .await;
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    let result = summary(&second);
    assert_eq!(result["failed"], 0, "{result}");
    assert_eq!(result["suppressed"], 3, "{result}");
    assert_eq!(result["eligible"], 17, "{result}");
    let received = recorded_phones(&world);
    assert!(opted_out.iter().all(|p| !received.contains(p)));
}

#[tokio::test(flavor = "multi_thread")]
async fn output_paths_naming_a_folder_or_one_file_twice_are_usage_errors() {
    let world = World::start(|_| {}).await;
    let csv = world.path("people.csv");
    std::fs::write(&csv, people(2, "\n")).unwrap();
    let folder = format!("{}/", world.path("new").display());
    let same = world.path("same.out").display().to_string();
    for extra in [
        vec!["--failed-csv", folder.as_str()],
        vec![
            "--failed-csv",
            same.as_str(),
            "--summary-json",
            same.as_str(),
        ],
        vec!["--failed-csv", "-"],
    ] {
        let output = world.msgsend(&bulk(csv.to_str().unwrap(), &extra)).await;
        assert_eq!(
            output.status.code(),
            Some(2),
            "{extra:?}: {}",
            stderr(&output)
        );
    }
    assert_eq!(count(&world.sandbox.kakaotalk.stats.requests), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_stderr_never_turns_a_campaign_into_a_panic() {
    let world = World::start(|_| {}).await;
    let csv = world.path("people.csv");
    std::fs::write(&csv, people(3, "\n")).unwrap();
    let mut command = world.command(&bulk(csv.to_str().unwrap(), &["-v", "--job-id", "full"]));
    command.stderr(
        std::fs::File::options()
            .write(true)
            .open("/dev/full")
            .unwrap(),
    );
    let output = common::output_of(command).await;
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert_eq!(job_status(&world, "full").await["status"], "DONE");
    assert_eq!(world.recorded().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signal_stops_a_dry_run() {
    let world = World::start(|_| {}).await;
    let csv = world.path("people.csv");
    // Long enough that the signal lands mid-run on a fast machine too (30 blocks raced).
    std::fs::write(&csv, people(9999, "\n").repeat(60)).unwrap();
    let child = world
        .command(&[
            "bulk",
            "--age-group",
            "20s",
            "--message",
            "hi",
            "--csv",
            csv.to_str().unwrap(),
            "--dry-run",
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    common::signal(child.id(), "INT");
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_taken_job_id_is_a_usage_error_and_an_empty_rendered_message_is_never_sent() {
    let mut world = World::start(|_| {}).await;
    // No header: the body alone is the message, and it renders empty.
    world.config.remove("message");
    let csv = world.path("people.csv");
    std::fs::write(
        &csv,
        "name,phone,birth_date,note\na,010-7500-0000,".to_string() + &born_25() + ",\n",
    )
    .unwrap();
    let first = world
        .msgsend(&[
            "bulk",
            "--age-group",
            "20s",
            "--message",
            "{note}",
            "--csv",
            csv.to_str().unwrap(),
            "--job-id",
            "taken",
            "--summary-json",
            "-",
        ])
        .await;
    assert_eq!(first.status.code(), Some(3), "{}", stderr(&first));
    assert_eq!(summary(&first)["failed"], 1);
    assert_eq!(count(&world.sandbox.kakaotalk.stats.requests), 0);
    let again = world
        .msgsend(&bulk(csv.to_str().unwrap(), &["--job-id", "taken"]))
        .await;
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
}
