//! The campaign benchmark (issue 6): msgsend against the sandbox on 127.0.0.1, measured side by
//! side in one run and reported as ratios. Sections (all by default, or name them):
//!
//! - `overhead`: an N-recipient CSV with the sandbox's limits far above what loopback carries,
//!   journal on, at concurrency 64 and 256; beside it, the ceiling: a bare reqwest loop (this
//!   binary re-run as a child with `--ceiling-child`) POSTing the same messages to the same
//!   sandbox at the same concurrency. msgsend ÷ ceiling.
//! - `memory`: peak RSS (`VmHWM`, polled) of `bulk` over 100 k and 1 M CSV rows, and 30 M in a
//!   full run only (not with `--quick` or `--scale`).
//! - `resume`: a 10 M-row job interrupted (SIGTERM) at half and resumed, from a CSV file and from
//!   PostgreSQL: the time from `--resume` to its first send, and both runs' peak RSS (the 10 M
//!   memory point).
//! - `postgres`: peak RSS over 100 k, 1 M and 10 M PostgreSQL rows. This and `resume`'s
//!   PostgreSQL half need MSGSEND_BENCH_POSTGRES_URL (or MSGSEND_TEST_POSTGRES_URL); skipped
//!   without one.
//! - `pacing`: strict sliding windows of 50/s and 250/s, config equal: achieved ÷ quota in the
//!   steady state (the rate between 10 % and 90 % of the messages accepted), and the 429s.
//! - `shared`: two processes on one credential (50/s, strict), one `state_dir`: a `bulk` and,
//!   beside it, `send` after `send` on the same credential. Combined steady rate (between 10 %
//!   and 90 % of the messages accepted) ÷ quota, and the 429s (SPEC section 8: the quota
//!   ledger is shared).
//! - `spillover`: KakaoTalk 50/s + SMS 100/s, `--strategy spillover`, at three `concurrency` /
//!   `acquire_timeout` settings (8 / 5 s, 64 / 100 ms, 512 / 1 s): campaign time ÷ (N / sum of
//!   quotas), the steady rate ÷ the sum, and each channel's share.
//! - `pooling`: 1, 2 and 4 KakaoTalk credentials of 50/s each: steady rate ÷ the one's.
//! - `hosts` (SPEC section 9; needs a PostgreSQL URL like `postgres`): the same campaign with
//!   the state in SQLite (`state_dir`) and in PostgreSQL (`state_database`), alternating, at
//!   concurrency 64: PostgreSQL ÷ SQLite; then one job worked by 1, 2 and 4 processes (a
//!   leader and `--join`ed runs) on one state database: recipients per second, and the
//!   database's transactions per recipient.
//!
//! `MSGSEND_BENCH_WRAP="perf record -g -o FILE --"` runs every msgsend under a profiler;
//! `MSGSEND_BENCH_STATE_DIR=DIR` keeps the journals in DIR (`/dev/shm`: commits without fsync).
//! `--scale F` multiplies the full sizes (`--scale 0.1`: a tenth of every N, for a quicker look).
//! `--quick` runs every section small (seconds): CI runs it for correctness only. It fails on a
//! correctness break (a 429, a message delivered twice or not at all, a run that did not end
//! as it should), never on a time. Run: `cargo bench --bench campaign [-- --quick] [SECTION…]`.

use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use msgsend::delivery::MessageKey;
use msgsend::phone::Phone;
use msgsend::provider::ProviderKind;
use msgsend::sandbox::{Sandbox, SandboxConfig, SimStats};

