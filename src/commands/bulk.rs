//! `msgsend bulk`: a campaign (SPEC sections 1–3 and 6). This module turns the flags, the
//! config and the journal into one [`CampaignParams`] (a new job, `--resume`, or
//! `--retry-failed`), checks everything that can be checked before a request goes out (the
//! lock, the source and its columns, the template), then runs the pipeline and reports:
//! summary on stdout (or JSON), `--failed-csv`, exit code.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;

use crate::alert::Alerter;
use crate::cli::{BulkArgs, GlobalArgs};
use crate::config::{DatabaseUrl, Settings};
use crate::delivery::Router;
use crate::error::{ExitStatus, UsageError};
use crate::job::{CampaignParams, JobStatus, StoredSource};
use crate::journal::{self, Journal, JournalError};
use crate::pipeline::{self, Campaign, Reporting, StopReason};
use crate::provider::http_client;
use crate::recipient::AgeRange;
use crate::report::alerts::Watch;
use crate::report::metrics::Metrics;
use crate::report::progress::Progress;
use crate::report::summary::{RunFigures, Summary};
use crate::schedule::Clock;
use crate::source::{self, AgeFilter, SourceSpec};
use crate::template::{MessageTemplate, Template};

mod dry_run;
mod stops;

use stops::Stops;

/// How often `[metrics] textfile` is rewritten during a campaign (SPEC section 6).
const METRICS_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

