//! What must never leave the process: passwords and resident registration numbers, in any
//! output, log or file a full campaign writes; phones only masked in logs; formula-looking
//! cells defused in `--failed-csv`; warnings for configs that expose secrets.

mod common;

use std::path::Path;

use common::{KAKAOTALK_PASSWORD, SMS_PASSWORD, World, stderr, stdout};

/// Every file under `dir` (recursively), as bytes, except those named in `skip`.
fn files_under(dir: &Path, skip: &[&Path]) -> Vec<(String, Vec<u8>)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if skip.contains(&path.as_path()) {
            continue;
        }
        if path.is_dir() {
            found.extend(files_under(&path, skip));
        } else {
            found.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread")]
async fn no_password_or_rrn_leaves_the_process_and_logs_mask_phones() {
    let today = common::crowd::today_in_seoul();
    // name, phone, rrn (born 25 years ago), city. One name is a spreadsheet formula.
    let yymmdd = |years: i16| {
        let born = today.checked_sub(jiff::Span::new().years(years)).unwrap();
        format!(
            "{:02}{:02}{:02}",
            born.year() % 100,
            born.month(),
            born.day()
        )
    };
    let people = [
        (
            "김하나",
            "010-7000-0001",
            format!("{}-4123456", yymmdd(25)),
            "서울",
        ),
        (
            "이둘",
            "010-7000-0002",
            format!("{}-3987654", yymmdd(22)),
            "부산",
        ),
        (
            "=HYPERLINK(\"http://x\")",
            "010-7000-0003",
            format!("{}2555555", yymmdd(27)),
            "대구",
        ),
        (
            "박넷",
            "010-7000-0004",
            format!("{}-1222222", yymmdd(45)),
            "인천",
        ),
    ];
    let mut csv = String::from("name,phone,rrn,city\n");
    for (name, phone, rrn, city) in &people {
        csv.push_str(&format!(
            "\"{}\",{phone},{rrn},{city}\n",
            name.replace('"', "\"\"")
        ));
    }
    let rejected = "010-7000-0003";
    let mut world = World::start(|config| {
        config.kakaotalk.faults.reject_phones = [rejected.to_string()].into();
    })
    .await;
    world
        .sandbox
        .sms
        .control
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    std::fs::write(world.path("people.csv"), csv).unwrap();
    std::fs::create_dir_all(world.path("out")).unwrap();
    world
        .set(
            "metrics.textfile",
            world.path("out/msgsend.prom").display().to_string(),
        )
        .set("circuit_breaker.failure_threshold", 100);
    let output = world
        .msgsend(&[
            "-vv",
            "bulk",
            "--age-group",
            "20s",
            "--csv",
            "people.csv",
            "--message",
            "{name}님 {city}",
            "--job-id",
            "private",
            "--summary-json",
            "out/summary.json",
            "--failed-csv",
            "out/failed.csv",
        ])
        .await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert_eq!(
        world.recorded().len(),
        2,
        "the two in their 20s KakaoTalk takes"
    );

    let status = world.msgsend(&["status", "private", "--json"]).await;
    let jobs = world.msgsend(&["jobs"]).await;
    let check = world.msgsend(&["config", "check"]).await;
    let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, out) in [
        ("bulk", &output),
        ("status", &status),
        ("jobs", &jobs),
        ("check", &check),
    ] {
        outputs.push((format!("{name} stdout"), out.stdout.clone()));
        outputs.push((format!("{name} stderr"), out.stderr.clone()));
    }
    // Every file msgsend wrote: journal (and its WAL), lock, summary, failed CSV, metrics.
    let inputs = [
        world.path("people.csv"),
        world.path("msgsend.toml"),
        world.record.clone(),
    ];
    let skip: Vec<&Path> = inputs.iter().map(|p| p.as_path()).collect();
    outputs.extend(files_under(world.dir.path(), &skip));
    assert!(
        outputs
            .iter()
            .any(|(name, _)| name.ends_with("journal.sqlite"))
    );

    for (name, bytes) in &outputs {
        for secret in [KAKAOTALK_PASSWORD, SMS_PASSWORD] {
            assert!(!contains(bytes, secret), "a password in {name}");
        }
        for (_, _, rrn, _) in &people {
            assert!(!contains(bytes, rrn), "an rrn in {name}");
            assert!(!contains(bytes, &rrn.replace('-', "")), "an rrn in {name}");
            assert!(
                !contains(bytes, &rrn[7..]),
                "an rrn's last digits in {name}"
            );
        }
    }
    // Logs show phones masked only.
    let log = stderr(&output);
    for (_, phone, _, _) in &people {
        assert!(!log.contains(phone), "{phone} in the log");
    }
    assert!(log.contains("010-****-0003"), "{log}");

    // The formula-looking name is defused in the failed CSV.
    let failed = std::fs::read_to_string(world.path("out/failed.csv")).unwrap();
    assert!(
        failed.contains("\"'=HYPERLINK(\"\"http://x\"\")\""),
        "{failed}"
    );
    assert!(!failed.contains(",=HYPERLINK"), "{failed}");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn configs_that_expose_secrets_are_warned_about() {
    use std::os::unix::fs::PermissionsExt as _;
    let mut world = World::start(|_| {}).await;
    world
        .set("providers.kakaotalk.base_url", "http://kakao.example.com")
        .set("providers.sms.password", "literal-sms-secret");
    let config = world.write_config();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut command = world.command(&["config", "check"]);
    // `command` rewrote the file: set the mode again before running.
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let log = stderr(&output);
    assert!(
        log.contains("providers.kakaotalk.base_url uses plain http to kakao.example.com"),
        "{log}"
    );
    assert!(
        log.contains("holds a password in clear and other users can read it"),
        "{log}"
    );
    assert!(!log.contains("literal-sms-secret") && !stdout(&output).contains("literal-sms-secret"));
    // The sandbox on loopback over http is fine.
    assert!(!log.contains("providers.sms.base_url"), "{log}");

    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut command = world.command(&["config", "check"]);
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let private = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(!stderr(&private).contains("other users can read it"));
}
