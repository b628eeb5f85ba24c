//! Raw TOML structs → [`Settings`]: defaults filled in, cross-key rules checked (a provider has
//! either `username`/`password` or `credentials`; routing names configured providers; numbers are
//! in range), each failure reported at its key's line.

use std::path::PathBuf;
use std::time::Duration;

use super::raw::{Expanded, RawConfig, RawCredential, RawMessage, RawPrice, RawProvider};
use super::urls::monitoring_url;
use super::{
    AlertSettings, BreakerSettings, BulkSettings, ConfigError, Locator, MessageSettings,
    MetricsSettings, RoutingSettings, Settings, SourceSettings,
};
use crate::advert::{self, MessageKind, check_opt_out};
use crate::cost::{Money, Price};
use crate::policy::retry::RetryPolicy;
use crate::policy::strategy::Strategy;
use crate::provider::{CredentialSettings, ProviderKind, ProviderSettings};
use crate::schedule::QuietHours;
use crate::secret::Secret;
use crate::template::Template;
use crate::units::RateLimit;

const DEFAULT_QUERY: &str = "SELECT name, phone, birth_date FROM users";

/// `[source] consent_column` unless the config names another (SPEC section 10).
const DEFAULT_CONSENT_COLUMN: &str = "ad_consent_at";

/// `[message]`: the header template, the kind, an ad's frame, the currency. A frame is built
/// whenever `sender` or `opt_out` is set, so a bad one is found even in an info config that
/// `--kind ad` may use later; an `ad` config without one stops here.
fn resolve_message(raw: RawMessage, at: &Locator) -> Result<MessageSettings, ConfigError> {
    let header = match raw.header {
        Some(Expanded(text)) => {
            let header =
                Template::parse(&text).map_err(|error| at.error("message.header", error))?;
            advert::check_unmarked("", &text)
                .map_err(|error| at.error("message.header", error.trim_start()))?;
            Some(header)
        }
        None => None,
    };
    let kind = match raw.kind {
        Some(Expanded(text)) => text
            .parse::<MessageKind>()
            .map_err(|error| at.error("message.kind", error))?,
        None => MessageKind::Info,
    };
    let ad_frame = match (raw.sender, raw.opt_out) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(at.error(
                "message.sender",
                "is set without [message] opt_out: an ad needs both",
            ));
        }
        (None, Some(_)) => {
            return Err(at.error(
                "message.opt_out",
                "is set without [message] sender: an ad needs both",
            ));
        }
        (Some(Expanded(sender)), Some(Expanded(opt_out))) => {
            check_opt_out(&opt_out).map_err(|error| at.error("message.opt_out", error))?;
            Some(
                advert::frame(&sender, &opt_out)
                    .map_err(|error| at.error("message.sender", error))?,
            )
        }
    };
    if kind == MessageKind::Ad && ad_frame.is_none() {
        return Err(at.error(
            "message.kind",
            "is \"ad\": add [message] sender and opt_out (e.g. opt_out = \"무료수신거부 080-123-4567\")",
        ));
    }
    let currency = raw.currency.map_or_else(|| "KRW".to_string(), |c| c.0);
    if currency.trim().is_empty() || currency.chars().any(char::is_control) {
        return Err(at.error("message.currency", "must be a name such as \"KRW\""));
    }
    Ok(MessageSettings {
        header,
        kind,
        ad_frame,
        currency,
    })
}

/// An amount of money from the config: not negative, finite.
fn amount_at(amount: f64, key: &str, at: &Locator) -> Result<Money, ConfigError> {
    Money::from_f64(amount).ok_or_else(|| {
        at.error(
            key,
            "must be an amount from 0 to 100,000,000,000 (e.g. 8.4)",
        )
    })
}