pub async fn run(
    global: &GlobalArgs,
    args: BulkArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<ExitStatus> {
    let settings = super::load_settings(global)?;
    let show_bar = super::progress_bar_wanted(global);
    run_campaign(&settings, args, show_bar, Clock::system(), shutdown).await
}

/// Runs a campaign with settings already loaded (`demo` builds its own) and wall time from
/// `clock` (the campaign's date, quiet hours).
pub async fn run_campaign(
    settings: &Settings,
    args: BulkArgs,
    show_bar: bool,
    clock: Clock,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<ExitStatus> {
    if args.resend_uncertain && args.resume.is_none() {
        return Err(UsageError("--resend-uncertain goes with --resume JOB_ID".into()).into());
    }
    // The lock first: a second bulk must be refused at once, before any other work.
    let _lock = if args.dry_run {
        None
    } else {
        Some(journal::lock(&settings.state_dir)?)
    };
    let mut journal = if args.dry_run {
        Journal::in_memory().await?
    } else {
        Journal::open(&settings.state_dir).await?
    };
    let Some((job_id, params, db_url)) = plan(settings, &args, &mut journal, clock).await? else {
        println!(
            "Nothing to resume: every job in {} is done",
            settings.state_dir.display()
        );
        return Ok(ExitStatus::Success);
    };
    let template = message_template(&params)?;
    let spec = source_spec(&params.source, db_url, settings)?;
    let ages = AgeFilter {
        range: params.ages,
        today: params.date,
    };
    let opened = source::open(&spec, ages).await?;
    let mut available: Vec<&str> = opened.columns.iter().map(String::as_str).collect();
    for always in ["name", "phone"] {
        if !available.contains(&always) {
            available.push(always);
        }
    }
    template
        .check_fields(&available)
        .map_err(|e| UsageError(format!("the message or [message] header: {e}")))?;
    super::check_length(
        settings,
        &template.render(|_| Some("")),
        "before any placeholder is filled",
    )?;
    let suppression = match &settings.source.suppression {
        Some(path) => source::suppression::load(path)?,
        None => Default::default(),
    };

    if args.dry_run {
        return dry_run::run(&params, &template, opened, &suppression, journal, &spec).await;
    }
    if args.resume.is_none() {
        journal.create_job(&job_id, &params).await?;
    }
    let quiet_hours = settings.quiet_hours.filter(|_| !args.ignore_quiet_hours);
    if let Some(quiet) = quiet_hours
        && quiet.contains(clock.now_in(&settings.timezone).time())
    {
        // Recorded as paused, so the same cron line's `--resume` later picks it up.
        journal.set_status(&job_id, JobStatus::Paused).await?;
        tracing::warn!(job_id = %job_id, quiet_hours = %quiet, "inside quiet hours: not starting (--ignore-quiet-hours overrides)");
        println!(
            "Campaign {job_id}: PAUSED (quiet hours {quiet}); continue it with `msgsend bulk --resume {job_id}`"
        );
        return Ok(ExitStatus::Paused);
    }
    let run = journal.begin_run(&job_id, args.resend_uncertain).await?;
    tracing::info!(job_id = %job_id, run, source = %spec, ages = %params.ages, date = %params.date, "campaign started");

    let http = http_client();
    let alerter = Alerter::new(settings.alerts.webhook.clone(), http.clone());
    alerter.set_job(&job_id);
    let mut routing_settings = settings.clone();
    routing_settings.routing.strategy = params.strategy;
    let router = Arc::new(
        Router::new(&routing_settings, http.clone(), None, false)
            .map_err(UsageError)?
            .with_alerter(&alerter),
    );
    let campaign = Campaign {
        job_id: job_id.clone(),
        run,
        source_label: spec.to_string(),
        template,
        suppression,
        retry_of: params.retry_of.clone(),
        concurrency: params.concurrency,
        batch_size: settings.bulk.batch_size,
        shutdown_grace: settings.bulk.shutdown_grace,
        max_failure_rate: params.max_failure_rate,
        all_open_wait: settings.breaker.all_open_wait,
    };
    let stops = Stops::new();
    stops.on(
        shutdown,
        JobStatus::Interrupted,
        "stopping: no new recipients; in-flight sends get the shutdown grace",
    );
    if let Some(quiet) = quiet_hours {
        let wait = quiet.until_start(&clock.now_in(&settings.timezone));
        stops.on(
            tokio::time::sleep(wait),
            JobStatus::Paused,
            "quiet hours begin: pausing; in-flight sends get the shutdown grace",
        );
    }
    let metrics = Arc::new(Metrics::new());
    let textfile = settings.metrics.textfile.clone().map(|path| {
        let router = router.clone();
        tokio::spawn(
            metrics
                .clone()
                .write_every(METRICS_EVERY, path, move |metrics| {
                    metrics.observe_circuits(router.circuits());
                }),
        )
    });
    let started = Instant::now();
    let progress = Progress::start(show_bar);
    // The progress total is counted beside the run rather than before it: over millions of
    // rows the count pass takes seconds that the first send should not wait for. (Polled in
    // this task, not spawned: sqlx's query futures are not provably `Send` for a spawn.)
    let counting = async {
        match source::count_in_range(&spec, ages).await {
            Ok(total) => progress.set_total(total),
            Err(error) => tracing::debug!("no progress total: {error}"),
        }
    };
    let reporting = Reporting {
        progress: progress.clone(),
        metrics: metrics.clone(),
        watch: Watch::new(alerter.clone(), &settings.alerts),
    };
    let result = {
        let run = pipeline::run(
            &campaign,
            opened,
            router.clone(),
            &mut journal,
            reporting,
            stops.token(),
        );
        tokio::pin!(run);
        tokio::select! {
            result = &mut run => result,
            () = counting => run.await,
        }
    };
    progress.finish();
    if let Some(task) = textfile {
        task.abort();
    }
    publish_metrics(settings, &metrics, &router, &http, &job_id).await;
    alerter.flush().await;
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(error) => {
            // What was recorded stays recorded; the job can be resumed once the cause is fixed.
            // It stays `RUNNING` (as after a kill) unless its in-flight rows could be resolved.
            if journal.resolve_in_flight(&job_id).await.is_ok() {
                let _ = journal.set_status(&job_id, JobStatus::Interrupted).await;
            }
            return Err(error.into());
        }
    };
    let (status, stop_reason) = match &outcome.stop {
        StopReason::Finished => (JobStatus::Done, None),
        StopReason::Interrupted => (stops.cause().unwrap_or(JobStatus::Interrupted), None),
        StopReason::Aborted => (JobStatus::Aborted, None),
        StopReason::ProvidersUnusable(reason) => (JobStatus::Interrupted, Some(reason.clone())),
    };
    let duration = started.elapsed();
    journal
        .end_run(&job_id, status, outcome.source, outcome.retries, duration)
        .await?;
    let job = journal.job(&job_id).await?;
    let summary = Summary::new(RunFigures {
        job_id: &job_id,
        status,
        reason: stop_reason.clone(),
        source: outcome.source,
        states: job.states,
        retries: job.retries,
        sends: outcome.sends,
        duration,
        providers: router
            .channels()
            .map(|channel| {
                let kind = channel.kind();
                (
                    kind,
                    outcome.providers.get(&kind),
                    channel.circuit_openings(),
                )
            })
            .filter_map(|(kind, stats, openings)| stats.map(|stats| (kind, stats, openings)))
            .collect(),
    });
    tracing::info!(job_id = %job_id, status = status.name(), sent = summary.sent, fallback = summary.fallback, failed = summary.failed, "campaign ended");
    if let Some(path) = &args.failed_csv {
        write_failed_csv(path, &journal.undelivered(&job_id).await?)?;
    }
    write_summary(&summary, args.summary_json.as_deref())?;
    Ok(match status {
        // Stopped by a runtime condition (every provider unusable), not by the operator.
        JobStatus::Interrupted if stop_reason.is_some() => ExitStatus::Stopped,
        JobStatus::Interrupted => ExitStatus::Interrupted,
        JobStatus::Paused => ExitStatus::Paused,
        JobStatus::Aborted => ExitStatus::NotDelivered,
        JobStatus::Done | JobStatus::Running if summary.failed + summary.uncertain > 0 => {
            ExitStatus::NotDelivered
        }
        JobStatus::Done | JobStatus::Running => ExitStatus::Success,
    })
}

/// The job to run: its id, its parameters, and (for a new job) the database URL as given,
/// password included, which the journal does not store.
async fn plan(
    settings: &Settings,
    args: &BulkArgs,
    journal: &mut Journal,
    clock: Clock,
) -> anyhow::Result<Option<(String, CampaignParams, Option<DatabaseUrl>)>> {
    if let Some(job_id) = &args.resume {
        let job_id = if job_id.is_empty() {
            // `--resume` alone: the newest job not done, for cron lines that just continue.
            match journal.latest_unfinished().await? {
                Some(id) => id,
                None => return Ok(None),
            }
        } else {
            job_id.clone()
        };
        let params = journal.params(&job_id).await?;
        return Ok(Some((job_id, params, None)));
    }
    let job_id = args
        .job_id
        .clone()
        .unwrap_or_else(|| new_job_id(settings, clock));
    if job_id.is_empty() {
        return Err(UsageError("--job-id must not be empty".into()).into());
    }
    if let Some(original) = &args.retry_failed {
        let mut params = journal.params(original).await?;
        params.retry_of = Some(original.clone());
        params.strategy = args.strategy.unwrap_or(params.strategy);
        params.concurrency = args.concurrency.map_or(params.concurrency, |n| n as usize);
        params.max_failure_rate = args.max_failure_rate.or(params.max_failure_rate);
        return Ok(Some((job_id, params, None)));
    }
    let ages = match (&args.age_group, &args.age_range) {
        (Some(group), _) => AgeRange::group(group),
        (None, Some(range)) => AgeRange::range(range),
        (None, None) => Err("give --age-group (10s … 90s) or --age-range A-B".to_string()),
    }
    .map_err(UsageError)?;
    let message = match (&args.message, &args.message_file) {
        (Some(text), _) => text.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("--message-file {}: {e}", path.display())))?
            .trim_end_matches(['\n', '\r'])
            .to_string(),
        (None, None) => {
            return Err(UsageError("give --message TEXT or --message-file FILE".into()).into());
        }
    };
    let (source, db_url) = match (&args.csv, &args.db, &settings.source) {
        (Some(csv), _, _) => (stored_csv(csv), None),
        (None, Some(url), source) => {
            let url =
                DatabaseUrl::parse(url.clone()).map_err(|e| UsageError(format!("--db {e}")))?;
            let query = args.query.clone().unwrap_or_else(|| source.query.clone());
            (
                StoredSource::Database {
                    url: url.to_string(),
                    query,
                },
                Some(url),
            )
        }
        (None, None, source) => match (&source.csv, &source.database) {
            (Some(_), Some(_)) => {
                return Err(UsageError(
                    "[source] sets both csv and database: keep one, or pick with --csv / --db"
                        .into(),
                )
                .into());
            }
            (Some(csv), None) => (stored_csv(csv), None),
            (None, Some(url)) => (
                StoredSource::Database {
                    url: url.to_string(),
                    query: source.query.clone(),
                },
                Some(url.clone()),
            ),
            (None, None) => {
                return Err(UsageError(
                    "no recipients: give --csv FILE or --db URL, or set [source] in the config"
                        .into(),
                )
                .into());
            }
        },
    };
    let params = CampaignParams {
        source,
        ages,
        date: clock.now_in(&settings.timezone).date(),
        message,
        header: settings.header.as_ref().map(Template::to_string),
        strategy: args.strategy.unwrap_or(settings.routing.strategy),
        concurrency: args
            .concurrency
            .map_or(settings.bulk.concurrency, |n| n as usize),
        max_failure_rate: args.max_failure_rate,
        retry_of: None,
    };
    Ok(Some((job_id, params, db_url)))
}