const SECTIONS: [&str; 9] = [
    "overhead",
    "memory",
    "resume",
    "postgres",
    "pacing",
    "shared",
    "spillover",
    "pooling",
    "hosts",
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--ceiling-child") {
        return ceiling_child(&args[1..]);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let scale: f64 = args.iter().position(|a| a == "--scale").map_or(1.0, |i| {
        args.get(i + 1)
            .and_then(|f| f.parse().ok())
            .expect("--scale F")
    });
    let named: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--") && a.parse::<f64>().is_err())
        .collect();
    for name in &named {
        assert!(
            SECTIONS.contains(name),
            "unknown section {name:?}; sections: {SECTIONS:?}"
        );
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mut bench = Bench {
        runtime,
        quick,
        scale,
        dir: tempfile::Builder::new()
            .prefix("msgsend-bench.")
            .tempdir()
            .expect("scratch directory"),
        failures: Vec::new(),
    };
    describe_machine();
    for section in SECTIONS {
        if !named.is_empty() && !named.contains(&section) {
            continue;
        }
        println!("\n== {section}{}", if quick { " (quick)" } else { "" });
        match section {
            "overhead" => bench.overhead(),
            "memory" => bench.memory(),
            "resume" => bench.resume(),
            "postgres" => bench.postgres(),
            "pacing" => bench.pacing(),
            "shared" => bench.shared(),
            "spillover" => bench.spillover(),
            "pooling" => bench.pooling(),
            "hosts" => bench.hosts(),
            _ => unreachable!(),
        }
    }
    if bench.failures.is_empty() {
        println!("\nno correctness failure");
    } else {
        println!("\nCORRECTNESS FAILURES:");
        for failure in &bench.failures {
            println!("  - {failure}");
        }
        std::process::exit(1);
    }
}

struct Bench {
    runtime: tokio::runtime::Runtime,
    quick: bool,
    /// Multiplies the full sizes (`--scale`).
    scale: f64,
    dir: tempfile::TempDir,
    failures: Vec<String>,
}

/// One provider of the sandbox as a benchmark sets it up.
#[derive(Clone)]
struct ProviderSetup {
    rate: &'static str,
    credentials: usize,
    /// `burst` in the config (`None`: the default).
    burst: Option<u32>,
}

/// Far above what loopback carries: no limit in effect.
const UNLIMITED: ProviderSetup = ProviderSetup {
    rate: "100000000/s",
    credentials: 1,
    burst: None,
};

/// What one msgsend process did.
struct Finished {
    seconds: f64,
    peak_rss_mib: f64,
    exit_code: i32,
}

impl Bench {
    fn scale(&self, full: u64, quick: u64) -> u64 {
        if self.quick {
            quick
        } else {
            ((full as f64 * self.scale) as u64).max(1)
        }
    }

    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            let what = what.into();
            println!("  FAILED: {what}");
            self.failures.push(what);
        }
    }

    fn start_sandbox(&self, kakaotalk: &ProviderSetup, sms: &ProviderSetup) -> Sandbox {
        let mut config = SandboxConfig::ephemeral();
        for (sim, setup, password) in [
            (&mut config.kakaotalk, kakaotalk, "kakao-bench"),
            (&mut config.sms, sms, "sms-bench"),
        ] {
            sim.rate = setup.rate.parse().expect("bench rate");
            sim.credentials = (0..setup.credentials)
                .map(|i| (format!("bench{i}"), format!("{password}-{i}")))
                .collect();
        }
        self.runtime
            .block_on(Sandbox::start(config))
            .expect("sandbox starts")
    }

    fn stop_sandbox(&self, sandbox: Sandbox) {
        self.runtime.block_on(sandbox.shutdown());
    }

    /// A config pointing at `sandbox`, with `extra` TOML appended; returns its path.
    fn config(
        &self,
        name: &str,
        sandbox: &Sandbox,
        setups: [&ProviderSetup; 2],
        concurrency: u64,
        extra: &str,
    ) -> PathBuf {
        // `MSGSEND_BENCH_STATE_DIR` puts the journals elsewhere (`/dev/shm`: no fsync), to see
        // what the disk's commit latency costs.
        let states = std::env::var_os("MSGSEND_BENCH_STATE_DIR")
            .map_or_else(|| self.dir.path().to_path_buf(), PathBuf::from);
        let mut toml = format!(
            "state_dir = \"{}\"\n",
            states.join(format!("state-{name}")).display()
        );
        for ((kind, url, password), setup) in [
            ("kakaotalk", sandbox.kakaotalk.base_url(), "kakao-bench"),
            ("sms", sandbox.sms.base_url(), "sms-bench"),
        ]
        .into_iter()
        .zip(setups)
        {
            let credentials: Vec<String> = (0..setup.credentials)
                .map(|i| format!("{{ username = \"bench{i}\", password = \"{password}-{i}\" }}"))
                .collect();
            toml += &format!(
                "[providers.{kind}]\nbase_url = \"{url}\"\nrate_limit = \"{}\"\ncredentials = [{}]\n",
                setup.rate,
                credentials.join(", ")
            );
            if let Some(burst) = setup.burst {
                toml += &format!("burst = {burst}\n");
            }
        }
        toml += &format!(
            "[bulk]\nconcurrency = {concurrency}\n[message]\nheader = \"{{name}}님, 안녕하세요. 현대 오토에버입니다.\"\n{extra}"
        );
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, toml).expect("config written");
        // It holds the sandbox's passwords literally: private, so msgsend does not warn.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("config made private");
        path
    }

    fn csv(&self, n: u64) -> PathBuf {
        let path = self.dir.path().join(format!("users-{n}.csv"));
        if !path.exists() {
            write_csv(&path, n);
        }
        path
    }

    /// Ceiling and msgsend alternate for a few rounds, so that the machine's drifts (these
    /// VMs share their cores) fall on both sides; the ratio is of the rounds' totals.
    fn overhead(&mut self) {
        let n = self.scale(1_000_000, 2_000);
        let csv = self.csv(n);
        for concurrency in [64, 256] {
            self.overhead_at(&csv, n, concurrency);
        }
    }

    fn overhead_at(&mut self, csv: &Path, n: u64, concurrency: u64) {
        let rounds = if self.quick { 1 } else { 3 };
        let sandbox = self.start_sandbox(&UNLIMITED, &UNLIMITED);
        let config = self.config(
            "overhead",
            &sandbox,
            [&UNLIMITED, &UNLIMITED],
            concurrency,
            "",
        );
        println!(
            "  N = {n} per round, {rounds} round(s), concurrency {concurrency}, rate limits off, journal on"
        );
        let (mut ceiling_s, mut msgsend_s) = (0.0, 0.0);
        for round in 1..=rounds {
            let (seconds, ok) = run_ceiling(&sandbox.kakaotalk.base_url(), csv, concurrency);
            let before = accepted(&sandbox);
            let job = format!("overhead-{concurrency}-{round}");
            let run = msgsend(&config, &bulk_csv(csv, &job));
            let delivered = accepted(&sandbox) - before;
            ceiling_s += seconds;
            msgsend_s += run.seconds;
            println!(
                "  round {round}: ceiling (bare reqwest loop) {:>6.0} msgs/s, msgsend bulk (whole run) {:>6.0} msgs/s, ratio {:.2}; msgsend peak RSS {:.1} MiB",
                n as f64 / seconds,
                n as f64 / run.seconds,
                seconds / run.seconds,
                run.peak_rss_mib
            );
            self.check(ok == n, format!("ceiling delivered {ok} of {n}"));
            self.check(
                run.exit_code == 0,
                format!("overhead run exited {}", run.exit_code),
            );
            self.check(
                delivered == n,
                format!("overhead: {delivered} delivered for {n} recipients"),
            );
        }
        self.stop_sandbox(sandbox);
        let total = (n * rounds) as f64;
        println!(
            "  all rounds at concurrency {concurrency}: ceiling {:.0} msgs/s, msgsend {:.0} msgs/s: overhead ratio msgsend / ceiling = {:.2}",
            total / ceiling_s,
            total / msgsend_s,
            ceiling_s / msgsend_s
        );
    }

    fn memory(&mut self) {
        let sandbox = self.start_sandbox(&UNLIMITED, &UNLIMITED);
        let config = self.config("memory", &sandbox, [&UNLIMITED, &UNLIMITED], 256, "");
        println!("  peak RSS of `msgsend bulk --csv` (rate limits off, concurrency 256)");
        let mut sizes = vec![self.scale(100_000, 1_000), self.scale(1_000_000, 3_000)];
        // 30 M rows take about a quarter of an hour: the full run only.
        if !self.quick && self.scale == 1.0 {
            sizes.push(30_000_000);
        }
        for n in sizes {
            let csv = self.csv(n);
            let before = accepted(&sandbox);
            let run = msgsend(&config, &bulk_csv(&csv, &format!("memory-{n}")));
            let delivered = accepted(&sandbox) - before;
            self.report_rss("memory", n, &run, delivered);
            std::fs::remove_file(csv).ok();
        }
        self.stop_sandbox(sandbox);
    }

    /// A 10 M-row job stopped with SIGTERM at half, then `--resume`: from a CSV file, and from
    /// PostgreSQL when there is one.
    fn resume(&mut self) {
        let sandbox = self.start_sandbox(&UNLIMITED, &UNLIMITED);
        let config = self.config("resume", &sandbox, [&UNLIMITED, &UNLIMITED], 256, "");
        let n = self.scale(10_000_000, 20_000);
        let csv = self.csv(n);
        let job = format!("resume-csv-{n}");
        let first = bulk_csv(&csv, &job);
        self.interrupted_and_resumed("CSV", &sandbox, &config, &first, &job, n);
        std::fs::remove_file(&csv).ok();
        if let Some(url) = bench_postgres_url() {
            let table = format!("msgsend_bench_resume_{n}");
            self.runtime.block_on(fill_postgres(&url, &table, n));
            let query = format!("SELECT name, phone, birth_date FROM {table}");
            let first = postgres_bulk(&url, &query, &table);
            // A job stores its database URL without the password: the resume takes it from
            // `[source] database`, as an operator's config gives it.
            let config = self.config(
                "resume-postgres",
                &sandbox,
                [&UNLIMITED, &UNLIMITED],
                256,
                &format!("[source]\ndatabase = \"{url}\"\n"),
            );
            self.interrupted_and_resumed("PostgreSQL", &sandbox, &config, &first, &table, n);
            self.runtime.block_on(drop_postgres(&url, &table));
        } else {
            println!(
                "  PostgreSQL skipped: set MSGSEND_BENCH_POSTGRES_URL (or MSGSEND_TEST_POSTGRES_URL)"
            );
        }
        self.stop_sandbox(sandbox);
    }

    /// Runs `first` (job `job`, `n` recipients), stops it with SIGTERM once half are sent, then
    /// resumes it: the time from `--resume` to its first send, and both runs' peak RSS.
    // The children are reaped by waitpid (`wait_rss`), which clippy does not know.
    #[allow(clippy::zombie_processes)]
    fn interrupted_and_resumed(
        &mut self,
        what: &str,
        sandbox: &Sandbox,
        config: &Path,
        first: &[&str],
        job: &str,
        n: u64,
    ) {
        let before = accepted(sandbox);
        let mut child = spawn_msgsend(config, first);
        let started = Instant::now();
        let half = wait_for(|| accepted(sandbox) - before >= n / 2);
        self.check(half.is_some(), "the first run never reached half");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let first = wait_rss(&mut child, started);
        let after_first = accepted(sandbox) - before;
        println!(
            "  {what}, {n:>10} rows, run 1 (SIGTERM after {} sent, the rest admitted queued): {:>6.1} MiB ({:.1} s)",
            after_first, first.peak_rss_mib, first.seconds
        );
        self.check(
            first.exit_code == 130,
            format!("interrupted run exited {}", first.exit_code),
        );

        let mut child = spawn_msgsend(config, &["bulk", "--resume", job]);
        let resumed_at = Instant::now();
        let pid = child.id();
        let sent_again = || accepted(sandbox) - before > after_first;
        // A run that exits without sending ends the wait too.
        let first_send = wait_for(|| sent_again() || exited(pid)).filter(|_| sent_again());
        let second = wait_rss(&mut child, resumed_at);
        let delivered = accepted(sandbox) - before;
        println!(
            "  {what}, {n:>10} rows, run 2 (--resume):                                 {:>6.1} MiB ({:.1} s)",
            second.peak_rss_mib, second.seconds
        );
        match first_send {
            Some(after) => println!(
                "  {what}: resume of the half-done {n}-recipient job: first send {:.2} s after `--resume`",
                after.as_secs_f64()
            ),
            None => self.check(false, format!("{what}: the resumed run sent nothing")),
        }
        self.check(
            second.exit_code == 0,
            format!("resumed run exited {}", second.exit_code),
        );
        self.check(
            delivered == n,
            format!("interrupted + resumed: {delivered} delivered for {n}"),
        );
    }

    fn postgres(&mut self) {
        let Some(url) = bench_postgres_url() else {
            println!("  skipped: set MSGSEND_BENCH_POSTGRES_URL (or MSGSEND_TEST_POSTGRES_URL)");
            return;
        };
        let sandbox = self.start_sandbox(&UNLIMITED, &UNLIMITED);
        let config = self.config("postgres", &sandbox, [&UNLIMITED, &UNLIMITED], 256, "");
        println!(
            "  peak RSS of `msgsend bulk --db postgres://…` (rate limits off, concurrency 256)"
        );
        for n in [
            self.scale(100_000, 1_000),
            self.scale(1_000_000, 2_000),
            self.scale(10_000_000, 5_000),
        ] {
            let table = format!("msgsend_bench_{n}");
            self.runtime.block_on(fill_postgres(&url, &table, n));
            let query = format!("SELECT name, phone, birth_date FROM {table}");
            let before = accepted(&sandbox);
            let run = msgsend(&config, &postgres_bulk(&url, &query, &table));
            let delivered = accepted(&sandbox) - before;
            self.report_rss("postgres", n, &run, delivered);
            self.runtime.block_on(drop_postgres(&url, &table));
        }
        self.stop_sandbox(sandbox);
    }

    fn pacing(&mut self) {
        println!("  strict sliding window at the sandbox, the same quota in the config");
        for (rate, per_second) in [("50/s", 50), ("250/s", 250)] {
            let setup = ProviderSetup {
                rate,
                credentials: 1,
                burst: None,
            };
            let seconds = self.scale(20, 3);
            let n = per_second * seconds;
            let paced = self.paced_run(
                &format!("pacing-{per_second}"),
                [&setup, &UNLIMITED],
                n,
                64,
                "",
            );
            println!(
                "  {rate:>6}: steady {:.1} msgs/s = {:.3} of the quota; {} 429s; whole run {:.1} s",
                paced.steady_rate,
                paced.steady_rate / per_second as f64,
                paced.rate_limited,
                paced.run.seconds
            );
            self.check_paced(&format!("pacing {rate}"), &paced, n);
        }
        // `burst = 1` (SPEC section 8): no opening burst, one request every 20 ms.
        let setup = ProviderSetup {
            rate: "50/s",
            credentials: 1,
            burst: Some(1),
        };
        let n = 50 * self.scale(20, 3);
        let paced = self.paced_run("pacing-burst-1", [&setup, &UNLIMITED], n, 64, "");
        println!(
            "    50/s, burst = 1: steady {:.1} msgs/s = {:.3} of the quota; {} 429s",
            paced.steady_rate,
            paced.steady_rate / 50.0,
            paced.rate_limited
        );
        self.check_paced("pacing 50/s burst 1", &paced, n);
    }

    // The children are reaped by waitpid (`wait_rss`) and `output`, which clippy does not know.
    #[allow(clippy::zombie_processes)]
    fn shared(&mut self) {
        let setup = ProviderSetup {
            rate: "50/s",
            credentials: 1,
            burst: None,
        };
        let per_second = 50;
        let n = per_second * self.scale(20, 3);
        let sandbox = self.start_sandbox(&setup, &UNLIMITED);
        let config = self.config("shared", &sandbox, [&setup, &UNLIMITED], 64, "");
        let csv = self.csv(n);
        let mut bulk = spawn_msgsend(&config, &bulk_csv(&csv, "shared"));
        let started = Instant::now();
        let done = std::sync::atomic::AtomicBool::new(false);
        let (sends, run, samples) = std::thread::scope(|scope| {
            let sampler = scope.spawn(|| {
                let mut samples = Vec::new();
                while !done.load(Ordering::SeqCst) {
                    samples.push((started.elapsed(), accepted(&sandbox)));
                    std::thread::sleep(Duration::from_millis(2));
                }
                samples
            });
            let sender = scope.spawn(|| {
                let mut sends = 0u64;
                while !done.load(Ordering::SeqCst) {
                    let to = format!("0109{:07}", sends);
                    let status = Command::new(env!("CARGO_BIN_EXE_msgsend"))
                        .args(["--config", config.to_str().unwrap()])
                        .args(["send", "--to", &to, "--name", "S", "--message", "hi"])
                        .args(["--channel", "kakaotalk", "--no-fallback", "--no-preflight"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .expect("send runs");
                    sends += u64::from(status.success());
                }
                sends
            });
            let run = wait_rss(&mut bulk, started);
            done.store(true, Ordering::SeqCst);
            (
                sender.join().expect("sender thread"),
                run,
                sampler.join().expect("sampler thread"),
            )
        });
        let delivered = accepted(&sandbox);
        let rate_limited = SimStats::get(&sandbox.kakaotalk.stats.rate_limited);
        self.stop_sandbox(sandbox);
        // Between 10 % and 90 % of what was accepted: the opening window (all at once) and the
        // run's start and end are left out, as in `pacing`.
        let combined = steady_rate(&samples, delivered);
        println!(
            "  bulk of {n} + {sends} sends beside it on one 50/s credential: combined {combined:.1} msgs/s = {:.3} of the quota; {rate_limited} 429s",
            combined / per_second as f64
        );
        self.check(rate_limited == 0, format!("shared: {rate_limited} 429s"));
        self.check(
            run.exit_code == 0,
            format!("shared: bulk exit {}", run.exit_code),
        );
    }

    fn spillover(&mut self) {
        let kakaotalk = ProviderSetup {
            rate: "50/s",
            credentials: 1,
            burst: None,
        };
        let sms = ProviderSetup {
            rate: "100/s",
            credentials: 1,
            burst: None,
        };
        let sum = 150;
        let n = sum * self.scale(20, 3);
        let ideal = n as f64 / sum as f64;
        println!("  KakaoTalk 50/s + SMS 100/s, N = {n}, N / (sum of quotas) = {ideal:.2} s:");
        // Few sends in flight for a long timeout (waiting for the primary first, the fallback
        // would idle), many for a short one (the old way's sweet spot), and in between.
        for (concurrency, acquire_timeout) in [(8, "5s"), (64, "100ms"), (512, "1s")] {
            let name = format!("spillover-{concurrency}");
            let paced = self.paced_run(
                &name,
                [&kakaotalk, &sms],
                n,
                concurrency,
                &format!(
                    "[routing]\nstrategy = \"spillover\"\nacquire_timeout = \"{acquire_timeout}\"\n"
                ),
            );
            println!(
                "  concurrency {concurrency:>3}, acquire_timeout {acquire_timeout:>5}: {:.2} s = {:.3} × N / (sum of quotas); steady {:.1} msgs/s = {:.3} of the sum; KakaoTalk {} SMS {}; {} 429s",
                paced.run.seconds,
                paced.run.seconds / ideal,
                paced.steady_rate,
                paced.steady_rate / sum as f64,
                paced.by_channel[0],
                paced.by_channel[1],
                paced.rate_limited
            );
            self.check_paced(&name, &paced, n);
        }
    }

    fn pooling(&mut self) {
        let mut one = None;
        for credentials in [1, 2, 4] {
            let setup = ProviderSetup {
                rate: "50/s",
                credentials,
                burst: None,
            };
            let n = 50 * credentials as u64 * self.scale(20, 3);
            let paced = self.paced_run(
                &format!("pooling-{credentials}"),
                [&setup, &UNLIMITED],
                n,
                64,
                "",
            );
            let base = *one.get_or_insert(paced.steady_rate);
            println!(
                "  {credentials} credential(s) × 50/s: steady {:.1} msgs/s = {:.2} × one; {} 429s",
                paced.steady_rate,
                paced.steady_rate / base,
                paced.rate_limited
            );
            self.check_paced(&format!("pooling {credentials}"), &paced, n);
        }
    }

    /// One straight run of a memory section: its peak RSS, and whether it ended well.
    fn hosts(&mut self) {
        let Some(url) = bench_postgres_url() else {
            println!("  skipped: set MSGSEND_BENCH_POSTGRES_URL (or MSGSEND_TEST_POSTGRES_URL)");
            return;
        };
        let n = self.scale(100_000, 2_000);
        let csv = self.csv(n);
        let rounds = if self.quick { 1 } else { 3 };
        let sandbox = self.start_sandbox(&UNLIMITED, &UNLIMITED);
        let sqlite = self.config("hosts-sqlite", &sandbox, [&UNLIMITED, &UNLIMITED], 64, "");
        let state = self
            .runtime
            .block_on(fresh_state_database(&url, "msgsend_bench_state"));
        // A top-level key goes before the config's tables.
        let postgres = self.dir.path().join("hosts-postgres.toml");
        let text = std::fs::read_to_string(&sqlite).expect("config");
        std::fs::write(&postgres, format!("state_database = \"{state}\"\n{text}"))
            .expect("config written");
        std::fs::set_permissions(
            &postgres,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .expect("config made private");
        println!(
            "  N = {n} per run, {rounds} round(s), concurrency 64, rate limits off: the state in SQLite, then in PostgreSQL"
        );
        let (mut sqlite_s, mut postgres_s) = (0.0, 0.0);
        for round in 1..=rounds {
            let mut seconds = [0.0; 2];
            for (i, (config, label)) in [(&sqlite, "sqlite"), (&postgres, "postgres")]
                .into_iter()
                .enumerate()
            {
                let before = accepted(&sandbox);
                let run = msgsend(config, &bulk_csv(&csv, &format!("state-{label}-{round}")));
                let delivered = accepted(&sandbox) - before;
                self.check(
                    run.exit_code == 0 && delivered == n,
                    format!("{label} state: exit {}, {delivered} of {n}", run.exit_code),
                );
                seconds[i] = run.seconds;
            }
            println!(
                "  round {round}: SQLite state {:>6.0} msgs/s, PostgreSQL state {:>6.0} msgs/s, ratio {:.2}",
                n as f64 / seconds[0],
                n as f64 / seconds[1],
                seconds[0] / seconds[1]
            );
            sqlite_s += seconds[0];
            postgres_s += seconds[1];
        }
        let total = (n * rounds) as f64;
        println!(
            "  all rounds: SQLite state {:.0} msgs/s, PostgreSQL state {:.0} msgs/s: PostgreSQL / SQLite = {:.2}",
            total / sqlite_s,
            total / postgres_s,
            sqlite_s / postgres_s
        );
        println!("  one job, N = {n}, worked by a leader and joined runs (concurrency 64 each):");
        for processes in [1, 2, 4] {
            let job = format!("joined-{processes}");
            let before = accepted(&sandbox);
            let commits_before = self.runtime.block_on(commits(&state));
            let started = Instant::now();
            let mut leader = spawn_msgsend(&postgres, &bulk_csv(&csv, &job));
            // The joined runs come once the leader is sending.
            let got_going = wait_for(|| accepted(&sandbox) > before);
            let mut joined: Vec<Child> = (1..processes)
                .map(|_| spawn_msgsend(&postgres, &["bulk", "--resume", &job, "--join"]))
                .collect();
            let mut codes = vec![leader.wait().expect("leader").code().unwrap_or(-1)];
            for child in &mut joined {
                codes.push(child.wait().expect("joined run").code().unwrap_or(-1));
            }
            let seconds = started.elapsed().as_secs_f64();
            let delivered = accepted(&sandbox) - before;
            let transactions = self.runtime.block_on(commits(&state)) - commits_before;
            self.check(
                got_going.is_some() && codes.iter().all(|&c| c == 0) && delivered == n,
                format!("{processes} processes: exits {codes:?}, {delivered} of {n}"),
            );
            println!(
                "  {processes} process(es): {:>6.0} recipients/s, {:.3} state transactions per recipient ({transactions} in all)",
                n as f64 / seconds,
                transactions as f64 / n as f64
            );
        }
        self.stop_sandbox(sandbox);
    }

    fn report_rss(&mut self, what: &str, n: u64, run: &Finished, delivered: u64) {
        println!(
            "  {n:>10} rows: {:>6.1} MiB ({:.1} s)",
            run.peak_rss_mib, run.seconds
        );
        self.check(
            run.exit_code == 0,
            format!("{what} {n}: exit {}", run.exit_code),
        );
        self.check(delivered == n, format!("{what} {n}: {delivered} delivered"));
    }

    fn check_paced(&mut self, what: &str, paced: &Paced, n: u64) {
        self.check(
            paced.rate_limited == 0,
            format!("{what}: {} 429s", paced.rate_limited),
        );
        self.check(
            paced.run.exit_code == 0,
            format!("{what}: exit {}", paced.run.exit_code),
        );
        self.check(
            paced.delivered == n,
            format!("{what}: {} delivered for {n}", paced.delivered),
        );
    }

    /// A campaign against rate-limited providers, sampling the sandbox's accepted count to
    /// find the steady rate.
    // The child is reaped by waitpid (`wait_rss`), which clippy does not know.
    #[allow(clippy::zombie_processes)]
    fn paced_run(
        &self,
        name: &str,
        setups: [&ProviderSetup; 2],
        n: u64,
        concurrency: u64,
        extra: &str,
    ) -> Paced {
        let sandbox = self.start_sandbox(setups[0], setups[1]);
        let config = self.config(name, &sandbox, setups, concurrency, extra);
        let csv = self.csv(n);
        let mut child = spawn_msgsend(&config, &bulk_csv(&csv, name));
        let started = Instant::now();
        let mut samples = Vec::new();
        let run = loop {
            samples.push((started.elapsed(), accepted(&sandbox)));
            if samples.last().is_some_and(|&(_, done)| done >= n) {
                break wait_rss(&mut child, started);
            }
            std::thread::sleep(Duration::from_millis(2));
            if started.elapsed() > Duration::from_secs(600) {
                let _ = child.kill();
                break wait_rss(&mut child, started);
            }
        };
        let rate_limited = SimStats::get(&sandbox.kakaotalk.stats.rate_limited)
            + SimStats::get(&sandbox.sms.stats.rate_limited);
        let delivered = accepted(&sandbox);
        let by_channel = [
            SimStats::get(&sandbox.kakaotalk.stats.accepted),
            SimStats::get(&sandbox.sms.stats.accepted),
        ];
        self.stop_sandbox(sandbox);
        Paced {
            steady_rate: steady_rate(&samples, n),
            rate_limited,
            delivered,
            by_channel,
            run,
        }
    }
}

struct Paced {
    steady_rate: f64,
    rate_limited: u64,
    delivered: u64,
    /// Accepted by KakaoTalk, by SMS.
    by_channel: [u64; 2],
    run: Finished,
}

/// Messages per second between the samples where 10 % and 90 % of `n` had been accepted:
/// the opening burst (a full window at once) and the tail are left out.
fn steady_rate(samples: &[(Duration, u64)], n: u64) -> f64 {
    let at = |share: u64| {
        samples
            .iter()
            .find(|&&(_, done)| done * 100 >= n * share)
            .copied()
            .unwrap_or((Duration::ZERO, 0))
    };
    let ((t10, c10), (t90, c90)) = (at(10), at(90));
    (c90 - c10) as f64 / (t90 - t10).as_secs_f64().max(1e-9)
}

/// Polls `done` every millisecond; how long it took, or `None` after ten minutes.
fn wait_for(mut done: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(600) {
        if done() {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

fn accepted(sandbox: &Sandbox) -> u64 {
    SimStats::get(&sandbox.kakaotalk.stats.accepted) + SimStats::get(&sandbox.sms.stats.accepted)
}

fn bulk_csv<'a>(csv: &'a Path, job: &'a str) -> Vec<&'a str> {
    vec![
        "bulk",
        "--age-group",
        "20s",
        "--csv",
        csv.to_str().expect("UTF-8 path"),
        "--message",
        "hi {name}",
        "--job-id",
        job,
    ]
}

/// Starts msgsend; `MSGSEND_BENCH_WRAP` (e.g. `perf record -g -o /tmp/msgsend.perf --`) runs it
/// under a profiler. The RSS figures are then the wrapper's.
fn spawn_msgsend(config: &Path, args: &[&str]) -> Child {
    let wrap = std::env::var("MSGSEND_BENCH_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    let mut command = match words.next() {
        Some(program) => {
            let mut command = Command::new(program);
            command.args(words).arg(env!("CARGO_BIN_EXE_msgsend"));
            command
        }
        None => Command::new(env!("CARGO_BIN_EXE_msgsend")),
    };
    command
        .arg("--config")
        .arg(config)
        .args(["-q", "--no-progress"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("msgsend starts")
}

fn msgsend(config: &Path, args: &[&str]) -> Finished {
    let started = Instant::now();
    let mut child = spawn_msgsend(config, args);
    wait_rss(&mut child, started)
}

/// Waits for `child` (waitpid), watching its peak RSS ([`HighWaterMark`]).
fn wait_rss(child: &mut Child, started: Instant) -> Finished {
    let pid = child.id();
    let watch = HighWaterMark::watch(pid);
    let mut status = 0;
    // SAFETY: waitpid on our own child's pid with a valid out-pointer; std's Child is not
    // waited on afterwards (dropping it does not wait).
    let pid = unsafe { libc::waitpid(child.id() as i32, &mut status, 0) };
    assert_eq!(
        pid,
        child.id() as i32,
        "waitpid: {}",
        std::io::Error::last_os_error()
    );
    let exit_code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    Finished {
        seconds: started.elapsed().as_secs_f64(),
        peak_rss_mib: watch.stop() as f64 / 1024.0,
        exit_code,
    }
}

/// A child's peak RSS, polled from `/proc/PID/status` (`VmHWM`, which only grows) every 10 ms
/// until it exits. Not wait4's `ru_maxrss`: std spawns with `CLONE_VM` (posix_spawn), and at
/// `exec` the kernel folds the parent's high-water mark into the child's — so a child of this
/// benchmark, whose in-process sandbox keeps every idempotency key it saw, reported the
/// benchmark's own peak (up to 566 MiB) rather than msgsend's.
struct HighWaterMark {
    peak_kib: std::sync::Arc<AtomicU64>,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    poller: std::thread::JoinHandle<()>,
}

impl HighWaterMark {
    fn watch(pid: u32) -> HighWaterMark {
        let peak_kib = std::sync::Arc::new(AtomicU64::new(0));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let poller = std::thread::spawn({
            let (peak_kib, done) = (peak_kib.clone(), done.clone());
            move || {
                while !done.load(Ordering::Relaxed) {
                    if let Some(kib) = vm_hwm_kib(pid) {
                        peak_kib.fetch_max(kib, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        });
        HighWaterMark {
            peak_kib,
            done,
            poller,
        }
    }

    /// The peak seen, in KiB.
    fn stop(self) -> u64 {
        self.done.store(true, Ordering::Relaxed);
        self.poller.join().expect("the RSS poller does not panic");
        self.peak_kib.load(Ordering::Relaxed)
    }
}

/// Whether child `pid` has exited (a zombie, not reaped yet).
fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).map_or(true, |status| {
        status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'))
    })
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `n` recipients, all in their twenties, phones 010-1000-0000 upwards.
fn write_csv(path: &Path, n: u64) {
    let born = born_25_years_ago();
    let mut out = BufWriter::new(std::fs::File::create(path).expect("CSV created"));
    writeln!(out, "name,phone,birth_date").unwrap();
    for i in 0..n {
        writeln!(out, "사람{i},{},{born}", phone(i)).unwrap();
    }
    out.flush().unwrap();
}

fn phone(i: u64) -> String {
    format!("010-{:04}-{:04}", 1000 + i / 10_000, i % 10_000)
}

fn born_25_years_ago() -> jiff::civil::Date {
    jiff::Timestamp::now()
        .in_tz("Asia/Seoul")
        .expect("the campaign's time zone")
        .date()
        .checked_sub(jiff::Span::new().years(25))
        .expect("a date 25 years ago")
}

fn bench_postgres_url() -> Option<String> {
    std::env::var("MSGSEND_BENCH_POSTGRES_URL")
        .or_else(|_| std::env::var("MSGSEND_TEST_POSTGRES_URL"))
        .ok()
}

/// `bulk` of job `job` from PostgreSQL.
fn postgres_bulk<'a>(url: &'a str, query: &'a str, job: &'a str) -> Vec<&'a str> {
    vec![
        "bulk",
        "--age-group",
        "20s",
        "--db",
        url,
        "--query",
        query,
        "--message",
        "hi {name}",
        "--job-id",
        job,
    ]
}

async fn fill_postgres(url: &str, table: &str, n: u64) {
    use sqlx::Connection as _;
    let mut db = sqlx::PgConnection::connect(url).await.expect("PostgreSQL");
    drop_table(&mut db, table).await;
    for statement in [
        format!("CREATE TABLE {table} (name TEXT, phone TEXT, birth_date DATE)"),
        // Generated server-side: the same rows as the CSV.
        format!(
            "INSERT INTO {table} SELECT '사람' || i, \
             '010-' || lpad((1000 + i / 10000)::text, 4, '0') || '-' || lpad((i % 10000)::text, 4, '0'), \
             DATE '{}' FROM generate_series(0, {} - 1) AS i",
            born_25_years_ago(),
            n
        ),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut db)
            .await
            .expect("bench table");
    }
}

/// A new empty database beside `url`'s for a state; its URL.
async fn fresh_state_database(url: &str, name: &str) -> String {
    use sqlx::Connection as _;
    let mut db = sqlx::PgConnection::connect(url).await.expect("PostgreSQL");
    for statement in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut db)
            .await
            .expect("state database");
    }
    let (server, _) = url.rsplit_once('/').expect("a database URL");
    format!("{server}/{name}")
}

/// The transactions committed so far in `url`'s database.
async fn commits(url: &str) -> u64 {
    use sqlx::Connection as _;
    let mut db = sqlx::PgConnection::connect(url).await.expect("PostgreSQL");
    let commits: i64 = sqlx::query_scalar(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&mut db)
    .await
    .expect("pg_stat_database");
    u64::try_from(commits).unwrap_or(0)
}

async fn drop_postgres(url: &str, table: &str) {
    use sqlx::Connection as _;
    let mut db = sqlx::PgConnection::connect(url).await.expect("PostgreSQL");
    drop_table(&mut db, table).await;
}

async fn drop_table(db: &mut sqlx::PgConnection, table: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
        .execute(db)
        .await
        .expect("drop bench table");
}

/// Runs the ceiling in a child process of its own, as msgsend runs: returns (seconds, ok).
fn run_ceiling(base_url: &str, csv: &Path, concurrency: u64) -> (f64, u64) {
    let output = Command::new(std::env::current_exe().expect("own path"))
        .args([
            "--ceiling-child",
            base_url,
            csv.to_str().expect("UTF-8 path"),
            &concurrency.to_string(),
        ])
        .output()
        .expect("ceiling child");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut fields = text.split_whitespace();
    let ok = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
    let seconds = fields
        .next()
        .and_then(|f| f.parse().ok())
        .unwrap_or(f64::NAN);
    (seconds, ok)
}

/// The ceiling: the plainest client there is. It streams the same CSV and POSTs the same
/// requests msgsend sends — the same body, Basic auth and `Idempotency-Key` header (so the
/// sandbox, on the same cores, does the same work for both) — from one reqwest client with
/// `concurrency` requests in flight: no screening, limiter, journal or metrics.
fn ceiling_child(args: &[String]) {
    let [base_url, csv, concurrency] = args else {
        panic!("usage: --ceiling-child BASE_URL CSV CONCURRENCY");
    };
    let concurrency: usize = concurrency.parse().expect("CONCURRENCY");
    let url = format!("{base_url}/kakaotalk-messages");
    let ok = AtomicU64::new(0);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let started = Instant::now();
    let rows = csv::Reader::from_path(csv)
        .expect("the benchmark's CSV")
        .into_records()
        .map(|row| row.expect("a CSV row"));
    runtime.block_on(async {
        use futures_util::StreamExt as _;
        let http = reqwest::Client::new();
        futures_util::stream::iter(rows)
            .map(|row| {
                let (name, phone) = (&row[0], &row[1]);
                let key =
                    MessageKey::for_recipient("ceiling", &Phone::parse(phone).expect("phone"))
                        .for_provider(ProviderKind::KakaoTalk);
                let request = http
                    .post(&url)
                    .basic_auth("bench0", Some("kakao-bench-0"))
                    .header("Idempotency-Key", key)
                    .json(&serde_json::json!({
                        "phone": phone,
                        "message": format!("{name}님, 안녕하세요. 현대 오토에버입니다.\nhi {name}"),
                    }));
                async move { request.send().await.is_ok_and(|r| r.status().is_success()) }
            })
            .buffer_unordered(concurrency)
            .for_each(|delivered| {
                if delivered {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                std::future::ready(())
            })
            .await;
    });
    println!(
        "{} {:.3}",
        ok.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
}

fn describe_machine() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("machine: {cpu}, {cores} cores; everything on 127.0.0.1");
}
