//! The two providers msgsend knows, and what the config says of each: endpoint, credentials
//! with their quotas, timeout, message length. The config builds these; the clients and the
//! channels read them.

use std::time::Duration;

use crate::secret::Secret;
use crate::units::{Rate, RateLimit};

/// The two channels msgsend knows.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    clap::ValueEnum,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum ProviderKind {
    #[value(name = "kakaotalk")]
    KakaoTalk,
    Sms,
}

impl ProviderKind {
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// The quota a provider is assumed to have when the config gives no `rate_limit`: the
    /// published per-token quotas, which are also the sandbox's defaults.
    pub fn default_rate_limit(self) -> RateLimit {
        let count = match self {
            ProviderKind::KakaoTalk => 100,
            ProviderKind::Sms => 500,
        };
        RateLimit::from(Rate {
            count,
            per: Duration::from_secs(60),
        })
    }

    /// The other channel.
    pub fn other(self) -> ProviderKind {
        match self {
            ProviderKind::KakaoTalk => ProviderKind::Sms,
            ProviderKind::Sms => ProviderKind::KakaoTalk,
        }
    }
}

/// The longest message, in characters, a provider takes unless its config says otherwise:
/// KakaoTalk's notification messages hold 1,000 characters, and an SMS long message (LMS)
/// 2,000 bytes, which is 1,000 Korean characters in the carriers' EUC-KR encoding.
pub const DEFAULT_MAX_MESSAGE_LENGTH: u32 = 1000;

#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub kind: ProviderKind,
    pub base_url: reqwest::Url,
    pub credentials: Vec<CredentialSettings>,
    pub timeout: Duration,
    pub health_path: String,
    /// At most this many requests leave back to back; beyond them, requests are spaced evenly
    /// at the tightest window's rate (SPEC section 8). `None`: the tightest window's N.
    pub burst: Option<u32>,
    /// The header that carries each message's idempotency key (SPEC section 8); `None` when
    /// the provider honours none (`idempotency_header = ""`).
    pub idempotency_header: Option<reqwest::header::HeaderName>,
    /// The longest message (in characters) the provider takes; longer ones are not sent to it.
    pub max_message_length: usize,
    /// SMS: the longest message in EUC-KR bytes, as the carriers count (SPEC section 10).
    pub max_message_bytes: usize,
    /// What one accepted message costs; `None`: not priced (costs count it as 0).
    pub price: Option<crate::cost::Price>,
}

#[derive(Debug, Clone)]
pub struct CredentialSettings {
    pub username: String,
    pub password: Secret,
    /// This credential's own quota (SPEC section 4: quotas are per credential), one window or
    /// several (SPEC section 8).
    pub rate_limit: RateLimit,
}