/// A CSV path as stored: absolute, so a resume from another directory reads the same file.
fn stored_csv(path: &Path) -> StoredSource {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    StoredSource::Csv { path }
}

/// `20261124-201500-3fa2`: sortable by start time, unique enough for one state_dir.
fn new_job_id(settings: &Settings, clock: Clock) -> String {
    let now = clock.now_in(&settings.timezone);
    format!(
        "{}-{:04x}",
        now.strftime("%Y%m%d-%H%M%S"),
        rand::random::<u16>()
    )
}

fn message_template(params: &CampaignParams) -> Result<MessageTemplate, UsageError> {
    let body =
        Template::parse(&params.message).map_err(|e| UsageError(format!("the message: {e}")))?;
    let header = params
        .header
        .as_deref()
        .map(Template::parse)
        .transpose()
        .map_err(|e| UsageError(format!("[message] header: {e}")))?;
    Ok(MessageTemplate { header, body })
}

/// The source to read. A stored database URL had its password redacted; the config's
/// `[source] database` supplies it when it names the same database.
fn source_spec(
    stored: &StoredSource,
    given: Option<DatabaseUrl>,
    settings: &Settings,
) -> Result<SourceSpec, JournalError> {
    Ok(match stored {
        StoredSource::Csv { path } => SourceSpec::Csv(path.clone()),
        StoredSource::Database { url, query } => {
            let url = match given {
                Some(given) => given,
                None => match &settings.source.database {
                    Some(configured) if configured.to_string() == *url => configured.clone(),
                    _ => DatabaseUrl::parse(url.clone()).map_err(|message| {
                        JournalError::BadParams {
                            job: "(resume)".into(),
                            message,
                        }
                    })?,
                },
            };
            SourceSpec::Database {
                url,
                query: query.clone(),
            }
        }
    })
}

