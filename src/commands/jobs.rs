//! `msgsend jobs` and `msgsend status JOB_ID`: campaigns as the journal records them, each with
//! its runs (the host and process of each, SPEC section 9). They read the journal only; no lock
//! is taken, so they work while a campaign runs. A job shown `RUNNING` while no `bulk` runs was
//! killed: `--resume` continues it, and its in-flight recipients become `uncertain`.

use std::io::Write;

use crate::cli::{GlobalArgs, JobsArgs, StatusArgs};
use crate::error::ExitStatus;
use crate::job::{JobRecord, StoredSource};
use crate::journal::{RunRecord, State};

pub async fn list(global: &GlobalArgs, args: JobsArgs) -> anyhow::Result<ExitStatus> {
    let settings = super::load_settings(global)?;
    let state = State::open(&settings).await?;
    let mut journal = state.journal().await?;
    let mut jobs = Vec::new();
    for job in journal.jobs().await? {
        let runs = journal.runs(&job.id).await?;
        jobs.push((job, runs));
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let list: Vec<serde_json::Value> =
            jobs.iter().map(|(job, runs)| job_json(job, runs)).collect();
        serde_json::to_writer_pretty(&mut out, &list)?;
        writeln!(out)?;
    } else if jobs.is_empty() {
        writeln!(out, "No jobs in {}", state.describe())?;
    } else {
        writeln!(
            out,
            "{:<24} {:<12} {:<20} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8}  VALID UNTIL",
            "JOB",
            "STATUS",
            "CREATED",
            "ELIGIBLE",
            "SENT",
            "FALLBACK",
            "FAILED",
            "UNCERTAIN",
            "EXPIRED"
        )?;
        for (job, runs) in &jobs {
            writeln!(
                out,
                "{:<24} {:<12} {:<20} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8}  {}",
                job.id,
                job.status.name(),
                job.created_at,
                job.states.eligible(),
                job.states.sent,
                job.states.fallback,
                job.states.failed,
                job.states.uncertain,
                job.states.expired,
                job.params
                    .deadline
                    .map_or_else(|| "-".to_string(), |d| d.to_string())
            )?;
            write_runs(&mut out, runs)?;
        }
    }
    out.flush()?;
    Ok(ExitStatus::Success)
}

pub async fn status(global: &GlobalArgs, args: StatusArgs) -> anyhow::Result<ExitStatus> {
    let settings = super::load_settings(global)?;
    let mut journal = State::open(&settings).await?.journal().await?;
    let job = journal.job(&args.job_id).await?;
    let runs = journal.runs(&args.job_id).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &job_json(&job, &runs))?;
        writeln!(out)?;
    } else {
        writeln!(out, "Job {}: {}", job.id, job.status.name())?;
        let rows = [
            ("source", source_text(&job.params.source)),
            (
                "ages",
                format!("{} on {}", job.params.ages, job.params.date),
            ),
            ("created", job.created_at.clone()),
            ("updated", job.updated_at.clone()),
            ("runs", job.runs.to_string()),
            ("total read", job.source.total.to_string()),
            ("eligible", job.states.eligible().to_string()),
            ("sent", job.states.sent.to_string()),
            ("fallback", job.states.fallback.to_string()),
            ("failed", job.states.failed.to_string()),
            ("invalid", job.source.invalid.to_string()),
            ("duplicate", job.source.duplicate.to_string()),
            ("suppressed", job.source.suppressed.to_string()),
            ("uncertain", job.states.uncertain.to_string()),
            ("expired", job.states.expired.to_string()),
            ("not reached", job.states.queued.to_string()),
            ("retries", job.retries.to_string()),
            ("kind", job.params.kind.to_string()),
            (
                "valid until",
                job.params
                    .deadline
                    .map_or_else(|| "-".to_string(), |d| d.to_string()),
            ),
            (
                "max cost",
                job.params
                    .max_cost
                    .map_or_else(|| "-".to_string(), |m| m.to_string()),
            ),
            (
                "cost",
                format!(
                    "{} (kakaotalk {}, sms {})",
                    job.spending.total(),
                    job.spending.kakaotalk,
                    job.spending.sms
                ),
            ),
        ];
        for (label, value) in rows {
            writeln!(out, "  {label:<12} {value}")?;
        }
        write_runs(&mut out, &runs)?;
    }
    out.flush()?;
    Ok(ExitStatus::Success)
}

fn source_text(source: &StoredSource) -> String {
    match source {
        StoredSource::Csv { path } => path.display().to_string(),
        StoredSource::Database { url, .. } => url.clone(),
    }
}

/// A job's runs, a line each under it: where each ran, when, and how it ended.
fn write_runs(out: &mut impl Write, runs: &[RunRecord]) -> std::io::Result<()> {
    for run in runs {
        writeln!(
            out,
            "  run {:<8} {} on {} pid {} from {} to {}",
            run.run,
            run.status,
            run.host,
            run.pid,
            run.started,
            run.ended.as_deref().unwrap_or("-")
        )?;
    }
    Ok(())
}

/// A job with the summary's key names (SPEC section 6) and what the journal adds: `runs`, every
/// run with its host and process (SPEC section 9).
fn job_json(job: &JobRecord, runs: &[RunRecord]) -> serde_json::Value {
    serde_json::json!({
        "job_id": job.id,
        "status": job.status,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "runs": runs,
        "source": source_text(&job.params.source),
        "age_range": job.params.ages.to_string(),
        "date": job.params.date.to_string(),
        "total": job.source.total,
        "eligible": job.states.eligible(),
        "sent": job.states.sent,
        "fallback": job.states.fallback,
        "failed": job.states.failed,
        "invalid": job.source.invalid,
        "duplicate": job.source.duplicate,
        "suppressed": job.source.suppressed,
        "suppressed_by_reason": job.source.suppressed_by_reason(),
        "uncertain": job.states.uncertain,
        "expired": job.states.expired,
        "pending": job.states.queued,
        "kind": job.params.kind,
        "valid_until": job.params.deadline.map(|d| d.to_string()),
        "max_cost": job.params.max_cost,
        "sms_short": job.spending.sms_short,
        "sms_long": job.spending.sms_long,
        "cost": {
            "total": job.spending.total(),
            "kakaotalk": job.spending.kakaotalk,
            "sms": job.spending.sms,
        },
        "retries": job.retries,
        "duration_s": job.duration_s,
    })
}
