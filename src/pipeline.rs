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
//!   moves the progress display and enforces `--max-failure-rate`.
//!
//! Stopping (Ctrl-C / SIGTERM, or the failure rate): no new send starts; the producer still
//! reads the source to its end and admits what it finds (without sending), so `total`,
//! `eligible` and the other counts are complete and the unreached recipients wait as `queued`
//! for `--resume`; send tasks whose first request has not gone (waiting for a slot or a
//! token) give their recipient back (it stays `queued`); sends in flight get
//! `shutdown_grace` to finish, and those still open then are recorded `uncertain`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::channel::{ChannelFailure, RequestGate};
use crate::delivery::{Delivery, DeliveryOutcome, Router};
use crate::journal::{
    Admission, Journal, JournalError, OutcomeRecord, RecipientState, SourceCounts,
};
use crate::phone::Phone;
use crate::provider::ProviderKind;
use crate::recipient::Recipient;
use crate::report::alerts::{Figures, Watch};
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
const MAX_GROUP: usize = 512;

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

/// A message to the collector.
enum Event {
    /// Admit these recipients (phone, line, name) to the run; the answers come in order.
    Admit {
        recipients: Vec<(Phone, u64, String)>,
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

/// `--max-failure-rate`: counted by the send tasks themselves as each delivery ends, so the
/// campaign stops the moment the rate is crossed rather than when the collector catches up
/// (failures without a request, both circuits open, end in microseconds).
struct FailureBudget {
    limit: Option<f64>,
    attempted: AtomicU64,
    failed: AtomicU64,
    exceeded: AtomicBool,
}

/// The minimum of attempted recipients before `--max-failure-rate` may abort (SPEC).
const FAILURE_RATE_MINIMUM: u64 = 100;

impl FailureBudget {
    fn new(limit: Option<f64>) -> FailureBudget {
        FailureBudget {
            limit,
            attempted: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            exceeded: AtomicBool::new(false),
        }
    }

    fn record(&self, failed: bool, stop: &CancellationToken) {
        let Some(limit) = self.limit else { return };
        let attempted = self.attempted.fetch_add(1, Ordering::SeqCst) + 1;
        let failed = self.failed.fetch_add(u64::from(failed), Ordering::SeqCst) + u64::from(failed);
        let rate = failed as f64 / attempted as f64;
        if attempted >= FAILURE_RATE_MINIMUM
            && rate > limit
            && !self.exceeded.swap(true, Ordering::SeqCst)
        {
            tracing::error!(
                failed,
                attempted,
                "aborting the campaign: {:.1} % of attempted recipients failed, above --max-failure-rate {limit}",
                rate * 100.0
            );
            stop.cancel();
        }
    }

    fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::SeqCst)
    }
}

/// Why no channel would take a message, when no request was made at all.
struct Unusable {
    reason: String,
    /// Every channel refused the credentials: waiting cannot help.
    permanent: bool,
}

impl Unusable {
    /// `None` when the delivery is this recipient's own outcome. Otherwise no channel would
    /// take the message: every channel refused it without a request (circuit open,
    /// credentials refused, no token), or, once an outage has begun, the only requests made
    /// were half-open probes (or other sends) that failed transiently.
    fn of(delivery: &Delivery, outage_begun: bool) -> Option<Unusable> {
        if delivery.delivered() || delivery.failures.is_empty() {
            return None;
        }
        let refused = |failure: &ChannelFailure| {
            matches!(
                failure,
                ChannelFailure::CircuitOpen | ChannelFailure::Disabled | ChannelFailure::NoToken(_)
            )
        };
        let refused_only = delivery.attempts.is_empty()
            && delivery
                .failures
                .iter()
                .all(|(_, failure)| refused(failure));
        let transient_in_outage = outage_begun
            && delivery.failures.iter().all(|(_, failure)| {
                refused(failure)
                    || matches!(failure, ChannelFailure::Provider(e) if e.class.is_transient())
            });
        (refused_only || transient_in_outage).then(|| Unusable {
            reason: delivery.reason(),
            permanent: delivery
                .failures
                .iter()
                .all(|(_, failure)| *failure == ChannelFailure::Disabled),
        })
    }
}

