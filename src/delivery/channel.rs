//! A channel is a provider as a send sees it: its HTTP client, its credentials each with a rate
//! limiter, its circuit breaker, and the retry policy. [`Channel::send`] makes the attempts for
//! one message on this provider and says why it gave up if it did; choosing between channels is
//! [`crate::delivery`]'s job.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::key::MessageKey;
use crate::alert::{Alert, Alerter};
use crate::config::BreakerSettings;
use crate::ledger::{Ledger, credential_key};
use crate::phone::Phone;
use crate::policy::breaker::{BreakerState, CallOutcome, CircuitBreaker, Permit, Transition};
use crate::policy::rate_limit::{CredentialQuota, QuotaSpent, RateLimiter, Slot};
use crate::policy::retry::{RetryAdvice, RetryPolicy, Retryable};
use crate::policy::strategy::TokenWait;
use crate::provider::ProviderSettings;
use crate::provider::{Class, Credential, ProviderClient, ProviderError, ProviderKind, Receipt};
use crate::sms_length::{self, NotRepresentable};

/// Why a channel gave up on a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelFailure {
    /// The provider's answer (or its absence) on the last attempt.
    #[error("{0}")]
    Provider(ProviderError),
    /// The circuit breaker is open: the provider was not called.
    #[error("circuit open")]
    CircuitOpen,
    /// The provider refused msgsend's credentials earlier in this run.
    #[error("credentials rejected earlier in this run")]
    Disabled,
    /// Every credential's next free slot is further away than `[bulk] max_wait` (a spent day
    /// window): not this recipient's failure; the campaign pauses (SPEC section 8).
    #[error("{0}")]
    QuotaSpent(QuotaSpent),
    /// No rate-limit token within the spillover `acquire_timeout`.
    #[error("no rate-limit token within {}", crate::units::format_duration(*.0))]
    NoToken(Duration),
    /// The request gate withdrew the message before any request (the campaign stopped).
    #[error("withdrawn before any request")]
    Withdrawn,
    /// The message rendered for this recipient is blank (its placeholders were empty): no
    /// provider takes it, so no request is made.
    #[error("the message is empty for this recipient")]
    EmptyMessage,
    /// A request may have reached the provider with no answer to trust (SPEC section 8), and
    /// no later attempt settled it: the recipient is `uncertain`, never handed to the fallback.
    #[error("{0}")]
    Ambiguous(ProviderError),
    /// The message is longer than the provider takes (`max_message_length`); not sent to it.
    #[error("message too long ({length} > {max} characters)")]
    TooLong { length: usize, max: usize },
    /// The message rendered for this recipient starts with an ad marker taken from the source
    /// (SPEC section 10): no channel is asked.
    #[error("the message starts with an advertising marker (from the source's data)")]
    AdMarker,
    /// SMS: longer in EUC-KR bytes than `max_message_bytes`; not sent by SMS.
    #[error("message too long ({bytes} > {max} EUC-KR bytes)")]
    TooManyBytes { bytes: usize, max: usize },
    /// SMS: a character outside KS X 1001 (an emoji) cannot go by SMS (SPEC section 10); the
    /// reason names the character by its code point, never quoting the message.
    #[error("{0} ({code})", code = .0.code_point())]
    NotRepresentable(NotRepresentable),
}

impl ChannelFailure {
    /// The channel cannot carry this message at all (too long, not representable): not a
    /// state of the channel, a property of the message.
    pub fn refuses_the_message(&self) -> bool {
        matches!(
            self,
            ChannelFailure::TooLong { .. }
                | ChannelFailure::TooManyBytes { .. }
                | ChannelFailure::NotRepresentable(_)
        )
    }
}

impl Retryable for ChannelFailure {
    fn advice(&self) -> RetryAdvice {
        match self {
            // An ambiguous answer is retried only under a key the provider honours: the channel
            // checks that before it asks.
            ChannelFailure::Provider(error)
                if error.class.is_transient() || error.class.is_ambiguous() =>
            {
                RetryAdvice::Retry {
                    after: error.retry_after,
                }
            }
            _ => RetryAdvice::Stop,
        }
    }
}

