//! A resumed CSV campaign starts reading its file at the first row an earlier run did not
//! finish with (`source::resume`) — and only when the file and the screening are unchanged:
//! the counts come out as a whole read's, duplicates across the point stay duplicates, and
//! nobody is sent twice or skipped.

mod common;

use std::collections::BTreeMap;
use std::process::Output;
use std::time::{Duration, Instant};

use common::crowd::{Crowd, crowd};
use common::{World, stderr, stdout};

/// A world slow enough to interrupt (KakaoTalk at 40/s), admitting ten rows at a time so that
/// the resume point moves in small steps.
async fn slow_world() -> World {
    let mut world = World::start(|config| {
        config.kakaotalk.rate = "40/s".parse().unwrap();
        config.kakaotalk.faults.latency = Duration::from_millis(30);
    })
    .await;
    world.set("providers.kakaotalk.rate_limit", "40/s");
    world.set("bulk.batch_size", 10);
    world
}

/// Starts job `spring` on `csv` and stops it with SIGTERM once 60 messages are recorded.
async fn interrupted_run(world: &World, csv: &str) -> serde_json::Value {
    let child = world
        .command(&common::campaign_args(
            csv,
            &["--job-id", "spring", "--summary-json", "-"],
        ))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while world.recorded().len() < 60 {
        assert!(Instant::now() < deadline, "the campaign did not get going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    common::signal(child.id(), "TERM");
    let first = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(first.status.code(), Some(130), "{}", stderr(&first));
    common::json(&first)
}

/// The whole file's counts (with `added` more rows, all duplicates), as the summary says them.
fn assert_whole_counts(crowd: &Crowd, added: u64, summary: &serde_json::Value) {
    assert_eq!(summary["total"], crowd.total() + added, "{summary}");
    assert_eq!(summary["invalid"], crowd.invalid, "{summary}");
    assert_eq!(summary["duplicate"], crowd.duplicate + added, "{summary}");
    assert_eq!(
        summary["suppressed"],
        crowd.suppressed.len() as u64,
        "{summary}"
    );
    assert_eq!(
        summary["eligible"],
        crowd.eligible.len() as u64,
        "{summary}"
    );
}

/// The whole file's counts, everyone eligible once, nobody else.
fn assert_whole_and_once(world: &World, crowd: &Crowd, summary: &serde_json::Value) {
    assert_eq!(summary["status"], "DONE", "{summary}");
    assert_whole_counts(crowd, 0, summary);
    let mut received: BTreeMap<String, usize> = BTreeMap::new();
    for message in world.recorded() {
        *received.entry(message.phone).or_default() += 1;
    }
    common::assert_never_twice(&received);
    let received: Vec<&String> = received.keys().collect();
    let eligible: Vec<&String> = crowd.eligible.iter().collect();
    assert_eq!(received, eligible);
}

/// The line the resumed run said it started reading at, if it did.
fn resumed_at_line(output: &Output) -> Option<u64> {
    let log = stderr(output);
    let line = log
        .lines()
        .find(|l| l.contains("resuming the source at the first row not finished"))?;
    let after = &line[line.find("line=")? + 5..];
    after
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resume_starts_at_the_first_row_not_finished_and_counts_the_whole_file() {
    // The crowd's duplicates (of its second and third rows) and bad rows come last: after the
    // point, their first occurrences before it.
    let crowd = crowd(300);
    let mut world = slow_world().await;
    let csv = world.with_crowd(&crowd);
    let interrupted = interrupted_run(&world, &csv).await;
    assert_eq!(interrupted["status"], "INTERRUPTED");
    let sent_before = world.recorded().len();

    let resumed = world
        .msgsend(&["bulk", "--resume", "spring", "--summary-json", "-"])
        .await;
    assert_eq!(resumed.status.code(), Some(0), "{}", stderr(&resumed));
    let line = resumed_at_line(&resumed)
        .unwrap_or_else(|| panic!("not resumed at a point: {}", stderr(&resumed)));
    // Past the rows sent before the stop (less the rows in flight, the batch's own).
    assert!(line > 30, "resumed at line {line} after {sent_before} sent");
    assert_whole_and_once(&world, &crowd, &common::json(&resumed));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_file_or_suppression_list_is_read_from_its_first_row() {
    let crowd = crowd(300);
    let mut world = slow_world().await;
    let csv = world.with_crowd(&crowd);
    interrupted_run(&world, &csv).await;
    // The same bytes, written again: a new modification time is a changed file.
    std::thread::sleep(Duration::from_millis(20));
    let bytes = std::fs::read(&csv).unwrap();
    std::fs::write(&csv, bytes).unwrap();
    let resumed = world
        .msgsend(&["bulk", "--resume", "spring", "--summary-json", "-"])
        .await;
    assert!(
        stderr(&resumed).contains("the file changed since the job's last run"),
        "{}",
        stderr(&resumed)
    );
    assert_eq!(resumed_at_line(&resumed), None);
    assert_whole_and_once(&world, &crowd, &common::json(&resumed));

    // The suppression list changed between two runs: read from the first row too.
    let mut world = slow_world().await;
    let csv = world.with_crowd(&crowd);
    interrupted_run(&world, &csv).await;
    let list = world.path("optout.txt");
    let mut text = std::fs::read_to_string(&list).unwrap();
    text.push_str("010-0000-0000\n");
    std::fs::write(&list, text).unwrap();
    let resumed = world
        .msgsend(&["bulk", "--resume", "spring", "--summary-json", "-"])
        .await;
    assert!(
        stderr(&resumed).contains("the suppression list or the consent column changed"),
        "{}",
        stderr(&resumed)
    );
    assert_whole_and_once(&world, &crowd, &common::json(&resumed));
}

/// `crowd`'s rows written with mixed line ends (CRLF, lone CR, LF), blank lines, names holding
/// quoted newlines, and `extra` more rows repeating earlier phones (duplicates) spread through
/// the file. Returns the CSV text and how many duplicates it adds.
fn awkward_csv(crowd: &Crowd) -> (String, u64) {
    let mut rows: Vec<[String; 4]> = crowd.rows.clone();
    let mut added = 0;
    // Phones repeated far after their first row, and twice after it: some before, some after
    // the point, in both runs' reading ahead.
    for (at, of) in [
        (150, 10),
        (220, 10),
        (260, 200),
        (280, 200),
        (290, 240),
        (295, 11),
    ] {
        let mut row = rows[of].clone();
        row[0] = format!("다시{of}");
        rows.insert(at, row);
        added += 1;
    }
    let mut text = String::from("\u{feff}name,phone,birth_date,city\r\n");
    for (i, row) in rows.iter().enumerate() {
        let name = if i % 13 == 0 {
            format!("\"{}\r\n줄\n\r둘\"", row[0])
        } else {
            row[0].clone()
        };
        let phone = if row[1].contains(' ') {
            format!("\"{}\"", row[1])
        } else {
            row[1].clone()
        };
        text.push_str(&format!("{name},{phone},{},{}", row[2], row[3]));
        text.push_str(match i % 7 {
            0 => "\r",
            3 => "\n",
            _ => "\r\n",
        });
        if i % 17 == 5 {
            text.push_str(if i % 2 == 0 { "\r\n" } else { "\n  \n" });
        }
    }
    text.pop(); // no final line end
    if text.ends_with('\r') {
        text.pop();
    }
    (text, added)
}

/// Waits until the sandbox recorded `n` messages (or the child exited).
async fn wait_recorded(world: &World, child: &mut std::process::Child, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while world.recorded().len() < n {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        assert!(Instant::now() < deadline, "the campaign did not get going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn dry_run_count(output: &Output, label: &str) -> u64 {
    let text = stdout(output);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label} in {text}\n{}", stderr(output)));
    line.split_whitespace().last().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn chained_kills_of_an_awkward_file_send_nobody_twice_and_count_the_whole_file() {
    let crowd = crowd(300);
    let mut world = slow_world().await;
    let csv = world.with_crowd(&crowd);
    let (text, added) = awkward_csv(&crowd);
    std::fs::write(&csv, text).unwrap();
    let mut child = world
        .command(&common::campaign_args(
            &csv,
            &["--job-id", "spring", "--summary-json", "-"],
        ))
        .spawn()
        .unwrap();
    let mut resumed_lines = Vec::new();
    for (k, threshold) in [45usize, 95, 150, 200].into_iter().enumerate() {
        wait_recorded(&world, &mut child, threshold).await;
        common::signal(child.id(), if k == 2 { "TERM" } else { "KILL" });
        let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap();
        if k > 0 {
            resumed_lines.push(resumed_at_line(&out));
        }
        child = world
            .command(&["bulk", "--resume", "spring", "--summary-json", "-"])
            .spawn()
            .unwrap();
    }
    common::signal(child.id(), "KILL");
    let _ = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await;
    let dry = world
        .msgsend(&["bulk", "--resume", "spring", "--dry-run"])
        .await;
    let last = world
        .msgsend(&["bulk", "--resume", "spring", "--summary-json", "-"])
        .await;
    resumed_lines.push(resumed_at_line(&last));
    eprintln!("resumed at {resumed_lines:?}\n{}", stderr(&last));
    let summary = common::json(&last);
    assert_whole_counts(&crowd, added, &summary);
    for (label, key) in [
        ("total read", "total"),
        ("invalid", "invalid"),
        ("duplicate", "duplicate"),
        ("suppressed", "suppressed"),
    ] {
        assert_eq!(
            serde_json::json!(dry_run_count(&dry, label)),
            summary[key],
            "dry run {label}: {}",
            stdout(&dry)
        );
    }
    let mut received: BTreeMap<String, usize> = BTreeMap::new();
    for message in world.recorded() {
        *received.entry(message.phone).or_default() += 1;
    }
    common::assert_never_twice(&received);
    for phone in received.keys() {
        assert!(crowd.eligible.contains(phone), "{phone} is not eligible");
    }
    let missing = crowd
        .eligible
        .iter()
        .filter(|p| !received.contains_key(*p))
        .count();
    assert!(
        missing as u64 <= summary["uncertain"].as_u64().unwrap(),
        "{missing} eligible never received, {summary}"
    );
    assert!(
        resumed_lines.iter().flatten().count() >= 2,
        "{resumed_lines:?}"
    );
}

/// Sets job `spring`'s resume point to what `change` makes of it.
async fn tamper(world: &World, change: impl FnOnce(&mut serde_json::Value)) {
    use sqlx::ConnectOptions as _;
    let mut db = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(world.path("state/journal.sqlite"))
        .connect()
        .await
        .unwrap();
    let text: String = sqlx::query_scalar("SELECT resume_point FROM jobs WHERE id = 'spring'")
        .fetch_one(&mut db)
        .await
        .unwrap();
    let mut point: serde_json::Value = serde_json::from_str(&text).unwrap();
    change(&mut point);
    sqlx::query("UPDATE jobs SET resume_point = $1 WHERE id = 'spring'")
        .bind(point.to_string())
        .execute(&mut db)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_resume_point_neither_panics_nor_skips_anyone() {
    let crowd = crowd(300);
    for (case, change) in [
        (
            "beyond the file",
            Box::new(|p: &mut serde_json::Value| {
                p["start"]["at"]["byte"] = serde_json::json!(u64::MAX)
            }) as Box<dyn FnOnce(&mut serde_json::Value)>,
        ),
        (
            "line 0",
            Box::new(|p: &mut serde_json::Value| p["start"]["line"] = serde_json::json!(0)),
        ),
        (
            "huge line",
            Box::new(|p: &mut serde_json::Value| p["start"]["line"] = serde_json::json!(u64::MAX)),
        ),
        (
            "huge counts",
            Box::new(|p: &mut serde_json::Value| {
                p["counts"]["total"] = serde_json::json!(u64::MAX);
                p["in_range"] = serde_json::json!(u64::MAX);
            }),
        ),
        (
            "inside a row",
            Box::new(|p: &mut serde_json::Value| {
                let b = p["start"]["at"]["byte"].as_u64().unwrap();
                p["start"]["at"]["byte"] = serde_json::json!(b + 3);
            }),
        ),
        (
            "not json",
            Box::new(|p: &mut serde_json::Value| *p = serde_json::json!("garbage")),
        ),
    ] {
        let mut world = slow_world().await;
        let csv = world.with_crowd(&crowd);
        interrupted_run(&world, &csv).await;
        tamper(&world, change).await;
        let resumed = world
            .msgsend(&["bulk", "--resume", "spring", "--summary-json", "-"])
            .await;
        assert!(
            !stderr(&resumed).contains("panicked"),
            "{case}: {}",
            stderr(&resumed)
        );
        let mut received: BTreeMap<String, usize> = BTreeMap::new();
        for message in world.recorded() {
            *received.entry(message.phone).or_default() += 1;
        }
        common::assert_never_twice(&received);
        let got: Vec<&String> = received.keys().collect();
        let eligible: Vec<&String> = crowd.eligible.iter().collect();
        assert_eq!(got, eligible, "{case}: {}", stderr(&resumed));
        eprintln!("{case}: {}", stdout(&resumed));
    }
}
