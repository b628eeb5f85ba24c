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
//! - [`phone`], [`template`], [`units`], [`schedule`], [`secret`]: the domain values.
//! - [`sandbox`]: the simulated providers that `msgsend sandbox` serves and tests talk to.
//! - [`error`]: exit codes.
//!
//! Layers, top to bottom; a module names only modules of lower layers (no cycle, no arrow
//! upward; `tests/layering.rs` checks it):
//! commands → cli, campaign → pipeline, sandbox → report, journal, source, error → delivery →
//! config → alert, job, logging → policy, provider → recipient, schedule, template → phone,
//! secret, units.

pub mod alert;
pub mod campaign;
pub mod cli;
pub mod commands;
pub mod config;
pub mod delivery;
pub mod error;
pub mod job;
pub mod journal;
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
pub mod source;
pub mod template;
pub mod units;

use std::future::Future;

use cli::{Cli, Command};
use error::ExitStatus;

/// Runs one command. `shutdown` resolves when the process is asked to stop (Ctrl-C, SIGTERM);
/// long-running commands (`sandbox`) finish when it does.
pub async fn run(
    cli: Cli,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<ExitStatus> {
    match cli.command {
        Command::Send(args) => commands::send::run(&cli.global, args).await,
        Command::Health(args) => commands::health::run(&cli.global, args).await,
        Command::Config(cli::ConfigCommand::Check) => commands::config::check(&cli.global),
        Command::Bulk(args) => commands::bulk::run(&cli.global, *args, shutdown).await,
        Command::Jobs(args) => commands::jobs::list(&cli.global, args).await,
        Command::Status(args) => commands::jobs::status(&cli.global, args).await,
        Command::Sandbox(args) => commands::sandbox::run(*args, shutdown).await,
        Command::Demo => commands::demo::run(&cli.global, shutdown).await,
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
