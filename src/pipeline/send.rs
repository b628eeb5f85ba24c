//! The send task of one recipient: the router (limiter, breaker, retry, fallback) behind an
//! in-flight gate that records the recipient in the journal right before its first request;
//! the `--max-failure-rate` budget; and the wait when every channel is unusable.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};

use super::{Event, StopCause, Stopper};
use crate::advert;
use crate::cost::{Budget, Money, Reservation};
use crate::delivery::{ChannelFailure, MessageKey, MessagePrice, Pricing, RequestGate};
use crate::delivery::{Delivery, DeliveryOutcome, Router};
use crate::phone::Phone;
use crate::policy::rate_limit::format_micros;
use crate::provider::ProviderKind;
use crate::recipient::Addressee;
use crate::schedule::Clock;
use crate::sms_length::SmsClass;
use crate::template::MessageTemplate;

/// `--max-failure-rate`: counted by the send tasks themselves as each delivery ends, so the
/// campaign stops the moment the rate is crossed rather than when the collector catches up
/// (failures without a request, both circuits open, end in microseconds).
pub(super) struct FailureBudget {
    limit: Option<f64>,
    attempted: AtomicU64,
    failed: AtomicU64,
}

/// The minimum of attempted recipients before `--max-failure-rate` may abort (SPEC).
const FAILURE_RATE_MINIMUM: u64 = 100;

