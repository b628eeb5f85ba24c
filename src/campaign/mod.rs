//! A campaign run from its [`CampaignPlan`] to its exit code, in three steps:
//!
//! 1. **prepare**: the lock first (a second `bulk` is refused at once; only the plan's own
//!    usage errors, found while it was built, come earlier), the journal, the job (new,
//!    `--resume`, `--retry-failed`), then everything that can be checked before a request goes
//!    out — the source and its columns, the template, the message length, the suppression list,
//!    the output files, quiet hours — so a bad campaign stops with nothing sent.
//! 2. **execute**: the pipeline (source → producer → sends → collector), with the progress
//!    display, the metrics textfile and the alerts beside it, and one [`Stopper`] that signals
//!    and quiet hours stop.
//! 3. **finish**: the job's status from the stop cause, the summary, `--failed-csv`, the metrics
//!    published, the exit code from the stop cause.
//!
//! `--dry-run` shares the first step and then only admits and counts ([`dry_run`]).

mod dry_run;
mod finish;
mod outputs;
pub mod plan;
mod reading;

use finish::{Finished, finish};
use outputs::Outputs;
use reading::Reading;

pub use plan::{CampaignPlan, Deadline, Job, JobOptions, JobPlan, SourceChoice};

use std::collections::HashSet;
use std::future::Future;

use futures_util::FutureExt as _;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::advert::{AD_NIGHT, MessageKind};
use crate::alert::Alerter;
use crate::config::{RoutingSettings, Settings};
use crate::delivery::Pricing;
use crate::delivery::Router;
use crate::error::{ExitStatus, UsageError};
use crate::job::JobStatus;
use crate::journal::{Journal, JournalError, Role, State, StateLock};
use crate::phone::Phone;
use crate::pipeline::{self, Campaign, ConsentRule, Reporting, StopCause, Stopper};
use crate::provider::http_client_for;
use crate::report::alerts::Watch;
use crate::report::invalid_rows::InvalidRows;
use crate::report::metrics::Metrics;
use crate::report::output::{SummaryJson, write_summary_or_line};
use crate::report::progress::Progress;
use crate::report::summary::{RunFigures, Summary};
use crate::schedule::{Clock, QuietHours};
use crate::source::{self, AgeFilter, OpenSource, SourceSpec};
use crate::template::MessageTemplate;

/// How often `[metrics] textfile` is rewritten during a campaign (SPEC section 6).
const METRICS_EVERY: Duration = Duration::from_secs(30);

