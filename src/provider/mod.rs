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
    client_with(|builder| builder)
}

/// [`http_client`] for these providers: a connection that does not open within nine tenths of
/// the shortest provider `timeout` fails as `connect` — no request was written, so it is not
/// ambiguous (SPEC section 8) — before the request's own timeout, which cannot tell a
/// connection that never opened from an answer that never came, ends it as `timeout`.
pub fn http_client_for(providers: &[ProviderSettings]) -> reqwest::Client {
    match providers.iter().map(|p| p.timeout).min() {
        Some(shortest) => client_with(|builder| builder.connect_timeout(shortest * 9 / 10)),
        None => http_client(),
    }
}

fn client_with(
    adjust: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        // A provider cannot steer a message elsewhere: a 3xx is its answer (a rejection, with
        // its status), and no `Referer` (it would carry the SMS URL's phone) is ever sent.
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .user_agent(concat!("msgsend/", env!("CARGO_PKG_VERSION")));
    with_proxies(adjust(builder))
        .build()
        .expect("the TLS backend initialises")
}

/// The environment's proxies (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, either case), never
/// for this machine: reqwest's own reading of them sends a loopback provider's requests —
/// Basic credentials, phones, messages — to the proxy unless `NO_PROXY` says otherwise. Here
/// every spelling of this machine ([`is_this_machine`]) is bypassed, and `NO_PROXY` adds to it.
fn with_proxies(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    let env = |names: [&str; 2]| {
        names
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
            .and_then(|text| Url::parse(&text).ok())
    };
    let all = env(["ALL_PROXY", "all_proxy"]);
    let https = env(["HTTPS_PROXY", "https_proxy"]).or_else(|| all.clone());
    let http = env(["HTTP_PROXY", "http_proxy"]).or(all);
    let builder = builder.no_proxy();
    if https.is_none() && http.is_none() {
        return builder;
    }
    let no_proxy = std::env::var("NO_PROXY")
        .or_else(|_| std::env::var("no_proxy"))
        .ok()
        .and_then(|list| reqwest::NoProxy::from_string(&list));
    let proxy = reqwest::Proxy::custom(move |url| {
        if is_this_machine(url) {
            return None;
        }
        match url.scheme() {
            "https" => https.clone(),
            _ => http.clone(),
        }
    })
    .no_proxy(no_proxy);
    builder.proxy(proxy)
}

/// Whether `url` names this machine, however it is spelled: `localhost` (a trailing dot, any
/// case, a `.localhost` name), 127.0.0.0/8, `::1`, the unspecified addresses (`0.0.0.0`, `::`,
/// which connect here), and IPv4-mapped IPv6 forms of those.
pub fn is_this_machine(url: &Url) -> bool {
    match url.host() {
        // A URL of another scheme (`postgres://`) keeps an IP address as text.
        Some(url::Host::Domain(name)) => match name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
        {
            Ok(ip) => {
                let mapped = match ip {
                    std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4),
                    v4 => Some(v4),
                };
                [Some(ip), mapped]
                    .into_iter()
                    .flatten()
                    .any(|ip| ip.is_loopback() || ip.is_unspecified())
            }
            Err(_) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                name == "localhost" || name.ends_with(".localhost")
            }
        },
        Some(url::Host::Ipv4(ip)) => ip.is_loopback() || ip.is_unspecified(),
        Some(url::Host::Ipv6(ip)) => {
            ip.is_loopback()
                || ip.is_unspecified()
                || ip
                    .to_ipv4_mapped()
                    .is_some_and(|ip| ip.is_loopback() || ip.is_unspecified())
        }
        None => true,
    }
}

/// The most of a provider's answer msgsend reads (SPEC section 7: a small cap). A message's
/// answer is a few dozen bytes of JSON.
pub const ANSWER_CAP: usize = 64 * 1024;

/// An answer's body went past [`ANSWER_CAP`].
struct BodyTooLarge;

/// The body, read chunk by chunk up to [`ANSWER_CAP`]. A body cut off reads as what arrived.
async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, BodyTooLarge> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        if body.len() + chunk.len() > ANSWER_CAP {
            return Err(BodyTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// One provider's endpoints over the shared client.
#[derive(Debug, Clone)]
pub struct ProviderClient {
    pub kind: ProviderKind,
    http: reqwest::Client,
    send_url: Url,
    health_url: Url,
    timeout: Duration,
    /// Where each message's idempotency key goes; `None` when the provider honours none.
    idempotency_header: Option<reqwest::header::HeaderName>,
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
            idempotency_header: settings.idempotency_header.clone(),
        }
    }

    /// Whether the provider honours idempotency keys (SPEC section 8): only then is an
    /// ambiguous request retried on it.
    pub fn honours_keys(&self) -> bool {
        self.idempotency_header.is_some()
    }

    /// Sends one message under its idempotency `key`; the error says what class of failure
    /// it was.
    pub async fn send(
        &self,
        credential: &Credential,
        phone: &Phone,
        message: &str,
        key: &str,
    ) -> Result<Receipt, ProviderError> {
        let mut request = match self.kind {
            ProviderKind::KakaoTalk => {
                kakaotalk::request(&self.http, &self.send_url, phone, message)
            }
            ProviderKind::Sms => sms::request(&self.http, &self.send_url, phone, message),
        };
        if let Some(header) = &self.idempotency_header {
            request = request.header(header, key);
        }
        let response = request
            .header(AUTHORIZATION, credential.authorization.clone())
            .timeout(self.timeout)
            .send()
            .await
            .map_err(ProviderError::from_transport)?;
        let response = check_status(response)?;
        // The status said yes; an answer cut off after it must not make msgsend send the
        // message again (the provider has it). An unreadable body reads as an empty one:
        // KakaoTalk's success needs no body; SMS's needs `{"result": "OK"}`, so for SMS it is
        // `answer_lost`. A body past the cap is not read on: no answer may flood memory, and
        // one that large confirms nothing (`answer_lost`).
        let body = match read_capped(response).await {
            Ok(body) => body,
            Err(BodyTooLarge) => {
                return Err(ProviderError::new(
                    Class::AnswerLost,
                    format!("HTTP 2xx with a body over {} KiB", ANSWER_CAP / 1024),
                ));
            }
        };
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
    fn every_spelling_of_this_machine_is_this_machine() {
        let local = |text: &str| is_this_machine(&Url::parse(text).unwrap());
        for here in [
            "http://localhost:1/",
            "http://LOCALHOST.:1/",
            "http://api.localhost/",
            "http://127.0.0.1/",
            "http://127.1/",
            "http://2130706433/",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[::]/",
            "http://[::ffff:127.0.0.1]/",
        ] {
            assert!(local(here), "{here}");
        }
        for elsewhere in [
            "http://kakao.example/",
            "http://10.0.0.1/",
            "http://[::ffff:10.0.0.1]/",
        ] {
            assert!(!local(elsewhere), "{elsewhere}");
        }
    }

    #[test]
    fn the_auth_header_is_basic_and_sensitive() {
        let credential = Credential::new(&CredentialSettings {
            username: "autoever".into(),
            password: crate::secret::Secret::new("1234"),
            rate_limit: "1/s".parse::<crate::units::Rate>().unwrap().into(),
        });
        assert_eq!(credential.authorization, "Basic YXV0b2V2ZXI6MTIzNA==");
        assert!(credential.authorization.is_sensitive());
        assert!(!format!("{credential:?}").contains("1234"));
    }
}
