//! `msgsend bulk`: the command line of a campaign (SPEC sections 1–3 and 6) turned into a typed
//! [`CampaignPlan`] — a new job, `--resume` or `--retry-failed` — which
//! [`crate::campaign::run`] carries out. Clap's types stop here.

use std::future::Future;

use crate::campaign::{self, CampaignPlan, Deadline, JobOptions, JobPlan, SourceChoice};
use crate::cli::{BulkArgs, GlobalArgs};
use crate::config::{DatabaseUrl, Settings};
use crate::error::{ExitStatus, UsageError};
use crate::recipient::AgeRange;
use crate::schedule::{Clock, parse_deadline};

pub async fn run(
    global: &GlobalArgs,
    args: BulkArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<ExitStatus> {
    let settings = super::load_settings(global)?;
    let show_bar = super::progress_bar_wanted(global);
    run_campaign(&settings, args, show_bar, Clock::system(), shutdown).await
}

/// Runs the campaign `args` describe with settings already loaded and wall time from `clock`
/// (the campaign's date, quiet hours).
pub async fn run_campaign(
    settings: &Settings,
    args: BulkArgs,
    show_bar: bool,
    clock: Clock,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<ExitStatus> {
    let plan = plan(settings, args, show_bar)?;
    campaign::run(settings, plan, clock, shutdown).await
}

/// The plan the flags describe. The usage errors of the flags themselves are found here,
/// before the lock is taken; those that need the journal or the source come after it.
fn plan(settings: &Settings, args: BulkArgs, show_bar: bool) -> Result<CampaignPlan, UsageError> {
    if args.resend_uncertain && args.resume.is_none() {
        return Err(UsageError(
            "--resend-uncertain goes with --resume JOB_ID".into(),
        ));
    }
    if args.join {
        if settings.state_database.is_none() {
            return Err(UsageError(
                "--join needs state_database (SPEC section 9): on a state_dir one bulk runs at a time"
                    .into(),
            ));
        }
        if args.resume.as_deref().is_none_or(str::is_empty) {
            return Err(UsageError(
                "--join goes with --resume JOB_ID (the job to work beside)".into(),
            ));
        }
        if args.dry_run {
            return Err(UsageError(
                "--join sends beside a running run; a dry run of the job is --resume JOB_ID --dry-run"
                    .into(),
            ));
        }
    }
    let deadline = match (args.valid_until, args.valid_for) {
        (Some(until), _) => Some(Deadline::At(
            parse_deadline(&until, &settings.timezone)
                .map_err(|e| UsageError(format!("--valid-until {e}")))?,
        )),
        (None, Some(valid_for)) => Some(Deadline::After(valid_for)),
        (None, None) => None,
    };
    let options = JobOptions {
        strategy: args.strategy,
        concurrency: args.concurrency.map(|n| n as usize),
        max_failure_rate: args.max_failure_rate,
        max_cost: args.max_cost,
        deadline,
    };
    let job = if let Some(job_id) = args.resume {
        JobPlan::Resume {
            job_id: Some(job_id),
            resend_uncertain: args.resend_uncertain,
            max_cost: args.max_cost,
            join: args.join,
        }
    } else if let Some(original) = args.retry_failed {
        JobPlan::RetryFailed {
            original,
            job_id: args.job_id,
            options,
        }
    } else {
        JobPlan::New {
            job_id: args.job_id,
            ages: ages(args.age_group.as_deref(), args.age_range.as_deref())?,
            message: message(args.message, args.message_file.as_deref())?,
            kind: args.kind.unwrap_or(settings.message.kind),
            source: source(settings, args.csv, args.db, args.query)?,
            options,
        }
    };
    Ok(CampaignPlan {
        job,
        dry_run: args.dry_run,
        ignore_quiet_hours: args.ignore_quiet_hours,
        no_preflight: args.no_preflight,
        summary_json: args.summary_json,
        failed_csv: args.failed_csv,
        invalid_csv: args.invalid_csv,
        show_bar,
    })
}

fn ages(group: Option<&str>, range: Option<&str>) -> Result<AgeRange, UsageError> {
    match (group, range) {
        (Some(group), _) => AgeRange::group(group),
        (None, Some(range)) => AgeRange::range(range),
        (None, None) => Err("give --age-group (10s … 90s) or --age-range A-B".to_string()),
    }
    .map_err(UsageError)
}

fn message(text: Option<String>, file: Option<&std::path::Path>) -> Result<String, UsageError> {
    let text = match (text, file) {
        (Some(text), _) => text,
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("--message-file {}: {e}", path.display())))?
            // An editor's byte-order mark is not text to send (SMS cannot even carry it).
            .trim_start_matches('\u{feff}')
            .trim_end_matches(['\n', '\r'])
            .to_string(),
        (None, None) => {
            return Err(UsageError(
                "give --message TEXT or --message-file FILE".into(),
            ));
        }
    };
    super::non_empty_message(text)
}

/// `--csv` or `--db` (with `--query`), else `[source]`.
fn source(
    settings: &Settings,
    csv: Option<std::path::PathBuf>,
    db: Option<String>,
    query: Option<String>,
) -> Result<SourceChoice, UsageError> {
    let configured = &settings.source;
    Ok(match (csv, db) {
        (Some(csv), _) => SourceChoice::Csv(csv),
        (None, Some(url)) => SourceChoice::Database {
            url: DatabaseUrl::parse(url).map_err(|e| UsageError(format!("--db {e}")))?,
            query: query.unwrap_or_else(|| configured.query.clone()),
        },
        (None, None) => match (&configured.csv, &configured.database) {
            (Some(_), Some(_)) => {
                return Err(UsageError(
                    "[source] sets both csv and database: keep one, or pick with --csv / --db"
                        .into(),
                ));
            }
            (Some(csv), None) => SourceChoice::Csv(csv.clone()),
            (None, Some(url)) => SourceChoice::Database {
                url: url.clone(),
                query: configured.query.clone(),
            },
            (None, None) => {
                return Err(UsageError(
                    "no recipients: give --csv FILE or --db URL, or set [source] in the config"
                        .into(),
                ));
            }
        },
    })
}
