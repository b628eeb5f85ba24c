//! The end-of-run summary of a campaign (SPEC section 6): counts, duration, rate and, per
//! provider, requests, successes, errors by class, p50/p95 latency and circuit openings.
//! [`ProviderStats`] collects during the run; [`Summary`] is the value rendered as a text
//! table or as JSON with SPEC's key names, to any `Write`.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::cost::Money;
use crate::delivery::{Attempt, AttemptOutcome, Health};
use crate::job::{JobStatus, SourceCounts, Spending, StateCounts};
use crate::provider::ProviderKind;

/// Per-provider statistics of one run, fed every attempt of every delivery.
#[derive(Debug)]
pub struct ProviderStats {
    requests: u64,
    successes: u64,
    errors: BTreeMap<&'static str, u64>,
    /// Latency in milliseconds. A histogram keeps p50/p95 exact to 3 significant digits in
    /// constant memory, whatever the number of requests.
    latency_ms: Histogram<u64>,
}

impl Default for ProviderStats {
    fn default() -> Self {
        ProviderStats {
            requests: 0,
            successes: 0,
            errors: BTreeMap::new(),
            latency_ms: Histogram::new_with_bounds(1, 3_600_000, 3).expect("valid bounds"),
        }
    }
}

impl ProviderStats {
    pub fn record(&mut self, attempt: &Attempt) {
        self.requests += 1;
        if attempt.outcome == AttemptOutcome::Ok {
            self.successes += 1;
        } else {
            *self.errors.entry(attempt.outcome.name()).or_default() += 1;
        }
        self.latency_ms.saturating_record(attempt.latency_ms.max(1));
    }

    /// The p95 response time so far and the number of requests it is taken over.
    pub fn p95(&self) -> (Duration, u64) {
        let p95 = if self.requests == 0 {
            0
        } else {
            self.latency_ms.value_at_quantile(0.95)
        };
        (Duration::from_millis(p95), self.requests)
    }

    fn summarise(&self, circuit_openings: u64) -> ProviderSummary {
        let quantile = |q: f64| (self.requests > 0).then(|| self.latency_ms.value_at_quantile(q));
        ProviderSummary {
            requests: self.requests,
            successes: self.successes,
            errors: self
                .errors
                .iter()
                .map(|(class, n)| (class.to_string(), *n))
                .collect(),
            p50_ms: quantile(0.5),
            p95_ms: quantile(0.95),
            circuit_openings,
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProviderSummary {
    pub requests: u64,
    pub successes: u64,
    /// Failed requests by class (`server_error`, `rate_limited`, `timeout`, ...).
    pub errors: BTreeMap<String, u64>,
    pub p50_ms: Option<u64>,
    pub p95_ms: Option<u64>,
    pub circuit_openings: u64,
}

/// A campaign's summary after a run. Recipient outcomes are the job's (every run so far);
/// the source counts, duration, rate and provider figures are this run's.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    pub job_id: String,
    pub status: JobStatus,
    /// Why the run stopped early on its own (every provider unusable); null otherwise.
    pub reason: Option<String>,
    pub total: u64,
    pub eligible: u64,
    pub sent: u64,
    pub fallback: u64,
    pub failed: u64,
    pub invalid: u64,
    pub duplicate: u64,
    pub suppressed: u64,
    /// `suppressed` by reason: `suppression_list`, `no_consent`, `consent_expired`.
    pub suppressed_by_reason: BTreeMap<&'static str, u64>,
    pub uncertain: u64,
    /// Not reached before the job's deadline (SPEC section 10); always present.
    pub expired: u64,
    /// Eligible recipients not reached yet (an interrupted or paused run); 0 when done.
    pub pending: u64,
    /// Messages delivered by SMS as short ones (up to 90 EUC-KR bytes), over the job.
    pub sms_short: u64,
    /// Messages delivered by SMS as long ones (LMS), over the job.
    pub sms_long: u64,
    /// What the job spent, over all its runs.
    pub cost: Cost,
    pub retries: u64,
    pub duration_s: f64,
    /// Recipients dealt with by sends per second of this run.
    pub rate_per_s: f64,
    pub providers: BTreeMap<String, ProviderSummary>,
    /// What this run's pre-flight found: provider → `healthy`, `credentials_rejected`,
    /// `unhealthy`, `busy` or `skipped`.
    pub preflight: BTreeMap<String, Health>,
}

/// What a job spent: `{"total": …, "kakaotalk": …, "sms": …, "currency": "KRW"}`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Cost {
    pub total: Money,
    pub kakaotalk: Money,
    pub sms: Money,
    pub currency: String,
}

/// What a run measured, to be turned into a [`Summary`].
pub struct RunFigures<'a> {
    pub job_id: &'a str,
    pub status: JobStatus,
    pub reason: Option<String>,
    pub source: SourceCounts,
    pub states: StateCounts,
    pub spending: Spending,
    pub currency: &'a str,
    pub retries: u64,
    pub sends: u64,
    pub duration: std::time::Duration,
    pub providers: Vec<(ProviderKind, &'a ProviderStats, u64)>,
    pub preflight: &'a BTreeMap<ProviderKind, Health>,
}

impl Summary {
    pub fn new(figures: RunFigures<'_>) -> Summary {
        let duration_s = (figures.duration.as_secs_f64() * 1000.0).round() / 1000.0;
        let rate = figures.sends as f64 / figures.duration.as_secs_f64().max(0.001);
        Summary {
            job_id: figures.job_id.to_string(),
            status: figures.status,
            reason: figures.reason,
            total: figures.source.total,
            eligible: figures.states.eligible(),
            sent: figures.states.sent,
            fallback: figures.states.fallback,
            failed: figures.states.failed,
            invalid: figures.source.invalid,
            duplicate: figures.source.duplicate,
            suppressed: figures.source.suppressed,
            suppressed_by_reason: figures.source.suppressed_by_reason(),
            uncertain: figures.states.uncertain,
            expired: figures.states.expired,
            pending: figures.states.queued,
            sms_short: figures.spending.sms_short,
            sms_long: figures.spending.sms_long,
            cost: Cost {
                total: figures.spending.total(),
                kakaotalk: figures.spending.kakaotalk,
                sms: figures.spending.sms,
                currency: figures.currency.to_string(),
            },
            retries: figures.retries,
            duration_s,
            rate_per_s: (rate * 100.0).round() / 100.0,
            providers: figures
                .providers
                .into_iter()
                .map(|(kind, stats, openings)| (kind.name().to_string(), stats.summarise(openings)))
                .collect(),
            preflight: figures
                .preflight
                .iter()
                .map(|(kind, health)| (kind.name().to_string(), *health))
                .collect(),
        }
    }

