//! Step 3 of a campaign run: the run closed in the journal, the job's status and the exit code
//! (each one function of the stop cause), the summary and `--failed-csv`.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use super::Job;
use crate::delivery::{Health, Router};
use crate::error::ExitStatus;
use crate::job::JobStatus;
use crate::journal::Journal;
use crate::phone::Phone;
use crate::pipeline::{self, RunOutcome, StopCause};
use crate::provider::ProviderKind;
use crate::report::output::{OutputFile, SummaryJson, write_failed_csv, write_summary};
use crate::report::summary::{RunFigures, Summary};

/// How the run ended, for [`finish`].
pub(super) struct Finished<'a> {
    pub(super) job: &'a Job,
    pub(super) run: u32,
    /// The run read the job's source (its leader); a joined run reads none.
    pub(super) read_source: bool,
    /// The suppression list: a queued recipient that opted out since is dropped, not failed.
    pub(super) suppression: &'a HashSet<Phone>,
    pub(super) preflight: &'a BTreeMap<ProviderKind, Health>,
    pub(super) cause: Option<StopCause>,
    pub(super) duration: Duration,
    pub(super) router: &'a Router,
    /// `[message] currency`, for the summary's cost.
    pub(super) currency: &'a str,
}

/// Step 3: the job's status and the exit code, each one function of the stop cause.
pub(super) async fn finish(
    failed_csv: Option<OutputFile>,
    summary_json: Option<SummaryJson>,
    journal: &mut Journal,
    finished: Finished<'_>,
    result: Result<RunOutcome, pipeline::PipelineError>,
) -> anyhow::Result<ExitStatus> {
    let Finished {
        job,
        run,
        read_source,
        suppression,
        preflight,
        cause,
        duration,
        router,
        currency,
    } = finished;
    let status = pipeline::job_status(cause.as_ref());
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(error) => {
            // What was recorded stays recorded; the job can be resumed once the cause is fixed.
            // It stays `RUNNING` (as after a kill) unless its in-flight rows could be resolved.
            if journal.resolve_in_flight(&job.id, run).await.is_ok() {
                let _ = journal
                    .end_run(&job.id, run, status, None, 0, duration)
                    .await;
            }
            return Err(error.into());
        }
    };
    if read_source {
        let closed = journal.close_run(&job.id, run, suppression).await?;
        if closed > 0 {
            tracing::warn!(job_id = %job.id, recipients = closed, "recipients queued by an earlier run are not in the source any more: recorded failed");
        }
    } else {
        // A joined run's sends that never reported; the rest is the job's other runs' to close.
        journal.resolve_in_flight(&job.id, run).await?;
    }
    let job_status = journal
        .end_run(
            &job.id,
            run,
            status,
            read_source.then_some(outcome.source),
            outcome.retries,
            duration,
        )
        .await?;
    if job_status == JobStatus::Expired {
        journal.expire(&job.id).await?;
    }
    let record = journal.job(&job.id).await?;
    // A run that shared the job (a joined one, or one that ends while others still run) reports
    // and exits by its own recipients: the others' in flight are not its doubt.
    let (states, spending) = if !read_source || job_status == JobStatus::Running {
        journal.run_state_counts(&job.id, run).await?
    } else {
        (record.states, record.spending)
    };
    let summary = Summary::new(RunFigures {
        job_id: &job.id,
        status,
        reason: cause.as_ref().and_then(StopCause::summary_reason),
        source: outcome.source,
        states,
        spending,
        currency,
        retries: record.retries,
        sends: outcome.sends,
        duration,
        providers: router
            .channels()
            .filter_map(|channel| {
                let kind = channel.kind();
                let stats = outcome.providers.get(&kind)?;
                Some((kind, stats, channel.circuit_openings()))
            })
            .collect(),
        preflight,
    });
    tracing::info!(job_id = %job.id, status = status.name(), sent = summary.sent, fallback = summary.fallback, failed = summary.failed, "campaign ended");
    if let Some(file) = failed_csv {
        write_failed_csv(file, &journal.undelivered(&job.id).await?);
    }
    write_summary(&summary, summary_json)?;
    Ok(pipeline::exit_status(
        cause.as_ref(),
        summary.failed + summary.uncertain > 0,
    ))
}
