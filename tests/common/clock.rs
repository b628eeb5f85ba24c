//! Running a command in-process with the wall clock set: "it is 20:59:58 in Seoul" without
//! waiting for it (quiet hours, an ad's night).

use clap::Parser as _;
use msgsend::cli::{BulkArgs, Cli, Command, SendArgs};
use msgsend::error::ExitStatus;
use msgsend::schedule::Clock;

/// `msgsend bulk ARGS` parsed, for an in-process run.
pub fn bulk(args: &[&str]) -> BulkArgs {
    let cli = Cli::try_parse_from(["msgsend", "bulk"].iter().chain(args)).unwrap();
    match cli.command {
        Command::Bulk(args) => *args,
        _ => unreachable!(),
    }
}

/// `msgsend send ARGS` parsed, for an in-process run.
pub fn send(args: &[&str]) -> SendArgs {
    let cli = Cli::try_parse_from(["msgsend", "send"].iter().chain(args)).unwrap();
    match cli.command {
        Command::Send(args) => args,
        _ => unreachable!(),
    }
}

/// The clock reading `time` (HH:MM:SS) in Seoul today, and running on from there.
pub fn seoul(time: &str) -> Clock {
    let today = super::crowd::today_in_seoul();
    Clock::starting_at(
        format!("{today}T{time}[Asia/Seoul]")
            .parse::<jiff::ZonedDateTime>()
            .unwrap()
            .timestamp(),
    )
}

/// Runs a campaign in-process with the clock reading `time` (Seoul, today) at its start.
pub async fn run_at(
    settings: &msgsend::config::Settings,
    args: BulkArgs,
    time: &str,
) -> ExitStatus {
    msgsend::commands::bulk::run_campaign(
        settings,
        args,
        false,
        seoul(time),
        std::future::pending(),
    )
    .await
    .unwrap()
}
