//! Shared test scaffolding: a sandbox on free loopback ports, a config that points at it, and
//! the msgsend binary run against both. Every request goes to 127.0.0.1.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::AtomicU64;

pub mod clock;
pub mod crowd;
pub mod hosts;
pub mod journal;
pub mod postgres;
pub mod receiver;

#[allow(unused_imports)] // not every test binary uses PostgreSQL
pub use postgres::postgres_url;

use msgsend::sandbox::{RecordedMessage, Sandbox, SandboxConfig, SimStats};
use tempfile::TempDir;

pub const KAKAOTALK_PASSWORD: &str = "kakao-pw-7a1c";
pub const SMS_PASSWORD: &str = "sms-pw-93fe";

/// A running sandbox, a scratch directory and a config (as a TOML table) that points at it.
pub struct World {
    pub sandbox: Sandbox,
    pub dir: TempDir,
    pub record: PathBuf,
    pub config: toml::Table,
}

impl World {
    /// Starts the sandbox (changed by `adjust`) on free loopback ports, with a record file and
    /// the test passwords, and a config with fast retries and no jitter.
    pub async fn start(adjust: impl FnOnce(&mut SandboxConfig)) -> World {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("record.jsonl");
        let mut config = SandboxConfig::ephemeral();
        config.kakaotalk.credentials = vec![("autoever".into(), KAKAOTALK_PASSWORD.into())];
        config.sms.credentials = vec![("autoever".into(), SMS_PASSWORD.into())];
        config.kakaotalk.rate = "100/s".parse().unwrap();
        config.sms.rate = "100/s".parse().unwrap();
        config.record = Some(record.clone());
        adjust(&mut config);
        let sandbox = Sandbox::start(config).await.unwrap();
        let config = format!(
            r#"
[providers.kakaotalk]
base_url = "{}"
username = "autoever"
password = "${{KAKAOTALK_PASSWORD}}"
rate_limit = "100/s"
timeout = "2s"

[providers.sms]
base_url = "{}"
username = "autoever"
password = "${{SMS_PASSWORD}}"
rate_limit = "100/s"
timeout = "2s"

# The tests of other features count requests and read failure reasons; the pre-flight's
# probes are tested on their own (tests/preflight.rs) and in tests/mixed_faults.rs.
[routing]
preflight = false

[retry]
max_attempts = 3
initial_delay = "10ms"
max_delay = "50ms"
jitter = false

[message]
header = "{{name}}님, 안녕하세요. 현대 오토에버입니다."
"#,
            sandbox.kakaotalk.base_url(),
            sandbox.sms.base_url()
        );
        let mut config: toml::Table = config.parse().unwrap();
        config.insert(
            "state_dir".into(),
            dir.path().join("state").display().to_string().into(),
        );
        World {
            sandbox,
            dir,
            record,
            config,
        }
    }

    /// Writes `crowd` as `people.csv` and its opt-outs as `optout.txt` (configured as the
    /// suppression list); returns the CSV's path.
    pub fn with_crowd(&mut self, crowd: &crowd::Crowd) -> String {
        let csv = self.path("people.csv");
        crowd.write_csv(&csv);
        crowd.write_suppression(&self.path("optout.txt"));
        let optout = self.path("optout.txt").display().to_string();
        self.set("source.suppression", optout);
        csv.display().to_string()
    }

    /// A path inside the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Sets a config value by dotted path, e.g. `set("retry.max_attempts", 2)`.
    pub fn set(&mut self, path: &str, value: impl Into<toml::Value>) -> &mut Self {
        let mut table = &mut self.config;
        let mut keys: Vec<&str> = path.split('.').collect();
        let last = keys.pop().unwrap();
        for key in keys {
            table = table
                .entry(key)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .unwrap();
        }
        table.insert(last.to_string(), value.into());
        self
    }

