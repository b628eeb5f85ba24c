//! The path one message takes: the primary channel, then the fallback channel when the primary
//! fails for this recipient (SPEC section 3). The result says which channel delivered it, or why
//! neither could, with every attempt made.
//!
//! Under `spillover` the first request goes to whichever channel has a rate-limit slot first:
//! the primary whenever it has one free now, else the fallback if it has, else the first to
//! free one. A campaign then runs on the sum of the quotas however few sends are in flight;
//! waiting `acquire_timeout` for the primary first would leave the fallback's quota idle
//! whenever the sends in flight are fewer than the primary's quota × `acquire_timeout`.

use super::channel::{Attempt, Channel, ChannelFailure, RequestGate, Slots, Ungated};
use super::key::MessageKey;
use crate::alert::Alerter;
use crate::config::{RoutingSettings, Settings};
use crate::ledger::Ledger;
use crate::phone::Phone;
use crate::policy::breaker::BreakerState;
use crate::policy::rate_limit::{QuotaSpent, Slot, acquire_first_free};
use crate::policy::strategy::{Strategy, TokenWait};
use crate::provider::ProviderKind;

/// How one message ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Delivered by the primary channel.
    Sent { message_id: Option<String> },
    /// Delivered by the fallback channel after the primary failed.
    Fallback { message_id: Option<String> },
    /// Not delivered; each channel tried and why it gave up.
    Failed,
    /// Not known: a request may have reached the provider with no answer to trust (SPEC
    /// section 8), and no retry under its key settled it; never sent to the fallback.
    Uncertain,
}

#[derive(Debug, Clone)]
pub struct Delivery {
    pub outcome: DeliveryOutcome,
    /// The channel that delivered the message, when one did.
    pub channel: Option<ProviderKind>,
    /// Each channel that gave up, in order, and why.
    pub failures: Vec<(ProviderKind, ChannelFailure)>,
    pub attempts: Vec<Attempt>,
}

impl Delivery {
    pub fn delivered(&self) -> bool {
        matches!(
            self.outcome,
            DeliveryOutcome::Sent { .. } | DeliveryOutcome::Fallback { .. }
        )
    }

    fn failed(failures: Vec<(ProviderKind, ChannelFailure)>, attempts: Vec<Attempt>) -> Self {
        Delivery {
            outcome: DeliveryOutcome::Failed,
            channel: None,
            failures,
            attempts,
        }
    }

    fn uncertain(failures: Vec<(ProviderKind, ChannelFailure)>, attempts: Vec<Attempt>) -> Self {
        Delivery {
            outcome: DeliveryOutcome::Uncertain,
            channel: None,
            failures,
            attempts,
        }
    }

    /// Whether a channel's gate took the message back before a request (the campaign stopped).
    pub fn withdrawn(&self) -> bool {
        self.failures
            .iter()
            .any(|(_, failure)| *failure == ChannelFailure::Withdrawn)
    }

    /// The moment the quota frees when every channel tried was spent (SPEC section 8): the
    /// campaign pauses rather than wait.
    /// A channel that could not carry this message at all (too long, not representable)
    /// does not keep it from waiting for the one that can: its quota spent is a pause too.
    pub fn spent_until(&self) -> Option<crate::ledger::Micros> {
        if self.delivered() {
            return None;
        }
        let mut spent = Vec::new();
        for (_, failure) in &self.failures {
            match failure {
                ChannelFailure::QuotaSpent(quota) => spent.push(quota.0),
                failure if failure.refuses_the_message() => {}
                _ => return None,
            }
        }
        spent.into_iter().min()
    }