pub(super) fn resolve(raw: RawConfig, at: &Locator) -> Result<Settings, ConfigError> {
    let timezone_name = raw
        .timezone
        .map_or_else(|| "Asia/Seoul".to_string(), |tz| tz.0);
    let timezone = jiff::tz::TimeZone::get(&timezone_name).map_err(|_| {
        at.error(
            "timezone",
            format!("unknown time zone {timezone_name:?} (e.g. \"Asia/Seoul\")"),
        )
    })?;

    let mut providers = Vec::new();
    for (kind, provider) in [
        (ProviderKind::KakaoTalk, raw.providers.kakaotalk),
        (ProviderKind::Sms, raw.providers.sms),
    ] {
        if let Some(provider) = provider {
            providers.push(resolve_provider(kind, provider, at)?);
        }
    }
    if providers.is_empty() {
        return Err(at.error(
            "providers",
            "no provider is configured: add [providers.kakaotalk] and/or [providers.sms]",
        ));
    }

    let routing = resolve_routing(&raw.routing, &providers, at)?;

    let retry = RetryPolicy {
        max_attempts: positive(
            raw.retry.max_attempts.unwrap_or(3),
            "retry.max_attempts",
            at,
        )?,
        initial_delay: raw
            .retry
            .initial_delay
            .map_or(Duration::from_secs(1), |d| d.0.0),
        multiplier: raw.retry.multiplier.unwrap_or(2.0),
        max_delay: raw
            .retry
            .max_delay
            .map_or(Duration::from_secs(30), |d| d.0.0),
        jitter: raw.retry.jitter.unwrap_or(true),
    };
    if !(retry.multiplier.is_finite() && retry.multiplier >= 1.0) {
        return Err(at.error("retry.multiplier", "must be a number of at least 1.0"));
    }
    if retry.max_delay < retry.initial_delay {
        return Err(at.error(
            "retry.max_delay",
            "must not be shorter than retry.initial_delay",
        ));
    }

    let breaker = BreakerSettings {
        failure_threshold: positive(
            raw.circuit_breaker.failure_threshold.unwrap_or(5),
            "circuit_breaker.failure_threshold",
            at,
        )?,
        open_timeout: raw
            .circuit_breaker
            .open_timeout
            .map_or(Duration::from_secs(30), |d| d.0.0),
        all_open_wait: raw
            .circuit_breaker
            .all_open_wait
            .map_or(Duration::from_secs(120), |d| d.0.0),
    };

    let bulk = BulkSettings {
        concurrency: at_most(
            positive(raw.bulk.concurrency.unwrap_or(50), "bulk.concurrency", at)?,
            MAX_CONCURRENCY,
            "bulk.concurrency",
            at,
        )? as usize,
        batch_size: at_most(
            positive(raw.bulk.batch_size.unwrap_or(1000), "bulk.batch_size", at)?,
            MAX_BATCH_SIZE,
            "bulk.batch_size",
            at,
        )? as usize,
        shutdown_grace: raw
            .bulk
            .shutdown_grace
            .map_or(Duration::from_secs(10), |d| d.0.0),
        max_wait: raw
            .bulk
            .max_wait
            .map_or(Duration::from_secs(600), |d| d.0.0),
        max_cost: raw
            .bulk
            .max_cost
            .map(|amount| amount_at(amount, "bulk.max_cost", at))
            .transpose()?,
    };

    let message = resolve_message(raw.message, at)?;

    let state_database = match raw.state_database {
        Some(Expanded(url)) => Some(
            super::urls::database_url(url)
                .and_then(|url| {
                    if url.is_sqlite() {
                        Err(
                            "must be a postgres:// URL: the embedded SQLite state is state_dir"
                                .into(),
                        )
                    } else {
                        Ok(url)
                    }
                })
                .map_err(|message| at.error("state_database", message))?,
        ),
        None => None,
    };

    let database = match raw.source.database {
        Some(Expanded(url)) => Some(
            super::urls::database_url(url)
                .map_err(|message| at.error("source.database", message))?,
        ),
        None => None,
    };
    let source = SourceSettings {
        csv: raw.source.csv.map(|p| p.0),
        database,
        query: raw
            .source
            .query
            .map_or_else(|| DEFAULT_QUERY.to_string(), |q| q.0),
        suppression: raw.source.suppression.map(|p| p.0),
        consent_column: match raw.source.consent_column {
            Some(Expanded(column)) if column.trim().is_empty() => {
                return Err(at.error("source.consent_column", "must name a column"));
            }
            Some(Expanded(column)) => column.trim().to_string(),
            None => DEFAULT_CONSENT_COLUMN.to_string(),
        },
    };

    let quiet_hours = match raw.schedule.quiet_hours {
        Some(Expanded(text)) => Some(
            text.parse::<QuietHours>()
                .map_err(|error| at.error("schedule.quiet_hours", error))?,
        ),
        None => None,
    };

    let min_success_rate = raw.alerts.min_success_rate.unwrap_or(0.90);
    if !(0.0..=1.0).contains(&min_success_rate) {
        return Err(at.error("alerts.min_success_rate", "must be between 0.0 and 1.0"));
    }
    let alerts = AlertSettings {
        webhook: monitoring_url(raw.alerts.webhook, "alerts.webhook", at)?,
        min_success_rate,
        max_queue: raw.alerts.max_queue.unwrap_or(5000),
        max_response_time: raw
            .alerts
            .max_response_time
            .map_or(Duration::from_secs(5), |d| d.0.0),
    };

    Ok(Settings {
        file: at.file.to_path_buf(),
        timezone,
        timezone_name,
        state_dir: raw.state_dir.map_or_else(default_state_dir, |d| d.0),
        state_database,
        providers,
        routing,
        retry,
        breaker,
        bulk,
        message,
        source,
        quiet_hours,
        metrics: MetricsSettings {
            textfile: raw.metrics.textfile.map(|p| p.0),
            pushgateway: monitoring_url(raw.metrics.pushgateway, "metrics.pushgateway", at)?,
        },
        alerts,
    })
}