/// Asked once a request has its rate-limit slot, right before it goes out: `false` withdraws it
/// (and the message) without a request. A campaign uses it to record the recipient in flight
/// only when a request is really about to leave, and to withdraw recipients still waiting for
/// a token when it stops.
pub trait RequestGate: Sync {
    /// `channel` is the provider the request is about to go to (a budget reserves its price).
    fn open(&self, channel: ProviderKind) -> impl Future<Output = bool> + Send;

    /// The request `open` let go has its answer (or its failure); `ambiguous` when that leaves
    /// open whether the provider took the message (a timeout, a lost answer).
    fn answered(&self, _ambiguous: bool) {}
}

/// No gate: every request goes (`send`, health).
pub struct Ungated;

impl RequestGate for Ungated {
    async fn open(&self, _channel: ProviderKind) -> bool {
        true
    }
}

/// How one request ended. Written as `ok` or the failure's class (`server_error`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttemptOutcome {
    /// The provider accepted the message.
    Ok,
    /// The request failed with this class.
    Failed(Class),
}

impl AttemptOutcome {
    pub fn name(self) -> &'static str {
        match self {
            AttemptOutcome::Ok => "ok",
            AttemptOutcome::Failed(class) => class.name(),
        }
    }
}

impl std::fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for AttemptOutcome {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// One request made for a message.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Attempt {
    pub channel: ProviderKind,
    /// 1 for the first attempt on this channel.
    pub number: u32,
    pub outcome: AttemptOutcome,
    /// `HTTP 400`, `timeout`, ...; empty on success.
    pub detail: String,
    pub latency_ms: u64,
}