fn write_failed_csv(path: &PathBuf, rows: &[journal::Undelivered]) -> anyhow::Result<()> {
    let mut writer =
        csv::Writer::from_path(path).with_context(|| format!("--failed-csv {}", path.display()))?;
    writer.write_record(["phone", "name", "reason", "line"])?;
    for row in rows {
        writer.write_record([
            row.phone.as_str(),
            &spreadsheet_safe(&row.name),
            &spreadsheet_safe(&row.reason),
            &row.line.to_string(),
        ])?;
    }
    writer
        .flush()
        .with_context(|| format!("--failed-csv {}", path.display()))?;
    Ok(())
}

/// A cell a spreadsheet will not evaluate: source text starting with `=`, `+`, `-`, `@`, a tab
/// or a carriage return (a formula, e.g. `=cmd|' /C calc'!A0`) gets a leading `'`, which
/// spreadsheets show as text. The CSV quoting itself is the csv crate's.
fn spreadsheet_safe(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}

/// The table on stdout; with `--summary-json -` the JSON instead, with `--summary-json FILE`
/// the JSON in the file as well.
fn write_summary(summary: &Summary, json: Option<&Path>) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match json {
        Some(path) if path == Path::new("-") => summary.write_json(&mut stdout)?,
        Some(path) => {
            let mut file = std::fs::File::create(path)
                .with_context(|| format!("--summary-json {}", path.display()))?;
            summary.write_json(&mut file)?;
            summary.write_text(&mut stdout)?;
        }
        None => summary.write_text(&mut stdout)?,
    }
    stdout.flush()?;
    Ok(())
}

/// The end-of-run metrics: the textfile once more, and the Pushgateway. Failures are logged;
/// monitoring never changes a campaign's outcome.
async fn publish_metrics(
    settings: &Settings,
    metrics: &Metrics,
    router: &Router,
    http: &reqwest::Client,
    job_id: &str,
) {
    metrics.observe_circuits(router.circuits());
    if let Some(path) = &settings.metrics.textfile
        && let Err(error) = metrics.write_textfile(path)
    {
        tracing::warn!(file = %path.display(), "cannot write the metrics textfile: {error}");
    }
    if let Some(gateway) = &settings.metrics.pushgateway
        && let Err(error) = metrics.push(http, gateway, job_id).await
    {
        tracing::warn!(pushgateway = %gateway, "cannot push the metrics: {error}");
    }
}
