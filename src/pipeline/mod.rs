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
//! Files: this one holds the run and the producer; `admission.rs` the reading and admitting of
//! the source (shared with `--dry-run`); `send.rs` the send task (in-flight gate, failure
//! budget, outage wait); `collector.rs` the collector; `stop.rs` why a run stops.
//!
//! Stopping (any [`StopCause`], through the one [`Stopper`]; the first cause wins): no new
//! request leaves. Unless the source or the journal itself failed, the producer still reads the
//! source to its end and admits what it finds (without sending), so `total`, `eligible` and the
//! other counts are complete and the unreached recipients wait as `queued` for `--resume`. A
//! send with no request out (waiting for a slot or a token, or between two attempts whose
//! failures were certain) gives its recipient back (`queued`); one whose earlier attempt's
//! answer was lost ends `uncertain`; a request out gets `shutdown_grace` for its answer, and one
//! still open then is recorded `uncertain`.

mod admission;
mod checkpoints;
mod collector;
mod send;
mod stop;

pub use admission::{AdmissionSink, ConsentRule, ReadStart, Screened, Screening, admit_all};
pub use checkpoints::{Basis, Checkpoints};
pub use stop::{StopCause, Stopper, exit_status, job_status};

use collector::Collector;
use send::{FailureBudget, Outage, SendContext, SendEnd, TASK_FAILED, send_one};

use std::collections::{BTreeMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::task::TaskTracker;

use crate::cost::{Budget, Money};
use crate::delivery::{Pricing, Router};
use crate::job::{Admission, SourceCounts};
use crate::journal::{Candidate, Claimed, Journal, JournalError};
use crate::phone::Phone;
use crate::provider::ProviderKind;
use crate::recipient::{Addressee, Recipient};
use crate::report::alerts::Watch;
use crate::report::invalid_rows::InvalidRows;
use crate::report::metrics::Metrics;
use crate::report::progress::Progress;
use crate::report::summary::ProviderStats;
use crate::schedule::Clock;
use crate::source::resume::ResumePoint;
use crate::source::{OpenSource, SourceError};
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
    /// An ad's consent rule; `None` for an info campaign.
    pub consent: Option<ConsentRule>,
    /// The providers' prices.
    pub pricing: Pricing,
    /// `--max-cost` and what earlier runs of the job spent.
    pub budget: Option<(Money, Money)>,
    /// The job's deadline, read on the campaign's clock.
    pub deadline: Option<(jiff::Timestamp, Clock)>,
    /// The resume point the source was opened at: its counts are the rows' before it.
    pub resumed_from: Option<ResumePoint>,
    /// Keeps this run's resume point (a CSV source).
    pub checkpoints: Option<Checkpoints>,
    /// The message's placeholders besides name and phone whose values admission stores with each
    /// recipient, and a joined run renders from: on a PostgreSQL state (runs may join), else
    /// none (nobody would read them).
    pub stored_fields: Arc<[String]>,
}

/// Where a run reports as it goes: the progress display, the metrics, the alert watch, the
/// invalid rows.
pub struct Reporting {
    pub progress: Progress,
    pub metrics: Arc<Metrics>,
    pub watch: Watch,
    pub invalid_rows: InvalidRows,
}