impl Attempt {
    fn new(
        channel: ProviderKind,
        number: u32,
        outcome: AttemptOutcome,
        detail: String,
        round_trip: Duration,
    ) -> Self {
        Attempt {
            channel,
            number,
            outcome,
            detail,
            latency_ms: u64::try_from(round_trip.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// Where an attempt goes: its key, how long it may wait for a slot, and the credential it must
/// use (a retry of an ambiguous attempt).
#[derive(Clone, Copy)]
struct Target<'a> {
    key: &'a str,
    wait: TokenWait,
    credential: Option<usize>,
}

/// How a send's attempts get their rate-limit slots.
pub(super) struct Slots<'a> {
    /// The first attempt's, taken already: spillover chose this channel for the message because
    /// it had a slot free first.
    pub taken: Option<Slot<'a>>,
    /// How long every other attempt waits for its slot.
    pub wait: TokenWait,
}

#[derive(Debug)]
pub struct Channel {
    kind: ProviderKind,
    pub(super) client: ProviderClient,
    pub(super) credentials: Vec<Credential>,
    pub(super) limiter: RateLimiter,
    /// How often the circuit opened (or re-opened after a failed probe) in this run.
    openings: AtomicU64,
    failure_threshold: u32,
    /// How long an open circuit waits before its half-open probe.
    pub(super) open_timeout: Duration,
    pub(super) alerter: Alerter,
    max_message_length: usize,
    max_message_bytes: usize,
    breaker: Mutex<CircuitBreaker>,
    /// Whether a wait of over a second for a rate-limit slot is logged at INFO (`send`: one
    /// message, whose operator wonders why it has not gone; a campaign waits routinely).
    pub(super) log_slot_waits: bool,
    /// A campaign's `[bulk] max_wait`: a slot further away than this is a spent quota.
    pub(super) max_wait: Option<Duration>,
    /// Set once the provider refuses msgsend's credentials: the provider is out for the run.
    disabled: Mutex<Option<String>>,
    pub(super) retry: RetryPolicy,
}

impl Channel {
    /// A channel whose rate limits live in `ledger`, shared with every process that uses it.
    pub fn new(
        http: reqwest::Client,
        settings: &ProviderSettings,
        breaker: BreakerSettings,
        retry: RetryPolicy,
        ledger: &Ledger,
    ) -> Self {
        let quotas: Vec<CredentialQuota> = settings
            .credentials
            .iter()
            .map(|credential| CredentialQuota {
                key: credential_key(
                    settings.kind.name(),
                    settings.base_url.as_str(),
                    &credential.username,
                ),
                limit: credential.rate_limit.clone(),
                burst: settings.burst,
            })
            .collect();
        Channel {
            kind: settings.kind,
            client: ProviderClient::new(http, settings),
            credentials: settings.credentials.iter().map(Credential::new).collect(),
            limiter: RateLimiter::new(&quotas, settings.timeout, ledger.clone()),
            openings: AtomicU64::new(0),
            failure_threshold: breaker.failure_threshold,
            open_timeout: breaker.open_timeout,
            alerter: Alerter::log_only(),
            max_message_length: settings.max_message_length,
            max_message_bytes: settings.max_message_bytes,
            breaker: Mutex::new(CircuitBreaker::new(
                breaker.failure_threshold,
                breaker.open_timeout,
            )),
            disabled: Mutex::new(None),
            log_slot_waits: false,
            max_wait: None,
            retry,
        }
    }

    pub fn kind(&self) -> ProviderKind {
        self.kind
    }

    /// Gives back this channel's unused rate-limit slots and writes back what it learnt to
    /// the shared ledger (see [`RateLimiter::close`]).
    pub async fn close(&self) {
        self.limiter.close().await;
    }

    /// Sends this channel's alerts (circuit opened or closed, credentials refused) there.
    pub fn set_alerter(&mut self, alerter: Alerter) {
        self.alerter = alerter;
    }

    pub fn circuit_openings(&self) -> u64 {
        self.openings.load(Ordering::Relaxed)
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.lock().expect("breaker lock").state()
    }

    /// Sends `message` to `phone` through this provider under its idempotency `key`: breaker,
    /// rate limit, request, retries. Every request made is appended to `log`.
    ///
    /// An ambiguous attempt (SPEC section 8) is retried only where the provider honours keys,
    /// on the same credential (a provider keeps keys per account); if no later attempt settles
    /// it, the failure is [`ChannelFailure::Ambiguous`].
    pub async fn send(
        &self,
        phone: &Phone,
        message: &str,
        key: &MessageKey,
        wait: TokenWait,
        gate: &impl RequestGate,
        log: &mut Vec<Attempt>,
    ) -> Result<Receipt, ChannelFailure> {
        let slots = Slots { taken: None, wait };
        self.send_from(phone, message, key, slots, gate, log).await
    }

    /// Why this provider would not be sent `message` at all, whatever its quota: blank, too
    /// long, or (SMS) not what the carriers take (SPEC section 10).
    pub(super) fn refusal(&self, message: &str) -> Option<ChannelFailure> {
        if message.trim().is_empty() {
            return Some(ChannelFailure::EmptyMessage);
        }
        let length = message.chars().count();
        if length > self.max_message_length {
            return Some(ChannelFailure::TooLong {
                length,
                max: self.max_message_length,
            });
        }
        // SMS is measured as the carriers measure it (SPEC section 10).
        if self.kind == ProviderKind::Sms {
            let bytes = match sms_length::measure(message) {
                Ok(measured) => measured.bytes,
                Err(character) => return Some(ChannelFailure::NotRepresentable(character)),
            };
            if bytes > self.max_message_bytes {
                return Some(ChannelFailure::TooManyBytes {
                    bytes,
                    max: self.max_message_bytes,
                });
            }
        }
        None
    }

    /// Whether a request would go now: credentials not refused, circuit not open.
    /// Whether this channel would take `message` now: it takes requests and can carry it.
    pub(super) fn takes(&self, message: &str) -> bool {
        self.takes_requests() && self.refusal(message).is_none()
    }

    pub(super) fn takes_requests(&self) -> bool {
        self.disabled.lock().expect("disabled lock").is_none()
            && !self.breaker_lock().would_refuse(Instant::now())
    }

    /// Like [`send`](Self::send), with the first attempt's slot perhaps taken already (see
    /// [`Slots`]).
    pub(super) async fn send_from(
        &self,
        phone: &Phone,
        message: &str,
        key: &MessageKey,
        slots: Slots<'_>,
        gate: &impl RequestGate,
        log: &mut Vec<Attempt>,
    ) -> Result<Receipt, ChannelFailure> {
        let Slots {
            taken: mut first,
            wait,
        } = slots;
        if let Some(refusal) = self.refusal(message) {
            if let Some(slot) = first {
                slot.unused();
            }
            return Err(refusal);
        }
        let key = key.for_provider(self.kind);
        let mut backoff = self.retry.backoff();
        let mut number = 1;
        // After an ambiguous attempt: the credential it went to, and what it said.
        let mut ambiguous: Option<(usize, ProviderError)> = None;
        loop {
            let target = Target {
                key: &key,
                wait,
                credential: ambiguous.as_ref().map(|(credential, _)| *credential),
            };
            let (result, round_trip, credential) = self
                .attempt(phone, message, target, first.take(), gate)
                .await;
            let error = match result {
                Ok(receipt) => {
                    log.push(Attempt::new(
                        self.kind,
                        number,
                        AttemptOutcome::Ok,
                        String::new(),
                        round_trip,
                    ));
                    return Ok(receipt);
                }
                Err(error) => error,
            };
            if let ChannelFailure::Provider(failure) = &error {
                log.push(Attempt::new(
                    self.kind,
                    number,
                    AttemptOutcome::Failed(failure.class),
                    failure.detail.clone(),
                    round_trip,
                ));
                if failure.class.is_ambiguous()
                    && let Some(credential) = credential
                {
                    ambiguous = Some((credential, failure.clone()));
                }
            }
            let unsettled = |error| match &ambiguous {
                Some((_, first)) => ChannelFailure::Ambiguous(match error {
                    ChannelFailure::Provider(last) if last.class.is_ambiguous() => last,
                    _ => first.clone(),
                }),
                None => error,
            };
            if ambiguous.is_some() && !self.client.honours_keys() {
                return Err(unsettled(error));
            }
            match backoff.after_failure(error.advice()) {
                Some(pause) => tokio::time::sleep(pause).await,
                None => return Err(unsettled(error)),
            }
            number += 1;
        }
    }

    /// One request, on the slot `taken` if one was; also says which credential it went to,
    /// when it went.
    async fn attempt(
        &self,
        phone: &Phone,
        message: &str,
        target: Target<'_>,
        taken: Option<Slot<'_>>,
        gate: &impl RequestGate,
    ) -> (Result<Receipt, ChannelFailure>, Duration, Option<usize>) {
        let no_request = |failure| (Err(failure), Duration::ZERO, None);
        let refused = if self.disabled.lock().expect("disabled lock").is_some() {
            Some(ChannelFailure::Disabled)
        } else if self.breaker_lock().would_refuse(Instant::now()) {
            // A circuit already open sends the message on at once, without waiting for a token.
            Some(ChannelFailure::CircuitOpen)
        } else {
            None
        };
        if let Some(failure) = refused {
            if let Some(slot) = taken {
                slot.unused();
            }
            return no_request(failure);
        }
        // The slot lives until the answer is back: see the rate limiter's module doc.
        let waiting = Instant::now();
        let any_credential = async {
            match self.max_wait {
                Some(horizon) => self.limiter.acquire_within_horizon(horizon).await,
                None => Ok(self.limiter.acquire().await),
            }
        };
        let slot = match (taken, target.credential, target.wait) {
            (Some(slot), ..) => Ok(slot),
            (None, Some(credential), _) => Ok(self.limiter.acquire_for(credential).await),
            (None, None, TokenWait::Unbounded) => any_credential.await,
            (None, None, TokenWait::AtMost(limit)) => {
                match tokio::time::timeout(limit, any_credential).await {
                    Ok(slot) => slot,
                    Err(_) => return no_request(ChannelFailure::NoToken(limit)),
                }
            }
        };
        let slot = match slot {
            Ok(slot) => slot,
            Err(spent) => return no_request(ChannelFailure::QuotaSpent(spent)),
        };
        let waited = waiting.elapsed();
        if self.log_slot_waits && waited > Duration::from_secs(1) {
            tracing::info!(provider = %self.kind, waited_ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX), "waited {:.1} s for a rate-limit slot (the quota is in use)", waited.as_secs_f64());
        }
        // The breaker is asked only now, right before the request: the circuit may have
        // opened (or become ready for its half-open probe) while this send waited for a slot.
        let permit = self.breaker_lock().admit(Instant::now());
        if permit == Permit::Refused {
            slot.unused();
            return no_request(ChannelFailure::CircuitOpen);
        }
        if !gate.open(self.kind).await {
            self.record(permit, CallOutcome::Neutral, "").await;
            slot.unused();
            return no_request(ChannelFailure::Withdrawn);
        }
        // The gate may have taken a while (a journal write): the slot's worst case must still
        // cover a request that leaves now.
        slot.refresh().await;
        let index = slot.credential();
        let credential = &self.credentials[index];
        // The round trip only: the wait for a token is the limiter's, not the provider's.
        let started = Instant::now();
        let answer = self
            .client
            .send(credential, phone, message, target.key)
            .await;
        let round_trip = started.elapsed();
        gate.answered(matches!(&answer, Err(error) if error.class.is_ambiguous()));
        match &answer {
            Err(error) if error.class == Class::RateLimited => {
                // The credential pauses for at most `max_delay`, whatever the provider asked.
                slot.rate_limited(
                    error
                        .retry_after
                        .map(|after| after.min(self.retry.max_delay)),
                );
            }
            // No answer in time: the request may still reach the provider up to a timeout later.
            Err(error) if error.class == Class::Timeout => slot.timed_out(),
            _ => slot.answered(),
        }
        let result = match answer {
            Ok(receipt) => {
                self.record(permit, CallOutcome::Success, "").await;
                Ok(receipt)
            }
            Err(error) => {
                let outcome = if error.class.counts_for_breaker() {
                    CallOutcome::Failure
                } else {
                    CallOutcome::Neutral
                };
                self.record(permit, outcome, &error.detail).await;
                if error.class == Class::Auth {
                    self.disable_for(&credential.username, error.detail.clone());
                }
                tracing::debug!(provider = %self.kind, phone = %phone.masked(), error = %error, "attempt failed");
                Err(ChannelFailure::Provider(error))
            }
        };
        (result, round_trip, Some(index))
    }

    fn breaker_lock(&self) -> std::sync::MutexGuard<'_, CircuitBreaker> {
        self.breaker.lock().expect("breaker lock")
    }