    pub fn write_json(&self, out: &mut impl Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, self)?;
        writeln!(out)
    }

    pub fn write_text(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(out, "Campaign {}: {}", self.job_id, self.status.name())?;
        if let Some(reason) = &self.reason {
            writeln!(
                out,
                "  stopped: {reason}; `msgsend bulk --resume {}` continues it",
                self.job_id
            )?;
        }
        let reasons: Vec<String> = self
            .suppressed_by_reason
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect();
        let rows: [(&str, String, String); 17] = [
            ("total read", self.total.to_string(), String::new()),
            ("eligible", self.eligible.to_string(), String::new()),
            ("sent", self.sent.to_string(), String::new()),
            ("fallback", self.fallback.to_string(), String::new()),
            ("failed", self.failed.to_string(), String::new()),
            ("invalid", self.invalid.to_string(), String::new()),
            ("duplicate", self.duplicate.to_string(), String::new()),
            (
                "suppressed",
                self.suppressed.to_string(),
                reasons.join(", "),
            ),
            ("uncertain", self.uncertain.to_string(), String::new()),
            ("expired", self.expired.to_string(), String::new()),
            ("not reached", self.pending.to_string(), String::new()),
            ("sms short", self.sms_short.to_string(), String::new()),
            ("sms long", self.sms_long.to_string(), String::new()),
            ("retries", self.retries.to_string(), String::new()),
            (
                "duration",
                format!("{:.1} s", self.duration_s),
                String::new(),
            ),
            ("rate", format!("{:.1} /s", self.rate_per_s), String::new()),
            (
                "cost",
                format!("{} {}", self.cost.total, self.cost.currency),
                format!("kakaotalk {}, sms {}", self.cost.kakaotalk, self.cost.sms),
            ),
        ];
        for (label, value, detail) in &rows {
            if detail.is_empty() {
                writeln!(out, "  {label:<12} {value:>10}")?;
            } else {
                writeln!(out, "  {label:<12} {value:>10}  ({detail})")?;
            }
        }
        if !self.preflight.is_empty() {
            let found: Vec<String> = self
                .preflight
                .iter()
                .map(|(provider, health)| format!("{provider} {}", health.name().replace('_', " ")))
                .collect();
            writeln!(out, "  {:<12} {}", "pre-flight", found.join(", "))?;
        }
        if self.providers.is_empty() {
            return Ok(());
        }
        writeln!(
            out,
            "  {:<10} {:>8} {:>8} {:>8} {:>8} {:>8}  errors",
            "provider", "requests", "ok", "p50", "p95", "openings"
        )?;
        let ms = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{v} ms"));
        for (name, p) in &self.providers {
            let errors = if p.errors.is_empty() {
                "none".to_string()
            } else {
                p.errors
                    .iter()
                    .map(|(class, n)| format!("{class} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            writeln!(
                out,
                "  {name:<10} {:>8} {:>8} {:>8} {:>8} {:>8}  {errors}",
                p.requests,
                p.successes,
                ms(p.p50_ms),
                ms(p.p95_ms),
                p.circuit_openings
            )?;
        }
        Ok(())
    }
}