impl FailureBudget {
    pub(super) fn new(limit: Option<f64>) -> FailureBudget {
        FailureBudget {
            limit,
            attempted: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    fn record(&self, failed: bool, stopper: &Stopper) {
        let Some(limit) = self.limit else { return };
        let attempted = self.attempted.fetch_add(1, Ordering::SeqCst) + 1;
        let failed = self.failed.fetch_add(u64::from(failed), Ordering::SeqCst) + u64::from(failed);
        if attempted >= FAILURE_RATE_MINIMUM && failed as f64 / attempted as f64 > limit {
            stopper.stop(StopCause::FailureRate {
                failed,
                attempted,
                limit,
            });
        }
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
pub(super) struct Outage {
    limit: Duration,
    since: std::sync::Mutex<Option<tokio::time::Instant>>,
}

enum AfterOutage {
    TryAgain,
    GiveUp,
}

/// How often a waiting send looks again whether a channel takes messages.
const OUTAGE_POLL: Duration = Duration::from_millis(250);

impl Outage {
    pub(super) fn new(limit: Duration) -> Outage {
        Outage {
            limit,
            since: std::sync::Mutex::new(None),
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

    async fn wait(&self, unusable: Unusable, stopper: &Stopper) -> AfterOutage {
        if stopper.is_stopped() {
            return AfterOutage::GiveUp;
        }
        let now = tokio::time::Instant::now();
        let since = *self
            .since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(now);
        if unusable.permanent || now - since >= self.limit {
            stopper.stop(StopCause::ProvidersUnusable(format!(
                "every channel is unusable ({})",
                unusable.reason
            )));
            return AfterOutage::GiveUp;
        }
        tokio::select! {
            () = tokio::time::sleep(OUTAGE_POLL) => AfterOutage::TryAgain,
            () = stopper.stopped() => AfterOutage::GiveUp,
        }
    }
}

/// What every send task shares.
pub(super) struct SendContext {
    /// Part of every recipient's idempotency key.
    pub(super) job_id: String,
    pub(super) router: Arc<Router>,
    pub(super) failure_budget: FailureBudget,
    pub(super) outage: Outage,
    pub(super) template: MessageTemplate,
    pub(super) events: mpsc::Sender<Event>,
    pub(super) stopper: Stopper,
    pub(super) grace: Duration,
    /// The providers' prices, for the cost of each message.
    pub(super) pricing: Pricing,
    /// `--max-cost`: what each request reserves before it leaves.
    pub(super) budget: Option<Budget>,
    /// `--valid-until` / `--valid-for`: no request leaves after it.
    pub(super) deadline: Option<Deadline>,
}

/// A job's deadline and the wall clock it is read on.
pub(super) struct Deadline {
    pub(super) at: jiff::Timestamp,
    pub(super) clock: Clock,
}

impl Deadline {
    fn passed(&self) -> bool {
        self.clock.now() >= self.at
    }
}

pub(super) async fn send_one(context: &SendContext, recipient: Addressee) {
    if context.stopper.is_stopped() {
        return; // not started: it stays `queued` for a resume
    }
    let (text, marked) = context
        .template
        .render_checking(|field| recipient.field(field), advert::starts_with_marker);
    // An ad marker taken from the source (`{name}` holding `(광고)`): not sent anywhere.
    if marked {
        let end = SendEnd::Delivered(
            context.router.refuse(ChannelFailure::AdMarker),
            Charge::default(),
        );
        let (phone, line) = (recipient.phone, recipient.line);
        let _ = context
            .events
            .send(Event::Finish { phone, line, end })
            .await;
        return;
    }
    let key = MessageKey::for_recipient(&context.job_id, &recipient.phone);
    let gate = InFlightGate {
        context,
        phone: &recipient.phone,
        opened: AtomicBool::new(false),
        outstanding: AtomicBool::new(false),
        ambiguous: AtomicBool::new(false),
        taken: AtomicBool::new(false),
        answered: Notify::new(),
        text: &text,
        price: OnceLock::new(),
        reserved: Mutex::new(None),
    };
    let delivery = loop {
        // After a stop, a recipient with no request out (waiting for a token, or between two
        // attempts) is taken back at once; one with a request out gets the shutdown grace for
        // its answer. The delivery is polled first: an answer that completes it wins.
        let stopped = async {
            context.stopper.stopped().await;
            let _ = tokio::time::timeout(context.grace, gate.no_request_out()).await;
        };
        let delivery = tokio::select! {
            biased;
            delivery = context.router.deliver_gated(&recipient.phone, &text, &key, &gate) => Some(delivery),
            () = stopped => None,
        };
        // Another live run of the job (`--join`) claimed the recipient first: it is that
        // run's to send and to count; nothing was sent here.
        if gate.taken.load(Ordering::SeqCst) {
            return;
        }
        let Some(done) = &delivery else {
            break delivery;
        };
        // Every channel's quota is spent for longer than `max_wait`: the campaign pauses, and
        // this recipient waits for the resume like those not reached.
        if let Some(until) = done.spent_until() {
            context
                .stopper
                .stop(StopCause::QuotaExhausted(format_micros(until)));
            if gate.ambiguous() {
                break None;
            }
            if gate.opened() {
                gate.requeue().await;
            }
            return;
        }
        match Unusable::of(done, context.outage.begun()) {
            // No channel would take it: not this recipient's failure. Wait for one to come
            // back (a half-open probe) rather than burn through the list.
            Some(unusable) => {
                // An earlier attempt may have reached the provider (its answer was lost or
                // late): not sent again while waiting for a channel.
                if gate.ambiguous() {
                    break None;
                }
                // What was tried failed for certain: the recipient is back in the queue.
                if gate.opened() {
                    gate.requeue().await;
                }
                match context.outage.wait(unusable, &context.stopper).await {
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
    let end = match delivery {
        // Still waiting for an answer when the grace ran out: it may have arrived.
        None if gate.request_out() => SendEnd::Uncertain(GRACE_RAN_OUT),
        Some(delivery) if !delivery.withdrawn() => {
            context.failure_budget.record(
                delivery.outcome == DeliveryOutcome::Failed,
                &context.stopper,
            );
            let charge = gate.charge(delivery.channel);
            SendEnd::Delivered(delivery, charge)
        }
        // Stopped with no request out: before any request, or between attempts.
        _ => {
            if !gate.opened() {
                return; // no request was made: it stays `queued` for a resume
            }
            if gate.ambiguous() {
                SendEnd::Uncertain(STOPPED_AFTER_LOST_ANSWER)
            } else {
                // Every request so far failed for certain: a resume sends it again.
                gate.requeue().await;
                return;
            }
        }
    };
    // A message that may have been accepted keeps its reservation for the rest of the run (the
    // budget must not pass even if it was); any other gives it back (not accepted).
    let unsettled = match &end {
        SendEnd::Uncertain(_) => true,
        SendEnd::Delivered(delivery, _) => delivery.outcome == DeliveryOutcome::Uncertain,
    };
    if unsettled {
        gate.keep_reservation();
    }
    drop(gate);
    let _ = context
        .events
        .send(Event::Finish {
            phone: recipient.phone,
            line: recipient.line,
            end,
        })
        .await;
}

/// How a send task ended, for the collector.
pub(super) enum SendEnd {
    /// The router's answer: sent, fallback, failed, or uncertain (an answer lost), and what
    /// the message cost.
    Delivered(Delivery, Charge),
    /// A request may have reached the provider and no answer says whether: why.
    Uncertain(&'static str),
}

pub(super) const GRACE_RAN_OUT: &str = "still in flight when the shutdown grace ran out";
const STOPPED_AFTER_LOST_ANSWER: &str =
    "stopped between attempts after one whose answer was lost or late";
pub(super) const TASK_FAILED: &str =
    "its send task failed unexpectedly; not resent unless --resend-uncertain";

/// Records the recipient `in_flight` (and waits for the commit) when its first request is
/// about to go, and withdraws it if the campaign stopped before that.
struct InFlightGate<'a> {
    context: &'a SendContext,
    phone: &'a Phone,
    /// Set before the `in_flight` record is even sent, so that a stop arriving while the
    /// record is on its way treats the recipient as in flight (grace, then `uncertain`) and
    /// never leaves an `in_flight` row behind a send it dropped.
    opened: AtomicBool,
    /// A request is out: let go through the gate, its answer not back yet.
    outstanding: AtomicBool,
    /// An answer so far left open whether the provider took the message (timeout, lost).
    ambiguous: AtomicBool,
    /// The journal did not record it in flight: another live run of the job had claimed it.
    taken: AtomicBool,
    /// Wakes a stop waiting for the outstanding request's answer.
    answered: Notify,
    /// The rendered message, measured for its price only when a price is needed.
    text: &'a str,
    /// What the message costs on each channel: measured (EUC-KR bytes) once, when first
    /// needed — a budget's reservation, a charge, an SMS delivery — not for every message.
    price: OnceLock<MessagePrice>,
    /// The channel whose price the budget holds for this message, and that price.
    reserved: Mutex<Option<(ProviderKind, Money)>>,
}

/// What a delivered message cost, for the journal.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Charge {
    pub(super) cost: Money,
    /// Delivered by SMS: short or long.
    pub(super) sms_class: Option<SmsClass>,
}

impl Drop for InFlightGate<'_> {
    /// A reservation not turned into a charge is given back, whichever way the send ended.
    fn drop(&mut self) {
        if let (Some(budget), Some((_, price))) = (&self.context.budget, self.reserved_mut().take())
        {
            budget.release(price);
        }
    }
}

impl InFlightGate<'_> {
    fn price(&self) -> &MessagePrice {
        self.price
            .get_or_init(|| self.context.pricing.of(self.text))
    }

    fn reserved_mut(&self) -> std::sync::MutexGuard<'_, Option<(ProviderKind, Money)>> {
        self.reserved.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The message was accepted by `channel` (or by none): its charge, and the budget's
    /// reservation turned into spending.
    fn charge(&self, channel: Option<ProviderKind>) -> Charge {
        let Some(channel) = channel else {
            return Charge::default();
        };
        // Nothing to measure when the channel is unpriced and not SMS (no size to count).
        if !self.context.pricing.is_priced(channel) && channel != ProviderKind::Sms {
            return Charge::default();
        }
        let cost = self.price().on(channel);
        if let Some(budget) = &self.context.budget {
            match self.reserved_mut().take() {
                Some((reserved, price)) if reserved == channel => budget.charge(price),
                // Not reserved on this channel (cannot happen: a request reserves before it
                // leaves); spend it anyway so the budget stays true.
                other => {
                    if let Some((_, price)) = other {
                        budget.release(price);
                    }
                    budget.charge(cost);
                }
            }
        }
        Charge {
            cost,
            sms_class: (channel == ProviderKind::Sms)
                .then_some(self.price().sms_class)
                .flatten(),
        }
    }

    /// The message may have been accepted (its outcome is `uncertain`): what the budget holds
    /// for it counts as spent in this run, though no cost is recorded (no 2xx said so).
    fn keep_reservation(&self) {
        if let (Some(budget), Some((_, price))) = (&self.context.budget, self.reserved_mut().take())
        {
            budget.charge(price);
        }
    }

    /// Reserves this message's price on `channel` (giving back one held on another channel);
    /// `false`, and the campaign stopped for its budget, when that would pass it once the
    /// other sends' reservations settled (see [`Budget::reserve_or_settle`]).
    async fn reserve(&self, channel: ProviderKind) -> bool {
        let Some(budget) = &self.context.budget else {
            return true;
        };
        {
            let mut reserved = self.reserved_mut();
            match reserved.take() {
                Some((held, price)) if held == channel => {
                    *reserved = Some((held, price));
                    return true;
                }
                Some((_, price)) => budget.release(price),
                None => {}
            }
        }
        let price = self.price().on(channel);
        let reservation = tokio::select! {
            reservation = budget.reserve_or_settle(price) => reservation,
            () = self.context.stopper.stopped() => return false,
        };
        if reservation == Reservation::Spent {
            self.context.stopper.stop(StopCause::Budget {
                limit: budget.limit(),
                spent: budget.spent(),
            });
            return false;
        }
        *self.reserved_mut() = Some((channel, price));
        true
    }

    /// Whether the journal may hold this recipient `in_flight`.
    fn opened(&self) -> bool {
        self.opened.load(Ordering::SeqCst)
    }

    fn request_out(&self) -> bool {
        self.outstanding.load(Ordering::SeqCst)
    }

    fn ambiguous(&self) -> bool {
        self.ambiguous.load(Ordering::SeqCst)
    }

    /// Resolves once no request is out.
    async fn no_request_out(&self) {
        loop {
            let answered = self.answered.notified();
            tokio::pin!(answered);
            answered.as_mut().enable();
            if !self.request_out() {
                return;
            }
            answered.await;
        }
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
    async fn open(&self, channel: ProviderKind) -> bool {
        // After a stop no new request leaves, not even a retry or the fallback.
        if self.context.stopper.is_stopped() {
            return false;
        }
        // Nor after the deadline: the timer that stops the run may fire late, this may not.
        if self.context.deadline.as_ref().is_some_and(Deadline::passed) {
            self.context.stopper.stop(StopCause::Expired);
            return false;
        }
        if !self.reserve(channel).await {
            return false;
        }
        if self.opened() {
            // A retry or the fallback: already recorded in flight.
            self.outstanding.store(true, Ordering::SeqCst);
            return true;
        }
        self.opened.store(true, Ordering::SeqCst);
        let (reply, committed) = oneshot::channel();
        let start = Event::Start {
            phone: self.phone.clone(),
            reply,
        };
        // No commit, no request: the journal must know before the provider does.
        if self.context.events.send(start).await.is_err() {
            self.opened.store(false, Ordering::SeqCst);
            return false;
        }
        match committed.await {
            Ok(true) => {}
            Ok(false) => {
                self.taken.store(true, Ordering::SeqCst);
                self.opened.store(false, Ordering::SeqCst);
                return false;
            }
            Err(_) => {
                self.opened.store(false, Ordering::SeqCst);
                return false;
            }
        }
        self.outstanding.store(true, Ordering::SeqCst);
        true
    }

    fn answered(&self, ambiguous: bool) {
        if ambiguous {
            self.ambiguous.store(true, Ordering::SeqCst);
        }
        self.outstanding.store(false, Ordering::SeqCst);
        self.answered.notify_waiters();
    }
}