    /// Feeds the breaker; a circuit that opens asks the health checker first, then alerts
    /// with what it found (the seed's diagram 6). That probe costs the send that opened the
    /// circuit up to twice the provider's `timeout`, once per opening.
    async fn record(&self, permit: Permit, outcome: CallOutcome, reason: &str) {
        let transition = self.breaker_lock().record(Instant::now(), permit, outcome);
        match transition {
            Some(Transition::Opened) => {
                self.openings.fetch_add(1, Ordering::Relaxed);
                let health = self.health_for_alert().await;
                self.alerter.raise(&Alert::ProviderDown {
                    provider: self.kind,
                    reason: reason.to_string(),
                    failures: self.failure_threshold,
                    health: Some(health),
                });
            }
            Some(Transition::Closed) => self.alerter.raise(&Alert::ProviderRecovered {
                provider: self.kind,
            }),
            Some(Transition::Reopened) => {
                self.openings.fetch_add(1, Ordering::Relaxed);
                tracing::info!(provider = %self.kind, "half-open probe failed ({reason}); circuit open again")
            }
            None => {}
        }
    }

    /// Takes the provider out for the rest of the run (its credentials were refused), once.
    pub(super) fn disable_for(&self, username: &str, reason: String) {
        let mut disabled = self.disabled.lock().expect("disabled lock");
        if disabled.is_none() {
            *disabled = Some(reason.clone());
            self.alerter.raise(&Alert::CredentialsRejected {
                provider: self.kind,
                username: username.to_string(),
                reason,
            });
        }
    }

    /// Opens the circuit now (pre-flight found the provider down): sends go to the fallback
    /// until the half-open probe after `open_timeout`.
    pub(super) fn open_circuit(&self, now: Instant) {
        self.breaker_lock().open(now);
        self.openings.fetch_add(1, Ordering::Relaxed);
    }
}