/// Every channel unusable at once. Send tasks wait here (holding their concurrency slot, so
/// the producer waits too) for at most `all_open_wait` from the moment it began; then the
/// campaign stops, resumable, with the reason.
struct Outage {
    limit: Duration,
    since: std::sync::Mutex<Option<tokio::time::Instant>>,
    gave_up: std::sync::Mutex<Option<String>>,
}

enum AfterOutage {
    TryAgain,
    GiveUp,
}

/// How often a waiting send looks again whether a channel takes messages.
const OUTAGE_POLL: Duration = Duration::from_millis(250);

impl Outage {
    fn new(limit: Duration) -> Outage {
        Outage {
            limit,
            since: std::sync::Mutex::new(None),
            gave_up: std::sync::Mutex::new(None),
        }
    }

    fn begun(&self) -> bool {
        self.since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// A message was delivered: a channel is usable again.
    fn clear(&self) {
        *self.since.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    async fn wait(&self, unusable: Unusable, stop: &CancellationToken) -> AfterOutage {
        if stop.is_cancelled() {
            return AfterOutage::GiveUp;
        }
        let now = tokio::time::Instant::now();
        let since = *self
            .since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(now);
        if unusable.permanent || now - since >= self.limit {
            let mut gave_up = self.gave_up.lock().unwrap_or_else(|p| p.into_inner());
            if gave_up.is_none() {
                let reason = format!("every channel is unusable ({})", unusable.reason);
                tracing::error!("stopping the campaign: {reason}; `--resume` continues it");
                *gave_up = Some(reason);
                stop.cancel();
            }
            return AfterOutage::GiveUp;
        }
        tokio::select! {
            () = tokio::time::sleep(OUTAGE_POLL) => AfterOutage::TryAgain,
            () = stop.cancelled() => AfterOutage::GiveUp,
        }
    }

    fn gave_up(&self) -> Option<String> {
        self.gave_up
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What every send task shares.
struct SendContext {
    router: Arc<Router>,
    failure_budget: Arc<FailureBudget>,
    outage: Arc<Outage>,
    template: MessageTemplate,
    events: mpsc::Sender<Event>,
    stop: CancellationToken,
    grace: Duration,
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
                match row? {
                    SourceRow::InRange(recipient) => {
                        counts.total += 1;
                        if campaign.suppression.contains(&recipient.phone) {
                            counts.suppressed += 1;
                            metrics.skipped("suppressed");
                            progress.skipped();
                        } else {
                            batch.push(recipient);
                        }
                    }
                    SourceRow::OutOfRange => counts.total += 1,
                    SourceRow::Invalid(invalid) => {
                        counts.total += 1;
                        counts.invalid += 1;
                        metrics.skipped("invalid");
                        tracing::warn!(
                            source = %campaign.source_label,
                            line = invalid.line,
                            field = invalid.field,
                            "skipped an invalid row: {invalid}"
                        );
                    }
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
                .map(|r| (r.phone.clone(), r.line, r.name.clone()))
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

async fn send_one(context: &SendContext, recipient: Recipient) {
    if context.stop.is_cancelled() {
        return; // not started: it stays `queued` for a resume
    }
    let text = context.template.render(|field| recipient.field(field));
    let gate = InFlightGate {
        context,
        phone: &recipient.phone,
        opened: AtomicBool::new(false),
    };
    let delivery = loop {
        // After a stop, a recipient whose first request has not gone yet (it waits for a
        // token) is withdrawn at once; one already in flight gets the shutdown grace.
        let stopped = async {
            context.stop.cancelled().await;
            if gate.opened() {
                tokio::time::sleep(context.grace).await;
            }
        };
        let delivery = tokio::select! {
            delivery = context.router.deliver_gated(&recipient.phone, &text, &gate) => Some(delivery),
            () = stopped => None,
        };
        let Some(done) = &delivery else {
            break delivery;
        };
        match Unusable::of(done, context.outage.begun()) {
            // No channel would take it: not this recipient's failure. Wait for one to come
            // back (a half-open probe) rather than burn through the list.
            Some(unusable) => {
                // What was tried failed for certain: the recipient is back in the queue.
                if gate.opened() {
                    gate.requeue().await;
                }
                match context.outage.wait(unusable, &context.stop).await {
                    AfterOutage::TryAgain => continue,
                    AfterOutage::GiveUp => return, // stays `queued` for a resume
                }
            }
            None => {
                if done.delivered() {
                    context.outage.clear();
                }
                break delivery;
            }
        }
    };
    let withdrawn = match &delivery {
        None => !gate.opened(),
        Some(delivery) => delivery
            .failures
            .iter()
            .any(|(_, failure)| *failure == ChannelFailure::Withdrawn),
    };
    if withdrawn {
        return; // stopped before any request: it stays `queued` for a resume
    }
    if let Some(delivery) = &delivery {
        context
            .failure_budget
            .record(delivery.outcome == DeliveryOutcome::Failed, &context.stop);
    }
    let _ = context
        .events
        .send(Event::Finish {
            phone: recipient.phone,
            delivery,
        })
        .await;
}

/// Records the recipient `in_flight` (and waits for the commit) when its first request is
/// about to go, and withdraws it if the campaign stopped before that.
struct InFlightGate<'a> {
    context: &'a SendContext,
    phone: &'a Phone,
    /// Set before the `in_flight` record is even sent, so that a stop arriving while the
    /// record is on its way treats the recipient as in flight (grace, then `uncertain`) and
    /// never leaves an `in_flight` row behind a send it dropped.
    opened: AtomicBool,
}

impl InFlightGate<'_> {
    /// Whether the journal may hold this recipient `in_flight`.
    fn opened(&self) -> bool {
        self.opened.load(Ordering::SeqCst)
    }

    /// Records the recipient `queued` again (every request made for it failed for certain)
    /// and closes the gate, so the next request records it in flight anew.
    async fn requeue(&self) {
        let (reply, committed) = oneshot::channel();
        let requeue = Event::Requeue {
            phone: self.phone.clone(),
            reply,
        };
        if self.context.events.send(requeue).await.is_ok() && committed.await.is_ok() {
            self.opened.store(false, Ordering::SeqCst);
        }
    }
}

impl RequestGate for InFlightGate<'_> {
    async fn open(&self) -> bool {
        if self.opened() {
            return true; // a retry or the fallback: already recorded in flight
        }
        if self.context.stop.is_cancelled() {
            return false;
        }
        self.opened.store(true, Ordering::SeqCst);
        let (reply, committed) = oneshot::channel();
        let start = Event::Start {
            phone: self.phone.clone(),
            reply,
        };
        // No commit, no request: the journal must know before the provider does.
        if self.context.events.send(start).await.is_err() || committed.await.is_err() {
            self.opened.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }
}

/// The journal's only writer, and the owner of the run's counts.
struct Collector<'a> {
    journal: &'a mut Journal,
    job_id: &'a str,
    run: u32,
    retry_of: Option<&'a str>,
    progress: Progress,
    metrics: Arc<Metrics>,
    watch: Watch,
    providers: BTreeMap<ProviderKind, ProviderStats>,
    retries: u64,
    sends: u64,
    /// Recipients admitted to be sent in this run (the queue is those not finished yet).
    admitted: u64,
    attempted: u64,
    failed: u64,
    stop: CancellationToken,
}

/// An answer owed once the transaction holding its write is committed.
enum Reply {
    Admitted(oneshot::Sender<Vec<Admission>>, Vec<Admission>),
    Started(oneshot::Sender<()>),
}

impl Collector<'_> {
    async fn run(mut self, mut events: mpsc::Receiver<Event>) -> Result<Self, JournalError> {
        let mut group = Vec::with_capacity(MAX_GROUP);
        while events.recv_many(&mut group, MAX_GROUP).await > 0 {
            if let Err(error) = self.apply(&mut group).await {
                // Nothing more can be recorded, so nothing more may be sent.
                self.stop.cancel();
                return Err(error);
            }
        }
        Ok(self)
    }

    async fn apply(&mut self, group: &mut Vec<Event>) -> Result<(), JournalError> {
        let mut replies = Vec::new();
        let mut finished = Vec::new();
        let mut batch = self.journal.batch(self.job_id, self.run).await?;
        for event in group.drain(..) {
            match event {
                Event::Admit { recipients, reply } => {
                    let mut answers = Vec::with_capacity(recipients.len());
                    for (phone, line, name) in &recipients {
                        let answer = batch.admit(phone, *line, name, self.retry_of).await?;
                        self.admitted += u64::from(answer == Admission::Send);
                        answers.push(answer);
                    }
                    replies.push(Reply::Admitted(reply, answers));
                }
                Event::Start { phone, reply } => {
                    batch.start(&phone).await?;
                    replies.push(Reply::Started(reply));
                }
                Event::Requeue { phone, reply } => {
                    batch.requeue(&phone).await?;
                    replies.push(Reply::Started(reply));
                }
                Event::Finish { phone, delivery } => {
                    let record = outcome_record(&phone, delivery.as_ref());
                    batch.finish(&record).await?;
                    finished.push(record.state);
                    let attempts = delivery.as_ref().map_or(&[][..], |d| &d.attempts[..]);
                    self.metrics.finished(
                        record.state,
                        delivery.as_ref().and_then(|d| d.channel),
                        attempts,
                    );
                    if let Some(delivery) = &delivery {
                        for attempt in &delivery.attempts {
                            self.providers
                                .entry(attempt.channel)
                                .or_default()
                                .record(attempt);
                            self.retries += u64::from(attempt.number > 1);
                        }
                    }
                }
            }
        }
        batch.commit().await?;
        for reply in replies {
            // A task that gave up waiting needs no answer.
            let _ = match reply {
                Reply::Admitted(reply, answers) => reply.send(answers).map_err(drop),
                Reply::Started(reply) => reply.send(()).map_err(drop),
            };
        }
        for state in finished {
            self.count(state);
        }
        self.watch_figures();
        Ok(())
    }

    /// Gauges and alert conditions, after each group.
    fn watch_figures(&mut self) {
        let queue = self.admitted.saturating_sub(self.sends);
        let delivered = self.attempted - self.failed;
        self.metrics.set_queue_size(queue);
        if self.attempted > 0 {
            self.metrics
                .set_success_ratio(delivered as f64 / self.attempted as f64);
        }
        let p95: Vec<(ProviderKind, Duration, u64)> = self
            .providers
            .iter()
            .map(|(&kind, stats)| {
                let (p95, requests) = stats.p95();
                (kind, p95, requests)
            })
            .collect();
        self.watch.check(Figures {
            attempted: self.attempted,
            delivered,
            queue,
            p95: &p95,
        });
    }

    fn count(&mut self, state: RecipientState) {
        self.sends += 1;
        self.progress.finished(state);
        if state == RecipientState::Uncertain {
            return;
        }
        self.attempted += 1;
        self.failed += u64::from(state == RecipientState::Failed);
    }
}

fn outcome_record<'a>(phone: &'a Phone, delivery: Option<&'a Delivery>) -> OutcomeRecord<'a> {
    let Some(delivery) = delivery else {
        return OutcomeRecord {
            phone,
            state: RecipientState::Uncertain,
            channel: None,
            reason: "still in flight when the shutdown grace ran out".into(),
            message_id: None,
            attempts: 0,
        };
    };
    let (state, message_id) = match &delivery.outcome {
        DeliveryOutcome::Sent { message_id } => (RecipientState::Sent, message_id.as_deref()),
        DeliveryOutcome::Fallback { message_id } => {
            (RecipientState::Fallback, message_id.as_deref())
        }
        DeliveryOutcome::Failed => (RecipientState::Failed, None),
        DeliveryOutcome::Uncertain => (RecipientState::Uncertain, None),
    };
    OutcomeRecord {
        phone,
        state,
        channel: delivery.channel.map(ProviderKind::name),
        reason: match state {
            RecipientState::Failed | RecipientState::Uncertain => delivery.reason(),
            _ => String::new(),
        },
        message_id,
        attempts: u32::try_from(delivery.attempts.len()).unwrap_or(u32::MAX),
    }
}
