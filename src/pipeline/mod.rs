//! The campaign pipeline: one streamed source → a producer → at most `concurrency` sends in
//! flight → one collector.
//!
//! - The **producer** reads the source in order, counts and reports bad rows, drops suppressed
//!   phones, asks the collector to admit the rest in batches (the journal catches duplicates
//!   and what an earlier run already did), and starts a send task per admitted recipient. A
//!   semaphore bounds the tasks, so the producer (and the source behind it) waits while
//!   `concurrency` sends are in flight: memory does not grow with the campaign.
//! - Each **send task** goes through the router (limiter, breaker, retry, fallback); once its
//!   first request holds a rate-limit slot, and before it leaves, the recipient is recorded
//!   `in_flight` and the task waits for that commit. It then reports the outcome.
//! - The **collector** is the journal's only writer: it applies everything that arrived since
//!   its last commit in one transaction (group commit), then answers the waiting tasks, counts,
//!   moves the progress display, the metrics and the alert watch.
//!
//! Files: this one holds the run and the producer; `send.rs` the send task (in-flight gate,
//! failure budget, outage wait); `collector.rs` the collector.
//!
//! Stopping (Ctrl-C / SIGTERM, or the failure rate): no new send starts; the producer still
//! reads the source to its end and admits what it finds (without sending), so `total`,
//! `eligible` and the other counts are complete and the unreached recipients wait as `queued`
//! for `--resume`; send tasks whose first request has not gone (waiting for a slot or a
//! token) give their recipient back (it stays `queued`); sends in flight get
//! `shutdown_grace` to finish, and those still open then are recorded `uncertain`.

mod collector;
mod send;

use collector::Collector;
use send::{FailureBudget, Outage, SendContext, send_one};

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::delivery::{Delivery, Router};
use crate::job::{Admission, SourceCounts};
use crate::journal::{Candidate, Journal, JournalError};
use crate::phone::Phone;
use crate::provider::ProviderKind;
use crate::recipient::Recipient;
use crate::report::alerts::Watch;
use crate::report::metrics::Metrics;
use crate::report::progress::Progress;
use crate::report::summary::ProviderStats;
use crate::source::{OpenSource, SourceError, SourceRow};
use crate::template::MessageTemplate;

/// One run of a campaign, as the pipeline needs it.
pub struct Campaign {
    pub job_id: String,
    pub run: u32,
    /// The source, for log lines about its rows.
    pub source_label: String,
    pub template: MessageTemplate,
    pub suppression: HashSet<Phone>,
    /// `--retry-failed`: the job whose `failed` recipients are the only ones to send.
    pub retry_of: Option<String>,
    pub concurrency: usize,
    pub batch_size: usize,
    pub shutdown_grace: Duration,
    pub max_failure_rate: Option<f64>,
    /// How long to wait for a channel to come back once all are unusable.
    pub all_open_wait: Duration,
}

/// Where a run reports as it goes: the progress display, the metrics, the alert watch.
pub struct Reporting {
    pub progress: Progress,
    pub metrics: Arc<Metrics>,
    pub watch: Watch,
}

/// Why a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The source was read to its end and every admitted recipient has an outcome.
    Finished,
    /// Ctrl-C / SIGTERM.
    Interrupted,
    /// More than `--max-failure-rate` of the attempted recipients failed.
    Aborted,
    /// Every channel stayed unusable (circuits open, credentials refused) for longer than
    /// `all_open_wait`; the reason says which and why.
    ProvidersUnusable(String),
}