    /// `kakaotalk: HTTP 400; sms: timeout`, the reason for an undelivered message.
    pub fn reason(&self) -> String {
        self.failures
            .iter()
            .map(|(kind, failure)| format!("{kind}: {failure}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Whether the last channel tried may have delivered the message (SPEC section 8): then it is
/// never handed to another.
fn ambiguous(failures: &[(ProviderKind, ChannelFailure)]) -> bool {
    matches!(failures.last(), Some((_, ChannelFailure::Ambiguous(_))))
}

/// The channels of a run and the strategy between them.
#[derive(Debug)]
pub struct Router {
    primary: Channel,
    fallback: Option<Channel>,
    primary_wait: TokenWait,
    /// Spillover with a fallback: held by the send choosing its first channel, so that sends
    /// choose in arrival order and one at a time (a free slot wakes one waiter, not all).
    spill_turn: Option<tokio::sync::Mutex<()>>,
}

/// Where a message's first request goes.
enum FirstSlot<'a> {
    /// Not spilling (failover, or a channel would not take the message now): the primary
    /// first, each attempt taking its slot.
    TakenByEachAttempt,
    /// The primary's, taken.
    Primary(Slot<'a>),
    /// The fallback's, taken: the primary had none free first.
    Fallback(Slot<'a>),
    /// Both quotas are spent beyond `[bulk] max_wait`: the primary's and the fallback's.
    Spent(Vec<QuotaSpent>),
}

impl Router {
    /// Builds the channels `routing` names (its primary, its fallback if any) from the
    /// providers, breaker and retry settings; their quotas live in `ledger`.
    pub fn new(
        settings: &Settings,
        routing: &RoutingSettings,
        http: reqwest::Client,
        ledger: &Ledger,
    ) -> Result<Self, String> {
        let channel = |kind: ProviderKind| -> Result<Channel, String> {
            let provider = settings
                .provider(kind)
                .ok_or_else(|| format!("[providers.{kind}] is not configured"))?;
            Ok(Channel::new(
                http.clone(),
                provider,
                settings.breaker,
                settings.retry,
                ledger,
            ))
        };
        let fallback = routing.fallback.map(channel).transpose()?;
        let spills = routing.strategy == Strategy::Spillover && fallback.is_some();
        Ok(Router {
            primary: channel(routing.primary)?,
            fallback,
            primary_wait: routing.strategy.primary_wait(routing.acquire_timeout),
            spill_turn: spills.then(|| tokio::sync::Mutex::new(())),
        })
    }

    /// Sends the channels' alerts to `alerter` (the log only by default).
    pub fn with_alerter(mut self, alerter: &Alerter) -> Self {
        self.primary.set_alerter(alerter.clone());
        if let Some(fallback) = &mut self.fallback {
            fallback.set_alerter(alerter.clone());
        }
        self
    }

    /// A campaign's `[bulk] max_wait`: a send whose every credential is spent for longer says
    /// so ([`ChannelFailure::QuotaSpent`]) instead of waiting.
    pub fn with_max_wait(mut self, max_wait: std::time::Duration) -> Self {
        self.primary.max_wait = Some(max_wait);
        if let Some(fallback) = &mut self.fallback {
            fallback.max_wait = Some(max_wait);
        }
        self
    }

    /// Logs at INFO every wait of over a second for a rate-limit slot (`send`).
    pub fn log_slot_waits(mut self) -> Self {
        self.primary.log_slot_waits = true;
        if let Some(fallback) = &mut self.fallback {
            fallback.log_slot_waits = true;
        }
        self
    }

    pub fn channels(&self) -> impl Iterator<Item = &Channel> {
        std::iter::once(&self.primary).chain(self.fallback.as_ref())
    }

    /// Each channel's provider and where its circuit stands now.
    pub fn circuits(&self) -> impl Iterator<Item = (ProviderKind, BreakerState)> + '_ {
        self.channels()
            .map(|channel| (channel.kind(), channel.breaker_state()))
    }

    /// A message no channel is asked to send: failed for `failure`, named after the primary.
    pub fn refuse(&self, failure: ChannelFailure) -> Delivery {
        Delivery::failed(vec![(self.primary.kind(), failure)], Vec::new())
    }

    pub async fn deliver(&self, phone: &Phone, message: &str, key: &MessageKey) -> Delivery {
        self.deliver_gated(phone, message, key, &Ungated).await
    }

    /// Gives back the rate-limit slots this process holds and tells the shared ledger what it
    /// learnt, so the next process starts from the truth rather than the worst case.
    pub async fn close(&self) {
        for channel in self.channels() {
            channel.close().await;
        }
    }

    /// Like [`deliver`](Self::deliver), but every request first passes `gate` (see
    /// [`RequestGate`]): a campaign records the recipient in flight there, at the last moment
    /// before its first request, and can still withdraw it while it waits for a token.
    pub async fn deliver_gated(
        &self,
        phone: &Phone,
        message: &str,
        key: &MessageKey,
        gate: &impl RequestGate,
    ) -> Delivery {
        let unbounded = |channel, taken| Leg {
            channel,
            slots: Slots {
                taken,
                wait: TokenWait::Unbounded,
            },
        };
        let fallback = self.fallback.as_ref();
        // Under spillover (`spill_turn`): whether the fallback could carry this message now,
        // measured once. When it could not (SMS refuses the text, its circuit is open, its
        // credentials were refused), giving up on the primary after `acquire_timeout` would be a
        // certain failure: the primary is waited for as long as it takes, as under failover.
        let fallback_takes =
            self.spill_turn.is_some() && fallback.is_some_and(|channel| channel.takes(message));
        let primary_wait = match self.spill_turn {
            Some(_) if !fallback_takes => TokenWait::Unbounded,
            _ => self.primary_wait,
        };
        let primary = |taken| Leg {
            channel: &self.primary,
            slots: Slots {
                taken,
                wait: primary_wait,
            },
        };
        let first = if fallback_takes && self.primary.takes(message) {
            self.spill().await
        } else {
            FirstSlot::TakenByEachAttempt
        };
        match first {
            FirstSlot::TakenByEachAttempt => {
                let legs = [Some(primary(None)), fallback.map(|f| unbounded(f, None))];
                self.route(legs, phone, message, key, gate).await
            }
            FirstSlot::Primary(slot) => {
                let legs = [
                    Some(primary(Some(slot))),
                    fallback.map(|f| unbounded(f, None)),
                ];
                self.route(legs, phone, message, key, gate).await
            }
            // The primary was only busy: should the fallback fail the message for certain, the
            // primary still gets it, as the fallback takes the primary's failures.
            FirstSlot::Fallback(slot) => {
                let legs = [
                    fallback.map(|f| unbounded(f, Some(slot))),
                    Some(unbounded(&self.primary, None)),
                ];
                self.route(legs, phone, message, key, gate).await
            }
            FirstSlot::Spent(spent) => {
                let channels = self.channels().map(Channel::kind);
                let failures = channels
                    .zip(spent)
                    .map(|(kind, spent)| (kind, ChannelFailure::QuotaSpent(spent)))
                    .collect();
                Delivery::failed(failures, Vec::new())
            }
        }
    }

    /// Tries the channels of `legs` in order until one delivers the message. An ambiguous
    /// answer (SPEC section 8) ends it `uncertain`, never handed to the next channel; a
    /// withdrawn one (the campaign stopped) ends it too.
    async fn route(
        &self,
        legs: [Option<Leg<'_>>; 2],
        phone: &Phone,
        message: &str,
        key: &MessageKey,
        gate: &impl RequestGate,
    ) -> Delivery {
        let mut attempts = Vec::new();
        let mut failures: Vec<(ProviderKind, ChannelFailure)> = Vec::new();
        for Leg { channel, slots } in legs.into_iter().flatten() {
            if let Some((failed, _)) = failures.last() {
                tracing::debug!(phone = %phone.masked(), failed = %failed, "trying {}", channel.kind());
            }
            match channel
                .send_from(phone, message, key, slots, gate, &mut attempts)
                .await
            {
                Ok(receipt) => {
                    let message_id = receipt.message_id;
                    let outcome = if channel.kind() == self.primary.kind() {
                        DeliveryOutcome::Sent { message_id }
                    } else {
                        DeliveryOutcome::Fallback { message_id }
                    };
                    return Delivery {
                        outcome,
                        channel: Some(channel.kind()),
                        failures,
                        attempts,
                    };
                }
                Err(failure) => failures.push((channel.kind(), failure)),
            }
            if ambiguous(&failures) {
                return Delivery::uncertain(failures, attempts);
            }
            if matches!(failures.last(), Some((_, ChannelFailure::Withdrawn))) {
                break;
            }
        }
        Delivery::failed(failures, attempts)
    }

    /// Under spillover, takes the first request's slot on whichever channel has one first (see
    /// the module doc); the caller made sure both would take the message now.
    async fn spill(&self) -> FirstSlot<'_> {
        let (Some(turn), Some(fallback)) = (&self.spill_turn, &self.fallback) else {
            return FirstSlot::TakenByEachAttempt;
        };
        let _turn = turn.lock().await;
        let limiters = [&self.primary.limiter, &fallback.limiter];
        match acquire_first_free(&limiters, self.primary.max_wait).await {
            Ok((0, slot)) => FirstSlot::Primary(slot),
            Ok((_, slot)) => FirstSlot::Fallback(slot),
            Err(spent) => FirstSlot::Spent(spent),
        }
    }
}

/// One channel a message may go to, with how its attempts get their slots.
struct Leg<'a> {
    channel: &'a Channel,
    slots: Slots<'a>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::rate_limit::QuotaSpent;
    use crate::sms_length::NotRepresentable;

    fn failed(failures: Vec<(ProviderKind, ChannelFailure)>) -> Delivery {
        Delivery::failed(failures, Vec::new())
    }

    #[test]
    fn a_spent_quota_pauses_unless_another_channel_could_have_carried_the_message() {
        let spent = ChannelFailure::QuotaSpent(QuotaSpent(5));
        let emoji = ChannelFailure::NotRepresentable(NotRepresentable { character: '😀' });
        // KakaoTalk spent, SMS cannot carry it: only KakaoTalk could, so the campaign pauses.
        let only_one_carries = failed(vec![
            (ProviderKind::KakaoTalk, spent.clone()),
            (ProviderKind::Sms, emoji),
        ]);
        assert_eq!(only_one_carries.spent_until(), Some(5));
        // SMS failed for another reason: the recipient's own outcome, no pause.
        let other = failed(vec![
            (ProviderKind::KakaoTalk, spent.clone()),
            (ProviderKind::Sms, ChannelFailure::CircuitOpen),
        ]);
        assert_eq!(other.spent_until(), None);
        // Nothing spent: no pause.
        let too_long = ChannelFailure::TooLong { length: 2, max: 1 };
        assert_eq!(
            failed(vec![(ProviderKind::Sms, too_long)]).spent_until(),
            None
        );
    }
}
