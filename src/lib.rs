//! msgsend sends one message, or a campaign of messages, through messaging providers:
//! KakaoTalk first, SMS as the fallback, never over a provider's rate limit.
//!
//! Module map, following one message from the command line to the provider:
//!
//! - [`cli`]: the clap command line; [`commands`]: one module per subcommand, where clap's
//!   types stop.
//! - [`config`]: the TOML file → typed [`config::Settings`], errors with file, line and key.
//! - [`campaign`]: a campaign run from its typed plan (new job, resume, retry) — prepare,
//!   execute, finish.
//! - [`recipient`]: a validated source row, ages and age groups; [`source`]: CSV, SQLite and
//!   PostgreSQL recipients, streamed.
//! - [`pipeline`]: the run itself — source → admission → bounded sends → collector, and why
//!   it stops; [`journal`]: what every campaign and recipient became, durably, and the lock.
//! - [`delivery`]: the path of one message, primary channel then fallback; each channel is one
//!   provider as a send sees it (limiter, breaker, retries).
//! - [`policy`]: rate limiter, retry, circuit breaker, routing strategy.
//! - [`provider`]: the HTTP contract with KakaoTalk and SMS and error classification.
//! - [`report`] (summary, outputs, progress, watched thresholds, metrics), [`alert`],
//!   [`logging`]: what the operator is told.
//! - [`job`]: the words of a campaign (recipient states, job status, counts), shared by the
//!   journal, the pipeline and the reports.
//! - [`phone`], [`template`], [`units`], [`schedule`], [`secret`], [`cost`]: the domain values;
//!   [`advert`]: the Korean advertising rules (the ad frame, markers, consent, the night);
//!   [`sms_length`]: a message's length as the carriers count an SMS (EUC-KR bytes).
//! - [`sandbox`]: the simulated providers that `msgsend sandbox` serves and tests talk to.
//! - [`error`]: exit codes; [`state_db`]: the PostgreSQL state database (`state_database`),
//!   its schema and migrations, which the journal, the locks and the ledger share.
//!
//! Layers, top to bottom; a module names only modules of lower layers (no cycle, no arrow
//! upward; `tests/layering.rs` checks it):
//! commands → cli, campaign → pipeline, sandbox → report, journal, error → delivery, source →
//! config → alert, job, logging → policy, provider, advert → cost, recipient, schedule, template →
//! phone, secret, sms_length, state_db, units.

pub mod advert;
pub mod alert;
pub mod campaign;
pub mod cli;
pub mod commands;
pub mod config;
pub mod cost;
pub mod delivery;
pub mod error;
pub mod job;
pub mod journal;
pub mod ledger;
pub mod logging;
pub mod phone;
pub mod pipeline;
pub mod policy;
pub mod provider;
pub mod recipient;
pub mod report;
pub mod sandbox;
pub mod schedule;
pub mod secret;
pub mod sms_length;
pub mod source;
pub mod state_db;
pub mod template;
pub mod units;

use std::future::Future;

use cli::{Cli, Command};
use error::ExitStatus;

/// Runs one command. `shutdown` resolves when the process is asked to stop (Ctrl-C, SIGTERM):
/// a campaign stops as SPEC section 3 says, `sandbox` and `demo` finish, and any other command
/// ends at once with exit 130.
pub async fn run(
    cli: Cli,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<ExitStatus> {
    let global = &cli.global;
    match cli.command {
        Command::Bulk(args) => commands::bulk::run(global, *args, shutdown).await,
        Command::Sandbox(args) => commands::sandbox::run(*args, shutdown).await,
        Command::Demo => commands::demo::run(global, shutdown).await,
        Command::Send(args) => until_stopped(commands::send::run(global, args), shutdown).await,
        Command::Health(args) => until_stopped(commands::health::run(global, args), shutdown).await,
        Command::Config(cli::ConfigCommand::Check) => commands::config::check(global),
        Command::Jobs(args) => until_stopped(commands::jobs::list(global, args), shutdown).await,
        Command::Status(args) => {
            until_stopped(commands::jobs::status(global, args), shutdown).await
        }
    }
}

/// A command with nothing to stop gracefully: it ends at once on Ctrl-C / SIGTERM, exit 130.
async fn until_stopped(
    work: impl Future<Output = anyhow::Result<ExitStatus>>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<ExitStatus> {
    tokio::select! {
        result = work => result,
        () = shutdown => {
            tracing::warn!("interrupted");
            Ok(ExitStatus::Interrupted)
        }
    }
}

/// Starts listening for Ctrl-C and SIGTERM at once (call it inside the runtime, as early as
/// possible) and resolves when either arrives. A signal that comes before the future is first
/// awaited is kept, not lost.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {},
                        _ = terminate.recv() => {},
                    }
                }
                // No handler could be installed: the default actions stay.
                _ => std::future::pending::<()>().await,
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