/// What a run measured. Why it stopped, if it did, is its [`Stopper`]'s cause.
#[derive(Debug)]
pub struct RunOutcome {
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

/// How long a joined run waits before claiming again when none was queued but the job's leader
/// still reads its source.
const CLAIM_AGAIN: Duration = Duration::from_millis(500);

/// The values of `columns` from a claimed row's stored fields (a JSON object); a field the
/// object lacks renders empty, like an empty source value.
fn stored_values(columns: &[String], fields: Option<&str>) -> Vec<String> {
    let stored: std::collections::HashMap<String, String> = fields
        .and_then(|fields| serde_json::from_str(fields).ok())
        .unwrap_or_default();
    columns
        .iter()
        .map(|column| stored.get(column).cloned().unwrap_or_default())
        .collect()
}

/// How many rows the collector applies in one transaction at most.
pub(super) const MAX_GROUP: usize = 512;

/// Runs the campaign until the source is exhausted or `stopper` stops it. A run that fails
/// (source, journal) stopped the run at once with that cause, unless another came first: the
/// stopper holds the first cause. A joined run (`--join`, SPEC section 9) has no source: it
/// claims queued recipients of the job from the journal until none is left and the job's
/// leader has ended.
pub async fn run(
    campaign: &Campaign,
    source: Option<OpenSource>,
    router: Arc<Router>,
    journal: &mut Journal,
    reporting: Reporting,
    stopper: &Stopper,
) -> Result<RunOutcome, PipelineError> {
    let Reporting {
        progress,
        metrics,
        watch,
        invalid_rows,
    } = reporting;
    let (events, event_queue) = mpsc::channel(campaign.concurrency * 2 + 64);
    let sender = Arc::new(SendContext {
        job_id: campaign.job_id.clone(),
        router,
        failure_budget: FailureBudget::new(campaign.max_failure_rate),
        outage: Outage::new(campaign.all_open_wait),
        template: campaign.template.clone(),
        events: events.clone(),
        stopper: stopper.clone(),
        grace: campaign.shutdown_grace,
        pricing: campaign.pricing,
        budget: campaign
            .budget
            .map(|(limit, spent)| Budget::new(limit, spent)),
        deadline: campaign
            .deadline
            .map(|(at, clock)| send::Deadline { at, clock }),
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
        stopper: stopper.clone(),
        checkpoints: campaign.checkpoints.as_ref(),
    };
    let producer = Producer {
        sender,
        events,
        slots: Arc::new(Semaphore::new(campaign.concurrency)),
        tasks: TaskTracker::new(),
        progress,
        metrics: &metrics,
    };
    let (produced, collected) = tokio::join!(
        producer.run(campaign, source, invalid_rows),
        collector.run(event_queue)
    );
    // A failed source or journal stopped the run where it failed (producer, collector).
    let collected = collected?;
    Ok(RunOutcome {
        source: produced?,
        retries: collected.retries,
        sends: collected.sends,
        providers: collected.providers,
    })
}

/// A message to the collector.
enum Event {
    /// Admit these recipients to the run; the answers come in order.
    Admit {
        recipients: Vec<Candidate>,
        reply: oneshot::Sender<Vec<Admission>>,
    },
    /// Record `phone` in flight; the reply comes once that is committed: `false` when another
    /// live run of the job (`--join`) claimed it first.
    Start {
        phone: Phone,
        reply: oneshot::Sender<bool>,
    },
    /// A joined run: claim up to `limit` queued recipients of the job.
    Claim {
        limit: usize,
        reply: oneshot::Sender<Claimed>,
    },
    /// Record `phone` queued again (its requests failed for certain, it waits to be retried).
    Requeue {
        phone: Phone,
        reply: oneshot::Sender<()>,
    },
    /// A send ended; `line` is the recipient's in the source.
    Finish {
        phone: Phone,
        line: u64,
        end: SendEnd,
    },
}

/// The producer: admission through the collector, then a send task per admitted recipient,
/// at most `concurrency` at once.
struct Producer<'a> {
    sender: Arc<SendContext>,
    events: mpsc::Sender<Event>,
    slots: Arc<Semaphore>,
    tasks: TaskTracker,
    progress: Progress,
    metrics: &'a Metrics,
}

impl Producer<'_> {
    async fn run(
        mut self,
        campaign: &Campaign,
        source: Option<OpenSource>,
        mut invalid_rows: InvalidRows,
    ) -> Result<SourceCounts, SourceError> {
        let result = match source {
            Some(mut source) => {
                let screening = Screening {
                    suppression: &campaign.suppression,
                    consent: campaign.consent.clone(),
                    batch_size: campaign.batch_size,
                    fields: campaign.stored_fields.clone(),
                };
                let start = ReadStart::at(
                    campaign.resumed_from.as_ref(),
                    campaign.checkpoints.as_ref(),
                );
                self.progress.resumed(start.in_range);
                admit_all(&mut source, &screening, start, &mut invalid_rows, &mut self).await
            }
            None => {
                self.claim_all(campaign).await;
                Ok(SourceCounts::default())
            }
        };
        invalid_rows.finish();
        if result.is_err() {
            // The source broke: send nothing more, let what is in flight finish and be recorded.
            self.sender.stopper.stop(StopCause::Source);
        }
        let Producer {
            events,
            sender,
            tasks,
            ..
        } = self;
        drop(events);
        drop(sender);
        tasks.close();
        tasks.wait().await;
        result
    }

