//! `msgsend config check`: loads and validates the config, then prints it resolved (defaults
//! filled in, `${VARS}` substituted) as TOML, with every secret redacted.

use std::io::Write;

use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::config::Settings;
use crate::error::ExitStatus;
use crate::units::format_duration;

pub fn check(global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let settings = super::load_settings(global)?;
    let text = toml::to_string_pretty(&Resolved::from(&settings))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "# {}: valid", settings.file.display())?;
    write!(stdout, "{text}")?;
    stdout.flush()?;
    Ok(ExitStatus::Success)
}

const REDACTED: &str = "(redacted)";

/// The printable view of [`Settings`]: every value as the config file would write it.
#[derive(Serialize)]
struct Resolved {
    timezone: String,
    state_dir: String,
    providers: std::collections::BTreeMap<String, ResolvedProvider>,
    routing: ResolvedRouting,
    retry: ResolvedRetry,
    circuit_breaker: ResolvedBreaker,
    bulk: ResolvedBulk,
    message: ResolvedMessage,
    source: ResolvedSource,
    schedule: ResolvedSchedule,
    metrics: ResolvedMetrics,
    alerts: ResolvedAlerts,
}

#[derive(Serialize)]
struct ResolvedProvider {
    base_url: String,
    timeout: String,
    health_path: String,
    max_message_length: usize,
    credentials: Vec<ResolvedCredential>,
}

#[derive(Serialize)]
struct ResolvedCredential {
    username: String,
    password: &'static str,
    rate_limit: String,
}

#[derive(Serialize)]
struct ResolvedRouting {
    primary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fallback: Option<String>,
    strategy: String,
    acquire_timeout: String,
}

#[derive(Serialize)]
struct ResolvedRetry {
    max_attempts: u32,
    initial_delay: String,
    multiplier: f64,
    max_delay: String,
    jitter: bool,
}

#[derive(Serialize)]
struct ResolvedBreaker {
    failure_threshold: u32,
    open_timeout: String,
    all_open_wait: String,
}

#[derive(Serialize)]
struct ResolvedBulk {
    concurrency: usize,
    batch_size: usize,
    shutdown_grace: String,
}

#[derive(Serialize)]
struct ResolvedMessage {
    #[serde(skip_serializing_if = "Option::is_none")]
    header: Option<String>,
}

#[derive(Serialize)]
struct ResolvedSource {
    #[serde(skip_serializing_if = "Option::is_none")]
    csv: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<String>,
    query: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    suppression: Option<String>,
}

#[derive(Serialize)]
struct ResolvedSchedule {
    #[serde(skip_serializing_if = "Option::is_none")]
    quiet_hours: Option<String>,
}

#[derive(Serialize)]
struct ResolvedMetrics {
    #[serde(skip_serializing_if = "Option::is_none")]
    textfile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pushgateway: Option<String>,
}

#[derive(Serialize)]
struct ResolvedAlerts {
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook: Option<String>,
    min_success_rate: f64,
    max_queue: u64,
    max_response_time: String,
}

impl From<&Settings> for Resolved {
    fn from(s: &Settings) -> Self {
        let path = |p: &std::path::Path| p.display().to_string();
        Resolved {
            timezone: s.timezone_name.clone(),
            state_dir: path(&s.state_dir),
            providers: s
                .providers
                .iter()
                .map(|p| {
                    let provider = ResolvedProvider {
                        base_url: p.base_url.to_string(),
                        timeout: format_duration(p.timeout),
                        health_path: p.health_path.clone(),
                        max_message_length: p.max_message_length,
                        credentials: p
                            .credentials
                            .iter()
                            .map(|c| ResolvedCredential {
                                username: c.username.clone(),
                                password: REDACTED,
                                rate_limit: c.rate_limit.to_string(),
                            })
                            .collect(),
                    };
                    (p.kind.name().to_string(), provider)
                })
                .collect(),
            routing: ResolvedRouting {
                primary: s.routing.primary.name().to_string(),
                fallback: s.routing.fallback.map(|f| f.name().to_string()),
                strategy: s.routing.strategy.to_string(),
                acquire_timeout: format_duration(s.routing.acquire_timeout),
            },
            retry: ResolvedRetry {
                max_attempts: s.retry.max_attempts,
                initial_delay: format_duration(s.retry.initial_delay),
                multiplier: s.retry.multiplier,
                max_delay: format_duration(s.retry.max_delay),
                jitter: s.retry.jitter,
            },
            circuit_breaker: ResolvedBreaker {
                failure_threshold: s.breaker.failure_threshold,
                open_timeout: format_duration(s.breaker.open_timeout),
                all_open_wait: format_duration(s.breaker.all_open_wait),
            },
            bulk: ResolvedBulk {
                concurrency: s.bulk.concurrency,
                batch_size: s.bulk.batch_size,
                shutdown_grace: format_duration(s.bulk.shutdown_grace),
            },
            message: ResolvedMessage {
                header: s.header.as_ref().map(|h| h.to_string()),
            },
            source: ResolvedSource {
                csv: s.source.csv.as_deref().map(path),
                database: s.source.database.as_ref().map(|d| d.to_string()),
                query: s.source.query.clone(),
                suppression: s.source.suppression.as_deref().map(path),
            },
            schedule: ResolvedSchedule {
                quiet_hours: s.quiet_hours.map(|q| q.to_string()),
            },
            metrics: ResolvedMetrics {
                textfile: s.metrics.textfile.as_deref().map(path),
                pushgateway: s.metrics.pushgateway.as_ref().map(|u| u.to_string()),
            },
            alerts: ResolvedAlerts {
                webhook: s.alerts.webhook.as_ref().map(|u| u.to_string()),
                min_success_rate: s.alerts.min_success_rate,
                max_queue: s.alerts.max_queue,
                max_response_time: format_duration(s.alerts.max_response_time),
            },
        }
    }
}
