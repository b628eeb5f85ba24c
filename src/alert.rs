//! Alerts (SPEC section 6): events an operator must hear about, and where they go. Each is
//! logged at WARN with a stable `alert` field (log-based monitoring can match on it) and, when
//! `[alerts] webhook` is set, POSTed there as a JSON object (`alert`, `provider`, `job_id`,
//! `value`, `threshold`, `message`, `at`). A webhook that fails or hangs is logged and never
//! slows or stops a campaign: posts run in their own tasks, each bounded by a timeout.
//!
//! A leaf of the module tree: the channels raise provider alerts here, and the run's watch
//! ([`crate::report::alerts`]) raises the threshold alerts, without either knowing the other.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::task::TaskTracker;

use crate::provider::ProviderKind;

/// How long one webhook POST may take.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq)]
pub enum Alert {
    /// The provider's circuit opened after `failures` consecutive failures: calls go to the
    /// fallback.
    ProviderDown {
        provider: ProviderKind,
        reason: String,
        failures: u32,
        /// What a health probe of the provider found, when one was made.
        health: Option<String>,
    },
    /// A half-open probe succeeded: the circuit is closed again.
    ProviderRecovered { provider: ProviderKind },
    /// The provider refused msgsend's credentials (401/403); it is out for the rest of the run.
    CredentialsRejected {
        provider: ProviderKind,
        username: String,
        reason: String,
    },
    /// The share of attempted recipients delivered fell below `min_success_rate`.
    LowSuccessRate { value: f64, threshold: f64 },
    /// More recipients wait than `max_queue`.
    HighQueue { value: u64, threshold: u64 },
    /// The provider's p95 response time rose above `max_response_time`.
    SlowResponses {
        provider: ProviderKind,
        value: Duration,
        threshold: Duration,
    },
}

impl Alert {
    pub fn name(&self) -> &'static str {
        match self {
            Alert::ProviderDown { .. } | Alert::CredentialsRejected { .. } => "provider_down",
            Alert::ProviderRecovered { .. } => "provider_recovered",
            Alert::LowSuccessRate { .. } => "low_success_rate",
            Alert::HighQueue { .. } => "high_queue",
            Alert::SlowResponses { .. } => "slow_responses",
        }
    }

    /// The health probe's result, for the webhook's `health` field.
    pub fn health(&self) -> Option<&str> {
        match self {
            Alert::ProviderDown { health, .. } => health.as_deref(),
            _ => None,
        }
    }

    pub fn provider(&self) -> Option<ProviderKind> {
        match self {
            Alert::ProviderDown { provider, .. }
            | Alert::ProviderRecovered { provider }
            | Alert::CredentialsRejected { provider, .. }
            | Alert::SlowResponses { provider, .. } => Some(*provider),
            Alert::LowSuccessRate { .. } | Alert::HighQueue { .. } => None,
        }
    }

    /// The measured value and the threshold it crossed, in the webhook's units (a share,
    /// a count, seconds); `None` where the alert has no such figure.
    pub fn figures(&self) -> (Option<f64>, Option<f64>) {
        match self {
            Alert::ProviderDown { failures, .. } => {
                (Some(f64::from(*failures)), Some(f64::from(*failures)))
            }
            Alert::ProviderRecovered { .. } | Alert::CredentialsRejected { .. } => (None, None),
            Alert::LowSuccessRate { value, threshold } => (Some(*value), Some(*threshold)),
            Alert::HighQueue { value, threshold } => (Some(*value as f64), Some(*threshold as f64)),
            Alert::SlowResponses {
                value, threshold, ..
            } => (Some(value.as_secs_f64()), Some(threshold.as_secs_f64())),
        }
    }

    pub fn message(&self) -> String {
        match self {
            Alert::ProviderDown {
                provider,
                reason,
                health,
                ..
            } => {
                let health = health
                    .as_ref()
                    .map(|health| format!("; health probe: {health}"))
                    .unwrap_or_default();
                format!(
                    "{provider} is down ({reason}{health}): circuit open, sending through the fallback"
                )
            }
            Alert::ProviderRecovered { provider } => {
                format!("{provider} recovered: circuit closed")
            }
            Alert::CredentialsRejected {
                provider,
                username,
                reason,
            } => {
                format!(
                    "{provider} rejected the credentials of {username} ({reason}): not used for the rest of the run"
                )
            }
            Alert::LowSuccessRate { value, threshold } => format!(
                "success rate {:.1} % is below min_success_rate {:.1} %",
                value * 100.0,
                threshold * 100.0
            ),
            Alert::HighQueue { value, threshold } => {
                format!("{value} recipients wait, above max_queue {threshold}")
            }
            Alert::SlowResponses {
                provider,
                value,
                threshold,
            } => format!(
                "{provider} p95 response time {} ms is above max_response_time {} ms",
                value.as_millis(),
                threshold.as_millis()
            ),
        }
    }
}

/// Where alerts go: the log always, the webhook when configured. Cheap to clone; clones share
/// the job id and the pending posts.
#[derive(Clone, Default)]
pub struct Alerter {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    webhook: Option<(reqwest::Client, reqwest::Url)>,
    job_id: Mutex<Option<String>>,
    posts: TaskTracker,
}

impl std::fmt::Debug for Alerter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerter")
            .field(
                "webhook",
                &self
                    .inner
                    .webhook
                    .as_ref()
                    .map(|(_, url)| crate::secret::redacted_url(url, true)),
            )
            .finish()
    }
}

impl Alerter {
    /// Alerts to the log only.
    pub fn log_only() -> Alerter {
        Alerter::default()
    }

    /// Alerts to the log and, when `webhook` is set, to it.
    pub fn new(webhook: Option<reqwest::Url>, http: reqwest::Client) -> Alerter {
        Alerter {
            inner: Arc::new(Inner {
                webhook: webhook.map(|url| (http, url)),
                ..Inner::default()
            }),
        }
    }

    /// The campaign the alerts are about (`job_id` in the webhook body).
    pub fn set_job(&self, job_id: &str) {
        *self.inner.job_id.lock().unwrap_or_else(|p| p.into_inner()) = Some(job_id.to_string());
    }

    pub fn raise(&self, alert: &Alert) {
        let provider = alert.provider().map(ProviderKind::name);
        tracing::warn!(alert = alert.name(), provider, "{}", alert.message());
        let Some((http, url)) = &self.inner.webhook else {
            return;
        };
        let (value, threshold) = alert.figures();
        let body = serde_json::json!({
            "alert": alert.name(),
            "provider": provider,
            "job_id": *self.inner.job_id.lock().unwrap_or_else(|p| p.into_inner()),
            "value": value,
            "threshold": threshold,
            "message": alert.message(),
            "health": alert.health(),
            "at": jiff::Timestamp::now().to_string(),
        });
        let request = http.post(url.clone()).timeout(WEBHOOK_TIMEOUT).json(&body);
        let name = alert.name();
        self.inner.posts.spawn(async move {
            let failure = match request.send().await {
                Ok(response) if response.status().is_success() => return,
                Ok(response) => format!("HTTP {}", response.status().as_u16()),
                Err(error) if error.is_timeout() => "timeout".to_string(),
                Err(_) => "connection failed".to_string(),
            };
            tracing::warn!(
                alert = name,
                "the alert webhook failed ({failure}); the run goes on"
            );
        });
    }

    /// Waits for the webhook posts still on their way (each is bounded by its timeout).
    pub async fn flush(&self) {
        self.inner.posts.close();
        self.inner.posts.wait().await;
        self.inner.posts.reopen();
    }
}
