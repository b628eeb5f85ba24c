//! The providers' HTTP contract (SPEC section 4): one [`ProviderClient`] per provider over a
//! shared reqwest client, and the classification of every outcome into a [`Class`] that drives
//! retry, circuit breaker and fallback. The wire formats live in [`kakaotalk`] and [`sms`].

mod error;
mod kakaotalk;
mod kind;
mod sms;

pub use error::{Class, ProviderError};
pub use kind::{CredentialSettings, DEFAULT_MAX_MESSAGE_LENGTH, ProviderKind, ProviderSettings};

use std::fmt;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderValue};

use crate::phone::Phone;
use error::check_status;

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

    /// How long a request may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
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

#[cfg(test)]
mod tests {
    use super::*;

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
