//! SPEC section 10 through the binary against the sandbox: ads composed on both channels, the
//! consent window at its edges, marker variants refused, the night rule (an injected clock),
//! SMS measured in EUC-KR bytes (KS X 1001 only), prices, the budget and the deadline. The
//! binary runs with a `timezone` in which it is daytime now, so an ad is not refused for the
//! hour the test happens to run at; the night itself is tested in-process with the clock set.

mod common;

use common::clock::{bulk, run_at, send, seoul};
use common::{World, born, count, json, stderr, stdout};
use jiff::civil::Date;
use jiff::{Span, Timestamp};
use msgsend::error::ExitStatus;

const SENDER: &str = "현대오토에버";
const OPT_OUT: &str = "무료수신거부 080-123-4567";

/// A fixed-offset zone in which it is about 13:00 now (`Etc/GMT-X` is UTC+X), and today there:
/// the campaign's date of a run started now.
fn daytime() -> (String, Date) {
    zone_at(13)
}

/// A fixed-offset zone in which the hour is `hour` now (0–13), and today there.
fn zone_at(hour: i32) -> (String, Date) {
    let utc_hour = i32::from(Timestamp::now().in_tz("UTC").unwrap().hour());
    let offset = (hour - utc_hour + 36) % 24 - 12; // -12 ..= 11
    let name = if offset >= 0 {
        format!("Etc/GMT-{offset}")
    } else {
        format!("Etc/GMT+{}", -offset)
    };
    let today = Timestamp::now().in_tz(&name).unwrap().date();
    (name, today)
}

/// A world whose config sends ads by day: the daytime zone, a sender and an opt-out line.
async fn ad_world(adjust: impl FnOnce(&mut msgsend::sandbox::SandboxConfig)) -> (World, Date) {
    let mut world = World::start(adjust).await;
    let (zone, today) = daytime();
    world
        .set("timezone", zone)
        .set("message.sender", SENDER)
        .set("message.opt_out", OPT_OUT);
    (world, today)
}

