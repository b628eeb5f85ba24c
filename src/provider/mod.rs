//! The providers' HTTP contract (SPEC section 4): one [`ProviderClient`] per provider over a
//! shared reqwest client, and the classification of every outcome into a [`Class`] that drives
//! retry, circuit breaker and fallback. The wire formats live in [`kakaotalk`] and [`sms`].

mod kakaotalk;
mod sms;

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER};
use reqwest::{Response, StatusCode, Url};

use crate::config::{CredentialSettings, ProviderSettings};
use crate::phone::Phone;
use crate::units::Rate;

/// The two channels msgsend knows.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    #[value(name = "kakaotalk")]
    KakaoTalk,
    Sms,
}

impl ProviderKind {
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::KakaoTalk => "kakaotalk",
            ProviderKind::Sms => "sms",
        }
    }

    /// The quota a provider is assumed to have when the config gives no `rate_limit`: the
    /// published per-token quotas, which are also the sandbox's defaults.
    pub fn default_rate_limit(self) -> Rate {
        let count = match self {
            ProviderKind::KakaoTalk => 100,
            ProviderKind::Sms => 500,
        };
        Rate {
            count,
            per: Duration::from_secs(60),
        }
    }

    /// The other channel.
    pub fn other(self) -> ProviderKind {
        match self {
            ProviderKind::KakaoTalk => ProviderKind::Sms,
            ProviderKind::Sms => ProviderKind::KakaoTalk,
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ProviderKind {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "kakaotalk" => Ok(ProviderKind::KakaoTalk),
            "sms" => Ok(ProviderKind::Sms),
            other => Err(format!(
                "unknown provider {other:?} (expected \"kakaotalk\" or \"sms\")"
            )),
        }
    }
}

/// What kind of failure an answer (or the lack of one) was. SPEC section 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// 5xx: transient, retried, counted by the circuit breaker.
    ServerError,
    /// 429: transient, retried after `Retry-After`; the limiter's business, not the breaker's.
    RateLimited,
    /// No answer within the provider's `timeout`: transient, counted by the breaker.
    Timeout,
    /// The connection could not be made: the request never left. Transient, counted by the
    /// breaker.
    Connect,
    /// 400 or another 4xx: permanent for this recipient, not retried, goes to the fallback.
    Rejected,
    /// 401/403: permanent for the provider, which is taken out of the run.
    Auth,
    /// The connection broke after the request went out and before the answer came back: the
    /// provider may have the message. Not retried and not sent to the fallback (either could
    /// deliver it twice); the recipient is recorded `uncertain`. Counted by the breaker.
    AnswerLost,
}

impl Class {
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Class::ServerError | Class::RateLimited | Class::Timeout | Class::Connect
        )
    }

    /// Whether the circuit breaker counts this as a failure of the provider (SPEC section 7).
    pub fn counts_for_breaker(self) -> bool {
        matches!(
            self,
            Class::ServerError | Class::Timeout | Class::Connect | Class::AnswerLost
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Class::ServerError => "server_error",
            Class::RateLimited => "rate_limited",
            Class::Timeout => "timeout",
            Class::Connect => "connect",
            Class::Rejected => "rejected",
            Class::Auth => "auth",
            Class::AnswerLost => "answer_lost",
        }
    }
}

/// One failed request. Its text (`HTTP 400`, `timeout`) never holds a phone or a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct ProviderError {
    pub class: Class,
    pub status: Option<u16>,
    /// The provider's `Retry-After`, when a 429 carried one.
    pub retry_after: Option<Duration>,
    pub detail: String,
}

impl ProviderError {
    fn new(class: Class, detail: impl Into<String>) -> Self {
        ProviderError {
            class,
            status: None,
            retry_after: None,
            detail: detail.into(),
        }
    }

    fn from_status(status: StatusCode, retry_after: Option<Duration>) -> Self {
        let class = match status.as_u16() {
            401 | 403 => Class::Auth,
            429 => Class::RateLimited,
            500..=599 => Class::ServerError,
            _ => Class::Rejected,
        };
        ProviderError {
            class,
            status: Some(status.as_u16()),
            retry_after,
            detail: format!("HTTP {}", status.as_u16()),
        }
    }

    fn from_transport(error: reqwest::Error) -> Self {
        // `without_url`: the SMS URL carries the phone number in its query.
        let error = error.without_url();
        if error.is_timeout() {
            ProviderError::new(Class::Timeout, "timeout")
        } else if error.is_connect() {
            let refused =
                std::iter::successors(Some(&error as &(dyn std::error::Error + 'static)), |e| {
                    e.source()
                })
                .filter_map(|e| e.downcast_ref::<std::io::Error>())
                .any(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
            let detail = if refused {
                "connection refused"
            } else {
                "connection failed"
            };
            ProviderError::new(Class::Connect, detail)
        } else {
            // Connected, request sent (at least in part), no answer: the provider may have it.
            ProviderError::new(
                Class::AnswerLost,
                format!(
                    "connection broke before the answer ({})",
                    root_cause(&error)
                ),
            )
        }
    }
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// A message id as a provider may write it: a string or a number.
fn id_text(value: serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(id) => Some(id),
        serde_json::Value::Number(id) => Some(id.to_string()),
        _ => None,
    }
}

/// What a provider answered to an accepted message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Receipt {
    /// `messageId` (KakaoTalk) or `smsId` (SMS), when the provider gave one.
    pub message_id: Option<String>,
}

/// One credential, its Basic auth header built once.
#[derive(Clone)]
pub struct Credential {
    pub username: String,
    authorization: HeaderValue,
}

impl Credential {
    pub fn new(settings: &CredentialSettings) -> Self {
        let token = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            settings.username,
            settings.password.expose()
        ));
        let mut authorization = HeaderValue::from_str(&format!("Basic {token}"))
            .expect("base64 is a valid header value");
        authorization.set_sensitive(true);
        Credential {
            username: settings.username.clone(),
            authorization,
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({}, (redacted))", self.username)
    }
}

