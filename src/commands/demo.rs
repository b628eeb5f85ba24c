//! `msgsend demo`: the whole tool in one command, with nothing to set up. It starts the sandbox
//! in-process on free loopback ports with some faults (a share of 500s, latency, KakaoTalk
//! rejecting a few phones), writes the journal to a scratch state directory, and runs
//! `bulk --age-group 20s` over `fixtures/users.csv` with the progress bar and the summary.
//! Quotas are raised above the SPEC defaults so that it ends in seconds, not minutes.

use std::future::Future;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::campaign::{self, CampaignPlan, JobOptions, JobPlan, SourceChoice};
use crate::cli::GlobalArgs;
use crate::error::ExitStatus;
use crate::recipient::AgeRange;
use crate::sandbox::{Sandbox, SandboxConfig};

/// The phones KakaoTalk rejects in the demo (they are in the fixtures, in their 20s), so the
/// SMS fallback shows in the summary.
const REJECTED: [&str; 3] = ["010-3012-7781", "010-5523-0914", "010-7290-4436"];

pub async fn run(
    global: &GlobalArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<ExitStatus> {
    let users = fixture("users.csv")?;
    let mut sandbox_config = SandboxConfig::ephemeral();
    sandbox_config.kakaotalk.rate = "40/s".parse()?;
    sandbox_config.sms.rate = "80/s".parse()?;
    for sim in [&mut sandbox_config.kakaotalk, &mut sandbox_config.sms] {
        sim.faults.fail_rate = 0.05;
        sim.faults.latency = std::time::Duration::from_millis(30);
    }
    sandbox_config.kakaotalk.faults.reject_phones =
        REJECTED.iter().map(|p| p.to_string()).collect();
    let sandbox = Sandbox::start(sandbox_config)
        .await
        .context("starting the demo sandbox")?;
    let state_dir = tempfile::tempdir().context("creating a scratch state directory")?;
    let config = format!(
        r#"
state_dir = {state_dir:?}

[providers.kakaotalk]
base_url = "{kakaotalk}"
username = "autoever"
password = "1234"
rate_limit = "40/s"
price = 8.4

[providers.sms]
base_url = "{sms}"
username = "autoever"
password = "5678"
rate_limit = "80/s"
price = {{ short = 9.9, long = 29.7 }}

[routing]
strategy = "spillover"
acquire_timeout = "500ms"

[retry]
initial_delay = "200ms"
max_delay = "2s"

[message]
header = "{{name}}님, 안녕하세요. 현대 오토에버입니다."
"#,
        state_dir = state_dir.path().display().to_string(),
        kakaotalk = sandbox.kakaotalk.base_url(),
        sms = sandbox.sms.base_url(),
    );
    let settings = crate::config::parse(Path::new("(demo config)"), &config)?;
    tracing::info!(
        kakaotalk = %sandbox.kakaotalk.base_url(),
        sms = %sandbox.sms.base_url(),
        source = %users.display(),
        "demo: sandbox up with 5 % server errors, 30 ms latency and {} phones KakaoTalk rejects",
        REJECTED.len()
    );
    let plan = CampaignPlan {
        job: JobPlan::New {
            job_id: None,
            source: SourceChoice::Csv(users),
            ages: AgeRange::group("20s").map_err(anyhow::Error::msg)?,
            message: "{name}님을 위한 11월 혜택이 도착했습니다. 앱에서 확인하세요.".into(),
            // An info campaign: it runs at any hour (an ad would refuse the night).
            kind: crate::advert::MessageKind::Info,
            options: JobOptions::default(),
        },
        dry_run: false,
        ignore_quiet_hours: true,
        no_preflight: false,
        summary_json: None,
        failed_csv: None,
        invalid_csv: None,
        show_bar: super::progress_bar_wanted(global),
    };
    let status = campaign::run(&settings, plan, crate::schedule::Clock::system(), shutdown).await;
    sandbox.shutdown().await;
    status
}

/// A file of `fixtures/`: from the working directory, else from the source tree this binary
/// was built from (so `cargo run -- demo` works from any directory of the checkout).
fn fixture(name: &str) -> anyhow::Result<PathBuf> {
    let candidates = [
        PathBuf::from("fixtures").join(name),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name),
    ];
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .with_context(|| {
            format!("fixtures/{name} not found: run the demo from the msgsend checkout")
        })
}