fn days_before(date: Date, years: i16, days: i64) -> String {
    date.checked_sub(Span::new().years(years))
        .unwrap()
        .checked_sub(Span::new().days(days))
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ad_is_framed_on_both_channels_and_goes_only_to_recipients_whose_consent_holds() {
    let (world, today) = ad_world(|config| {
        // One consenting recipient falls back to SMS: the frame goes on both channels.
        config.kakaotalk.faults.reject_phones = ["010-1000-0002".to_string()].into();
    })
    .await;
    let age = born(25);
    let rows = [
        ("given", "010-1000-0001", days_before(today, 1, 0)),
        ("fallback", "010-1000-0002", days_before(today, 0, 3)),
        // Two years and a day less than two years: still valid; exactly two years: expired.
        ("edge-in", "010-1000-0003", days_before(today, 2, -1)),
        ("edge-out", "010-1000-0004", days_before(today, 2, 0)),
        ("old", "010-1000-0005", days_before(today, 2, 1)),
        ("empty", "010-1000-0006", String::new()),
        ("garbled", "010-1000-0007", "2025/03/01".to_string()),
        ("future", "010-1000-0008", days_before(today, 0, -1)),
    ];
    let mut csv = "name,phone,birth_date,ad_consent_at\n".to_string();
    for (name, phone, consent) in &rows {
        csv.push_str(&format!("{name},{phone},{age},{consent}\n"));
    }
    std::fs::write(world.path("ads.csv"), csv).unwrap();
    let path = world.path("ads.csv").display().to_string();
    let output = world
        .msgsend(&common::csv_bulk_args(
            &path,
            &[
                "--message",
                "{name}님 쿠폰",
                "--kind",
                "ad",
                "--summary-json",
                "-",
            ],
        ))
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let summary = json(&output);
    assert_eq!(summary["sent"], 2, "{summary}");
    assert_eq!(summary["fallback"], 1, "{summary}");
    assert_eq!(summary["suppressed"], 5, "{summary}");
    assert_eq!(summary["suppressed_by_reason"]["consent_expired"], 2);
    assert_eq!(summary["suppressed_by_reason"]["no_consent"], 3);
    assert_eq!(summary["suppressed_by_reason"]["suppression_list"], 0);
    let mut recorded = world.recorded();
    recorded.sort_by(|a, b| a.phone.cmp(&b.phone));
    let phones: Vec<&str> = recorded.iter().map(|m| m.phone.as_str()).collect();
    assert_eq!(phones, ["010-1000-0001", "010-1000-0002", "010-1000-0003"]);
    for message in &recorded {
        let name = rows.iter().find(|r| r.1 == message.phone).unwrap().0;
        assert_eq!(
            message.message,
            format!(
                "(광고) {SENDER}\n{name}님, 안녕하세요. 현대 오토에버입니다.\n{name}님 쿠폰\n{OPT_OUT}"
            )
        );
    }
    assert_eq!(recorded[1].provider, "sms");

    // `status` shows the same reasons.
    let job = summary["job_id"].as_str().unwrap();
    let status = world.msgsend(&["status", job, "--json"]).await;
    let status = json(&status);
    assert_eq!(status["suppressed_by_reason"]["no_consent"], 3);
    assert_eq!(status["kind"], "ad");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_info_campaign_ignores_consent_and_an_ad_source_without_the_column_exits_1() {
    let (mut world, _) = ad_world(|_| {}).await;
    let csv = world.path("people.csv");
    std::fs::write(&csv, common::people_csv("2000", 3, "\n")).unwrap();
    let csv = csv.display().to_string();
    let info = world.msgsend(&common::campaign_args(&csv, &[])).await;
    assert_eq!(info.status.code(), Some(0), "{}", stderr(&info));
    assert_eq!(world.recorded().len(), 3);

    let ad = world
        .msgsend(&common::campaign_args(&csv, &["--kind", "ad"]))
        .await;
    assert_eq!(ad.status.code(), Some(1), "{}", stderr(&ad));
    assert!(stderr(&ad).contains("ad_consent_at"), "{}", stderr(&ad));
    assert_eq!(world.recorded().len(), 3, "nothing more sent");
    // A consent column of another name, configured, is what an ad looks for.
    world.set("source.consent_column", "agreed");
    let named = world
        .msgsend(&common::campaign_args(&csv, &["--kind", "ad", "--dry-run"]))
        .await;
    assert_eq!(named.status.code(), Some(1));
    assert!(stderr(&named).contains("`agreed`"), "{}", stderr(&named));
}

#[tokio::test(flavor = "multi_thread")]
async fn ad_markers_and_missing_ad_lines_are_usage_errors_with_nothing_sent() {
    let (mut world, _) = ad_world(|_| {}).await;
    let csv = world.path("people.csv");
    std::fs::write(&csv, common::people_csv("3000", 2, "\n")).unwrap();
    let csv = csv.display().to_string();
    for marked in [
        "(광고) 세일",
        "[광고] 세일",
        "(광 고)세일",
        "(AD) sale",
        " <광고> x",
    ] {
        for kind in ["info", "ad"] {
            let bulk = world
                .msgsend(&common::csv_bulk_args(
                    &csv,
                    &["--message", marked, "--kind", kind],
                ))
                .await;
            assert_eq!(
                bulk.status.code(),
                Some(2),
                "{marked} {kind}: {}",
                stderr(&bulk)
            );
            assert!(stderr(&bulk).contains("marker"), "{}", stderr(&bulk));
            let refused = world
                .msgsend(&[
                    "send",
                    "--to",
                    "01012345678",
                    "--name",
                    "A",
                    "--message",
                    marked,
                    "--kind",
                    kind,
                ])
                .await;
            assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
        }
    }
    let sent_before = world.recorded().len();
    // A marker in the header is refused when the config is read.
    world.set("message.header", "[광고] {name}님");
    let header = world.msgsend(&common::campaign_args(&csv, &[])).await;
    assert_eq!(header.status.code(), Some(2));
    assert!(
        stderr(&header).contains("message.header"),
        "{}",
        stderr(&header)
    );
    world.set("message.header", "{name}님");
    // An ad needs its sender and opt-out line; an opt-out line needs a number of 8 digits.
    world.config["message"]
        .as_table_mut()
        .unwrap()
        .remove("opt_out");
    let no_opt_out = world
        .msgsend(&common::campaign_args(&csv, &["--kind", "ad"]))
        .await;
    assert_eq!(no_opt_out.status.code(), Some(2));
    assert!(
        stderr(&no_opt_out).contains("opt_out"),
        "{}",
        stderr(&no_opt_out)
    );
    world.set("message.opt_out", "수신거부 080-12-34");
    let short_number = world.msgsend(&common::campaign_args(&csv, &[])).await;
    assert_eq!(short_number.status.code(), Some(2));
    assert!(
        stderr(&short_number).contains("8 digits"),
        "{}",
        stderr(&short_number)
    );
    world.set("message.opt_out", OPT_OUT);
    world.set("message.kind", "ad");
    world.config["message"]
        .as_table_mut()
        .unwrap()
        .remove("sender");
    let no_sender = world.msgsend(&common::send_hi_args(&[])).await;
    assert_eq!(no_sender.status.code(), Some(2));
    assert_eq!(
        world.recorded().len(),
        sent_before,
        "nothing sent by a refused command"
    );
}

/// A world in Seoul with every recipient consenting.
async fn seoul_ad_world(n: usize) -> (World, String) {
    let mut world = World::start(|config| config.kakaotalk.rate = "10/s".parse().unwrap()).await;
    world
        .set("providers.kakaotalk.rate_limit", "10/s")
        .set("message.sender", SENDER)
        .set("message.opt_out", OPT_OUT);
    let consent = days_before(common::crowd::today_in_seoul(), 0, 30);
    let mut csv = "name,phone,birth_date,ad_consent_at\n".to_string();
    for i in 0..n {
        csv.push_str(&format!("p{i},010-4000-{i:04},{},{consent}\n", born(25)));
    }
    std::fs::write(world.path("ads.csv"), csv).unwrap();
    let path = world.path("ads.csv").display().to_string();
    (world, path)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ad_never_goes_out_from_21_to_8_whatever_quiet_hours_say() {
    let (world, csv) = seoul_ad_world(40).await;
    let settings = world.settings();
    let ad = |id: &str| {
        bulk(&[
            "--age-group",
            "20s",
            "--csv",
            &csv,
            "--message",
            "쿠폰",
            "--kind",
            "ad",
            "--ignore-quiet-hours",
            "--job-id",
            id,
        ])
    };
    // 21:00 and 07:59: refused, nothing sent, even with --ignore-quiet-hours.
    for (time, id) in [("21:00:00", "at-nine"), ("07:59:00", "before-eight")] {
        assert_eq!(
            run_at(&settings, ad(id), time).await,
            ExitStatus::Paused,
            "{time}"
        );
        assert_eq!(world.recorded().len(), 0, "{time}");
    }
    // 20:59:58: starts, then pauses at 21:00 (10/s: 40 recipients take 4 s).
    assert_eq!(
        run_at(&settings, ad("evening"), "20:59:58").await,
        ExitStatus::Paused
    );
    let before = world.recorded().len();
    assert!(before > 0 && before < 40, "{before}");
    // 08:00: the resume finishes it, nobody twice.
    let status = run_at(&settings, bulk(&["--resume", "evening"]), "08:00:00").await;
    assert_eq!(status, ExitStatus::Success);
    let mut phones: Vec<String> = world.recorded().into_iter().map(|m| m.phone).collect();
    phones.sort();
    phones.dedup();
    assert_eq!(phones.len(), 40);
    assert_eq!(world.recorded().len(), 40);

    // An info campaign at 21:00 with no quiet hours configured is not held back.
    let info = bulk(&[
        "--age-group",
        "20s",
        "--csv",
        &csv,
        "--message",
        "공지",
        "--job-id",
        "info",
    ]);
    assert_eq!(
        run_at(&settings, info, "21:00:00").await,
        ExitStatus::Success
    );

    // `send --kind ad`: exit 75 at night with nothing sent, sent by day.
    let sent = world.recorded().len();
    let one = || {
        send(&[
            "--to",
            "01012345678",
            "--name",
            "A",
            "--message",
            "쿠폰",
            "--kind",
            "ad",
        ])
    };
    let night = msgsend::commands::send::send(&settings, one(), seoul("21:00:00")).await;
    assert_eq!(night.unwrap(), ExitStatus::Paused);
    assert_eq!(world.recorded().len(), sent);
    let day = msgsend::commands::send::send(&settings, one(), seoul("20:59:00")).await;
    assert_eq!(day.unwrap(), ExitStatus::Success);
    let last = world.recorded().pop().unwrap();
    assert_eq!(
        last.message,
        format!("(광고) {SENDER}\nA님, 안녕하세요. 현대 오토에버입니다.\n쿠폰\n{OPT_OUT}")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_of_an_ad_at_night_counts_and_notes_that_a_run_would_pause() {
    let (mut world, csv) = seoul_ad_world(3).await;
    // 02:00 wherever this zone is: night for ads.
    let (zone, _) = zone_at(2);
    world.set("timezone", zone);
    let dry = world
        .msgsend(&common::csv_bulk_args(
            &csv,
            &["--message", "쿠폰", "--kind", "ad", "--dry-run"],
        ))
        .await;
    assert_eq!(dry.status.code(), Some(0), "{}", stderr(&dry));
    assert!(
        stdout(&dry).contains("would pause until 08:00"),
        "{}",
        stdout(&dry)
    );
    assert_eq!(world.recorded().len(), 0);
    let run = world
        .msgsend(&common::csv_bulk_args(
            &csv,
            &["--message", "쿠폰", "--kind", "ad"],
        ))
        .await;
    assert_eq!(run.status.code(), Some(75), "{}", stderr(&run));
    assert_eq!(world.recorded().len(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_sms_is_measured_in_euc_kr_bytes_and_what_it_cannot_carry_goes_by_kakaotalk() {
    let mut world = World::start(|_| {}).await;
    world
        .set("routing.primary", "sms")
        .set("routing.fallback", "kakaotalk")
        .set(
            "providers.sms.price",
            toml::Value::try_from(toml::toml! { short = 9.9
            long = 29.7 })
            .unwrap(),
        )
        .set("providers.kakaotalk.price", 8.4);
    world.config["message"]
        .as_table_mut()
        .unwrap()
        .remove("header");
    // Names of 6 and 7 bytes after an 84-byte body: 90 bytes (short) and 91 (long); an emoji
    // and a CP949-only syllable cannot go by SMS and fall back to KakaoTalk.
    let rows = [
        ("김민준", "010-5000-0001"),
        ("김민준a", "010-5000-0002"),
        ("😀", "010-5000-0003"),
        ("똠이", "010-5000-0004"),
    ];
    let mut csv = "name,phone,birth_date\n".to_string();
    for (name, phone) in rows {
        csv.push_str(&format!("{name},{phone},{}\n", born(25)));
    }
    std::fs::write(world.path("sizes.csv"), csv).unwrap();
    let path = world.path("sizes.csv").display().to_string();
    let body = format!("{}{{name}}", "가".repeat(42)); // 84 bytes + the name
    let dry = world
        .msgsend(&common::csv_bulk_args(
            &path,
            &["--message", &body, "--dry-run"],
        ))
        .await;
    assert_eq!(dry.status.code(), Some(0), "{}", stderr(&dry));
    let printed = stdout(&dry);
    for expected in [
        "sms short",
        "sms long",
        "no sms",
        "99 KRW  if all go by sms",
        "33.6 KRW  if all fall back to kakaotalk",
    ] {
        assert!(printed.contains(expected), "{expected:?} in\n{printed}");
    }
    let output = world
        .msgsend(&common::csv_bulk_args(
            &path,
            &["--message", &body, "--summary-json", "-"],
        ))
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let summary = json(&output);
    assert_eq!(summary["sent"], 2, "{summary}");
    assert_eq!(summary["fallback"], 2, "{summary}");
    assert_eq!(summary["sms_short"], 1);
    assert_eq!(summary["sms_long"], 1);
    assert_eq!(summary["cost"]["sms"], 39.6);
    assert_eq!(summary["cost"]["kakaotalk"], 16.8);
    assert_eq!(summary["cost"]["total"], 56.4);
    assert_eq!(summary["cost"]["currency"], "KRW");
    assert_eq!(summary["expired"], 0);
    // The SMS provider never saw what it could not carry.
    assert_eq!(common::message_requests(&world.sandbox.sms), 2);

    // 2,000 bytes go as one long SMS; 2,001 (1,001 characters, too long for KakaoTalk too) are
    // refused before anything is sent.
    world.set("providers.sms.max_message_length", 3000);
    let fits = "가".repeat(1000);
    let sms_only = |text: &str| {
        common::send_hi_args(&[])
            .into_iter()
            .take(5)
            .map(str::to_string)
            .chain(["--message", text, "--channel", "sms", "--no-fallback"].map(str::to_string))
            .collect::<Vec<String>>()
    };
    let args = sms_only(&fits);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sent = world.msgsend(&args).await;
    assert_eq!(sent.status.code(), Some(0), "{}", stderr(&sent));
    let over = format!("{fits}a");
    let args = sms_only(&over);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let before = count(&world.sandbox.sms.stats.requests);
    let refused = world.msgsend(&args).await;
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr(&refused).contains("2001 EUC-KR bytes, more than its max_message_bytes 2000"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(count(&world.sandbox.sms.stats.requests), before);
    let args = sms_only("똠");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let refused = world.msgsend(&args).await;
    assert!(
        stdout(&refused).contains("not representable in EUC-KR"),
        "{}",
        stdout(&refused)
    );
}

async fn priced_world(n: usize) -> (World, String) {
    let mut world = World::start(|_| {}).await;
    world
        .set("providers.kakaotalk.price", 8.4)
        .set("providers.sms.price", 9.9);
    let csv = world.path("people.csv");
    std::fs::write(&csv, common::people_csv("6000", n, "\n")).unwrap();
    let csv = csv.display().to_string();
    (world, csv)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_budget_stops_the_campaign_exactly_before_it_would_pass_and_a_larger_one_resumes_it() {
    let (world, csv) = priced_world(10).await;
    // 5 × 8.4 = 42: the sixth would pass 42.
    let output = world
        .msgsend(&common::campaign_args(
            &csv,
            &[
                "--max-cost",
                "42",
                "--concurrency",
                "8",
                "--job-id",
                "budget",
                "--summary-json",
                "-",
            ],
        ))
        .await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let summary = json(&output);
    assert_eq!(summary["status"], "ABORTED");
    assert_eq!(summary["reason"], "budget");
    assert_eq!(summary["sent"], 5, "{summary}");
    assert_eq!(summary["cost"]["total"], 42.0);
    assert_eq!(world.recorded().len(), 5);
    // Resumed under the same budget: nothing more fits.
    let same = world
        .msgsend(&["bulk", "--resume", "budget", "--summary-json", "-"])
        .await;
    assert_eq!(same.status.code(), Some(3));
    assert_eq!(world.recorded().len(), 5);
    // A larger budget lets it finish, nobody twice.
    let larger = world
        .msgsend(&[
            "bulk",
            "--resume",
            "budget",
            "--max-cost",
            "100",
            "--summary-json",
            "-",
        ])
        .await;
    assert_eq!(larger.status.code(), Some(0), "{}", stderr(&larger));
    let summary = json(&larger);
    assert_eq!(summary["sent"], 10);
    assert_eq!(summary["cost"]["total"], 84.0);
    assert_eq!(world.recorded().len(), 10);
    // A budget without a price for every channel would spend uncounted.
    let mut unpriced = world;
    unpriced.config["providers"]["sms"]
        .as_table_mut()
        .unwrap()
        .remove("price");
    let refused = unpriced
        .msgsend(&common::campaign_args(&csv, &["--max-cost", "100"]))
        .await;
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_past_its_deadline_sends_nothing_more_and_ends_expired() {
    let (mut world, csv) = priced_world(30).await;
    world.set("providers.kakaotalk.rate_limit", "10/s");
    // Already past: exit 3, EXPIRED, nothing sent.
    let past = world
        .msgsend(&common::campaign_args(
            &csv,
            &["--valid-until", "2020-01-01 09:00", "--job-id", "late"],
        ))
        .await;
    assert_eq!(past.status.code(), Some(3), "{}", stderr(&past));
    assert!(stdout(&past).contains("EXPIRED"), "{}", stdout(&past));
    assert_eq!(world.recorded().len(), 0);
    let again = world.msgsend(&["bulk", "--resume", "late"]).await;
    assert_eq!(again.status.code(), Some(3));
    assert!(stdout(&again).contains("expired") || stdout(&again).contains("EXPIRED"));

    // Passing during the run (10/s, 30 recipients: 3 s; valid for 1 s).
    let output = world
        .msgsend(&common::campaign_args(
            &csv,
            &[
                "--valid-for",
                "1s",
                "--job-id",
                "short",
                "--summary-json",
                "-",
            ],
        ))
        .await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let summary = json(&output);
    assert_eq!(summary["status"], "EXPIRED");
    let sent = summary["sent"].as_u64().unwrap();
    assert!(sent > 0 && sent < 30, "{summary}");
    assert_eq!(summary["expired"].as_u64().unwrap(), 30 - sent, "{summary}");
    assert_eq!(world.recorded().len() as u64, sent);
    let resumed = world.msgsend(&["bulk", "--resume", "short"]).await;
    assert_eq!(resumed.status.code(), Some(3));
    assert_eq!(
        world.recorded().len() as u64,
        sent,
        "nothing sent after the deadline"
    );
    let jobs = world.msgsend(&["jobs"]).await;
    assert!(stdout(&jobs).contains("EXPIRED"), "{}", stdout(&jobs));
    let status = json(&world.msgsend(&["status", "short", "--json"]).await);
    assert!(status["valid_until"].is_string(), "{status}");
    assert_eq!(status["expired"].as_u64().unwrap(), 30 - sent);
}

/// The consent rows of a database test: name, phone, consent (`None`: NULL) and the verdict.
fn consent_rows(today: Date) -> Vec<(&'static str, &'static str, Option<String>)> {
    vec![
        ("given", "010-7000-0001", Some(days_before(today, 1, 0))),
        ("edge-out", "010-7000-0002", Some(days_before(today, 2, 0))),
        ("edge-in", "010-7000-0003", Some(days_before(today, 2, -1))),
        ("null", "010-7000-0004", None),
        ("future", "010-7000-0005", Some(days_before(today, 0, -2))),
    ]
}

/// What a dry run of an ad over `url` with `query` prints.
async fn ad_dry_run(world: &World, url: &str, query: &str) -> String {
    let output = world
        .msgsend(&[
            "bulk",
            "--age-group",
            "20s",
            "--db",
            url,
            "--query",
            query,
            "--message",
            "쿠폰",
            "--kind",
            "ad",
            "--dry-run",
        ])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    stdout(&output)
}

fn assert_consent_counts(printed: &str) {
    let count_of = |label: &str| -> u64 {
        let line = printed
            .lines()
            .find(|line| line.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label} in\n{printed}"));
        line.split_whitespace().last().unwrap().parse().unwrap()
    };
    assert_eq!(count_of("eligible"), 2, "{printed}");
    assert_eq!(count_of("suppressed"), 3, "{printed}");
    assert_eq!(count_of("consent_expired"), 1, "{printed}");
    assert_eq!(count_of("no_consent"), 2, "{printed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn consent_is_judged_alike_for_sqlite_and_postgresql_sources() {
    let (world, today) = ad_world(|_| {}).await;
    let rows = consent_rows(today);
    let path = world.path("users.sqlite");
    let mut db = common::sqlite_file(&path).await;
    sqlx::raw_sql(
        "CREATE TABLE users (name TEXT, phone TEXT, birth_date TEXT, ad_consent_at TEXT)",
    )
    .execute(&mut db)
    .await
    .unwrap();
    for (name, phone, consent) in &rows {
        sqlx::query("INSERT INTO users VALUES ($1, $2, $3, $4)")
            .bind(name)
            .bind(phone)
            .bind(born(25))
            .bind(consent)
            .execute(&mut db)
            .await
            .unwrap();
    }
    let url = format!("sqlite://{}", path.display());
    let query = "SELECT name, phone, birth_date, ad_consent_at FROM users";
    assert_consent_counts(&ad_dry_run(&world, &url, query).await);

    let Some(url) = common::postgres_url() else {
        return;
    };
    use sqlx::ConnectOptions as _;
    use std::str::FromStr as _;
    let mut pg = sqlx::postgres::PgConnectOptions::from_str(&url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let table = format!("consents_{}", std::process::id());
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (name TEXT, phone TEXT, birth_date DATE, ad_consent_at DATE)"
    )))
    .execute(&mut pg)
    .await
    .unwrap();
    for (name, phone, consent) in &rows {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {table} VALUES ($1, $2, $3::date, $4::date)"
        )))
        .bind(name)
        .bind(phone)
        .bind(born(25))
        .bind(consent)
        .execute(&mut pg)
        .await
        .unwrap();
    }
    let query = format!("SELECT name, phone, birth_date, ad_consent_at FROM {table}");
    assert_consent_counts(&ad_dry_run(&world, &url, &query).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_budget_at_high_concurrency_still_sends_every_message_that_fits() {
    let (world, csv) = priced_world(3).await;
    // Two fit (16.8 ≤ 25.19), the third would pass: the two are sent, whatever the concurrency.
    let output = world
        .msgsend(&common::campaign_args(
            &csv,
            &[
                "--max-cost",
                "25.19",
                "--concurrency",
                "50",
                "--summary-json",
                "-",
            ],
        ))
        .await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let summary = json(&output);
    assert_eq!(summary["reason"], "budget");
    assert_eq!(summary["sent"], 2, "{summary}");
    assert_eq!(world.recorded().len(), 2);
    // A larger budget given on resume is the job's from then on (status shows it).
    let job = summary["job_id"].as_str().unwrap().to_string();
    let resumed = world
        .msgsend(&["bulk", "--resume", &job, "--max-cost", "30"])
        .await;
    assert_eq!(resumed.status.code(), Some(0), "{}", stderr(&resumed));
    let status = json(&world.msgsend(&["status", &job, "--json"]).await);
    assert_eq!(status["max_cost"], 30.0, "{status}");
    assert_eq!(status["cost"]["total"], 25.2, "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn markers_hidden_by_width_invisible_characters_or_the_source_are_refused_too() {
    let (mut world, _) = ad_world(|_| {}).await;
    world.config["message"]
        .as_table_mut()
        .unwrap()
        .remove("header");
    for marked in ["（ＡＤ） x", "\u{200b}(광고) x", "{{광고}} x", "((광고)) x"] {
        let refused = world
            .msgsend(&["send", "--to", "01012345678", "--message", marked])
            .await;
        assert_eq!(
            refused.status.code(),
            Some(2),
            "{marked:?}: {}",
            stderr(&refused)
        );
    }
    // A byte-order mark at the start of a message file is not sent (nor hides a marker).
    std::fs::write(world.path("plain.txt"), "\u{feff}봄 세일 안내\n").unwrap();
    std::fs::write(world.path("marked.txt"), "\u{feff}(광고) 세일\n").unwrap();
    let csv = world.path("people.csv");
    let mut rows = common::people_csv("8000", 2, "\n");
    rows.push_str(&format!("(광고),010-8000-0009,{}\n", born(25)));
    std::fs::write(&csv, rows).unwrap();
    let csv = csv.display().to_string();
    let marked_file = world.path("marked.txt").display().to_string();
    let refused = world
        .msgsend(&common::csv_bulk_args(
            &csv,
            &["--message-file", &marked_file],
        ))
        .await;
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert_eq!(world.recorded().len(), 0);
    // A name that is a marker, first in the body: that recipient fails, the others are sent.
    let plain_file = world.path("plain.txt").display().to_string();
    let failed = world.path("failed.csv");
    let output = world
        .msgsend(&common::csv_bulk_args(
            &csv,
            &[
                "--message",
                "{name} 세일",
                "--failed-csv",
                failed.to_str().unwrap(),
                "--summary-json",
                "-",
            ],
        ))
        .await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert_eq!(json(&output)["failed"], 1);
    let failed = std::fs::read_to_string(failed).unwrap();
    assert!(failed.contains("advertising marker"), "{failed}");
    assert!(
        world
            .recorded()
            .iter()
            .all(|m| !m.message.contains("(광고)"))
    );
    let sent = world.recorded().len();
    let output = world
        .msgsend(&common::csv_bulk_args(
            &csv,
            &["--message-file", &plain_file],
        ))
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let recorded = world.recorded();
    assert_eq!(recorded.len(), sent + 3);
    assert!(
        recorded[sent..].iter().all(|m| m.message == "봄 세일 안내"),
        "{recorded:?}"
    );
    // `--retry-failed` keeps the original job's kind: `--kind` with it is a usage error.
    let retry = world
        .msgsend(&["bulk", "--retry-failed", "x", "--kind", "ad"])
        .await;
    assert_eq!(retry.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_refused_at_its_start_still_writes_its_summary_json() {
    let (world, csv) = priced_world(2).await;
    let output = world
        .msgsend(&common::campaign_args(
            &csv,
            &["--valid-for", "0s", "--summary-json", "-"],
        ))
        .await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let summary = json(&output);
    assert_eq!(summary["status"], "EXPIRED");
    assert_eq!(summary["expired"], 0, "nothing was admitted yet");
    assert_eq!(summary["cost"]["total"], 0.0);
    assert!(
        summary["reason"].as_str().unwrap().contains("deadline"),
        "{summary}"
    );
    assert_eq!(world.recorded().len(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_price_that_is_not_a_number_says_what_a_price_looks_like() {
    let mut world = World::start(|_| {}).await;
    world.set("providers.kakaotalk.price", "8.4");
    let output = world.msgsend(&["config", "check"]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("providers.kakaotalk.price"),
        "{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("short = 9.9"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_that_may_have_been_accepted_keeps_its_share_of_the_budget() {
    let (mut world, csv) = {
        let mut world = World::start(|config| {
            // Every KakaoTalk request is held past msgsend's timeout: each ends uncertain.
            config.kakaotalk.faults.stall_rate = 1.0;
            config.kakaotalk.faults.stall_for = std::time::Duration::from_millis(400);
        })
        .await;
        world
            .set("providers.kakaotalk.price", 10)
            .set("providers.sms.price", 10);
        let csv = world.path("people.csv");
        std::fs::write(&csv, common::people_csv("9000", 3, "\n")).unwrap();
        let csv = csv.display().to_string();
        (world, csv)
    };
    world
        .set("providers.kakaotalk.timeout", "150ms")
        .set("providers.kakaotalk.idempotency_header", "");
    let output = world
        .msgsend(&common::campaign_args(
            &csv,
            &[
                "--max-cost",
                "25",
                "--concurrency",
                "3",
                "--summary-json",
                "-",
            ],
        ))
        .await;
    let summary = json(&output);
    // Two may have been accepted (20 of 25): the third would pass 25 if they were.
    assert_eq!(summary["uncertain"], 2, "{summary}");
    assert_eq!(summary["reason"], "budget", "{summary}");
    assert_eq!(summary["cost"]["total"], 0.0, "no 2xx, no recorded cost");
}