fn resolve_provider(
    kind: ProviderKind,
    raw: RawProvider,
    at: &Locator,
) -> Result<ProviderSettings, ConfigError> {
    let key = |field: &str| format!("providers.{kind}.{field}");
    let base_url = raw.base_url.0;
    if !matches!(base_url.scheme(), "http" | "https") || base_url.host().is_none() {
        return Err(at.error(
            &key("base_url"),
            "must be an http:// or https:// URL with a host",
        ));
    }
    // Credentials in the URL would go out as a second Authorization header.
    if !base_url.username().is_empty() || base_url.password().is_some() {
        return Err(at.error(
            &key("base_url"),
            "must not carry a user or password: give them as username and password",
        ));
    }
    let rate_limit = raw
        .rate_limit
        .map_or_else(|| kind.default_rate_limit(), |r| r.0);
    let credential = |username: Expanded<String>,
                      password: Expanded<Secret>,
                      rate_limit: RateLimit,
                      field: &str| {
        if username.0.is_empty() || username.0.contains(':') {
            return Err(at.error(&key(field), "must be non-empty and hold no ':'"));
        }
        Ok(CredentialSettings {
            username: username.0,
            password: password.0,
            rate_limit,
        })
    };
    let credentials = match (raw.username, raw.password, raw.credentials) {
        (Some(username), Some(password), None) => {
            vec![credential(
                username,
                password,
                rate_limit.clone(),
                "username",
            )?]
        }
        (None, None, Some(list)) if !list.is_empty() => list
            .into_iter()
            .enumerate()
            .map(
                |(
                    index,
                    RawCredential {
                        username,
                        password,
                        rate_limit: own,
                    },
                )| {
                    credential(
                        username,
                        password,
                        own.map_or_else(|| rate_limit.clone(), |r| r.0),
                        &format!("credentials[{index}].username"),
                    )
                },
            )
            .collect::<Result<_, _>>()?,
        (None, None, Some(_)) => return Err(at.error(&key("credentials"), "lists no credential")),
        (Some(_), None, None) => {
            return Err(at.error(
                &key("username"),
                format!("has no password: add {}", key("password")),
            ));
        }
        (None, Some(_), None) => {
            return Err(at.error(
                &key("password"),
                format!("has no username: add {}", key("username")),
            ));
        }
        (None, None, None) => {
            return Err(at.error(
                &format!("providers.{kind}"),
                "needs username and password, or credentials = [...]",
            ));
        }
        (_, _, Some(_)) => {
            return Err(at.error(
                &key("credentials"),
                "give either username/password or credentials, not both",
            ));
        }
    };
    let health_path = raw
        .health_path
        .map_or_else(|| "/health".to_string(), |p| p.0);
    if !health_path.starts_with('/') {
        return Err(at.error(&key("health_path"), "must start with '/'"));
    }
    let timeout = raw.timeout.map_or(Duration::from_secs(5), |d| d.0.0);
    if timeout.is_zero() {
        return Err(at.error(&key("timeout"), "must be longer than zero"));
    }
    let max_message_length = positive(
        raw.max_message_length
            .unwrap_or(crate::provider::DEFAULT_MAX_MESSAGE_LENGTH),
        &key("max_message_length"),
        at,
    )? as usize;
    let burst = raw
        .burst
        .map(|burst| positive(burst, &key("burst"), at))
        .transpose()?;
    // A header name the HTTP layer refuses is the operator's to fix, before anything is sent;
    // "" says the provider honours no key (SPEC section 8).
    let idempotency_header = match raw.idempotency_header {
        None => Some(reqwest::header::HeaderName::from_static("idempotency-key")),
        Some(Expanded(name)) if name.is_empty() => None,
        Some(Expanded(name)) => {
            let header =
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    at.error(
                        &key("idempotency_header"),
                        "is not a valid HTTP header name (letters, digits and '-'; \"\" for none)",
                    )
                })?;
            // A header msgsend or HTTP itself sets would be sent twice or replaced: every
            // request would fail (a second Authorization reads as refused credentials).
            if RESERVED_HEADERS.contains(&header.as_str()) {
                return Err(at.error(
                    &key("idempotency_header"),
                    format!("names {header:?}, a header msgsend sets itself"),
                ));
            }
            Some(header)
        }
    };
    let max_message_bytes = match (kind, raw.max_message_bytes) {
        (ProviderKind::Sms, Some(bytes)) => {
            positive(bytes, &key("max_message_bytes"), at)? as usize
        }
        (ProviderKind::Sms, None) => crate::sms_length::DEFAULT_MAX_MESSAGE_BYTES,
        (_, Some(_)) => {
            return Err(at.error(
                &key("max_message_bytes"),
                "is for [providers.sms] only (SMS is measured in EUC-KR bytes)",
            ));
        }
        (_, None) => usize::MAX,
    };
    let price = match raw.price {
        None => None,
        Some(RawPrice::Flat(price)) => Some(Price::Flat(amount_at(price, &key("price"), at)?)),
        Some(RawPrice::BySize { .. }) if kind != ProviderKind::Sms => {
            return Err(at.error(
                &key("price"),
                "short and long prices are for [providers.sms] only: give one number",
            ));
        }
        Some(RawPrice::BySize { short, long }) => Some(Price::BySize {
            short: amount_at(short, &key("price.short"), at)?,
            long: amount_at(long, &key("price.long"), at)?,
        }),
    };
    Ok(ProviderSettings {
        kind,
        base_url,
        credentials,
        timeout,
        health_path,
        burst,
        idempotency_header,
        max_message_length,
        max_message_bytes,
        price,
    })
}

