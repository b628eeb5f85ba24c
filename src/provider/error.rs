//! What kind of failure a provider's answer (or the lack of one) was: the [`Class`] that
//! drives retry, circuit breaker and fallback (SPEC sections 3 and 8), and how an HTTP status,
//! a transport error and a `Retry-After` header are read into it.

use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use reqwest::{Response, StatusCode};

/// What kind of failure an answer (or the lack of one) was. SPEC section 3.
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
    strum::Display,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
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

    /// Whether the provider may have taken the message although msgsend has no answer saying
    /// so (SPEC section 8): no answer in time, or the answer lost.
    pub fn is_ambiguous(self) -> bool {
        matches!(self, Class::Timeout | Class::AnswerLost)
    }

    /// Whether the circuit breaker counts this as a failure of the provider (SPEC section 7).
    pub fn counts_for_breaker(self) -> bool {
        matches!(
            self,
            Class::ServerError | Class::Timeout | Class::Connect | Class::AnswerLost
        )
    }

    pub fn name(self) -> &'static str {
        self.into()
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
    pub(super) fn new(class: Class, detail: impl Into<String>) -> Self {
        ProviderError {
            class,
            status: None,
            retry_after: None,
            detail: detail.into(),
        }
    }

    pub(super) fn from_status(status: StatusCode, retry_after: Option<Duration>) -> Self {
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

    pub(super) fn from_transport(error: reqwest::Error) -> Self {
        // `without_url`: the SMS URL carries the phone number in its query.
        let error = error.without_url();
        // A connect error first: a connection that timed out before it opened wrote no request
        // (not ambiguous, SPEC section 8), though it is a timeout too.
        if error.is_connect() {
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
        } else if error.is_timeout() {
            ProviderError::new(Class::Timeout, "timeout")
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

pub(super) fn check_status(response: Response) -> Result<Response, ProviderError> {
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
/// Saturated at [`RETRY_AFTER_CEILING`]: the provider's number may be anything, and a wait that
/// long is already "not before the campaign is over" (retry and pacing cap it further).
pub(super) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let wait = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
        let wait = at.duration_since(jiff::Timestamp::now());
        Duration::try_from(wait).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(RETRY_AFTER_CEILING))
}

/// The longest `Retry-After` msgsend reads: a day.
pub const RETRY_AFTER_CEILING: Duration = Duration::from_secs(24 * 60 * 60);

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
        assert_eq!(
            parse_retry_after("18446744073709551615"),
            Some(RETRY_AFTER_CEILING)
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 2100 23:59:59 GMT"),
            Some(RETRY_AFTER_CEILING)
        );
    }
}
