//! `msgsend health`: probes every configured provider with each of its credentials (SPEC
//! section 7): `GET {base_url}{health_path}`; 2xx is healthy, 401/403 "credentials rejected",
//! anything else or no answer within the timeout unhealthy. Probes go through the rate limiter
//! like any request. Exit 4 when any probe is not healthy.

use std::io::Write;

use crate::channel::Channel;
use crate::cli::{GlobalArgs, HealthArgs};
use crate::error::ExitStatus;
use crate::provider::{Class, ProviderKind, http_client};

#[derive(Debug, serde::Serialize)]
struct ProbeReport {
    provider: ProviderKind,
    credential: String,
    /// `healthy`, `credentials_rejected` or `unhealthy`.
    status: &'static str,
    latency_ms: Option<u64>,
    /// Why it is not healthy: `HTTP 503`, `timeout`, `connection failed`, ...
    detail: Option<String>,
}

pub async fn run(global: &GlobalArgs, args: HealthArgs) -> anyhow::Result<ExitStatus> {
    let settings = super::load_settings(global)?;
    let http = http_client();
    let mut reports = Vec::new();
    for provider in &settings.providers {
        let channel = Channel::new(http.clone(), provider, settings.breaker, settings.retry);
        for (credential, result) in channel.probe().await {
            let report = match result {
                Ok(latency) => ProbeReport {
                    provider: provider.kind,
                    credential,
                    status: "healthy",
                    latency_ms: Some(latency.as_millis() as u64),
                    detail: None,
                },
                Err(error) => ProbeReport {
                    provider: provider.kind,
                    credential,
                    status: if error.class == Class::Auth {
                        "credentials_rejected"
                    } else {
                        "unhealthy"
                    },
                    latency_ms: None,
                    detail: Some(error.detail),
                },
            };
            if report.status != "healthy" {
                tracing::warn!(provider = %report.provider, credential = %report.credential, "{}: {}", report.status, report.detail.as_deref().unwrap_or_default());
            }
            reports.push(report);
        }
    }
    let mut stdout = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut stdout, &reports)?;
        writeln!(stdout)?;
    } else {
        writeln!(
            stdout,
            "{:<10} {:<16} {:<21} {:>8}  DETAIL",
            "PROVIDER", "CREDENTIAL", "STATUS", "LATENCY"
        )?;
        for report in &reports {
            let latency = report
                .latency_ms
                .map_or_else(|| "-".to_string(), |ms| format!("{ms} ms"));
            let status = report.status.replace('_', " ");
            writeln!(
                stdout,
                "{:<10} {:<16} {:<21} {:>8}  {}",
                report.provider.name(),
                report.credential,
                status,
                latency,
                report.detail.as_deref().unwrap_or_default()
            )?;
        }
    }
    stdout.flush()?;
    Ok(if reports.iter().all(|r| r.status == "healthy") {
        ExitStatus::Success
    } else {
        ExitStatus::Unhealthy
    })
}