/// Headers every message request already carries (or that HTTP/1.1 framing owns): not an
/// idempotency key's place.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "host",
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "user-agent",
    "accept",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

fn resolve_routing(
    raw: &super::raw::RawRouting,
    providers: &[ProviderSettings],
    at: &Locator,
) -> Result<RoutingSettings, ConfigError> {
    let configured = |kind: ProviderKind| providers.iter().any(|p| p.kind == kind);
    let provider_named =
        |value: &Expanded<String>, key: &str| -> Result<ProviderKind, ConfigError> {
            let kind: ProviderKind = value.0.parse().map_err(|_| {
                at.error(
                    key,
                    format!(
                        "unknown provider {:?} (expected \"kakaotalk\" or \"sms\")",
                        value.0
                    ),
                )
            })?;
            if configured(kind) {
                Ok(kind)
            } else {
                Err(at.error(
                    key,
                    format!("names {kind}, but [providers.{kind}] is not configured"),
                ))
            }
        };
    let primary = match &raw.primary {
        Some(value) => provider_named(value, "routing.primary")?,
        None if configured(ProviderKind::KakaoTalk) => ProviderKind::KakaoTalk,
        None => providers[0].kind,
    };
    let fallback = match &raw.fallback {
        Some(value) => {
            let fallback = provider_named(value, "routing.fallback")?;
            if fallback == primary {
                return Err(at.error("routing.fallback", "must differ from routing.primary"));
            }
            Some(fallback)
        }
        None => providers
            .iter()
            .map(|p| p.kind)
            .find(|&kind| kind != primary),
    };
    let strategy = match &raw.strategy {
        Some(value) => value.0.parse::<Strategy>().map_err(|_| {
            at.error(
                "routing.strategy",
                format!(
                    "unknown strategy {:?} (expected \"failover\" or \"spillover\")",
                    value.0
                ),
            )
        })?,
        None => Strategy::Failover,
    };
    Ok(RoutingSettings {
        primary,
        fallback,
        strategy,
        acquire_timeout: raw
            .acquire_timeout
            .as_ref()
            .map_or(Duration::from_secs(5), |d| d.0.0),
        preflight: raw.preflight.unwrap_or(true),
    })
}