/// What a run measured.
#[derive(Debug)]
pub struct RunOutcome {
    pub stop: StopReason,
    pub source: SourceCounts,
    /// Requests beyond the first, per channel, over all sends of this run.
    pub retries: u64,
    /// Recipients whose send ended in this run.
    pub sends: u64,
    pub providers: BTreeMap<ProviderKind, ProviderStats>,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// How many rows the collector applies in one transaction at most.
pub(super) const MAX_GROUP: usize = 512;

/// Runs the campaign until the source is exhausted or `shutdown` fires.
pub async fn run(
    campaign: &Campaign,
    source: OpenSource,
    router: Arc<Router>,
    journal: &mut Journal,
    reporting: Reporting,
    shutdown: CancellationToken,
) -> Result<RunOutcome, PipelineError> {
    let Reporting {
        progress,
        metrics,
        watch,
    } = reporting;
    let stop = shutdown.child_token();
    let (events, event_queue) = mpsc::channel(campaign.concurrency * 2 + 64);
    let failure_budget = Arc::new(FailureBudget::new(campaign.max_failure_rate));
    let outage = Arc::new(Outage::new(campaign.all_open_wait));
    let sender = Arc::new(SendContext {
        router,
        failure_budget: failure_budget.clone(),
        outage: outage.clone(),
        template: campaign.template.clone(),
        events: events.clone(),
        stop: stop.clone(),
        grace: campaign.shutdown_grace,
    });
    let collector = Collector {
        journal,
        job_id: &campaign.job_id,
        run: campaign.run,
        retry_of: campaign.retry_of.as_deref(),
        progress: progress.clone(),
        metrics: metrics.clone(),
        watch,
        providers: BTreeMap::new(),
        retries: 0,
        sends: 0,
        admitted: 0,
        attempted: 0,
        failed: 0,
        stop: stop.clone(),
    };
    let producer = produce(
        campaign,
        source,
        events,
        sender,
        progress,
        &metrics,
        stop.clone(),
    );
    let (produced, collected) = tokio::join!(producer, collector.run(event_queue));
    let collected = collected?;
    let source_counts = produced?;
    let stop_reason = if failure_budget.exceeded() {
        StopReason::Aborted
    } else if let Some(reason) = outage.gave_up() {
        StopReason::ProvidersUnusable(reason)
    } else if shutdown.is_cancelled() {
        StopReason::Interrupted
    } else {
        StopReason::Finished
    };
    Ok(RunOutcome {
        stop: stop_reason,
        source: source_counts,
        retries: collected.retries,
        sends: collected.sends,
        providers: collected.providers,
    })
}

/// What a source row is to a campaign before the journal is asked about it.
pub enum Screened {
    /// Valid, in the age range, not suppressed: to be admitted (or found a duplicate).
    Candidate(Box<Recipient>),
    Suppressed,
    Invalid,
    OutOfRange,
}

/// Counts a source row into `counts` (SPEC section 7's `total`, `invalid`, `suppressed`),
/// reports an invalid one, and says what is left to do with it. A run and `--dry-run` share it.
pub fn screen(
    row: SourceRow,
    suppression: &HashSet<Phone>,
    counts: &mut SourceCounts,
    source_label: &str,
) -> Screened {
    counts.total += 1;
    match row {
        SourceRow::InRange(recipient) if suppression.contains(&recipient.phone) => {
            counts.suppressed += 1;
            Screened::Suppressed
        }
        SourceRow::InRange(recipient) => Screened::Candidate(recipient),
        SourceRow::OutOfRange => Screened::OutOfRange,
        SourceRow::Invalid(invalid) => {
            counts.invalid += 1;
            tracing::warn!(
                source = %source_label,
                line = invalid.line,
                field = invalid.field,
                "skipped an invalid row: {invalid}"
            );
            Screened::Invalid
        }
    }
}

/// A message to the collector.
pub(super) enum Event {
    /// Admit these recipients (phone, line, name) to the run; the answers come in order.
    Admit {
        recipients: Vec<Candidate>,
        reply: oneshot::Sender<Vec<Admission>>,
    },
    /// Record `phone` in flight; the reply comes once that is committed.
    Start {
        phone: Phone,
        reply: oneshot::Sender<()>,
    },
    /// Record `phone` queued again (its requests failed for certain, it waits to be retried).
    Requeue {
        phone: Phone,
        reply: oneshot::Sender<()>,
    },
    /// A send ended; `None` when it was still open after the shutdown grace.
    Finish {
        phone: Phone,
        delivery: Option<Delivery>,
    },
}

async fn produce(
    campaign: &Campaign,
    mut source: OpenSource,
    events: mpsc::Sender<Event>,
    sender: Arc<SendContext>,
    progress: Progress,
    metrics: &Metrics,
    stop: CancellationToken,
) -> Result<SourceCounts, SourceError> {
    let mut counts = SourceCounts::default();
    let slots = Arc::new(Semaphore::new(campaign.concurrency));
    let tasks = TaskTracker::new();
    let result = async {
        loop {
            let Some(first) = source.rows.recv().await else {
                break;
            };
            let mut batch = Vec::new();
            let mut next = Some(first);
            while let Some(row) = next.take() {
                match screen(
                    row?,
                    &campaign.suppression,
                    &mut counts,
                    &campaign.source_label,
                ) {
                    Screened::Candidate(recipient) => batch.push(recipient),
                    Screened::Suppressed => {
                        metrics.skipped("suppressed");
                        progress.skipped();
                    }
                    Screened::Invalid => metrics.skipped("invalid"),
                    Screened::OutOfRange => {}
                }
                if batch.len() < campaign.batch_size {
                    next = source.rows.try_recv().ok();
                }
            }
            if batch.is_empty() {
                continue;
            }
            let (reply, answer) = oneshot::channel();
            let recipients = batch
                .iter()
                .map(|r| Candidate {
                    phone: r.phone.clone(),
                    line: r.line,
                    name: r.name.clone(),
                })
                .collect();
            if events
                .send(Event::Admit { recipients, reply })
                .await
                .is_err()
            {
                break;
            }
            // No answer: the collector stopped on a journal error, which it reports.
            let Ok(admissions) = answer.await else { break };
            for (recipient, admission) in batch.into_iter().zip(admissions) {
                match admission {
                    Admission::Send => {
                        // After a stop the source is still read to its end and admitted, so
                        // the counts are complete and the unreached stay `queued` for a resume.
                        if stop.is_cancelled() {
                            continue;
                        }
                        let slot = tokio::select! {
                            biased;
                            () = stop.cancelled() => continue,
                            slot = slots.clone().acquire_owned() => slot.expect("never closed"),
                        };
                        let sender = sender.clone();
                        tasks.spawn(async move {
                            send_one(&sender, *recipient).await;
                            drop(slot);
                        });
                    }
                    Admission::Duplicate => {
                        counts.duplicate += 1;
                        metrics.skipped("duplicate");
                        progress.skipped();
                    }
                    Admission::AlreadyDone => progress.skipped(),
                    Admission::NotToRetry => {}
                }
            }
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        // The source broke: send nothing more, let what is in flight finish and be recorded.
        stop.cancel();
    }
    drop(events);
    drop(sender);
    tasks.close();
    tasks.wait().await;
    result.map(|()| counts)
}
