//! The resolved config written back as TOML (`msgsend config check`): [`Settings`] turned into
//! the raw structs the file is read with, every default filled in and every `${VAR}`
//! substituted, secrets redacted. One schema serves both directions, so the printout has exactly
//! the file's keys and reads back to the same printout (a secret reads back as the text
//! `(redacted)`). A literal `$` is written `$$`, as the file would hold it.

use super::Settings;
use super::raw::RawPrice;
use super::raw::{
    Dur, Expanded, RawAlerts, RawBulk, RawCircuitBreaker, RawConfig, RawCredential, RawMessage,
    RawMetrics, RawProvider, RawProviders, RawRateLimit, RawRetry, RawRouting, RawSchedule,
    RawSource,
};
use crate::cost::{Money, Price};
use crate::provider::{ProviderKind, ProviderSettings};
use crate::secret::redacted_url;

/// `settings` as the TOML a config file would hold.
pub fn to_toml(settings: &Settings) -> Result<String, toml::ser::Error> {
    toml::to_string_pretty(&RawConfig::from(settings))
}

fn text(value: impl ToString) -> Expanded<String> {
    Expanded(value.to_string())
}

fn duration(value: std::time::Duration) -> Option<Expanded<Dur>> {
    Some(Expanded(Dur(value)))
}

fn saturating_u32(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

impl From<&ProviderSettings> for RawProvider {
    fn from(p: &ProviderSettings) -> Self {
        RawProvider {
            base_url: Expanded(p.base_url.clone()),
            username: None,
            password: None,
            credentials: Some(
                p.credentials
                    .iter()
                    .map(|c| RawCredential {
                        username: text(&c.username),
                        password: Expanded(c.password.clone()),
                        rate_limit: Some(RawRateLimit(c.rate_limit.clone())),
                    })
                    .collect(),
            ),
            rate_limit: None,
            burst: p.burst,
            idempotency_header: Some(text(
                p.idempotency_header
                    .as_ref()
                    .map_or("", reqwest::header::HeaderName::as_str),
            )),
            timeout: duration(p.timeout),
            health_path: Some(text(&p.health_path)),
            max_message_length: Some(saturating_u32(p.max_message_length)),
            max_message_bytes: (p.kind == ProviderKind::Sms)
                .then(|| saturating_u32(p.max_message_bytes)),
            price: p.price.map(|price| match price {
                Price::Flat(price) => RawPrice::Flat(price.as_f64()),
                Price::BySize { short, long } => RawPrice::BySize {
                    short: short.as_f64(),
                    long: long.as_f64(),
                },
            }),
        }
    }
}

impl From<&Settings> for RawConfig {
    fn from(s: &Settings) -> Self {
        let provider = |kind: ProviderKind| s.provider(kind).map(RawProvider::from);
        RawConfig {
            timezone: Some(text(&s.timezone_name)),
            state_dir: Some(Expanded(s.state_dir.clone())),
            state_database: s.state_database.as_ref().map(text),
            providers: RawProviders {
                kakaotalk: provider(ProviderKind::KakaoTalk),
                sms: provider(ProviderKind::Sms),
            },
            routing: RawRouting {
                primary: Some(text(s.routing.primary)),
                fallback: s.routing.fallback.map(text),
                strategy: Some(text(s.routing.strategy)),
                acquire_timeout: duration(s.routing.acquire_timeout),
                preflight: Some(s.routing.preflight),
            },
            retry: RawRetry {
                max_attempts: Some(s.retry.max_attempts),
                initial_delay: duration(s.retry.initial_delay),
                multiplier: Some(s.retry.multiplier),
                max_delay: duration(s.retry.max_delay),
                jitter: Some(s.retry.jitter),
            },
            circuit_breaker: RawCircuitBreaker {
                failure_threshold: Some(s.breaker.failure_threshold),
                open_timeout: duration(s.breaker.open_timeout),
                all_open_wait: duration(s.breaker.all_open_wait),
            },
            bulk: RawBulk {
                concurrency: Some(saturating_u32(s.bulk.concurrency)),
                batch_size: Some(saturating_u32(s.bulk.batch_size)),
                shutdown_grace: duration(s.bulk.shutdown_grace),
                max_wait: duration(s.bulk.max_wait),
                max_cost: s.bulk.max_cost.map(Money::as_f64),
            },
            message: RawMessage {
                header: s.message.header.as_ref().map(text),
                kind: Some(text(s.message.kind)),
                sender: s.message.ad_frame.as_ref().map(|frame| {
                    text(
                        frame
                            .first_line
                            .trim_start_matches(crate::advert::AD_MARKER)
                            .trim_start(),
                    )
                }),
                opt_out: s
                    .message
                    .ad_frame
                    .as_ref()
                    .map(|frame| text(&frame.last_line)),
                currency: Some(text(&s.message.currency)),
            },
            source: RawSource {
                csv: s.source.csv.clone().map(Expanded),
                // Printed with its password redacted.
                database: s.source.database.as_ref().map(text),
                query: Some(text(&s.source.query)),
                suppression: s.source.suppression.clone().map(Expanded),
                consent_column: Some(text(&s.source.consent_column)),
            },
            schedule: RawSchedule {
                quiet_hours: s.quiet_hours.map(text),
            },
            metrics: RawMetrics {
                textfile: s.metrics.textfile.clone().map(Expanded),
                pushgateway: s
                    .metrics
                    .pushgateway
                    .as_ref()
                    .map(|url| text(redacted_url(url, false))),
            },
            alerts: RawAlerts {
                // A webhook's path is often its token.
                webhook: s
                    .alerts
                    .webhook
                    .as_ref()
                    .map(|url| text(redacted_url(url, true))),
                min_success_rate: Some(s.alerts.min_success_rate),
                max_queue: Some(s.alerts.max_queue),
                max_response_time: duration(s.alerts.max_response_time),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_printout_reads_back_to_the_same_printout_and_hides_secrets() {
        let file = r#"
timezone = "Asia/Seoul"
state_dir = "/var/lib/msg$$send"
[providers.kakaotalk]
base_url = "http://127.0.0.1:8081"
username = "autoever"
password = "kakao-pw-7c1e"
rate_limit = "100/min"
[providers.sms]
base_url = "http://127.0.0.1:8082"
credentials = [{ username = "a", password = "sms-pw-a", rate_limit = "5/s" }, { username = "b", password = "sms-pw-b" }]
[retry]
max_delay = "5000000000s"
[message]
header = "{name}님, 안녕하세요."
[schedule]
quiet_hours = "21:00-08:00"
"#;
        let settings = super::super::parse(Path::new("a.toml"), file).unwrap();
        let printed = to_toml(&settings).unwrap();
        for secret in ["kakao-pw-7c1e", "sms-pw-a", "sms-pw-b"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains("password = \"(redacted)\""), "{printed}");
        assert!(printed.contains("[circuit_breaker]"), "{printed}");
        let again = super::super::parse(Path::new("printed.toml"), &printed).unwrap();
        assert_eq!(to_toml(&again).unwrap(), printed);
        assert_eq!(again.state_dir, Path::new("/var/lib/msg$send"));
    }
}
