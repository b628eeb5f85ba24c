//! The collector: the journal's only writer and the owner of the run's counts. Everything that
//! arrived since its last commit is applied in one transaction (group commit); the tasks
//! waiting on a write are answered only once it is committed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::checkpoints::Checkpoints;
use super::send::SendEnd;
use super::{Event, MAX_GROUP, StopCause, Stopper};
use crate::cost::Money;
use crate::delivery::DeliveryOutcome;
use crate::job::{Admission, RecipientState};
use crate::journal::{Journal, JournalError, OutcomeRecord};
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
    pub(super) stopper: Stopper,
    pub(super) checkpoints: Option<&'a Checkpoints>,
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
                self.stopper.stop(StopCause::Journal);
                return Err(error);
            }
        }
        Ok(self)
    }

    async fn apply(&mut self, group: &mut Vec<Event>) -> Result<(), JournalError> {
        let mut replies = Vec::new();
        let mut admissions = Vec::new();
        let mut starts = Vec::new();
        let mut start_replies = Vec::new();
        let mut requeues = Vec::new();
        let mut finishes = Vec::new();
        let mut claims = Vec::new();
        for event in group.drain(..) {
            match event {
                Event::Admit { recipients, reply } => admissions.push((recipients, reply)),
                Event::Start { phone, reply } => {
                    starts.push(phone);
                    start_replies.push(reply);
                }
                Event::Claim { limit, reply } => claims.push((limit, reply)),
                Event::Requeue { phone, reply } => {
                    requeues.push(phone);
                    replies.push(reply);
                }
                Event::Finish { phone, line, end } => {
                    if let Some(points) = self.checkpoints {
                        points.finished(line);
                    }
                    finishes.push((phone, end));
                }
            }
        }
        // A phone has at most one of start, requeue and finish in a group (each waits for the
        // commit of the one before), so the order of the statements below does not matter.
        let mut batch = self.journal.batch(self.job_id, self.run).await?;
        batch.fence().await?;
        let mut admitted = Vec::with_capacity(admissions.len());
        for (recipients, reply) in admissions {
            let answers = batch.admit(&recipients, self.retry_of).await?;
            self.admitted += answers.iter().filter(|a| **a == Admission::Send).count() as u64;
            admitted.push((reply, answers));
        }
        let started = batch.start(&starts).await?;
        batch.requeue(&requeues).await?;
        let mut claimed = Vec::with_capacity(claims.len());
        for (limit, reply) in claims {
            claimed.push((reply, batch.claim(limit).await?));
        }
        let records: Vec<OutcomeRecord> = finishes
            .iter()
            .map(|(phone, end)| outcome_record(phone, end))
            .collect();
        batch.finish(&records).await?;
        // With the outcomes that moved it: a point on disk never runs ahead of them.
        if let Some(point) = self.checkpoints.and_then(Checkpoints::moved) {
            batch.set_resume_point(&point).await?;
        }
        batch.commit().await?;

        // A task that gave up waiting needs no answer.
        for (reply, answers) in admitted {
            let _ = reply.send(answers);
        }
        for reply in replies {
            let _ = reply.send(());
        }
        for (phone, reply) in starts.iter().zip(start_replies) {
            let _ = reply.send(started.contains(phone.as_str()));
        }
        for (reply, claimed) in claimed {
            self.admitted += claimed.rows.len() as u64;
            let _ = reply.send(claimed);
        }
        for (record, (_, end)) in records.iter().zip(&finishes) {
            let delivery = match end {
                SendEnd::Delivered(delivery, _) => Some(delivery),
                SendEnd::Uncertain(_) => None,
            };
            let attempts = delivery.map_or(&[][..], |d| &d.attempts[..]);
            self.metrics
                .finished(record.state, delivery.and_then(|d| d.channel), attempts);
            for attempt in attempts {
                self.providers
                    .entry(attempt.channel)
                    .or_default()
                    .record(attempt);
                self.retries += u64::from(attempt.number > 1);
            }
            self.count(record.state);
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

fn outcome_record<'a>(phone: &'a Phone, end: &'a SendEnd) -> OutcomeRecord<'a> {
    let (delivery, charge) = match end {
        SendEnd::Delivered(delivery, charge) => (delivery, charge),
        SendEnd::Uncertain(reason) => {
            return OutcomeRecord {
                phone,
                state: RecipientState::Uncertain,
                channel: None,
                reason: (*reason).into(),
                message_id: None,
                attempts: 0,
                cost: Money::ZERO,
                sms_class: None,
            };
        }
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
        cost: charge.cost,
        sms_class: charge.sms_class,
    }
}
