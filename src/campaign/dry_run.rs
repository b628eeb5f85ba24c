//! `bulk --dry-run`: the campaign's recipients resolved and validated exactly as a run would —
//! the same admission loop ([`crate::pipeline::admit_all`]: source, age filter, suppression,
//! de-duplication through a journal) — then counts and a few rendered samples on stdout. No
//! request of any kind is made and no job is recorded. With `--resume` (or `--retry-failed`)
//! the counts are those of the run it rehearses: who that run would send to.

use std::io::Write;

use super::Prepared;
use crate::error::ExitStatus;
use crate::job::Admission;
use crate::journal::{Batch, Candidate, JournalError};
use crate::pipeline::{AdmissionSink, Screening, admit_all};
use crate::recipient::Recipient;
use crate::report::invalid_rows::InvalidRows;
use crate::report::printable;
use crate::template::MessageTemplate;

/// How many rendered messages the dry run shows.
const SAMPLES: usize = 3;

/// How many recipients are admitted to the in-memory journal at a time.
const CHUNK: usize = 512;

/// Admits into one transaction of the in-memory journal; counts the eligible and keeps the
/// first few rendered messages.
struct DryRun<'j> {
    batch: Batch<'j>,
    /// `--retry-failed`: only the original job's failed recipients are admitted.
    retry_of: Option<&'j str>,
    template: &'j MessageTemplate,
    eligible: u64,
    samples: Vec<(u64, String, String)>,
    error: Option<JournalError>,
}

impl AdmissionSink for DryRun<'_> {
    async fn admit(&mut self, candidates: Vec<Candidate>) -> Option<Vec<Admission>> {
        match self.batch.admit(&candidates, self.retry_of).await {
            Ok(answers) => Some(answers),
            Err(error) => {
                self.error = Some(error);
                None
            }
        }
    }

    async fn admitted(&mut self, recipient: Box<Recipient>, admission: Admission) {
        if admission != Admission::Send {
            return;
        }
        self.eligible += 1;
        if self.samples.len() < SAMPLES {
            self.samples.push((
                recipient.line,
                recipient.phone.masked(),
                self.template.render(|field| recipient.field(field)),
            ));
        }
    }
}

/// The dry run of a prepared campaign. A new job is admitted into a journal in memory; a
/// resume or a retry into the real journal, inside one transaction that is never committed,
/// so it counts what that run would send and leaves no trace.
pub(super) async fn run(prepared: Prepared) -> anyhow::Result<ExitStatus> {
    let Prepared {
        _lock,
        mut journal,
        job,
        spec,
        mut source,
        template,
        suppression,
        outputs,
    } = prepared;
    let params = &job.params;
    let run = if journal.is_in_memory() {
        journal.create_job(&job.id, params).await?;
        journal.begin_run(&job.id, false).await?
    } else if job.is_new {
        1 // a retry's new job: not created, its first run rehearsed
    } else {
        journal.next_run(&job.id).await?
    };
    let label = spec.to_string();
    let mut batch = journal.batch(&job.id, run).await?;
    if !job.is_new {
        // The lock is held: rows in flight are a killed run's, as the resume would find them.
        batch.resolve_in_flight().await?;
    }
    if job.resend_uncertain {
        batch.requeue_uncertain().await?;
    }
    let mut dry_run = DryRun {
        batch,
        retry_of: params.retry_of.as_deref(),
        template: &template,
        eligible: 0,
        samples: Vec::new(),
        error: None,
    };
    let screening = Screening {
        suppression: &suppression,
        batch_size: CHUNK,
    };
    let mut invalid_rows = InvalidRows::new(&label, outputs.invalid_csv)?;
    let counts = admit_all(&mut source, &screening, &mut invalid_rows, &mut dry_run).await?;
    invalid_rows.finish();
    if let Some(error) = dry_run.error {
        return Err(error.into());
    }
    // Dropped without a commit: nothing the dry run admitted stays.
    drop(dry_run.batch);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Dry run, nothing sent: {spec}, ages {} on {}{}",
        params.ages,
        params.date,
        if job.is_new {
            String::new()
        } else {
            format!(", resuming job {}", job.id)
        }
    )?;
    for (label, value) in [
        ("total read", counts.total),
        ("invalid", counts.invalid),
        ("duplicate", counts.duplicate),
        ("suppressed", counts.suppressed),
        ("eligible", dry_run.eligible),
    ] {
        writeln!(out, "  {label:<12} {value:>10}")?;
    }
    for (line, phone, text) in dry_run.samples {
        writeln!(out, "Sample (line {line}, {phone}):")?;
        // Names and columns come from the source: shown with control characters escaped.
        for text_line in printable(&text, true).lines() {
            writeln!(out, "  | {text_line}")?;
        }
    }
    out.flush()?;
    Ok(ExitStatus::Success)
}
