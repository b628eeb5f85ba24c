//! The collector: the journal's only writer and the owner of the run's counts. Everything that
//! arrived since its last commit is applied in one transaction (group commit); the tasks
//! waiting on a write are answered only once it is committed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Event, MAX_GROUP};
use crate::delivery::{Delivery, DeliveryOutcome};
use crate::journal::{Admission, Journal, JournalError, OutcomeRecord, RecipientState};
use crate::phone::Phone;
use crate::provider::ProviderKind;
use crate::report::alerts::{Figures, Watch};
use crate::report::metrics::Metrics;
use crate::report::progress::Progress;
use crate::report::summary::ProviderStats;

/// The journal's only writer, and the owner of the run's counts.
pub(super) struct Collector<'a> {
    pub(super) journal: &'a mut Journal,
    pub(super) job_id: &'a str,
    pub(super) run: u32,
    pub(super) retry_of: Option<&'a str>,
    pub(super) progress: Progress,
    pub(super) metrics: Arc<Metrics>,
    pub(super) watch: Watch,
    pub(super) providers: BTreeMap<ProviderKind, ProviderStats>,
    pub(super) retries: u64,
    pub(super) sends: u64,
    /// Recipients admitted to be sent in this run (the queue is those not finished yet).
    pub(super) admitted: u64,
    pub(super) attempted: u64,
    pub(super) failed: u64,
    pub(super) stop: CancellationToken,
}

/// An answer owed once the transaction holding its write is committed.
enum Reply {
    Admitted(oneshot::Sender<Vec<Admission>>, Vec<Admission>),
    Started(oneshot::Sender<()>),
}

impl Collector<'_> {
    pub(super) async fn run(
        mut self,
        mut events: mpsc::Receiver<Event>,
    ) -> Result<Self, JournalError> {
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