/// The HTTP client every provider shares: rustls, keep-alive, HTTP/1.1 and HTTP/2.
/// The longest message, in characters, a provider takes unless its config says otherwise:
/// KakaoTalk's notification messages hold 1,000 characters, and an SMS long message (LMS)
/// 2,000 bytes, which is 1,000 Korean characters in the carriers' EUC-KR encoding.
pub const DEFAULT_MAX_MESSAGE_LENGTH: u32 = 1000;

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .user_agent(concat!("msgsend/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the TLS backend initialises")
}

/// One provider's endpoints over the shared client.
#[derive(Debug, Clone)]
pub struct ProviderClient {
    pub kind: ProviderKind,
    http: reqwest::Client,
    send_url: Url,
    health_url: Url,
    timeout: Duration,
}

impl ProviderClient {
    pub fn new(http: reqwest::Client, settings: &ProviderSettings) -> Self {
        let endpoint = |path: &str| {
            let mut url = settings.base_url.clone();
            let base = url.path().trim_end_matches('/').to_string();
            url.set_path(&format!("{base}{path}"));
            url
        };
        let send_path = match settings.kind {
            ProviderKind::KakaoTalk => kakaotalk::PATH,
            ProviderKind::Sms => sms::PATH,
        };
        ProviderClient {
            kind: settings.kind,
            http,
            send_url: endpoint(send_path),
            health_url: endpoint(&settings.health_path),
            timeout: settings.timeout,
        }
    }

    /// Sends one message; the error says what class of failure it was.
    pub async fn send(
        &self,
        credential: &Credential,
        phone: &Phone,
        message: &str,
    ) -> Result<Receipt, ProviderError> {
        let request = match self.kind {
            ProviderKind::KakaoTalk => {
                kakaotalk::request(&self.http, &self.send_url, phone, message)
            }
            ProviderKind::Sms => sms::request(&self.http, &self.send_url, phone, message),
        };
        let response = request
            .header(AUTHORIZATION, credential.authorization.clone())
            .timeout(self.timeout)
            .send()
            .await
            .map_err(ProviderError::from_transport)?;
        let response = check_status(response)?;
        // The status said yes; an answer cut off after it must not make msgsend send the
        // message again (the provider has it). An unreadable body reads as an empty one:
        // KakaoTalk's success needs no body; SMS's needs `{"result": "OK"}` and so becomes a
        // rejection that is not retried.
        let body = response.bytes().await.unwrap_or_default();
        match self.kind {
            ProviderKind::KakaoTalk => Ok(kakaotalk::receipt(&body)),
            ProviderKind::Sms => sms::receipt(&body),
        }
    }

    /// `GET {base_url}{health_path}` with the credential (SPEC section 7); the latency on success.
    pub async fn probe(&self, credential: &Credential) -> Result<Duration, ProviderError> {
        let started = Instant::now();
        let response = self
            .http
            .get(self.health_url.clone())
            .header(AUTHORIZATION, credential.authorization.clone())
            .timeout(self.timeout)
            .send()
            .await
            .map_err(ProviderError::from_transport)?;
        check_status(response)?;
        Ok(started.elapsed())
    }
}

fn check_status(response: Response) -> Result<Response, ProviderError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| parse_retry_after(value.to_str().ok()?));
    Err(ProviderError::from_status(status, retry_after))
}

/// `Retry-After` as seconds (`"3"`) or as an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let wait = at.duration_since(jiff::Timestamp::now());
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_classes() {
        let class =
            |code| ProviderError::from_status(StatusCode::from_u16(code).unwrap(), None).class;
        assert_eq!(class(400), Class::Rejected);
        assert_eq!(class(404), Class::Rejected);
        assert_eq!(class(401), Class::Auth);
        assert_eq!(class(403), Class::Auth);
        assert_eq!(class(429), Class::RateLimited);
        assert_eq!(class(500), Class::ServerError);
        assert_eq!(class(503), Class::ServerError);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn the_auth_header_is_basic_and_sensitive() {
        let credential = Credential::new(&CredentialSettings {
            username: "autoever".into(),
            password: crate::secret::Secret::new("1234"),
            rate_limit: "1/s".parse().unwrap(),
        });
        assert_eq!(credential.authorization, "Basic YXV0b2V2ZXI6MTIzNA==");
        assert!(credential.authorization.is_sensitive());
        assert!(!format!("{credential:?}").contains("1234"));
    }
}