/// Runs the campaign `plan` describes, with wall time from `clock` (the campaign's date, quiet
/// hours); `shutdown` resolves on Ctrl-C / SIGTERM.
pub async fn run(
    settings: &Settings,
    plan: CampaignPlan,
    clock: Clock,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<ExitStatus> {
    // A signal before the run starts (a slow source to open, a dry run) stops it too.
    let shutdown = shutdown.shared();
    let interrupted = || {
        tracing::warn!("interrupted before any message was sent");
        Ok(ExitStatus::Interrupted)
    };
    let prepared = tokio::select! {
        prepared = prepare(settings, &plan, clock) => prepared?,
        () = shutdown.clone() => return interrupted(),
    };
    let Some(prepared) = prepared else {
        let state = match &settings.state_database {
            Some(url) => url.to_string(),
            None => settings.state_dir.display().to_string(),
        };
        let _ = writeln!(
            std::io::stdout(),
            "Nothing to resume: every job in {state} is done"
        );
        return Ok(ExitStatus::Success);
    };
    if plan.dry_run {
        return tokio::select! {
            counted = dry_run::run(prepared, settings, clock) => counted,
            () = shutdown => interrupted(),
        };
    }
    execute(settings, &plan, prepared, clock, shutdown).await
}

/// A campaign checked and ready: nothing has been sent yet.
struct Prepared {
    /// Held until the run ends; `None` for a dry run of a new job.
    lock: Option<StateLock>,
    /// Whether this run reads the source or joined a running one (PostgreSQL state).
    role: Role,
    /// Where the journal, the lock and the ledger live.
    state: State,
    journal: Journal,
    job: Job,
    spec: SourceSpec,
    /// How the source is read; `None` for a joined run, which reads none.
    reading: Option<Reading>,
    source: Option<OpenSource>,
    template: MessageTemplate,
    suppression: HashSet<Phone>,
    consent: Option<ConsentRule>,
    outputs: Outputs,
}

/// Step 1; `None` when a `--resume` finds nothing to resume.
async fn prepare(
    settings: &Settings,
    plan: &CampaignPlan,
    clock: Clock,
) -> anyhow::Result<Option<Prepared>> {
    // The lock first: a second bulk must be refused at once, before any other work. A dry run
    // of a new job needs no state at all; one of a resume or a retry reads the job's recipients
    // (and holds the lock, as its admission writes in a transaction it never commits). On a
    // PostgreSQL state the lock is the job's, taken as soon as the job is known.
    let dry_new = matches!((&plan.job, plan.dry_run), (JobPlan::New { .. }, true));
    let state = if dry_new {
        // Never used: a dry run of a new job touches no state (no database connection either).
        State::Dir(settings.state_dir.clone())
    } else {
        State::open(settings).await?
    };
    let (lock, mut journal) = if dry_new {
        (None, Journal::in_memory().await?)
    } else {
        let lock = state.lock_first()?;
        (lock, state.journal().await?)
    };
    let Some(job) = plan
        .job
        .clone()
        .resolve(settings, &mut journal, clock)
        .await?
    else {
        return Ok(None);
    };
    if plan.joins() && job.params.max_cost.is_some() {
        // Each run reserves from what the job spent when it began: two at once could pass it.
        return Err(UsageError(format!(
            "job {} has a budget (--max-cost), which one run at a time keeps: it cannot be joined; --resume it once its run ends",
            job.id
        ))
        .into());
    }
    let (lock, role) = match lock {
        Some(lock) => (Some(lock), Role::Leader),
        None if dry_new => (None, Role::Leader),
        None => {
            let (lock, role) = state.lock_job(&job.id, plan.joins()).await?;
            (Some(lock), role)
        }
    };
    let template = job.template()?;
    let spec = job.source_spec(settings)?;
    let suppression = match &settings.source.suppression {
        Some(path) => source::suppression::load(path)?,
        None => HashSet::new(),
    };
    // A joined run reads no source: the leader screens and admits every row, and the joined
    // run renders from the values admission stored.
    let (reading, source, consent) = if role == Role::Joined {
        tracing::info!(job_id = %job.id, "joining the job's running run: claiming queued recipients");
        (None, None, None)
    } else {
        let consent_column =
            (job.params.kind == MessageKind::Ad).then_some(settings.source.consent_column.as_str());
        let reading =
            Reading::decide(&mut journal, &job, &spec, &suppression, consent_column).await?;
        let source = reading.open(&spec, ages(&job)).await?;
        let mut available: Vec<&str> = source.columns.iter().map(String::as_str).collect();
        for always in ["name", "phone"] {
            if !available.contains(&always) {
                available.push(always);
            }
        }
        template
            .check_fields(&available)
            .map_err(|e| UsageError(format!("the message or [message] header: {e}")))?;
        let consent = consent_rule(settings, &job, &spec, &source)?;
        (Some(reading), Some(source), consent)
    };
    settings
        .check_message_length(
            &template.render(|_| Some("")),
            "before any placeholder is filled",
        )
        .map_err(UsageError)?;
    check_budget(settings, &job)?;
    let outputs = Outputs::create(plan)?;
    Ok(Some(Prepared {
        lock,
        role,
        state,
        journal,
        job,
        spec,
        reading,
        source,
        template,
        suppression,
        consent,
        outputs,
    }))
}

/// An ad's consent rule (SPEC section 10): its source must have the consent column, or the
/// campaign stops before anything is sent (exit 1, like any other missing column).
fn consent_rule(
    settings: &Settings,
    job: &Job,
    spec: &SourceSpec,
    source: &OpenSource,
) -> anyhow::Result<Option<ConsentRule>> {
    if job.params.kind != MessageKind::Ad {
        return Ok(None);
    }
    let column = &settings.source.consent_column;
    if !source.columns.iter().any(|c| c == column) {
        anyhow::bail!(
            "{spec}: has no `{column}` column: an ad goes only to recipients whose advertising consent is dated there ([source] consent_column)"
        );
    }
    Ok(Some(ConsentRule {
        column: column.clone(),
        campaign_date: job.params.date,
    }))
}

/// A budget needs a price on every channel the run may use: an unpriced one would spend
/// without counting (exit 2, nothing sent).
fn check_budget(settings: &Settings, job: &Job) -> Result<(), UsageError> {
    if job.params.max_cost.is_none() {
        return Ok(());
    }
    let pricing = Pricing::new(&settings.providers);
    let routing = &settings.routing;
    for kind in std::iter::once(routing.primary).chain(routing.fallback) {
        if !pricing.is_priced(kind) {
            return Err(UsageError(format!(
                "--max-cost needs a price for every channel: add [providers.{kind}] price"
            )));
        }
    }
    Ok(())
}

fn ages(job: &Job) -> AgeFilter {
    AgeFilter {
        range: job.params.ages,
        today: job.params.date,
    }
}

/// Steps 2 and 3.
async fn execute(
    settings: &Settings,
    plan: &CampaignPlan,
    prepared: Prepared,
    clock: Clock,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<ExitStatus> {
    let Prepared {
        lock,
        role,
        state,
        mut journal,
        job,
        spec,
        reading,
        source,
        template,
        suppression,
        consent,
        outputs,
    } = prepared;
    if job.is_new {
        journal
            .create_job(&job.id, &job.params)
            .await
            .map_err(|error| match error {
                // A taken --job-id is the operator's to change: a usage error, nothing sent.
                JournalError::JobExists(_) => anyhow::Error::from(UsageError(error.to_string())),
                other => other.into(),
            })?;
    } else if job.budget_changed {
        journal.update_params(&job.id, &job.params).await?;
    }
    // A run may not start at all: a deadline already past (the job is expired: a late cron
    // start is not a usage error; a resume of an expired job says so), quiet hours, or an ad's
    // night, which is not the operator's to lift (SPEC section 10).
    let quiet_hours = settings.quiet_hours.filter(|_| !plan.ignore_quiet_hours);
    let ad_night = (job.params.kind == MessageKind::Ad).then_some(AD_NIGHT);
    let now = clock.now_in(&settings.timezone);
    let refusal = match (job.params.deadline, quiet_hours, ad_night) {
        (Some(deadline), _, _) if now.timestamp() >= deadline => Some(Refusal::Expired(deadline)),
        (_, Some(quiet), _) if quiet.contains(now.time()) => Some(Refusal::QuietHours(quiet)),
        (_, _, Some(night)) if night.contains(now.time()) => Some(Refusal::AdNight),
        _ => None,
    };
    if let Some(refusal) = refusal {
        let currency = &settings.message.currency;
        return refuse_to_start(
            &mut journal,
            &job.id,
            refusal,
            // A joined run leaves the job's status to the run it joined.
            role == Role::Leader,
            outputs.summary_json,
            currency,
        )
        .await;
    }
    let run_start = lock
        .as_ref()
        .map(|lock| lock.run_start(role))
        .unwrap_or_default();
    let run = journal
        .begin_run(&job.id, job.resend_uncertain, run_start)
        .await?;
    let checkpoints = match &reading {
        Some(reading) => reading.begin(&mut journal, &job.id, run, true).await?,
        None => None,
    };
    // What earlier runs spent, for a budget only: it is a scan of the job's rows.
    let budget = match job.params.max_cost {
        Some(limit) => Some((limit, journal.job(&job.id).await?.spending.total())),
        None => None,
    };
    tracing::info!(job_id = %job.id, run, source = %spec, ages = %job.params.ages, date = %job.params.date, "campaign started");

    let http = http_client_for(&settings.providers);
    let alerter = Alerter::new(settings.alerts.webhook.clone(), http.clone());
    alerter.set_job(&job.id);
    let routing = RoutingSettings {
        strategy: job.params.strategy,
        ..settings.routing.clone()
    };
    // The quotas are shared with every msgsend process on this state (SPEC section 8).
    let ledger = state.ledger().await?;
    let router = Arc::new(
        Router::new(settings, &routing, http.clone(), &ledger)
            .map_err(UsageError)?
            .with_alerter(&alerter)
            .with_max_wait(settings.bulk.max_wait),
    );
    // Runs may join the job only on a PostgreSQL state: only there is a placeholder's value
    // stored with each recipient.
    let stored_fields = match state {
        State::Database(_) => template.source_fields().into(),
        State::Dir(_) => Arc::from([]),
    };
    let campaign = Campaign {
        job_id: job.id.clone(),
        run,
        source_label: spec.to_string(),
        template,
        suppression,
        retry_of: job.params.retry_of.clone(),
        concurrency: job.params.concurrency,
        batch_size: settings.bulk.batch_size,
        shutdown_grace: settings.bulk.shutdown_grace,
        max_failure_rate: job.params.max_failure_rate,
        all_open_wait: settings.breaker.all_open_wait,
        consent,
        pricing: Pricing::new(&settings.providers),
        budget,
        deadline: job.params.deadline.map(|at| (at, clock)),
        resumed_from: reading.and_then(|reading| reading.from),
        checkpoints,
        stored_fields,
    };
    // Pre-flight (SPEC section 3): every provider this run may use, probed at once before
    // its first message; the results set the channels' starting state and raise the alerts.
    let preflight = if settings.routing.preflight && !plan.no_preflight {
        router.preflight().await
    } else {
        router.preflight_skipped()
    };
    let stopper = Stopper::new();
    stopper.stop_on(shutdown, StopCause::Signal);
    if let Some(lock) = &lock {
        // Another host may take the job over once this one's lock is gone.
        stopper.stop_on(lock.lost(), StopCause::Journal);
    }
    if let Some(quiet) = quiet_hours {
        let wait = quiet.until_start(&clock.now_in(&settings.timezone));
        stopper.stop_on(tokio::time::sleep(wait), StopCause::QuietHours);
    }
    if let Some(night) = ad_night {
        let wait = night.until_start(&clock.now_in(&settings.timezone));
        stopper.stop_on(tokio::time::sleep(wait), StopCause::AdNight);
    }
    if let Some(deadline) = job.params.deadline {
        let wait = crate::schedule::until(clock.now(), deadline);
        stopper.stop_on(tokio::time::sleep(wait), StopCause::Expired);
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
    let progress = Progress::start(plan.show_bar);
    // The progress total is counted beside the run rather than before it: over millions of
    // rows the count pass takes seconds that the first send should not wait for. (Polled in
    // this task, not spawned: sqlx's query futures are not provably `Send` for a spawn.)
    let reads_source = source.is_some();
    let counting = async {
        if !reads_source {
            // A joined run claims as it goes: no total to show.
            return std::future::pending().await;
        }
        match source::count_in_range(&spec, ages(&job)).await {
            Ok(total) => progress.set_total(total),
            Err(error) => tracing::debug!("no progress total: {error}"),
        }
    };
    let reporting = Reporting {
        progress: progress.clone(),
        metrics: metrics.clone(),
        watch: Watch::new(alerter.clone(), &settings.alerts),
        invalid_rows: InvalidRows::new(&campaign.source_label, outputs.invalid_csv)?,
    };
    let result = {
        let run = pipeline::run(
            &campaign,
            source,
            router.clone(),
            &mut journal,
            reporting,
            &stopper,
        );
        tokio::pin!(run);
        tokio::select! {
            result = &mut run => result,
            () = counting => run.await,
        }
    };
    // Why the run stopped is settled now: a signal or quiet hours arriving while the metrics
    // and alerts below are published must not turn a finished run into a stopped one.
    let cause = stopper.cause();
    router.close().await;
    progress.finish();
    if let Some(task) = textfile {
        task.abort();
    }
    metrics.observe_circuits(router.circuits());
    metrics.publish(&settings.metrics, &http, &job.id).await;
    alerter.flush().await;
    let finished = Finished {
        job: &job,
        run,
        read_source: reads_source,
        suppression: &campaign.suppression,
        preflight: &preflight,
        cause,
        duration: started.elapsed(),
        router: &router,
        currency: &settings.message.currency,
    };
    finish(
        outputs.failed_csv,
        outputs.summary_json,
        &mut journal,
        finished,
        result,
    )
    .await
}

/// Why a run does not start at all: nothing is sent, the job is recorded so that the same cron
/// line's `--resume` picks it up later (or, expired, says why it never will).
enum Refusal {
    /// Inside `[schedule] quiet_hours`.
    QuietHours(QuietHours),
    /// An ad, inside 21:00–08:00 (not liftable).
    AdNight,
    /// The job's deadline has passed.
    Expired(jiff::Timestamp),
}

/// Records a run refused before its start (the job `PAUSED` or `EXPIRED`), says why on the log
/// and stdout — as the summary's JSON with `--summary-json`, whose keys are always there —
/// and returns the exit code.
async fn refuse_to_start(
    journal: &mut Journal,
    job_id: &str,
    refusal: Refusal,
    record_status: bool,
    summary_json: Option<SummaryJson>,
    currency: &str,
) -> anyhow::Result<ExitStatus> {
    let (status, reason, exit) = match refusal {
        Refusal::QuietHours(quiet) => {
            if record_status {
                journal.set_status(job_id, JobStatus::Paused).await?;
            }
            tracing::warn!(job_id = %job_id, quiet_hours = %quiet, "inside quiet hours: not starting (--ignore-quiet-hours overrides)");
            (
                JobStatus::Paused,
                format!("quiet hours {quiet}"),
                ExitStatus::Paused,
            )
        }
        Refusal::AdNight => {
            if record_status {
                journal.set_status(job_id, JobStatus::Paused).await?;
            }
            tracing::warn!(job_id = %job_id, night = %AD_NIGHT, "an ad is not sent from 21:00 to 08:00 (not liftable): not starting");
            (
                JobStatus::Paused,
                format!("ads are not sent {AD_NIGHT}"),
                ExitStatus::Paused,
            )
        }
        Refusal::Expired(deadline) => {
            if record_status {
                journal.expire(job_id).await?;
            }
            tracing::warn!(job_id = %job_id, deadline = %deadline, "the job expired: nothing sent");
            (
                JobStatus::Expired,
                format!("its deadline {deadline} has passed"),
                ExitStatus::NotDelivered,
            )
        }
    };
    let line = match status {
        JobStatus::Expired => format!("Campaign {job_id}: EXPIRED ({reason}); nothing sent"),
        _ => format!(
            "Campaign {job_id}: PAUSED ({reason}); continue it with `msgsend bulk --resume {job_id}` later"
        ),
    };
    let record = journal.job(job_id).await?;
    let summary = Summary::new(RunFigures {
        job_id,
        status,
        reason: Some(reason),
        source: record.source,
        states: record.states,
        spending: record.spending,
        currency,
        retries: record.retries,
        sends: 0,
        duration: Duration::ZERO,
        providers: Vec::new(),
        preflight: &std::collections::BTreeMap::new(),
    });
    write_summary_or_line(&summary, summary_json, &line)?;
    Ok(exit)
}
