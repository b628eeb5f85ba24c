//! Alerts (SPEC section 6): events an operator must hear about, logged at WARN with a stable
//! `alert` field so log-based monitoring can match on it.

use crate::provider::ProviderKind;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alert {
    /// The provider's circuit opened: calls go to the fallback.
    ProviderDown {
        provider: ProviderKind,
        reason: String,
    },
    /// A half-open probe succeeded: the circuit is closed again.
    ProviderRecovered { provider: ProviderKind },
    /// The provider refused msgsend's credentials (401/403); it is out for the rest of the run.
    CredentialsRejected {
        provider: ProviderKind,
        username: String,
        reason: String,
    },
}

impl Alert {
    pub fn name(&self) -> &'static str {
        match self {
            Alert::ProviderDown { .. } => "provider_down",
            Alert::ProviderRecovered { .. } => "provider_recovered",
            Alert::CredentialsRejected { .. } => "provider_down",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Alert::ProviderDown { provider, reason } => {
                format!("{provider} is down ({reason}): circuit open, sending through the fallback")
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
        }
    }
}

/// Logs the alert at WARN.
pub fn raise(alert: &Alert) {
    let provider = match alert {
        Alert::ProviderDown { provider, .. }
        | Alert::ProviderRecovered { provider }
        | Alert::CredentialsRejected { provider, .. } => provider.name(),
    };
    tracing::warn!(alert = alert.name(), provider, "{}", alert.message());
}
