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

fn summary(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "no summary JSON ({e}):\n{}\n{}",
            stdout(output),
            stderr(output)
        )
    })
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
    summary(&first)
}

/// The whole file's counts, everyone eligible once, nobody else.
fn assert_whole_and_once(world: &World, crowd: &Crowd, summary: &serde_json::Value) {
    assert_eq!(summary["status"], "DONE", "{summary}");
    assert_eq!(summary["total"], crowd.total(), "{summary}");
    assert_eq!(summary["invalid"], crowd.invalid, "{summary}");
    assert_eq!(summary["duplicate"], crowd.duplicate, "{summary}");
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
    assert_whole_and_once(&world, &crowd, &summary(&resumed));
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
    assert_whole_and_once(&world, &crowd, &summary(&resumed));

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
    assert_whole_and_once(&world, &crowd, &summary(&resumed));
}