    /// Writes the config to `msgsend.toml` in the scratch directory; returns its path.
    pub fn write_config(&self) -> PathBuf {
        let path = self.dir.path().join("msgsend.toml");
        std::fs::write(&path, toml::to_string(&self.config).unwrap()).unwrap();
        path
    }

    /// The config as settings, for in-process tests.
    pub fn settings(&self) -> msgsend::config::Settings {
        // SAFETY: every test sets the same values.
        unsafe {
            std::env::set_var("KAKAOTALK_PASSWORD", KAKAOTALK_PASSWORD);
            std::env::set_var("SMS_PASSWORD", SMS_PASSWORD);
        }
        msgsend::config::parse(
            &self.dir.path().join("msgsend.toml"),
            &toml::to_string(&self.config).unwrap(),
        )
        .unwrap()
    }

    /// The msgsend binary with this world's config and the passwords in its environment, run
    /// in the scratch directory, output captured.
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let config = self.write_config();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_msgsend"));
        command
            .arg("--config")
            .arg(&config)
            .args(args)
            .current_dir(self.dir.path())
            .env("KAKAOTALK_PASSWORD", KAKAOTALK_PASSWORD)
            .env("SMS_PASSWORD", SMS_PASSWORD)
            .env_remove("RUST_LOG")
            .env_remove("MSGSEND_CONFIG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        command
    }

    /// The msgsend binary as run on another "host" named `host` (SPEC section 9): a `HOME`, a
    /// `state_dir` and a config file of its own, the rest of this world's config (its
    /// `state_database` above all) the same.
    pub fn host_command(&self, host: &str, args: &[&str]) -> std::process::Command {
        let home = self.path(host);
        std::fs::create_dir_all(&home).unwrap();
        let mut config = self.config.clone();
        config.insert(
            "state_dir".into(),
            home.join("state").display().to_string().into(),
        );
        let path = home.join("msgsend.toml");
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_msgsend"));
        command
            .arg("--config")
            .arg(&path)
            .args(args)
            .current_dir(&home)
            .env("HOME", &home)
            .env("KAKAOTALK_PASSWORD", KAKAOTALK_PASSWORD)
            .env("SMS_PASSWORD", SMS_PASSWORD)
            .env_remove("RUST_LOG")
            .env_remove("MSGSEND_CONFIG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        command
    }

    /// Runs the msgsend binary to its end (see [`command`](Self::command)).
    pub async fn msgsend(&self, args: &[&str]) -> Output {
        let mut command = self.command(args);
        tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap()
    }

    /// `msgsend send --to 01012345678 --name A --message hi`, then `extra`.
    pub async fn send_hi(&self, extra: &[&str]) -> Output {
        self.msgsend(&send_hi_args(extra)).await
    }

    /// `bulk --age-group 20s --message hi --db URL --query SQL --dry-run`.
    pub async fn dry_run_of_database(&self, url: &str, query: &str) -> Output {
        self.msgsend(&[
            "bulk",
            "--age-group",
            "20s",
            "--message",
            "hi",
            "--db",
            url,
            "--query",
            query,
            "--dry-run",
        ])
        .await
    }

    pub fn recorded(&self) -> Vec<RecordedMessage> {
        if !self.record.exists() {
            return Vec::new();
        }
        RecordedMessage::read_all(&self.record).unwrap()
    }
}

/// The message requests a simulated provider received: every request but the health probes
/// (the pre-flight's, and the one a circuit makes when it opens).
pub fn message_requests(sim: &msgsend::sandbox::ProviderSim) -> u64 {
    count(&sim.stats.requests) - count(&sim.stats.health_checks)
}

/// A birth date that makes someone `age` on the campaign's date (Seoul, today).
pub fn born(age: i16) -> String {
    crowd::today_in_seoul()
        .checked_sub(jiff::Span::new().years(age))
        .unwrap()
        .to_string()
}

/// A CSV of `n` people aged 25, phones `010-{block}-0000` onwards, lines ended by `line_end`.
pub fn people_csv(block: &str, n: usize, line_end: &str) -> String {
    let mut text = format!("name,phone,birth_date{line_end}");
    for i in 0..n {
        text.push_str(&format!("p{i},010-{block}-{i:04},{}{line_end}", born(25)));
    }
    text
}

/// A SQLite file, created when missing, to write a test source into.
pub async fn sqlite_file(path: &std::path::Path) -> sqlx::SqliteConnection {
    use sqlx::ConnectOptions as _;
    sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap()
}

/// Runs a prepared command (`World::command` changed by the test) to its end.
pub async fn output_of(mut command: std::process::Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

/// Sends the signal `name` (`TERM`, `INT`, `KILL`) to `pid` with the system's `kill`.
pub fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

pub fn count(counter: &AtomicU64) -> u64 {
    SimStats::get(counter)
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The `--json` result of `send`.
pub fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(output), stderr(output)))
}

