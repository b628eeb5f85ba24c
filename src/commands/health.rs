//! `msgsend health`: probes every configured provider with each of its credentials at once
//! (SPEC section 7), through the same health checker as the pre-flight of `bulk` and `send`
//! ([`crate::delivery::Health`]): `GET {base_url}{health_path}`; 2xx is healthy, 401/403
//! "credentials rejected", a 429 or no rate-limit slot within the timeout "busy" (a campaign
//! uses the quota), anything else or no answer within the timeout unhealthy. Exit 4 when a
//! probe is unhealthy or refused.

use std::io::Write;

use crate::cli::{GlobalArgs, HealthArgs};
use crate::delivery::Channel;
use crate::error::ExitStatus;
use crate::provider::{ProviderKind, http_client_for};

#[derive(Debug, serde::Serialize)]
struct ProbeReport {
    provider: ProviderKind,
    /// `primary` or `fallback`, as `[routing]` makes it.
    role: &'static str,
    credential: String,
    /// `healthy`, `busy` (the quota is in use: no slot within the timeout, or a 429; not a
    /// failure), `credentials_rejected` or `unhealthy`.
    status: &'static str,
    latency_ms: Option<u64>,
    /// Why it is not healthy: `HTTP 503`, `HTTP 401`, `timeout`, `connection refused`, ...
    detail: Option<String>,
    /// The state a campaign started now would begin in with this provider (the worst of the
    /// provider's credentials), as its pre-flight would set it: `closed` (healthy or busy:
    /// sends go through it), `disabled` (a credential is refused: the provider is out for the
    /// run, sends fall back), `opens` (down: its circuit starts open, sends fall back until the
    /// half-open probe after `open_timeout`).
    run_state: &'static str,
}

pub async fn run(global: &GlobalArgs, args: HealthArgs) -> anyhow::Result<ExitStatus> {
    let settings = super::load_settings(global)?;
    let http = http_client_for(&settings.providers);
    // Probes take their slots from the quotas every msgsend process shares (SPEC section 8).
    let ledger = crate::journal::State::open(&settings)
        .await?
        .ledger()
        .await?;
    let mut reports = Vec::new();
    for provider in &settings.providers {
        let role = if provider.kind == settings.routing.primary {
            "primary"
        } else if Some(provider.kind) == settings.routing.fallback {
            "fallback"
        } else {
            "unused"
        };
        let channel = Channel::new(
            http.clone(),
            provider,
            settings.breaker,
            settings.retry,
            &ledger,
        );
        let probes = channel.probe().await;
        channel.close().await;
        let mut probes: Vec<ProbeReport> = probes
            .into_iter()
            .map(|probe| ProbeReport {
                provider: provider.kind,
                role,
                credential: probe.credential,
                status: probe.health.name(),
                latency_ms: probe
                    .latency
                    .map(|latency| u64::try_from(latency.as_millis()).unwrap_or(u64::MAX)),
                detail: probe.detail,
                run_state: "closed",
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
    // A busy quota (a campaign is using it) is not a failure (SPEC section 8).
    let failing = |r: &ProbeReport| matches!(r.status, "unhealthy" | "credentials_rejected");
    Ok(if reports.iter().any(failing) {
        ExitStatus::Unhealthy
    } else {
        ExitStatus::Success
    })
}