/// The most sends in flight at once, from the config as from `--concurrency`: each holds a
/// task and its buffers, so the bound keeps a typo from growing memory per recipient.
pub const MAX_CONCURRENCY: u32 = 10_000;

/// The most recipients admitted in one journal statement.
const MAX_BATCH_SIZE: u32 = 100_000;

fn at_most(value: u32, max: u32, key: &str, at: &Locator) -> Result<u32, ConfigError> {
    if value > max {
        Err(at.error(key, format!("must be at most {max}")))
    } else {
        Ok(value)
    }
}

fn positive(value: u32, key: &str, at: &Locator) -> Result<u32, ConfigError> {
    if value == 0 {
        Err(at.error(key, "must be at least 1"))
    } else {
        Ok(value)
    }
}

/// `$XDG_STATE_HOME/msgsend`, else `~/.local/state/msgsend` (SPEC section 3).
fn default_state_dir() -> PathBuf {
    match std::env::var_os("XDG_STATE_HOME").filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("msgsend"),
        None => {
            let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
            home.join(".local/state/msgsend")
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::urls::database_url;

    #[test]
    fn database_passwords_are_redacted() {
        let url = database_url("postgres://app:hunter2@db.example:5432/users".into()).unwrap();
        assert_eq!(
            url.to_string(),
            "postgres://app:(redacted)@db.example:5432/users"
        );
        assert_eq!(url.expose(), "postgres://app:hunter2@db.example:5432/users");
        assert!(database_url("mysql://x".into()).is_err());
        let sqlite = database_url("sqlite:///tmp/users.sqlite?token=sq-secret-1".into()).unwrap();
        assert!(!sqlite.to_string().contains("sq-secret-1"), "{sqlite}");
        assert_eq!(
            database_url("sqlite://users.db".into())
                .unwrap()
                .to_string(),
            "sqlite://users.db"
        );
    }
}
