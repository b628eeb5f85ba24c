//! `msgsend health`: probes every configured provider with each of its credentials (SPEC
//! section 7): `GET {base_url}{health_path}`; 2xx is healthy, 401/403 "credentials rejected",
//! anything else or no answer within the timeout unhealthy. Probes go through the rate limiter
//! like any request. Exit 4 when any probe is not healthy.

use std::io::Write;

use crate::cli::{GlobalArgs, HealthArgs};
use crate::delivery::Channel;
use crate::error::ExitStatus;
use crate::provider::{Class, ProviderKind, http_client};

#[derive(Debug, serde::Serialize)]
struct ProbeReport {
    provider: ProviderKind,
    /// `primary` or `fallback`, as `[routing]` makes it.
    role: &'static str,
    credential: String,
    /// `healthy`, `credentials_rejected` or `unhealthy`.
    status: &'static str,
    latency_ms: Option<u64>,
    /// Why it is not healthy: `HTTP 503`, `HTTP 401`, `timeout`, `connection refused`, ...
    detail: Option<String>,
    /// The state a campaign started now would begin in with this provider (the worst of the
    /// provider's credentials): `closed` (healthy: sends go through it), `disabled` (a
    /// credential is refused: the first 401/403 takes the provider out and sends fall back),
    /// `opens` (down: the first requests fail and the circuit opens after `failure_threshold`
    /// failures, then sends fall back).
    run_state: &'static str,
}

pub async fn run(global: &GlobalArgs, args: HealthArgs) -> anyhow::Result<ExitStatus> {
    let settings = super::load_settings(global)?;
    let http = http_client();
    let mut reports = Vec::new();
    for provider in &settings.providers {
        let role = if provider.kind == settings.routing.primary {
            "primary"
        } else if Some(provider.kind) == settings.routing.fallback {
            "fallback"
        } else {
            "unused"
        };
        let channel = Channel::new(http.clone(), provider, settings.breaker, settings.retry);
        let mut probes: Vec<ProbeReport> = channel
            .probe()
            .await
            .into_iter()
            .map(|(credential, result)| match result {
                Ok(latency) => ProbeReport {
                    provider: provider.kind,
                    role,
                    credential,
                    status: "healthy",
                    latency_ms: Some(latency.as_millis() as u64),
                    detail: None,
                    run_state: "closed",
                },
                Err(error) => ProbeReport {
                    provider: provider.kind,
                    role,
                    credential,
                    status: if error.class == Class::Auth {
                        "credentials_rejected"
                    } else {
                        "unhealthy"
                    },
                    latency_ms: None,
                    detail: Some(error.detail),
                    run_state: "closed",
                },
            })
            .collect();
        let run_state = if probes.iter().any(|p| p.status == "credentials_rejected") {
            "disabled"
        } else if probes.iter().any(|p| p.status == "unhealthy") {
            "opens"
        } else {
            "closed"
        };
        for probe in &mut probes {
            probe.run_state = run_state;
            if probe.status != "healthy" {
                tracing::warn!(provider = %probe.provider, credential = %probe.credential, "{}: {}", probe.status, probe.detail.as_deref().unwrap_or_default());
            }
        }
        reports.extend(probes);
    }
    let mut stdout = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut stdout, &reports)?;
        writeln!(stdout)?;
    } else {
        writeln!(
            stdout,
            "{:<10} {:<9} {:<16} {:<21} {:>8}  {:<10} DETAIL",
            "PROVIDER", "ROLE", "CREDENTIAL", "STATUS", "LATENCY", "RUN STATE"
        )?;
        for report in &reports {
            let latency = report
                .latency_ms
                .map_or_else(|| "-".to_string(), |ms| format!("{ms} ms"));
            let status = report.status.replace('_', " ");
            writeln!(
                stdout,
                "{:<10} {:<9} {:<16} {:<21} {:>8}  {:<10} {}",
                report.provider.name(),
                report.role,
                report.credential,
                status,
                latency,
                report.run_state,
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
