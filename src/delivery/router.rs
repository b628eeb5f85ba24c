//! The path one message takes: the primary channel, then the fallback channel when the primary
//! fails for this recipient (SPEC section 3). The result says which channel delivered it, or why
//! neither could, with every attempt made.

use super::channel::{Attempt, Channel, ChannelFailure, RequestGate, Ungated};
use crate::alert::Alerter;
use crate::config::{RoutingSettings, Settings};
use crate::phone::Phone;
use crate::policy::breaker::BreakerState;
use crate::policy::strategy::TokenWait;
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
    /// Not known: the connection broke after a request went out (the provider may have the
    /// message), so it was neither retried nor sent to the fallback.
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

    /// `kakaotalk: HTTP 400; sms: timeout`, the reason for an undelivered message.
    pub fn reason(&self) -> String {
        self.failures
            .iter()
            .map(|(kind, failure)| format!("{kind}: {failure}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Whether the last channel tried lost its answer (see [`Class::AnswerLost`]).
///
/// [`Class::AnswerLost`]: crate::provider::Class::AnswerLost
fn answer_lost(failures: &[(ProviderKind, ChannelFailure)]) -> bool {
    matches!(
        failures.last(),
        Some((_, ChannelFailure::Provider(error))) if error.class == crate::provider::Class::AnswerLost
    )
}

/// The channels of a run and the strategy between them.
#[derive(Debug)]
pub struct Router {
    primary: Channel,
    fallback: Option<Channel>,
    primary_wait: TokenWait,
}

impl Router {
    /// Builds the channels `routing` names (its primary, its fallback if any) from the
    /// providers, breaker and retry settings.
    pub fn new(
        settings: &Settings,
        routing: &RoutingSettings,
        http: reqwest::Client,
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
            ))
        };
        Ok(Router {
            primary: channel(routing.primary)?,
            fallback: routing.fallback.map(channel).transpose()?,
            primary_wait: routing.strategy.primary_wait(routing.acquire_timeout),
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

    pub fn channels(&self) -> impl Iterator<Item = &Channel> {
        std::iter::once(&self.primary).chain(self.fallback.as_ref())
    }

    /// Each channel's provider and where its circuit stands now.
    pub fn circuits(&self) -> impl Iterator<Item = (ProviderKind, BreakerState)> + '_ {
        self.channels()
            .map(|channel| (channel.kind(), channel.breaker_state()))
    }

    pub async fn deliver(&self, phone: &Phone, message: &str) -> Delivery {
        self.deliver_gated(phone, message, &Ungated).await
    }

    /// Like [`deliver`](Self::deliver), but every request first passes `gate` (see
    /// [`RequestGate`]): a campaign records the recipient in flight there, at the last moment
    /// before its first request, and can still withdraw it while it waits for a token.
    pub async fn deliver_gated(
        &self,
        phone: &Phone,
        message: &str,
        gate: &impl RequestGate,
    ) -> Delivery {
        let mut attempts = Vec::new();
        let mut failures = Vec::new();
        match self
            .primary
            .send(phone, message, self.primary_wait, gate, &mut attempts)
            .await
        {
            Ok(receipt) => {
                return Delivery {
                    outcome: DeliveryOutcome::Sent {
                        message_id: receipt.message_id,
                    },
                    channel: Some(self.primary.kind()),
                    failures,
                    attempts,
                };
            }
            Err(failure) => failures.push((self.primary.kind(), failure)),
        }
        if answer_lost(&failures) {
            return Delivery::uncertain(failures, attempts);
        }
        let withdrawn = matches!(failures.last(), Some((_, ChannelFailure::Withdrawn)));
        if let Some(fallback) = self.fallback.as_ref().filter(|_| !withdrawn) {
            tracing::debug!(phone = %phone.masked(), primary = %self.primary.kind(), "falling back to {}", fallback.kind());
            match fallback
                .send(phone, message, TokenWait::Unbounded, gate, &mut attempts)
                .await
            {
                Ok(receipt) => {
                    return Delivery {
                        outcome: DeliveryOutcome::Fallback {
                            message_id: receipt.message_id,
                        },
                        channel: Some(fallback.kind()),
                        failures,
                        attempts,
                    };
                }
                Err(failure) => failures.push((fallback.kind(), failure)),
            }
            if answer_lost(&failures) {
                return Delivery::uncertain(failures, attempts);
            }
        }
        Delivery {
            outcome: DeliveryOutcome::Failed,
            channel: None,
            failures,
            attempts,
        }
    }
}