/// The password of the test PostgreSQL role that `.ci/run` creates; tests check it never shows.
pub const POSTGRES_TEST_PASSWORD: &str = "pg-test-pw-51d2";

/// Checks a Prometheus text exposition with `promtool check metrics` (Debian's `prometheus`
/// package, which `.ci/run` installs). Without promtool the check is skipped, loudly, unless
/// `MSGSEND_REQUIRE_PROMTOOL=1` (set by `.ci/run`) makes that a failure.
pub fn promtool_check(exposition: &str) {
    use std::io::Write as _;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(_) => {
            let required = std::env::var("MSGSEND_REQUIRE_PROMTOOL").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "MSGSEND_REQUIRE_PROMTOOL=1 but promtool is not installed"
            );
            eprintln!("SKIPPED: promtool not found (install Debian's prometheus, as .ci/run does)");
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}\n{exposition}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `send --to 01012345678 --name A --message hi`, then `extra`.
pub fn send_hi_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "send",
        "--to",
        "01012345678",
        "--name",
        "A",
        "--message",
        "hi",
    ];
    args.extend_from_slice(extra);
    args
}

/// `bulk --age-group 20s --csv CSV --message hi`, then `extra`.
pub fn campaign_args<'a>(csv: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = csv_bulk_args(csv, &["--message", "hi"]);
    args.extend_from_slice(extra);
    args
}

/// `bulk --age-group 20s --csv CSV`, then `extra` (which gives the message).
pub fn csv_bulk_args<'a>(csv: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["bulk", "--age-group", "20s", "--csv", csv];
    args.extend_from_slice(extra);
    args
}

/// Runs a campaign to `recipients` people against a sandbox changed by `faults` and config
/// `settings`; checks it ended `DONE` with every eligible recipient in one state, and returns
/// the world, the crowd, the summary and how often each phone was received.
pub async fn campaign_under(
    recipients: usize,
    faults: impl FnOnce(&mut SandboxConfig),
    settings: &[(&str, toml::Value)],
) -> (
    World,
    crowd::Crowd,
    serde_json::Value,
    std::collections::BTreeMap<String, usize>,
) {
    let crowd = crowd::crowd(recipients);
    let mut world = World::start(faults).await;
    for (key, value) in settings {
        world.set(key, value.clone());
    }
    let csv = world.with_crowd(&crowd);
    let output = world
        .msgsend(&campaign_args(&csv, &["--summary-json", "-"]))
        .await;
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("no summary ({e}): {}", stderr(&output)));
    assert_eq!(summary["status"], "DONE", "{}", stderr(&output));
    let ended = ["sent", "fallback", "failed", "uncertain"]
        .iter()
        .map(|key| summary[key].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(ended, crowd.eligible.len() as u64, "{summary}");
    let mut received = std::collections::BTreeMap::new();
    for message in world.recorded() {
        *received.entry(message.phone).or_insert(0) += 1;
    }
    (world, crowd, summary, received)
}

pub fn assert_never_twice(received: &std::collections::BTreeMap<String, usize>) {
    for (phone, times) in received {
        assert_eq!(*times, 1, "{phone} received {times} times");
    }
}
