//! The health checker: one probe path for `msgsend health`, the pre-flight of `bulk` and `send`
//! (SPEC section 3, the seed's diagram 8) and the probe a circuit makes when it opens (diagram
//! 6). A probe is `GET {base_url}{health_path}` with a credential, through that credential's
//! rate limiter like any request: it waits at most the provider's `timeout` for a slot, and a
//! quota in use (no slot in time, or a 429) is `busy`, never a failure.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::Instant;

use super::channel::Channel;
use super::router::Router;
use crate::alert::Alert;
use crate::provider::{Class, ProviderKind};

/// What a probe found.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    strum::Display,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Health {
    /// 2xx.
    Healthy,
    /// The quota is in use (no slot within the timeout, or a 429): not a failure.
    Busy,
    /// 401/403.
    CredentialsRejected,
    /// 5xx, another status, a timeout, a refused connection.
    Unhealthy,
    /// Not probed (`--no-preflight`, `[routing] preflight = false`).
    Skipped,
}

impl Health {
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// One credential's probe.
#[derive(Debug, Clone)]
pub struct Probe {
    pub credential: String,
    pub health: Health,
    pub latency: Option<Duration>,
    /// Why it is not healthy: `HTTP 503`, `timeout`, `connection refused`, ...
    pub detail: Option<String>,
}

impl Probe {
    fn describe(&self) -> String {
        match &self.detail {
            Some(detail) => format!("{} ({detail})", self.health),
            None => self.health.to_string(),
        }
    }
}

impl Channel {
    /// Probes every credential at once, each through its own rate limiter, each bounded by the
    /// provider's `timeout` for its slot and again for its answer.
    pub async fn probe(&self) -> Vec<Probe> {
        let slot_wait = self.client.timeout();
        join_all((0..self.credentials.len()).map(|index| self.probe_credential(index, slot_wait)))
            .await
    }

    async fn probe_credential(&self, index: usize, slot_wait: Duration) -> Probe {
        let credential = &self.credentials[index];
        let probe = |health, latency, detail| Probe {
            credential: credential.username.clone(),
            health,
            latency,
            detail,
        };
        let Ok(slot) = tokio::time::timeout(slot_wait, self.limiter.acquire_probe(index)).await
        else {
            return probe(Health::Busy, None, Some("quota in use".into()));
        };
        let answer = self.client.probe(credential).await;
        match answer {
            Ok(latency) => {
                slot.answered();
                probe(Health::Healthy, Some(latency), None)
            }
            Err(error) => {
                let health = match error.class {
                    Class::RateLimited => Health::Busy,
                    Class::Auth => Health::CredentialsRejected,
                    _ => Health::Unhealthy,
                };
                match error.class {
                    Class::RateLimited => slot.rate_limited(
                        error
                            .retry_after
                            .map(|after| after.min(self.retry.max_delay)),
                    ),
                    // No answer in time: the probe may still reach the provider up to a
                    // timeout later, like a message request (SPEC section 8).
                    Class::Timeout => slot.timed_out(),
                    _ => slot.answered(),
                }
                probe(health, None, Some(error.detail))
            }
        }
    }

    /// The pre-flight of one provider: its credentials probed, the worst result sets the run's
    /// starting state — refused credentials take the provider out, an unhealthy one starts its
    /// circuit open (sends go to the fallback until the half-open probe after `open_timeout`) —
    /// with the `provider_down` alert, and one INFO line says the result.
    pub async fn preflight(&self) -> Health {
        let probes = self.probe().await;
        let any = |health| probes.iter().find(|p| p.health == health);
        // Refused credentials take the provider out; an unhealthy credential says it is down;
        // a busy quota beside a healthy credential is just a busy quota.
        let worst = any(Health::CredentialsRejected)
            .or_else(|| any(Health::Unhealthy))
            .or_else(|| any(Health::Busy).filter(|_| any(Health::Healthy).is_none()));
        let health = worst.map_or(Health::Healthy, |p| p.health);
        let found = worst.map_or_else(|| health.to_string(), Probe::describe);
        tracing::info!(provider = %self.kind(), health = health.name(), "pre-flight: {} {found}", self.kind());
        match (health, worst) {
            (Health::CredentialsRejected, Some(probe)) => {
                self.disable_for(&probe.credential, probe.detail.clone().unwrap_or_default());
            }
            (Health::Unhealthy, Some(probe)) => {
                self.open_circuit(Instant::now());
                self.alerter.raise(&Alert::ProviderDown {
                    provider: self.kind(),
                    reason: format!("pre-flight: {}", probe.detail.as_deref().unwrap_or("")),
                    failures: 0,
                    health: Some(probe.describe()),
                });
            }
            _ => {}
        }
        health
    }

    /// The health probe a circuit makes when it opens: its first credential's, described for
    /// the `provider_down` alert. It waits for a slot no longer than the circuit stays open, so
    /// the alert goes out before the circuit can recover (a quota in use reads `busy`).
    pub(super) async fn health_for_alert(&self) -> String {
        let slot_wait = self.client.timeout().min(self.open_timeout);
        self.probe_credential(0, slot_wait).await.describe()
    }
}

impl Router {
    /// Pre-flights every channel at once (`bulk`, `send`): provider → what its probe found.
    pub async fn preflight(&self) -> BTreeMap<ProviderKind, Health> {
        let results = join_all(
            self.channels()
                .map(|channel| async { (channel.kind(), channel.preflight().await) }),
        )
        .await;
        results.into_iter().collect()
    }

    /// Every channel `skipped` (`--no-preflight`).
    pub fn preflight_skipped(&self) -> BTreeMap<ProviderKind, Health> {
        self.channels()
            .map(|channel| (channel.kind(), Health::Skipped))
            .collect()
    }
}