    /// A joined run's work: claims of `batch_size` queued recipients, each sent like an admitted
    /// one, until a claim finds none and the job's leader has ended (while it reads its source,
    /// more may be queued: the claim is tried again every [`CLAIM_AGAIN`]).
    async fn claim_all(&mut self, campaign: &Campaign) {
        let columns = &campaign.stored_fields;
        while !self.sender.stopper.is_stopped() {
            let (reply, answer) = oneshot::channel();
            let claim = Event::Claim {
                limit: campaign.batch_size,
                reply,
            };
            if self.events.send(claim).await.is_err() {
                return;
            }
            // No answer: the collector stopped on a journal error, which it reports.
            let Ok(claimed) = answer.await else {
                return;
            };
            if claimed.rows.is_empty() {
                if !claimed.leader_live {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(CLAIM_AGAIN) => {}
                    () = self.sender.stopper.stopped() => {}
                }
                continue;
            }
            for row in claimed.rows {
                let Ok(phone) = Phone::parse(&row.phone) else {
                    // Admission stores normalised phones only: a row changed by hand.
                    tracing::warn!(job_id = %campaign.job_id, line = row.line, "a queued recipient's phone in the journal is not a phone: not sent");
                    continue;
                };
                let values = stored_values(columns, row.fields.as_deref());
                let addressee = Addressee {
                    line: row.line,
                    name: row.name,
                    phone,
                    columns: columns.clone(),
                    values,
                };
                self.send(addressee).await;
            }
        }
    }

    /// Starts the send task of one addressee once a concurrency slot is free; after a stop,
    /// none (the recipient stays `queued` for a resume).
    async fn send(&mut self, addressee: Addressee) {
        let Some(slot) = self.slot().await else {
            return;
        };
        let sender = self.sender.clone();
        self.tasks.spawn(async move {
            let (phone, line) = (addressee.phone.clone(), addressee.line);
            // A bug that panics a send must not strand its recipient `in_flight` under a
            // finished job: it is recorded `uncertain` (a request may have gone).
            let sent = AssertUnwindSafe(send_one(&sender, addressee)).catch_unwind();
            if sent.await.is_err() {
                let end = SendEnd::Uncertain(TASK_FAILED);
                let finish = Event::Finish { phone, line, end };
                let _ = sender.events.send(finish).await;
            }
            drop(slot);
        });
    }

    /// A concurrency slot, or `None` once the run stopped.
    async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        let stopper = &self.sender.stopper;
        if stopper.is_stopped() {
            return None;
        }
        tokio::select! {
            biased;
            () = stopper.stopped() => None,
            slot = self.slots.clone().acquire_owned() => Some(slot.expect("never closed")),
        }
    }
}

impl AdmissionSink for Producer<'_> {
    fn screened_out(&mut self, screened: &Screened) {
        match screened {
            Screened::Suppressed => {
                self.metrics.skipped("suppressed");
                self.progress.skipped();
            }
            Screened::Invalid => {
                self.metrics.skipped("invalid");
                self.progress.invalid();
            }
            Screened::OutOfRange | Screened::Candidate(_) => {}
        }
    }

    async fn admit(&mut self, recipients: Vec<Candidate>) -> Option<Vec<Admission>> {
        let (reply, answer) = oneshot::channel();
        self.events
            .send(Event::Admit { recipients, reply })
            .await
            .ok()?;
        // No answer: the collector stopped on a journal error, which it reports.
        answer.await.ok()
    }

    async fn admitted(&mut self, recipient: Box<Recipient>, admission: Admission) {
        match admission {
            // After a stop the source is still read to its end and admitted, so the counts are
            // complete and the unreached stay `queued` for a resume.
            Admission::Send => self.send(Addressee::from(*recipient)).await,
            Admission::Duplicate => {
                self.metrics.skipped("duplicate");
                self.progress.skipped();
            }
            Admission::AlreadyDone => self.progress.skipped(),
            Admission::NotToRetry => {}
        }
    }
}
